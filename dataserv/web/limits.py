"""Per-client limits that are checked before any work: the request rate of each IP.

A client is its IP address, except that an IPv6 client is its /64: one host is
routinely given a whole /64, so counting single IPv6 addresses would let it start
afresh with every request.
"""

import functools
import ipaddress
import math
from collections import OrderedDict
from typing import Optional

# Buckets kept at most. A bucket that has not been used for burst / rate seconds
# is full again, the same as a new one, so forgetting the least recently used is
# harmless; the cap keeps an attacker who cycles addresses from growing the table
# (about 150 bytes a bucket: ~10 MB at the cap).
MAX_CLIENTS = 65536


@functools.lru_cache(maxsize=4096)  # parsing an address costs more than the rest
def client_key(ip: Optional[str]) -> Optional[str]:
    """The key a client's limits are counted under: its IPv4 address or its IPv6 /64."""
    if not ip:
        return None
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip  # not an IP (e.g. a UNIX socket peer): count it as it is
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class RateLimiter:
    """A token bucket per client key: ``rate`` tokens a second, at most ``burst``."""

    def __init__(self, rate: float, burst: int, max_clients: int = MAX_CLIENTS) -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_clients = max_clients
        # key -> [tokens, time of that count]; least recently used first.
        self._buckets: "OrderedDict[str, list]" = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float) -> float:
        """Take one token for key at time now: 0 when allowed, else the seconds until
        a token is there."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [self.burst, now]
            if len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            tokens, then = bucket
            bucket[0] = min(self.burst, tokens + max(0.0, now - then) * self.rate)
            bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return 0.0
        return (1.0 - bucket[0]) / self.rate


def retry_after(seconds: float) -> bytes:
    """A Retry-After value: whole seconds, at least 1."""
    return b"%d" % max(1, math.ceil(seconds))
