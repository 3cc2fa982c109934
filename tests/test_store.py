"""Tests for :mod:`dataserv.storage.store` against the suite's real PostgreSQL."""

import calendar
import datetime
from collections import namedtuple

from twisted.internet import defer, task
from twisted.trial import unittest

from dataserv.identity.signing import FarmerKey
from dataserv.storage.store import NEVER_THROTTLED, Claim, FarmerStore
from tests import pg

T = calendar.timegm((2023, 11, 15, 12, 0, 0))  # noon UTC
WINDOW = 900  # the online window: the most one contact can credit
ALICE, BOB, CAROL, DAVE = (FarmerKey.from_seed(name).address
                           for name in (b"alice", b"bob", b"carol", b"dave"))
NOBODY = FarmerKey.from_seed(b"never registered").address
PAYOUT = FarmerKey.from_seed(b"store payout").address
SHA = "ab" * 32

Contact = namedtuple("Contact", ["written", "last_contact"])


@defer.inlineCallbacks
def record_contacts(store, contacts, min_gap, window):
    """Record [(address, at, ip)] through ``record_pings``, the path every ping
    takes, as pings that claim no key; {address: Contact(written, last_contact)}
    for the farmers that exist."""
    items = [(address, at, ip, None, True) for address, at, ip in contacts]
    outcomes = yield store.record_pings(items, min_gap, window)
    assert {outcome.outcome for outcome in outcomes.values()} <= {"ok"}, outcomes
    return {item[0]: Contact(outcome.written, outcome.last_contact)
            for item, outcome in outcomes.items() if outcome.written is not None}


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
        return record_contacts(self.store, [(address, at, ip)], min_gap, WINDOW)


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
    """The contact rules (throttle, last IP, uptime credit) of the SQL function
    ``record_contacts``, through ``record_pings``, the path pings take; the update
    functions (height, bandwidth, audits) call it too (``UpdateTests``)."""

    @defer.inlineCallbacks
    def test_the_sql_function(self):
        """record_contacts itself: one row (btc_addr, written, last_contact) per
        known farmer, with the throttle applied per farmer."""
        yield self.register_all(ALICE, BOB)
        rows = yield self.db.run_query(
            "SELECT btc_addr, written, last_contact FROM record_contacts("
            "%s::text[], %s::float8[], %s::text[], %s, %s)",
            ([ALICE, BOB, NOBODY], [T + 60, T + 59, T + 60], [None, None, None], 60, WINDOW))
        self.assertEqual(sorted(tuple(row) for row in rows),
                         sorted([(ALICE, True, T + 60), (BOB, False, T)]))
        credited = yield self.uptime_rows()
        self.assertEqual(credited, [(ALICE, datetime.date(2023, 11, 15), 60.0)])

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
        result = yield record_contacts(
            self.store, [(NOBODY, T + 100, None), (ALICE, T + 100, None)], 60, WINDOW)
        self.assertEqual(result, {ALICE: (True, T + 100)})

    @defer.inlineCallbacks
    def test_empty_batch(self):
        result = yield record_contacts(self.store, [], 60, WINDOW)
        self.assertEqual(result, {})

    @defer.inlineCallbacks
    def test_many_farmers_in_one_batch(self):
        yield self.register_all(ALICE, BOB)
        result = yield record_contacts(
            self.store, [(ALICE, T + 100, None), (BOB, T + 30, None)], 60, WINDOW)
        self.assertEqual(result, {ALICE: (True, T + 100), BOB: (False, T)})

    @defer.inlineCallbacks
    def test_duplicates_in_one_batch_keep_the_latest(self):
        """Two pings of one farmer in one batch: no error, the latest time and its IP win."""
        yield self.register_all(ALICE)
        result = yield record_contacts(
            self.store, [(ALICE, T + 100, "10.0.0.9"), (ALICE, T + 200, "10.0.0.10"),
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
        self.assertEqual(activity, [(f.id, f.height, f.last_seen, 0.0, 0.0, f.claimed_height,
                                     0, 0)
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


RATE = 8.0  # shards per second: 1 GiB/s in shards of 128 MiB


class CreditedHeightTests(StoreTestCase):
    """set_height with a fill rate, and the credited height as every reader sees it
    (the rule is the SQL function credited_height, schema 0004)."""

    @defer.inlineCallbacks
    def claim(self, height, at, rate=RATE, address=ALICE):
        found = yield self.store.set_height(address, height, at, None, WINDOW, rate=rate)
        self.assertTrue(found)

    @defer.inlineCallbacks
    def credited(self, at, rate=RATE, address=ALICE):
        """(credited, claimed) at ``at`` as a farmer's status and the summary read it."""
        record = yield self.store.farmer(address, at, rate)
        activity = yield self.store.online_activity(-1e12, now=at, rate=rate)
        [row] = [row for row in activity if row[0] == record.id]
        self.assertEqual((row[1], row[5]), (record.height, record.claimed_height))
        return record.height, record.claimed_height

    @defer.inlineCallbacks
    def test_a_claim_right_after_registering_is_credited_at_the_fill_rate(self):
        yield self.register_all(ALICE)
        yield self.claim(199999, T + 2.5)
        # 2.5 s since registration (the credit of height 0): at most 20 shards.
        self.assertEqual((yield self.credited(T + 2.5)), (20, 199999))

    @defer.inlineCallbacks
    def test_the_rest_is_credited_as_time_passes_up_to_the_claim(self):
        yield self.register_all(ALICE)
        yield self.claim(1000, T)
        self.assertEqual((yield self.credited(T)), (0, 1000))
        self.assertEqual((yield self.credited(T + 10)), (80, 1000))
        self.assertEqual((yield self.credited(T + 124.9)), (999, 1000))
        self.assertEqual((yield self.credited(T + 125)), (1000, 1000))
        self.assertEqual((yield self.credited(T + 86400)), (1000, 1000))
        # What is stored is the credit as of the claim, not a job's update.
        self.assertEqual((yield self.store.farmer(ALICE)).height, 0)

    @defer.inlineCallbacks
    def test_a_farmer_filling_no_faster_than_the_rate_is_credited_in_full(self):
        yield self.register_all(ALICE)
        for n in range(1, 6):  # 25 shards every 30 s: well under 8 a second
            yield self.claim(25 * n, T + 30 * n)
            self.assertEqual((yield self.credited(T + 30 * n)), (25 * n, 25 * n))

    @defer.inlineCallbacks
    def test_the_rise_counts_from_the_previous_credit(self):
        """A claim credited in full is the new starting point: a farmer that said it
        had 1 shard a second ago cannot have 199 999 now."""
        yield self.register_all(ALICE)
        yield self.claim(1, T + 1000)
        self.assertEqual((yield self.credited(T + 1000)), (1, 1))
        yield self.claim(199999, T + 1001)
        self.assertEqual((yield self.credited(T + 1001)), (9, 199999))

    @defer.inlineCallbacks
    def test_a_claim_below_the_credited_height_lowers_it_at_once(self):
        yield self.register_all(ALICE)
        yield self.claim(1000, T + 1000)
        yield self.claim(400, T + 1001)
        self.assertEqual((yield self.credited(T + 1001)), (400, 400))
        self.assertEqual((yield self.credited(T + 5000)), (400, 400))
        # Below what was credited so far of a larger claim that is still growing.
        yield self.claim(100000, T + 1002)  # from 400 at T + 1001: 8 more a second
        self.assertEqual((yield self.credited(T + 1010)), (472, 100000))
        yield self.claim(300, T + 1010)
        self.assertEqual((yield self.credited(T + 1010)), (300, 300))

    @defer.inlineCallbacks
    def test_a_higher_claim_while_growing_keeps_the_same_pace(self):
        """The credit keeps its starting point until a claim is met, so frequent
        claims lose no fraction of a shard to rounding."""
        yield self.register_all(ALICE)
        for n in range(1, 21):  # 0.4 shards a second, a claim every second
            yield self.claim(1000 + n, T + n, rate=0.4)
        self.assertEqual((yield self.credited(T + 20, rate=0.4)), (8, 1020))

    @defer.inlineCallbacks
    def test_without_a_rate_claims_are_credited_as_made(self):
        yield self.register_all(ALICE)
        yield self.claim(199999, T, rate=None)
        self.assertEqual((yield self.credited(T, rate=None)), (199999, 199999))
        self.assertEqual((yield self.store.farmer(ALICE)).height, 199999)
        # Read with a rate, what was credited in full stays credited.
        self.assertEqual((yield self.credited(T, rate=RATE)), (199999, 199999))

    @defer.inlineCallbacks
    def test_reading_without_a_rate_shows_the_claims(self):
        """--no-limits (or --max-fill-rate 0) after a start with limits: the summary
        counts what was claimed."""
        yield self.register_all(ALICE)
        yield self.claim(5000, T)
        self.assertEqual((yield self.credited(T, rate=None)), (5000, 5000))

    @defer.inlineCallbacks
    def test_the_summary_orders_by_credited_height(self):
        yield self.register_in_order(ALICE)
        yield self.register_in_order(BOB, at=T - 1000)
        yield self.claim(100000, T + 10, address=ALICE)  # credited 80 at T + 10
        yield self.claim(500, T + 10, address=BOB)       # credited in full
        activity = yield self.store.online_activity(T, now=T + 10, rate=RATE)
        alice, bob = (yield self.store.farmer(ALICE)), (yield self.store.farmer(BOB))
        self.assertEqual([(row[0], row[1], row[5]) for row in activity],
                         [(bob.id, 500, 500), (alice.id, 80, 100000)])
        activity = yield self.store.online_activity(T, now=T + 100, rate=RATE)
        self.assertEqual([(row[0], row[1]) for row in activity],
                         [(alice.id, 800), (bob.id, 500)])

    @defer.inlineCallbacks
    def test_a_clock_behind_the_credit_adds_nothing(self):
        """A daemon whose clock is behind the last credit (registration at T) reads
        that credit, never less and never a negative rise."""
        yield self.register_all(ALICE)
        yield self.claim(1000, T + 10)
        self.assertEqual((yield self.credited(T + 5)), (40, 1000))
        self.assertEqual((yield self.credited(T - 100)), (0, 1000))


class RegistrationsPerNetworkTests(StoreTestCase):
    """register() with a network and a limit, counted in PostgreSQL."""

    NET = "192.0.2.0/24"

    def keys(self, count, prefix=b"network"):
        return [FarmerKey.from_seed(prefix + b" %d" % n).address for n in range(count)]

    def register(self, address, at, network=NET, limit=3, period=3600.0):
        return self.store.register(address, address, at, "192.0.2.1", network, limit, period)

    @defer.inlineCallbacks
    def test_the_limit_per_period(self):
        from dataserv.storage.store import FarmerRecord, RegistrationRefused

        first, second, third, fourth, fifth = self.keys(5)
        results = []
        for address, at in ((first, T), (second, T + 100), (third, T + 200),
                            (fourth, T + 300)):
            results.append((yield self.register(address, at)))
        self.assertEqual([type(r) for r in results], [FarmerRecord] * 3 + [RegistrationRefused])
        # A slot frees when the oldest of the three leaves the hour.
        self.assertEqual(results[3], RegistrationRefused(T + 3600))
        self.assertIsNone((yield self.store.farmer(fourth)))
        refused = yield self.register(fourth, T + 3599)
        self.assertEqual(refused, RegistrationRefused(T + 3600))
        accepted = yield self.register(fourth, T + 3600)
        self.assertEqual(accepted.btc_addr, fourth)
        self.assertEqual((yield self.register(fifth, T + 3650)), RegistrationRefused(T + 3700))
        network = yield self.farmer_column(fourth, "reg_network")
        self.assertEqual(network, self.NET)

    @defer.inlineCallbacks
    def test_other_networks_and_unknown_networks_are_not_counted(self):
        keys = self.keys(6)
        for address in keys[:3]:
            yield self.register(address, T)
        other = yield self.register(keys[3], T, network="198.51.100.0/24")
        unknown = yield self.register(keys[4], T, network=None)
        unlimited = yield self.register(keys[5], T, limit=None)
        self.assertEqual([r.btc_addr for r in (other, unknown, unlimited)], keys[3:])

    @defer.inlineCallbacks
    def test_a_registered_farmer_is_told_so_even_when_the_network_is_full(self):
        keys = self.keys(3)
        for address in keys:
            yield self.register(address, T)
        again = yield self.register(keys[0], T + 1)
        self.assertIsNone(again)

    @defer.inlineCallbacks
    def test_a_lower_limit_waits_for_enough_to_leave(self):
        keys = self.keys(6)
        for n, address in enumerate(keys[:5]):
            yield self.register(address, T + n, limit=None)
        # Five in the hour, two allowed: a slot frees when the fourth newest leaves.
        from dataserv.storage.store import RegistrationRefused

        refused = yield self.register(keys[5], T + 10, limit=2)
        self.assertEqual(refused, RegistrationRefused(T + 3 + 3600))

    @defer.inlineCallbacks
    def test_concurrent_registrations_from_one_network_respect_the_limit(self):
        """Registrations racing on eight connections (as from several daemons) are
        counted one after the other. Each is held at its INSERT until all eight
        have started, so without the per-network lock all would count nothing."""
        import time

        import psycopg2
        from twisted.internet import reactor

        from dataserv.storage.database import Database
        from dataserv.storage.store import FarmerRecord, FarmerStore

        db = Database(reactor, pg.dsn(), pool_size=8)
        db.startService()
        self.addCleanup(db.stopService)
        yield db.when_ready()
        store = FarmerStore(db, task.Clock())
        blocker = psycopg2.connect(pg.dsn())
        self.addCleanup(blocker.close)
        with blocker.cursor() as cursor:  # inserts wait; reads do not
            cursor.execute("LOCK TABLE farmers IN SHARE MODE")
        keys = self.keys(8, b"race")
        racing = defer.gatherResults([
            store.register(address, address, T, None, self.NET, 5, 3600.0)
            for address in keys])
        deadline = time.monotonic() + 10
        while True:
            with psycopg2.connect(pg.dsn()) as watcher, watcher.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_stat_activity"
                               " WHERE wait_event_type = 'Lock' AND datname = current_database()")
                waiting = cursor.fetchone()[0]
            watcher.close()
            if waiting == len(keys) or time.monotonic() > deadline:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        blocker.commit()
        results = yield racing
        self.assertEqual(waiting, len(keys))
        self.assertEqual(sum(isinstance(r, FarmerRecord) for r in results), 5)
        rows = yield self.db.run_query("SELECT count(*) FROM farmers")
        self.assertEqual(rows, [(5,)])


class RecordPingsTests(StoreTestCase):
    """record_pings: each item's key claimed, contacts written and v2 marked in one
    statement (schema 0008)."""

    def claim(self, name, v2=False):
        return Claim(name.encode().ljust(16, b"."), v2, T + 600)

    def pings(self, *items, min_gap=60):
        return self.store.record_pings(list(items), min_gap, WINDOW)

    @defer.inlineCallbacks
    def claims(self):
        rows = yield self.db.run_query("SELECT count(*) FROM request_claims")
        return rows[0][0]

    @defer.inlineCallbacks
    def test_outcomes_of_a_mixed_batch(self):
        """A known farmer's contact is written; a key-only item and an unknown
        farmer's contact write nothing but claim their keys; no key, no claim."""
        yield self.register_all(ALICE, BOB)
        items = [(ALICE, T + 100, "10.0.0.1", self.claim("a"), True),
                 (BOB, T + 100, None, self.claim("b"), False),
                 (NOBODY, T + 100, None, self.claim("n"), True),
                 (BOB, T + 100, None, None, True)]
        result = yield self.pings(*items)
        self.assertEqual([tuple(result[item]) for item in items],
                         [("ok", True, T + 100), ("ok", None, None), ("ok", None, None),
                          ("ok", True, T + 100)])
        self.assertEqual((yield self.claims()), 3)
        self.assertEqual((yield self.farmer_column(ALICE, "last_ip")), "10.0.0.1")

    @defer.inlineCallbacks
    def test_refused_only(self):
        """Keys only (throttled pings' claims, written behind): only the refused
        items come back; the others are claimed all the same."""
        yield self.register_all(ALICE, BOB)
        yield self.pings((BOB, T + 1, None, self.claim("taken"), False))
        claims = yield self.claims()
        taken = (ALICE, T + 100, None, self.claim("taken"), False)
        fresh = (BOB, T + 100, None, self.claim("fresh"), False)
        result = yield self.store.record_pings([taken, fresh], 60, WINDOW, refused_only=True)
        self.assertEqual({item: tuple(outcome) for item, outcome in result.items()},
                         {taken: ("replayed", None, None)})
        self.assertEqual((yield self.claims()), claims + 1)

    @defer.inlineCallbacks
    def test_a_taken_key_writes_nothing(self):
        yield self.register_all(ALICE)
        yield self.pings((BOB, T + 1, None, self.claim("a"), False))
        item = (ALICE, T + 100, None, self.claim("a"), True)
        result = yield self.pings(item)
        self.assertEqual(tuple(result[item]), ("replayed", None, None))
        self.assertEqual((yield self.farmer_column(ALICE, "last_seen")), T)
        self.assertEqual((yield self.uptime_rows()), [])

    @defer.inlineCallbacks
    def test_first_v2_use_marks_the_farmer_contact_or_not(self):
        """A v2 item marks its farmer whether it is a contact (written or throttled)
        or a key only; the earliest v2 use in the batch is the mark."""
        yield self.register_all(ALICE, BOB, CAROL)
        yield self.pings((ALICE, T + 5, None, self.claim("a", v2=True), False),
                         (BOB, T + 100, None, self.claim("b2", v2=True), True),
                         (BOB, T + 90, None, self.claim("b1", v2=True), True),
                         (CAROL, T + 10, None, self.claim("c", v2=True), True))
        marks = []
        for address in (ALICE, BOB, CAROL):
            marks.append((yield self.farmer_column(address, "v2_since")))
        self.assertEqual(marks, [T + 5, T + 90, T + 10])
        self.assertEqual((yield self.farmer_column(CAROL, "last_seen")), T)  # throttled
        self.assertEqual((yield self.farmer_column(BOB, "last_seen")), T + 100)

    @defer.inlineCallbacks
    def test_legacy_after_v2_is_a_downgrade_and_claims_nothing(self):
        yield self.register_all(ALICE)
        yield self.pings((ALICE, T + 5, None, self.claim("a", v2=True), False))
        claims = yield self.claims()
        item = (ALICE, T + 100, None, self.claim("legacy"), True)
        result = yield self.pings(item)
        self.assertEqual(tuple(result[item]), ("downgrade", None, None))
        self.assertEqual((yield self.claims()), claims)
        self.assertEqual((yield self.farmer_column(ALICE, "last_seen")), T)

    @defer.inlineCallbacks
    def test_a_later_v2_use_keeps_the_first_mark(self):
        yield self.register_all(ALICE)
        yield self.pings((ALICE, T + 5, None, self.claim("a", v2=True), False))
        yield self.pings((ALICE, T + 100, None, self.claim("b", v2=True), True))
        self.assertEqual((yield self.farmer_column(ALICE, "v2_since")), T + 5)
