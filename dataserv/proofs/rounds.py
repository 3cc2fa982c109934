"""The challenge rounds: a LoopingCall that draws challenges and scores the plots.

Every ``--challenge-interval`` seconds a round draws ``--challenges-per-round`` fresh
random challenges (``secrets``) for every registered plot, works out each farmer's
plot count and verified bytes over the trailing ``--score-window`` (see
:mod:`dataserv.proofs.scoring`), writes the ones that changed into the farmers'
rows (the summariser publishes them), and drops challenges that left every window.
"""

import secrets
from typing import Any, Callable, Optional

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from dataserv.proofs.scoring import farmer_totals
from dataserv.storage.database import DatabaseUnavailable


class ChallengeRounds(service.Service):
    """Draws a round of challenges and scores the plots every challenge interval."""

    log = Logger()
    name = "challenges"

    def __init__(self, store: Any, settings: Any, clock: Any,
                 when_ready: Optional[Callable[[], "defer.Deferred[Any]"]] = None,
                 random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.random_bytes = random_bytes
        self._when_ready = when_ready or (lambda: defer.succeed(None))
        self.rounds = 0
        self.failures = 0
        self.last_drawn = 0
        self._loop: Optional[task.LoopingCall] = None
        self._waiting: Optional[defer.Deferred] = None

    def startService(self) -> None:  # noqa: N802 (Twisted's name)
        super().startService()
        self._waiting = self._when_ready()
        self._waiting.addCallback(self._start_loop)
        self._waiting.addErrback(self._never_ready)

    def _start_loop(self, _: Any) -> None:
        if not self.running:
            return
        self._loop = task.LoopingCall(self.run_round)
        self._loop.clock = self.clock
        self._loop.start(self.settings.challenge_interval, now=True)

    def _never_ready(self, failure: Any) -> None:
        if failure.check(defer.CancelledError) is None:
            self.log.failure("challenge rounds not started", failure)

    def stopService(self) -> None:  # noqa: N802 (Twisted's name)
        super().stopService()
        if self._waiting is not None and not self._waiting.called:
            self._waiting.cancel()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    @defer.inlineCallbacks
    def run_round(self) -> Any:
        """Score, then draw the next round; never raises (a LoopingCall that raises
        stops for good)."""
        settings = self.settings
        now = self.clock.seconds()
        try:
            yield self.score(now)
            self.last_drawn = yield self.store.draw_round(
                now, settings.challenges_per_round, settings.challenge_interval,
                self.random_bytes)
            yield self.store.prune_challenges(
                now - settings.score_window - 2 * settings.challenge_interval)
            self.rounds += 1
        except DatabaseUnavailable as e:
            self.failures += 1
            self.log.warn("challenge round skipped, database unavailable ({why})", why=e)
        except Exception:
            self.failures += 1
            self.log.failure("challenge round failed")

    @defer.inlineCallbacks
    def score(self, now: float) -> Any:
        """Write every farmer's plot count and verified bytes as of now."""
        settings = self.settings
        tallies = yield self.store.all_tallies(
            now, now - settings.score_window, settings.challenge_interval,
            settings.proof_window)
        yield self.store.write_farmer_totals(farmer_totals(tallies))
