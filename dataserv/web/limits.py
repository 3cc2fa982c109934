"""Per-client limits that are checked before any work: the request rate of each IP.

A client is its IP address, except that an IPv6 client is its /64: one host is
routinely given a whole /64, so counting single IPv6 addresses would let it start
afresh with every request.
"""

import functools
import ipaddress
from typing import Optional

from dataserv.registry.limits import (
    IPV6_PREFIX,
    TokenBuckets,
    client_address,
    whole_seconds,
)

# Buckets kept at most. A bucket that has not been used for burst / rate seconds
# is full again, the same as a new one, so forgetting the least recently used is
# harmless; the cap keeps an attacker who cycles addresses from growing the table.
MAX_CLIENTS = 65536


@functools.lru_cache(maxsize=4096)  # parsing an address costs more than the rest
def client_key(ip: Optional[str]) -> Optional[str]:
    """The key a client's limits are counted under: its IPv4 address or its IPv6 /64."""
    address = client_address(ip)
    if address is None:
        return ip or None  # not an IP (e.g. a UNIX socket peer): count it as it is
    if address.version == 6:
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return str(address)


class RateLimiter(TokenBuckets):
    """The request rate of each client key: ``rate`` tokens a second, at most ``burst``.

    :class:`dataserv.registry.limits.TokenBuckets` (the implementation the
    per-farmer hourly limits use too), set up by a rate per second and with the
    cap of this table; ``take`` answers the wait in seconds, as a float.
    """

    def __init__(self, rate: float, burst: int, max_clients: int = MAX_CLIENTS) -> None:
        super().__init__(1.0 / rate, burst, max_clients)


def retry_after(seconds: float) -> bytes:
    """A Retry-After value: whole seconds, at least 1."""
    return b"%d" % whole_seconds(seconds)
