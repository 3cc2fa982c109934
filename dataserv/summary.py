"""The summariser: a LoopingCall that snapshots the online farmers and the totals.

The public lists are served from the latest :class:`Snapshot`, pre-rendered (and
gzipped) once per pass, so a dashboard poll never touches the database. Work on
large sets is done in slices with a pause between them, so the reactor keeps
answering pings while a pass runs.
"""

import gzip
from dataclasses import dataclass

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from dataserv import render
from dataserv.database import DatabaseUnavailable

SLICE = 2000
# The uptime sums are a GROUP BY over up to 30 days of buckets: refresh them every
# pass while that is cheap, and back off so that they never take more than this
# share of the time when the field is large.
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
        # pause(): a Deferred that fires after the reactor had a turn.
        self._pause = pause or (lambda: task.deferLater(clock, 0, lambda: None))
        # offload(f, *args): run CPU work that releases the GIL (gzip) elsewhere.
        self._offload = offload or (lambda f, *a: defer.maybeDeferred(f, *a))
        self.snapshot = None
        self.passes = 0
        self.failures = 0
        self.last_pass_seconds = None
        self._loop = None
        self._waiting = None
        self._uptime = {}
        self._uptime_at = None
        self._uptime_every = 0.0
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
            records = yield self.store.online_since(now - self.settings.online_seconds)
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
        if self._uptime_at is not None and now - self._uptime_at < self._uptime_every:
            return
        first_day = render.first_uptime_day(now, self.settings.uptime_days)
        self._uptime = yield self.store.online_seconds(
            first_day, seen_since=now - self.settings.online_seconds)
        took = self.clock.seconds() - now
        self._uptime_at = now
        self._uptime_every = took / UPTIME_SHARE

    @defer.inlineCallbacks
    def _build(self, records, now):
        settings = self.settings
        html, json_parts = [], []
        total_height = 0
        for start in range(0, len(records), SLICE):
            if start:
                yield self._pause()
            chunk = records[start:start + SLICE]
            farmers = []
            for record in chunk:
                total_height += record.height
                html.append(render.online_html_entry(record, now))
                uptime = render.uptime_percent(
                    self._uptime.get(record.id, 0.0), record, now,
                    settings.online_seconds, settings.uptime_days)
                farmers.append(render.farmer_dict(record, now, uptime))
            json_parts.append(render.json_bytes(farmers)[1:-1])
        online_json = b'{"farmers": [' + b", ".join(json_parts) + b"]}"
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
