"""Tests for :mod:`dataserv.storage.store` against the suite's real PostgreSQL."""

import calendar
import datetime

from twisted.internet import defer, task
from twisted.trial import unittest

from dataserv.identity.signing import FarmerKey
from dataserv.storage.store import NEVER_THROTTLED, FarmerStore
from tests import pg

T = calendar.timegm((2023, 11, 15, 12, 0, 0))  # noon UTC
WINDOW = 900  # the online window: the most one contact can credit
ALICE, BOB, CAROL, DAVE = (FarmerKey.from_seed(name).address
                           for name in (b"alice", b"bob", b"carol", b"dave"))
NOBODY = FarmerKey.from_seed(b"never registered").address
PAYOUT = FarmerKey.from_seed(b"store payout").address
SHA = "ab" * 32


class StoreTestCase(unittest.TestCase):
    """A FarmerStore over a freshly emptied database."""

    @defer.inlineCallbacks
    def setUp(self):
        self.db = yield pg.open_database(self)
        self.store = FarmerStore(self.db, task.Clock())

    def register_all(self, *addresses, at=T):
        """Register each address at ``at`` (in this order: registration order)."""
        return defer.gatherResults(
            [self.store.register(a, a, at, None) for a in addresses], consumeErrors=True)

    @defer.inlineCallbacks
    def register_in_order(self, *addresses, at=T):
        for address in addresses:
            yield self.store.register(address, address, at, None)

    @defer.inlineCallbacks
    def farmer_column(self, address, column):
        """One column of a farmer's row, read straight from the table."""
        rows = yield self.db.run_query(
            "SELECT " + column + " FROM farmers WHERE btc_addr = %s", (address,))
        return rows[0][0]

    @defer.inlineCallbacks
    def uptime_rows(self):
        rows = yield self.db.run_query(
            "SELECT f.btc_addr, u.day, u.online_seconds FROM uptime_days u"
            " JOIN farmers f ON f.id = u.farmer_id ORDER BY 1, 2")
        return [tuple(r) for r in rows]

    def ping(self, address, at, ip=None, min_gap=60):
        return self.store.record_contacts([(address, at, ip)], min_gap, WINDOW)


class RegisterTests(StoreTestCase):

    @defer.inlineCallbacks
    def test_register_returns_the_record(self):
        record = yield self.store.register(ALICE, PAYOUT, T, "192.0.2.1")
        self.assertEqual(
            (record.btc_addr, record.payout_addr, record.height, record.reg_time,
             record.last_seen, record.bandwidth_upload, record.bandwidth_download),
            (ALICE, PAYOUT, 0, T, T, 0, 0))
        found = yield self.store.farmer(ALICE)
        self.assertEqual(found, record)
        ip = yield self.farmer_column(ALICE, "last_ip")
        self.assertEqual(ip, "192.0.2.1")
        self.assertEqual(self.store.timings.counts["register"], 1)

    @defer.inlineCallbacks
    def test_duplicate_is_none_and_changes_nothing(self):
        first = yield self.store.register(ALICE, PAYOUT, T, None)
        again = yield self.store.register(ALICE, ALICE, T + 500, None)
        self.assertIdentical(again, None)
        found = yield self.store.farmer(ALICE)
        self.assertEqual(found, first)

    @defer.inlineCallbacks
    def test_unknown_farmer_is_none(self):
        found = yield self.store.farmer(NOBODY)
        self.assertIdentical(found, None)

    @defer.inlineCallbacks
    def test_ids_follow_registration_order(self):
        yield self.register_in_order(BOB, ALICE)
        bob, alice = yield defer.gatherResults([self.store.farmer(BOB), self.store.farmer(ALICE)])
        self.assertLess(bob.id, alice.id)


class RecordContactsTests(StoreTestCase):

    @defer.inlineCallbacks
    def test_throttle(self):
        """A contact sooner than min_gap after the last one writes nothing."""
        yield self.register_all(ALICE)
        early = yield self.ping(ALICE, T + 59)
        # Not written; the stored contact is the registration's.
        self.assertEqual(early, {ALICE: (False, T)})
        seen = yield self.farmer_column(ALICE, "last_seen")
        self.assertEqual(seen, T)
        on_time = yield self.ping(ALICE, T + 60)
        self.assertEqual(on_time, {ALICE: (True, T + 60)})
        self.assertEqual(on_time[ALICE].last_contact, T + 60)
        seen = yield self.farmer_column(ALICE, "last_seen")
        self.assertEqual(seen, T + 60)

    @defer.inlineCallbacks
    def test_unknown_farmers_are_absent(self):
        yield self.register_all(ALICE)
        result = yield self.store.record_contacts(
            [(NOBODY, T + 100, None), (ALICE, T + 100, None)], 60, WINDOW)
        self.assertEqual(result, {ALICE: (True, T + 100)})

    @defer.inlineCallbacks
    def test_empty_batch(self):
        result = yield self.store.record_contacts([], 60, WINDOW)
        self.assertEqual(result, {})

    @defer.inlineCallbacks
    def test_many_farmers_in_one_batch(self):
        yield self.register_all(ALICE, BOB)
        result = yield self.store.record_contacts(
            [(ALICE, T + 100, None), (BOB, T + 30, None)], 60, WINDOW)
        self.assertEqual(result, {ALICE: (True, T + 100), BOB: (False, T)})

    @defer.inlineCallbacks
    def test_duplicates_in_one_batch_keep_the_latest(self):
        """Two pings of one farmer in one batch: no error, the latest time and its IP win."""
        yield self.register_all(ALICE)
        result = yield self.store.record_contacts(
            [(ALICE, T + 100, "10.0.0.9"), (ALICE, T + 200, "10.0.0.10"),
             (ALICE, T + 150, "10.0.0.20")], 60, WINDOW)
        self.assertEqual(result, {ALICE: (True, T + 200)})
        seen = yield self.farmer_column(ALICE, "last_seen")
        ip = yield self.farmer_column(ALICE, "last_ip")
        self.assertEqual((seen, ip), (T + 200, "10.0.0.10"))
        credited = yield self.uptime_rows()
        self.assertEqual(credited, [(ALICE, datetime.date(2023, 11, 15), 200.0)])

    @defer.inlineCallbacks
    def test_last_ip_is_kept(self):
        """A written contact stores its IP; a contact without one keeps the old IP."""
        yield self.store.register(ALICE, ALICE, T, "192.0.2.1")
        yield self.ping(ALICE, T + 60, "198.51.100.7")
        ip = yield self.farmer_column(ALICE, "last_ip")
        self.assertEqual(ip, "198.51.100.7")
        yield self.ping(ALICE, T + 120, None)
        ip = yield self.farmer_column(ALICE, "last_ip")
        self.assertEqual(ip, "198.51.100.7")

    @defer.inlineCallbacks
    def test_throttled_contact_keeps_the_old_ip(self):
        yield self.store.register(ALICE, ALICE, T, "192.0.2.1")
        yield self.ping(ALICE, T + 10, "198.51.100.7")
        ip = yield self.farmer_column(ALICE, "last_ip")
        self.assertEqual(ip, "192.0.2.1")

    @defer.inlineCallbacks
    def test_never_throttled_moves_last_seen(self):
        yield self.register_all(ALICE)
        result = yield self.ping(ALICE, T + 1, min_gap=NEVER_THROTTLED)
        self.assertEqual(result, {ALICE: (True, T + 1)})
        seen = yield self.farmer_column(ALICE, "last_seen")
        self.assertEqual(seen, T + 1)

    @defer.inlineCallbacks
    def test_never_moves_last_seen_backwards(self):
        """An older contact arriving late neither rewinds last_seen nor credits time."""
        yield self.register_all(ALICE)
        yield self.ping(ALICE, T + 300, min_gap=NEVER_THROTTLED)
        before = yield self.uptime_rows()
        late = yield self.ping(ALICE, T + 100, min_gap=NEVER_THROTTLED)
        self.assertEqual(late[ALICE].last_contact, T + 300)  # what is stored
        seen = yield self.farmer_column(ALICE, "last_seen")
        self.assertEqual(seen, T + 300)
        after = yield self.uptime_rows()
        self.assertEqual(after, before)

    @defer.inlineCallbacks
    def test_credit_is_capped_at_the_window(self):
        """Two hours of silence credit only the online window before the contact."""
        yield self.register_all(ALICE)
        yield self.ping(ALICE, T + 7200)
        credited = yield self.uptime_rows()
        self.assertEqual(credited, [(ALICE, datetime.date(2023, 11, 15), float(WINDOW))])


class UpdateTests(StoreTestCase):
    """set_height, set_bandwidth and add_audit: contacts that are never throttled."""

    @defer.inlineCallbacks
    def assert_contact(self, address, at):
        seen = yield self.farmer_column(address, "last_seen")
        self.assertEqual(seen, at)

    @defer.inlineCallbacks
    def test_set_height(self):
        yield self.register_all(ALICE)
        found = yield self.store.set_height(ALICE, 1234, T + 1, "192.0.2.9", WINDOW)
        self.assertTrue(found)
        record = yield self.store.farmer(ALICE)
        self.assertEqual(record.height, 1234)
        yield self.assert_contact(ALICE, T + 1)

    @defer.inlineCallbacks
    def test_set_bandwidth(self):
        yield self.register_all(ALICE)
        found = yield self.store.set_bandwidth(ALICE, 10.5, 20.25, T + 1, None, WINDOW)
        self.assertTrue(found)
        record = yield self.store.farmer(ALICE)
        self.assertEqual((record.bandwidth_upload, record.bandwidth_download), (10.5, 20.25))
        yield self.assert_contact(ALICE, T + 1)

    @defer.inlineCallbacks
    def test_unknown_farmer_is_false(self):
        height = yield self.store.set_height(NOBODY, 5, T, None, WINDOW)
        bandwidth = yield self.store.set_bandwidth(NOBODY, 1, 2, T, None, WINDOW)
        self.assertEqual((height, bandwidth), (False, False))
        rows = yield self.db.run_query("SELECT count(*) FROM farmers")
        self.assertEqual(rows, [(0,)])

    @defer.inlineCallbacks
    def test_add_audit(self):
        yield self.register_all(ALICE)
        outcomes = []
        for address, block, at in ((ALICE, 7, T + 1), (ALICE, 7, T + 2), (ALICE, 3, T + 3),
                                   (NOBODY, 7, T + 4)):
            outcome = yield self.store.add_audit(address, block, SHA, at, None, WINDOW)
            outcomes.append(outcome)
        self.assertEqual(outcomes, ["accepted", "duplicate", "accepted", "unknown"])
        record = yield self.store.farmer(ALICE)
        summary = yield self.store.audit_summary(record.id)
        self.assertEqual(summary, (2, 7))
        yield self.assert_contact(ALICE, T + 3)

    @defer.inlineCallbacks
    def test_audit_summary_without_audits(self):
        record = yield self.store.register(ALICE, ALICE, T, None)
        summary = yield self.store.audit_summary(record.id)
        self.assertEqual(summary, (0, None))


class OnlineTests(StoreTestCase):

    @defer.inlineCallbacks
    def test_order_and_cutoff(self):
        """Height descending, then registration order; seen at or after the cutoff."""
        yield self.register_in_order(ALICE, BOB, CAROL, DAVE)
        for address, height, at in ((ALICE, 5, T + 100), (BOB, 10, T + 100),
                                    (CAROL, 5, T + 50), (DAVE, 50, T + 49)):
            yield self.store.set_height(address, height, at, None, WINDOW)
        activity = yield self.store.online_activity(T + 50)
        farmers = yield defer.gatherResults([self.store.farmer(a) for a in (BOB, ALICE, CAROL)])
        self.assertEqual(activity, [(f.id, f.height, f.last_seen, 0.0, 0.0, 0, 0)
                                    for f in farmers])

    @defer.inlineCallbacks
    def test_identities(self):
        """What never changes about farmers, by id."""
        yield self.register_in_order(ALICE, BOB)
        alice = yield self.store.farmer(ALICE)
        found = yield self.store.identities([alice.id, 999])
        self.assertEqual(found, {alice.id: (ALICE, ALICE, T)})

    @defer.inlineCallbacks
    def test_nobody_online(self):
        yield self.register_all(ALICE)
        activity = yield self.store.online_activity(T + 1)
        self.assertEqual(activity, [])

    @defer.inlineCallbacks
    def test_online_seconds(self):
        """Sums per farmer since a day, for the recently seen or for one farmer."""
        yield self.register_all(ALICE, BOB)
        yield self.ping(ALICE, T + 600)
        yield self.ping(BOB, T + 300)
        day = datetime.date(2023, 11, 15)
        everyone = yield self.store.online_seconds(day)
        recent = yield self.store.online_seconds(day, seen_since=T + 400)
        bob = yield self.store.farmer(BOB)
        one = yield self.store.online_seconds(day, farmer_ids=[bob.id])
        alice = yield self.store.farmer(ALICE)
        self.assertEqual(everyone, {alice.id: 600.0, bob.id: 300.0})
        self.assertEqual(recent, {alice.id: 600.0})
        self.assertEqual(one, {bob.id: 300.0})
        later = yield self.store.online_seconds(day + datetime.timedelta(days=1))
        self.assertEqual(later, {})

    @defer.inlineCallbacks
    def test_prune_uptime(self):
        """Buckets before the given day go; that day and later stay."""
        yield self.register_all(ALICE, at=T - 3 * 86400)
        for days_ago in (3, 2, 1, 0):
            for offset in (0, 600):  # ten minutes online around each noon
                yield self.ping(ALICE, T - days_ago * 86400 + offset)
        rows = yield self.store.prune_uptime(datetime.date(2023, 11, 14))
        self.assertEqual(rows, [(2,)])
        left = yield self.uptime_rows()
        self.assertEqual([day for _, day, _ in left],
                         [datetime.date(2023, 11, 14), datetime.date(2023, 11, 15)])


class HistoryTests(StoreTestCase):

    @defer.inlineCallbacks
    def append_rows(self, count, start=T, step=10):
        """count rows, ``step`` seconds apart; row k has k farmers online."""
        for k in range(count):
            yield self.store.append_history(start + k * step, k, k / 100.0, k * 10, min_gap=0,
                                            verified_tb=k / 1000.0)

    @defer.inlineCallbacks
    def test_min_gap_refuses_a_row_too_soon(self):
        written = []
        for at in (T, T + 200, T + 300, T + 300):
            rows = yield self.store.append_history(at, 1, 0.5, 10, min_gap=300)
            written.append(bool(rows))
        self.assertEqual(written, [True, False, True, False])
        last = yield self.store.last_history_time()
        self.assertEqual(last, T + 300)

    @defer.inlineCallbacks
    def test_last_history_time_empty(self):
        last = yield self.store.last_history_time()
        self.assertIdentical(last, None)

    @defer.inlineCallbacks
    def test_few_rows_come_back_as_they_are(self):
        yield self.append_rows(3)
        points = yield self.store.history(T, T + 1000, 1000)
        self.assertEqual([tuple(p) for p in points],
                         [(T, 0, 0.0, 0, 0.0), (T + 10, 1, 0.01, 10, 0.001),
                          (T + 20, 2, 0.02, 20, 0.002)])

    @defer.inlineCallbacks
    def test_downsampled_to_at_most_the_points_asked(self):
        """2500 rows into at most 1000 averaged points that still span the range."""
        count, step = 2500, 10
        yield self.append_rows(count, step=step)
        points = yield self.store.history(T - 1, T + count * step, 1000)
        self.assertLessEqual(len(points), 1000)
        self.assertGreater(len(points), 900)
        times = [p.at for p in points]
        self.assertEqual(times, sorted(set(times)))
        # The first point stands for the first few rows, the last one ends at the last row.
        self.assertLess(times[0], T + 5 * step)
        self.assertEqual(times[-1], T + (count - 1) * step)
        for p in points:
            # Each point averages a few consecutive rows, all at or before p.at.
            k = (p.at - T) / step
            self.assertTrue(k - 3 <= p.online_farmers <= k, (p, k))
            self.assertTrue(abs(p.total_tb * 100 - p.total_height / 10) < 0.5, p)

    @defer.inlineCallbacks
    def test_only_rows_in_range(self):
        yield self.append_rows(10)
        points = yield self.store.history(T + 30, T + 50, 100)
        self.assertEqual([p.at for p in points], [T + 30, T + 40, T + 50])


class SlicedFetchTests(StoreTestCase):
    """The summariser's reads convert rows a slice at a time, pausing in between."""

    @defer.inlineCallbacks
    def test_online_activity_pauses_between_slices(self):
        from dataserv.storage import store as store_module

        addresses = [FarmerKey.from_seed(b"slice %d" % i).address for i in range(5)]
        yield self.register_in_order(*addresses)
        original = store_module.FarmerStore._fetch_in_slices

        def small_slices(this, name, sql, params, pause, size=2000, into=list):
            return original(this, name, sql, params, pause, size=2, into=into)

        self.patch(store_module.FarmerStore, "_fetch_in_slices", small_slices)
        pauses = []

        def pause():
            pauses.append(True)
            return defer.succeed(None)

        activity = yield self.store.online_activity(T - 1, pause=pause)
        self.assertEqual([row[0] for row in activity], [1, 2, 3, 4, 5])
        # 5 rows in slices of 2: a pause after each full slice (2, 4), none after the last.
        self.assertEqual(len(pauses), 2)
        # Keyed reads are gathered slice by slice too, into one dict.
        found = yield self.store.identities([1, 2, 3, 4, 5], pause=pause)
        self.assertEqual(sorted(found), [1, 2, 3, 4, 5])
        self.assertEqual(found[3][:2], (addresses[2], addresses[2]))
        self.assertEqual(len(pauses), 4)
