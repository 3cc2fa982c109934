"""Tests for :mod:`dataserv.web.render`: the public bodies, byte for byte, and uptime."""

import calendar
import datetime
import gc
import itertools
import json

from twisted.trial.unittest import SynchronousTestCase

from dataserv.registry import uptime
from dataserv.web import render
from dataserv.identity.signing import FarmerKey
from dataserv.storage.store import FarmerRecord

FARMER = FarmerKey.from_seed(b"render farmer")
PAYOUT = FarmerKey.from_seed(b"render payout").address
MIDNIGHT = calendar.timegm((2023, 11, 15, 0, 0, 0))  # a UTC midnight
HOUR = 3600
DAY = 86400
SHARD = 128 * 1024 ** 2  # the default shard size: 8192 shards make one TiB
ONLINE_WINDOW = 15 * 60


def record(last_seen=MIDNIGHT, reg_time=MIDNIGHT, height=0, payout=PAYOUT, claimed=None):
    """A farmer record with the fields a test cares about (claimed: as credited)."""
    return FarmerRecord(
        id=1, btc_addr=FARMER.address, payout_addr=payout, height=height,
        reg_time=reg_time, last_seen=last_seen, bandwidth_upload=1.5,
        bandwidth_download=2.5, claimed_height=height if claimed is None else claimed)


class LastSeenTextTests(SynchronousTestCase):
    """2.2.x's seconds / minutes / hours wording, integer division."""

    def assert_texts(self, expected):
        self.assertEqual({s: render.last_seen_text(s) for s in expected}, expected)

    def test_seconds_below_a_minute(self):
        self.assert_texts({0: "0 second(s)", 1: "1 second(s)", 59: "59 second(s)",
                           59.9: "59 second(s)"})

    def test_minutes_from_sixty_seconds(self):
        self.assert_texts({60: "1 minute(s)", 119: "1 minute(s)", 120: "2 minute(s)",
                           3599: "59 minute(s)"})

    def test_hours_from_sixty_minutes_and_past_a_day(self):
        self.assert_texts({3600: "1 hour(s)", 7199: "1 hour(s)", 86399: "23 hour(s)",
                           90000: "25 hour(s)", 10 * DAY: "240 hour(s)"})

    def test_negative_is_zero(self):
        """A last_seen slightly in the future (another daemon's clock) reads as 0."""
        self.assertEqual(render.last_seen_text(-5), "0 second(s)")


class OnlineHtmlTests(SynchronousTestCase):
    """One /api/online entry."""

    def test_exact_format(self):
        """Payout address, a bar, TWO spaces, Last Seen, Height, <br/>, no newline."""
        entry = render.online_html_entry(record(last_seen=MIDNIGHT, height=7), MIDNIGHT + 150)
        self.assertEqual(entry, PAYOUT + " |  Last Seen: 2 minute(s) | Height: 7<br/>")

    def test_uses_payout_not_farmer_address(self):
        entry = render.online_html_entry(record(), MIDNIGHT)
        self.assertTrue(entry.startswith(PAYOUT + " |"))
        self.assertNotIn(FARMER.address, entry)


class TotalTests(SynchronousTestCase):
    """The /api/total object."""

    def test_total_tb_is_a_float_with_two_decimals(self):
        expected = {
            0: 0.0,          # nothing online: still a float
            8192: 1.0,       # exactly one TiB
            40: 0.0,         # 40/8192 TiB = 0.0049 rounds down
            41: 0.01,        # 41/8192 TiB = 0.0050 rounds up
            200000: 24.41,   # 24.414 TiB
        }
        got = {h: render.total_tb(h, SHARD) for h in expected}
        self.assertEqual(got, expected)
        self.assertEqual({type(v) for v in got.values()}, {float})

    def test_total_tb_serialises_as_a_float(self):
        body = render.json_bytes(render.total_dict(MIDNIGHT, 3, 8192, SHARD))
        self.assertIn(b'"total_TB": 1.0', body)
        self.assertIn(b'"total_farmers": 3', body)

    def test_id_counts_half_hours(self):
        """id = whole half-hours since the epoch; it changes on the half-hour."""
        half_hours = MIDNIGHT // 1800
        ids = [render.total_dict(now, 0, 0, SHARD)["id"]
               for now in (MIDNIGHT, MIDNIGHT + 1799.5, MIDNIGHT + 1800)]
        self.assertEqual(ids, [half_hours, half_hours, half_hours + 1])
        self.assertIsInstance(ids[0], int)


class FarmerDictTests(SynchronousTestCase):
    """The farmer JSON object."""

    def test_fields(self):
        reg = MIDNIGHT - 2 * DAY + 0.75
        d = render.farmer_dict(
            record(last_seen=MIDNIGHT - 30, reg_time=reg, height=12, claimed=4000),
            MIDNIGHT, 99.5)
        self.assertEqual(list(d)[:4], ["btc_addr", "payout_addr", "height", "last_seen"])
        self.assertEqual(list(d)[-3:], ["claimed_height", "plots", "verified_bytes"])
        self.assertEqual(d, {
            "btc_addr": FARMER.address, "payout_addr": PAYOUT, "height": 12,
            "last_seen": 30, "nodeid": FARMER.nodeid, "reg_time": int(reg),
            "uptime": 99.5, "bandwidth_upload": 1.5, "bandwidth_download": 2.5,
            "claimed_height": 4000, "plots": 0, "verified_bytes": 0})
        json.loads(render.json_bytes(d))  # serialisable

    def test_last_seen_never_wraps_at_a_day(self):
        """2.2.x used timedelta.seconds, which restarts at 0 each day; we do not."""
        d = render.farmer_dict(record(last_seen=MIDNIGHT), MIDNIGHT + DAY + 100, 0.0)
        self.assertEqual(d["last_seen"], DAY + 100)

    def test_last_seen_whole_seconds_never_negative(self):
        seen = [render.farmer_dict(record(last_seen=MIDNIGHT), now, 0.0)["last_seen"]
                for now in (MIDNIGHT + 59.9, MIDNIGHT - 3)]
        self.assertEqual(seen, [59, 0])


class UptimeTests(SynchronousTestCase):
    """uptime_percent and its window."""

    def uptime(self, recorded, now, days=30, **fields):
        return uptime.uptime_percent(recorded, record(**fields), now, ONLINE_WINDOW, days)

    def test_first_uptime_day(self):
        now = MIDNIGHT + 5
        self.assertEqual(uptime.first_uptime_day(now, 1), datetime.date(2023, 11, 15))
        self.assertEqual(uptime.first_uptime_day(now, 30), datetime.date(2023, 10, 17))
        self.assertEqual(uptime.first_uptime_day(MIDNIGHT - 1, 1), datetime.date(2023, 11, 14))

    def test_window_starts_at_registration_when_later(self):
        # Registered 100 s ago and seen then: online for all of its 100 s.
        value = self.uptime(0, MIDNIGHT + 200, reg_time=MIDNIGHT + 100,
                            last_seen=MIDNIGHT + 100)
        self.assertEqual(value, 100.0)

    def test_window_starts_at_first_day_for_old_farmers(self):
        # A 3-day window starts two midnights ago, whenever the farmer registered.
        now = MIDNIGHT + 200
        value = self.uptime(3600, now, days=3, reg_time=MIDNIGHT - 90 * DAY, last_seen=now)
        self.assertEqual(value, round(100.0 * 3600 / (2 * DAY + 200), 3))

    def test_just_registered_is_full(self):
        """No time has passed since registration: nothing to be absent from."""
        self.assertEqual(self.uptime(0, MIDNIGHT), 100.0)

    def test_registration_in_the_future_is_full(self):
        """Another daemon's clock may be ahead; never a negative or infinite figure."""
        self.assertEqual(self.uptime(0, MIDNIGHT - 10), 100.0)

    def test_current_contact_counts_up_to_the_online_window(self):
        """An hour after registration with no other contact: online 15 of 60 minutes."""
        self.assertEqual(self.uptime(0, MIDNIGHT + HOUR), 25.0)

    def test_time_since_a_recent_contact_counts(self):
        """Credited half an hour plus ten minutes since the last contact, of an hour."""
        value = self.uptime(1800, MIDNIGHT + HOUR, last_seen=MIDNIGHT + HOUR - 600)
        self.assertAlmostEqual(value, 100.0 * 2400 / 3600, places=3)

    def test_never_over_a_hundred(self):
        self.assertEqual(self.uptime(10 * HOUR, MIDNIGHT + HOUR, last_seen=MIDNIGHT + HOUR), 100.0)

    def test_last_seen_ahead_of_now_adds_nothing(self):
        value = self.uptime(900, MIDNIGHT + HOUR, last_seen=MIDNIGHT + HOUR + 30)
        self.assertEqual(value, 25.0)

    def test_three_decimals(self):
        self.assertEqual(self.uptime(0, MIDNIGHT + 3 * ONLINE_WINDOW), 33.333)

    def test_old_farmer_measured_from_first_day(self):
        """Registered long ago, one-day window, noon: half a day credited is 50 %."""
        value = self.uptime(6 * HOUR, MIDNIGHT + 12 * HOUR, days=1,
                            reg_time=MIDNIGHT - 90 * DAY, last_seen=MIDNIGHT + 12 * HOUR)
        self.assertEqual(value, 50.0)


class FarmerEntryTests(SynchronousTestCase):

    def test_with_credit(self):
        key = FarmerKey.from_seed(b"entry")
        entry = render.farmer_entry(key.address, key.address, 1700000000.5, 10.0)
        again = render.with_credit(entry, 25.5)
        self.assertEqual(again[:4], entry[:4])
        self.assertEqual((entry[-1], again[-1]), (10.0, 25.5))

    def test_entries_leave_the_collectors_sight(self):
        """100 000 of them are kept between passes: once collected young they are
        never traversed again by the collector's full passes."""
        key = FarmerKey.from_seed(b"entry")
        entries = [render.with_credit(render.farmer_entry(key.address, key.address, 1.0), 2.0)]
        gc.collect()
        self.assertFalse(gc.is_tracked(entries[0]))


class RenderSliceTests(SynchronousTestCase):
    """The summariser's one-loop renderer gives the same text as the per-farmer
    functions (json.dumps of farmer_dict, online_html_entry, uptime_percent)."""

    def test_same_text_as_the_per_farmer_functions(self):
        now = 1700000000.75
        window, days = 900, 30
        window_start = uptime.day_start(uptime.first_uptime_day(now, days))
        addresses = [FarmerKey.from_seed(b"json %d" % i).address for i in range(2)]
        cases = list(itertools.product(
            addresses, (0, 7, 199999),
            (now, now - 59.9, now - 60, now - 3599, now - 90000.2, now + 3),
            (now - 1e6 - 0.5, now - 100, now),
            (0.0, 1e-07, 123456789.5), (0.0, 500.0, 3e6)))
        # Claimed heights: as credited, and above it (credited at a fill rate).
        records = [FarmerRecord(i, address, PAYOUT, height, reg, seen, bandwidth, bandwidth * 2,
                                height + (i % 3) * 1000, None, i % 3, (i % 5) * 10 ** 12 + i)
                   for i, (address, height, seen, reg, bandwidth, _) in enumerate(cases)]
        credit = {i: case[-1] for i, case in enumerate(cases)}
        farmers = {r.id: render.farmer_entry(r.btc_addr, r.payout_addr, r.reg_time, credit[r.id])
                   for r in records}
        activity = [(r.id, r.height, r.last_seen, r.bandwidth_upload, r.bandwidth_download,
                     r.claimed_height, r.plots, r.verified_bytes) for r in records]
        objects, entries, heights, verified = render.render_slice(
            activity, now, farmers, window, window_start)
        expected_objects = ", ".join(
            render.json_bytes(render.farmer_dict(r, now, uptime.uptime_percent(
                credit[r.id], r, now, window, days))).decode() for r in records)
        self.assertEqual(objects, expected_objects)
        self.assertEqual(entries, "".join(render.online_html_entry(r, now) for r in records))
        self.assertEqual(heights, sum(r.height for r in records))
        self.assertEqual(verified, sum(r.verified_bytes for r in records))
