"""Per-farmer and per-network limits on writes that a field client never comes near.

- :class:`HourlyBuckets`: a token bucket per farmer, in this daemon's memory, for
  audits and bandwidth reports. Checked after the signature (so nobody can spend
  another farmer's budget) and before any query. With N daemons on one database a
  farmer that spreads its requests over all of them gets up to N times the limit:
  still a handful per hour per farmer, which is all the limit is for (it bounds
  the rows and writes one key can cause), and it costs no query.
- :func:`registration_network`: the network whose new registrations are counted
  together. That count is kept in PostgreSQL (``register_farmer``, schema 0004),
  so it holds across daemons and restarts.
"""

import ipaddress
import math
from itertools import islice
from typing import Hashable, Optional

HOUR = 3600.0
IPV4_PREFIX = 24
IPV6_PREFIX = 64


def registration_network(ip: Optional[str]) -> Optional[str]:
    """The /24 (IPv4) or /64 (IPv6) that ``ip`` is in, as text ("192.0.2.0/24"), or
    None when there is no IP to go by (such registrations are not counted).
    An IPv4-mapped IPv6 address counts as its IPv4 address."""
    if not ip:
        return None
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = IPV4_PREFIX if address.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network("%s/%d" % (address, prefix), strict=False))


def seconds_until(moment: float, now: float) -> int:
    """Whole seconds from now until moment, at least 1 (a Retry-After value)."""
    return max(1, int(math.ceil(moment - now)))


class HourlyBuckets:
    """``per_hour`` writes per key per hour: a token bucket per key holding up to
    ``per_hour`` tokens (a full hour's worth may come at once), refilled at
    ``per_hour`` an hour.

    Memory is bounded: past ``max_keys`` keys, the buckets that have filled up again
    are forgotten (a full bucket is the same as none), and if that is not enough the
    half seen first goes (those keys start again with a full bucket). "Now" comes from
    the caller (read once at request entry from the injected clock).
    """

    def __init__(self, per_hour: int, max_keys: int = 100000):
        self.capacity = float(per_hour)
        self.rate = per_hour / HOUR  # tokens per second
        self.max_keys = max_keys
        self._buckets = {}  # key -> (tokens, at)

    def take(self, key: Hashable, now: float) -> int:
        """Spend one token for key: 0 when there was one, else the whole seconds
        until there is one again (nothing is spent then)."""
        tokens, at = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + max(0.0, now - at) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return seconds_until(now + (1.0 - tokens) / self.rate, now)
        if key not in self._buckets and len(self._buckets) >= self.max_keys:
            self._make_room(now)
        self._buckets[key] = (tokens - 1.0, now)
        return 0

    def _make_room(self, now: float) -> None:
        capacity, rate = self.capacity, self.rate
        self._buckets = {key: (tokens, at) for key, (tokens, at) in self._buckets.items()
                         if tokens + (now - at) * rate < capacity}
        if len(self._buckets) >= self.max_keys:
            for key in list(islice(self._buckets, len(self._buckets) // 2 + 1)):
                del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)
