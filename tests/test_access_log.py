"""The access log: written out every second, reopened on request (SIGHUP)."""

import errno
import os

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.trial import unittest
from twisted.web.resource import Resource

from dataserv.daemon.service import Site


class Ok(Resource):
    """200 "ok" for every path."""

    isLeaf = True

    def render_GET(self, request):  # noqa: N802
        return b"ok"


class BrokenFile:
    """A log file whose buffer can no longer be written (a full disk)."""

    def write(self, line):
        pass

    def flush(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self):
        pass


class AccessLogTests(unittest.SynchronousTestCase):

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.path = os.path.join(self.directory, "access.log")
        self.clock = task.Clock()
        self.site = Site(Ok(), logPath=self.path, reactor=self.clock)
        self.site.doStart()
        self.addCleanup(self.stop)

    def stop(self):
        if self.site.numPorts:
            self.site.doStop()

    def request(self, path):
        """One request through the real HTTP parser; the channel is closed after it."""
        channel = self.site.buildProtocol(IPv4Address("TCP", "192.0.2.7", 4321))
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b" 200 ", transport.value())
        channel.connectionLost(None)

    def read(self, path=None):
        with open(path or self.path) as f:
            return f.read()

    def test_written_out_within_a_second(self):
        self.request(b"/first")
        self.assertEqual(self.read(), "")  # still in the 64 KiB buffer
        self.clock.advance(Site.FLUSH_INTERVAL)
        self.assertIn('"GET /first HTTP/1.1" 200', self.read())
        self.request(b"/second")
        self.clock.advance(Site.FLUSH_INTERVAL)
        self.assertEqual(len(self.read().splitlines()), 2)

    def test_no_flushing_after_stop(self):
        self.request(b"/first")
        self.site.doStop()
        self.assertIn("/first", self.read())  # closing wrote it out
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reopen_after_the_file_was_moved(self):
        self.request(b"/before")
        os.rename(self.path, self.path + ".1")
        self.site.reopen_access_log()
        self.request(b"/after")
        self.clock.advance(Site.FLUSH_INTERVAL)
        self.assertIn("/before", self.read(self.path + ".1"))
        self.assertNotIn("/after", self.read(self.path + ".1"))
        self.assertIn("/after", self.read())
        self.assertNotIn("/before", self.read())

    def test_reopen_failure_keeps_the_old_file(self):
        self.request(b"/before")
        moved = self.directory + ".moved"
        os.rename(self.directory, moved)  # the path cannot be opened again
        with capturedLogs() as events:
            self.site.reopen_access_log()
        [event] = events
        self.assertIn("cannot reopen the access log", event["log_format"])
        self.request(b"/after")
        self.clock.advance(Site.FLUSH_INTERVAL)
        self.assertIn("/after", self.read(os.path.join(moved, "access.log")))

    def test_write_failure_logged_once(self):
        self.site.logFile = BrokenFile()
        with capturedLogs() as events:
            for _ in range(5):
                self.clock.advance(Site.FLUSH_INTERVAL)
        self.assertEqual([e["error"] for e in events], ["No space left on device"])
        self.assertTrue(self.site._flushing.running)  # the loop keeps going

    def test_without_access_log(self):
        site = Site(Ok(), reactor=self.clock)
        site.doStart()
        self.addCleanup(site.doStop)
        site.reopen_access_log()  # nothing to reopen: no error
        self.assertIsNone(site._flushing)
