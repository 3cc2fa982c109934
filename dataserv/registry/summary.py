"""The summariser: a LoopingCall that snapshots the online farmers and the totals.

Each pass reads who is online, keeps their credited uptime up to date
(:mod:`dataserv.registry.uptime_sums`) and hands the result to a renderer that the
daemon injects (the web side's :class:`dataserv.web.snapshot.SnapshotRenderer`),
whose snapshot the public routes serve. It also appends the totals history and
prunes uptime buckets that left the window. Work on large sets is done in slices
with a pause between them, so the reactor keeps answering pings while a pass runs.
"""

import gc
from typing import Any, Callable, Dict, List, Optional

from twisted.internet import defer
from twisted.logger import Logger

from dataserv.registry.periodic import PeriodicService
from dataserv.registry.uptime_sums import UptimeSums
from dataserv.registry.uptime import first_uptime_day
from dataserv.registry import credit
from dataserv.storage.database import DatabaseUnavailable

# Farmers looked through between two pauses of the reactor.
SLICE = 10000
# Farmers' entries are made in smaller slices: each works out a nodeid (~15 us).
ENTRY_SLICE = 250
# Offline farmers' entries are kept (they may be back) until there are this many
# more than twice the online ones.
KEEP_OFFLINE_MARGIN = 1000


def _untrack_new_entries() -> None:
    """Let the collector look at the entries just remade.

    Each new entry frees an old one, so the collector's allocation count stays flat
    and it would not look at the new ones until some later allocation tips it over:
    then at 100 000 of them at once, a 30-60 ms stall. A young collection per slice
    sees them while they are few, and stops tracking them (tuples of atoms).
    """
    gc.collect(0)


def _now(result: Any = None) -> Any:
    return defer.succeed(result)


class Summariser(PeriodicService):
    """Builds a snapshot every ``summary_interval`` seconds and appends totals history.

    ``renderer`` makes the per-farmer entries and the snapshot (see
    dataserv.web.snapshot). ``pause()`` gives the reactor a turn between slices;
    ``in_thread(f, *args)`` runs work that releases the GIL (zlib) off the reactor
    thread; ``after_pass()`` runs in that thread after each good pass (the daemon
    hands freed heap back to the system there); ``when_ready()`` fires when the
    database can be queried. Each defaults to doing it at once.
    """

    log = Logger()
    name = "summary"

    def __init__(self, store: Any, settings: Any, clock: Any, renderer: Any,
                 pause: Optional[Callable[[], "defer.Deferred[None]"]] = None,
                 when_ready: Optional[Callable[[], "defer.Deferred[Any]"]] = None,
                 in_thread: Optional[Callable[..., "defer.Deferred[Any]"]] = None,
                 after_pass: Optional[Callable[[], None]] = None) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.renderer = renderer
        self._pause = pause or _now
        self._when_ready = when_ready or _now
        self._in_thread = in_thread or defer.maybeDeferred
        self._after_pass = after_pass or (lambda: None)
        self.uptime = UptimeSums(store, settings.online_seconds, settings.uptime_days,
                                 self._pause)
        self.snapshot: Any = None
        self.passes = 0
        self.failures = 0
        self.last_pass_seconds: Optional[float] = None
        self.last_pass_phases: Dict[str, float] = {}  # seconds per step of the last good pass
        self._entries: Dict[int, Any] = {}  # farmer id -> the renderer's entry
        self._history_at: Optional[float] = None
        self._pruned_before: Any = None
        self._summarised: List[defer.Deferred] = []  # waiting for the first snapshot
        self._claims_pruned_at: Optional[float] = None
        self._skip_logged_at: Optional[float] = None  # last "pass skipped" line

    # -- the service ----------------------------------------------------------

    what = "summaries"

    def interval(self) -> float:
        """Seconds between two passes."""
        return float(self.settings.summary_interval)

    def step(self) -> Any:
        """One pass (see :meth:`run_pass`)."""
        return self.run_pass()

    def when_summarised(self) -> "defer.Deferred[Any]":
        """A Deferred that fires with the first snapshot, once there is one."""
        if self.snapshot is not None:
            return defer.succeed(self.snapshot)
        d: defer.Deferred = defer.Deferred(lambda d: self._summarised.remove(d))
        self._summarised.append(d)
        return d

    # -- one pass -------------------------------------------------------------

    @defer.inlineCallbacks
    def run_pass(self) -> Any:
        """One pass; never raises (a LoopingCall that raises stops for good)."""
        started = self.clock.seconds()
        phases: Dict[str, float] = {}

        def timed(name: str, step: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            begun = self.clock.seconds()

            def done(result: Any) -> Any:
                phases[name] = round(self.clock.seconds() - begun, 4)
                return result

            return defer.maybeDeferred(step, *args, **kwargs).addCallback(done)

        try:
            now = started
            yield timed("today", self.uptime.refresh_today, now)
            activity = yield timed("fetch", self.store.online_activity,
                                   now - self.settings.online_seconds, pause=self._pause,
                                   now=now, rate=credit.fill_rate(self.settings))
            yield timed("identities", self._learn_identities, activity)
            yield timed("earlier_days", self.uptime.refresh_earlier_days,
                        lambda: [row[0] for row in activity], now,
                        lambda known: self._not_in(activity, known))
            yield timed("credits", self._refresh_credits, activity)
            yield timed("forget", self._forget_offline, activity)
            self.snapshot = yield timed(
                "render", self.renderer.build, activity, now, self._entries,
                self._pause, self._in_thread)
            yield timed("history", self._maybe_append_history, now)
            yield timed("prune", self._maybe_prune_uptime, now)
            yield timed("claims", self._maybe_prune_claims, now)
            yield timed("release", self._in_thread, self._after_pass)
            self.passes += 1
            self.last_pass_phases = phases
            waiting, self._summarised = self._summarised, []
            for d in waiting:
                d.callback(self.snapshot)
        except DatabaseUnavailable as e:
            self.failures += 1
            # The database's own lost/back lines tell the outage; this one, once a
            # minute at most, says what it means for the lists.
            if self._skip_logged_at is None or started - self._skip_logged_at >= 60:
                self._skip_logged_at = started
                self.log.warn("summary pass skipped, database unavailable ({why}); "
                              "the previous snapshot stays", why=e)
        except Exception:
            self.failures += 1
            self.log.failure("summary pass failed; the previous snapshot stays")
        finally:
            self.last_pass_seconds = self.clock.seconds() - started

    @defer.inlineCallbacks
    def _not_in(self, activity: List[Any], known: Any) -> Any:
        """Ids of the activity rows not in ``known``, looked through a slice at a time."""
        new: List[int] = []
        for start in range(0, len(activity), SLICE):
            if start:
                yield self._pause()
            new.extend(row[0] for row in activity[start:start + SLICE]
                       if row[0] not in known)
        return new

    @defer.inlineCallbacks
    def _learn_identities(self, activity: List[Any]) -> Any:
        """Fetch what never changes about farmers seen for the first time."""
        entries, make = self._entries, self.renderer.entry
        new = yield self._not_in(activity, entries)
        if not new:
            return
        found = yield self.store.identities(new, pause=self._pause)
        for start in range(0, len(new), ENTRY_SLICE):
            if start:
                yield self._pause()
            for farmer_id in new[start:start + ENTRY_SLICE]:
                address, payout, reg_time = found[farmer_id]
                entries[farmer_id] = make(address, payout, reg_time)
        self.uptime.mark_changed(new)  # their credits are filled in by _refresh_credits

    @defer.inlineCallbacks
    def _refresh_credits(self, activity: List[Any]) -> Any:
        """Put the seconds credited in the window into the entries of the farmers
        whose sums changed (every online one after a full re-read). A farmer that
        was offline meanwhile is summed anew when it is back, since its earlier
        days are then read for it."""
        entries, total, with_credit = self._entries, self.uptime.total, self.renderer.with_credit
        ids = self.uptime.take_changed(lambda: [row[0] for row in activity])
        for start in range(0, len(ids), SLICE):
            if start:
                yield self._pause()
            for farmer_id in ids[start:start + SLICE]:
                entry = entries.get(farmer_id)
                if entry is not None:
                    entries[farmer_id] = with_credit(entry, total(farmer_id))
            _untrack_new_entries()

    def _maybe_prune_claims(self, now: float) -> Any:
        """Delete expired replay keys, at most once per replay window (2 x auth timeout):
        the table then holds at most two windows of keys, and the DELETE's scan runs
        once a minute rather than on every pass."""
        window = 2 * self.settings.auth_timeout
        if self._claims_pruned_at is not None and now - self._claims_pruned_at < window:
            return None
        self._claims_pruned_at = now
        return self.store.prune_request_claims(now)

    @defer.inlineCallbacks
    def _forget_offline(self, activity: List[Any]) -> Any:
        """Drop the entries of farmers that went offline once they outnumber the
        online ones by far (kept for a while before that: they may be back)."""
        if len(self._entries) <= 2 * len(activity) + KEEP_OFFLINE_MARGIN:
            return
        kept: Dict[int, Any] = {}
        entries = self._entries
        for start in range(0, len(activity), SLICE):
            if start:
                yield self._pause()
            for row in activity[start:start + SLICE]:
                kept[row[0]] = entries[row[0]]
        self._entries = kept

    @defer.inlineCallbacks
    def _maybe_append_history(self, now: float) -> Any:
        """Append a totals row once per ``history_interval`` (across daemons)."""
        if self._history_at is None:
            self._history_at = (yield self.store.last_history_time()) or float("-inf")
        if now - self._history_at < self.settings.history_interval:
            return
        snap = self.snapshot
        yield self.store.append_history(
            now, snap.online_farmers, snap.total_tb, snap.total_height,
            min_gap=self.settings.history_interval, verified_tb=snap.verified_tb)
        self._history_at = now

    @defer.inlineCallbacks
    def _maybe_prune_uptime(self, now: float) -> Any:
        """Drop uptime buckets of days that left the window: once per new first day."""
        first_day = first_uptime_day(now, self.settings.uptime_days)
        if first_day == self._pruned_before:
            return
        yield self.store.prune_uptime(first_day)
        self._pruned_before = first_day
