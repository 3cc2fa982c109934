"""The summariser: a LoopingCall that snapshots the online farmers and the totals.

The public lists are served from the latest :class:`Snapshot`, pre-rendered (and
gzipped) once per pass, so a dashboard poll never touches the database. Work on
large sets is done in slices with a pause between them, so the reactor keeps
answering pings while a pass runs.
"""

import datetime
import gc
from dataclasses import dataclass

from twisted.application import service
from twisted.internet import defer, task, threads
from twisted.logger import Logger

from dataserv.daemon import memory
from dataserv.web import render
from dataserv.web.body import Body
from dataserv.storage.database import DatabaseUnavailable
from dataserv.web.gzipping import BackgroundGzip

SLICE = 1000
# Farmers' entries are made in smaller slices: each works out a nodeid (~15 us).
ENTRY_SLICE = 250
# Today's uptime buckets are re-read only for farmers with a contact since the last
# read, less this margin for writes that committed late.
TODAY_MARGIN = 60.0

# zlib level for the gzip copy of /api/online/json. Measured on a 28.7 MB list
# (100 000 farmers): level 6 took 0.41 s for 6.66 MB, level 4 0.26 s for 6.83 MB.
GZIP_LEVEL = 4


def on_reactor(reactor):
    """A Summariser's ``pause`` and ``in_thread`` on a real reactor, as the daemon
    uses them: a reactor turn between slices, and the reactor's thread pool."""
    return {
        "pause": lambda: task.deferLater(reactor, 0, lambda: None),
        "in_thread": lambda f, *args: threads.deferToThreadPool(
            reactor, reactor.getThreadPool(), f, *args),
    }


@dataclass(frozen=True)
class Snapshot:
    """One pass's view of the online farmers, with the bodies pre-rendered."""

    built_at: float
    online_farmers: int
    total_height: int
    total_tb: float
    online_html: Body
    online_json: Body
    online_json_gzip: Body
    total_json: bytes


class Summariser(service.Service):
    """Builds a Snapshot every ``summary_interval`` seconds and appends totals history."""

    log = Logger()
    name = "summary"

    def __init__(self, store, settings, clock, pause=None, when_ready=None, in_thread=None):
        self.store = store
        # when_ready(): a Deferred that fires when the database can be queried.
        self._when_ready = when_ready or (lambda: defer.succeed(None))
        self.settings = settings
        self.clock = clock
        # pause(): a Deferred that fires after the reactor had a turn (the daemon
        # passes one; by default slices follow each other at once).
        self._pause = pause or (lambda: defer.succeed(None))
        # in_thread(f, *args): a Deferred of f(*args) run off the reactor thread,
        # for work that releases the GIL (zlib, malloc_trim); by default it runs at once.
        self._in_thread = in_thread or defer.maybeDeferred
        self.snapshot = None
        self._summarised = []        # Deferreds waiting for the first snapshot
        self.passes = 0
        self.failures = 0
        self.last_pass_seconds = None
        self.last_pass_phases = {}   # seconds per step of the last good pass
        self._loop = None
        self._waiting = None
        self._uptime_before = {}     # seconds credited on the window's earlier days
        self._uptime_before_key = None
        self._uptime_before_known = set()  # farmers whose earlier days are summed
        self._uptime_today = {}      # seconds credited today
        self._uptime_today_key = None
        self._uptime_today_at = None
        self._farmers = {}           # farmer id -> render.farmer_entry(...)
        # Entries whose credited seconds must be summed again from the two dicts
        # above (all of the online ones after a new day or a full re-read).
        self._credit_stale = set()
        self._credit_all_stale = False
        self._history_at = None
        self._claims_pruned_at = None

    def startService(self):  # noqa: N802
        super().startService()
        self._waiting = self._when_ready()
        self._waiting.addCallback(self._start_loop)
        self._waiting.addErrback(self._never_ready)

    def _start_loop(self, _):
        if not self.running:
            return
        self._loop = task.LoopingCall(self.run_pass)
        self._loop.clock = self.clock
        self._loop.start(self.settings.summary_interval, now=True)

    def _never_ready(self, failure):
        # stopService cancels the wait; anything else would otherwise be an
        # unhandled error in a Deferred nobody holds.
        if failure.check(defer.CancelledError) is None:
            self.log.failure("summaries not started", failure)

    def when_summarised(self):
        """A Deferred that fires with the first snapshot, once there is one."""
        if self.snapshot is not None:
            return defer.succeed(self.snapshot)
        d = defer.Deferred(lambda d: self._summarised.remove(d))
        self._summarised.append(d)
        return d

    def stopService(self):  # noqa: N802
        super().stopService()
        if not self._waiting.called:
            self._waiting.cancel()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    @defer.inlineCallbacks
    def run_pass(self):
        """One pass; never raises (a LoopingCall that raises stops for good)."""
        started = self.clock.seconds()
        phases = {}

        def timed(name, step, *args, **kwargs):
            begun = self.clock.seconds()

            def done(result):
                phases[name] = round(self.clock.seconds() - begun, 4)
                return result

            return defer.maybeDeferred(step, *args, **kwargs).addCallback(done)

        try:
            now = started
            yield timed("today", self._refresh_uptime, now)
            activity = yield timed("fetch", self.store.online_activity,
                                   now - self.settings.online_seconds, pause=self._pause)
            yield timed("identities", self._learn_identities, activity)
            yield timed("earlier_days", self._refresh_earlier_days, activity, now)
            yield timed("credits", self._refresh_credits, activity)
            self.snapshot = yield timed("render", self._build, activity, now)
            yield timed("history", self._maybe_append_history, now)
            yield timed("claims", self._maybe_prune_claims, now)
            yield timed("release", self._in_thread, memory.release)
            self.passes += 1
            self.last_pass_phases = phases
            waiting, self._summarised = self._summarised, []
            for d in waiting:
                d.callback(self.snapshot)
        except DatabaseUnavailable as e:
            self.failures += 1
            self.log.warn("summary pass skipped, database unavailable ({why}); "
                          "the previous snapshot stays", why=e)
        except Exception:
            self.failures += 1
            self.log.failure("summary pass failed; the previous snapshot stays")
        finally:
            self.last_pass_seconds = self.clock.seconds() - started

    @defer.inlineCallbacks
    def _refresh_uptime(self, now):
        """Keep today's uptime sums: read for the farmers that had a contact since
        the previous read (all online farmers on a new day)."""
        settings = self.settings
        seen_since = now - settings.online_seconds
        today = render.first_uptime_day(now, 1)
        if today != self._uptime_today_key:
            # (On a new day the earlier days are read again for everyone online,
            # and that refreshes every online farmer's credit.)
            self._uptime_today, self._uptime_today_key = {}, today
        else:
            seen_since = max(seen_since, self._uptime_today_at - TODAY_MARGIN)
        changed = yield self.store.online_seconds(
            today, seen_since=seen_since, last_day=today, pause=self._pause)
        self._uptime_today.update(changed)
        self._credit_stale.update(changed)
        self._uptime_today_at = now

    @defer.inlineCallbacks
    def _refresh_earlier_days(self, activity, now):
        """Keep the uptime sums of the window's days before today.

        They only change when a contact credits the online window after a previous
        contact from before midnight, so they are summed for every online farmer
        when the day changes and once more when the online window has passed into
        the new day; a farmer that comes online later is summed when first seen.
        """
        settings = self.settings
        today = render.first_uptime_day(now, 1)
        settled = now >= render.day_start(today) + settings.online_seconds
        first_day = render.first_uptime_day(now, settings.uptime_days)
        yesterday = today - datetime.timedelta(days=1)
        if (today, settled) != self._uptime_before_key:
            ids = [row[0] for row in activity]
            self._uptime_before = yield self.store.online_seconds(
                first_day, last_day=yesterday, seen_since=now - settings.online_seconds,
                pause=self._pause)
            self._uptime_before_known = set(ids)
            self._uptime_before_key = (today, settled)
            self._credit_all_stale = True
            return
        known = self._uptime_before_known
        new = yield self._not_in(activity, known)
        if new:
            sums = yield self.store.online_seconds(
                first_day, last_day=yesterday, farmer_ids=new, pause=self._pause)
            self._uptime_before.update(sums)
            self._credit_stale.update(sums)
            known.update(new)

    @defer.inlineCallbacks
    def _refresh_credits(self, activity):
        """Put the uptime seconds credited in the window into the farmers' entries,
        for those whose sums changed (every online one after a full re-read). A
        farmer that was offline meanwhile is summed anew when it is back, since its
        earlier days are then read for it."""
        before_get, today_get, farmers = (
            self._uptime_before.get, self._uptime_today.get, self._farmers)
        with_credit = render.with_credit
        if self._credit_all_stale:
            ids = [row[0] for row in activity]
        else:
            ids = list(self._credit_stale)
        self._credit_stale, self._credit_all_stale = set(), False
        for start in range(0, len(ids), SLICE * 10):
            if start:
                yield self._pause()
            for farmer_id in ids[start:start + SLICE * 10]:
                entry = farmers.get(farmer_id)
                if entry is not None:
                    farmers[farmer_id] = with_credit(
                        entry, before_get(farmer_id, 0.0) + today_get(farmer_id, 0.0))
            # Each new entry frees an old one, so the collector's allocation count
            # stays flat and it would not look at the new ones until some later
            # allocation tips it over: then at 100 000 of them at once, a 30-60 ms
            # stall. Let it see (and stop tracking) each slice's now.
            gc.collect(0)

    @defer.inlineCallbacks
    def _not_in(self, activity, known):
        """Ids of the activity rows not in ``known``, looked through a slice at a time."""
        new = []
        for start in range(0, len(activity), SLICE * 10):
            if start:
                yield self._pause()
            new.extend(row[0] for row in activity[start:start + SLICE * 10]
                       if row[0] not in known)
        return new

    @defer.inlineCallbacks
    def _learn_identities(self, activity):
        """Fetch what never changes about farmers seen for the first time."""
        farmers = self._farmers
        new = yield self._not_in(activity, farmers)
        if not new:
            return
        found = yield self.store.identities(new, pause=self._pause)
        for start in range(0, len(new), ENTRY_SLICE):
            if start:
                yield self._pause()
            for farmer_id in new[start:start + ENTRY_SLICE]:
                address, payout, reg_time = found[farmer_id]
                farmers[farmer_id] = render.farmer_entry(address, payout, reg_time)
        self._credit_stale.update(new)  # their credits are filled in by _refresh_credits

    @defer.inlineCallbacks
    def _build(self, activity, now):
        settings = self.settings
        window = settings.online_seconds
        window_start = render.day_start(render.first_uptime_day(now, settings.uptime_days))
        farmers = self._farmers
        # The gzip copy is made in a thread while the slices are rendered; the
        # pieces are never joined (see dataserv.web.body and dataserv.web.gzipping).
        gzip = BackgroundGzip(GZIP_LEVEL, self._in_thread)
        json_parts, html_parts = [b'{"farmers": ['], []
        gzip.feed(json_parts[0])
        total_height = 0
        count = len(activity)
        prune = len(farmers) > 2 * count + SLICE
        seen = []
        # The rows are taken off the list as they are rendered, so that they are
        # freed a slice at a time: freeing 100 000 of them at the end of the pass
        # in one go held the reactor for tens of milliseconds.
        first = True
        while activity:
            if not first:
                yield self._pause()
            chunk = activity[:SLICE]
            del activity[:SLICE]
            objects, entries, heights = render.render_slice(
                chunk, now, farmers, window, window_start)
            if prune:
                seen.extend(row[0] for row in chunk)
            del chunk
            total_height += heights
            piece = (("" if first else ", ") + objects).encode("utf-8")
            json_parts.append(piece)
            gzip.feed(piece)
            html_parts.append(entries.encode("utf-8"))
            first = False
        if prune:
            # Forget farmers that went offline (kept for a while: they may be back).
            self._farmers = {farmer_id: farmers[farmer_id] for farmer_id in seen}
        json_parts.append(b"]}")
        gzip.feed(json_parts[-1])
        online_json_gzip = yield gzip.finish()
        total = render.total_dict(now, count, total_height, settings.shard_size)
        return Snapshot(
            built_at=now,
            online_farmers=count,
            total_height=total_height,
            total_tb=total["total_TB"],
            online_html=Body(html_parts),
            online_json=Body(json_parts),
            online_json_gzip=online_json_gzip,
            total_json=render.json_bytes(total),
        )

    def _maybe_prune_claims(self, now):
        """Delete expired replay keys, at most once per replay window (2 x auth timeout):
        the table then holds at most two windows of keys, and the DELETE's scan runs
        once a minute rather than on every pass."""
        window = 2 * self.settings.auth_timeout
        if self._claims_pruned_at is not None and now - self._claims_pruned_at < window:
            return None
        self._claims_pruned_at = now
        return self.store.prune_request_claims(now)

    @defer.inlineCallbacks
    def _maybe_append_history(self, now):
        if self._history_at is None:
            self._history_at = (yield self.store.last_history_time()) or float("-inf")
        if now - self._history_at < self.settings.history_interval:
            return
        snap = self.snapshot
        yield self.store.append_history(
            now, snap.online_farmers, snap.total_tb, snap.total_height,
            min_gap=self.settings.history_interval)
        self._history_at = now
        yield self.store.prune_uptime(render.first_uptime_day(now, self.settings.uptime_days))
