"""End to end: `twistd dataserv` as a real process, over real sockets, with its own
embedded PostgreSQL. The plugin must come from the installed package (the child runs
in a scratch directory), so run `pip install .` after changing the source."""

import filecmp
import glob
import hashlib
import os
import pwd
import signal
import socket
import subprocess
import sys
import time

import psycopg2
from treq.client import HTTPClient
from twisted.internet import defer, reactor, task
from twisted.trial import unittest
from twisted.web.client import Agent, HTTPConnectionPool

from dataserv.client.farmer import FarmerClient
from dataserv.daemon.config import OPTIONS
from dataserv.storage.pgcluster import Cluster, ClusterError
from dataserv.identity.signing import FarmerKey
from tests import pg
from tests.test_pgcluster import reachable_directory, server_bindir

SOURCE_TREE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
# One TiB per unit of height: /api/total's total_TB then equals the summed height.
TIB = 1024 ** 4


def stale_installed_files():
    """Source files that the installed package (what twistd runs) lacks or has otherwise."""
    found = subprocess.run(
        [sys.executable, "-c", "import dataserv, os; print(os.path.dirname(dataserv.__file__))"],
        cwd="/", env=child_environment(), capture_output=True, text=True, check=True)
    installed = found.stdout.strip()
    stale = []
    for pattern in ("*.py", os.path.join("schema", "*.sql")):
        for source in glob.glob(os.path.join(SOURCE_TREE, "dataserv", pattern)):
            relative = os.path.relpath(source, os.path.join(SOURCE_TREE, "dataserv"))
            target = os.path.join(installed, relative)
            if not (os.path.exists(target) and filecmp.cmp(source, target, shallow=False)):
                stale.append(relative)
    # A migration the source no longer has (setuptools' build/ directory keeps them).
    for target in glob.glob(os.path.join(installed, "schema", "*.sql")):
        relative = os.path.relpath(target, installed)
        if not os.path.exists(os.path.join(SOURCE_TREE, "dataserv", relative)):
            stale.append(relative)
    return sorted(stale)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_listening(port):
    """Whether something accepts connections on 127.0.0.1:port."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def first_line_of_answer(port, request):
    """Send raw request bytes and return the first line of the answer (b"" if none)."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(request)
            while b"\r\n" not in received:
                chunk = s.recv(4096)
                if not chunk:
                    break
                received += chunk
        except OSError:
            pass  # a reset: whatever arrived before it is the answer
    return received.split(b"\r\n", 1)[0]


def sleep(seconds):
    """A Deferred that fires after ``seconds`` on the real reactor."""
    return task.deferLater(reactor, seconds, lambda: None)


@defer.inlineCallbacks
def eventually(check, timeout, what):
    """Call check() (may return a Deferred) until it is true; fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = yield check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("%s did not happen within %ss" % (what, timeout))
        yield sleep(0.1)


def http_client():
    """treq without persistent connections, so the reactor is clean after a test."""
    return HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))


def child_environment(**extra):
    """This process's environment without the daemon's DATASERV_* settings, plus ``extra``."""
    settings = {o.environment for o in OPTIONS}
    env = {k: v for k, v in os.environ.items() if k not in settings}
    env.update(extra)
    return env


class Daemon:
    """One `twistd -n` child in a directory of its own; killed (with its PostgreSQL
    stopped) at cleanup if a test leaves it running."""

    _stale = None

    def __init__(self, testcase, directory=None, data_dir=None):
        if not os.access(TWISTD, os.X_OK):
            raise unittest.SkipTest("no twistd next to %s" % (sys.executable,))
        if Daemon._stale is None:
            Daemon._stale = stale_installed_files()
        if Daemon._stale:
            raise AssertionError("twistd would run an installed dataserv that differs from "
                                 "this source (%s): run `pip install .` first (after `rm -rf build` "
                                 "if a file was removed: setuptools' build/ keeps it)"
                                 % (", ".join(Daemon._stale),))
        self.bindir = server_bindir()
        self.testcase = testcase
        self.directory = directory or reachable_directory(testcase, "dataserv-daemon-")
        self.data_dir = data_dir or os.path.join(self.directory, "data")
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % (self.port,)
        self.process = None

    def listen_string(self):
        return "tcp:%d:interface=127.0.0.1" % (self.port,)

    def spawn(self, twistd_args, cwd=None, env=None, **popen):
        """Start twistd with ``twistd_args`` after -n and --pidfile."""
        self.testcase.addCleanup(self._stop_cluster)
        with open(self._log("stdout"), "w") as stdout, open(self._log("stderr"), "w") as stderr:
            self.process = subprocess.Popen(
                [TWISTD, "-n", "--pidfile", self.pidfile()]
                + list(twistd_args),
                cwd=cwd or self.directory, env=env or child_environment(),
                stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, **popen)
        self.testcase.addCleanup(self._kill)
        return self

    def start(self, *flags, env=None, **popen):
        """`twistd -n dataserv` on our port and data dir, plus ``flags`` (later flags
        win). Heights are credited as claimed (--max-fill-rate 0): with shards of a
        TiB the fill rate would credit one every 17 minutes; the other limits stay on."""
        return self.spawn(["dataserv", "--listen", self.listen_string(),
                           "--data-dir", self.data_dir, "--summary-interval", "0.5",
                           "--shard-size", str(TIB), "--max-fill-rate", "0"] + list(flags), env=env, **popen)

    def pidfile(self):
        return os.path.join(self.directory, "twistd.pid")

    def _log(self, name):
        return os.path.join(self.directory, name)

    def error_output(self):
        """What the child wrote on stderr so far."""
        with open(self._log("stderr")) as f:
            return f.read()

    def output(self):
        """Everything the child wrote so far, for failure messages."""
        with open(self._log("stdout")) as f:
            return f.read() + "\n" + self.error_output()

    def cluster(self):
        return Cluster(self.data_dir, bindir=self.bindir)

    def cluster_running(self):
        """Whether the daemon's PostgreSQL runs (or left a postmaster.pid behind)."""
        return (self.cluster().is_running()
                or os.path.exists(os.path.join(self.data_dir, "pg", "postmaster.pid")))

    @defer.inlineCallbacks
    def wait_healthy(self, http, timeout=60):
        """Poll /health until it answers 200."""
        def healthy():
            if self.process.poll() is not None:
                raise AssertionError("daemon exited with %s:\n%s"
                                     % (self.process.returncode, self.output()))
            d = http.get(self.url + "/health")
            d.addCallback(lambda response: response.code == 200)
            d.addErrback(lambda _: False)
            return d
        yield eventually(healthy, timeout, "a healthy /health")

    @defer.inlineCallbacks
    def wait_exit(self, timeout):
        """Wait for the child to exit; its exit code."""
        yield eventually(lambda: self.process.poll() is not None, timeout,
                         "the exit of twistd")
        return self.process.returncode

    @defer.inlineCallbacks
    def terminate(self, timeout=30):
        """SIGTERM, then wait; the exit code."""
        self.process.send_signal(signal.SIGTERM)
        code = yield self.wait_exit(timeout)
        return code

    def _kill(self):
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def _stop_cluster(self):
        try:
            self.cluster().stop()
        except ClusterError:
            pass


class ServingTests(unittest.TestCase):
    """A daemon that starts, serves farmers and stops with its PostgreSQL."""

    timeout = 90

    def setUp(self):
        self.http = http_client()
        self.key = FarmerKey.from_seed(b"dataserv daemon test farmer")

    def client(self, daemon):
        return FarmerClient(daemon.url, self.key, http=self.http)

    @defer.inlineCallbacks
    def started(self, daemon=None):
        daemon = (daemon or Daemon(self)).start()
        yield daemon.wait_healthy(self.http)
        return daemon

    @defer.inlineCallbacks
    def stopped_cleanly(self, daemon):
        code = yield daemon.terminate(30)
        # twistd ends by re-raising the signal it was stopped with.
        self.assertIn(code, (0, -signal.SIGTERM), daemon.output())
        self.assertIn("Server Shut Down.", daemon.output())
        self.assertFalse(daemon.cluster_running(), "PostgreSQL still running")
        self.assertFalse(is_listening(daemon.port))

    @defer.inlineCallbacks
    def assertStatus(self, call, status, *args):  # noqa: N802
        reply = yield call(*args)
        self.assertEqual(reply.status, status, reply.text)
        return reply

    @defer.inlineCallbacks
    def test_serves_farmers_and_stops_cleanly(self):
        daemon = yield self.started()
        farmer = self.client(daemon)
        reply = yield self.assertStatus(farmer.register, 200)
        self.assertEqual(reply.json()["btc_addr"], self.key.address)
        yield self.assertStatus(farmer.register, 409)
        yield self.assertStatus(farmer.ping, 200)
        yield self.assertStatus(farmer.height, 200, 3)

        def online():
            d = farmer.online()
            d.addCallback(lambda reply: self.key.address in reply.text)
            return d
        yield eventually(online, 10, "the farmer in /api/online")
        listed = (yield farmer.online_json()).json()["farmers"]
        self.assertEqual([(f["payout_addr"], f["height"]) for f in listed],
                         [(self.key.address, 3)])
        total = (yield farmer.total()).json()
        self.assertEqual((total["total_farmers"], total["total_TB"]), (1, 3.0))

        yield self.assertStatus(farmer.bandwidth, 200, 100, 200)
        yield self.assertStatus(farmer.audit, 200, 1, hashlib.sha256(b"block 1").hexdigest())
        status = (yield self.assertStatus(farmer.status, 200)).json()
        self.assertTrue(status["online"])
        self.assertEqual(status["audits"], 1)

        yield self.stopped_cleanly(daemon)

    @defer.inlineCallbacks
    def test_oversized_requests_get_an_answer(self):
        daemon = yield self.started()
        long_url = b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        long_header = (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 20000
                       + b"\r\n\r\n")
        for request in (long_url, long_header):
            line = first_line_of_answer(daemon.port, request)
            self.assertRegex(line, rb"^HTTP/1\.[01] 4\d\d ", request[:20])
        # The daemon still serves after refusing them.
        yield self.assertStatus(self.client(daemon).address, 200)
        yield self.stopped_cleanly(daemon)

    @defer.inlineCallbacks
    def test_restart_keeps_farmers(self):
        first = yield self.started()
        yield self.assertStatus(self.client(first).register, 200)
        yield self.stopped_cleanly(first)
        second = yield self.started(Daemon(self, data_dir=first.data_dir))
        yield self.assertStatus(self.client(second).register, 409)
        yield self.stopped_cleanly(second)

    @defer.inlineCallbacks
    def test_stop_while_postgres_starts(self):
        # SIGTERM during the first start (initdb): the start must not finish
        # after the stop and leave a server behind.
        daemon = Daemon(self).start()
        yield eventually(lambda: "starting embedded PostgreSQL" in daemon.output(), 30,
                         "the embedded start")
        yield self.stopped_cleanly(daemon)

    @defer.inlineCallbacks
    def test_tac_file(self):
        daemon = Daemon(self)
        daemon.spawn(["-y", os.path.join(SOURCE_TREE, "dataserv.tac")], cwd=SOURCE_TREE,
                     env=child_environment(DATASERV_LISTEN=daemon.listen_string(),
                                           DATASERV_DATA_DIR=daemon.data_dir))
        yield daemon.wait_healthy(self.http)
        self.assertTrue(daemon.cluster_running())
        yield self.stopped_cleanly(daemon)


class ScaleOutTests(unittest.TestCase):
    """Two daemons with --reuse-port on one port and one PostgreSQL."""

    timeout = 120

    @defer.inlineCallbacks
    def test_two_daemons_share_the_port_and_the_farmers(self):
        http = http_client()
        first = Daemon(self)
        # A dozen farmers register from 127.0.0.1 (more than one network's share), and
        # the test pings flat out from that one address while the second daemon starts.
        first.start("--reuse-port", "--access-log", os.path.join(first.directory, "access"),
                    "--registrations-per-network", "0", "--rate-limit", "0")
        yield first.wait_healthy(http)
        second = Daemon(self)
        second.port, second.url = first.port, first.url
        keys = [FarmerKey.from_seed(b"scale-out %d" % i) for i in range(12)]
        farmers = [FarmerClient(first.url, key, http=http) for key in keys]
        for farmer in farmers:
            self.assertEqual((yield farmer.register()).status, 200)

        # While the second daemon starts, farmers keep being answered: it takes no
        # connection before its database is ready and its first summary is built.
        second.start("--reuse-port", "--rate-limit", "0", "--database", first.cluster().start(),
                     "--access-log", os.path.join(second.directory, "access"))
        answered = []
        while "listening on 127.0.0.1:%d" % first.port not in second.output():
            self.assertIsNone(second.process.poll(), second.output())
            answered.append((yield farmers[len(answered) % 12].ping()).status)
        self.assertEqual(set(answered), {200})

        for height, farmer in enumerate(farmers, 1):
            self.assertEqual((yield farmer.register()).status, 409)
            self.assertEqual((yield farmer.ping()).status, 200)
            self.assertEqual((yield farmer.height(height)).status, 200)

        # Both daemons list every farmer (their summaries read the same database).
        @defer.inlineCallbacks
        def agreed():
            totals = []
            for _ in range(8):
                totals.append((yield farmers[0].total()).json())
            return all((t["total_farmers"], t["total_TB"]) == (12, 78.0) for t in totals)
        yield eventually(agreed, 20, "the same totals from both daemons")

        self.assertIn((yield second.terminate()), (0, -signal.SIGTERM))
        # The first one serves the port alone.
        self.assertEqual((yield farmers[0].ping()).status, 200)
        self.assertIn((yield first.terminate()), (0, -signal.SIGTERM))
        self.assertFalse(first.cluster_running())
        # The kernel gave each daemon some of the farmers' requests (the access
        # logs are complete once the daemons have stopped).
        for daemon in (first, second):
            with open(os.path.join(daemon.directory, "access")) as log:
                self.assertIn("/api/height/", log.read())


class StartupRefusalTests(unittest.TestCase):
    """Start-up problems stop the daemon with one clear line, before it listens."""

    timeout = 60

    @defer.inlineCallbacks
    def refused(self, daemon, *flags):
        """Start with flags, expect a quick non-zero exit; its stderr."""
        daemon.start(*flags)
        code = yield daemon.wait_exit(20)
        self.assertNotEqual(code, 0, daemon.output())
        self.assertFalse(is_listening(daemon.port))
        self.assertFalse(daemon.cluster_running())
        return daemon.error_output()

    @defer.inlineCallbacks
    def one_line(self, daemon, *flags, env=None, **popen):
        """Start with flags, expect exit status 1 and exactly one line on stderr, before
        anything listened or twistd wrote its pid file; that line."""
        daemon.start(*flags, env=env, **popen)
        code = yield daemon.wait_exit(20)
        self.assertEqual(code, 1, daemon.output())
        self.assertFalse(is_listening(daemon.port))
        lines = daemon.error_output().splitlines()
        self.assertEqual(len(lines), 1, daemon.output())
        self.assertTrue(lines[0].startswith("dataserv: error: "), lines[0])
        self.assertFalse(os.path.exists(daemon.pidfile()))
        return lines[0]

    @defer.inlineCallbacks
    def test_bad_endpoint(self):
        line = yield self.one_line(Daemon(self), "--listen", "tcpp:80")
        self.assertIn("--listen", line)

    @defer.inlineCallbacks
    def test_port_out_of_range(self):
        for flags in ((), ("--reuse-port",)):
            line = yield self.one_line(Daemon(self), "--listen", "tcp:70000", *flags)
            self.assertEqual(line, "dataserv: error: --listen tcp:70000: cannot listen "
                                   "(bind(): port must be 0-65535.)")

    @defer.inlineCallbacks
    def test_port_in_use(self):
        for flags in ((), ("--reuse-port",)):
            daemon = Daemon(self)
            holder = socket.socket()  # bound, not listening: is_listening() sees the daemon
            self.addCleanup(holder.close)
            holder.bind(("127.0.0.1", daemon.port))
            line = yield self.one_line(daemon, *flags)
            self.assertEqual(line, "dataserv: error: --listen %s: cannot listen "
                                   "(Address already in use)" % (daemon.listen_string(),))
            self.assertFalse(daemon.cluster_running())

    @defer.inlineCallbacks
    def test_access_log_in_missing_directory(self):
        daemon = Daemon(self)
        missing = os.path.join(daemon.directory, "logs")
        line = yield self.one_line(daemon, "--access-log", os.path.join(missing, "access.log"))
        self.assertIn("--access-log", line)
        self.assertIn(missing + " does not exist", line)

    def unprivileged(self):
        """Popen arguments that run twistd as a user who cannot write to a directory of
        root's with mode 0500: ``nobody`` when we are root, else ourselves."""
        if os.geteuid() != 0:
            return {}
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            raise unittest.SkipTest("no user 'nobody' to run twistd as")
        popen = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
        try:
            subprocess.run([TWISTD, "--version"], cwd="/", env=child_environment(),
                           capture_output=True, check=True, timeout=30, **popen)
        except (OSError, subprocess.SubprocessError):
            raise unittest.SkipTest("user 'nobody' cannot run %s" % (TWISTD,))
        return popen

    @defer.inlineCallbacks
    def test_access_log_unwritable(self):
        daemon = Daemon(self)
        logs = os.path.join(daemon.directory, "logs")
        os.mkdir(logs, 0o500)
        line = yield self.one_line(daemon, "--access-log", os.path.join(logs, "access.log"),
                                   **self.unprivileged())
        self.assertIn("--access-log", line)
        self.assertIn("no permission to create files in " + logs, line)

    @defer.inlineCallbacks
    def test_data_dir_in_missing_directory(self):
        daemon = Daemon(self)
        missing = os.path.join(daemon.directory, "typo")
        line = yield self.one_line(daemon, "--data-dir", os.path.join(missing, "data"))
        self.assertIn("--data-dir", line)
        self.assertIn(missing + " does not exist", line)
        self.assertFalse(os.path.exists(missing))

    @defer.inlineCallbacks
    def test_data_dir_unwritable(self):
        daemon = Daemon(self)
        parent = os.path.join(daemon.directory, "readonly")
        os.mkdir(parent, 0o500)
        line = yield self.one_line(daemon, "--data-dir", os.path.join(parent, "data"),
                                   **self.unprivileged())
        self.assertIn("--data-dir", line)
        self.assertIn("Permission denied", line)

    @defer.inlineCallbacks
    def test_bad_dsn(self):
        line = yield self.one_line(Daemon(self), "--database", "host=db dbname")
        self.assertIn("--database is not a libpq DSN", line)

    @defer.inlineCallbacks
    def test_bad_number_from_environment(self):
        line = yield self.one_line(Daemon(self),
                                   env=child_environment(DATASERV_POOL_SIZE="lots"))
        self.assertIn("DATASERV_POOL_SIZE", line)

    @defer.inlineCallbacks
    def test_invalid_flag(self):
        daemon = Daemon(self)
        stderr = yield self.refused(daemon, "--max-ping", "-5")
        lines = stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, stderr)
        self.assertTrue(lines[0].startswith("dataserv: error:"), stderr)
        self.assertIn("--max-ping", lines[0])
        self.assertFalse(os.path.exists(daemon.data_dir), "data dir created anyway")

    @defer.inlineCallbacks
    def test_unknown_flag(self):
        """One line, not twistd's whole --help before it."""
        daemon = Daemon(self)
        line = yield self.one_line(daemon, "--bogus")
        self.assertIn("--bogus not recognized", line)
        self.assertEqual(daemon.output().strip(), line)  # nothing on stdout either

    @defer.inlineCallbacks
    def test_unreachable_data_dir(self):
        if os.geteuid() != 0:
            raise unittest.SkipTest("only root runs the cluster as another user")
        private = os.path.join(reachable_directory(self), "private")
        os.mkdir(private, 0o700)
        before = os.stat(private)
        daemon = Daemon(self, data_dir=os.path.join(private, "data"))
        stderr = yield self.refused(daemon)
        self.assertIn("dataserv: error:", stderr)
        self.assertIn(private, stderr)
        self.assertIn("--data-dir", stderr)
        after = os.stat(private)
        self.assertEqual((after.st_mode, after.st_uid, after.st_gid),
                         (before.st_mode, before.st_uid, before.st_gid))


class DataDirLockTests(unittest.TestCase):
    """One daemon per embedded data dir, however the previous one ended."""

    timeout = 120

    @defer.inlineCallbacks
    def test_second_daemon_refused_first_left_alone(self):
        http = http_client()
        first = Daemon(self).start()
        yield first.wait_healthy(http)
        farmer = FarmerClient(first.url, FarmerKey.from_seed(b"lock test"), http=http)
        self.assertEqual((yield farmer.register()).status, 200)

        second = Daemon(self, data_dir=first.data_dir).start()
        code = yield second.wait_exit(20)
        self.assertEqual(code, 1, second.output())
        self.assertEqual(second.error_output(),
                         "dataserv: error: data directory %s is in use by pid %d; stop that "
                         "daemon or choose another --data-dir\n"
                         % (os.path.abspath(first.data_dir), first.process.pid))
        self.assertFalse(is_listening(second.port))

        # The first one still has its PostgreSQL and serves.
        self.assertTrue(first.cluster_running())
        self.assertEqual((yield farmer.ping()).status, 200)
        yield first.wait_healthy(http)
        self.assertIn((yield first.terminate()), (0, -signal.SIGTERM))
        self.assertFalse(first.cluster_running())

    @defer.inlineCallbacks
    def test_lock_of_a_killed_daemon_is_taken_over(self):
        http = http_client()
        key = FarmerKey.from_seed(b"lock test")
        first = Daemon(self).start()
        yield first.wait_healthy(http)
        self.assertEqual((yield FarmerClient(first.url, key, http=http).register()).status, 200)
        first.process.send_signal(signal.SIGKILL)
        yield first.wait_exit(10)
        self.assertTrue(first.cluster_running())  # its PostgreSQL lives on, orphaned

        second = Daemon(self, data_dir=first.data_dir).start()
        yield second.wait_healthy(http)
        with open(os.path.join(second.data_dir, "dataserv.lock")) as f:
            self.assertEqual(f.read(), "%d\n" % (second.process.pid,))
        # Same database: the farmer the killed daemon registered is there.
        self.assertEqual((yield FarmerClient(second.url, key, http=http).register()).status, 409)
        self.assertIn((yield second.terminate()), (0, -signal.SIGTERM))
        self.assertFalse(second.cluster_running())


class AccessLogTests(unittest.TestCase):
    """The real daemon writes its access log out promptly and reopens it on SIGHUP."""

    timeout = 90

    @defer.inlineCallbacks
    def test_lines_appear_and_sighup_reopens(self):
        http = http_client()
        daemon = Daemon(self)
        path = os.path.join(daemon.directory, "access.log")
        daemon.start("--access-log", path)
        yield daemon.wait_healthy(http)

        def logged(name, text):
            def check():
                with open(name) as f:
                    return text in f.read()
            return eventually(check, 5, "%r in %s" % (text, name))

        yield http.get(daemon.url + "/api/address")
        yield logged(path, "GET /api/address ")  # while running: no 64 KiB wait

        os.rename(path, path + ".1")  # what logrotate does, then it sends SIGHUP
        daemon.process.send_signal(signal.SIGHUP)
        yield eventually(lambda: "access log %s reopened" % (path,) in daemon.output(), 10,
                         "the reopen")
        yield http.get(daemon.url + "/api/total")
        yield logged(path, "GET /api/total ")
        with open(path + ".1") as f:
            self.assertNotIn("/api/total", f.read())
        self.assertIsNone(daemon.process.poll())
        self.assertIn((yield daemon.terminate()), (0, -signal.SIGTERM))


class DatabaseMistakeTests(unittest.TestCase):
    """--database mistakes that waiting cannot heal: exit status 1 and one line, after
    the reactor has run (the connection is tried only then)."""

    timeout = 60

    @defer.inlineCallbacks
    def stopped(self, dsn):
        """Start with --database dsn; the one line on stderr (exit status 1 asserted)."""
        daemon = Daemon(self)
        daemon.start("--database", dsn)
        code = yield daemon.wait_exit(30)
        self.assertEqual(code, 1, daemon.output())
        self.assertFalse(is_listening(daemon.port))
        self.assertFalse(os.path.exists(os.path.join(daemon.directory, "twistd.pid")))
        lines = daemon.error_output().strip().splitlines()
        self.assertEqual(len(lines), 1, daemon.output())
        self.assertTrue(lines[0].startswith("dataserv: error: "), lines[0])
        self.assertNotIn("Traceback", daemon.output())
        return lines[0]

    @defer.inlineCallbacks
    def test_unknown_database(self):
        line = yield self.stopped(pg.dsn() + " dbname=no_such_database")
        self.assertIn('database "no_such_database" does not exist', line)
        self.assertIn("fix the database name in --database", line)

    @defer.inlineCallbacks
    def test_malformed_dsn(self):
        line = yield self.stopped("host=/tmp dbname")
        self.assertIn("--database is not a libpq", line)


class ReplayAcrossDaemonsTests(unittest.TestCase):
    """Captured headers against two real daemons over one PostgreSQL: every exact
    repeat is refused wherever it is sent; v2 pairs are bound to their request and
    good once; a farmer that used v2 is refused its legacy headers by both."""

    timeout = 120

    @defer.inlineCallbacks
    def test_captured_pairs_across_routes_and_daemons(self):
        http = http_client()
        first = Daemon(self)
        first.start()
        yield first.wait_healthy(http)
        second = Daemon(self)
        dsn = first.cluster().start()
        second.start("--database", dsn)
        yield second.wait_healthy(http)

        def claims():
            conn = psycopg2.connect(dsn)
            try:
                with conn.cursor() as cursor:
                    cursor.execute("SELECT count(*) FROM request_claims")
                    return cursor.fetchone()[0]
            finally:
                conn.close()

        @defer.inlineCallbacks
        def get(daemon, path, headers):
            response = yield http.get(daemon.url + path, headers=headers)
            body = yield response.content()
            reason = response.headers.getRawHeaders(b"X-Auth-Error", [None])[0]
            return response.code, body, reason

        legacy_key = FarmerKey.from_seed(b"daemon replay legacy")
        legacy = FarmerClient(first.url, legacy_key, http=http, legacy=True)
        self.assertEqual((yield legacy.register()).status, 200)
        pair = yield legacy.signed_headers()
        ping = "/api/ping/" + legacy_key.address
        height = "/api/height/%s/5" % legacy_key.address
        # The field client's pattern: one pair on two routes within a second.
        claimed = claims()
        self.assertEqual((yield get(first, ping, pair))[0], 200)
        # The ping is throttled (the registration was the farmer's last contact). The
        # first daemon may not have seen the second yet (it looks once a second) and
        # then, alone, claims the key a moment after its answer (README, Security):
        # the other daemon refuses the repeat once the key is in the database.
        yield eventually(lambda: claims() > claimed, 10, "the throttled ping's claim")
        self.assertEqual((yield get(first, height, pair))[0], 200)
        replayed = (401, b"Ping Failed: Invalid authentication headers.", b"replayed request")
        self.assertEqual((yield get(second, ping, pair)), replayed)
        self.assertEqual((yield get(first, ping, pair)), replayed)
        self.assertEqual((yield get(second, "/api/ping/" + legacy_key.nodeid, pair)), replayed)
        self.assertEqual((yield get(second, height, pair)),
                         (401, b"Set height failed: Invalid authentication headers.",
                          b"replayed request"))
        audit = "/api/audit/%s/1/%s" % (legacy_key.address, "ab" * 32)
        self.assertEqual((yield get(second, audit, pair))[0], 200)
        self.assertEqual((yield get(first, audit, pair))[0], 401)

        v2_key = FarmerKey.from_seed(b"daemon replay v2")
        modern = FarmerClient(second.url, v2_key, http=http)
        self.assertEqual((yield modern.register()).status, 200)
        ping = "/api/ping/" + v2_key.address
        v2_pair = yield modern.signed_headers(ping)
        self.assertEqual((yield get(first, ping, v2_pair))[0], 200)
        for daemon in (first, second):
            self.assertEqual((yield get(daemon, ping, v2_pair)),
                             (401, b"Ping Failed: Invalid authentication headers.",
                              b"replayed request"))
        # Bound to its path: useless on another route.
        status, _, reason = yield get(second, "/api/height/%s/199999" % v2_key.address,
                                      (yield modern.signed_headers(ping)))
        self.assertEqual((status, reason), (401, b"signature does not match the request"))
        # Downgrade: its legacy headers are refused by both daemons.
        old = FarmerClient(first.url, v2_key, http=http, legacy=True)
        for daemon in (first, second):
            old.url = daemon.url
            reply = yield old.height(3)
            self.assertEqual(reply.status, 401)
            self.assertEqual(reply.headers.getRawHeaders(b"X-Auth-Error"),
                             [b"legacy headers refused: this farmer uses DATASERV-V2"])
        self.assertEqual((yield modern.height(3)).status, 200)

        self.assertIn((yield second.terminate()), (0, -signal.SIGTERM))
        self.assertIn((yield first.terminate()), (0, -signal.SIGTERM))
