"""Schema migrations against real PostgreSQL, each test in a database of its own."""

import os
import shutil
import tempfile
import uuid

import psycopg2
from psycopg2.extensions import make_dsn
from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from dataserv.storage import migrations
from dataserv.storage.database import Database
from tests import pg


def _fast_backoff():
    while True:
        yield 0.1


def admin(dsn, sql, params=None):
    """Run one statement on a short-lived autocommit connection; rows if any."""
    connection = psycopg2.connect(dsn)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else None
    finally:
        connection.close()


def private_database(testcase):
    """DSN of a new, empty database on the suite's server, dropped at cleanup."""
    name = "dataserv_migrations_%s" % (uuid.uuid4().hex[:12],)
    try:
        admin(pg.dsn(), "CREATE DATABASE %s" % (name,))
    except psycopg2.Error as e:
        raise unittest.SkipTest("cannot create a private database: %s" % (e,))
    testcase.addCleanup(admin, pg.dsn(), "DROP DATABASE IF EXISTS %s WITH (FORCE)" % (name,))
    return make_dsn(pg.dsn(), dbname=name)


def schema_directory(testcase, steps):
    """A temporary schema dir holding ``steps`` ({file name: sql})."""
    directory = tempfile.mkdtemp(prefix="dataserv-schema-")
    testcase.addCleanup(shutil.rmtree, directory, True)
    add_steps(directory, steps)
    return directory


def add_steps(directory, steps):
    """Write more migration files into a schema dir."""
    for name, sql in steps.items():
        with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
            f.write(sql)


def start_database(testcase, dsn, schema_dir=None):
    """A started Database (stopped at cleanup); wait on its when_ready() as needed."""
    db = Database(reactor, dsn, pool_size=1, retry_backoff=_fast_backoff, schema_dir=schema_dir)
    db.startService()
    testcase.addCleanup(db.stopService)
    return db


def recorded(dsn):
    """(version, name, applied_at) rows of schema_version."""
    return admin(dsn, "SELECT version, name, applied_at FROM schema_version ORDER BY version")


class MigrationTests(unittest.TestCase):
    """apply_all on a private database."""

    timeout = 60

    def setUp(self):
        self.dsn = private_database(self)

    @defer.inlineCallbacks
    def test_fresh_database_gets_every_migration(self):
        steps = migrations.load()
        db = yield start_database(self, self.dsn).when_ready()
        self.assertEqual(db.schema_version, len(steps))
        self.assertEqual([(v, n) for v, n, _ in recorded(self.dsn)],
                         [(v, n) for v, n, _ in steps])
        rows = admin(self.dsn, "SELECT count(*) FROM farmers")
        self.assertEqual(rows, [(0,)])

    @defer.inlineCallbacks
    def test_write_functions_keep_their_plans(self):
        """The per-contact functions are planned once per connection, not per call
        (0002: PL/pgSQL, and a generic plan for record_contacts)."""
        yield start_database(self, self.dsn).when_ready()
        rows = admin(self.dsn, "SELECT p.proname, l.lanname, p.proconfig FROM pg_proc p"
                               " JOIN pg_language l ON l.oid = p.prolang"
                               " WHERE p.proname IN ('record_contacts', 'set_height',"
                               " 'set_bandwidth') ORDER BY p.proname")
        self.assertEqual(rows, [
            ("record_contacts", "plpgsql", ["plan_cache_mode=force_generic_plan"]),
            ("set_bandwidth", "plpgsql", None),
            ("set_height", "plpgsql", None),
        ])

    @defer.inlineCallbacks
    def test_rerun_applies_nothing(self):
        steps = migrations.load()
        db = yield start_database(self, self.dsn).when_ready()
        before = recorded(self.dsn)
        version = yield db.run_interaction(migrations.apply_all, steps)
        self.assertEqual(version, len(steps))
        self.assertEqual(recorded(self.dsn), before)
        yield db.stopService()
        again = yield start_database(self, self.dsn).when_ready()
        self.assertEqual(again.schema_version, len(steps))
        self.assertEqual(recorded(self.dsn), before)

    @defer.inlineCallbacks
    def test_only_new_steps_are_applied(self):
        # 0001 has no IF NOT EXISTS: running it twice would fail.
        directory = schema_directory(self, {"0001_first.sql": "CREATE TABLE first (n int)"})
        db = yield start_database(self, self.dsn, directory).when_ready()
        self.assertEqual(db.schema_version, 1)
        add_steps(directory, {"0002_second.sql": "CREATE TABLE second (n int)"})
        version = yield db.run_interaction(migrations.apply_all, migrations.load(directory))
        self.assertEqual(version, 2)
        self.assertEqual([(v, n) for v, n, _ in recorded(self.dsn)],
                         [(1, "0001_first.sql"), (2, "0002_second.sql")])

    @defer.inlineCallbacks
    def test_schema_newer_than_code_is_refused(self):
        steps = migrations.load()
        db = yield start_database(self, self.dsn).when_ready()
        future = len(steps) + 1
        admin(self.dsn, "INSERT INTO schema_version (version, name) VALUES (%s, 'future')",
              (future,))
        before = recorded(self.dsn)
        with self.assertRaises(migrations.SchemaTooNew) as caught:
            yield db.run_interaction(migrations.apply_all, steps)
        message = str(caught.exception)
        self.assertIn("schema version %d" % (future,), message)
        self.assertIn("only knows up to %d" % (len(steps),), message)
        self.assertIn("newer dataserv", message)
        self.assertEqual(recorded(self.dsn), before)

    @defer.inlineCallbacks
    def test_concurrent_starts_apply_once(self):
        """Two daemons upgrading at once: the second waits for the first's migration
        lock while the first is inside the step, and the step runs once.

        The step blocks on an advisory lock the test holds, so the overlap is seen
        in pg_locks (both waits at the same moment) before the test lets it finish.
        """
        admin(self.dsn, "CREATE SEQUENCE attempts")
        directory = schema_directory(self, {"0001_first.sql": "CREATE TABLE first (n int)"})
        first = yield start_database(self, self.dsn, directory).when_ready()
        yield first.stopService()
        gate = 4242
        add_steps(directory, {"0002_slow.sql": (
            "SELECT nextval('attempts');"
            "SELECT pg_advisory_xact_lock_shared(%d);"
            "CREATE TABLE slow (n int);"
            "INSERT INTO slow VALUES (1);" % gate)})
        holder = psycopg2.connect(self.dsn)
        self.addCleanup(holder.close)
        holder.autocommit = True
        holder.cursor().execute("SELECT pg_advisory_lock(%s)", (gate,))
        both = [start_database(self, self.dsn, directory) for _ in range(2)]
        waits = set()
        for _ in range(200):  # until both wait at once, at most ~10 s
            rows = admin(self.dsn, "SELECT objid FROM pg_locks"
                                   " WHERE locktype = 'advisory' AND NOT granted")
            waits = {objid for (objid,) in rows}
            if waits == {gate, migrations.LOCK_KEY}:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(waits, {gate, migrations.LOCK_KEY})
        holder.cursor().execute("SELECT pg_advisory_unlock(%s)", (gate,))
        yield defer.gatherResults([db.when_ready() for db in both])
        self.assertEqual([db.schema_version for db in both], [2, 2])
        self.assertEqual(admin(self.dsn, "SELECT last_value FROM attempts"), [(1,)])
        self.assertEqual(admin(self.dsn, "SELECT n FROM slow"), [(1,)])
        self.assertEqual([v for v, _, _ in recorded(self.dsn)], [1, 2])


class CreditedHeightMigrationTests(unittest.TestCase):
    """0004 on a database that has farmers: they are credited what they claimed."""

    timeout = 60

    @defer.inlineCallbacks
    def test_existing_heights_stay_credited(self):
        dsn = private_database(self)
        steps = migrations.load()
        directory = schema_directory(self, {name: sql for v, name, sql in steps if v < 4})
        db = yield start_database(self, dsn, directory).when_ready()
        self.assertEqual(db.schema_version, 3)
        admin(dsn, "INSERT INTO farmers (btc_addr, payout_addr, height, reg_time, last_seen)"
                   " VALUES ('a', 'a', 500, 1000, 2000), ('b', 'b', 0, 1500, 1500)")
        add_steps(directory, {name: sql for v, name, sql in steps if v >= 4})
        version = yield db.run_interaction(migrations.apply_all, migrations.load(directory))
        self.assertEqual(version, len(steps))
        rows = admin(dsn, "SELECT btc_addr, height, claimed_height, reg_network,"
                          " credited_height(height, height_at, claimed_height, 8.0, 2000)"
                          " FROM farmers ORDER BY btc_addr")
        self.assertEqual(rows, [("a", 500, 500, None, 500), ("b", 0, 0, None, 0)])


class LoadTests(unittest.SynchronousTestCase):
    """migrations.load reads numbered files in order and refuses gaps."""

    def _load(self, names):
        return migrations.load(schema_directory(self, {n: "SELECT 1" for n in names}))

    def test_in_order(self):
        found = self._load(["0002_b.sql", "0001_a.sql", "README", "0003_c.sql"])
        self.assertEqual([(v, n) for v, n, _ in found],
                         [(1, "0001_a.sql"), (2, "0002_b.sql"), (3, "0003_c.sql")])
        self.assertEqual(found[0][2], "SELECT 1")

    def test_gap(self):
        with self.assertRaises(ValueError) as caught:
            self._load(["0001_a.sql", "0003_c.sql"])
        self.assertIn("0003_c.sql", str(caught.exception))

    def test_not_from_one(self):
        self.assertRaises(ValueError, self._load, ["0002_b.sql"])

    def test_duplicate_number(self):
        self.assertRaises(ValueError, self._load, ["0001_a.sql", "0001_b.sql"])

    def test_shipped_schema_loads(self):
        self.assertEqual(migrations.load()[0][:2], (1, "0001_initial.sql"))
