"""The summariser: a LoopingCall that snapshots the online farmers and the totals.

The public lists are served from the latest :class:`Snapshot`, pre-rendered (and
gzipped) once per pass, so a dashboard poll never touches the database. Work on
large sets is done in slices with a pause between them, so the reactor keeps
answering pings while a pass runs.
"""

import datetime
import gzip
from dataclasses import dataclass

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from dataserv import render
from dataserv.database import DatabaseUnavailable

SLICE = 2000
# Today's uptime buckets are summed every pass while that is cheap, and less often
# when the field is large, so that it never takes more than this share of the time.
# The earlier days of the window are summed once a day (see _refresh_uptime).
UPTIME_SHARE = 0.05


@dataclass(frozen=True)
class Snapshot:
    """One pass's view of the online farmers, with the bodies pre-rendered."""

    built_at: float
    online_farmers: int
    total_height: int
    total_tb: float
    online_html: bytes
    online_json: bytes
    online_json_gzip: bytes
    total_json: bytes


def _gzip(body):
    return gzip.compress(body, compresslevel=6, mtime=0)


class Summariser(service.Service):
    """Builds a Snapshot every ``summary_interval`` seconds and appends totals history."""

    log = Logger()
    name = "summary"

    def __init__(self, store, settings, clock, pause=None, offload=None, when_ready=None):
        self.store = store
        # when_ready(): a Deferred that fires when the database can be queried.
        self._when_ready = when_ready or (lambda: defer.succeed(None))
        self.settings = settings
        self.clock = clock
        # pause(): a Deferred that fires after the reactor had a turn (the daemon
        # passes one; by default slices follow each other at once).
        self._pause = pause or (lambda: defer.succeed(None))
        # offload(f, *args): run CPU work that releases the GIL (gzip) elsewhere.
        self._offload = offload or (lambda f, *a: defer.maybeDeferred(f, *a))
        self.snapshot = None
        self.passes = 0
        self.failures = 0
        self.last_pass_seconds = None
        self._loop = None
        self._waiting = None
        self._uptime_before = {}     # seconds credited on the window's earlier days
        self._uptime_before_key = None
        self._uptime_today = {}      # seconds credited today
        self._uptime_at = None
        self._uptime_every = 0.0
        self._static = {}            # farmer id -> unchanging parts of its JSON
        self._history_at = None

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
        try:
            now = started
            yield self._refresh_uptime(now)
            records = yield self.store.online_since(
                now - self.settings.online_seconds, pause=self._pause)
            self.snapshot = yield self._build(records, now)
            yield self._maybe_append_history(now)
            self.passes += 1
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
        """Keep the uptime sums of online farmers: earlier days + today.

        The earlier days of the window only change when a contact credits the
        window after a previous contact that came before midnight, so they are
        summed when the day changes and once more when the online window has
        passed into the new day. Today's buckets are summed every pass while cheap.
        """
        settings = self.settings
        seen_since = now - settings.online_seconds
        today = render.first_uptime_day(now, 1)
        settled = now >= render.day_start(today) + settings.online_seconds
        key = (today, settled)
        if key != self._uptime_before_key:
            first_day = render.first_uptime_day(now, settings.uptime_days)
            self._uptime_before = yield self.store.online_seconds(
                first_day, seen_since=seen_since, last_day=today - datetime.timedelta(days=1),
                pause=self._pause)
            self._uptime_before_key = key
        if self._uptime_at is not None and now - self._uptime_at < self._uptime_every:
            return
        started = self.clock.seconds()
        self._uptime_today = yield self.store.online_seconds(
            today, seen_since=seen_since, pause=self._pause)
        self._uptime_at = now
        self._uptime_every = (self.clock.seconds() - started) / UPTIME_SHARE

    @defer.inlineCallbacks
    def _build(self, records, now):
        settings = self.settings
        window = settings.online_seconds
        window_start = render.day_start(render.first_uptime_day(now, settings.uptime_days))
        before, today, old_static = self._uptime_before, self._uptime_today, self._static
        static = {}
        html, json_parts = [], []
        total_height = 0
        for start in range(0, len(records), SLICE):
            if start:
                yield self._pause()
            farmers = []
            for record in records[start:start + SLICE]:
                total_height += record.height
                html.append(render.online_html_entry(record, now))
                parts = old_static.get(record.id) or render.farmer_json_static(record)
                static[record.id] = parts
                credited = before.get(record.id, 0.0) + today.get(record.id, 0.0)
                uptime = render.uptime_since(credited, record, now, window, window_start)
                farmers.append(render.farmer_json(parts, record, now, uptime))
            json_parts.append(", ".join(farmers).encode("utf-8"))
        self._static = static
        online_json = b'{"farmers": [' + b", ".join(p for p in json_parts if p) + b"]}"
        online_json_gzip = yield self._offload(_gzip, online_json)
        total = render.total_dict(now, len(records), total_height, settings.shard_size)
        return Snapshot(
            built_at=now,
            online_farmers=len(records),
            total_height=total_height,
            total_tb=total["total_TB"],
            online_html="".join(html).encode("utf-8"),
            online_json=online_json,
            online_json_gzip=online_json_gzip,
            total_json=render.json_bytes(total),
        )

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
