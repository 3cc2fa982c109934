"""A large response body kept as the pieces it was built in.

The summariser builds /api/online/json a slice of farmers at a time. Joining the
slices into one bytes object copied 28.7 MB at 100 000 farmers and held the
reactor for ~40-55 ms. The pieces are also written one at a time, each when the
connection has sent the one before: written all at once, Twisted joins
everything queued on a connection into one buffer, a copy of the whole body for
every download in progress.
"""

from typing import Any
from twisted.internet import defer
from twisted.internet.interfaces import IPullProducer
from zope.interface import implementer


class Body:
    """Immutable bytes in pieces: ``len()``, ``bytes()`` and the pieces to write."""

    __slots__ = ("pieces", "_length")

    def __init__(self, pieces: Any) -> None:
        self.pieces = tuple(piece for piece in pieces if piece)
        self._length = sum(map(len, self.pieces))

    def __len__(self) -> Any:
        return self._length

    def __bytes__(self) -> Any:
        return b"".join(self.pieces)

    def __repr__(self) -> Any:
        return "<Body %d bytes in %d pieces>" % (self._length, len(self.pieces))

    def write_to(self, request: Any) -> Any:
        """Write the pieces to a request as its connection drains; a Deferred that
        fires (with None) when all are written or the client has gone."""
        if len(self.pieces) < 2 or request.method == b"HEAD":
            for piece in self.pieces:
                request.write(piece)
            return defer.succeed(None)
        producer = _PieceProducer(request, self.pieces)
        request.registerProducer(producer, False)
        return producer.done


@implementer(IPullProducer)
class _PieceProducer:
    """Hands a request the next piece whenever its transport asks for more."""

    def __init__(self, request: Any, pieces: Any) -> None:
        self.request = request
        self.pieces = iter(pieces)
        self.done: Any = defer.Deferred()

    def resumeProducing(self) -> None:  # noqa: N802 (Twisted's name)
        piece = next(self.pieces, None)
        if piece is None:
            self._finish()
        else:
            self.request.write(piece)

    def stopProducing(self) -> None:  # noqa: N802 (the connection was lost)
        self._finish()

    def _finish(self) -> None:
        if not self.done.called:
            self.request.unregisterProducer()
            self.done.callback(None)
