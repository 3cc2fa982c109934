"""The operator's view of a live `twistd dataserv`: /metrics parsed with
prometheus_client's own parser, JSON logs through twistd's --logfile, a JSON access log."""

import json
import os

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer
from twisted.trial import unittest

from dataserv.client.farmer import FarmerClient
from dataserv.identity.signing import FarmerKey
from tests.test_daemon import TIB, Daemon, eventually, http_client


def parsed(text):
    """{(sample name, sorted labels): value} of an exposition text."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


class LiveDaemonTests(unittest.TestCase):
    """One daemon, scraped and read the way Prometheus and a log shipper would."""

    timeout = 90

    @defer.inlineCallbacks
    def test_metrics_and_json_logs(self):
        http = http_client()
        daemon = Daemon(self)
        log_path = os.path.join(daemon.directory, "twistd.json")
        access_path = os.path.join(daemon.directory, "access.json")
        daemon.spawn(["--logfile", log_path, "dataserv", "--listen", daemon.listen_string(),
                      "--data-dir", daemon.data_dir, "--summary-interval", "0.5",
                      "--shard-size", str(TIB), "--max-ping", "0", "--max-fill-rate", "0",
                      "--log-format", "json",
                      "--access-log", access_path, "--access-log-format", "json"])
        yield daemon.wait_healthy(http)
        farmers = [FarmerClient(daemon.url, FarmerKey.from_seed(b"operating %d" % i), http=http)
                   for i in range(3)]
        for n, farmer in enumerate(farmers, 1):
            self.assertEqual((yield farmer.register()).status, 200)
            self.assertEqual((yield farmer.height(n)).status, 200)
            self.assertEqual((yield farmer.ping()).status, 200)
            self.assertEqual((yield farmer.ping()).status, 200)  # written too: --max-ping 0

        @defer.inlineCallbacks
        def scraped():
            response = yield http.get(daemon.url + "/metrics")
            self.assertEqual(response.headers.getRawHeaders(b"Content-Type"),
                             [b"text/plain; version=0.0.4; charset=utf-8"])
            found = parsed((yield response.text()))
            return found if found.get(("dataserv_online_farmers", ())) == 3 else None
        found = yield eventually(scraped, 15, "3 farmers online in /metrics")

        def value(name, **labels):
            return found.get((name, tuple(sorted(labels.items()))))
        self.assertEqual(value("dataserv_requests_total", route="register", code="200"), 3)
        self.assertEqual(value("dataserv_requests_total", route="ping", code="200"), 6)
        self.assertEqual(value("dataserv_request_duration_seconds_count", route="ping"), 6)
        self.assertGreater(value("dataserv_request_duration_seconds_sum", route="ping"), 0)
        self.assertEqual(value("dataserv_claimed_tb"), 6.0)
        # 12 requests signed by the client (DATASERV-V2, which no cache answers):
        # each one recovered a key.
        self.assertEqual(value("dataserv_signature_verifications_total"), 12)
        self.assertEqual(value("dataserv_signature_cache_hits_total"), 0)
        self.assertGreater(value("dataserv_summary_passes_total"), 0)
        self.assertGreaterEqual(value("dataserv_snapshot_age_seconds"), 0)
        self.assertEqual(value("dataserv_db_connections", state="alive"), 4)
        self.assertEqual(value("dataserv_ping_batch_size_sum"), 6)  # every ping written

        code = yield daemon.terminate()
        self.assertIn(code, (0, -15), daemon.output())
        with open(log_path) as f:
            events = [json.loads(line) for line in f]  # every line is one JSON object
        messages = [e["message"] for e in events]
        self.assertIn("Server Shut Down.", messages)
        self.assertTrue(all({"time", "level", "namespace", "message"} <= set(e) for e in events))
        with open(access_path) as f:
            access = [json.loads(line) for line in f]
        pings = [a for a in access if a["path"].startswith("/api/ping/")]
        self.assertEqual([a["status"] for a in pings], [200] * 6)
        self.assertTrue(all(a["client"] == "127.0.0.1" and a["duration_ms"] >= 0 for a in pings))
