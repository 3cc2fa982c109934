"""Tests for :mod:`dataserv.identity.signing`."""

import base64
import email.utils
import hashlib
import time

from twisted.trial.unittest import SynchronousTestCase

from dataserv.identity.addresses import hash160, is_valid_address, parse_farmer_id
from dataserv.identity.auth import SECP256K1_ORDER, Verifier, available_backends, verify_message
from dataserv.identity.signing import FarmerKey, headers_for

SERVER_ADDRESS = FarmerKey.from_seed(b"signing test server").address


class FarmerKeyTests(SynchronousTestCase):
    """Tests for `FarmerKey`."""

    def test_private_key_one(self):
        """The key with secret 1 has the well-known address."""
        key = FarmerKey((1).to_bytes(32, "big"))
        self.assertEqual(key.address, "1BgGZ9tcN4rm9KBzDn7KprQz87SZ26SAMH")
        self.assertEqual(key.nodeid, "751e76e8199196d454941c45d1b3a323f1433bd6")

    def test_identity(self):
        """address and nodeid derive from the compressed public key."""
        key = FarmerKey.from_seed(b"identity")
        self.assertEqual(len(key.public_key), 33)
        self.assertIn(key.public_key[0], (2, 3))
        self.assertEqual(key.nodeid, hash160(key.public_key).hex())
        self.assertTrue(is_valid_address(key.address))
        self.assertEqual(parse_farmer_id(key.nodeid), key.address)

    def test_from_seed(self):
        """from_seed uses the SHA-256 of the seed and is deterministic."""
        key = FarmerKey.from_seed(b"seed")
        self.assertEqual(key.secret, hashlib.sha256(b"seed").digest())
        self.assertEqual(FarmerKey.from_seed(b"seed").address, key.address)
        self.assertNotEqual(FarmerKey.from_seed(b"seed2").address, key.address)

    def test_generate(self):
        """generate makes distinct valid keys."""
        first, second = FarmerKey.generate(), FarmerKey.generate()
        self.assertNotEqual(first.secret, second.secret)
        self.assertTrue(is_valid_address(first.address))

    def test_invalid_secret(self):
        """Secrets of the wrong size or out of range are refused."""
        for secret in [
            b"",
            b"\x01" * 31,
            b"\x01" * 33,
            bytes(32),
            SECP256K1_ORDER.to_bytes(32, "big"),
            b"\xff" * 32,
        ]:
            self.assertRaises(ValueError, FarmerKey, secret)

    def test_repr_hides_secret(self):
        """The repr shows the address, not the secret."""
        key = FarmerKey.from_seed(b"repr")
        self.assertIn(key.address, repr(key))
        self.assertNotIn(key.secret.hex(), repr(key))


class SignMessageTests(SynchronousTestCase):
    """Tests for `FarmerKey.sign_message` and `FarmerKey.sign_message_fast`."""

    messages = [
        "",
        "hello",
        "caf\u00e9",
        "x" * 300,
        SERVER_ADDRESS + " Tue, 14 Nov 2023 22:13:20 -0000",
    ]

    def test_format(self):
        """Signatures are base64 of 65 bytes with a compressed-key header byte."""
        key = FarmerKey.from_seed(b"format")
        for message in self.messages:
            raw = base64.b64decode(key.sign_message(message), validate=True)
            self.assertEqual(len(raw), 65)
            self.assertIn(raw[0], range(31, 35))
            # Low-s form, like libsecp256k1.
            self.assertLessEqual(int.from_bytes(raw[33:], "big"), SECP256K1_ORDER // 2)

    def test_deterministic(self):
        """Signing the same message twice gives the same signature (RFC 6979)."""
        key = FarmerKey.from_seed(b"deterministic")
        self.assertEqual(key.sign_message("same"), key.sign_message("same"))
        self.assertNotEqual(key.sign_message("same"), key.sign_message("other"))

    def test_paths_agree(self):
        """The ecdsa and coincurve signing paths produce identical signatures,
        which both backends verify.
        """
        if "coincurve" not in available_backends():
            raise self.skipTest("coincurve is not installed")
        for index in range(20):
            key = FarmerKey.from_seed(b"agree %d" % (index,))
            for message in self.messages:
                signature = key.sign_message(message)
                self.assertEqual(key.sign_message_fast(message), signature)
                for backend in available_backends():
                    self.assertTrue(
                        verify_message(key.address, message, signature, backend)
                    )

    def test_fast_fallback(self):
        """Without coincurve, sign_message_fast uses the ecdsa path."""
        key = FarmerKey.from_seed(b"fallback")
        expected = key.sign_message("hello")
        key._coincurve_key = None
        self.assertEqual(key.sign_message_fast("hello"), expected)

    def test_verifies(self):
        """Signatures verify with every available backend."""
        key = FarmerKey.from_seed(b"verifies")
        for message in self.messages:
            for signature in (
                key.sign_message(message),
                key.sign_message_fast(message),
            ):
                for backend in available_backends():
                    self.assertTrue(
                        verify_message(key.address, message, signature, backend)
                    )


class HeadersForTests(SynchronousTestCase):
    """Tests for `headers_for`."""

    def test_explicit_date(self):
        """An explicit date is sent as given and signed with the server address."""
        key = FarmerKey.from_seed(b"headers")
        date = "Tue, 14 Nov 2023 22:13:20 -0000"
        headers = headers_for(key, SERVER_ADDRESS, date)
        self.assertEqual(set(headers), {b"Date", b"Authorization"})
        self.assertEqual(headers[b"Date"], date.encode("ascii"))
        self.assertEqual(
            headers[b"Authorization"],
            key.sign_message(SERVER_ADDRESS + " " + date).encode("ascii"),
        )
        for backend in available_backends():
            Verifier(SERVER_ADDRESS, backend=backend).verify(
                key.address, headers[b"Date"], headers[b"Authorization"], 1700000000
            )

    def test_default_date(self):
        """By default the date is the current time, which the server accepts."""
        key = FarmerKey.from_seed(b"headers")
        before = time.time()
        headers = headers_for(key, SERVER_ADDRESS)
        date = email.utils.parsedate_tz(headers[b"Date"].decode("ascii"))
        self.assertLessEqual(abs(email.utils.mktime_tz(date) - before), 2)
        for backend in available_backends():
            Verifier(SERVER_ADDRESS, backend=backend).verify(
                key.address, headers[b"Date"], headers[b"Authorization"], time.time()
            )
