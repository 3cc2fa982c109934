"""Structured logs: --log-format json and --access-log-format json."""

import io
import json
import os
from types import SimpleNamespace

from twisted.application import service
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.logger import ILogObserver, Logger, LogLevel
from twisted.python.failure import Failure
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from dataserv.daemon import logs
from dataserv.daemon.config import Settings
from tests.test_options import ParsingTestsMixin


def _emitted(emit):
    """The lines a Logger wrote through a JSON observer while ``emit(logger)`` ran."""
    out = io.StringIO()
    logger = Logger(namespace="dataserv.test", observer=logs.json_observer(out))
    emit(logger)
    return [json.loads(line) for line in out.getvalue().splitlines()]


class EventTests(SynchronousTestCase):
    """One flat JSON object per event: time, level, namespace, message, fields."""

    def test_fields(self):
        def emit(log):
            log.warn("ping {address} took {seconds}s", address="1Abc", seconds=0.25,
                     raw=b"bytes", ids=(1, 2), obj=object)
        [line] = _emitted(emit)
        self.assertRegex(line.pop("time"), r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertEqual(line, {
            "level": "warn", "namespace": "dataserv.test",
            "message": "ping 1Abc took 0.25s", "address": "1Abc", "seconds": 0.25,
            "raw": "bytes", "ids": [1, 2], "obj": str(object)})

    def test_field_names_never_hide_the_base_keys(self):
        [line] = _emitted(lambda log: log.info("{namespace}", namespace="mine", time="x"))
        self.assertEqual((line["namespace"], line["message"]), ("dataserv.test", "mine"))
        self.assertRegex(line["time"], r"^\d{4}-")

    def test_failure_carries_its_traceback(self):
        def emit(log):
            try:
                1 / 0
            except ZeroDivisionError:
                log.failure("summary pass failed", Failure())
        [line] = _emitted(emit)
        self.assertEqual((line["level"], line["message"]), ("critical", "summary pass failed"))
        self.assertIn("ZeroDivisionError", line["traceback"])

    def test_time_is_the_events(self):
        line = json.loads(logs.event_as_json({"log_time": 0.5, "log_level": LogLevel.error,
                                              "log_format": "x", "log_namespace": "n"}))
        self.assertEqual(line, {"time": "1970-01-01T00:00:00.500Z", "level": "error",
                                "namespace": "n", "message": "x"})


class TwistdLoggerTests(SynchronousTestCase, ParsingTestsMixin):
    """--log-format json hands twistd a --logger factory that writes where twistd would."""

    def twistd_options(self, *args):
        options = ServerOptions()
        options.parseOptions(list(args))
        return options

    def application(self, *args):
        """What twistd builds for a command line: the application and its log observer."""
        from twisted.application import app
        from twisted.scripts._twistd_unix import UnixAppLogger

        options = self.twistd_options(*args)
        from dataserv.daemon import service as daemon_service

        class Daemon(service.Service):
            def take_port(self):
                pass

        self.patch(daemon_service, "Dataserv", lambda settings, reactor: Daemon())
        runner = app.ApplicationRunner(options)
        runner.loggerFactory = UnixAppLogger
        application = runner.createOrGetApplication()
        return application, application.getComponent(ILogObserver, None)

    def test_json_gives_the_application_a_json_observer(self):
        _, observer = self.application("-n", "dataserv", "--log-format", "json")
        self.assertIs(observer.formatEvent, logs.event_as_json)
        _, observer = self.application("-n", "dataserv")
        self.assertIsNone(observer)

    def test_the_daemon_still_runs_under_it(self):
        application, _ = self.application("-n", "dataserv", "--log-format", "json")
        [wrapper] = list(service.IServiceCollection(application))
        self.assertIsInstance(wrapper.daemon, service.Service)
        self.assertEqual(list(wrapper), [wrapper.daemon])

    def test_logfile(self):
        path = self.mktemp()
        observer = logs.twistd_json_logger({"logfile": path, "nodaemon": True})()
        Logger(namespace="n", observer=observer).info("hello {who}", who="you")
        with open(path) as f:
            line = json.loads(f.read())
        self.assertEqual((line["message"], line["who"]), ("hello you", "you"))

    def test_stdout_without_a_logfile(self):
        self.patch(logs.sys, "stdout", io.StringIO())
        observer = logs.twistd_json_logger({"logfile": None, "nodaemon": True})()
        Logger(namespace="n", observer=observer).info("on stdout")
        self.assertEqual(json.loads(logs.sys.stdout.getvalue())["message"], "on stdout")

    def test_invalid_format(self):
        self.assertRejected(["--log-format", "xml"], names="--log-format")
        self.assertRejected(["--access-log-format", "common"], names="--access-log-format")


def _request(started=None):
    headers = {b"user-agent": b'curl "8"', b"referer": None}
    return SimpleNamespace(
        getClientAddress=lambda: IPv4Address("TCP", "192.0.2.7", 4242), method=b"GET",
        uri=b"/api/ping/1Abc", clientproto=b"HTTP/1.1", code=200, sentLength=14,
        getHeader=headers.get, started=started)


class AccessLogTests(SynchronousTestCase):
    """--access-log-format json: one object per request in the access log file."""

    def test_line(self):
        clock = task.Clock()
        clock.advance(86400.25)
        line = json.loads(logs.json_access_formatter(clock)("[ignored]", _request(86400.0)))
        self.assertEqual(line, {
            "time": "1970-01-02T00:00:00.250Z", "client": "192.0.2.7", "method": "GET",
            "path": "/api/ping/1Abc", "protocol": "HTTP/1.1", "status": 200, "bytes": 14,
            "referrer": None, "user_agent": 'curl "8"', "duration_ms": 250.0})

    def site_lines(self, access_log_format):
        from dataserv.daemon.service import Site, access_log_formatter

        clock = task.Clock()
        path = self.mktemp()
        settings = Settings(access_log=path, access_log_format=access_log_format)
        site = Site(Resource(), logPath=path, reactor=clock,
                    logFormatter=access_log_formatter(settings, clock))
        site.startFactory()
        site.log(_request())
        site.log(_request())
        site.stopFactory()
        with open(path) as f:
            return f.read().splitlines()

    def test_site_writes_json_lines(self):
        lines = self.site_lines("json")
        self.assertEqual([json.loads(line)["path"] for line in lines], ["/api/ping/1Abc"] * 2)

    def test_combined_stays_the_default(self):
        lines = self.site_lines("combined")
        self.assertEqual(len(lines), 2)
        self.assertTrue(lines[0].startswith('"192.0.2.7" - - '), lines[0])
