"""A gzip copy of a body that is still being built, compressed off the reactor thread.

zlib lets go of the GIL while it deflates, so on a second core the gzip copy of
/api/online/json costs the summary pass almost no wall time, but only if the
thread gets big batches: a thread handed one 287 KB slice at a time spent most of
its time waiting for the GIL (up to 5 ms per hand-over) and finished after the
rendering. So whatever arrived while a batch was compressing becomes the next
batch.
"""

import zlib
from typing import Any, Callable, List, Optional

from twisted.internet import defer

from dataserv.web.body import Body


class BackgroundGzip:
    """Feed pieces in order; :meth:`finish` gives a Deferred of the gzip Body."""

    def __init__(self, level: int,
                 in_thread: Callable[..., "defer.Deferred[Any]"] = defer.maybeDeferred) -> None:
        # wbits 31: gzip framing; the header's mtime is 0, so equal input gives
        # equal bytes.
        self._gzip = zlib.compressobj(level, zlib.DEFLATED, 31)
        self._in_thread = in_thread
        self._waiting: List[bytes] = []
        self._compressed: List[bytes] = []
        self._running: Optional[defer.Deferred] = None
        self._failure: Any = None

    def feed(self, piece: bytes) -> None:
        """Queue the next piece of the body."""
        self._waiting.append(piece)
        if self._running is None and self._failure is None:
            self._next_batch()

    def _next_batch(self) -> None:
        batch = b"".join(self._waiting)
        self._waiting = []
        self._running = self._in_thread(self._gzip.compress, batch)
        self._running.addCallbacks(self._compressed_batch, self._batch_failed)

    def _compressed_batch(self, data: bytes) -> None:
        self._compressed.append(data)
        self._running = None
        if self._waiting:
            self._next_batch()

    def _batch_failed(self, failure: Any) -> None:
        self._running = None
        self._failure = failure

    @defer.inlineCallbacks
    def finish(self) -> Any:
        """Wait for the batches still compressing; the whole gzip body."""
        while self._running is not None:
            yield self._running
        if self._failure is not None:
            self._failure.raiseException()
        self._compressed.append(self._gzip.flush())
        return Body(self._compressed)
