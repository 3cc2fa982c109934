"""Tests for :mod:`dataserv.registry.limits` and :mod:`dataserv.registry.credit`: the
token buckets, the networks registrations are counted in, and the fill rate."""

import dataclasses
import random

from twisted.trial.unittest import SynchronousTestCase

from dataserv.daemon.config import Settings
from dataserv.registry import credit
from dataserv.registry.limits import (
    FORGET_SCAN,
    HourlyBuckets,
    TokenBuckets,
    client_address,
    registration_network,
    seconds_until,
    whole_seconds,
)

T = 1700000000.0


class _CountedBucket:
    """The textbook token bucket, kept as a count of tokens and the time of that
    count: what :class:`TokenBuckets` must behave as."""

    def __init__(self, rate, burst):
        self.rate, self.burst = rate, burst
        self.tokens, self.then = float(burst), None

    def take(self, now):
        if self.then is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.then) * self.rate)
        self.then = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class TokenBucketsTests(SynchronousTestCase):
    """The one token bucket behind the per-IP rate limit and the per-farmer limits."""

    def test_same_as_a_count_of_tokens(self):
        # Intervals and times in powers of two: both sides compute exactly, so the
        # answers must be equal, ties (exactly one token) included.
        rng = random.Random(11)
        for _ in range(300):
            interval, burst = 2.0 ** rng.randint(-4, 4), rng.randint(1, 20)
            buckets = TokenBuckets(interval, burst, max_keys=10)
            counted = _CountedBucket(1 / interval, burst)
            now = 1000.0
            for _ in range(60):
                now += rng.choice([0, 0, 1, rng.randint(1, 64), rng.randint(1, 1024)]) / 64
                self.assertEqual(buckets.take("key", now), counted.take(now))

    def test_bad_parameters(self):
        for interval, burst, max_keys in [(0, 1, 1), (-1, 1, 1), (float("nan"), 1, 1),
                                          (1, 0, 1), (1, 1, 0)]:
            self.assertRaises(ValueError, TokenBuckets, interval, burst, max_keys)

    def test_least_recently_used_goes_when_none_is_full(self):
        buckets = TokenBuckets(10, 1, max_keys=3)
        for key in "abc":
            buckets.take(key, T)
        self.assertGreater(buckets.take("a", T), 0)  # refused, and now the most recent
        buckets.take("d", T)  # nothing is full: "b", the least recently used, goes
        self.assertEqual(len(buckets), 3)
        self.assertEqual(buckets.take("b", T), 0)  # a new, full bucket
        self.assertGreater(buckets.take("a", T), 0)

    def test_full_ones_among_the_least_recently_used_go_first(self):
        buckets = TokenBuckets(10, 2, max_keys=3)
        self.assertEqual([buckets.take("a", T), buckets.take("a", T)], [0, 0])  # full at T+20
        buckets.take("b", T)  # full again at T + 10
        buckets.take("c", T + 5)  # full again at T + 15
        buckets.take("d", T + 12)  # "a" is the least recently used, "b" the full one
        self.assertEqual(len(buckets), 3)
        # "a" kept its count: one token back since T + 10, not a new bucket's two.
        self.assertEqual(buckets.take("a", T + 12), 0)
        self.assertGreater(buckets.take("a", T + 12), 0)

    def test_only_the_least_recently_used_few_are_looked_at(self):
        buckets = TokenBuckets(10, 1, max_keys=FORGET_SCAN + 1)
        for n in range(FORGET_SCAN):
            buckets.take(n, T)  # not full before T + 10
        buckets.take("full", T - 100)  # full since T - 90, but not among the first few
        buckets.take("new", T)
        self.assertEqual(len(buckets), FORGET_SCAN + 1)
        self.assertGreater(buckets.take("full", T - 100), 0)  # kept: its bucket is empty
        self.assertEqual(buckets.take(0, T), 0)  # forgotten: a new, full bucket


class HourlyBucketsTests(SynchronousTestCase):
    """``per_hour`` writes at once, then one every 3600 / per_hour seconds."""

    def test_a_full_hour_at_once_then_refused(self):
        buckets = HourlyBuckets(12)
        self.assertEqual([buckets.take("alice", T) for _ in range(12)], [0] * 12)
        # The next token is 3600 / 12 = 300 s away.
        self.assertEqual(buckets.take("alice", T), 300)
        self.assertEqual(buckets.take("alice", T + 100), 200)

    def test_refill_at_the_hourly_rate(self):
        buckets = HourlyBuckets(12)
        for _ in range(12):
            buckets.take("alice", T)
        self.assertEqual(buckets.take("alice", T + 299.5), 1)  # never 0: come back later
        self.assertEqual(buckets.take("alice", T + 300), 0)
        self.assertEqual(buckets.take("alice", T + 300), 300)
        # Three more tokens after 900 s, not more than the capacity after a day.
        self.assertEqual([buckets.take("alice", T + 1200) for _ in range(4)], [0, 0, 0, 300])
        later = T + 86400
        self.assertEqual([buckets.take("alice", later) for _ in range(13)], [0] * 12 + [300])

    def test_a_refusal_spends_nothing(self):
        buckets = HourlyBuckets(1)
        self.assertEqual(buckets.take("alice", T), 0)
        for at in range(0, 3600, 600):
            self.assertEqual(buckets.take("alice", T + at), 3600 - at)
        self.assertEqual(buckets.take("alice", T + 3600), 0)

    def test_keys_are_independent(self):
        buckets = HourlyBuckets(1)
        self.assertEqual((buckets.take("alice", T), buckets.take("bob", T)), (0, 0))
        self.assertEqual((buckets.take("alice", T), buckets.take("bob", T)), (3600, 3600))

    def test_a_clock_that_steps_back_adds_nothing(self):
        buckets = HourlyBuckets(1)
        buckets.take("alice", T)
        # Refused until T + 3600, 4600 s away by this clock.
        self.assertEqual(buckets.take("alice", T - 1000), 4600)

    def test_memory_is_bounded_and_full_buckets_go_first(self):
        buckets = HourlyBuckets(2, max_keys=100)
        buckets.take("busy", T)
        buckets.take("busy", T)  # empty: must be remembered
        for n in range(500):
            self.assertEqual(buckets.take("key %d" % n, T + 3600 + n), 0)
            self.assertLessEqual(len(buckets), 100)
        # "busy" filled up again after an hour, so forgetting it changed nothing;
        # a key whose bucket is still empty when room is made is kept.
        buckets = HourlyBuckets(2, max_keys=10)
        buckets.take("busy", T)
        buckets.take("busy", T)
        for n in range(9):
            buckets.take("full %d" % n, T - 7200)  # filled up again by T
        buckets.take("new", T)
        self.assertEqual(buckets.take("busy", T), 1800)
        self.assertLessEqual(len(buckets), 10)

    def test_when_every_bucket_is_in_use_the_least_recently_used_goes(self):
        buckets = HourlyBuckets(1, max_keys=10)
        for n in range(10):
            buckets.take(n, T)
        buckets.take("new", T)
        self.assertLessEqual(len(buckets), 10)
        self.assertEqual(buckets.take("new", T), 3600)  # the newest is kept
        self.assertEqual(buckets.take(9, T), 3600)
        self.assertEqual(buckets.take(0, T), 0)  # forgotten: a full bucket again


class ClientAddressTests(SynchronousTestCase):
    """The parsed client IP that both the per-IP and the per-network limits count."""

    def test_addresses(self):
        self.assertEqual(str(client_address("192.0.2.7")), "192.0.2.7")
        self.assertEqual(str(client_address("2001:db8::1")), "2001:db8::1")

    def test_ipv4_mapped_ipv6_is_ipv4(self):
        self.assertEqual(str(client_address("::ffff:192.0.2.9")), "192.0.2.9")

    def test_no_ip(self):
        for ip in (None, "", "not an ip", "unix-socket"):
            self.assertIsNone(client_address(ip), ip)


class RegistrationNetworkTests(SynchronousTestCase):
    """The /24 of an IPv4 address, the /64 of an IPv6 one."""

    def test_ipv4_slash_24(self):
        self.assertEqual(registration_network("192.0.2.77"), "192.0.2.0/24")
        self.assertEqual(registration_network("192.0.2.255"), "192.0.2.0/24")
        self.assertEqual(registration_network("192.0.3.1"), "192.0.3.0/24")

    def test_ipv6_slash_64(self):
        self.assertEqual(registration_network("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64")
        self.assertEqual(registration_network("2001:db8:1:2:ffff:ffff:ffff:ffff"),
                         "2001:db8:1:2::/64")
        self.assertEqual(registration_network("2001:db8:1:3::1"), "2001:db8:1:3::/64")

    def test_ipv4_mapped_ipv6_is_ipv4(self):
        self.assertEqual(registration_network("::ffff:192.0.2.9"), "192.0.2.0/24")

    def test_no_ip(self):
        for ip in (None, "", "not an ip", "unix-socket"):
            self.assertIsNone(registration_network(ip), ip)


class SecondsUntilTests(SynchronousTestCase):

    def test_whole_seconds_rounded_up_at_least_one(self):
        self.assertEqual([seconds_until(T + d, T) for d in (0.2, 1, 1.01, 3540, -5)],
                         [1, 1, 2, 3540, 1])
        self.assertEqual([whole_seconds(d) for d in (0.0, 0.2, 1, 1.01, 7.5, -5)],
                         [1, 1, 1, 2, 8, 1])


class FillRateTests(SynchronousTestCase):
    """--max-fill-rate in shards per second; None when claims are credited as made."""

    def test_default_is_eight_shards_a_second(self):
        # 1 GiB/s in shards of 128 MiB.
        self.assertEqual(credit.fill_rate(Settings()), 8.0)

    def test_follows_the_shard_size(self):
        self.assertEqual(credit.fill_rate(Settings(max_fill_rate=1000, shard_size=4000)), 0.25)

    def test_zero_credits_as_claimed(self):
        self.assertIsNone(credit.fill_rate(Settings(max_fill_rate=0)))

    def test_no_limits_credits_as_claimed(self):
        self.assertIsNone(credit.fill_rate(dataclasses.replace(Settings(), no_limits=True)))
