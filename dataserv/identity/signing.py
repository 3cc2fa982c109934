"""Client-side signing of farmer requests.

The counterpart of `dataserv.identity.auth`: a `FarmerKey` signs
`"<server address> <Date>"` in Bitcoin's signed-message format with
deterministic (RFC 6979) ECDSA, as field clients do, and `headers_for`
builds the request headers from that.
"""

import base64
import email.utils
import hashlib
import os
from typing import Dict, Optional, Union

from dataserv.identity import v2
from dataserv.identity.addresses import hash160, nodeid_to_address
from dataserv.identity.auth import SECP256K1_ORDER, ecdsa_recover, message_digest

__all__ = ["FarmerKey", "headers_for", "v2_headers_for"]

# Header byte for a compressed key is 27 + 4 + recovery id.
_COMPRESSED_HEADER_BASE = 31


class FarmerKey:
    """A farmer's secp256k1 private key and the identity derived from it.

    `secret` is the 32-byte private key (big-endian, in [1, n-1]; anything
    else raises ValueError), `public_key` the 33-byte compressed public key,
    `nodeid` the hash160 of that key as lowercase hex and `address` its
    P2PKH address.
    """

    def __init__(self, secret: bytes) -> None:
        from ecdsa import SECP256k1, SigningKey

        secret = bytes(secret)
        if len(secret) != 32:
            raise ValueError("a private key is 32 bytes")
        if not 0 < int.from_bytes(secret, "big") < SECP256K1_ORDER:
            raise ValueError("private key out of range")
        self.secret = secret
        self._signing_key = SigningKey.from_string(secret, curve=SECP256k1)
        self.public_key: bytes = self._signing_key.get_verifying_key().to_string(
            "compressed"
        )
        self.nodeid = hash160(self.public_key).hex()
        self.address = nodeid_to_address(self.nodeid)
        try:
            import coincurve
        except ImportError:
            self._coincurve_key = None
        else:
            self._coincurve_key = coincurve.PrivateKey(secret)

    @classmethod
    def generate(cls) -> "FarmerKey":
        """Create a key from the operating system's random source."""
        while True:
            secret = os.urandom(32)
            # Out-of-range values are astronomically unlikely; retry anyway.
            if 0 < int.from_bytes(secret, "big") < SECP256K1_ORDER:
                return cls(secret)

    @classmethod
    def from_seed(cls, seed: bytes) -> "FarmerKey":
        """Derive a key from any bytes (the secret is their SHA-256); meant for tests."""
        return cls(hashlib.sha256(bytes(seed)).digest())

    def __repr__(self) -> str:
        # Never show the secret.
        return f"<FarmerKey {self.address}>"

    def sign_message(self, message: Union[str, bytes]) -> str:
        """Sign `message` (UTF-8) with the pure-Python ecdsa package.

        Returns the base64 of the 65-byte compact signature.
        """
        from ecdsa.util import sigencode_strings

        digest = message_digest(message)
        r_bytes, s_bytes = self._signing_key.sign_digest_deterministic(
            digest, hashfunc=hashlib.sha256, sigencode=sigencode_strings
        )
        s = int.from_bytes(s_bytes, "big")
        # libsecp256k1 always emits the low-s form; doing the same makes
        # both signing paths produce byte-identical signatures.
        if s > SECP256K1_ORDER // 2:
            s = SECP256K1_ORDER - s
        rs = r_bytes + s.to_bytes(32, "big")
        # ecdsa does not report the recovery id; it is the position of our
        # key among the recovered candidates (R.x beyond the order is
        # astronomically rare, but is ids 2 and 3).
        for overflow in (False, True):
            candidates = ecdsa_recover(digest, rs, overflow)
            for parity, candidate in enumerate(candidates):
                if candidate.to_string("compressed") == self.public_key:
                    header = _COMPRESSED_HEADER_BASE + 2 * overflow + parity
                    return base64.b64encode(bytes((header,)) + rs).decode("ascii")
        raise RuntimeError("no recovery id reproduces the public key")

    def sign_message_fast(self, message: Union[str, bytes]) -> str:
        """Sign `message` like `sign_message`, but with coincurve, much faster.

        Produces the same signature as `sign_message`, and falls back to it
        when coincurve is not importable.
        """
        if self._coincurve_key is None:
            return self.sign_message(message)
        signature = self._coincurve_key.sign_recoverable(
            message_digest(message), hasher=None
        )
        # coincurve returns r || s || recid; Bitcoin puts the header first.
        header = bytes((_COMPRESSED_HEADER_BASE + signature[64],))
        return base64.b64encode(header + signature[:64]).decode("ascii")


def headers_for(
    key: FarmerKey, server_address: str, date: Optional[str] = None
) -> Dict[bytes, bytes]:
    """Return the Date and Authorization headers of one request to `server_address`.

    `date` is the Date header text; it defaults to the current local time in
    RFC 2822 form.
    """
    if date is None:
        date = email.utils.formatdate(localtime=True)
    signature = key.sign_message_fast(server_address + " " + date)
    return {b"Date": date.encode("ascii"), b"Authorization": signature.encode("ascii")}


def v2_headers_for(key: FarmerKey, server_address: str, method: str, target: str,
                   body: bytes = b"", date: Optional[str] = None,
                   nonce: Optional[str] = None) -> dict:
    """Build request-bound (DATASERV-V2) headers for one request.

    ``target`` is the path with its query exactly as it will be sent; ``nonce``
    defaults to 32 random hex digits, ``date`` to the current time in RFC 2822 form.
    Returns {b"Date": ..., b"Authorization": b"DATASERV-V2 <nonce> <signature>"}.
    """
    if date is None:
        date = email.utils.formatdate(localtime=True)
    if nonce is None:
        nonce = os.urandom(16).hex()
    signed = v2.message(server_address, method, target, date, nonce,
                        hashlib.sha256(body).hexdigest())
    signature = key.sign_message_fast(signed)
    value = "%s %s %s" % (v2.SCHEME, nonce, signature)
    return {b"Date": date.encode("ascii"), b"Authorization": value.encode("ascii")}
