"""The challenge rounds: a LoopingCall that draws challenges and scores the plots.

Every ``--challenge-interval`` seconds a round draws ``--challenges-per-round`` fresh
random challenges (``secrets``) for every registered plot, works out each farmer's
plot count and verified bytes over the trailing ``--score-window`` (see
:mod:`dataserv.proofs.scoring`), writes the ones that changed into the farmers'
rows (the summariser publishes them), and drops challenges that left every window.
"""

import secrets
from typing import Any, Callable, Optional

from twisted.internet import defer
from twisted.logger import Logger

from dataserv.proofs.scoring import farmer_totals
from dataserv.registry.periodic import PeriodicService
from dataserv.storage.database import DatabaseUnavailable


class ChallengeRounds(PeriodicService):
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

    what = "challenge rounds"

    def interval(self) -> float:
        """Seconds between two rounds."""
        return float(self.settings.challenge_interval)

    def step(self) -> Any:
        """One round (see :meth:`run_round`)."""
        return self.run_round()

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
