"""Tests for :mod:`dataserv.body`."""

from twisted.trial.unittest import SynchronousTestCase

from dataserv.body import Body


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
