"""Tests for :mod:`dataserv.web.metrics` and the /metrics route."""

from types import SimpleNamespace

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from dataserv.web import metrics
from dataserv.storage.batching import GroupCommit
from dataserv.storage.store import Timings

ADDRESS = "1F3sAm6ZtwLAUnj7d38pGFxtP3RVEvtsbV"


class RouteTests(SynchronousTestCase):
    """Paths become a few bounded names; farmer ids never become labels."""

    def test_names(self):
        cases = {
            b"/api/ping/" + ADDRESS.encode(): "ping",
            b"/api/register/" + ADDRESS.encode() + b"/3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy": "register",
            b"/api/height/" + ADDRESS.encode() + b"/5": "height",
            b"/api/online": "online",
            b"/api/online/json": "online_json",
            b"/api/total/history?since=1": "total_history",
            b"/api/total": "total",
            b"/health": "health",
            b"/metrics": "metrics",
            b"/": "root",
            b"/api/" + ADDRESS.encode(): "other",
            b"/wp-login.php": "other",
        }
        self.assertEqual({path: metrics.route_of(path) for path in cases}, cases)


def _fake_daemon(passes=3):
    timings = Timings(task.Clock())
    timings.counts, timings.seconds = {"record_contacts": 4}, {"record_contacts": 0.5}
    pings = GroupCommit(lambda items: None)
    pings.batches, pings.items = 2, 9
    summariser = SimpleNamespace(
        passes=passes, failures=1, last_pass_phases={"fetch": 0.25},
        snapshot=SimpleNamespace(online_farmers=7, total_tb=1.5))
    database = SimpleNamespace(status=lambda: (True, {"connections": {"alive": 3}}))
    return timings, pings, summariser, database


class RenderTests(SynchronousTestCase):
    """The exposition text carries every counter with its value."""

    def test_body(self):
        requests = metrics.RequestCounter()
        for uri, code in ((b"/api/ping/x", 200), (b"/api/ping/y", 200), (b"/api/ping/z", 401)):
            requests.count(SimpleNamespace(uri=uri, code=code))
        timings, pings, summariser, _ = _fake_daemon()
        body = metrics.render(requests, timings, pings, summariser, 3).decode()
        for line in ('dataserv_requests_total{code="200",route="ping"} 2',
                     'dataserv_requests_total{code="401",route="ping"} 1',
                     'dataserv_db_transactions_total{name="record_contacts"} 4',
                     'dataserv_db_transaction_seconds_total{name="record_contacts"} 0.5',
                     "dataserv_db_connections_alive 3",
                     "dataserv_ping_batches_total 2",
                     "dataserv_ping_batch_items_total 9",
                     "dataserv_summary_passes_total 3",
                     "dataserv_summary_failures_total 1",
                     'dataserv_summary_phase_seconds{phase="fetch"} 0.25',
                     "dataserv_online_farmers 7",
                     "dataserv_total_tb 1.5"):
            self.assertIn(line + "\n", body)
        self.assertIn("# TYPE dataserv_requests_total counter\n", body)

    def test_no_snapshot_no_database(self):
        timings, pings, summariser, _ = _fake_daemon(passes=0)
        summariser.snapshot = None
        body = metrics.render(metrics.RequestCounter(), timings, pings, summariser, 0).decode()
        self.assertIn("dataserv_db_connections_alive 0\n", body)
        self.assertNotIn("dataserv_online_farmers", body)


class WiringTests(SynchronousTestCase):
    """The daemon's Site counts every finished request; the API serves the text."""

    def test_site_counts_without_an_access_log(self):
        from dataserv.daemon.service import Site
        from twisted.web.resource import Resource

        counter = metrics.RequestCounter()
        site = Site(Resource(), counter, logPath=None, reactor=task.Clock())
        site.log(SimpleNamespace(uri=b"/api/total", code=200))
        self.assertEqual(counter.counts, {("total", 200): 1})

    def test_route(self):
        from treq.testing import StubTreq

        from dataserv.web.api import API
        from dataserv.daemon.config import Settings

        timings, pings, summariser, database = _fake_daemon()
        farmers = SimpleNamespace(timings=timings, pings=pings)
        api = API(farmers, summariser, database, Settings(), task.Clock())
        http = StubTreq(api.resource())
        response = self.successResultOf(http.get("http://dataserv/metrics"))
        body = self.successResultOf(response.content()).decode()
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"Content-Type"),
                         [b"text/plain; version=0.0.4; charset=utf-8"])
        self.assertIn("dataserv_summary_passes_total 3\n", body)

