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


class PeerWatch(PeriodicService):
    """Every CHECK_SECONDS: are other daemons connected to the database? Sets
    ``farmers.alone``, which starts False (claim before answering) and becomes True
    only once the unexpired replay keys in the database have been loaded into this
    daemon's cache, no other daemon is connected, and the cache has never had to drop
    keys still in their window (more than its limit within one window). A failed
    check changes nothing.
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
        self._failing = False

    def interval(self) -> float:
        return CHECK_SECONDS

    @defer.inlineCallbacks
    def step(self) -> Any:
        try:
            if not self.loaded:
                now = self.clock.seconds()
                keys = yield self.store.unexpired_claims(now)
                for key, expires in keys:
                    self.farmers.replays.remember(key, expires, now)
                self.loaded = True
            others = yield self.store.other_daemons(self.own_name)
        except Exception as e:
            if not self._failing:
                self._failing = True
                self.log.warn("{what} failed: {why}", what=self.what, why=first_line(e))
            return
        self._failing = False
        # A cache that ever had to drop keys still in their window no longer knows
        # every key the database does.
        alone = others == 0 and not self.farmers.replays.forgot
        if alone != self.farmers.alone:
            if alone:
                self.log.info("no other daemon on the database: throttled pings are "
                              "answered at once, their replay keys claimed just after")
            else:
                self.log.info("{others} other daemon(s) on the database: throttled pings "
                              "claim their replay keys before their answer", others=others)
        self.farmers.alone = alone
