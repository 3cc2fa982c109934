"""Tests for :mod:`dataserv.web.gzipping`."""

import gzip

from twisted.internet import defer, threads
from twisted.trial import unittest

from dataserv.web.gzipping import BackgroundGzip

PIECES = [b'{"farmers": [', b'{"height": %d}' % 1] + [
    b', {"height": %d}' % i for i in range(2, 200)] + [b"]}"]


class ManualThread:
    """in_thread whose calls finish only when the test says so."""

    def __init__(self):
        self.calls = []  # (argument, Deferred)

    def __call__(self, f, argument):
        d = defer.Deferred()
        self.calls.append((argument, d))
        self._f = f
        return d

    def finish(self, index, fail=False):
        argument, d = self.calls[index]
        if fail:
            d.errback(ValueError("compression failed"))
        else:
            d.callback(self._f(argument))


class BackgroundGzipTests(unittest.TestCase):

    @defer.inlineCallbacks
    def assertGzipsPieces(self, gz):  # noqa: N802
        """Feed PIECES; the finished body must gunzip to them."""
        for piece in PIECES:
            gz.feed(piece)
        body = yield gz.finish()
        self.assertEqual(gzip.decompress(bytes(body)), b"".join(PIECES))

    def test_inline_by_default(self):
        return self.assertGzipsPieces(BackgroundGzip(4))

    @defer.inlineCallbacks
    def test_pieces_fed_while_compressing_are_the_next_batch(self):
        thread = ManualThread()
        gz = BackgroundGzip(4, thread)
        gz.feed(b"one ")
        gz.feed(b"two ")
        gz.feed(b"three ")
        # Only the first piece went to the thread; the others wait for it.
        self.assertEqual([arg for arg, _ in thread.calls], [b"one "])
        thread.finish(0)
        # When it came back, everything that waited went as one batch.
        self.assertEqual([arg for arg, _ in thread.calls], [b"one ", b"two three "])
        gz.feed(b"four")
        finished = gz.finish()
        self.assertNoResult(finished)
        thread.finish(1)
        self.assertNoResult(finished)
        self.assertEqual(thread.calls[2][0], b"four")
        thread.finish(2)
        body = yield finished
        self.assertEqual(gzip.decompress(bytes(body)), b"one two three four")

    def test_a_failed_batch_fails_finish(self):
        thread = ManualThread()
        gz = BackgroundGzip(4, thread)
        gz.feed(b"one")
        gz.feed(b"two")
        thread.finish(0, fail=True)
        gz.feed(b"three")
        # Nothing more is sent to a compressor whose stream is broken.
        self.assertEqual(len(thread.calls), 1)
        self.failureResultOf(gz.finish(), ValueError)

    def test_in_real_threads(self):
        return self.assertGzipsPieces(BackgroundGzip(4, threads.deferToThread))

    @defer.inlineCallbacks
    def test_same_input_same_bytes(self):
        """The gzip header carries no time, so a copy is reproducible."""
        bodies = []
        for _ in range(2):
            gz = BackgroundGzip(4)
            gz.feed(b"same")
            bodies.append(bytes((yield gz.finish())))
        self.assertEqual(bodies[0], bodies[1])
