"""Request-bound ("v2") authentication: the signature covers the whole request.

A v2 request carries ``Date`` and ``Authorization: DATASERV-V2 <nonce> <signature>``.
The signature is the same 65-byte compact recoverable signature, base64 encoded, made
with the farmer's own key over :func:`message`, hashed the Bitcoin signed-message way
(the same key, the same hashing as the legacy scheme; only the message differs)::

    dataserv-v2\\n<server address>\\n<METHOD>\\n<path?query>\\n<Date>\\n<nonce>\\n<hex sha256(body)>

The nonce makes two otherwise identical requests in one second (the Date's resolution)
different, so "each v2 signature is accepted once" never refuses an honest request.
The scheme name holds a space and a hyphen, which base64 never does, so a v2 header
can never be read as a legacy one (nor a legacy one as v2).
"""

import hashlib
import re

from dataserv.identity.auth import (
    AuthenticationFailed,
    RecoveryBackend,
    _check_window,
    _expected_hash160,
    _header_text,
    _parse_date,
    _recovered_hash160,
    message_digest,
)

__all__ = ["SCHEME", "is_v2", "message", "parse_authorization", "verify"]

SCHEME = "DATASERV-V2"
_PREFIX = SCHEME.encode("ascii") + b" "
_TEXT_PREFIX = SCHEME + " "
EMPTY_BODY_SHA256 = hashlib.sha256(b"").hexdigest()

# A nonce is 8 to 64 URL-safe characters; the client sends 32 hex digits.
_NONCE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_MAX_AUTHORIZATION_LENGTH = 200
_MAX_DATE_LENGTH = 100
_MAX_TARGET_LENGTH = 8192


def is_v2(authorization: object) -> bool:
    """Whether an Authorization header value (bytes or str) names the v2 scheme."""
    if isinstance(authorization, bytes):
        return authorization.startswith(_PREFIX)
    return isinstance(authorization, str) and authorization.startswith(_TEXT_PREFIX)


def message(server_address: str, method: str, target: str, date: str, nonce: str,
            body_sha256_hex: str) -> bytes:
    """The exact bytes a v2 signature signs (before the signed-message hashing)."""
    return "\n".join(("dataserv-v2", server_address, method, target, date, nonce,
                      body_sha256_hex)).encode("utf-8")


def parse_authorization(value: object) -> tuple:
    """(nonce, base64 signature) from a v2 Authorization header, or AuthenticationFailed."""
    text = _header_text(value, _MAX_AUTHORIZATION_LENGTH, "Authorization")
    parts = text.split(" ")
    if len(parts) != 3 or parts[0] != SCHEME:
        raise AuthenticationFailed("malformed DATASERV-V2 Authorization")
    if not _NONCE.match(parts[1]):
        raise AuthenticationFailed("malformed DATASERV-V2 nonce")
    return parts[1], parts[2]


def _text(value: object, limit: int, name: str) -> str:
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            raise AuthenticationFailed("%s is not ASCII" % name) from None
    if not isinstance(value, str) or len(value) > limit or not value.isascii():
        raise AuthenticationFailed("%s is not acceptable" % name)
    return value


def verify(backend: RecoveryBackend, server_address: str, auth_timeout: float, address: str,
           method: object, target: object, date_header: object, authorization: object,
           body: bytes, now: float) -> bytes:
    """Check one v2 request; returns the signed message (what the replay key names).

    ``target`` is the request target exactly as sent (path and query), ``body`` the
    request body (b"" for a GET). Raises AuthenticationFailed for every failure.
    """
    nonce, signature = parse_authorization(authorization)
    date_text = _header_text(date_header, _MAX_DATE_LENGTH, "Date")
    expected = _expected_hash160(address)
    _check_window(_parse_date(date_text), now, auth_timeout)
    signed = message(server_address, _text(method, 16, "method"),
                     _text(target, _MAX_TARGET_LENGTH, "request target"), date_text, nonce,
                     hashlib.sha256(body or b"").hexdigest())
    if _recovered_hash160(backend, message_digest(signed), signature) != expected:
        raise AuthenticationFailed("signature does not match the request")
    return signed
