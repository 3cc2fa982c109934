"""
Bitcoin address handling for farmer ids and payout addresses.

A farmer identifies itself either by a Bitcoin P2PKH address or by the
40-hex-digit "nodeid" (the hash160 inside that address).  Everything that
comes from the network goes through the parsers here, so they are strict,
cheap, and raise nothing but L{InvalidAddress} for any string input.

The module also carries the hash160 primitive (RIPEMD-160 of SHA-256)
because OpenSSL 3 builds may not offer RIPEMD-160 through C{hashlib}; a
small pure-Python implementation is used in that case.
"""

import functools
import hashlib
import struct

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
    "ripemd160_pure",
]

P2PKH_VERSION = 0x00
P2SH_VERSION = 0x05

# Anything longer cannot be an address (at most 34 characters) or a nodeid
# (exactly 40), so it is rejected before any decoding work is spent on it.
_MAX_INPUT_LENGTH = 64
_NODEID_LENGTH = 40
# 1 version byte + 20 byte hash160 + 4 byte checksum.
_DECODED_LENGTH = 25

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_VALUES = {char: value for value, char in enumerate(_B58_ALPHABET)}
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


class InvalidAddress(ValueError):
    """
    The text is not an acceptable address or nodeid.
    """


# --------------------------------------------------------------------------
# RIPEMD-160 and hash160


def _rol(value, count):
    return ((value << count) | (value >> (32 - count))) & 0xFFFFFFFF


# Message word order, rotation amounts and additive constants of the two
# parallel lines, one row per round (from the RIPEMD-160 specification).
_R_LEFT = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
    (7, 4, 13, 1, 10, 6, 15, 3, 12, 0, 9, 5, 2, 14, 11, 8),
    (3, 10, 14, 4, 9, 15, 8, 1, 2, 7, 0, 6, 13, 11, 5, 12),
    (1, 9, 11, 10, 0, 8, 12, 4, 13, 3, 7, 15, 14, 5, 6, 2),
    (4, 0, 5, 9, 7, 12, 2, 10, 14, 1, 3, 8, 11, 6, 15, 13),
)
_R_RIGHT = (
    (5, 14, 7, 0, 9, 2, 11, 4, 13, 6, 15, 8, 1, 10, 3, 12),
    (6, 11, 3, 7, 0, 13, 5, 10, 14, 15, 8, 12, 4, 9, 1, 2),
    (15, 5, 1, 3, 7, 14, 6, 9, 11, 8, 12, 2, 10, 0, 4, 13),
    (8, 6, 4, 1, 3, 11, 15, 0, 5, 12, 2, 13, 9, 7, 10, 14),
    (12, 15, 10, 4, 1, 5, 8, 7, 6, 2, 13, 14, 0, 3, 9, 11),
)
_S_LEFT = (
    (11, 14, 15, 12, 5, 8, 7, 9, 11, 13, 14, 15, 6, 7, 9, 8),
    (7, 6, 8, 13, 11, 9, 7, 15, 7, 12, 15, 9, 11, 7, 13, 12),
    (11, 13, 6, 7, 14, 9, 13, 15, 14, 8, 13, 6, 5, 12, 7, 5),
    (11, 12, 14, 15, 14, 15, 9, 8, 9, 14, 5, 6, 8, 6, 5, 12),
    (9, 15, 5, 11, 6, 8, 13, 12, 5, 12, 13, 14, 11, 8, 5, 6),
)
_S_RIGHT = (
    (8, 9, 9, 11, 13, 15, 15, 5, 7, 7, 8, 11, 14, 14, 12, 6),
    (9, 13, 15, 7, 12, 8, 9, 11, 7, 7, 12, 7, 6, 15, 13, 11),
    (9, 7, 15, 11, 8, 6, 6, 14, 12, 13, 5, 14, 13, 13, 7, 5),
    (15, 5, 8, 11, 14, 14, 6, 14, 6, 9, 12, 9, 12, 5, 15, 8),
    (8, 5, 12, 9, 12, 5, 14, 6, 8, 13, 6, 5, 15, 13, 11, 11),
)
_K_LEFT = (0x00000000, 0x5A827999, 0x6ED9EBA1, 0x8F1BBCDC, 0xA953FD4E)
_K_RIGHT = (0x50A28BE6, 0x5C4DD124, 0x6D703EF3, 0x7A6D76E9, 0x00000000)


def _f(round_index, x, y, z):
    # The five boolean functions; the right line uses them in reverse order.
    if round_index == 0:
        return x ^ y ^ z
    if round_index == 1:
        return (x & y) | (~x & z)
    if round_index == 2:
        return (x | ~y) ^ z
    if round_index == 3:
        return (x & z) | (y & ~z)
    return x ^ (y | ~z)


def _compress(state, block):
    words = struct.unpack("<16I", block)
    al, bl, cl, dl, el = state
    ar, br, cr, dr, er = state
    for rnd in range(5):
        kl = _K_LEFT[rnd]
        kr = _K_RIGHT[rnd]
        for i in range(16):
            t = _rol(
                (al + _f(rnd, bl, cl, dl) + words[_R_LEFT[rnd][i]] + kl) & 0xFFFFFFFF,
                _S_LEFT[rnd][i],
            )
            t = (t + el) & 0xFFFFFFFF
            al, el, dl, cl, bl = el, dl, _rol(cl, 10), bl, t
            t = _rol(
                (ar + _f(4 - rnd, br, cr, dr) + words[_R_RIGHT[rnd][i]] + kr)
                & 0xFFFFFFFF,
                _S_RIGHT[rnd][i],
            )
            t = (t + er) & 0xFFFFFFFF
            ar, er, dr, cr, br = er, dr, _rol(cr, 10), br, t
    h0, h1, h2, h3, h4 = state
    return (
        (h1 + cl + dr) & 0xFFFFFFFF,
        (h2 + dl + er) & 0xFFFFFFFF,
        (h3 + el + ar) & 0xFFFFFFFF,
        (h4 + al + br) & 0xFFFFFFFF,
        (h0 + bl + cr) & 0xFFFFFFFF,
    )


def ripemd160_pure(data):
    """
    Compute RIPEMD-160 in pure Python.

    Used when C{hashlib} has no RIPEMD-160 (OpenSSL 3 moved it to the
    legacy provider).  It is slow compared with OpenSSL but only ever hashes
    a 32-byte SHA-256 digest here.

    @param data: The bytes to hash.
    @return: The 20-byte digest.
    """
    data = bytes(data)
    # MD4-style padding: 0x80, zeros, then the bit length little-endian.
    padded = (
        data
        + b"\x80"
        + b"\x00" * ((55 - len(data)) % 64)
        + struct.pack("<Q", (len(data) * 8) & 0xFFFFFFFFFFFFFFFF)
    )
    state = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0)
    for offset in range(0, len(padded), 64):
        state = _compress(state, padded[offset : offset + 64])
    return struct.pack("<5I", *state)


def _probe_hashlib_ripemd160():
    # Probe once at import: whether OpenSSL offers the algorithm is a fixed
    # property of the running interpreter, so there is nothing to configure.
    try:
        hashlib.new("ripemd160", b"")
    except (ValueError, TypeError):
        return False
    return True


_HASHLIB_HAS_RIPEMD160 = _probe_hashlib_ripemd160()


def ripemd160(data):
    """
    Compute RIPEMD-160, through OpenSSL when available.

    @param data: The bytes to hash.
    @return: The 20-byte digest.
    """
    if _HASHLIB_HAS_RIPEMD160:
        return hashlib.new("ripemd160", data).digest()
    return ripemd160_pure(data)


def hash160(data):
    """
    Compute Bitcoin's hash160, RIPEMD-160 of SHA-256.

    @param data: The bytes to hash, typically a serialised public key.
    @return: The 20-byte digest.
    """
    return ripemd160(hashlib.sha256(data).digest())


# --------------------------------------------------------------------------
# base58check


def _checksum(payload):
    return hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]


def _b58check_encode(payload):
    data = payload + _checksum(payload)
    number = int.from_bytes(data, "big")
    digits = []
    while number:
        number, digit = divmod(number, 58)
        digits.append(_B58_ALPHABET[digit])
    # Each leading zero byte is written as a leading "1" (the zero digit).
    zeros = len(data) - len(data.lstrip(b"\x00"))
    return "1" * zeros + "".join(reversed(digits))


def _b58check_decode(text):
    """
    Decode base58check text (already known to be short ASCII) to the payload
    without its checksum; raises L{InvalidAddress} on any problem.
    """
    number = 0
    try:
        for char in text:
            number = number * 58 + _B58_VALUES[char]
    except KeyError:
        raise InvalidAddress("character outside the base58 alphabet") from None
    zeros = len(text) - len(text.lstrip("1"))
    data = b"\x00" * zeros + number.to_bytes((number.bit_length() + 7) // 8, "big")
    if len(data) != _DECODED_LENGTH:
        raise InvalidAddress("address does not decode to 25 bytes")
    payload, checksum = data[:-4], data[-4:]
    if _checksum(payload) != checksum:
        raise InvalidAddress("address checksum mismatch")
    return payload


def _precheck(text):
    # Cheap rejections first, so hostile input never reaches the decoder.
    if not isinstance(text, str):
        raise InvalidAddress("address must be a str")
    if not text:
        raise InvalidAddress("empty address")
    if len(text) > _MAX_INPUT_LENGTH:
        raise InvalidAddress("address too long")
    if not text.isascii():
        raise InvalidAddress("address contains non-ASCII characters")


def _is_nodeid(text):
    return len(text) == _NODEID_LENGTH and _HEX_DIGITS.issuperset(text)


# The cache maps canonical input text to (address, hash160).  lru_cache never
# stores exceptions, so garbage input cannot crowd out real farmers, and its
# bounded size keeps memory flat however many distinct ids arrive.
@functools.lru_cache(maxsize=65536)
def _parse_farmer_id_cached(text):
    if _is_nodeid(text):
        digest = bytes.fromhex(text)
        return _b58check_encode(bytes([P2PKH_VERSION]) + digest), digest
    payload = _b58check_decode(text)
    if payload[0] != P2PKH_VERSION:
        raise InvalidAddress("not a P2PKH address")
    # A valid base58check string is the unique encoding of its bytes, so
    # the input is already canonical.
    return text, payload[1:]


def _parse_farmer_id(text):
    # The type and size checks happen before the cache so that unhashable
    # or huge objects are never used as cache keys.
    _precheck(text)
    return _parse_farmer_id_cached(text)


def parse_farmer_id(text):
    """
    Validate a farmer id and return it as a canonical P2PKH address.

    @param text: A P2PKH address or a 40 hex digit nodeid (either case).
    @return: The P2PKH address string.
    @raise InvalidAddress: For anything else; no other exception escapes.
    """
    return _parse_farmer_id(text)[0]


def farmer_id_hash160(text):
    """
    Return the 20-byte hash160 that a farmer id stands for.

    @param text: A P2PKH address or a 40 hex digit nodeid.
    @return: The hash160 as bytes.
    @raise InvalidAddress: If C{text} is not a valid farmer id.
    """
    return _parse_farmer_id(text)[1]


def parse_payout_address(text):
    """
    Validate a payout address (P2PKH or P2SH) and return it unchanged.

    A nodeid is deliberately not accepted: payouts need a real address.

    @param text: The address text.
    @return: C{text}.
    @raise InvalidAddress: If it is not a P2PKH or P2SH address.
    """
    _precheck(text)
    payload = _b58check_decode(text)
    if payload[0] not in (P2PKH_VERSION, P2SH_VERSION):
        raise InvalidAddress("not a P2PKH or P2SH address")
    return text


def address_to_nodeid(address):
    """
    Convert a farmer id to its nodeid.

    @param address: A P2PKH address (a nodeid is accepted too).
    @return: 40 lowercase hex digits.
    @raise InvalidAddress: If C{address} is not a valid farmer id.
    """
    return farmer_id_hash160(address).hex()


def nodeid_to_address(nodeid):
    """
    Convert a nodeid to its P2PKH address.

    @param nodeid: 40 hex digits, either case.
    @return: The P2PKH address string.
    @raise InvalidAddress: If C{nodeid} is not 40 hex digits.
    """
    _precheck(nodeid)
    if not _is_nodeid(nodeid):
        raise InvalidAddress("a nodeid is exactly 40 hex digits")
    return _parse_farmer_id_cached(nodeid)[0]


def is_valid_address(text):
    """
    Tell whether C{text} is a valid P2PKH address.

    A nodeid or a P2SH address gives C{False}.

    @param text: Anything.
    @return: C{True} or C{False}; never raises.
    """
    try:
        _precheck(text)
        if _is_nodeid(text):
            return False
        _parse_farmer_id_cached(text)
    except InvalidAddress:
        return False
    return True
