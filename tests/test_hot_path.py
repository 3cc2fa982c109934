"""benchmarks.hot_path serves real pings through the daemon's Site in every variant."""

import io
import os
import sys
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from benchmarks import hot_path


class HotPathTests(SynchronousTestCase):
    """A tiny run prints one figure per variant (serve() refuses any answer but 200)."""

    def test_tiny_run(self):
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        tmp = os.path.abspath(self.mktemp())
        os.mkdir(tmp)
        self.patch(tempfile, "tempdir", tmp)
        self.assertEqual(hot_path.main(["--requests", "5", "--batches", "2"]), 0)
        lines = out.getvalue().splitlines()
        self.assertEqual([line[:32].strip() for line in lines[1:]], list(hot_path.VARIANTS))
        self.assertEqual(os.listdir(tmp), [])  # its access logs are not left behind

    def test_serve_refuses_a_failed_answer(self):
        from dataserv.daemon.config import Settings
        from twisted.internet import task

        clock = task.Clock()
        site = hot_path.build("metrics (now)", self.mktemp(), clock, [], Settings())
        with self.assertRaises(RuntimeError):
            hot_path.serve(site, [b"GET /api/ping/nobody HTTP/1.1\r\nHost: x\r\n\r\n"])
