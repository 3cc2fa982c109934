"""Tests for :mod:`dataserv.identity.auth`."""

import base64
import datetime
import email.utils
import hashlib
import os
import random
import time

from twisted.trial.unittest import SynchronousTestCase

from dataserv.identity.addresses import hash160, nodeid_to_address
from dataserv.identity.auth import (
    SECP256K1_ORDER,
    AuthenticationFailed,
    Verifier,
    _compact_size,
    available_backends,
    get_backend,
    message_digest,
    verify_message,
)
from dataserv.identity.signing import FarmerKey, headers_for

# The widely published example of a Bitcoin signed message.
KNOWN_ADDRESS = "1F3sAm6ZtwLAUnj7d38pGFxtP3RVEvtsbV"
KNOWN_MESSAGE = "This is an example of a signed message."
KNOWN_SIGNATURE = "H9L5yLFjti0QTHhPyFrZCT1V/MMnBtXKmoiKDZ78NDBjERki6ZTQZdSMCtkgoNmp17By9ItJr8o7ChX0XxY91nk="

# 2023-11-14 22:13:20 UTC, a fixed server clock for the tests.
T = 1700000000
FARMER = FarmerKey.from_seed(b"test farmer")
OTHER_FARMER = FarmerKey.from_seed(b"another farmer")
SERVER_ADDRESS = FarmerKey.from_seed(b"test server").address

_P = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F


def date_utc(timestamp):
    """Format `timestamp` the way `formatdate()` does for UTC: "-0000"."""
    return email.utils.formatdate(timestamp)


def date_gmt(timestamp):
    """Format `timestamp` with the "GMT" zone name."""
    return email.utils.formatdate(timestamp, usegmt=True)


def date_plus_one(timestamp):
    """Format `timestamp` in a "+0100" zone."""
    zone = datetime.timezone(datetime.timedelta(hours=1))
    return email.utils.format_datetime(datetime.datetime.fromtimestamp(timestamp, zone))


def make_headers(timestamp, key=FARMER, formatter=date_utc, server=SERVER_ADDRESS):
    """Signed headers for a request made at `timestamp`."""
    headers = headers_for(key, server, formatter(timestamp))
    return headers[b"Date"], headers[b"Authorization"]


def sign_uncompressed(seed, message):
    """Sign `message` with an uncompressed key, by hand with ecdsa.

    Returns the address of the uncompressed key and the base64 signature.
    """
    from ecdsa import SECP256k1, SigningKey
    from ecdsa.util import sigencode_strings

    secret = hashlib.sha256(seed).digest()
    signing_key = SigningKey.from_string(secret, curve=SECP256k1)
    public_key = signing_key.get_verifying_key().to_string("uncompressed")
    digest = message_digest(message)
    r, s = signing_key.sign_digest_deterministic(
        digest, hashfunc=hashlib.sha256, sigencode=sigencode_strings
    )
    backend = get_backend("ecdsa")
    for recid in range(4):
        if backend.recover(digest, r + s, recid, False) == public_key:
            signature = bytes((27 + recid,)) + r + s
            address = nodeid_to_address(hash160(public_key).hex())
            return address, base64.b64encode(signature).decode("ascii")
    raise AssertionError("no recovery id found")


def forge(header, r, s):
    """Build a base64 compact signature from its parts."""
    return base64.b64encode(
        bytes((header,)) + r.to_bytes(32, "big") + s.to_bytes(32, "big")
    )


def _x_not_on_curve():
    # The smallest x with no point on the curve (x^3 + 7 a non-residue).
    x = 1
    while pow((x**3 + 7) % _P, (_P - 1) // 2, _P) == 1:
        x += 1
    return x


def _is_x_on_curve(x):
    return pow((x**3 + 7) % _P, (_P - 1) // 2, _P) == 1


def _small_overflow_r():
    # The smallest r for which r + n, but not r, is the x coordinate of a
    # curve point: recovery ids 2 and 3 work there, 0 and 1 do not.
    r = 1
    while not (_is_x_on_curve(r + SECP256K1_ORDER) and not _is_x_on_curve(r)):
        r += 1
    return r


class CountingBackend:
    """Wraps a backend and counts recoveries."""

    def __init__(self, wrapped):
        self.wrapped = wrapped
        self.name = wrapped.name
        self.calls = 0

    def recover(self, *args):
        self.calls += 1
        return self.wrapped.recover(*args)


class ExplodingBackend:
    """A backend whose recovery raises an arbitrary exception."""

    name = "exploding"

    def __init__(self, result=None, exception=None):
        self.result = result
        self.exception = exception

    def recover(self, *args):
        if self.exception is not None:
            raise self.exception
        return self.result


class MessageDigestTests(SynchronousTestCase):
    """Tests for `message_digest` and its length prefix."""

    def test_compact_size(self):
        """Lengths use Bitcoin's CompactSize encoding."""
        self.assertEqual(_compact_size(0), b"\x00")
        self.assertEqual(_compact_size(0xFC), b"\xfc")
        self.assertEqual(_compact_size(0xFD), b"\xfd\xfd\x00")
        self.assertEqual(_compact_size(0xFFFF), b"\xfd\xff\xff")
        self.assertEqual(_compact_size(0x10000), b"\xfe\x00\x00\x01\x00")
        self.assertEqual(
            _compact_size(0x100000000), b"\xff" + (1 << 32).to_bytes(8, "little")
        )

    def test_digest(self):
        """The digest is double SHA-256 over magic, length and UTF-8 message."""
        message = "caf\u00e9"
        data = b"\x18Bitcoin Signed Message:\n" + b"\x05" + message.encode("utf-8")
        expected = hashlib.sha256(hashlib.sha256(data).digest()).digest()
        self.assertEqual(message_digest(message), expected)
        self.assertEqual(message_digest(message.encode("utf-8")), expected)


class BackendSelectionTests(SynchronousTestCase):
    """Tests for choosing backends."""

    def test_available(self):
        """ecdsa is always available and listed last; names are known ones."""
        names = available_backends()
        self.assertEqual(names[-1], "ecdsa")
        self.assertTrue(set(names) <= {"coincurve", "ecdsa"})

    def test_default_is_fastest(self):
        """With no name, the first available backend is used."""
        self.assertEqual(get_backend().name, available_backends()[0])
        self.assertEqual(Verifier(SERVER_ADDRESS).backend.name, available_backends()[0])

    def test_unknown(self):
        """An unknown backend name is a ValueError."""
        self.assertRaises(ValueError, get_backend, "openssl")
        self.assertRaises(ValueError, Verifier, SERVER_ADDRESS, backend="openssl")

    def test_bad_arguments(self):
        """Nonsensical Verifier arguments are refused."""
        self.assertRaises(TypeError, Verifier, b"1abc")
        self.assertRaises(ValueError, Verifier, SERVER_ADDRESS, auth_timeout=0)
        self.assertRaises(ValueError, Verifier, SERVER_ADDRESS, cache_size=-1)


class BackendTestsMixin:
    """Tests run against each backend; subclasses set `backend_name`."""

    backend_name = None

    def verifier(self, **kwargs):
        """A `Verifier` on this backend."""
        kwargs.setdefault("backend", self.backend_name)
        return Verifier(SERVER_ADDRESS, **kwargs)

    def assertFails(self, verifier, address, date, authorization, now=T):
        """Verification fails with `AuthenticationFailed` (and nothing else)."""
        return self.assertRaises(
            AuthenticationFailed, verifier.verify, address, date, authorization, now
        )

    # verify_message

    def test_known_vector(self):
        """The published example verifies."""
        self.assertTrue(
            verify_message(
                KNOWN_ADDRESS, KNOWN_MESSAGE, KNOWN_SIGNATURE, self.backend_name
            )
        )

    def test_known_vector_tampered(self):
        """The example fails for another message or address."""
        self.assertFalse(
            verify_message(
                KNOWN_ADDRESS, KNOWN_MESSAGE + " ", KNOWN_SIGNATURE, self.backend_name
            )
        )
        self.assertFalse(
            verify_message(
                FARMER.address, KNOWN_MESSAGE, KNOWN_SIGNATURE, self.backend_name
            )
        )

    def test_verify_message_garbage(self):
        """verify_message returns False for garbage rather than raising."""
        for address, signature in [
            ("nonsense", KNOWN_SIGNATURE),
            (KNOWN_ADDRESS, "nonsense"),
            (KNOWN_ADDRESS, None),
            (KNOWN_ADDRESS, "\u00e9" * 88),
        ]:
            self.assertFalse(
                verify_message(address, KNOWN_MESSAGE, signature, self.backend_name)
            )

    def test_ecdsa_signature(self):
        """A signature from the pure-Python signer verifies."""
        signature = FARMER.sign_message("hello")
        self.assertTrue(
            verify_message(FARMER.address, "hello", signature, self.backend_name)
        )

    def test_coincurve_signature(self):
        """A signature from the coincurve signer verifies."""
        if "coincurve" not in available_backends():
            raise self.skipTest("coincurve is not installed")
        signature = FARMER.sign_message_fast("hello")
        self.assertTrue(
            verify_message(FARMER.address, "hello", signature, self.backend_name)
        )

    def test_long_message(self):
        """Messages over 252 bytes (three byte length prefix) verify."""
        message = "x" * 300 + "\u00e9"
        signature = FARMER.sign_message(message)
        self.assertTrue(
            verify_message(FARMER.address, message, signature, self.backend_name)
        )

    def test_uncompressed(self):
        """Signatures with an uncompressed key (header 27 to 30) verify against
        the uncompressed key's address, and not with the compressed flag.
        """
        address, signature = sign_uncompressed(b"uncompressed", "hello")
        raw = base64.b64decode(signature)
        self.assertIn(raw[0], range(27, 31))
        self.assertTrue(verify_message(address, "hello", signature, self.backend_name))
        flipped = base64.b64encode(bytes((raw[0] + 4,)) + raw[1:])
        self.assertFalse(verify_message(address, "hello", flipped, self.backend_name))

    def test_high_s(self):
        """The high-s twin of a signature (s replaced by n - s, recovery id
        parity flipped) recovers the same key.
        """
        raw = base64.b64decode(FARMER.sign_message("twin"))
        recid = raw[0] - 31
        r = int.from_bytes(raw[1:33], "big")
        s = int.from_bytes(raw[33:], "big")
        twin = forge(31 + (recid ^ 1), r, SECP256K1_ORDER - s)
        self.assertTrue(verify_message(FARMER.address, "twin", twin, self.backend_name))

    def test_wrong_recovery_id(self):
        """A wrong recovery id recovers another key or nothing."""
        raw = base64.b64decode(FARMER.sign_message("recid"))
        for header in range(31, 35):
            if header == raw[0]:
                continue
            signature = base64.b64encode(bytes((header,)) + raw[1:])
            self.assertFalse(
                verify_message(FARMER.address, "recid", signature, self.backend_name)
            )

    def test_recovery_id_is_parity_of_r(self):
        """Recovery ids 0 and 1 stand for the point R with an even and an odd
        y coordinate.
        """
        from ecdsa import SECP256k1, SigningKey
        from ecdsa.util import sigencode_strings

        secret = hashlib.sha256(b"parity").digest()
        signing_key = SigningKey.from_string(secret, curve=SECP256k1)
        public_key = signing_key.get_verifying_key().to_string("compressed")
        digest = message_digest("parity")
        backend = get_backend(self.backend_name)
        parities = set()
        for nonce in range(1, 9):
            r, s = signing_key.sign_digest(
                digest, k=nonce, sigencode=sigencode_strings
            )
            parity = (SECP256k1.generator * nonce).y() & 1
            parities.add(parity)
            self.assertEqual(backend.recover(digest, r + s, parity, True), public_key)
            self.assertNotEqual(
                backend.recover(digest, r + s, parity ^ 1, True), public_key
            )
        self.assertEqual(parities, {0, 1})

    def test_recovery_id_overflow(self):
        """Recovery ids 2 and 3 take r plus the group order as R's x; the keys
        recovered that way verify the signature, and 0 and 1 recover none.
        """
        from ecdsa import SECP256k1, VerifyingKey

        r, s = _small_overflow_r(), 12345
        rs = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        digest = message_digest("overflow")
        keys = set()
        for recid in (2, 3):
            public_key = get_backend(self.backend_name).recover(digest, rs, recid, True)
            # The library's verification (R'.x mod n == r) agrees.
            VerifyingKey.from_string(public_key, curve=SECP256k1).verify_digest(
                rs, digest
            )
            address = nodeid_to_address(hash160(public_key).hex())
            self.assertTrue(
                verify_message(address, "overflow", forge(31 + recid, r, s), self.backend_name)
            )
            self.assertFalse(
                verify_message(address, "overflow", forge(31 + (recid & 1), r, s), self.backend_name)
            )
            keys.add(public_key)
        self.assertEqual(len(keys), 2)

    # Verifier: acceptance

    def test_valid_headers(self):
        """Correct headers, as bytes or as str, are accepted."""
        date, authorization = make_headers(T)
        self.verifier().verify(FARMER.address, date, authorization, T)
        self.verifier().verify(
            FARMER.address, date.decode(), authorization.decode(), T + 0.9
        )

    def test_nodeid(self):
        """The farmer may be named by nodeid."""
        date, authorization = make_headers(T)
        self.verifier().verify(FARMER.nodeid, date, authorization, T)
        self.verifier().verify(FARMER.nodeid.upper(), date, authorization, T)

    def test_date_formats(self):
        """Dates in "-0000", "GMT" and "+0100" form for the same instant are accepted
        and read as the same time.
        """
        for formatter in [date_utc, date_gmt, date_plus_one]:
            date, authorization = make_headers(T, formatter=formatter)
            self.verifier().verify(FARMER.address, date, authorization, T)
            # Thirty seconds later the same instant is exactly out of window.
            failure = self.assertFails(
                self.verifier(), FARMER.address, date, authorization, T + 30
            )
            self.assertEqual(failure.skew, 30, date)
        self.assertIn("-0000", date_utc(T))
        self.assertIn("GMT", date_gmt(T))
        self.assertIn("+0100", date_plus_one(T))

    def test_local_time_date(self):
        """A date made with `formatdate(localtime=True)` is accepted."""
        date, authorization = make_headers(
            T, formatter=lambda t: email.utils.formatdate(t, localtime=True)
        )
        self.verifier().verify(FARMER.address, date, authorization, T)

    def test_minus_zero_in_other_zone(self):
        """A "-0000" date means UTC even when the server's zone is not UTC."""
        if not hasattr(time, "tzset"):
            raise self.skipTest("time.tzset is unavailable")
        old = os.environ.get("TZ")

        def restore():
            if old is None:
                os.environ.pop("TZ", None)
            else:
                os.environ["TZ"] = old
            time.tzset()

        self.addCleanup(restore)
        os.environ["TZ"] = "EST+05EDT,M3.2.0,M11.1.0"
        time.tzset()
        date, authorization = make_headers(T, formatter=date_utc)
        self.verifier().verify(FARMER.address, date, authorization, T)

    def test_client_one_second_fast(self):
        """A client clock one second ahead is accepted with a small skew (the
        old `timedelta.seconds` bug made this look almost a day off).
        """
        date, authorization = make_headers(T + 1)
        self.verifier().verify(FARMER.address, date, authorization, T)
        self.verifier().verify(FARMER.address, date, authorization, T + 0.5)

    def test_client_one_second_slow(self):
        """A client clock one second behind is accepted."""
        date, authorization = make_headers(T - 1)
        self.verifier().verify(FARMER.address, date, authorization, T)

    def test_window_edges(self):
        """auth_timeout - 1 seconds off is accepted either way; exactly
        auth_timeout off is rejected, with the signed skew reported.
        """
        verifier = self.verifier(auth_timeout=30)
        for offset in (-29, 29):
            date, authorization = make_headers(T + offset)
            verifier.verify(FARMER.address, date, authorization, T)
        date, authorization = make_headers(T - 30)
        failure = self.assertFails(verifier, FARMER.address, date, authorization, T)
        self.assertEqual(failure.skew, 30)
        date, authorization = make_headers(T + 30)
        failure = self.assertFails(verifier, FARMER.address, date, authorization, T)
        self.assertEqual(failure.skew, -30)

    def test_whole_seconds(self):
        """The server time is compared in whole seconds."""
        date, authorization = make_headers(T)
        self.verifier().verify(FARMER.address, date, authorization, T + 29.99)
        failure = self.assertFails(
            self.verifier(), FARMER.address, date, authorization, T + 30.0
        )
        self.assertEqual(failure.skew, 30)

    def test_far_off_skew(self):
        """A day-old date reports a day of skew."""
        date, authorization = make_headers(T - 86400)
        failure = self.assertFails(
            self.verifier(), FARMER.address, date, authorization, T
        )
        self.assertEqual(failure.skew, 86400)

    def test_other_timeout(self):
        """auth_timeout is honoured."""
        date, authorization = make_headers(T - 5)
        self.verifier(auth_timeout=10).verify(FARMER.address, date, authorization, T)
        failure = self.assertFails(
            self.verifier(auth_timeout=5), FARMER.address, date, authorization, T
        )
        self.assertEqual(failure.skew, 5)

    # Verifier: failures

    def test_missing_headers(self):
        """A missing header fails."""
        date, authorization = make_headers(T)
        for pair in [(None, authorization), (date, None), (None, None)]:
            failure = self.assertFails(self.verifier(), FARMER.address, *pair)
            self.assertIsNone(failure.skew)

    def test_oversized_headers(self):
        """Dates over 100 and Authorizations over 200 bytes fail."""
        date, authorization = make_headers(T)
        self.assertFails(
            self.verifier(),
            FARMER.address,
            date + b" " * (101 - len(date)),
            authorization,
        )
        self.assertFails(
            self.verifier(), FARMER.address, date, authorization + b"=" * 113
        )
        self.assertFails(
            self.verifier(), FARMER.address, date.decode() + " " * 100, authorization
        )
        self.assertFails(self.verifier(), FARMER.address, b"x" * 10**6, b"x" * 10**6)

    def test_non_ascii(self):
        """Non-ASCII header values fail, as bytes or str."""
        date, authorization = make_headers(T)
        self.assertFails(self.verifier(), FARMER.address, date + b"\xff", authorization)
        self.assertFails(
            self.verifier(), FARMER.address, date, b"\xc3\xa9" + authorization[2:]
        )
        self.assertFails(
            self.verifier(), FARMER.address, date.decode() + "\u00e9", authorization
        )
        self.assertFails(
            self.verifier(), FARMER.address, date, "\u00e9" + authorization.decode()[1:]
        )

    def test_wrong_types(self):
        """Header values that are neither bytes nor str fail."""
        date, authorization = make_headers(T)
        self.assertFails(self.verifier(), FARMER.address, 12, authorization)
        self.assertFails(self.verifier(), FARMER.address, date, [authorization])

    def test_bad_base64(self):
        """Authorization that is not strict base64 fails."""
        date, authorization = make_headers(T)
        for value in [
            b"!!!!",
            authorization[:-1],
            b" " + authorization,
            authorization[:-2] + b"*=",
        ]:
            self.assertFails(self.verifier(), FARMER.address, date, value)

    def test_wrong_length(self):
        """Signatures that are not 65 bytes fail."""
        date, authorization = make_headers(T)
        raw = base64.b64decode(authorization)
        for value in [raw[:-1], raw + b"\x00", b"", raw * 2]:
            self.assertFails(
                self.verifier(), FARMER.address, date, base64.b64encode(value)
            )

    def test_bad_header_byte(self):
        """Header bytes outside 27 to 34 fail."""
        date, authorization = make_headers(T)
        raw = base64.b64decode(authorization)
        for header in [0, 26, 35, 255]:
            value = base64.b64encode(bytes((header,)) + raw[1:])
            self.assertFails(self.verifier(), FARMER.address, date, value)

    def test_r_s_out_of_range(self):
        """r or s of zero, n, or above n fail before recovery."""
        backend = CountingBackend(get_backend(self.backend_name))
        verifier = self.verifier(backend=backend)
        date, authorization = make_headers(T)
        raw = base64.b64decode(authorization)
        r = int.from_bytes(raw[1:33], "big")
        s = int.from_bytes(raw[33:], "big")
        n = SECP256K1_ORDER
        for bad_r, bad_s in [
            (0, s),
            (r, 0),
            (n, s),
            (r, n),
            (2**256 - 1, s),
            (r, 2**256 - 1),
        ]:
            self.assertFails(
                verifier, FARMER.address, date, forge(raw[0], bad_r, bad_s)
            )
        self.assertEqual(backend.calls, 0)

    def test_recovery_failure(self):
        """Signatures from which no key can be recovered fail."""
        date, _ = make_headers(T)
        # x = r + n is beyond the field for recovery ids 2 and 3 here.
        for header in (33, 34, 29, 30):
            self.assertFails(
                self.verifier(),
                FARMER.address,
                date,
                forge(header, SECP256K1_ORDER - 1, 5),
            )
        # No curve point has this x coordinate.
        self.assertFails(
            self.verifier(), FARMER.address, date, forge(31, _x_not_on_curve(), 5)
        )

    def test_wrong_key(self):
        """A valid signature by another key fails, without skew."""
        date, authorization = make_headers(T, key=OTHER_FARMER)
        failure = self.assertFails(self.verifier(), FARMER.address, date, authorization)
        self.assertIsNone(failure.skew)

    def test_wrong_server(self):
        """Headers signed for another server fail."""
        date, authorization = make_headers(T, server=OTHER_FARMER.address)
        self.assertFails(self.verifier(), FARMER.address, date, authorization)

    def test_date_altered(self):
        """The Date is signed exactly as sent; reformatting it breaks the
        signature even when it means the same instant.
        """
        _, authorization = make_headers(T, formatter=date_utc)
        self.assertFails(self.verifier(), FARMER.address, date_gmt(T), authorization)

    def test_unparseable_date(self):
        """Dates that do not parse fail without skew."""
        _, authorization = make_headers(T)
        for date in [
            "",
            "yesterday",
            "Tue, 14 Nov",
            "Tue, 14 Foo 2023 22:13:20 +0000",
            "Tue, 14 Nov 99999 22:13:20 +0000",
            "Tue, 14 Nov 2023 xx:13:20 +0000",
        ]:
            failure = self.assertFails(
                self.verifier(), FARMER.address, date, authorization
            )
            self.assertIsNone(failure.skew, date)

    def test_invalid_address(self):
        """An invalid farmer address fails."""
        date, authorization = make_headers(T)
        for address in ["", "1" * 100, "\u00e9", None, ["x"], SERVER_ADDRESS[:-1]]:
            self.assertFails(self.verifier(), address, date, authorization)

    def test_backend_exception(self):
        """Whatever a backend raises, or returns, only `AuthenticationFailed`
        escapes.
        """
        date, authorization = make_headers(T)
        for backend in [
            ExplodingBackend(exception=MemoryError()),
            ExplodingBackend(exception=RuntimeError()),
            ExplodingBackend(result=None),
            ExplodingBackend(result="not bytes"),
        ]:
            self.assertFails(
                Verifier(SERVER_ADDRESS, backend=backend),
                FARMER.address,
                date,
                authorization,
            )

    def test_fuzz(self):
        """Random and mutated headers raise nothing but `AuthenticationFailed`."""
        rng = random.Random(self.backend_name)
        verifier = self.verifier()
        date, authorization = make_headers(T)
        accepted = 0

        def attempt(date_value, authorization_value):
            nonlocal accepted
            try:
                verifier.verify(FARMER.address, date_value, authorization_value, T)
            except AuthenticationFailed:
                pass
            else:
                accepted += 1

        for _ in range(150):
            attempt(
                rng.randbytes(rng.randrange(120)), rng.randbytes(rng.randrange(220))
            )
            attempt(date, rng.randbytes(rng.randrange(220)))
            attempt(date, base64.b64encode(rng.randbytes(rng.choice([64, 65, 66]))))
            attempt(rng.randbytes(rng.randrange(40)), authorization)

        alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \x00\xff"
        for _ in range(150):
            mutated = bytearray(authorization)
            mutated[rng.randrange(len(mutated))] = rng.choice(alphabet)
            attempt(date, bytes(mutated))
            mutated = bytearray(date)
            mutated[rng.randrange(len(mutated))] = rng.choice(alphabet)
            attempt(bytes(mutated), authorization)
            raw = bytearray(base64.b64decode(authorization))
            raw[rng.randrange(65)] ^= 1 << rng.randrange(8)
            attempt(date, base64.b64encode(raw))

        # Only mutations that leave the signed bytes unchanged (such as the
        # unused low bits of the last base64 digit) can be accepted.
        self.assertLess(accepted, 30)

    # Cache

    def test_cache_hit(self):
        """Identical headers are verified once."""
        backend = CountingBackend(get_backend(self.backend_name))
        verifier = self.verifier(backend=backend)
        date, authorization = make_headers(T)
        verifier.verify(FARMER.address, date, authorization, T)
        verifier.verify(FARMER.address, date, authorization, T)
        verifier.verify(FARMER.address, date.decode(), authorization.decode(), T + 1)
        self.assertEqual(backend.calls, 1)

    def test_cache_expiry(self):
        """A cached entry does not let an expired Date through."""
        backend = CountingBackend(get_backend(self.backend_name))
        verifier = self.verifier(backend=backend)
        date, authorization = make_headers(T)
        verifier.verify(FARMER.address, date, authorization, T)
        failure = self.assertFails(
            verifier, FARMER.address, date, authorization, T + 30
        )
        self.assertEqual(failure.skew, 30)
        failure = self.assertFails(
            verifier, FARMER.address, date, authorization, T - 30
        )
        self.assertEqual(failure.skew, -30)
        self.assertEqual(backend.calls, 1)

    def test_failures_not_cached(self):
        """Failed verifications are repeated in full."""
        backend = CountingBackend(get_backend(self.backend_name))
        verifier = self.verifier(backend=backend)
        date, authorization = make_headers(T, key=OTHER_FARMER)
        self.assertFails(verifier, FARMER.address, date, authorization)
        self.assertFails(verifier, FARMER.address, date, authorization)
        self.assertEqual(backend.calls, 2)

    def test_cache_key_includes_address(self):
        """A cached success for one address does not vouch for another."""
        verifier = self.verifier()
        date, authorization = make_headers(T)
        verifier.verify(FARMER.address, date, authorization, T)
        self.assertFails(verifier, OTHER_FARMER.address, date, authorization)

    def test_cache_bounded(self):
        """The cache keeps at most cache_size entries, evicting the least
        recently used.
        """
        backend = CountingBackend(get_backend(self.backend_name))
        verifier = self.verifier(backend=backend, cache_size=3)
        requests = [make_headers(T + offset) for offset in range(6)]
        for date, authorization in requests:
            verifier.verify(FARMER.address, date, authorization, T)
            self.assertLessEqual(len(verifier._cache), 3)
        self.assertEqual(backend.calls, 6)
        # The newest entries are still cached...
        verifier.verify(FARMER.address, *requests[5], T)
        verifier.verify(FARMER.address, *requests[3], T)
        self.assertEqual(backend.calls, 6)
        # ...and the oldest was evicted.
        verifier.verify(FARMER.address, *requests[0], T)
        self.assertEqual(backend.calls, 7)
        # requests[3] was used recently, so requests[4] went instead.
        verifier.verify(FARMER.address, *requests[3], T)
        self.assertEqual(backend.calls, 7)
        verifier.verify(FARMER.address, *requests[4], T)
        self.assertEqual(backend.calls, 8)
        self.assertEqual(len(verifier._cache), 3)

    def test_cache_disabled(self):
        """cache_size=0 verifies every time and stores nothing."""
        backend = CountingBackend(get_backend(self.backend_name))
        verifier = self.verifier(backend=backend, cache_size=0)
        date, authorization = make_headers(T)
        verifier.verify(FARMER.address, date, authorization, T)
        verifier.verify(FARMER.address, date, authorization, T)
        self.assertEqual(backend.calls, 2)
        self.assertEqual(len(verifier._cache), 0)

    def test_deterministic_burst(self):
        """Two requests signed in the same second carry identical headers and
        both succeed.
        """
        first = make_headers(T)
        second = make_headers(T)
        self.assertEqual(first, second)
        verifier = self.verifier()
        verifier.verify(FARMER.address, *first, T)
        verifier.verify(FARMER.address, *second, T)


class CoincurveBackendTests(BackendTestsMixin, SynchronousTestCase):
    """Backend tests with coincurve."""

    backend_name = "coincurve"
    if "coincurve" not in available_backends():
        skip = "coincurve is not installed"


class EcdsaBackendTests(BackendTestsMixin, SynchronousTestCase):
    """Backend tests with the pure-Python ecdsa package."""

    backend_name = "ecdsa"

    def test_candidate_at_infinity(self):
        """A crafted signature for which one candidate key is the point at
        infinity recovers nothing, and raises nothing.

        The ecdsa library computes both candidates and fails on that one;
        libsecp256k1 still recovers the other (recovery id 1 here), so this
        is the one input on which the backends differ.
        """
        from ecdsa import SECP256k1

        digest = message_digest("infinity")
        # R = G and s = e make s R - e G the point at infinity.
        r = SECP256k1.generator.x()
        s = int.from_bytes(digest, "big") % SECP256K1_ORDER
        rs = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        backend = get_backend("ecdsa")
        for recid in range(4):
            for compressed in (True, False):
                self.assertIsNone(backend.recover(digest, rs, recid, compressed))


class CrossBackendTests(SynchronousTestCase):
    """Both backends agree with each other."""

    if "coincurve" not in available_backends():
        skip = "coincurve is not installed"

    def test_recover_same_keys(self):
        """For signatures from both signers, compressed and uncompressed, and
        every recovery id, both backends recover the same key (or both
        fail).
        """
        coincurve_backend = get_backend("coincurve")
        ecdsa_backend = get_backend("ecdsa")
        rng = random.Random(256)
        for index in range(10):
            key = FarmerKey.from_seed(rng.randbytes(16))
            message = f"message {index}"
            digest = message_digest(message)
            for signature in (
                key.sign_message(message),
                key.sign_message_fast(message),
            ):
                rs = base64.b64decode(signature)[1:]
                for recid in range(4):
                    for compressed in (True, False):
                        try:
                            expected = coincurve_backend.recover(
                                digest, rs, recid, compressed
                            )
                        except ValueError:
                            expected = None
                        self.assertEqual(
                            ecdsa_backend.recover(digest, rs, recid, compressed),
                            expected,
                        )

    def test_sign_ecdsa_verify_coincurve(self):
        """A signature made with ecdsa verifies with coincurve."""
        date = date_utc(T)
        signature = FARMER.sign_message(SERVER_ADDRESS + " " + date)
        Verifier(SERVER_ADDRESS, backend="coincurve").verify(
            FARMER.address, date, signature, T
        )

    def test_sign_coincurve_verify_ecdsa(self):
        """A signature made with coincurve verifies with ecdsa."""
        date = date_utc(T)
        signature = FARMER.sign_message_fast(SERVER_ADDRESS + " " + date)
        Verifier(SERVER_ADDRESS, backend="ecdsa").verify(
            FARMER.address, date, signature, T
        )
