"""/api/openapi.json: it describes every route, and schemathesis finds the live daemon
keeping to it (no 5xx, statuses, content types, headers and JSON bodies as documented)."""

import json
import os
import re
import subprocess
import sys

from treq.testing import StubTreq
from twisted.internet import defer, task, threads
from twisted.trial import unittest

import dataserv
from dataserv.client.farmer import FarmerClient
from dataserv.daemon.config import Settings
from dataserv.identity.signing import FarmerKey
from dataserv.web import openapi, static_files
from dataserv.web.api import API
from tests.test_daemon import Daemon, child_environment, http_client

SCHEMATHESIS = os.path.join(os.path.dirname(sys.executable), "st")
# What "violates the document" means here. Left out: checks about inputs the API
# refuses in a documented order (an invalid id is 400 before a missing signature is
# 401, as 2.2.x did) and about authentication schemes schemathesis cannot sign.
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_headers_conformance,response_schema_conformance,unsupported_method")


def klein_paths():
    """Every route of the API as an OpenAPI path; /static/<path:name> as its files."""
    paths = set()
    for rule in API.app.url_map.iter_rules():
        if rule.rule == "/static/<path:name>":
            paths |= {p for p in static_files.FILES if p.startswith("/static/")}
        elif rule.rule.startswith("/api/proofs/"):  # a branch: the proof routes' own app
            from dataserv.web.proofs_api import ProofsAPI

            paths |= {"/api/proofs" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", sub.rule)
                      for sub in ProofsAPI.app.url_map.iter_rules()}
        else:
            paths.add(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule))
    return paths


class DocumentTests(unittest.SynchronousTestCase):
    """The document and the routes agree; it is served as JSON."""

    def test_every_route_is_described_and_nothing_else(self):
        self.assertEqual(set(openapi.document()["paths"]), klein_paths())

    def test_every_operation(self):
        for path, item in openapi.document()["paths"].items():
            [operation] = item.values()  # one method a path
            self.assertIn("200", operation["responses"], path)
            self.assertTrue(all("description" in r for r in operation["responses"].values()))
            declared = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            self.assertEqual(declared, set(re.findall(r"{(\w+)}", path)), path)

    def test_served(self):
        api = API(None, None, None, Settings(), task.Clock())
        response = self.successResultOf(StubTreq(api.resource()).get(
            "http://dataserv/api/openapi.json"))
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"Content-Type"), [b"application/json"])
        body = json.loads(self.successResultOf(response.content()))
        self.assertEqual(body, json.loads(json.dumps(openapi.document())))
        self.assertEqual((body["openapi"], body["info"]["version"]),
                         ("3.1.0", dataserv.__version__))


class SchemathesisTests(unittest.TestCase):
    """schemathesis against the real daemon with registered farmers."""

    timeout = 150

    @defer.inlineCallbacks
    def test_the_daemon_keeps_to_its_document(self):
        if not os.access(SCHEMATHESIS, os.X_OK):
            raise unittest.SkipTest("schemathesis is not installed next to %s "
                                    "(pip install -r requirements-test.txt)" % sys.executable)
        http = http_client()
        # schemathesis sends everything from one address, flat out: no per-IP limit.
        daemon = Daemon(self).start("--max-ping", "0", "--rate-limit", "0")
        yield daemon.wait_healthy(http)
        for n in range(3):
            farmer = FarmerClient(daemon.url, FarmerKey.from_seed(b"openapi %d" % n), http=http)
            self.assertEqual((yield farmer.register()).status, 200)
            self.assertEqual((yield farmer.height(n + 1)).status, 200)
        report = os.path.join(daemon.directory, "schemathesis")
        done = yield threads.deferToThread(
            subprocess.run,
            [SCHEMATHESIS, "run", daemon.url + "/api/openapi.json", "--checks", CHECKS,
             "--max-examples", "25", "--seed", "1",
             # One worker: hypothesis parses lambdas' source with ast, and two threads
             # doing that at once trip CPython 3.11's "recursion depth mismatch".
             "--workers", "1",
             "--generation-database", "none", "--no-color", "--request-timeout", "10",
             "--report", "junit", "--report-dir", report],
            cwd=daemon.directory, env=child_environment(), capture_output=True, text=True,
            timeout=120)
        self.assertEqual(done.returncode, 0, done.stdout[-6000:] + done.stderr[-2000:])
        self.assertRegex(done.stdout, r"Tested: 2\d")
        self.assertIn((yield daemon.terminate()), (0, -15))
