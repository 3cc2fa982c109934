"""DATASERV-V2 request-bound authentication: the signed bytes (a fixed vector that the
README repeats), verification, and the replay keys."""

import base64
import email.utils
import hashlib

from twisted.trial.unittest import SynchronousTestCase

from dataserv.identity import replay, v2
from dataserv.identity.auth import SECP256K1_ORDER, AuthenticationFailed, get_backend
from dataserv.identity.signing import FarmerKey, headers_for, v2_headers_for

# The README's test vector, written out here byte by byte (not computed by the code).
VECTOR_SECRET = "c98e7c3c944030275ca1f07dc03c6036e30ec330555acf4f70e974a844ffbb1c"
VECTOR_ADDRESS = "1LorPaLSiTM9hYAGRJkYFWF23rDwyjY2jS"
VECTOR_SERVER = "15uC1tTcVsN3K4wycQ8Bj7m1UqL1GgtX8t"
VECTOR_TARGET = "/api/ping/1LorPaLSiTM9hYAGRJkYFWF23rDwyjY2jS"
VECTOR_DATE = "Fri, 04 Dec 2026 12:00:00 +0000"
VECTOR_NONCE = "0123456789abcdef0123456789abcdef"
VECTOR_MESSAGE = (
    b"dataserv-v2\n"
    b"15uC1tTcVsN3K4wycQ8Bj7m1UqL1GgtX8t\n"
    b"GET\n"
    b"/api/ping/1LorPaLSiTM9hYAGRJkYFWF23rDwyjY2jS\n"
    b"Fri, 04 Dec 2026 12:00:00 +0000\n"
    b"0123456789abcdef0123456789abcdef\n"
    b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
VECTOR_AUTHORIZATION = (
    b"DATASERV-V2 0123456789abcdef0123456789abcdef "
    b"IJnXOhjtvP8nj2D7iUJlaVJOH4hpNWzh7Pz1aDfaItz6Cstw1uZ1/3esXuhNd84GiRD9g0dFVdDL72SyU2Dbyk0=")
# 2026-12-04 12:00:00 UTC
VECTOR_NOW = 1796385600

KEY = FarmerKey(bytes.fromhex(VECTOR_SECRET))
BACKEND = get_backend()


def verify(method="GET", target=VECTOR_TARGET, date=VECTOR_DATE,
           authorization=VECTOR_AUTHORIZATION, body=b"", now=VECTOR_NOW,
           server=VECTOR_SERVER, address=VECTOR_ADDRESS, auth_timeout=30):
    return v2.verify(BACKEND, server, auth_timeout, address, method, target, date,
                     authorization, body, now)


def malleated_signature(signature):
    """The other valid encoding of a base64 compact signature: s -> n - s with the
    other recovery id (anyone can make it from a captured header)."""
    raw = base64.b64decode(signature)
    s = int.from_bytes(raw[33:], "big")
    header = 27 + 4 + ((raw[0] - 31) ^ 1)
    return base64.b64encode(
        bytes((header,)) + raw[1:33] + (SECP256K1_ORDER - s).to_bytes(32, "big"))


def malleated(authorization):
    """A DATASERV-V2 Authorization with its signature malleated."""
    scheme, nonce, signature = authorization.split(b" ")
    return b" ".join((scheme, nonce, malleated_signature(signature)))


class VectorTests(SynchronousTestCase):

    def test_key_of_the_vector(self):
        self.assertEqual(KEY.address, VECTOR_ADDRESS)

    def test_message_bytes(self):
        self.assertEqual(
            v2.message(VECTOR_SERVER, "GET", VECTOR_TARGET, VECTOR_DATE, VECTOR_NONCE,
                       hashlib.sha256(b"").hexdigest()),
            VECTOR_MESSAGE)

    def test_headers_of_the_vector(self):
        headers = v2_headers_for(KEY, VECTOR_SERVER, "GET", VECTOR_TARGET,
                                 date=VECTOR_DATE, nonce=VECTOR_NONCE)
        self.assertEqual(headers, {b"Date": VECTOR_DATE.encode(),
                                   b"Authorization": VECTOR_AUTHORIZATION})

    def test_vector_verifies(self):
        self.assertEqual(verify(), VECTOR_MESSAGE)

    def test_both_backends_agree(self):
        for name in ("coincurve", "ecdsa"):
            self.assertEqual(v2.verify(get_backend(name), VECTOR_SERVER, 30, VECTOR_ADDRESS,
                                       "GET", VECTOR_TARGET, VECTOR_DATE,
                                       VECTOR_AUTHORIZATION, b"", VECTOR_NOW),
                             VECTOR_MESSAGE)

    def test_fresh_nonce_per_request(self):
        one = v2_headers_for(KEY, VECTOR_SERVER, "GET", VECTOR_TARGET, date=VECTOR_DATE)
        two = v2_headers_for(KEY, VECTOR_SERVER, "GET", VECTOR_TARGET, date=VECTOR_DATE)
        self.assertNotEqual(one[b"Authorization"], two[b"Authorization"])
        nonce = one[b"Authorization"].split(b" ")[1]
        self.assertRegex(nonce, rb"^[0-9a-f]{32}$")


class VerifyTests(SynchronousTestCase):
    """Every part of the request is bound: change one and the signature fails."""

    def assertRefused(self, **changes):  # noqa: N802
        with self.assertRaises(AuthenticationFailed) as caught:
            verify(**changes)
        return caught.exception

    def test_other_path(self):
        self.assertRefused(target="/api/height/%s/199999" % VECTOR_ADDRESS)

    def test_nodeid_spelling_of_the_path(self):
        self.assertRefused(target="/api/ping/" + KEY.nodeid)

    def test_added_query(self):
        self.assertRefused(target=VECTOR_TARGET + "?x=1")

    def test_other_method(self):
        self.assertRefused(method="POST")

    def test_other_body(self):
        self.assertRefused(body=b"x")

    def test_other_server(self):
        self.assertRefused(server=FarmerKey.from_seed(b"v2 other server").address)

    def test_other_date_same_second_elsewhere(self):
        self.assertRefused(date="Fri, 04 Dec 2026 13:00:00 +0100")

    def test_other_nonce(self):
        self.assertRefused(authorization=VECTOR_AUTHORIZATION.replace(b"0123", b"3210", 1))

    def test_other_farmer(self):
        self.assertRefused(address=FarmerKey.from_seed(b"v2 someone else").address)

    def test_date_outside_the_window(self):
        error = self.assertRefused(now=VECTOR_NOW + 30)
        self.assertEqual(error.skew, 30)
        self.assertEqual(verify(now=VECTOR_NOW + 29), VECTOR_MESSAGE)

    def test_malformed_headers(self):
        for value in (b"DATASERV-V2", b"DATASERV-V2 " + VECTOR_NONCE.encode(),
                      b"DATASERV-V2 short " + VECTOR_AUTHORIZATION.split(b" ")[2],
                      b"DATASERV-V2 bad!nonce!! " + VECTOR_AUTHORIZATION.split(b" ")[2],
                      b"DATASERV-V2 " + VECTOR_NONCE.encode() + b" not-base64",
                      VECTOR_AUTHORIZATION + b" extra", b"x" * 500, None, "DATASERV-V2 \xe9"):
            self.assertRefused(authorization=value)

    def test_missing_date(self):
        self.assertRefused(date=None)

    def test_non_ascii_target(self):
        self.assertRefused(target=b"/api/ping/\xff")

    def test_legacy_and_v2_never_confused(self):
        legacy = headers_for(KEY, VECTOR_SERVER, date=VECTOR_DATE)[b"Authorization"]
        self.assertFalse(v2.is_v2(legacy))
        self.assertTrue(v2.is_v2(VECTOR_AUTHORIZATION))
        self.assertTrue(v2.is_v2(VECTOR_AUTHORIZATION.decode()))
        self.assertFalse(v2.is_v2(None))
        self.assertRefused(authorization=legacy)

    def test_malleated_signature_still_verifies(self):
        # Why a replay key never names the signature's encoding (see ReplayKeyTests).
        other = malleated(VECTOR_AUTHORIZATION)
        self.assertNotEqual(other, VECTOR_AUTHORIZATION)
        self.assertEqual(verify(authorization=other), VECTOR_MESSAGE)


class ReplayKeyTests(SynchronousTestCase):

    def test_legacy_key_names_route_values_and_date(self):
        key = replay.legacy_key(VECTOR_ADDRESS, "GET", "ping", (), VECTOR_DATE)
        self.assertEqual(len(key), replay.KEY_BYTES)
        self.assertEqual(key, replay.legacy_key(VECTOR_ADDRESS, "GET", "ping", (),
                                                VECTOR_DATE.encode()))
        others = {
            replay.legacy_key(VECTOR_ADDRESS, "GET", "height", (5,), VECTOR_DATE),
            replay.legacy_key(VECTOR_ADDRESS, "GET", "height", (6,), VECTOR_DATE),
            replay.legacy_key(VECTOR_ADDRESS, "HEAD", "ping", (), VECTOR_DATE),
            replay.legacy_key(VECTOR_SERVER, "GET", "ping", (), VECTOR_DATE),
            replay.legacy_key(VECTOR_ADDRESS, "GET", "ping", (),
                              email.utils.formatdate(VECTOR_NOW + 1)),
        }
        self.assertEqual(len(others | {key}), 6)

    def test_legacy_key_bytes(self):
        # Every daemon on one database must make the same key for one request: the
        # key is SHA-256 of the NUL-separated names, cut to KEY_BYTES. Written out
        # here, so that a faster construction cannot change it unnoticed.
        for values, names in (((), ""), ((5, "ab"), "\x005\x00'ab'")):
            text = "legacy\0%s\0GET\0height%s\0%s" % (VECTOR_ADDRESS, names, VECTOR_DATE)
            self.assertEqual(
                replay.legacy_key(VECTOR_ADDRESS, "GET", "height", values, VECTOR_DATE),
                hashlib.sha256(text.encode()).digest()[:16])

    def test_v2_key_names_the_message(self):
        key = replay.v2_key(VECTOR_ADDRESS, VECTOR_MESSAGE)
        self.assertEqual(key, replay.v2_key(VECTOR_ADDRESS, verify(
            authorization=malleated(VECTOR_AUTHORIZATION))))
        self.assertNotEqual(key, replay.v2_key(VECTOR_ADDRESS, VECTOR_MESSAGE + b"0"))
        self.assertNotEqual(key, replay.legacy_key(VECTOR_ADDRESS, "GET", "ping", (),
                                                   VECTOR_DATE))


class ReplayCacheTests(SynchronousTestCase):

    def test_second_claim_refused_until_the_window_ends(self):
        cache = replay.ReplayCache(60)
        self.assertTrue(cache.claim(b"k", 100))
        self.assertFalse(cache.claim(b"k", 100))
        self.assertFalse(cache.claim(b"k", 159.9))
        self.assertTrue(cache.claim(b"k", 160))

    def test_release(self):
        cache = replay.ReplayCache(60)
        cache.claim(b"k", 100)
        cache.release(b"k")
        self.assertTrue(cache.claim(b"k", 101))

    def test_bounded_expired_first(self):
        cache = replay.ReplayCache(60, limit=3)
        cache.claim(b"old", 0)
        cache.claim(b"a", 50)
        cache.claim(b"b", 50)
        self.assertTrue(cache.claim(b"c", 70))   # "old" expired at 60 and goes
        self.assertEqual(len(cache), 3)
        self.assertFalse(cache.claim(b"a", 70))
        self.assertEqual(cache.forgot, 0)
        self.assertTrue(cache.claim(b"d", 71))   # full of live keys: starts again
        self.assertEqual(len(cache), 1)
        self.assertEqual(cache.forgot, 1)

    def test_remember_a_key_accepted_elsewhere(self):
        cache = replay.ReplayCache(60)
        cache.remember(b"k", 130, 90)
        self.assertFalse(cache.claim(b"k", 100))
        self.assertTrue(cache.claim(b"k", 130))

    def test_remember_keeps_the_later_expiry(self):
        cache = replay.ReplayCache(60)
        cache.claim(b"k", 100)  # kept until 160
        cache.remember(b"k", 120, 110)
        self.assertFalse(cache.claim(b"k", 150))

    def test_remembering_into_a_full_cache_drops_the_expired_first(self):
        cache = replay.ReplayCache(60, limit=2)
        cache.claim(b"old", 0)    # kept until 60
        cache.claim(b"live", 50)  # kept until 110
        cache.remember(b"k", 130, 70)
        self.assertEqual(len(cache), 2)
        self.assertEqual(cache.forgot, 0)
        self.assertFalse(cache.claim(b"live", 71))
