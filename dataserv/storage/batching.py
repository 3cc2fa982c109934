"""Group commit: requests that arrive while a write is in flight share the next one."""

from typing import Any
from collections import Counter

from twisted.internet import defer
from twisted.logger import Logger


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
            why = str(result.value).strip().splitlines()
            self.log.warn("a batch of {count} writes failed after every caller had gone: "
                          "{why}", count=len(batch),
                          why=why[0] if why else type(result.value).__name__)
        self._next()
