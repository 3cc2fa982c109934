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
from typing import Dict, Hashable, Optional

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

    Kept as the time each key's bucket will be full again (the "theoretical arrival
    time" of GCRA): one float per key, and no rounding that accumulates. Memory is
    bounded: past ``max_keys`` keys, the buckets that are full again are forgotten
    (a full bucket is the same as none), and if that is not enough the half seen
    first goes (those keys start again with a full bucket). "Now" comes from the
    caller (read once at request entry from the injected clock).
    """

    def __init__(self, per_hour: int, max_keys: int = 100000):
        self.interval = HOUR / per_hour  # seconds per token
        self.max_keys = max_keys
        self._full_at: Dict[Hashable, float] = {}  # key -> when its bucket is full again

    def take(self, key: Hashable, now: float) -> int:
        """Spend one token for key: 0 when there was one, else the whole seconds
        until there is one again (nothing is spent then)."""
        full_at = self._full_at.get(key, now)
        after = (full_at if full_at > now else now) + self.interval
        if after - now > HOUR:
            return seconds_until(after - HOUR, now)
        if key not in self._full_at and len(self._full_at) >= self.max_keys:
            self._make_room(now)
        self._full_at[key] = after
        return 0

    def _make_room(self, now: float) -> None:
        self._full_at = {key: at for key, at in self._full_at.items() if at > now}
        if len(self._full_at) >= self.max_keys:
            for key in list(islice(self._full_at, len(self._full_at) // 2 + 1)):
                del self._full_at[key]

    def __len__(self) -> int:
        return len(self._full_at)
