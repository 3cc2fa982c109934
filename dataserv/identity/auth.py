"""Verification of Bitcoin signed-message authentication headers.

A farmer proves it owns its address by signing, with the address's key, the
text `"<server address> <Date header>"` in Bitcoin's signed-message format
and sending the 65-byte compact recoverable signature, base64 encoded, in the
`Authorization` header.  The server recovers the public key from the
signature, hashes it to an address and compares; the `Date` header must lie
within `auth_timeout` seconds of the server clock so captured headers cannot
be replayed later.

Two interchangeable recovery backends exist: `coincurve` (libsecp256k1,
fast, the default) and `ecdsa` (pure Python, slow but always importable).
"""

import base64
import binascii
import collections
import email.utils
import hashlib
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple, Union

from dataserv.identity.addresses import InvalidAddress, farmer_id_hash160, hash160

__all__ = [
    "AuthenticationFailed",
    "RecoveryBackend",
    "Verifier",
    "available_backends",
    "ecdsa_recover",
    "get_backend",
    "message_digest",
    "verify_message",
    "SECP256K1_ORDER",
]

# Group order n of secp256k1.
SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

_MESSAGE_MAGIC = b"\x18Bitcoin Signed Message:\n"

# Limits applied before any parsing so oversized input costs nothing.  A real
# Date is about 31 bytes and a real Authorization exactly 88.
_MAX_DATE_LENGTH = 100
_MAX_AUTHORIZATION_LENGTH = 200
_SIGNATURE_LENGTH = 65


class AuthenticationFailed(Exception):
    """The request's authentication headers were not acceptable.

    `reason` is a short human-readable explanation.  `skew` is set when the
    Date parsed but lay outside the accepted window: the server time minus
    the Date's time in whole seconds (positive means the client clock is
    behind); otherwise it is None.
    """

    def __init__(self, reason: str, skew: Optional[int] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.skew = skew


def _compact_size(length: int) -> bytes:
    # Bitcoin's CompactSize length prefix.
    if length < 0xFD:
        return bytes((length,))
    if length <= 0xFFFF:
        return b"\xfd" + length.to_bytes(2, "little")
    if length <= 0xFFFFFFFF:
        return b"\xfe" + length.to_bytes(4, "little")
    return b"\xff" + length.to_bytes(8, "little")


def message_digest(message: Union[str, bytes]) -> bytes:
    """Return the 32-byte digest that a Bitcoin signed message signs.

    That is the double SHA-256 of the magic prefix, the CompactSize message
    length and the message (a str is encoded as UTF-8).
    """
    if isinstance(message, str):
        message = message.encode("utf-8")
    data = _MESSAGE_MAGIC + _compact_size(len(message)) + message
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


# --------------------------------------------------------------------------
# Backends.  Callers have already checked 0 < r, s < n and 0 <= recid <= 3.


class RecoveryBackend(Protocol):
    """What `Verifier` needs of a backend: a name and public key recovery."""

    @property
    def name(self) -> str:
        """The backend's name."""

    def recover(
        self, digest: bytes, rs: bytes, recid: int, compressed: bool
    ) -> Optional[bytes]:
        """Return the serialised public key that signed `digest` with `rs`.

        `rs` is r and s, 32 bytes each, big-endian; `recid` the recovery id
        (0 to 3).  Returns None, or raises, when no key can be recovered.
        """


class _CoincurveBackend:
    """Public key recovery with libsecp256k1 through coincurve."""

    name = "coincurve"

    def __init__(self) -> None:
        import coincurve

        self._from_signature = coincurve.PublicKey.from_signature_and_message

    def recover(
        self, digest: bytes, rs: bytes, recid: int, compressed: bool
    ) -> Optional[bytes]:
        """Return the serialised public key that signed `digest` with `rs`."""
        # coincurve wants r || s || recid and must not hash the digest again.
        key = self._from_signature(rs + bytes((recid,)), digest, hasher=None)
        return key.format(compressed=compressed)


def ecdsa_recover(digest: bytes, rs: bytes, overflow: bool = False) -> List[Any]:
    """Return the keys that could have made signature `rs`, recovered by ecdsa.

    Returns the two candidate `ecdsa.VerifyingKey`s for the point R whose x
    coordinate is r (plus the group order when `overflow`, recovery ids 2
    and 3): first for R with an even y (recovery id 0 or 2), then for R with
    an odd y (1 or 3).  Returns an empty list when there is no such R, or
    when one candidate is the point at infinity (a crafted signature; the
    library then recovers neither).
    """
    from ecdsa import SECP256k1, VerifyingKey
    from ecdsa.keys import MalformedPointError
    from ecdsa.numbertheory import SquareRootError

    r = int.from_bytes(rs[:32], "big")
    s = int.from_bytes(rs[32:], "big")
    x = r + SECP256K1_ORDER if overflow else r
    # The library would reduce x modulo p; such an R does not exist.
    if x >= SECP256k1.curve.p():
        return []
    try:
        # ecdsa.Signature.recover_public_keys lists R with even y first.
        return list(
            VerifyingKey.from_public_key_recovery_with_digest(
                (x, s),
                digest,
                SECP256k1,
                hashfunc=hashlib.sha256,
                sigdecode=_as_pair,
            )
        )
    except (SquareRootError, MalformedPointError, TypeError):
        # No curve point has this x (SquareRootError), or a candidate is the
        # point at infinity, which the library trips over (TypeError).
        return []


def _as_pair(pair: Tuple[int, int], _order: int) -> Tuple[int, int]:
    # A sigdecode for ecdsa: the "signature" is already (x, s), which lets
    # recovery ids 2 and 3 hand the library an x beyond the group order.
    return pair


class _EcdsaBackend:
    """Public key recovery in pure Python with the ecdsa package."""

    name = "ecdsa"

    def __init__(self) -> None:
        import ecdsa  # noqa: F401 (fail here, not at the first recovery)

    def recover(
        self, digest: bytes, rs: bytes, recid: int, compressed: bool
    ) -> Optional[bytes]:
        """Return the serialised public key that signed `digest` with `rs`."""
        candidates = ecdsa_recover(digest, rs, overflow=recid >= 2)
        if not candidates:
            return None
        key = candidates[recid & 1]
        return bytes(key.to_string("compressed" if compressed else "uncompressed"))


_BACKEND_CLASSES: Dict[str, Callable[[], RecoveryBackend]] = {
    "coincurve": _CoincurveBackend,
    "ecdsa": _EcdsaBackend,
}
# Fastest first: the default backend is the first one that imports.
_BACKEND_PREFERENCE = ("coincurve", "ecdsa")


def get_backend(name: Optional[str] = None) -> RecoveryBackend:
    """Create the recovery backend `name` ("coincurve" or "ecdsa").

    None picks the fastest importable one.  An unknown name, or no backend
    at all, raises ValueError; a named backend whose package is missing
    raises ImportError.
    """
    if name is None:
        for candidate in _BACKEND_PREFERENCE:
            try:
                return _BACKEND_CLASSES[candidate]()
            except ImportError:
                continue
        raise ValueError("neither coincurve nor ecdsa is installed")
    try:
        cls = _BACKEND_CLASSES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown signature backend {name!r}") from None
    return cls()


def available_backends() -> List[str]:
    """List the names of the backends usable in this interpreter, fastest first."""
    names = []
    for name in _BACKEND_PREFERENCE:
        try:
            _BACKEND_CLASSES[name]()
        except ImportError:
            continue
        names.append(name)
    return names


# --------------------------------------------------------------------------
# Parsing and recovery shared by Verifier and verify_message.


def _header_text(value: object, limit: int, name: str) -> str:
    """Turn a header value into ASCII text.

    Absent, oversized or non-ASCII values are rejected before anything else
    looks at them.
    """
    if value is None:
        raise AuthenticationFailed(f"missing {name} header")
    if isinstance(value, bytes):
        if len(value) > limit:
            raise AuthenticationFailed(f"{name} header too long")
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            raise AuthenticationFailed(f"{name} header is not ASCII") from None
    if isinstance(value, str):
        if len(value) > limit:
            raise AuthenticationFailed(f"{name} header too long")
        if not value.isascii():
            raise AuthenticationFailed(f"{name} header is not ASCII")
        return value
    raise AuthenticationFailed(f"{name} header has the wrong type")


def _parse_date(text: str) -> int:
    """Parse an RFC 2822 date to a Unix timestamp, or raise `AuthenticationFailed`."""
    # email.utils is lenient and some malformed inputs make it (or mktime_tz,
    # for out-of-range fields) raise assorted exceptions; all mean "bad date".
    try:
        parsed = email.utils.parsedate_tz(text)
        if parsed is None:
            raise ValueError(text)
        # parsedate_tz reports "-0000" and a missing zone as offset 0, so
        # mktime_tz treats them as UTC and never consults the local zone.
        return email.utils.mktime_tz(parsed)
    except Exception:
        raise AuthenticationFailed("unparseable Date header") from None


def _check_window(date_timestamp: int, now: float, auth_timeout: float) -> None:
    """Raise `AuthenticationFailed` unless the Date lies within `auth_timeout`
    seconds of the server clock (the same window for legacy and v2 requests)."""
    # Whole seconds, absolute value: a client slightly ahead of the
    # server gives a small negative skew, not a huge positive one.
    skew = int(now) - date_timestamp
    if abs(skew) >= auth_timeout:
        raise AuthenticationFailed("Date outside the accepted window", skew=skew)


def _expected_hash160(address: str) -> bytes:
    """The hash160 a signature must recover for the farmer id `address`, or
    `AuthenticationFailed` when it is not a farmer id."""
    try:
        return farmer_id_hash160(address)
    except InvalidAddress:
        raise AuthenticationFailed("invalid farmer address") from None


def _parse_signature(text: str) -> Tuple[bytes, int, bool]:
    """Decode a base64 compact signature into (r || s, recid, compressed).

    Raises `AuthenticationFailed` for anything that is not one.
    """
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise AuthenticationFailed("Authorization is not valid base64") from None
    if len(raw) != _SIGNATURE_LENGTH:
        raise AuthenticationFailed("signature must be 65 bytes")
    header = raw[0]
    if not 27 <= header <= 34:
        raise AuthenticationFailed("bad signature header byte")
    header -= 27
    rs = raw[1:]
    # libsecp256k1 would reject these too, but checking here keeps both
    # backends in exact agreement and keeps nonsense out of the backend.
    r = int.from_bytes(rs[:32], "big")
    s = int.from_bytes(rs[32:], "big")
    if not (0 < r < SECP256K1_ORDER and 0 < s < SECP256K1_ORDER):
        raise AuthenticationFailed("signature r or s out of range")
    return rs, header & 3, header >= 4


def _recovered_hash160(
    backend: RecoveryBackend, digest: bytes, signature_text: str
) -> bytes:
    """Return hash160 of the key that made the signature, or raise `AuthenticationFailed`."""
    rs, recid, compressed = _parse_signature(signature_text)
    # The backends sit on top of third-party code; whatever it raises on a
    # hostile signature must surface as an authentication failure only.
    try:
        public_key = backend.recover(digest, rs, recid, compressed)
    except Exception:
        public_key = None
    if not isinstance(public_key, bytes):
        raise AuthenticationFailed("public key recovery failed")
    return hash160(public_key)


def verify_message(
    address: str,
    message: Union[str, bytes],
    signature_b64: Union[str, bytes],
    backend: Union[str, RecoveryBackend, None] = None,
) -> bool:
    """Tell whether `signature_b64` signs `message` for `address` (or nodeid).

    The signature is the base64 compact form; `backend` is a backend name,
    a backend object, or None for the default.
    """
    if backend is None or isinstance(backend, str):
        backend = get_backend(backend)
    try:
        expected = farmer_id_hash160(address)
        signature = _header_text(signature_b64, _MAX_AUTHORIZATION_LENGTH, "signature")
        return (
            _recovered_hash160(backend, message_digest(message), signature) == expected
        )
    except (InvalidAddress, AuthenticationFailed):
        return False


class Verifier:
    """Verifies the Date and Authorization headers of farmer requests.

    `server_address` is the first part of every signed message.  A Date
    `auth_timeout` seconds or further from the server clock is rejected.
    `backend` is "coincurve", "ecdsa", None for the fastest available, or an
    object with a `recover` method like the built-in backends (useful for
    instrumentation).  Up to `cache_size` successful verifications are
    remembered; 0 disables the cache.
    """

    def __init__(
        self,
        server_address: str,
        auth_timeout: float = 30,
        backend: Union[str, RecoveryBackend, None] = None,
        cache_size: int = 65536,
    ) -> None:
        if not isinstance(server_address, str):
            raise TypeError("server_address must be a str")
        if auth_timeout <= 0:
            raise ValueError("auth_timeout must be positive")
        if cache_size < 0:
            raise ValueError("cache_size must not be negative")
        if backend is None or isinstance(backend, str):
            backend = get_backend(backend)
        self.server_address = server_address
        self.auth_timeout = auth_timeout
        self.backend: RecoveryBackend = backend
        self.cache_size = cache_size
        self._prefix = server_address + " "
        # (address, date, authorization) -> Date timestamp.  Only successful
        # verifications go in, so garbage traffic cannot evict real entries.
        self._cache: "collections.OrderedDict[Tuple[str, str, str], int]" = (
            collections.OrderedDict()
        )
        # For /metrics: key recoveries run, and requests answered from the cache.
        self.recoveries = 0
        self.cache_hits = 0

    @property
    def name(self) -> str:
        """The backend's name: a Verifier is also a (counting) recovery backend."""
        return self.backend.name

    def recover(self, digest: bytes, rs: bytes, recid: int, compressed: bool) -> Optional[bytes]:
        """The backend's recovery, counted in :attr:`recoveries` (for /metrics)."""
        self.recoveries += 1
        return self.backend.recover(digest, rs, recid, compressed)

    def verify_request(self, address: str, method: object, target: object,
                       date_header: object, authorization: object, body: bytes,
                       now: float) -> bytes:
        """Authenticate one request-bound (DATASERV-V2) request; returns the signed
        message. See :mod:`dataserv.identity.v2`."""
        from dataserv.identity import v2  # v2 builds on this module

        return v2.verify(self, self.server_address, self.auth_timeout, address, method,
                         target, date_header, authorization, body, now)

    def verify(
        self,
        address: str,
        date_header: Union[bytes, str, None],
        authorization_header: Union[bytes, str, None],
        now: float,
    ) -> None:
        """Authenticate one request, or raise `AuthenticationFailed`.

        `address` is the farmer id the request claims (address or nodeid),
        the headers are the values as sent (None if absent), and `now` is the
        server's Unix time, read once by the caller.  No exception other
        than `AuthenticationFailed` escapes, whatever the header values.
        """
        date_text = _header_text(date_header, _MAX_DATE_LENGTH, "Date")
        signature_text = _header_text(
            authorization_header, _MAX_AUTHORIZATION_LENGTH, "Authorization"
        )
        key = (address, date_text, signature_text)
        cache = self._cache
        try:
            date_timestamp = cache.get(key)
        except TypeError:
            # An unhashable address; it will be rejected below.
            date_timestamp = None
        if date_timestamp is not None:
            # Identical headers were verified before; only the clock can
            # have made them invalid since.
            _check_window(date_timestamp, now, self.auth_timeout)
            cache.move_to_end(key)
            self.cache_hits += 1
            return

        expected = _expected_hash160(address)
        date_timestamp = _parse_date(date_text)
        # The window is checked before the expensive recovery so stale or
        # replayed headers are cheap to turn away.
        _check_window(date_timestamp, now, self.auth_timeout)
        digest = message_digest(self._prefix + date_text)
        self.recoveries += 1
        if _recovered_hash160(self.backend, digest, signature_text) != expected:
            raise AuthenticationFailed("signature does not match the address")

        if self.cache_size:
            cache[key] = date_timestamp
            if len(cache) > self.cache_size:
                cache.popitem(last=False)
