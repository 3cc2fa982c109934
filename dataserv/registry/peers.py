"""Whether this daemon is alone on its database, which decides how throttled pings
are claimed (see :class:`dataserv.registry.farmers.Farmers`).

A ping throttled in memory writes nothing. Alone on its database, a daemon has
accepted every request the database holds a key for since it last loaded them, so
its in-memory :class:`~dataserv.identity.replay.ReplayCache` refuses every repeat and
such a ping can be answered at once (its key is claimed a moment later). With other
daemons on the same database, a repeat of a request another daemon took is only
known to the database, so every throttled ping claims its key there before its answer.
"""

from typing import Any, Callable

from twisted.internet import defer

from dataserv.registry.periodic import PeriodicService
from dataserv.storage.failures import first_line

# How often the daemon looks for others on its database (seconds).
CHECK_SECONDS = 1.0
# How long one check that found no other daemon is trusted: past it, throttled pings
# claim before their answer again (until a check succeeds).
LEASE_SECONDS = 2 * CHECK_SECONDS
# How long a daemon that finds others at start takes no signed request: by then each
# of them has either checked since this daemon connected (and seen it) or let its
# lease lapse.
GATE_SECONDS = LEASE_SECONDS + CHECK_SECONDS
OPEN_POLL_SECONDS = 0.1


class PeerWatch(PeriodicService):
    """Every CHECK_SECONDS: are other daemons connected to the database?

    A check that finds none sets ``farmers.alone_until`` LEASE_SECONDS past the
    moment it asked; one that finds others clears it; a failed check changes nothing,
    so the lease lapses. Never alone before the unexpired replay keys in the database
    are loaded into this daemon's cache, nor once the cache has had to drop keys
    still in their window (more than its limit within one window).

    At start, ``farmers.claims_from`` keeps signed requests out (503) until the
    first check; if it finds other daemons, for GATE_SECONDS more: each of them then
    knows of this one, or no longer trusts its lease, before this daemon takes a
    request that one of them could otherwise see repeated and answer from memory.
    """

    what = "the check for other daemons on the database"

    def __init__(self, store: Any, farmers: Any, name: str, clock: Any,
                 when_ready: Callable[[], "defer.Deferred[Any]"]) -> None:
        self.store = store
        self.farmers = farmers
        self.own_name = name
        self.clock = clock
        self._when_ready = when_ready
        self.loaded = False
        self.checked = False  # a check has succeeded
        self._failing = False
        self._alone = False

    def interval(self) -> float:
        return CHECK_SECONDS

    def when_open(self) -> "defer.Deferred[None]":
        """A Deferred that fires once this daemon takes signed requests."""
        d: "defer.Deferred[None]" = defer.Deferred()

        def poll() -> None:
            if self.clock.seconds() >= self.farmers.claims_from:
                d.callback(None)
            else:
                self.clock.callLater(OPEN_POLL_SECONDS, poll)

        poll()
        return d

    def startService(self) -> None:  # noqa: N802 (Twisted's name)
        self.farmers.claims_from = float("inf")
        super().startService()

    @defer.inlineCallbacks
    def step(self) -> Any:
        try:
            if not self.loaded:
                now = self.clock.seconds()
                keys = yield self.store.unexpired_claims(now)
                for key, expires in keys:
                    self.farmers.replays.remember(key, expires, now)
                self.loaded = True
            asked = self.clock.seconds()
            others = yield self.store.other_daemons(self.own_name)
        except Exception as e:
            if not self._failing:
                self._failing = True
                self.log.warn("{what} failed: {why}", what=self.what, why=first_line(e))
            return
        self._failing = False
        if not self.checked:
            self.checked = True
            self.farmers.claims_from = asked + GATE_SECONDS if others else 0.0
            if others:
                self.log.info("{others} other daemon(s) on the database: signed requests "
                              "are answered 503 for {gate:.0f} s, until they have seen this "
                              "one", others=others, gate=GATE_SECONDS)
        # A cache that ever had to drop keys still in their window no longer knows
        # every key the database does.
        alone = others == 0 and not self.farmers.replays.forgot
        if alone != self._alone:
            if alone:
                self.log.info("no other daemon on the database: throttled pings are "
                              "answered at once, their replay keys claimed just after")
            else:
                self.log.info("{others} other daemon(s) on the database: throttled pings "
                              "claim their replay keys before their answer", others=others)
        self._alone = alone
        self.farmers.alone_until = asked + LEASE_SECONDS if alone else 0.0
