"""Farmers and pre-signed raw requests, made the way the field clients make them.

Signing happens before a run (coincurve, ~30 µs a signature) so that the load
generator only replays bytes. Every request carries its own connection
(``Connection: close``), a ``Date`` from ``formatdate(localtime=True)`` and the
Bitcoin signed-message ``Authorization`` for the server's address (legacy), or a
``DATASERV-V2`` one bound to the request. The server accepts each authenticated
request once, so a run's requests are all different: :func:`signed_rounds` signs
every farmer's request with several Dates, a second apart.
"""

import base64
import email.utils
import hashlib
import os
import time

import coincurve

from dataserv.identity import v2
from dataserv.identity.addresses import hash160, nodeid_to_address
from dataserv.identity.auth import message_digest

# The most Dates a farmer's request is signed with in one run: the oldest must
# still pass the server's Date check (30 s by default) when the run ends.
MAX_ROUNDS = 12


class BenchFarmer:
    """A farmer key built with coincurve only (fast to make by the thousand)."""

    __slots__ = ("_key", "address", "nodeid")

    def __init__(self, seed):
        self._key = coincurve.PrivateKey(hashlib.sha256(seed).digest())
        self.nodeid = hash160(self._key.public_key.format(compressed=True)).hex()
        self.address = nodeid_to_address(self.nodeid)

    def authorization(self, message):
        """Base64 compact recoverable signature (header byte first, compressed key)."""
        signature = self._key.sign_recoverable(message_digest(message), hasher=None)
        return base64.b64encode(bytes((31 + signature[64],)) + signature[:64]).decode()


def farmers(count, tag="bench"):
    """``count`` deterministic farmers."""
    return [BenchFarmer(b"%s-%d" % (tag.encode(), i)) for i in range(count)]


def raw_get(host, path, headers=()):
    """A raw HTTP/1.1 GET with Connection: close."""
    lines = ["GET %s HTTP/1.1" % path, "Host: %s" % host]
    lines += ["%s: %s" % pair for pair in headers]
    lines += ["Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1")


def signed_get(host, path, farmer, server_address, date=None, extra=()):
    """A raw GET signed for ``server_address`` by ``farmer`` (plus ``extra`` headers)."""
    date = date or email.utils.formatdate(localtime=True)
    auth = farmer.authorization(server_address + " " + date)
    return raw_get(host, path, [("Date", date), ("Authorization", auth)] + list(extra))


def v2_signed_get(host, path, farmer, server_address, date=None, extra=()):
    """A raw GET with DATASERV-V2 headers for ``server_address`` by ``farmer`` (plus
    ``extra`` headers)."""
    date = date or email.utils.formatdate(localtime=True)
    nonce = os.urandom(16).hex()
    signed = v2.message(server_address, "GET", path, date, nonce, v2.EMPTY_BODY_SHA256)
    auth = "%s %s %s" % (v2.SCHEME, nonce, farmer.authorization(signed))
    return raw_get(host, path, [("Date", date), ("Authorization", auth)] + list(extra))


def signed_requests(host, farmers_list, server_address, path_for, date=None,
                    request_bound=False, headers_for=None):
    """One signed request per farmer; ``path_for(farmer)`` gives the path and
    ``headers_for(index, farmer)``, if given, more headers; DATASERV-V2 headers when
    ``request_bound``."""
    date = date or email.utils.formatdate(localtime=True)
    sign = v2_signed_get if request_bound else signed_get
    return [sign(host, path_for(f), f, server_address, date,
                 headers_for(i, f) if headers_for else ())
            for i, f in enumerate(farmers_list)]


def rounds_for(farmers_count, seconds, rate=6000):
    """How many Dates make ``seconds`` of load at up to ``rate`` req/s all different."""
    needed = int(seconds * rate / max(1, farmers_count)) + 1
    return max(1, min(MAX_ROUNDS, needed))


def signed_rounds(host, farmers_list, server_address, path_for, rounds, request_bound=False):
    """``rounds`` signed requests per farmer, Dates a second apart (the newest now),
    round after round: every request differs from every other."""
    now = time.time()
    requests = []
    for r in range(rounds):
        date = email.utils.formatdate(now - r, localtime=True)
        requests += signed_requests(host, farmers_list, server_address, path_for, date,
                                    request_bound)
    return requests


def forwarded_from_many_networks(index, farmer):
    """X-Forwarded-For from a /24 of its own for each of 65 536 farmers, as a
    trusted proxy in front of the daemon would send it."""
    return [("X-Forwarded-For", "10.%d.%d.7" % ((index >> 8) & 255, index & 255))]
