"""A service that runs a step at a fixed interval once the database is ready."""

from typing import Any, Callable, Optional

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger


class PeriodicService(service.Service):
    """Runs :meth:`step` every :meth:`interval` seconds on ``self.clock``, the first
    time as soon as ``self._when_ready()`` fires (the database can be queried).

    Subclasses set ``clock`` and ``_when_ready`` and define ``step``, which must
    catch and log its own errors: a LoopingCall whose call raises stops for good.
    ``what`` names the loop in the log.
    """

    log = Logger()
    what = "periodic work"
    clock: Any
    _when_ready: Callable[[], "defer.Deferred[Any]"]
    _loop: Optional[task.LoopingCall] = None
    _waiting: Optional[defer.Deferred] = None

    def interval(self) -> float:
        """Seconds between two steps."""
        raise NotImplementedError

    def step(self) -> Any:
        """One run of the work; never raises."""
        raise NotImplementedError

    def startService(self) -> None:  # noqa: N802 (Twisted's name)
        super().startService()
        self._waiting = self._when_ready()
        self._waiting.addCallback(self._start_loop)
        self._waiting.addErrback(self._never_ready)

    def _start_loop(self, _: Any) -> None:
        if not self.running:
            return
        self._loop = task.LoopingCall(self.step)
        self._loop.clock = self.clock
        self._loop.start(self.interval(), now=True)

    def _never_ready(self, failure: Any) -> None:
        # stopService cancels the wait; anything else would otherwise be an
        # unhandled error in a Deferred nobody holds.
        if failure.check(defer.CancelledError) is None:
            self.log.failure("{what} not started", failure, what=self.what)

    def stopService(self) -> None:  # noqa: N802 (Twisted's name)
        super().stopService()
        if self._waiting is not None and not self._waiting.called:
            self._waiting.cancel()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
