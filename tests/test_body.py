"""Tests for :mod:`dataserv.web.body`."""

from twisted.trial.unittest import SynchronousTestCase

from dataserv.web.body import Body


class BodyTests(SynchronousTestCase):

    def test_pieces_length_and_bytes(self):
        body = Body([b'{"farmers": [', b"", b"1, ", b"2", b"]}"])
        self.assertEqual(bytes(body), b'{"farmers": [1, 2]}')
        self.assertEqual(len(body), 19)
        # Empty pieces are dropped: nothing to write for them.
        self.assertEqual(body.pieces, (b'{"farmers": [', b"1, ", b"2", b"]}"))
        self.assertEqual(repr(body), "<Body 19 bytes in 4 pieces>")

    def test_empty(self):
        body = Body([])
        self.assertEqual((bytes(body), len(body), body.pieces), (b"", 0, ()))

    def test_pieces_are_fixed(self):
        """A Body keeps its own tuple: the list it was built from may change later."""
        pieces = [b"a", b"b"]
        body = Body(pieces)
        pieces.append(b"c")
        self.assertEqual(bytes(body), b"ab")


class FakeRequest:
    """Records what a Body writes and which producer it registers."""

    def __init__(self, method=b"GET"):
        self.method = method
        self.written = []
        self.producer = None
        self.unregistered = False

    def write(self, data):
        self.written.append(data)

    def registerProducer(self, producer, streaming):  # noqa: N802
        self.producer, self.streaming = producer, streaming

    def unregisterProducer(self):  # noqa: N802
        self.unregistered = True


class WriteToTests(SynchronousTestCase):

    def test_a_piece_each_time_the_connection_asks(self):
        request = FakeRequest()
        done = Body([b"a", b"b", b"c"]).write_to(request)
        self.assertFalse(request.streaming)  # a pull producer: one piece per drain
        self.assertEqual(request.written, [])
        for expected in ([b"a"], [b"a", b"b"], [b"a", b"b", b"c"]):
            self.assertNoResult(done)
            request.producer.resumeProducing()
            self.assertEqual(request.written, expected)
        self.assertFalse(request.unregistered)
        request.producer.resumeProducing()
        self.assertTrue(request.unregistered)
        self.assertIsNone(self.successResultOf(done))

    def test_client_gone(self):
        request = FakeRequest()
        done = Body([b"a", b"b"]).write_to(request)
        request.producer.resumeProducing()
        request.producer.stopProducing()
        self.assertTrue(request.unregistered)
        self.successResultOf(done)
        self.assertEqual(request.written, [b"a"])

    def test_one_piece_and_head_are_written_at_once(self):
        for request, body, expected in ((FakeRequest(), Body([b"only"]), [b"only"]),
                                        (FakeRequest(b"HEAD"), Body([b"a", b"b"]), [b"a", b"b"])):
            self.successResultOf(body.write_to(request))
            self.assertIsNone(request.producer)
            self.assertEqual(request.written, expected)
