"""Tests for :mod:`dataserv.registry.summary`: snapshots, failures, scheduling, history."""

import calendar
import datetime
import gc
import gzip
import json

from twisted.internet import defer, task
from twisted.trial import unittest

from dataserv.daemon import memory
from dataserv.registry import summary, uptime_sums
from dataserv.web import snapshot
from dataserv.daemon.config import Settings
from dataserv.identity.signing import FarmerKey
from dataserv.storage.store import FarmerStore
from dataserv.registry.summary import Summariser
from dataserv.web.snapshot import SnapshotRenderer
from tests import pg
from tests.test_store import record_contacts

T = calendar.timegm((2023, 11, 15, 12, 0, 0))
INTERVAL = 5.0
HISTORY = 300.0
SETTINGS = Settings(summary_interval=INTERVAL, history_interval=HISTORY, online_time=15)
WINDOW = SETTINGS.online_seconds
ALICE, BOB, CAROL, GONE = (FarmerKey.from_seed(b"summary " + name).address
                           for name in (b"alice", b"bob", b"carol", b"gone"))


class DatabaseSummaryTests(unittest.TestCase):
    """A Summariser over a real store; the Clock decides "now"."""

    @defer.inlineCallbacks
    def setUp(self):
        self.db = yield pg.open_database(self)
        self.clock = task.Clock()
        self.clock.advance(T)
        self.store = FarmerStore(self.db, self.clock)
        self.summariser = Summariser(self.store, SETTINGS, self.clock, SnapshotRenderer(SETTINGS))

    @defer.inlineCallbacks
    def add_farmers(self, *farmers):
        """Register (address, height, seen at) in the order given."""
        for address, height, seen in farmers:
            yield self.store.register(address, address, seen, None)
            yield self.store.set_height(address, height, seen, None, WINDOW)

    def contacts(self, *contacts):
        """Record (address, at, ip) contacts as pings do, at most one a minute."""
        return record_contacts(self.store, contacts, 60, WINDOW)

    def add_three_online(self):
        # 16384 shards of 128 MiB: exactly 2 TiB between the three of them.
        return self.add_farmers((ALICE, 4096, T - 30), (BOB, 8192, T - 90),
                                (CAROL, 4096, T - 4000), (GONE, 4096, T - 2 * WINDOW))

    @defer.inlineCallbacks
    def pass_at(self, when):
        self.clock.advance(when - self.clock.seconds())
        yield self.summariser.run_pass()
        return self.summariser.snapshot

    @defer.inlineCallbacks
    def history_times(self):
        rows = yield self.db.run_query("SELECT at FROM totals_history ORDER BY at")
        return [r[0] for r in rows]

    @defer.inlineCallbacks
    def test_snapshot(self):
        """Online set, order (height, then registration), HTML, JSON, gzip, totals."""
        yield self.add_three_online()
        yield self.store.set_height(CAROL, 4096, T - 60, None, WINDOW)  # CAROL is back
        snap = yield self.pass_at(T)
        self.assertEqual((snap.built_at, snap.online_farmers, snap.total_height),
                         (T, 3, 16384))
        self.assertEqual(bytes(snap.online_html), (
            BOB + " |  Last Seen: 1 minute(s) | Height: 8192<br/>"
            + ALICE + " |  Last Seen: 30 second(s) | Height: 4096<br/>"
            + CAROL + " |  Last Seen: 1 minute(s) | Height: 4096<br/>").encode("ascii"))
        listed = json.loads(bytes(snap.online_json))["farmers"]
        self.assertEqual([(f["btc_addr"], f["payout_addr"], f["height"], f["last_seen"])
                          for f in listed],
                         [(BOB, BOB, 8192, 90), (ALICE, ALICE, 4096, 30),
                          (CAROL, CAROL, 4096, 60)])
        self.assertEqual(gzip.decompress(bytes(snap.online_json_gzip)), bytes(snap.online_json))
        self.assertEqual(json.loads(snap.total_json),
                         {"id": int(T // 1800), "total_TB": 2.0, "total_farmers": 3,
                          "verified_TB": 0.0})
        self.assertEqual(snap.total_tb, 2.0)
        self.assertEqual((self.summariser.passes, self.summariser.failures), (1, 0))

    @defer.inlineCallbacks
    def test_nobody_online(self):
        snap = yield self.pass_at(T)
        self.assertEqual((bytes(snap.online_html), bytes(snap.online_json)), (b"", b'{"farmers": []}'))
        self.assertEqual(json.loads(snap.total_json)["total_TB"], 0.0)
        self.assertEqual(gzip.decompress(bytes(snap.online_json_gzip)), b'{"farmers": []}')

    @defer.inlineCallbacks
    def test_uptime_in_the_json(self):
        """The listed uptime comes from the credited seconds, not a constant."""
        yield self.add_farmers((ALICE, 1, T - 3600))
        yield self.contacts((ALICE, T - 600, None))
        snap = yield self.pass_at(T)
        # Registered an hour ago, online for the 15 minutes after that and for the
        # last 10: 25 of 60 minutes.
        self.assertEqual(json.loads(bytes(snap.online_json))["farmers"][0]["uptime"], 41.667)

    @defer.inlineCallbacks
    def test_listed_uptime_agrees_with_the_exact_one(self):
        """Earlier days (summed once a day) plus today (summed per pass) give the
        same uptime as the exact per-farmer query, across a change of UTC day."""
        from dataserv.registry import uptime as render

        yield self.add_farmers((ALICE, 1, T - 3 * 86400))
        for at in range(int(T - 2 * 86400), int(T + 86400), 600):
            yield self.contacts((ALICE, at, None))
            if at % 43200 == 0 or at == int(T - 2 * 86400):
                snap = yield self.pass_at(at)
                record = yield self.store.farmer(ALICE)
                exact = yield self.store.online_seconds(
                    render.first_uptime_day(at, SETTINGS.uptime_days), farmer_ids=[record.id])
                expected = render.uptime_percent(
                    exact.get(record.id, 0.0), record, at, WINDOW, SETTINGS.uptime_days)
                listed = json.loads(bytes(snap.online_json))["farmers"][0]["uptime"]
                self.assertEqual(listed, expected, "at %d" % at)
        self.assertGreater(listed, 60.0)

    @defer.inlineCallbacks
    def assertListedUptimesExact(self, snap, at):  # noqa: N802
        """Every listed uptime equals the exact per-farmer figure at ``at``."""
        from dataserv.registry import uptime as render

        listed = json.loads(bytes(snap.online_json))["farmers"]
        self.assertTrue(listed)
        for farmer in listed:
            record = yield self.store.farmer(farmer["btc_addr"])
            exact = yield self.store.online_seconds(
                render.first_uptime_day(at, SETTINGS.uptime_days), farmer_ids=[record.id])
            expected = render.uptime_percent(
                exact.get(record.id, 0.0), record, at, WINDOW, SETTINGS.uptime_days)
            self.assertEqual(farmer["uptime"], expected, "%s at %d" % (farmer["btc_addr"], at))

    @defer.inlineCallbacks
    def test_listed_uptime_follows_todays_contacts(self):
        """Passes a few minutes apart in the same day: only today's sums of the
        farmers with new contacts are read again, and their listed uptime moves."""
        yield self.add_farmers((ALICE, 1, T - 3 * 86400), (BOB, 1, T - 3 * 86400))
        for at in range(int(T - 86400), int(T - 3600), 600):
            yield self.contacts((ALICE, at, None), (BOB, at, None))
        yield self.contacts((ALICE, T - 60, None), (BOB, T - 60, None))
        uptimes = []
        for at in (T, T + 300, T + 600, T + 900):
            if at > T:
                yield self.contacts((ALICE, at - 10, None))
            snap = yield self.pass_at(at)
            yield self.assertListedUptimesExact(snap, at)
            uptimes.append({f["btc_addr"]: f["uptime"]
                            for f in json.loads(bytes(snap.online_json))["farmers"]}[ALICE])
        self.assertEqual(sorted(set(uptimes)), uptimes)  # rising with every contact

    @defer.inlineCallbacks
    def test_farmer_back_after_a_day_change(self):
        """A farmer the summariser knew, offline over midnight and back the next day,
        is listed with its earlier days summed anew."""
        yield self.add_farmers((ALICE, 1, T - 3 * 86400), (BOB, 1, T - 3 * 86400))
        for at in range(int(T - 2 * 86400), int(T - 3600), 600):
            yield self.contacts((ALICE, at, None), (BOB, at, None))
        yield self.contacts((ALICE, T - 60, None), (BOB, T - 60, None))
        yield self.pass_at(T)
        # ALICE keeps pinging into the next day; BOB is away until its afternoon.
        next_noon = T + 86400
        for at in range(int(T), int(next_noon + 3600), 600):
            yield self.contacts((ALICE, at, None))
            if at % 21600 == 0:
                yield self.pass_at(at)
        yield self.contacts((BOB, next_noon + 3600, None))
        snap = yield self.pass_at(next_noon + 3600)
        self.assertEqual(len(json.loads(bytes(snap.online_json))["farmers"]), 2)
        yield self.assertListedUptimesExact(snap, next_noon + 3600)

    @defer.inlineCallbacks
    def test_yesterday_credited_after_midnight_is_listed(self):
        """A contact just after midnight credits the end of yesterday. The earlier
        days are read again once the online window has passed into the day, and
        the listed uptime takes that in even without a newer contact."""
        midnight = T + 12 * 3600
        yield self.add_farmers((ALICE, 1, T - 86400))
        for at in range(int(T - 86400), int(midnight), 600):
            yield self.contacts((ALICE, at, None))
        yield self.contacts((ALICE, midnight - 300, None))
        yield self.pass_at(midnight)
        yield self.contacts((ALICE, midnight + 300, None))
        yield self.pass_at(midnight + 330)
        at = midnight + WINDOW + 60
        snap = yield self.pass_at(at)
        yield self.assertListedUptimesExact(snap, at)

    @defer.inlineCallbacks
    def test_today_is_reread_only_for_recent_contacts(self):
        """Earlier days are summed once; today's sums only for farmers with a contact
        since the previous pass (less a margin for late commits)."""
        yield self.add_three_online()
        calls = []
        original = self.store.online_seconds

        def recording(first_day, **kwargs):
            calls.append((first_day, kwargs.get("last_day"), kwargs.get("seen_since")))
            return original(first_day, **kwargs)

        self.patch(self.store, "online_seconds", recording)
        yield self.pass_at(T)
        yield self.pass_at(T + INTERVAL)
        today = datetime.date(2023, 11, 15)
        self.assertEqual(calls, [
            (today, today, T - WINDOW),
            (today - datetime.timedelta(days=29), today - datetime.timedelta(days=1), T - WINDOW),
            (today, today, T - uptime_sums.TODAY_MARGIN),  # since the previous read
        ])

    @defer.inlineCallbacks
    def test_farmer_back_later_in_the_day_has_its_earlier_days(self):
        """Earlier days are summed for the online farmers once a day; a farmer that
        comes online afterwards gets its own sum when first seen."""
        yield self.add_farmers((ALICE, 1, T - 3 * 86400), (BOB, 1, T - 3 * 86400))
        for at in range(int(T - 2 * 86400), int(T - 86400), 300):
            yield self.contacts((ALICE, at, None), (BOB, at, None))
        yield self.contacts((ALICE, T - 60, None))
        first = yield self.pass_at(T)
        self.assertEqual([f["btc_addr"] for f in json.loads(bytes(first.online_json))["farmers"]],
                         [ALICE])
        yield self.contacts((BOB, T + 600, None))
        later = yield self.pass_at(T + 600)
        listed = {f["btc_addr"]: f["uptime"] for f in json.loads(bytes(later.online_json))["farmers"]}
        # Both were online the whole of the day before yesterday: a third of 3 days.
        self.assertGreater(listed[BOB], 30.0)
        self.assertLess(abs(listed[BOB] - listed[ALICE]), 1.0)

    @defer.inlineCallbacks
    def test_identities_are_fetched_once_per_farmer(self):
        """Addresses, payout and registration never change: read once, then kept."""
        yield self.add_farmers((ALICE, 1, T - 30), (BOB, 2, T - 30))
        asked = []
        original = self.store.identities

        def recording(ids, **kwargs):
            asked.append(sorted(ids))
            return original(ids, **kwargs)

        self.patch(self.store, "identities", recording)
        yield self.pass_at(T)
        yield self.pass_at(T + INTERVAL)
        yield self.add_farmers((CAROL, 3, T + INTERVAL))
        snap = yield self.pass_at(T + 2 * INTERVAL)
        alice, bob, carol = yield defer.gatherResults(
            [self.store.farmer(a) for a in (ALICE, BOB, CAROL)])
        self.assertEqual(asked, [sorted([alice.id, bob.id]), [carol.id]])
        self.assertEqual([f["btc_addr"] for f in json.loads(bytes(snap.online_json))["farmers"]],
                         [CAROL, BOB, ALICE])

    @defer.inlineCallbacks
    def test_a_new_entry_gets_its_credit(self):
        """An entry made for a farmer seen for the first time is filled in with the
        seconds already summed for it, whatever else changed in the pass."""
        yield self.add_farmers((ALICE, 1, T - 30))
        alice = yield self.store.farmer(ALICE)
        self.summariser.uptime.before = {alice.id: 500.0}
        self.summariser.uptime.today = {alice.id: 20.0}
        activity = [(alice.id, 1, T - 30, 0.0, 0.0)]
        yield self.summariser._learn_identities(activity)
        yield self.summariser._refresh_credits(activity)
        self.assertEqual(self.summariser._entries[alice.id][-1], 520.0)

    @defer.inlineCallbacks
    def test_new_entries_are_shown_to_the_collector(self):
        """Entries remade with new credits replace old ones one for one, so the
        collector would not look at them on its own until much later (then at all
        of them at once); each slice is collected young, which untracks them."""
        yield self.add_three_online()
        gc.disable()
        self.addCleanup(gc.enable)
        yield self.pass_at(T)
        entries = list(self.summariser._entries.values())
        self.assertEqual(len(entries), 2)
        self.assertFalse(any(gc.is_tracked(entry) for entry in entries))

    @defer.inlineCallbacks
    def test_memory_is_released_after_each_pass(self):
        released = []
        self.summariser = Summariser(self.store, SETTINGS, self.clock, SnapshotRenderer(SETTINGS),
                                     after_pass=lambda: released.append(True))
        yield self.pass_at(T)
        yield self.pass_at(T + INTERVAL)
        self.assertEqual(len(released), 2)
        self.assertIn("release", self.summariser.last_pass_phases)

    @defer.inlineCallbacks
    def test_farmers_drop_out_as_time_passes(self):
        yield self.add_three_online()
        counts = []
        for when in (T, T - 90 + WINDOW, T - 90 + WINDOW + 1, T - 30 + WINDOW + 1):
            snap = yield self.pass_at(when)
            counts.append(snap.online_farmers)
        self.assertEqual(counts, [2, 2, 1, 0])

    @defer.inlineCallbacks
    def test_sliced_build_is_one_document(self):
        """Big lists are built in slices with a pause between; the JSON is still whole."""
        self.patch(snapshot, "SLICE", 2)
        self.patch(summary, "ENTRY_SLICE", 2)
        pauses = []

        def pause():
            pauses.append(self.clock.seconds())
            return defer.succeed(None)

        self.summariser = Summariser(self.store, SETTINGS, self.clock, SnapshotRenderer(SETTINGS),
                                     pause=pause)
        yield self.add_farmers(*[(FarmerKey.from_seed(b"%d" % i).address, i, T)
                                 for i in range(5)])
        snap = yield self.pass_at(T)
        heights = [f["height"] for f in json.loads(bytes(snap.online_json))["farmers"]]
        self.assertEqual(heights, [4, 3, 2, 1, 0])
        # Slices of 2 of 5 farmers: 2 pauses learning their identities, 2 rendering.
        self.assertEqual(len(pauses), 4)
        self.assertEqual(bytes(snap.online_html).count(b"<br/>"), 5)

    @defer.inlineCallbacks
    def test_gzip_and_heap_release_go_to_the_thread(self):
        """The zlib work and malloc_trim run through in_thread (a thread in the daemon),
        and the gzip copy is still the whole list."""
        ran = []

        def in_thread(f, *args):
            ran.append(getattr(f, "__name__", repr(f)))
            return defer.maybeDeferred(f, *args)

        self.summariser = Summariser(self.store, SETTINGS, self.clock, SnapshotRenderer(SETTINGS),
                                     in_thread=in_thread, after_pass=memory.release)
        yield self.add_three_online()
        snap = yield self.pass_at(T)
        self.assertIn("compress", ran)
        self.assertEqual(ran[-1], "release")
        self.assertEqual(gzip.decompress(bytes(snap.online_json_gzip)), bytes(snap.online_json))
        self.assertEqual(len(json.loads(bytes(snap.online_json))["farmers"]), 2)

    @defer.inlineCallbacks
    def test_when_summarised(self):
        """Fires with the first snapshot (at once if there is one); a cancelled wait
        is forgotten."""
        waiting, cancelled = self.summariser.when_summarised(), self.summariser.when_summarised()
        cancelled.cancel()
        self.failureResultOf(cancelled, defer.CancelledError)
        self.assertNoResult(waiting)
        yield self.add_three_online()
        snap = yield self.pass_at(T)
        self.assertIdentical(self.successResultOf(waiting), snap)
        self.assertIdentical(self.successResultOf(self.summariser.when_summarised()), snap)

    @defer.inlineCallbacks
    def test_a_failed_first_pass_does_not_count_as_summarised(self):
        waiting = self.summariser.when_summarised()
        yield self.db.stopService()
        yield self.pass_at(T)
        self.assertNoResult(waiting)
        waiting.cancel()
        self.failureResultOf(waiting, defer.CancelledError)

    @defer.inlineCallbacks
    def test_database_down_keeps_the_snapshot(self):
        yield self.add_three_online()
        before = yield self.pass_at(T)
        yield self.db.stopService()
        yield self.pass_at(T + INTERVAL)  # must not raise
        self.assertIdentical(self.summariser.snapshot, before)
        self.assertEqual((self.summariser.passes, self.summariser.failures), (1, 1))

    @defer.inlineCallbacks
    def test_store_error_keeps_the_snapshot(self):
        before = yield self.pass_at(T)
        working = self.store.online_activity

        def broken_once(cutoff, pause=None, now=None, rate=None):
            self.patch(self.store, "online_activity", working)
            raise RuntimeError("query planner on strike")

        self.patch(self.store, "online_activity", broken_once)
        yield self.pass_at(T + INTERVAL)
        self.assertIdentical(self.summariser.snapshot, before)
        self.assertEqual((self.summariser.passes, self.summariser.failures), (1, 1))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        # The next pass works again.
        after = yield self.pass_at(T + 2 * INTERVAL)
        self.assertEqual(after.built_at, T + 2 * INTERVAL)

    @defer.inlineCallbacks
    def test_history_at_most_every_interval(self):
        """A pass every 5 s writes a totals row only every 300 s."""
        yield self.add_three_online()
        for step in range(int(3 * HISTORY / INTERVAL) + 2):
            yield self.pass_at(T + step * INTERVAL)
        times = yield self.history_times()
        self.assertEqual(times, [T + k * HISTORY for k in range(4)])
        # ALICE and BOB, seen at T - 30 and T - 90, are gone 15 minutes later.
        points = yield self.store.history(T, T + 3 * HISTORY, 10)
        self.assertEqual([p.online_farmers for p in points], [2, 2, 2, 0])

    @defer.inlineCallbacks
    def test_history_respects_another_daemons_row(self):
        """A second summariser on the same database waits for the row the first wrote."""
        yield self.pass_at(T)
        other = Summariser(self.store, SETTINGS, self.clock, SnapshotRenderer(SETTINGS))
        for when in (T + 10, T + HISTORY):
            self.clock.advance(when - self.clock.seconds())
            yield other.run_pass()
        times = yield self.history_times()
        self.assertEqual(times, [T, T + HISTORY])


class FakeStore:
    """Just what a summary pass asks for; online_activity may hang until the test says."""

    def __init__(self):
        self.online_calls = []
        self.pruned = []
        self.hanging = None

    def online_seconds(self, first_day, last_day=None, seen_since=None, farmer_ids=None,
                       pause=None):
        return defer.succeed({})

    def online_activity(self, cutoff, pause=None, now=None, rate=None):
        self.online_calls.append(cutoff)
        if self.hanging is not None:
            return self.hanging
        return defer.succeed([])

    def last_history_time(self):
        return defer.succeed(None)

    def append_history(self, at, online_farmers, total_tb, total_height, min_gap=0,
                       verified_tb=0.0):
        return defer.succeed([(at,)])

    def prune_uptime(self, before_day):
        self.pruned.append(before_day)
        return defer.succeed([(0,)])

    def prune_request_claims(self, now):
        return defer.succeed([(0,)])


class ScheduleTests(unittest.SynchronousTestCase):
    """The service's LoopingCall on a Clock, with a store the test controls."""

    def setUp(self):
        self.clock = task.Clock()
        self.store = FakeStore()

    def start(self, **kwargs):
        service = Summariser(self.store, SETTINGS, self.clock, SnapshotRenderer(SETTINGS),
                             **kwargs)
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        return service

    def advance(self, intervals):
        for _ in range(intervals):
            self.clock.advance(INTERVAL)

    def test_an_outage_is_logged_once_a_minute(self):
        """A pass per interval finds the database gone; the log says so at the first
        and then once a minute, not every pass."""
        from twisted.logger import Logger

        from dataserv.storage.database import DatabaseUnavailable

        events = []
        self.patch(Summariser, "log", Logger(observer=events.append))
        self.store.online_activity = lambda cutoff, **kwargs: defer.fail(
            DatabaseUnavailable("database not answering"))
        service = self.start()
        self.advance(int(120 / INTERVAL))  # 25 passes over two minutes
        skipped = [e for e in events if "summary pass skipped" in e["log_format"]]
        self.assertEqual(service.failures, 25)
        self.assertEqual(len(skipped), 3)  # at 0, 60 and 120 s

    def test_uptime_pruned_once_per_day(self):
        """Buckets that left the window are dropped on the first pass of each day,
        not on every pass."""
        self.clock.advance(T)
        self.start()
        self.advance(int(2 * HISTORY / INTERVAL))
        first = datetime.date(2023, 10, 17)  # 30-day window ending 2023-11-15
        self.assertEqual(self.store.pruned, [first])
        self.clock.advance(86400)
        self.assertEqual(self.store.pruned, [first, first + datetime.timedelta(days=1)])

    def test_a_pass_every_interval(self):
        service = self.start()
        self.assertEqual(len(self.store.online_calls), 1)  # at once on start
        self.advance(3)
        self.assertEqual(self.store.online_calls,
                         [t - WINDOW for t in (0, INTERVAL, 2 * INTERVAL, 3 * INTERVAL)])
        self.assertEqual(service.passes, 4)

    def test_a_hanging_pass_blocks_the_next(self):
        self.store.hanging = defer.Deferred()
        service = self.start()
        self.advance(4)
        self.assertEqual(len(self.store.online_calls), 1)
        self.store.hanging, hung = None, self.store.hanging
        hung.callback([])
        self.assertEqual(service.passes, 1)
        self.advance(1)
        self.assertEqual(len(self.store.online_calls), 2)
        self.assertEqual(service.passes, 2)

    def test_stop_ends_the_passes(self):
        service = self.start()
        service.stopService()
        self.advance(3)
        self.assertEqual(len(self.store.online_calls), 1)

    def test_when_ready_delays_the_first_pass(self):
        ready = defer.Deferred()
        self.start(when_ready=lambda: ready)
        self.advance(3)
        self.assertEqual(self.store.online_calls, [])
        ready.callback(None)
        self.assertEqual(len(self.store.online_calls), 1)
        self.advance(1)
        self.assertEqual(len(self.store.online_calls), 2)

    def test_stopped_before_ready(self):
        """Stopping while the database is not ready runs no pass and leaks no error."""
        ready = defer.Deferred()  # like Database.when_ready: no canceller
        service = self.start(when_ready=lambda: ready)
        service.stopService()
        del ready, service
        gc.collect()  # an unhandled CancelledError would be logged here
        self.advance(3)
        self.assertEqual(self.store.online_calls, [])
