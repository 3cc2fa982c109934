"""Uptime end to end: Farmers' calls with explicit times, real PostgreSQL, status()."""

import calendar
import datetime

from twisted.internet import defer, task
from twisted.trial import unittest

from dataserv.registry import farmers
from dataserv.daemon.config import Settings
from dataserv.identity.signing import FarmerKey
from dataserv.storage.store import FarmerStore
from dataserv.registry.summary import Summariser
from dataserv.web.snapshot import SnapshotRenderer
from tests import pg

DAY = 86400
HOUR = 3600
D0 = calendar.timegm((2023, 11, 15, 0, 0, 0))  # a UTC midnight
FARMER = FarmerKey.from_seed(b"uptime farmer").address


def request(now):
    """A request at ``now`` with no headers (authentication is skipped)."""
    return farmers.Request(date=None, authorization=None, now=now, ip=None)


def day_of(when):
    return datetime.datetime.fromtimestamp(when, datetime.timezone.utc).date()


class FarmersTestCase(unittest.TestCase):
    """Farmers over a real store; settings may be overridden per test."""

    settings = {}

    @defer.inlineCallbacks
    def setUp(self):
        self.db = yield pg.open_database(self)
        self.clock = task.Clock()
        self.store = FarmerStore(self.db, self.clock)
        self.settings = Settings(skip_authentication=True, **self.settings)
        self.farmers = farmers.Farmers(self.store, None, self.settings, self.clock)

    def register(self, at, address=FARMER):
        return self.farmers.register(address, None, request(at))

    @defer.inlineCallbacks
    def ping_every(self, start, end, step=60, address=FARMER):
        """Ping at start, start + step, ... up to and including end."""
        at = start
        while at <= end:
            yield self.farmers.ping(address, request(at))
            at += step

    @defer.inlineCallbacks
    def uptime(self, now, address=FARMER):
        status = yield self.farmers.status(address, now)
        return status.uptime

    def assert_close(self, actual, expected, tolerance):
        """trial's assertAlmostEqual ignores ``delta``; this one does not."""
        self.assertTrue(abs(actual - expected) <= tolerance,
                        "%r is not within %r of %r" % (actual, tolerance, expected))

    @defer.inlineCallbacks
    def buckets(self):
        """{day: online seconds} straight from uptime_days."""
        rows = yield self.db.run_query("SELECT day, online_seconds FROM uptime_days")
        return dict(rows)


class UptimeTests(FarmersTestCase):

    @defer.inlineCallbacks
    def test_pinging_every_minute_for_a_day(self):
        yield self.register(D0)
        yield self.ping_every(D0 + 60, D0 + DAY - 60)
        uptime = yield self.uptime(D0 + DAY - 30)
        self.assert_close(uptime, 100.0, 0.01)

    @defer.inlineCallbacks
    def test_six_minute_gap_is_still_online(self):
        """Within the 15-minute online window a late ping loses nothing (2.2.x: 0 %)."""
        yield self.register(D0)
        yield self.ping_every(D0 + 60, D0 + HOUR)
        yield self.ping_every(D0 + HOUR + 360, D0 + 2 * HOUR)
        uptime = yield self.uptime(D0 + 2 * HOUR + 10)
        self.assert_close(uptime, 100.0, 0.01)

    @defer.inlineCallbacks
    def test_registered_an_hour_ago(self):
        """The window starts at registration, not 30 days back."""
        now = D0 + 10 * HOUR
        yield self.register(now - HOUR)
        yield self.ping_every(now - HOUR + 60, now)
        uptime = yield self.uptime(now)
        self.assert_close(uptime, 100.0, 0.01)

    @defer.inlineCallbacks
    def test_silence_counts_only_the_online_window(self):
        """Registered an hour ago and never seen since: online 15 of 60 minutes."""
        yield self.register(D0)
        uptime = yield self.uptime(D0 + HOUR)
        self.assertEqual(uptime, 25.0)

    @defer.inlineCallbacks
    def test_interval_across_midnight_is_split(self):
        """Pings at 23:58 and 00:03: two minutes on one day, three on the next."""
        yield self.register(D0 - 600)
        yield self.farmers.ping(FARMER, request(D0 - 120))
        yield self.farmers.ping(FARMER, request(D0 + 180))
        buckets = yield self.buckets()
        self.assertEqual(buckets, {day_of(D0 - 1): 600.0, day_of(D0): 180.0})

    @defer.inlineCallbacks
    def test_online_window_after_a_contact_lands_on_its_days(self):
        """Last seen 23:55, back at 00:30: online till 00:10, so 5 min and 10 min."""
        yield self.register(D0 - 300)
        yield self.farmers.ping(FARMER, request(D0 + 1800))
        buckets = yield self.buckets()
        self.assertEqual(buckets, {day_of(D0 - 1): 300.0, day_of(D0): 600.0})


class ThreeDayUptimeTests(FarmersTestCase):

    settings = {"uptime_days": 3}

    @defer.inlineCallbacks
    def test_a_whole_day_offline(self):
        """Online a day, offline the whole next day, online again: two thirds."""
        window = self.settings.online_seconds
        yield self.register(D0)
        # Online until the last ping's window runs out at midnight...
        yield self.ping_every(D0 + 300, D0 + DAY - window, step=300)
        # ...and back a day later.
        yield self.ping_every(D0 + 2 * DAY, D0 + 3 * DAY - 300, step=300)
        now = D0 + 3 * DAY - 300
        uptime = yield self.uptime(now)
        elapsed = now - D0
        self.assertAlmostEqual(uptime, 100.0 * (elapsed - DAY) / elapsed, places=2)
        self.assert_close(uptime, 66.667, 0.05)


class OldBucketTests(FarmersTestCase):

    settings = {"uptime_days": 2}

    @defer.inlineCallbacks
    def test_old_buckets_ignored_and_pruned(self):
        """Days before the window neither count nor stay once the summariser runs."""
        old = D0 - 5 * DAY
        yield self.register(old)
        yield self.ping_every(old + 300, old + 6 * HOUR, step=300)
        # The window is yesterday and today; online from 06:00 to noon today.
        now = D0 + 12 * HOUR
        yield self.ping_every(D0 + 6 * HOUR, now, step=300)
        uptime = yield self.uptime(now)
        expected = 100.0 * (6 * HOUR) / (DAY + 12 * HOUR)
        self.assertAlmostEqual(uptime, expected, places=3)

        self.clock.advance(now)
        yield Summariser(self.store, self.settings, self.clock,
                         SnapshotRenderer(self.settings)).run_pass()
        buckets = yield self.buckets()
        self.assertEqual(sorted(buckets), [day_of(now)])
        after = yield self.uptime(now)
        self.assertEqual(after, uptime)
