"""The pool service against real PostgreSQL: readiness, outage mapping, healing."""

import os

import psycopg2
import psycopg2.extensions
import shutil
import tempfile

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from dataserv.storage import migrations
from dataserv.storage.database import Database, DatabaseUnavailable, shielded
from dataserv.storage.pgcluster import Cluster
from tests import pg


def _sleep(seconds):
    return task.deferLater(reactor, seconds, lambda: None)


def _with(dsn, **changes):
    params = psycopg2.extensions.parse_dsn(dsn)
    params.update(changes)
    return psycopg2.extensions.make_dsn(**params)


@defer.inlineCallbacks
def _eventually(check, timeout=30.0, step=0.1):
    waited = 0.0
    while not check():
        if waited >= timeout:
            raise AssertionError("condition not met within %ss" % timeout)
        yield _sleep(step)
        waited += step


class DatabaseTests(unittest.TestCase):
    """A Database over the suite's PostgreSQL."""

    @defer.inlineCallbacks
    def test_ready_and_query(self):
        db = yield pg.open_database(self)
        self.assertTrue(db.ready)
        rows = yield db.run_query("SELECT 1 + %s", (41,))
        self.assertEqual(rows, [(42,)])
        ok, details = db.status()
        self.assertTrue(ok)
        self.assertEqual(details["database"], "ok")
        self.assertEqual(details["schema_version"], len(migrations.load()))

    @defer.inlineCallbacks
    def test_status_counts_idle_connections(self):
        db = yield pg.open_database(self)
        busy = db.run_query("SELECT pg_sleep(0.3)")
        self.assertEqual(db.status()[1]["connections"]["idle"], db.pool_size - 1)
        yield busy
        self.assertEqual(db.status()[1]["connections"]["idle"], db.pool_size)

    @defer.inlineCallbacks
    def test_not_ready_before_start(self):
        db = Database(reactor, pg.dsn())
        self.assertFalse(db.ready)
        ok, details = db.status()
        self.assertFalse(ok)
        self.assertEqual(details["database"], "unavailable")
        with self.assertRaises(DatabaseUnavailable):
            yield db.run_query("SELECT 1")

    @defer.inlineCallbacks
    def test_sql_errors_are_not_outages(self):
        import psycopg2

        db = yield pg.open_database(self)
        with self.assertRaises(psycopg2.ProgrammingError):
            yield db.run_query("SELECT no_such_column FROM farmers")
        rows = yield db.run_query("SELECT 2")
        self.assertEqual(rows, [(2,)])


class ShieldTests(unittest.SynchronousTestCase):
    """Cancelling a shielded Deferred leaves the database work alone."""

    def test_cancel_does_not_reach_inner(self):
        cancelled = []
        inner = defer.Deferred(lambda d: cancelled.append(True))
        outer = shielded(inner)
        outer.cancel()
        self.failureResultOf(outer, defer.CancelledError)
        self.assertEqual(cancelled, [])
        inner.callback("late")  # no AlreadyCalledError, nothing unhandled
        self.assertEqual(self.successResultOf(inner), None)

    def test_result_passes_through(self):
        inner = defer.Deferred()
        outer = shielded(inner)
        inner.callback(5)
        self.assertEqual(self.successResultOf(outer), 5)


class OutageTests(unittest.TestCase):
    """A private cluster per test that is stopped and started under the pool."""

    timeout = 120

    def setUp(self):
        if os.environ.get("DATASERV_TEST_DATABASE"):
            raise unittest.SkipTest("needs a PostgreSQL of its own to stop and start")
        self.directory = tempfile.mkdtemp(prefix="dataserv-outage-")
        os.chmod(self.directory, 0o755)
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.cluster = Cluster(self.directory, durable=False)
        self.addCleanup(self.cluster.stop)

    def _fast_backoff(self):
        while True:
            yield 0.1

    @defer.inlineCallbacks
    def test_start_while_down_then_up(self):
        dsn = self.cluster.start()
        self.cluster.stop()
        first_failure = defer.Deferred()

        def backoff():
            # The first delay is asked for when the first attempt has failed.
            first_failure.callback(None)
            yield from self._fast_backoff()

        fatal = []
        db = Database(reactor, dsn, pool_size=2, retry_backoff=backoff,
                      on_fatal=fatal.append)
        db.startService()
        self.addCleanup(db.stopService)
        yield first_failure
        self.assertFalse(db.ready)
        ok, details = db.status()
        self.assertFalse(ok)
        self.assertEqual(details["reason"], "cannot reach PostgreSQL (server not running)")
        self.cluster.start()
        yield db.when_ready()
        self.assertEqual((yield db.run_query("SELECT 7")), [(7,)])
        self.assertEqual(fatal, [])

    @defer.inlineCallbacks
    def test_pool_heals_after_restart(self):
        dsn = self.cluster.start()
        db = Database(reactor, dsn, pool_size=3, retry_backoff=self._fast_backoff)
        db.startService()
        self.addCleanup(db.stopService)
        yield db.when_ready()
        self.cluster.kill()
        # Every connection discovers the outage on its next query: 503 material.
        for _ in range(3):
            with self.assertRaises(DatabaseUnavailable):
                yield db.run_query("SELECT 1")
        self.cluster.start()
        yield _eventually(lambda: db.pool.alive() == 3)
        results = yield defer.gatherResults([db.run_query("SELECT %s", (i,)) for i in range(6)])
        self.assertEqual(sorted(r[0][0] for r in results), list(range(6)))
        self.assertTrue(db.status()[0])
        # Idle connections notice the server going away as a read error: it is
        # reported to the pool, not logged by the reactor as an unhandled error.
        self.assertEqual(self.flushLoggedErrors(), [])

    @defer.inlineCallbacks
    def test_schema_newer_than_code_is_refused(self):
        dsn = self.cluster.start()
        db = Database(reactor, dsn, pool_size=1)
        db.startService()
        yield db.when_ready()
        yield db.run_operation(
            "INSERT INTO schema_version (version, name) VALUES (999, 'from the future')")
        yield db.stopService()
        again = Database(reactor, dsn, pool_size=1)
        again.startService()
        self.addCleanup(again.stopService)
        yield _eventually(lambda: "newer dataserv" in (again.reason or ""))
        self.assertFalse(again.status()[0])


class StartupMistakeTests(unittest.TestCase):
    """Start-up mistakes that waiting cannot heal: one line naming the setting, at once."""

    timeout = 60

    @defer.inlineCallbacks
    def fatal_line(self, dsn, schema_dir=None):
        """Start a Database on dsn; the one line it gave up with."""
        said = defer.Deferred()
        db = Database(reactor, dsn, pool_size=2, schema_dir=schema_dir,
                      on_fatal=said.callback)
        db.startService()
        self.addCleanup(db.stopService)
        line = yield said
        self.assertFalse(db.status()[0])
        self.assertEqual(db.status()[1]["reason"], line)
        self.assertNotIn("\n", line)
        return line

    @defer.inlineCallbacks
    def test_unknown_database(self):
        line = yield self.fatal_line(_with(pg.dsn(), dbname="no_such_database"))
        self.assertIn('database "no_such_database" does not exist', line)
        self.assertIn("--database", line)

    @defer.inlineCallbacks
    def test_unknown_role(self):
        line = yield self.fatal_line(_with(pg.dsn(), user="no_such_role"))
        self.assertIn('role "no_such_role" does not exist', line)
        self.assertIn("--database", line)

    @defer.inlineCallbacks
    def test_malformed_dsn(self):
        line = yield self.fatal_line("host=/tmp dbname")
        self.assertTrue(line.startswith("--database is not a libpq connection string"), line)

    @defer.inlineCallbacks
    def test_failing_migration(self):
        name = "dataserv_broken_migration"
        admin = yield pg.open_database(self, pool_size=1, clean=False)
        yield admin.run_operation("DROP DATABASE IF EXISTS " + name)
        yield admin.run_operation("CREATE DATABASE " + name)
        self.addCleanup(admin.run_operation, "DROP DATABASE IF EXISTS " + name)
        schema = tempfile.mkdtemp(prefix="dataserv-schema-")
        self.addCleanup(shutil.rmtree, schema, True)
        with open(os.path.join(schema, "0001_broken.sql"), "w") as f:
            f.write("CREATE TABLE broken (id integer PRIMARY KEY,);\n")
        line = yield self.fatal_line(_with(pg.dsn(), dbname=name), schema_dir=schema)
        self.assertTrue(line.startswith("schema migration 0001_broken.sql failed (syntax "
                                        "error"), line)
        self.assertIn("fix or restore that file", line)
