"""Batched writes: group commit (callers wait for the batch holding their item) and
write-behind (nobody waits; items are written a short interval later)."""

from collections import Counter
from typing import Any, Callable, List

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from dataserv.storage.failures import first_line


# How often a write-behind queue tries again while its writes fail (seconds).
RETRY_SECONDS = 1.0


class GroupCommit:
    """Collect items and write them with ``flush(items)`` one batch at a time.

    The first item after an idle spell is written at once; items that arrive while a
    batch is being written wait and go together in the next batch, which starts as
    soon as the previous one returns (no fixed window). Each caller's Deferred fires
    with ``flush``'s result only after the batch holding its item has finished, so
    an answer given to a client always follows the commit.
    """

    log = Logger()

    def __init__(self, flush: Any, max_batch: Any = 5000) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._waiting: Any = []
        self._busy = False
        self.batches = 0
        self.items = 0
        self.sizes: Any = Counter()  # batch size -> batches of that size, for /metrics

    def submit(self, item: Any) -> Any:
        """Queue one item; the Deferred fires with the result of the batch it went in.

        Cancelling the Deferred does not take the item out of its batch.
        """
        d: Any = defer.Deferred()
        self._waiting.append((item, d))
        if not self._busy:
            self._next()
        return d

    def _next(self) -> None:
        if not self._waiting:
            self._busy = False
            return
        self._busy = True
        batch = self._waiting[:self._max_batch]
        del self._waiting[:self._max_batch]
        self.batches += 1
        self.items += len(batch)
        self.sizes[len(batch)] += 1
        result = defer.maybeDeferred(self._flush, [item for item, _ in batch])
        result.addBoth(self._deliver, batch)

    def _deliver(self, result: Any, batch: Any) -> None:
        told = 0
        for _, d in batch:
            if not d.called:
                told += 1
                if isinstance(result, defer.Failure):
                    d.errback(result)
                else:
                    d.callback(result)
        if isinstance(result, defer.Failure) and not told:
            # Nobody is left to answer: say it once, briefly, rather than not at all.
            self.log.warn("a batch of {count} writes failed after every caller had gone: "
                          "{why}", count=len(batch), why=first_line(result.value))
        self._next()


class WriteBehind:
    """Collect items nobody waits for and write them with ``flush(items)`` in batches.

    The first item after an idle spell schedules a write ``interval`` seconds later
    (on ``clock``); everything that arrived by then goes in that one call, so under
    load a batch holds ``interval`` seconds of items. One write is in flight at a
    time. A failed write keeps its items for the next one, except those ``keep``
    says are no longer worth writing, and is tried again every RETRY_SECONDS; the
    first failure of a run of them is logged once (not once per batch).
    """

    log = Logger()

    def __init__(self, flush: Callable[[List[Any]], Any], clock: Any, interval: float,
                 keep: Callable[[Any], bool] = lambda item: True,
                 what: str = "writes") -> None:
        self._flush = flush
        self._clock = clock
        self.interval = interval
        self._keep = keep
        self._what = what
        self._waiting: List[Any] = []
        self._call: Any = None
        self._writing: "defer.Deferred[None] | None" = None
        self._failing = False
        self.batches = 0
        self.items = 0

    def add(self, item: Any) -> None:
        """Queue one item for the next write."""
        self._waiting.append(item)
        if self._call is None and self._writing is None:
            self._call = self._clock.callLater(self.interval, self._write)

    def __len__(self) -> int:
        return len(self._waiting)

    def drain(self) -> "defer.Deferred[None]":
        """Write what is queued now; fires once no write is in flight (whether or not
        the last one succeeded: a failed write's items stay queued)."""
        if self._call is not None:
            self._call.cancel()
            self._call = None
        if self._writing is None:
            self._write()
        if self._writing is None:
            return defer.succeed(None)
        done: "defer.Deferred[None]" = defer.Deferred()
        self._writing.addBoth(lambda _: done.callback(None))
        return done

    def _write(self) -> None:
        self._call = None
        if not self._waiting:
            return
        batch, self._waiting = self._waiting, []
        self.batches += 1
        self.items += len(batch)
        writing = defer.maybeDeferred(self._flush, batch)
        self._writing = writing
        writing.addCallbacks(self._written, self._failed, errbackArgs=(batch,))
        writing.addBoth(self._next)

    def _written(self, result: Any) -> None:
        if self._failing:
            self._failing = False
            self.log.info("{what} are written again", what=self._what)

    def _failed(self, failure: Failure, batch: List[Any]) -> None:
        kept = [item for item in batch if self._keep(item)]
        self._waiting[:0] = kept
        if not self._failing:
            self._failing = True
            self.log.warn("{count} {what} wait for the next write: {why}", count=len(kept),
                          what=self._what, why=first_line(failure.value))

    def _next(self, result: Any) -> None:
        self._writing = None
        if self._waiting and self._call is None:
            # While writes fail, try again once a second rather than every interval.
            wait = max(self.interval, RETRY_SECONDS) if self._failing else self.interval
            self._call = self._clock.callLater(wait, self._write)
