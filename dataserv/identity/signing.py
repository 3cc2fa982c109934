"""
Client-side signing of farmer requests.

The counterpart of L{dataserv.identity.auth}: a L{FarmerKey} signs
C{"<server address> <Date>"} in Bitcoin's signed-message format with
deterministic (RFC 6979) ECDSA, as field clients do, and L{headers_for}
builds the request headers from that.
"""

import base64
import email.utils
import hashlib
import os

from dataserv.identity import v2
from dataserv.identity.addresses import hash160, nodeid_to_address
from dataserv.identity.auth import SECP256K1_ORDER, get_backend, message_digest

__all__ = ["FarmerKey", "headers_for", "v2_headers_for"]

# Header byte for a compressed key is 27 + 4 + recovery id.
_COMPRESSED_HEADER_BASE = 31


class FarmerKey:
    """
    A farmer's secp256k1 private key and the identity derived from it.

    @ivar secret: The 32-byte private key.
    @ivar public_key: The 33-byte compressed public key.
    @ivar nodeid: hash160 of the compressed public key, as lowercase hex.
    @ivar address: The P2PKH address of the compressed public key.
    """

    def __init__(self, secret):
        """
        @param secret: 32 bytes, big-endian, a scalar in [1, n-1].
        @raise ValueError: If C{secret} is not a valid private key.
        """
        from ecdsa import SECP256k1, SigningKey

        secret = bytes(secret)
        if len(secret) != 32:
            raise ValueError("a private key is 32 bytes")
        if not 0 < int.from_bytes(secret, "big") < SECP256K1_ORDER:
            raise ValueError("private key out of range")
        self.secret = secret
        self._signing_key = SigningKey.from_string(secret, curve=SECP256k1)
        self.public_key = self._signing_key.get_verifying_key().to_string("compressed")
        self.nodeid = hash160(self.public_key).hex()
        self.address = nodeid_to_address(self.nodeid)
        # The pure-Python recovery is needed to find the recovery id of
        # signatures made with ecdsa, which does not report it.
        self._ecdsa_backend = get_backend("ecdsa")
        try:
            import coincurve
        except ImportError:
            self._coincurve_key = None
        else:
            self._coincurve_key = coincurve.PrivateKey(secret)

    @classmethod
    def generate(cls):
        """
        Create a key from the operating system's random source.

        @return: A new L{FarmerKey}.
        """
        while True:
            secret = os.urandom(32)
            # Out-of-range values are astronomically unlikely; retry anyway.
            if 0 < int.from_bytes(secret, "big") < SECP256K1_ORDER:
                return cls(secret)

    @classmethod
    def from_seed(cls, seed):
        """
        Derive a key deterministically from a seed; meant for tests.

        @param seed: Any bytes; the secret is their SHA-256.
        @return: A L{FarmerKey}.
        """
        return cls(hashlib.sha256(bytes(seed)).digest())

    def __repr__(self):
        # Never show the secret.
        return f"<FarmerKey {self.address}>"

    def sign_message(self, message):
        """
        Sign a message with the pure-Python ecdsa package.

        @param message: The text to sign (encoded as UTF-8).
        @return: The base64 of the 65-byte compact signature.
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
        for recid in range(4):
            recovered = self._ecdsa_backend.recover(digest, rs, recid, True)
            if recovered == self.public_key:
                header = bytes((_COMPRESSED_HEADER_BASE + recid,))
                return base64.b64encode(header + rs).decode("ascii")
        raise RuntimeError("no recovery id reproduces the public key")

    def sign_message_fast(self, message):
        """
        Sign a message with libsecp256k1 through coincurve when installed.

        Produces the same signature as L{sign_message}, much faster; falls
        back to L{sign_message} if coincurve is not importable.

        @param message: The text to sign (encoded as UTF-8).
        @return: The base64 of the 65-byte compact signature.
        """
        if self._coincurve_key is None:
            return self.sign_message(message)
        signature = self._coincurve_key.sign_recoverable(
            message_digest(message), hasher=None
        )
        # coincurve returns r || s || recid; Bitcoin puts the header first.
        header = bytes((_COMPRESSED_HEADER_BASE + signature[64],))
        return base64.b64encode(header + signature[:64]).decode("ascii")


def headers_for(key, server_address, date=None):
    """
    Build the authentication headers for one request.

    @param key: The farmer's L{FarmerKey}.
    @param server_address: The address of the server being called.
    @param date: The Date header text; defaults to the current local time
        in RFC 2822 form.
    @return: C{{b"Date": ..., b"Authorization": ...}}.
    """
    if date is None:
        date = email.utils.formatdate(localtime=True)
    signature = key.sign_message_fast(server_address + " " + date)
    return {b"Date": date.encode("ascii"), b"Authorization": signature.encode("ascii")}


def v2_headers_for(key: FarmerKey, server_address: str, method: str, target: str,
                   body: bytes = b"", date: str = None, nonce: str = None) -> dict:
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
