"""Faults under load: a PostgreSQL of this module's own is stopped (SIGSTOP), killed,
made read-only, filled up and cut off while writers register farmers through the
real API (StubTreq over the real Klein resource, a Database on the real reactor).

Each fault asserts the statuses seen (200 or 503 with Retry-After, nothing else),
/health during and after, the log lines, that the pool is back to its size, and
that every registration answered 200 is in the database afterwards. Real time is
involved (a stopped server does not answer a Clock), so --db-timeout is 1 s here
and each fault lasts a couple of seconds.

Set DATASERV_FAULT_REPORT to a file name to get the measured figures as JSON, and
DATASERV_FAULT_DB_TIMEOUT to run with another --db-timeout.
"""

import atexit
import email.utils
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import psycopg2
import psycopg2.errors
from twisted.internet import defer, reactor, task, threads
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from dataserv.daemon.config import Settings
from dataserv.identity.signing import FarmerKey, headers_for
from dataserv.storage.database import Database
from dataserv.storage.pgcluster import Cluster
from dataserv.storage.store import TRUNCATE_ALL
from tests.test_api import DATABASE_DOWN, Server

# --db-timeout in these tests (DATASERV_FAULT_DB_TIMEOUT to measure another).
TIMEOUT = float(os.environ.get("DATASERV_FAULT_DB_TIMEOUT") or 1.0)
POOL = 4
WRITERS = 8
HOLD = max(2.0, 2 * TIMEOUT)  # seconds each fault lasts
LOST = "database connection lost ("
BACK = "database connection back after "

_cluster = None


def cluster():
    """This module's own cluster (durable: a killed server must keep what it committed)."""
    global _cluster
    if os.environ.get("DATASERV_TEST_DATABASE"):
        raise unittest.SkipTest("needs a PostgreSQL of its own to stop, kill and fill")
    if _cluster is None:
        directory = tempfile.mkdtemp(prefix="dataserv-faults-")
        os.chmod(directory, 0o755)
        _cluster = Cluster(directory, durable=True)

        def remove():
            try:
                _signal_server(_cluster, signal.SIGCONT)
                _cluster.stop()
            finally:
                shutil.rmtree(directory, ignore_errors=True)

        atexit.register(remove)
        _cluster.start()
    return _cluster


def _signal_server(cluster, signum):
    """Send signum to the postmaster and each of its children (every backend calls
    setsid(), so there is no one process group to signal)."""
    try:
        with open(os.path.join(cluster.pgdata, "postmaster.pid")) as f:
            postmaster = int(f.readline())
    except (OSError, ValueError):
        return
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    # pid (comm) state ppid ...: comm may hold spaces, so split after ")"
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == postmaster:
                children.append(int(entry))
    # Stop the parent first (no new children), continue it last.
    order = [postmaster] + children if signum == signal.SIGSTOP else children + [postmaster]
    for pid in order:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def sleep(seconds):
    return task.deferLater(reactor, seconds, lambda: None)


@defer.inlineCallbacks
def until(check, timeout, what):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("%s did not happen within %ss" % (what, timeout))
        yield sleep(0.01)


class Load:
    """Writers that register fresh farmers one after another until stopped."""

    def __init__(self, server, clock, writers=WRITERS):
        self.server = server
        self.clock = clock
        self.results = []  # (monotonic time, Answer, address)
        self.stopping = False
        self.count = 0
        self.done = defer.gatherResults([self._writer(i) for i in range(writers)])

    @defer.inlineCallbacks
    def _writer(self, number):
        while not self.stopping:
            self.count += 1
            key = FarmerKey.from_seed(b"fault farmer %d %d %f" % (number, self.count,
                                                                    time.time()))
            date = email.utils.formatdate(self.clock.seconds(), usegmt=True)
            answer = yield self.server.start(
                "/api/register/" + key.address,
                headers_for(key, self.server.settings.address, date=date))
            self.results.append((time.monotonic(), answer, key.address))
            if answer.status != 200:
                yield sleep(0.05)  # a client that backs off a little

    def stop(self):
        self.stopping = True
        return self.done

    def ok_after(self, moment):
        return [t for t, answer, _ in self.results if t >= moment and answer.status == 200]

    def first(self, status, after):
        times = [t for t, answer, _ in self.results if t >= after and answer.status == status]
        return min(times) if times else None


class FaultTests(unittest.TestCase):
    """One Database of POOL connections and one API over this module's cluster."""

    timeout = 60 + 4 * HOLD
    figures = {}

    @defer.inlineCallbacks
    def setUp(self):
        self.cluster = cluster()
        self.dsn = self.cluster.dsn()
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.db = Database(reactor, self.dsn, pool_size=POOL, timeout=TIMEOUT)
        self.db.startService()
        self.addCleanup(self.db.stopService)
        yield self.db.when_ready()
        yield self.db.run_operation(TRUNCATE_ALL)
        self.clock = task.Clock()
        self.clock.advance(int(time.time()))
        # Eight writers register farmers flat out from the one test address: no
        # per-network or per-IP limit (the limits have tests of their own).
        self.server = Server(self.db, self.clock,
                             Settings(registrations_per_network=0, rate_limit=0))
        pump = task.LoopingCall(self.server.http.flush)
        pump.start(0.002)
        self.addCleanup(pump.stop)

    def admin(self, *statements):
        """Run statements on a connection of their own (blocking; never while stopped)."""
        connection = psycopg2.connect(self.dsn)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute("SET default_transaction_read_only = off")
                for statement in statements:
                    cursor.execute(statement)
        finally:
            connection.close()

    def health(self):
        return self.server.settle(self.server.start("/health"))

    def lines(self, text):
        return [e for e in self.events
                if text in (e.get("log_format") or "").format(**e)]

    def lost_but_not_slow(self):
        """The "connection lost" lines other than a call past the deadline: that one
        second can pass on a loaded machine in any test here (the suite runs two
        jobs), while what the tests rule out is a fault taken for a lost connection."""
        return [e for e in self.lines(LOST) if not str(e.get("detail", "")).startswith(
            "no answer within")]

    @defer.inlineCallbacks
    def under_load(self, name, begin, end, hold=HOLD):
        """Writers run; begin() the fault; /health during it; end() it after hold
        seconds; wait until service and the pool are back. Checks what every fault
        must hold and returns (load, health during, health after, times)."""
        load = Load(self.server, self.clock)
        yield until(lambda: len(load.ok_after(0)) >= 20, 10, "20 registrations")
        started = time.monotonic()
        yield defer.maybeDeferred(begin)
        yield sleep(hold / 2)
        during = yield self.health()
        yield sleep(hold / 2)
        yield defer.maybeDeferred(end)
        healed = time.monotonic()  # PostgreSQL answers again from here
        yield until(lambda: load.ok_after(healed), 10, "a 200 after the fault ended")
        yield until(lambda: self.db.pool.alive() == POOL, 10, "the pool back to its size")
        yield sleep(0.2)
        yield load.stop()
        self.clock.advance(2)  # past /health's cache (its clock is the real reactor's)
        yield sleep(1.0)
        after = yield self.health()

        statuses = {answer.status for _, answer, _ in load.results}
        self.assertLessEqual(statuses, {200, 503})
        for _, answer, _ in load.results:
            if answer.status == 503:
                self.assertEqual(answer.body, DATABASE_DOWN)
                self.assertEqual(answer.headers.getRawHeaders(b"Retry-After"), [b"5"])
        written = [address for _, answer, address in load.results if answer.status == 200]
        rows = yield self.db.run_query(
            "SELECT btc_addr FROM farmers WHERE btc_addr = ANY(%s)", (written,))
        self.assertEqual(len(written) - len(rows), 0, "answered 200 but not stored")
        self.assertEqual((after.status, after.json()["database"]), (200, "ok"))
        self.assertEqual(self.db.pool.alive(), POOL)
        # Not a traceback per request: no logged failure at all.
        self.assertEqual([e for e in self.events if "log_failure" in e], [])
        first_503 = load.first(503, started)
        times = {
            "requests": len(load.results),
            "answered_200": len(written),
            "answered_503": len([1 for _, a, _ in load.results if a.status == 503]),
            "lost": len(written) - len(rows),
            "first_503_after_s": None if first_503 is None else round(first_503 - started, 2),
            "back_after_s": round(min(load.ok_after(healed)) - healed, 2),
        }
        FaultTests.figures[name] = times
        _report(FaultTests.figures)
        return load, during, times

    @defer.inlineCallbacks
    def test_stopped_server(self):
        """SIGSTOP: calls miss their deadline and answer 503; SIGCONT: back at once."""
        load, during, times = yield self.under_load(
            "stopped (SIGSTOP)",
            lambda: _signal_server(self.cluster, signal.SIGSTOP),
            lambda: _signal_server(self.cluster, signal.SIGCONT))
        self.assertEqual(during.status, 503)
        self.assertEqual(during.headers.getRawHeaders(b"Retry-After"), [b"5"])
        self.assertEqual(during.json()["reason"], "database not answering")
        self.assertGreater(times["first_503_after_s"], TIMEOUT / 2)  # not before a deadline
        self.assertLess(times["first_503_after_s"], TIMEOUT + 1)
        self.assertLess(times["back_after_s"], 3)
        self.assertEqual(len(self.lines(LOST)), 1)
        self.assertIn("database connection lost (no answer within %g s)" % (TIMEOUT,),
                      [e["log_format"].format(**e) for e in self.lines(LOST)])
        self.assertEqual(len(self.lines(BACK)), 1)

    @defer.inlineCallbacks
    def test_killed_and_restarted(self):
        """Killed: 503 at once; restarted: back within about a second."""
        load, during, times = yield self.under_load(
            "killed and restarted",
            lambda: threads.deferToThread(self.cluster.kill),
            lambda: threads.deferToThread(self.cluster.start))
        self.assertEqual(during.status, 503)
        self.assertIn(during.json()["reason"], ("database connection lost",
                                                "database not answering"))
        self.assertLess(times["first_503_after_s"], TIMEOUT + 1)
        self.assertLess(times["back_after_s"], 3)
        self.assertEqual(len(self.lines(LOST)), 1)
        self.assertEqual(len(self.lines(BACK)), 1)

    @defer.inlineCallbacks
    def test_read_only(self):
        """A read-only database: writes 503, /health says so, one log line."""
        load, during, times = yield self.under_load(
            "read-only",
            lambda: self.admin("ALTER SYSTEM SET default_transaction_read_only = on",
                               "SELECT pg_reload_conf()"),
            lambda: self.admin("ALTER SYSTEM RESET default_transaction_read_only",
                               "SELECT pg_reload_conf()"))
        self.assertEqual(during.status, 503)
        self.assertEqual(during.json()["reason"], "database is read-only")
        self.assertGreater(times["answered_503"], 1)
        self.assertEqual(len(self.lines("database call failed: database is read-only")), 1)
        self.assertEqual(self.lost_but_not_slow(), [])

    @defer.inlineCallbacks
    def test_disk_full(self):
        """Disk full (SQLSTATE 53100, raised by a trigger): writes 503, one log line."""
        self.addCleanup(self.admin, "DROP TRIGGER IF EXISTS fault_disk_full ON farmers")
        load, during, times = yield self.under_load(
            "disk full (simulated)",
            lambda: self.admin(
                "CREATE OR REPLACE FUNCTION fault_disk_full() RETURNS trigger AS $$"
                " BEGIN RAISE EXCEPTION 'could not extend file: No space left on device'"
                " USING ERRCODE = 'disk_full'; END $$ LANGUAGE plpgsql",
                "CREATE TRIGGER fault_disk_full BEFORE INSERT ON farmers"
                " FOR EACH ROW EXECUTE FUNCTION fault_disk_full()"),
            lambda: self.admin("DROP TRIGGER fault_disk_full ON farmers"))
        self.assertEqual(during.status, 503)
        self.assertEqual(during.json()["reason"], "database disk is full")
        self.assertEqual(len(self.lines("database call failed: database disk is full")), 1)
        self.assertEqual(self.lost_but_not_slow(), [])

    def tiny_tablespace(self):
        """A 1 MiB tmpfs as a tablespace holding the farmers table (root only)."""
        if os.geteuid() != 0:
            raise unittest.SkipTest("mounting a tmpfs needs root")
        directory = tempfile.mkdtemp(prefix="dataserv-full-")
        os.chmod(directory, 0o755)
        self.addCleanup(os.rmdir, directory)
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", directory],
                                 capture_output=True)
        if mounted.returncode != 0:
            raise unittest.SkipTest("cannot mount a tmpfs here")
        self.addCleanup(subprocess.run, ["umount", directory], check=True)
        if self.cluster.user is not None:
            os.chown(directory, self.cluster.user[0], self.cluster.user[1])
        self.admin("CREATE TABLESPACE fault_tiny LOCATION '%s'" % directory)
        self.addCleanup(self.admin, "DROP TABLESPACE fault_tiny")
        self.admin("ALTER TABLE farmers SET TABLESPACE fault_tiny")
        self.addCleanup(self.admin, "ALTER TABLE farmers SET TABLESPACE pg_default")
        self.admin("CREATE TABLE fault_filler (x text) TABLESPACE fault_tiny")
        self.addCleanup(self.admin, "DROP TABLE IF EXISTS fault_filler")

    def fill_tablespace(self):
        """Commit filler rows until the tablespace is full."""
        while True:
            try:
                self.admin("INSERT INTO fault_filler"
                           " SELECT repeat('x', 1800) FROM generate_series(1, 20)")
            except psycopg2.errors.DiskFull:
                return

    @defer.inlineCallbacks
    def test_disk_full_tablespace(self):
        """Really full: the farmers table on a 1 MiB tmpfs that filler rows use up."""
        self.tiny_tablespace()
        load, during, times = yield self.under_load(
            "disk full (1 MiB tmpfs tablespace)",
            self.fill_tablespace, lambda: self.admin("DROP TABLE fault_filler"))
        self.assertEqual(during.status, 503)
        self.assertEqual(during.json()["reason"], "database disk is full")
        self.assertGreater(times["answered_503"], 1)
        self.assertEqual(len(self.lines("database call failed: database disk is full")), 1)
        self.assertEqual(self.lost_but_not_slow(), [])

    @defer.inlineCallbacks
    def test_connections_dropped_mid_write(self):
        """pg_terminate_backend on every connection, five times: 503s for the writes
        whose outcome is unknown, nothing answered 200 lost, the pool heals."""
        terminate = ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'")

        @defer.inlineCallbacks
        def rounds():
            for _ in range(5):
                self.admin(terminate)
                yield sleep(0.2)

        load, during, times = yield self.under_load("connections dropped", rounds,
                                                    lambda: None, hold=0.4)
        lost, back = len(self.lines(LOST)), len(self.lines(BACK))
        self.assertTrue(1 <= lost <= 5 + 1, lost)  # once per round, not per connection
        self.assertEqual(lost, back)


def _report(figures):
    path = os.environ.get("DATASERV_FAULT_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(figures, f, indent=2, sort_keys=True)
