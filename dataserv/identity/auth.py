"""
Verification of Bitcoin signed-message authentication headers.

A farmer proves it owns its address by signing, with the address's key, the
text C{"<server address> <Date header>"} in Bitcoin's signed-message format
and sending the 65-byte compact recoverable signature, base64 encoded, in the
C{Authorization} header.  The server recovers the public key from the
signature, hashes it to an address and compares; the C{Date} header must lie
within C{auth_timeout} seconds of the server clock so captured headers cannot
be replayed later.

Two interchangeable elliptic-curve backends exist: C{coincurve} (libsecp256k1,
fast) and C{ecdsa} (pure Python, slow but always importable).
"""

import base64
import binascii
import collections
import email.utils
import hashlib

from dataserv.identity.addresses import InvalidAddress, farmer_id_hash160, hash160

__all__ = [
    "AuthenticationFailed",
    "Verifier",
    "available_backends",
    "get_backend",
    "message_digest",
    "verify_message",
    "SECP256K1_ORDER",
]

# Group order n and field prime p of secp256k1.
SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_SECP256K1_P = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F

_MESSAGE_MAGIC = b"\x18Bitcoin Signed Message:\n"

# Limits applied before any parsing so oversized input costs nothing.  A real
# Date is about 31 bytes and a real Authorization exactly 88.
_MAX_DATE_LENGTH = 100
_MAX_AUTHORIZATION_LENGTH = 200
_SIGNATURE_LENGTH = 65


class AuthenticationFailed(Exception):
    """
    The request's authentication headers were not acceptable.

    @ivar reason: A short human readable explanation.
    @ivar skew: When the Date parsed but lay outside the accepted window, the
        server time minus the Date's time in whole seconds (positive means
        the client clock is behind); otherwise C{None}.
    """

    def __init__(self, reason, skew=None):
        super().__init__(reason)
        self.reason = reason
        self.skew = skew


def _compact_size(length):
    # Bitcoin's CompactSize length prefix.
    if length < 0xFD:
        return bytes((length,))
    if length <= 0xFFFF:
        return b"\xfd" + length.to_bytes(2, "little")
    if length <= 0xFFFFFFFF:
        return b"\xfe" + length.to_bytes(4, "little")
    return b"\xff" + length.to_bytes(8, "little")


def message_digest(message):
    """
    Compute the digest that a Bitcoin signed message signs.

    @param message: The message as C{str} (encoded as UTF-8) or C{bytes}.
    @return: The 32-byte double SHA-256 of the magic prefix, the CompactSize
        message length and the message.
    """
    if isinstance(message, str):
        message = message.encode("utf-8")
    data = _MESSAGE_MAGIC + _compact_size(len(message)) + message
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


# --------------------------------------------------------------------------
# Backends.  Each has a name and a recover(digest, rs, recid, compressed)
# method returning the serialised public key, or None / raising on failure.
# Callers have already checked 0 < r, s < n and 0 <= recid <= 3.


class _CoincurveBackend:
    """
    Public key recovery with libsecp256k1 through coincurve.
    """

    name = "coincurve"

    def __init__(self):
        import coincurve

        self._from_signature = coincurve.PublicKey.from_signature_and_message

    def recover(self, digest, rs, recid, compressed):
        """
        Recover the public key that made a signature.

        @param digest: The 32-byte signed digest.
        @param rs: r and s, 32 bytes each, big-endian.
        @param recid: The recovery id, 0 to 3.
        @param compressed: Whether to serialise the key compressed.
        @return: The serialised public key.
        """
        # coincurve wants r || s || recid and must not hash the digest again.
        key = self._from_signature(rs + bytes((recid,)), digest, hasher=None)
        return key.format(compressed=compressed)


class _EcdsaBackend:
    """
    Public key recovery in pure Python on top of the ecdsa package's curve
    arithmetic.
    """

    name = "ecdsa"

    def __init__(self):
        from ecdsa import SECP256k1
        from ecdsa.ellipticcurve import INFINITY, PointJacobi

        self._curve = SECP256k1.curve
        self._generator = SECP256k1.generator
        self._infinity = INFINITY
        self._point = PointJacobi

    def recover(self, digest, rs, recid, compressed):
        """
        Recover the public key that made a signature.

        Computes the point R from r and the recovery id, then
        Q = r^-1 (s R - e G), as in SEC 1 section 4.1.6.

        @param digest: The 32-byte signed digest.
        @param rs: r and s, 32 bytes each, big-endian.
        @param recid: The recovery id, 0 to 3.
        @param compressed: Whether to serialise the key compressed.
        @return: The serialised public key, or C{None} if there is none.
        """
        n = SECP256K1_ORDER
        p = _SECP256K1_P
        r = int.from_bytes(rs[:32], "big")
        s = int.from_bytes(rs[32:], "big")
        # Recovery ids 2 and 3 mean R's x coordinate overflowed the order.
        x = r + (recid >> 1) * n
        if x >= p:
            return None
        alpha = (pow(x, 3, p) + 7) % p
        # p = 3 (mod 4), so a square root is a single exponentiation.
        beta = pow(alpha, (p + 1) // 4, p)
        if beta * beta % p != alpha:
            return None
        y = beta if (beta & 1) == (recid & 1) else p - beta
        point_r = self._point(self._curve, x, y, 1, n)
        e = int.from_bytes(digest, "big") % n
        r_inv = pow(r, -1, n)
        q = self._generator.mul_add((-e * r_inv) % n, point_r, (s * r_inv) % n)
        q = q.to_affine()
        if q == self._infinity:
            return None
        qx, qy = q.x(), q.y()
        if compressed:
            return bytes((2 + (qy & 1),)) + qx.to_bytes(32, "big")
        return b"\x04" + qx.to_bytes(32, "big") + qy.to_bytes(32, "big")


_BACKEND_CLASSES = {"coincurve": _CoincurveBackend, "ecdsa": _EcdsaBackend}
# Fastest first: the default backend is the first one that imports.
_BACKEND_PREFERENCE = ("coincurve", "ecdsa")


def get_backend(name=None):
    """
    Create a recovery backend.

    @param name: C{"coincurve"}, C{"ecdsa"}, or C{None} for the fastest
        importable one.
    @return: A backend object with C{name} and C{recover()}.
    @raise ValueError: For an unknown name or when nothing is importable.
    @raise ImportError: If the named backend's package is not installed.
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


def available_backends():
    """
    List the backends that can be used in this interpreter.

    @return: Backend names, fastest first.
    """
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


def _header_text(value, limit, name):
    """
    Turn a header value into ASCII text, rejecting absent, oversized or
    non-ASCII values before anything else looks at them.
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


def _parse_date(text):
    """
    Parse an RFC 2822 date to a Unix timestamp, or raise
    L{AuthenticationFailed}.
    """
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


def _parse_signature(text):
    """
    Decode a base64 compact signature into (r||s, recid, compressed), or
    raise L{AuthenticationFailed}.
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


def _recovered_hash160(backend, digest, signature_text):
    """
    Return hash160 of the key that made the signature, or raise
    L{AuthenticationFailed}.
    """
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


def verify_message(address, message, signature_b64, backend=None):
    """
    Check a Bitcoin signed message.

    @param address: The signer's P2PKH address (or nodeid).
    @param message: The signed text.
    @param signature_b64: The base64 compact signature (C{str} or C{bytes}).
    @param backend: A backend name, backend object, or C{None} for the
        default.
    @return: C{True} if the signature is valid for C{address}, else C{False}.
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
    """
    Verifies the Date and Authorization headers of farmer requests.

    @ivar server_address: The server's address, the first part of every
        signed message.
    @ivar auth_timeout: Largest accepted clock difference, in seconds
        (exclusive).
    @ivar backend: The recovery backend object in use.
    @ivar cache_size: How many successful verifications are remembered.
    """

    def __init__(self, server_address, auth_timeout=30, backend=None, cache_size=65536):
        """
        @param server_address: The server's address, as C{str}.
        @param auth_timeout: Seconds; a Date this far or further from the
            server clock is rejected.
        @param backend: C{"coincurve"}, C{"ecdsa"}, C{None} for the fastest
            available, or an object with a C{recover} method like the
            built-in backends (useful for instrumentation).
        @param cache_size: Bound on the verification cache; 0 disables it.
        """
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
        self.backend = backend
        self.cache_size = cache_size
        self._prefix = server_address + " "
        # (address, date, authorization) -> Date timestamp.  Only successful
        # verifications go in, so garbage traffic cannot evict real entries.
        self._cache = collections.OrderedDict()
        # For /metrics: key recoveries run, and requests answered from the cache.
        self.recoveries = 0
        self.cache_hits = 0

    def _check_window(self, date_timestamp, now):
        # Whole seconds, absolute value: a client slightly ahead of the
        # server gives a small negative skew, not a huge positive one.
        skew = int(now) - date_timestamp
        if abs(skew) >= self.auth_timeout:
            raise AuthenticationFailed("Date outside the accepted window", skew=skew)

    def verify(self, address, date_header, authorization_header, now):
        """
        Authenticate one request.

        @param address: The farmer id the request claims (address or nodeid).
        @param date_header: The Date header value as sent (C{bytes} or
            C{str}), or C{None} if absent.
        @param authorization_header: The Authorization header value, or
            C{None} if absent.
        @param now: The server's current Unix time, read once by the caller.
        @raise AuthenticationFailed: For every kind of failure; no other
            exception escapes for any header values.
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
            self._check_window(date_timestamp, now)
            cache.move_to_end(key)
            self.cache_hits += 1
            return

        try:
            expected = farmer_id_hash160(address)
        except InvalidAddress:
            raise AuthenticationFailed("invalid farmer address") from None
        date_timestamp = _parse_date(date_text)
        # The window is checked before the expensive recovery so stale or
        # replayed headers are cheap to turn away.
        self._check_window(date_timestamp, now)
        digest = message_digest(self._prefix + date_text)
        self.recoveries += 1
        if _recovered_hash160(self.backend, digest, signature_text) != expected:
            raise AuthenticationFailed("signature does not match the address")

        if self.cache_size:
            cache[key] = date_timestamp
            if len(cache) > self.cache_size:
                cache.popitem(last=False)
