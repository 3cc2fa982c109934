"""Tests for `dataserv.identity.addresses`."""

import hashlib
import random

import base58
from twisted.trial.unittest import SynchronousTestCase

from dataserv.identity import addresses
from dataserv.identity.addresses import (
    InvalidAddress,
    address_to_nodeid,
    farmer_id_hash160,
    hash160,
    is_valid_address,
    nodeid_to_address,
    parse_farmer_id,
    parse_payout_address,
    ripemd160,
)

ADDRESS = "1F3sAm6ZtwLAUnj7d38pGFxtP3RVEvtsbV"
NODEID = "9a1c78a507689f6f54b847ad1cef1e614ee23f1e"
# P2SH (version 0x05) address of twenty zero bytes.
P2SH_ADDRESS = "31h1vYVSYuKP6AhS86fbRdMw9XHieotbST"


def _hashlib_ripemd160_available():
    try:
        hashlib.new("ripemd160", b"")
    except ValueError:
        return False
    return True


class RIPEMD160Tests(SynchronousTestCase):
    """Tests for the RIPEMD-160 and hash160 primitives."""

    # Test vectors published with the RIPEMD-160 specification.
    vectors = [
        (b"", "9c1185a5c5e9fc54612808977ee8f548b2258d31"),
        (b"a", "0bdc9d2d256b3ee9daae347be6f4dc835a467ffe"),
        (b"abc", "8eb208f7e05d987a9b044a8e98c6b087f15a0bfc"),
        (b"message digest", "5d0689ef49d2fae572b881b123a85ffa21595f36"),
        (b"abcdefghijklmnopqrstuvwxyz", "f71c27109c692c1b56bbdceb5b9d2865b3708dbc"),
        (
            b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
            "12a053384a9c0c88e405a06c27dcf49ada62eb2b",
        ),
        (b"1234567890" * 8, "9b752e45573d4b39f4dbd3323cab82bf63326bfb"),
    ]

    def fallback(self):
        """Force the implementation used when hashlib lacks RIPEMD-160, the way
        the module picks it at import, and return it.
        """

        def no_ripemd160(name, *args, **kwargs):
            raise ValueError(f"unsupported hash type {name}")

        self.patch(hashlib, "new", no_ripemd160)
        implementation = addresses._pick_ripemd160()
        self.patch(addresses, "_ripemd160", implementation)
        return implementation

    def test_fallback_picked_without_hashlib(self):
        """hashlib's RIPEMD-160 is used when OpenSSL offers it, and another
        implementation when it does not.
        """
        if _hashlib_ripemd160_available():
            self.assertIs(addresses._pick_ripemd160(), addresses._ripemd160_hashlib)
        self.assertIsNot(self.fallback(), addresses._ripemd160_hashlib)
        self.assertEqual(ripemd160(b"abc").hex(), self.vectors[2][1])

    def test_fallback_vectors(self):
        """The fallback matches the published vectors, through `ripemd160` and
        `hash160`.
        """
        self.fallback()
        for message, expected in self.vectors:
            self.assertEqual(ripemd160(message).hex(), expected, message)
        self.assertEqual(
            hash160(b"abc"), bytes.fromhex("bb1be98c142444d7a56aa3981c3942a978e4dc33")
        )

    def test_fallback_million_a(self):
        """The fallback handles many blocks."""
        self.fallback()
        self.assertEqual(
            ripemd160(b"a" * 1000000).hex(),
            "52783243c1697bdbe16d37f97f68f08325dc1528",
        )

    def test_ripemd160_vectors(self):
        """`ripemd160`, whichever implementation it uses, matches the vectors."""
        for message, expected in self.vectors:
            self.assertEqual(ripemd160(message).hex(), expected, message)

    def test_fallback_matches_hashlib(self):
        """Around every padding boundary the fallback agrees with OpenSSL."""
        if not _hashlib_ripemd160_available():
            raise self.skipTest("hashlib has no ripemd160")
        rng = random.Random(160)
        samples = [rng.randbytes(length) for length in range(0, 200)]
        expected = [hashlib.new("ripemd160", data).digest() for data in samples]
        self.fallback()
        self.assertEqual([ripemd160(data) for data in samples], expected)

    def test_hash160(self):
        """hash160 of the compressed generator point (private key 1) is the
        well-known value behind 1BgGZ9tcN4rm9KBzDn7KprQz87SZ26SAMH.
        """
        public_key = bytes.fromhex(
            "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
        )
        self.assertEqual(
            hash160(public_key).hex(), "751e76e8199196d454941c45d1b3a323f1433bd6"
        )
        self.assertEqual(
            nodeid_to_address(hash160(public_key).hex()),
            "1BgGZ9tcN4rm9KBzDn7KprQz87SZ26SAMH",
        )


class FarmerIdTests(SynchronousTestCase):
    """Tests for `parse_farmer_id` and friends."""

    def test_address(self):
        """A valid P2PKH address is returned as it is."""
        self.assertEqual(parse_farmer_id(ADDRESS), ADDRESS)

    def test_nodeid_lower_and_upper(self):
        """A nodeid in either case gives the same address."""
        self.assertEqual(parse_farmer_id(NODEID), ADDRESS)
        self.assertEqual(parse_farmer_id(NODEID.upper()), ADDRESS)

    def test_hash160(self):
        """`farmer_id_hash160` gives the 20 bytes for both forms."""
        self.assertEqual(farmer_id_hash160(ADDRESS), bytes.fromhex(NODEID))
        self.assertEqual(farmer_id_hash160(NODEID.upper()), bytes.fromhex(NODEID))

    def test_leading_zero_hash(self):
        """A hash160 starting with zero bytes encodes with extra leading "1"s
        and round-trips.
        """
        nodeid = "0000" + "ab" * 18
        address = nodeid_to_address(nodeid)
        self.assertTrue(address.startswith("111"))
        self.assertEqual(parse_farmer_id(address), address)
        self.assertEqual(address_to_nodeid(address), nodeid)

    def test_p2sh_rejected(self):
        """A P2SH address is not a farmer id."""
        self.assertRaises(InvalidAddress, parse_farmer_id, P2SH_ADDRESS)
        self.assertFalse(is_valid_address(P2SH_ADDRESS))

    def test_checksum(self):
        """Changing one character breaks the checksum."""
        broken = ADDRESS[:-1] + ("W" if ADDRESS[-1] != "W" else "X")
        self.assertRaises(InvalidAddress, parse_farmer_id, broken)

    def test_empty(self):
        """The empty string is rejected."""
        self.assertRaises(InvalidAddress, parse_farmer_id, "")

    def test_too_long(self):
        """Over-long input is rejected, however large."""
        self.assertRaises(InvalidAddress, parse_farmer_id, "1" * 65)
        self.assertRaises(InvalidAddress, parse_farmer_id, "a" * 10**6)

    def test_non_ascii(self):
        """Non-ASCII characters are rejected."""
        self.assertRaises(
            InvalidAddress, parse_farmer_id, "1F3sAm6ZtwLAUnj7d38pGFxtP3RVEvtsb\u00e9"
        )

    def test_outside_alphabet(self):
        """"0", "O", "I" and "l" are not base58 digits."""
        for char in "0OIl+/ ":
            self.assertRaises(InvalidAddress, parse_farmer_id, char + ADDRESS[1:])

    def test_whitespace(self):
        """Whitespace around an address is not part of it, and rejected."""
        for text in [ADDRESS + " ", ADDRESS + "\n", " " + ADDRESS, "\t" + ADDRESS]:
            self.assertRaises(InvalidAddress, parse_farmer_id, text)
            self.assertRaises(InvalidAddress, parse_payout_address, text)
            self.assertFalse(is_valid_address(text))
        self.assertRaises(InvalidAddress, parse_payout_address, P2SH_ADDRESS + " ")

    def test_wrong_length(self):
        """Base58check strings of the wrong decoded length are rejected, as are
        hex strings that are not 40 digits.
        """
        self.assertRaises(InvalidAddress, parse_farmer_id, ADDRESS[:-1])
        self.assertRaises(InvalidAddress, parse_farmer_id, "1" + ADDRESS)
        self.assertRaises(InvalidAddress, parse_farmer_id, NODEID[:-1])
        self.assertRaises(InvalidAddress, parse_farmer_id, NODEID + "0")
        # A correct checksum around a 24-byte payload is still wrong.
        self.assertRaises(
            InvalidAddress, parse_farmer_id, base58.b58encode_check(b"\x00" * 22).decode()
        )

    def test_not_a_string(self):
        """Non-str values raise `InvalidAddress` too."""
        for value in [None, b"1F3sAm6ZtwLAUnj7d38pGFxtP3RVEvtsbV", 5, ["x"]]:
            self.assertRaises(InvalidAddress, parse_farmer_id, value)
            self.assertFalse(is_valid_address(value))

    def test_fuzz(self):
        """Random strings raise nothing but `InvalidAddress`."""
        rng = random.Random(58)
        alphabet = base58.BITCOIN_ALPHABET.decode() + "0OIl\u00e9\x00 \n"
        for _ in range(500):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(70)))
            try:
                parse_farmer_id(text)
            except InvalidAddress:
                pass
            try:
                parse_payout_address(text)
            except InvalidAddress:
                pass
            # is_valid_address never raises.
            is_valid_address(text)

    def test_is_valid_address(self):
        """Only P2PKH address strings are valid addresses."""
        self.assertTrue(is_valid_address(ADDRESS))
        self.assertFalse(is_valid_address(NODEID))
        self.assertFalse(is_valid_address(""))


class PayoutAddressTests(SynchronousTestCase):
    """Tests for `parse_payout_address`."""

    def test_p2pkh(self):
        """A P2PKH address is a payout address."""
        self.assertEqual(parse_payout_address(ADDRESS), ADDRESS)

    def test_p2sh(self):
        """A P2SH address is a payout address."""
        self.assertEqual(parse_payout_address(P2SH_ADDRESS), P2SH_ADDRESS)

    def test_nodeid_rejected(self):
        """A nodeid is not a payout address."""
        self.assertRaises(InvalidAddress, parse_payout_address, NODEID)

    def test_other_version_rejected(self):
        """Other version bytes (testnet 0x6f here) are rejected."""
        testnet = base58.b58encode_check(b"\x6f" + bytes(20)).decode()
        self.assertRaises(InvalidAddress, parse_payout_address, testnet)
        self.assertRaises(InvalidAddress, parse_farmer_id, testnet)

    def test_garbage(self):
        """Empty, over-long and broken values are rejected."""
        for value in ["", "3" * 100, P2SH_ADDRESS[:-1] + "2", None]:
            self.assertRaises(InvalidAddress, parse_payout_address, value)


class ConversionTests(SynchronousTestCase):
    """Tests for `address_to_nodeid` and `nodeid_to_address`."""

    def test_known(self):
        """The known pair converts both ways."""
        self.assertEqual(address_to_nodeid(ADDRESS), NODEID)
        self.assertEqual(nodeid_to_address(NODEID), ADDRESS)

    def test_uppercase_nodeid(self):
        """An upper-case nodeid converts, and converting back gives lower case."""
        self.assertEqual(address_to_nodeid(nodeid_to_address(NODEID.upper())), NODEID)

    def test_round_trip(self):
        """Random nodeids survive a round trip."""
        rng = random.Random(20)
        for _ in range(100):
            nodeid = rng.randbytes(20).hex()
            address = nodeid_to_address(nodeid)
            self.assertTrue(is_valid_address(address))
            self.assertEqual(address_to_nodeid(address), nodeid)

    def test_invalid(self):
        """Invalid input raises `InvalidAddress`."""
        self.assertRaises(InvalidAddress, nodeid_to_address, ADDRESS)
        self.assertRaises(InvalidAddress, nodeid_to_address, "g" * 40)
        self.assertRaises(InvalidAddress, address_to_nodeid, P2SH_ADDRESS)
