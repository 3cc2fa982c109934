"""Tests for the dashboard's files: /, /favicon.ico and the fixed set under /static/."""

import os
import re

from treq.testing import StubTreq
from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from dataserv.daemon.config import Settings
from dataserv.web import static_files
from dataserv.web.api import API

STATIC = os.path.join(os.path.dirname(static_files.__file__), "static")


def _api():
    return StubTreq(API(None, None, None, Settings(), task.Clock()).resource())


class DashboardTests(SynchronousTestCase):
    """GET / is a page whose script reads the public JSON routes."""

    def get(self, path, headers=None):
        http = _api()
        response = self.successResultOf(http.get("http://dataserv" + path, headers=headers))
        return response, self.successResultOf(response.content())

    def test_page(self):
        response, body = self.get("/")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"Content-Type"),
                         [b"text/html; charset=utf-8"])
        self.assertIn(b'<meta name="viewport" content="width=device-width, initial-scale=1">',
                      body)
        _, script = self.get("/static/app.js")
        for route in (b"/api/total", b"/api/online/json", b"/api/total/history",
                      b"/api/farmer/", b"/api/address"):
            self.assertIn(b'"' + route, script)

    def test_every_file_with_its_type_and_cache_policy(self):
        expected = {
            "/": (b"text/html; charset=utf-8", b"no-cache"),
            "/favicon.ico": (b"image/svg+xml", b"no-cache"),
            "/static/favicon.svg": (b"image/svg+xml", b"no-cache"),
            "/static/app.js": (b"text/javascript; charset=utf-8", b"no-cache"),
            "/static/style.css": (b"text/css; charset=utf-8", b"no-cache"),
            "/static/vendor/chart.js-4.5.1/chart.umd.min.js": (
                b"text/javascript; charset=utf-8", b"public, max-age=31536000, immutable"),
        }
        found = {}
        for path in expected:
            response, body = self.get(path)
            self.assertEqual(response.code, 200, path)
            self.assertTrue(body, path)
            found[path] = (response.headers.getRawHeaders(b"Content-Type")[0],
                           response.headers.getRawHeaders(b"Cache-Control")[0])
        self.assertEqual(found, expected)
        self.assertEqual(set(expected), set(static_files.FILES))

    def test_etag_revalidation(self):
        response, _ = self.get("/static/app.js")
        [etag] = response.headers.getRawHeaders(b"ETag")
        again, body = self.get("/static/app.js", {b"If-None-Match": [b'"other", ' + etag]})
        self.assertEqual((again.code, body), (304, b""))
        changed, body = self.get("/static/app.js", {b"If-None-Match": [b'"other"']})
        self.assertEqual(changed.code, 200)
        self.assertTrue(body)

    def test_only_the_fixed_files(self):
        for path in ("/static/", "/static/index.html.bak", "/static/../api/address",
                     "/static/%2e%2e/%2e%2e/setup.py", "/static/vendor/",
                     "/static/vendor/chart.js-4.5.1/README.md", "/static//etc/passwd",
                     "/static/..%2fapi.py"):
            response, body = self.get(path)
            self.assertEqual(response.code, 404, path)
            self.assertNotIn(b"import", body)

    def test_the_page_links_only_files_that_are_served(self):
        with open(os.path.join(STATIC, "index.html")) as f:
            links = set(re.findall(r'(?:src|href)="(/[^"]*)"', f.read()))
        links.discard("/api/openapi.json")
        self.assertEqual(links - set(static_files.FILES), set())
        self.assertIn("/static/" + static_files.CHART_JS, links)

    def test_vendored_library_comes_with_its_licence_and_origin(self):
        folder = os.path.join(STATIC, os.path.dirname(static_files.CHART_JS))
        with open(os.path.join(folder, "LICENSE.md")) as f:
            self.assertIn("MIT License", f.read())
        with open(os.path.join(folder, "README.md")) as f:
            readme = f.read()
        self.assertIn("npm pack chart.js@4.5.1", readme)
        with open(os.path.join(STATIC, static_files.CHART_JS)) as f:
            self.assertIn("Chart.js v4.5.1", f.read(200))
