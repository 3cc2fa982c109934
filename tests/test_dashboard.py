"""Tests for the dashboard page at /."""

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase


class DashboardTests(SynchronousTestCase):
    """GET / is a page that reads the public JSON routes."""

    def test_page(self):
        from treq.testing import StubTreq

        from dataserv.web.api import API
        from dataserv.daemon.config import Settings

        api = API(None, None, None, Settings(), task.Clock())
        response = self.successResultOf(StubTreq(api.resource()).get("http://dataserv/"))
        body = self.successResultOf(response.content())
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"Content-Type"),
                         [b"text/html; charset=utf-8"])
        for route in (b"/api/total", b"/api/online/json", b"/api/total/history"):
            self.assertIn(b'"' + route + b'"', body)
