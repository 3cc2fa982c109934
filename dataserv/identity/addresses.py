"""Bitcoin address handling for farmer ids and payout addresses.

A farmer identifies itself either by a Bitcoin P2PKH address or by the
40-hex-digit "nodeid" (the hash160 inside that address).  Everything that
comes from the network goes through the parsers here, so they are strict,
cheap, and raise nothing but `InvalidAddress` for any string input.  The
base58check coding itself is the `base58` package's.

The module also carries the hash160 primitive (RIPEMD-160 of SHA-256).
OpenSSL 3 builds may not offer RIPEMD-160 through `hashlib` (it moved to the
legacy provider); pycryptodome's implementation is used in that case.
"""

import functools
import hashlib
from typing import Callable, Tuple

import base58

__all__ = [
    "InvalidAddress",
    "P2PKH_VERSION",
    "P2SH_VERSION",
    "parse_farmer_id",
    "farmer_id_hash160",
    "parse_payout_address",
    "address_to_nodeid",
    "nodeid_to_address",
    "is_valid_address",
    "hash160",
    "ripemd160",
]

P2PKH_VERSION = 0x00
P2SH_VERSION = 0x05

# Anything longer cannot be an address or a nodeid (exactly 40), so it is
# rejected before any other look at it.
_MAX_INPUT_LENGTH = 64
_NODEID_LENGTH = 40
# 1 version byte + 20 byte hash160 + 4 byte checksum.
_DECODED_LENGTH = 25
# Only base58 strings of 25 to 35 characters decode to 25 bytes (25 "1"s is
# all zeros; 58**35 > 256**25), so other lengths never reach the decoder.
_MIN_ENCODED_LENGTH = 25
_MAX_ENCODED_LENGTH = 35

# base58 strips trailing whitespace before decoding; checking the alphabet
# first keeps "address " from being taken for "address".
_B58_DIGITS = frozenset(base58.BITCOIN_ALPHABET.decode("ascii"))
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


class InvalidAddress(ValueError):
    """The text is not an acceptable address or nodeid."""


# --------------------------------------------------------------------------
# RIPEMD-160 and hash160


def _ripemd160_hashlib(data: bytes) -> bytes:
    return hashlib.new("ripemd160", data).digest()


def _ripemd160_pycryptodome(data: bytes) -> bytes:
    from Crypto.Hash import RIPEMD160

    return RIPEMD160.new(data).digest()


def _pick_ripemd160() -> Callable[[bytes], bytes]:
    # Whether OpenSSL offers the algorithm is a fixed property of the running
    # interpreter, so it is probed once at import.
    try:
        hashlib.new("ripemd160", b"")
    except ValueError:
        return _ripemd160_pycryptodome
    return _ripemd160_hashlib


_ripemd160 = _pick_ripemd160()


def ripemd160(data: bytes) -> bytes:
    """Return the 20-byte RIPEMD-160 of `data`, through OpenSSL when available."""
    return _ripemd160(data)


def hash160(data: bytes) -> bytes:
    """Return Bitcoin's hash160 (RIPEMD-160 of SHA-256) of `data`, typically a public key."""
    return _ripemd160(hashlib.sha256(data).digest())


# --------------------------------------------------------------------------
# base58check


def _b58check_encode(payload: bytes) -> str:
    return base58.b58encode_check(payload).decode("ascii")


def _b58check_decode(text: str) -> bytes:
    """Decode short ASCII text (see `_precheck`) to the payload without its checksum.

    Raises `InvalidAddress` on any problem.
    """
    if not _MIN_ENCODED_LENGTH <= len(text) <= _MAX_ENCODED_LENGTH:
        raise InvalidAddress("address does not decode to 25 bytes")
    if not _B58_DIGITS.issuperset(text):
        raise InvalidAddress("character outside the base58 alphabet")
    try:
        payload = base58.b58decode_check(text)
    except ValueError:
        raise InvalidAddress("address checksum mismatch") from None
    if len(payload) != _DECODED_LENGTH - 4:
        raise InvalidAddress("address does not decode to 25 bytes")
    return payload


def _precheck(text: object) -> str:
    # Cheap rejections first, so hostile input never reaches the decoder.
    if not isinstance(text, str):
        raise InvalidAddress("address must be a str")
    if not text:
        raise InvalidAddress("empty address")
    if len(text) > _MAX_INPUT_LENGTH:
        raise InvalidAddress("address too long")
    if not text.isascii():
        raise InvalidAddress("address contains non-ASCII characters")
    return text


def _is_nodeid(text: str) -> bool:
    return len(text) == _NODEID_LENGTH and _HEX_DIGITS.issuperset(text)


# The cache maps canonical input text to (address, hash160).  lru_cache never
# stores exceptions, so garbage input cannot crowd out real farmers, and its
# bounded size keeps memory flat however many distinct ids arrive.
@functools.lru_cache(maxsize=65536)
def _parse_farmer_id_cached(text: str) -> Tuple[str, bytes]:
    if _is_nodeid(text):
        digest = bytes.fromhex(text)
        return _b58check_encode(bytes([P2PKH_VERSION]) + digest), digest
    payload = _b58check_decode(text)
    if payload[0] != P2PKH_VERSION:
        raise InvalidAddress("not a P2PKH address")
    # A valid base58check string is the unique encoding of its bytes, so
    # the input is already canonical.
    return text, payload[1:]


def _parse_farmer_id(text: object) -> Tuple[str, bytes]:
    # The type and size checks happen before the cache so that unhashable
    # or huge objects are never used as cache keys.
    return _parse_farmer_id_cached(_precheck(text))


def parse_farmer_id(text: object) -> str:
    """Return a farmer id (P2PKH address or nodeid, either case) as its P2PKH address.

    Anything else raises `InvalidAddress`, and no other exception escapes.
    """
    return _parse_farmer_id(text)[0]


def farmer_id_hash160(text: object) -> bytes:
    """Return the 20-byte hash160 that a farmer id (address or nodeid) stands for.

    Raises `InvalidAddress` if `text` is not a valid farmer id.
    """
    return _parse_farmer_id(text)[1]


def parse_payout_address(text: object) -> str:
    """Return a payout address (P2PKH or P2SH) unchanged, or raise `InvalidAddress`.

    A nodeid is deliberately not accepted: payouts need a real address.
    """
    address = _precheck(text)
    payload = _b58check_decode(address)
    if payload[0] not in (P2PKH_VERSION, P2SH_VERSION):
        raise InvalidAddress("not a P2PKH or P2SH address")
    return address


def address_to_nodeid(address: object) -> str:
    """Return the nodeid (40 lowercase hex digits) of a farmer id.

    Raises `InvalidAddress` if `address` is not a valid farmer id.
    """
    return farmer_id_hash160(address).hex()


def nodeid_to_address(nodeid: object) -> str:
    """Return the P2PKH address of a nodeid (40 hex digits, either case).

    Raises `InvalidAddress` for anything but a nodeid.
    """
    text = _precheck(nodeid)
    if not _is_nodeid(text):
        raise InvalidAddress("a nodeid is exactly 40 hex digits")
    return _parse_farmer_id_cached(text)[0]


def is_valid_address(text: object) -> bool:
    """Tell whether `text` is a valid P2PKH address; never raises.

    A nodeid or a P2SH address gives False.
    """
    try:
        address = _precheck(text)
        if _is_nodeid(address):
            return False
        _parse_farmer_id_cached(address)
    except InvalidAddress:
        return False
    return True
