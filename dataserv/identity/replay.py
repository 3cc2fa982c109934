"""Replay keys, and the in-memory half of "each authenticated request is accepted once".

A replay key names one authenticated request. The database holds the keys of every
daemon (the authority, claimed in the same statement as the request's own write); a
:class:`ReplayCache` in each daemon turns away the repeats it has seen itself without a
round trip and keeps two copies of one request out of one write batch.

Keys are 16 bytes of SHA-256. A legacy key names the farmer, the route, the route's
values in canonical form (the address, never the nodeid spelling; numbers as parsed)
and the Date exactly as sent, but not the Authorization: an ECDSA signature can be
re-encoded by anyone (s -> n - s with the other recovery id) into a second valid one,
and the path is not signed, so keying on the raw header or raw path would let a
captured pair through again as a "different" request. A v2 key names the farmer and the
signed message, which holds the path, Date and nonce; the signature's encoding is again
left out for the same reason.
"""

from hashlib import sha256
from typing import Dict

__all__ = ["KEY_BYTES", "ReplayCache", "legacy_key", "v2_key"]

KEY_BYTES = 16


def legacy_key(address: str, method: str, route: str, values: tuple, date: object) -> bytes:
    """The replay key of a legacy request: farmer, method, route and values, Date."""
    if isinstance(date, bytes):
        date = date.decode("ascii", "replace")
    text = "\0".join(("legacy", address, method, route, *map(repr, values), str(date)))
    return sha256(text.encode("utf-8")).digest()[:KEY_BYTES]


def v2_key(address: str, signed_message: bytes) -> bytes:
    """The replay key of a v2 request: farmer and signed message."""
    return sha256(b"v2\0" + address.encode("utf-8") + b"\0"
                          + signed_message).digest()[:KEY_BYTES]


class ReplayCache:
    """Keys this daemon has accepted, each until it can no longer verify anyway.

    A request can only pass the Date check within ``window`` seconds of its first
    acceptance plus the Date's own slack, so keeping a key for ``window`` (twice the
    auth timeout) covers every replay that could still verify. Bounded: expired keys
    go first, then everything (the database still refuses what this forgets).
    """

    def __init__(self, window: float, limit: int = 500000) -> None:
        self.window = window
        self.limit = limit
        self._keys: Dict[bytes, float] = {}
        self.forgot = 0  # times keys still in their window were dropped (cache full)

    def claim(self, key: bytes, now: float) -> bool:
        """Remember key; False when it is already known (a replay)."""
        expires = self._keys.get(key)
        if expires is not None and now < expires:
            return False
        if len(self._keys) >= self.limit:
            self._make_room(now)
        self._keys[key] = now + self.window
        return True

    def remember(self, key: bytes, expires: float, now: float) -> None:
        """Know a key accepted elsewhere (another daemon, or this one before a restart)
        until ``expires``."""
        if expires > self._keys.get(key, float("-inf")):
            self._make_room(now)
            self._keys[key] = expires

    def _make_room(self, now: float) -> None:
        """Expired keys go when the cache is full; if it is still full, everything
        (counted in ``forgot``: keys still in their window were dropped)."""
        if len(self._keys) >= self.limit:
            self._keys = {k: e for k, e in self._keys.items() if now < e}
            if len(self._keys) >= self.limit:
                self._keys.clear()
                self.forgot += 1

    def release(self, key: bytes) -> None:
        """Forget a key whose request was never carried out (e.g. the database was down)."""
        self._keys.pop(key, None)

    def __len__(self) -> int:
        return len(self._keys)
