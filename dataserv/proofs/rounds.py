"""The challenge rounds: a LoopingCall that draws challenges and scores the plots.

Every ``--challenge-interval`` seconds a round draws ``--challenges-per-round`` fresh
random challenges (``secrets``) for every registered plot, works out each farmer's
plot count and verified bytes over the trailing ``--score-window`` (see
:mod:`dataserv.proofs.scoring`), writes the ones that changed into the farmers'
rows (the summariser publishes them), and drops challenges that left every window.
"""

import secrets
from bisect import bisect_left
from typing import Any, Callable, Optional, Tuple

from twisted.internet import defer
from twisted.logger import Logger

from dataserv.proofs.scoring import farmer_totals
from dataserv.registry.periodic import PeriodicService
from dataserv.storage.database import DatabaseUnavailable


class ChallengeRounds(PeriodicService):
    """Draws a round of challenges and scores the plots every challenge interval.

    It keeps the figures /metrics reads: rounds done and failed, how long they took
    (counts per bucket of DURATION_BUCKETS, the last one above them all, and the
    sum), the challenges the last round drew, and (plots, verified bytes) over all
    farmers as the last round scored them (None until one has).
    """

    log = Logger()
    name = "challenges"
    # Upper bounds (seconds) of the round duration buckets.
    DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

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
        self.scored: Optional[Tuple[int, int]] = None
        self.duration_counts = [0] * (len(self.DURATION_BUCKETS) + 1)
        self.seconds_total = 0.0

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
        seconds = max(0.0, self.clock.seconds() - now)
        self.duration_counts[bisect_left(self.DURATION_BUCKETS, seconds)] += 1
        self.seconds_total += seconds

    @defer.inlineCallbacks
    def score(self, now: float) -> Any:
        """Write every farmer's plot count and verified bytes as of now."""
        settings = self.settings
        tallies = yield self.store.all_tallies(
            now, now - settings.score_window, settings.challenge_interval,
            settings.proof_window)
        totals = farmer_totals(tallies)
        yield self.store.write_farmer_totals(totals)
        self.scored = (sum(plots for plots, _ in totals.values()),
                       sum(verified for _, verified in totals.values()))
