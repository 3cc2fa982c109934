"""Per-key token buckets, and the per-farmer and per-network limits on writes that
a field client never comes near.

- :class:`TokenBuckets`: a token bucket per key in this daemon's memory, the one
  implementation of every in-memory request limit: the per-IP rate limit in front
  of every route (``web/limits.py`` ``RateLimiter``) and the per-farmer limits here.
- :class:`HourlyBuckets`: the per-farmer limits on audits and bandwidth reports.
  Checked after the signature (so nobody can spend another farmer's budget) and
  before any query. With N daemons on one database a farmer that spreads its
  requests over all of them gets up to N times the limit: still a handful per hour
  per farmer, which is all the limit is for (it bounds the rows and writes one key
  can cause), and it costs no query.
- :func:`registration_network`: the network whose new registrations are counted
  together. That count is kept in PostgreSQL (``register_farmer``, schema 0004),
  so it holds across daemons and restarts.
"""

import ipaddress
import math
from collections import OrderedDict
from itertools import islice
from typing import Hashable, List, Optional

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

HOUR = 3600.0
IPV4_PREFIX = 24
IPV6_PREFIX = 64

# When the table is over its cap, up to this many least recently used buckets are
# looked at and the full ones among them forgotten (a full bucket is the same as
# none); if none is full, the least recently used one goes. A few, not all: a look
# at every bucket on every new key would cost a pass over the table per request.
FORGET_SCAN = 8


def client_address(ip: Optional[str]) -> Optional[IPAddress]:
    """The client's IP address, an IPv4-mapped IPv6 address as its IPv4 address, or
    None when ``ip`` is empty or not an IP address."""
    if not ip:
        return None
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def registration_network(ip: Optional[str]) -> Optional[str]:
    """The /24 (IPv4) or /64 (IPv6) that ``ip`` is in, as text ("192.0.2.0/24"), or
    None when there is no IP to go by (such registrations are not counted).
    An IPv4-mapped IPv6 address counts as its IPv4 address."""
    address = client_address(ip)
    if address is None:
        return None
    prefix = IPV4_PREFIX if address.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network("%s/%d" % (address, prefix), strict=False))


def whole_seconds(seconds: float) -> int:
    """A wait in whole seconds, rounded up, at least 1 (a Retry-After value)."""
    return max(1, int(math.ceil(seconds)))


def seconds_until(moment: float, now: float) -> int:
    """Whole seconds from now until moment, at least 1 (a Retry-After value)."""
    return whole_seconds(moment - now)


class TokenBuckets:
    """A token bucket per key: a token every ``interval`` seconds, at most ``burst``.

    A new key starts with a full bucket. Kept as the time each key's bucket will be
    full again (the "theoretical arrival time" of GCRA, which is the same as a
    count of tokens and the time of that count): one float per key, and no rounding
    that accumulates. A clock that steps back adds no tokens. "Now" comes from the
    caller (read once at request entry from the injected clock).

    Memory is bounded: past ``max_keys`` keys, the full buckets among the
    ``FORGET_SCAN`` least recently used are forgotten, or if none is full the least
    recently used one (that key starts again with a full bucket).
    """

    def __init__(self, interval: float, burst: int, max_keys: int) -> None:
        if not interval > 0 or burst < 1 or max_keys < 1:
            raise ValueError("interval > 0, burst >= 1 and max_keys >= 1 expected")
        self.interval = float(interval)
        self.burst = burst
        self.capacity = self.interval * burst  # seconds an empty bucket takes to fill
        self.max_keys = max_keys
        # key -> when its bucket is full again; least recently used first.
        self._full_at: "OrderedDict[Hashable, float]" = OrderedDict()

    def __len__(self) -> int:
        return len(self._full_at)

    def take(self, key: Hashable, now: float) -> float:
        """Spend one token for key at time now: 0 when there was one, else the
        seconds until there is one again (nothing is spent then)."""
        buckets = self._full_at
        full_at = buckets.get(key)
        if full_at is None:
            buckets[key] = now + self.interval
            if len(buckets) > self.max_keys:
                oldest, full_at = buckets.popitem(last=False)
                if full_at > now:  # not full again yet: look for one that is
                    self._forget_full(oldest, full_at, now)
            return 0.0
        buckets.move_to_end(key)
        after = (full_at if full_at > now else now) + self.interval
        wait = after - now - self.capacity
        if wait > 0:
            return wait
        buckets[key] = after
        return 0.0

    def _forget_full(self, oldest: Hashable, full_at: float, now: float) -> None:
        """Forget the full buckets among the least recently used instead of
        ``oldest`` (just taken out, not full yet); if none is, ``oldest`` stays out."""
        buckets = self._full_at
        full: List[Hashable] = [
            key for key, at in islice(buckets.items(), FORGET_SCAN - 1) if at <= now]
        if full:
            for key in full:
                del buckets[key]
            buckets[oldest] = full_at
            buckets.move_to_end(oldest, last=False)


class HourlyBuckets(TokenBuckets):
    """``per_hour`` writes per key per hour: :class:`TokenBuckets` holding a full
    hour's worth (all of them may come at once), refilled at ``per_hour`` an hour.

    Unlike ``web.limits.RateLimiter`` (the same buckets per client IP, at a rate
    per second), a refusal is in whole seconds, the figure a 429 names.
    """

    def __init__(self, per_hour: int, max_keys: int = 100000) -> None:
        super().__init__(HOUR / per_hour, per_hour, max_keys)

    def take(self, key: Hashable, now: float) -> int:
        """Spend one token for key: 0 when there was one, else the whole seconds
        until there is one again (nothing is spent then)."""
        wait = super().take(key, now)
        return whole_seconds(wait) if wait else 0
