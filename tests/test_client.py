"""Tests for the farmer client's signing helpers (the routes are driven end to end
in test_daemon and through StubTreq in test_api)."""

import io
import json
import re
import sys
import time

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from dataserv.client import __main__ as command_line
from dataserv.client.farmer import FarmerClient, NoServerAddress
from dataserv.identity import v2
from dataserv.identity.auth import Verifier, get_backend
from dataserv.identity.signing import FarmerKey

SERVER = "15uC1tTcVsN3K4wycQ8Bj7m1UqL1GgtX8t"


class FakeHTTP:
    """Answers /api/address only (``code`` and ``body``: this server's by default),
    and counts the calls."""

    def __init__(self, code=200, body=json.dumps({"address": SERVER}).encode()):
        self.calls = []
        self.code, self.body = code, body

    def get(self, url, headers=None):
        self.calls.append(url)
        response = type("Response", (), {
            "code": self.code, "headers": None,
            "content": lambda _: defer.succeed(self.body)})()
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

    def test_v2_by_default(self):
        """The client signs DATASERV-V2 headers bound to the request it makes."""
        key = FarmerKey.from_seed(b"client test")
        client = FarmerClient("http://dataserv/", key, http=FakeHTTP())
        path = "/api/height/%s/7" % key.address
        signed = self.successResultOf(client.signed_headers(path))
        self.assertTrue(v2.is_v2(signed[b"Authorization"]))
        v2.verify(get_backend(), SERVER, 30, key.address, "GET", path, signed[b"Date"],
                  signed[b"Authorization"], b"", time.time())
        with self.assertRaises(v2.AuthenticationFailed):
            v2.verify(get_backend(), SERVER, 30, key.address, "GET", "/api/ping/" + key.address,
                      signed[b"Date"], signed[b"Authorization"], b"", time.time())

    def test_a_server_that_does_not_say_its_address_is_one_clear_error(self):
        """Not a dataserv server (or not answering properly): what came instead, not
        a JSON parser's complaint; asked again next time."""
        key = FarmerKey.from_seed(b"client test")
        for code, body, shown in (
                (404, b"<html>\n<h1>Not Found</h1></html>", "404 an HTML page"),
                (200, b"{}", "200 {}"),
                (200, b"not json", "200 not json"),
                (503, b"Service unavailable", "503 Service unavailable")):
            http = FakeHTTP(code, body)
            client = FarmerClient("http://elsewhere", key, http=http)
            failure = self.failureResultOf(client.signed_headers(), NoServerAddress)
            self.assertEqual(failure.getErrorMessage(),
                             "GET /api/address answered %s; is this a dataserv server?" % shown)
            self.failureResultOf(client.signed_headers(), NoServerAddress)
            self.assertEqual(len(http.calls), 2)

    def test_v2_curl_pair_for_a_path(self):
        """`headers PATH` prints a v2 pair for one GET of PATH (a ping by default)."""
        key = FarmerKey.from_seed(b"client test")
        client = FarmerClient("http://dataserv/prefix", key, http=FakeHTTP())
        for path, target in ((None, "/prefix/api/ping/" + key.address),
                             ("/api/total/history?since=5", "/prefix/api/total/history?since=5")):
            reply = self.successResultOf(client.headers(path))
            found = dict(re.findall(r"-H '([^:]+): ([^']+)'", reply.text))
            self.assertEqual(set(found), {"Date", "Authorization"})
            self.assertTrue(found["Authorization"].startswith("DATASERV-V2 "))
            v2.verify(get_backend(), SERVER, 30, key.address, "GET", target, found["Date"],
                      found["Authorization"], b"", time.time())


class CommandLineTests(SynchronousTestCase):

    def run_main(self, argv):
        made = []
        real = command_line.FarmerClient

        def client(*args, **kwargs):
            made.append(kwargs)
            return real(*args, **kwargs)

        self.patch(command_line, "FarmerClient", client)
        self.patch(sys, "stdout", io.StringIO())
        self.patch(sys, "stderr", io.StringIO())
        reactor = type("R", (), {"run": lambda self: None, "stop": lambda self: None})()
        self.patch(FarmerClient, "headers", lambda self, *a: defer.succeed(None))
        command_line.main(argv, reactor=reactor)
        return made[0]

    def test_legacy_switch(self):
        self.assertEqual(self.run_main(["http://x", "--legacy", "headers"])["legacy"], True)
        self.assertEqual(self.run_main(["http://x", "headers"])["legacy"], False)
