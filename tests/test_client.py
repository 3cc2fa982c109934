"""Tests for the farmer client's signing helpers (the routes are driven end to end
in test_daemon and through StubTreq in test_api)."""

import json
import re
import time

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from dataserv.identity.auth import Verifier
from dataserv.client.farmer import FarmerClient
from dataserv.identity.signing import FarmerKey

SERVER = "15uC1tTcVsN3K4wycQ8Bj7m1UqL1GgtX8t"


class FakeHTTP:
    """Answers /api/address only, and counts the calls."""

    def __init__(self):
        self.calls = []

    def get(self, url, headers=None):
        self.calls.append(url)
        body = json.dumps({"address": SERVER}).encode()
        response = type("Response", (), {
            "code": 200, "headers": None, "content": lambda self: defer.succeed(body)})()
        return defer.succeed(response)


class HeaderTests(SynchronousTestCase):

    def test_curl_arguments_verify(self):
        """`headers` prints curl -H arguments whose signature the server accepts
        (legacy: with --legacy)."""
        key = FarmerKey.from_seed(b"client test")
        http = FakeHTTP()
        client = FarmerClient("http://dataserv", key, http=http, legacy=True)
        reply = self.successResultOf(client.headers())
        found = dict(re.findall(r"-H '([^:]+): ([^']+)'", reply.text))
        self.assertEqual(set(found), {"Date", "Authorization"})
        Verifier(SERVER, 30).verify(key.address, found["Date"], found["Authorization"],
                                    time.time())
        # The server's address is asked for once, then kept.
        self.successResultOf(client.signed_headers())
        self.assertEqual(http.calls, ["http://dataserv/api/address"])
