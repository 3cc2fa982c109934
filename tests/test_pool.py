"""The pool's deadlines, reconnection and logging, and the Database's translation of
failures and /health check, on a Clock with fake connections (no PostgreSQL)."""

import itertools

import psycopg2
import psycopg2.errors
from twisted.internet import defer, error, task
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from dataserv.storage import database, failures
from dataserv.storage.database import Database, DatabaseUnavailable, Pool, connection_params


class FakeLink:
    """A connection whose queries the test answers by hand."""

    def __init__(self, on_lost):
        self.on_lost = on_lost
        self.pending = []
        self.abandoned = False

    def runQuery(self, sql, params=None):  # noqa: N802 (txpostgres' name)
        d = defer.Deferred()
        self.pending.append((sql, d))
        return d

    def cursor(self):
        """A cursor whose statements wait, like runQuery's, for the test to answer."""
        link = self

        class Cursor:
            def execute(self, sql, params=None):
                return link.runQuery(sql, params)

        return Cursor()

    def answer(self, result):
        """Fire the oldest unanswered query with result (rows or an exception)."""
        _, d = self.pending.pop(0)
        if isinstance(result, Exception):
            d.errback(result)
        else:
            d.callback(result)

    def abandon(self):
        self.abandoned = True
        while self.pending:
            _, d = self.pending.pop(0)
            d.errback(error.ConnectionDone())

    def lose(self):
        """The server closes this connection: a query in flight fails, an idle
        connection reports it."""
        lost = psycopg2.OperationalError("server closed the connection unexpectedly")
        if self.pending:
            self.answer(lost)
        else:
            self.on_lost(self, Failure(lost))


class FakeServer:
    """connect(on_lost) for the pool: opens at once, refuses, or never answers."""

    def __init__(self):
        self.links = []
        self.mode = "up"
        self.stalled = []

    def connect(self, on_lost):
        if self.mode == "refuse":
            return defer.fail(psycopg2.OperationalError("could not connect: Connection refused"))
        if self.mode == "stall":
            d = defer.Deferred()
            self.stalled.append(d)
            return d
        link = FakeLink(on_lost)
        self.links.append(link)
        return defer.succeed(link)

    def open_links(self):
        return [link for link in self.links if not link.abandoned]


def steady(delay=0.5):
    """A reconnection backoff with a fixed delay."""
    return lambda: itertools.repeat(delay)


def query(link):
    return link.runQuery("SELECT 1")


class PoolTestCase(SynchronousTestCase):
    """A started pool of two fake connections, a 5 s deadline, on a Clock."""

    def setUp(self):
        self.clock = task.Clock()
        self.server = FakeServer()
        self.events = []
        self.pool = Pool(self.clock, self.server.connect, 2, timeout=5.0,
                         reconnect_backoff=steady())
        self.pool.log = Logger(observer=self.events.append)
        self.successResultOf(self.pool.start())

    def logged(self):
        return [e["log_format"].format(**e) for e in self.events]


class DeadlineTests(PoolTestCase):
    """A call that misses its deadline is unavailable and its connection replaced."""

    def test_stalled_call_is_unavailable_at_the_deadline(self):
        d = self.pool.run(query)
        self.clock.advance(4.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.assertEqual(str(self.failureResultOf(d, DatabaseUnavailable).value),
                         failures.NOT_ANSWERING)

    def test_stalled_connection_is_closed_and_replaced_not_reused(self):
        first, _ = self.server.links
        d = self.pool.run(query)
        self.clock.advance(5)
        self.failureResultOf(d)
        self.assertTrue(first.abandoned)
        self.assertEqual(self.pool.alive(), 2)  # reconnected at once
        self.assertEqual(len(self.server.links), 3)
        # Two more calls go to the two open connections, neither to the closed one.
        self.pool.run(query)
        self.pool.run(query)
        self.assertEqual([len(link.pending) for link in self.server.open_links()], [1, 1])
        self.assertEqual(first.pending, [])

    def test_waiting_for_a_connection_counts(self):
        busy = [self.pool.run(query) for _ in range(2)]
        self.clock.advance(3)
        waiting = self.pool.run(query)  # no free connection: it waits
        self.clock.advance(1)
        self.server.links[0].answer([(1,)])  # one is free at 4 s; the waiting call runs
        self.successResultOf(busy[0])
        self.clock.advance(3.9)
        self.assertNoResult(waiting)
        self.clock.advance(0.1)  # 5 s after it was asked, not after it started
        self.failureResultOf(waiting, DatabaseUnavailable)
        self.failureResultOf(busy[1], DatabaseUnavailable)

    def test_answer_after_the_deadline_goes_nowhere(self):
        first = self.server.links[0]
        d = self.pool.run(query)
        pending = first.pending[0][1]
        self.clock.advance(5)
        self.failureResultOf(d, DatabaseUnavailable)
        # abandon() failed the query; nothing is left unhandled or fired twice.
        self.assertTrue(pending.called)

    def test_caller_cancelling_does_not_reach_the_work(self):
        d = self.pool.run(query)
        pending = self.server.links[0].pending[0][1]
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertNoResult(pending)
        self.server.links[0].answer([(1,)])
        self.assertEqual(self.pool.alive(), 2)
        self.assertFalse(self.server.links[0].abandoned)

    def test_a_stalled_connect_is_abandoned_and_retried(self):
        self.server.mode = "stall"
        d = self.pool.run(query)
        self.clock.advance(5)  # the call misses its deadline; reconnecting starts
        self.failureResultOf(d, DatabaseUnavailable)
        self.assertEqual(len(self.server.stalled), 1)
        self.clock.advance(5)  # the attempt misses it too, and is given up
        self.assertTrue(self.server.stalled[0].called)
        self.assertEqual(self.pool.alive(), 1)
        self.server.mode = "up"
        self.clock.advance(0.5)
        self.assertEqual(self.pool.alive(), 2)


class OutageTests(PoolTestCase):
    """A lost server: fail fast, reconnect, log once when lost and once when back."""

    def test_no_open_connection_fails_at_once(self):
        self.server.mode = "refuse"
        for link in list(self.server.links):
            link.lose()
        d = self.pool.run(query)
        self.assertEqual(str(self.failureResultOf(d, DatabaseUnavailable).value),
                         failures.LOST)

    def test_waiting_calls_fail_when_the_last_connection_goes(self):
        self.server.mode = "refuse"
        calls = [self.pool.run(query) for _ in range(3)]
        for link in list(self.server.links):
            link.lose()
        for running in calls[:2]:
            self.failureResultOf(running, psycopg2.OperationalError)
        self.failureResultOf(calls[2], DatabaseUnavailable)  # it never got a connection

    def test_lost_and_back_once_per_outage(self):
        self.server.mode = "refuse"
        for link in list(self.server.links):
            link.lose()
        self.clock.advance(0.5)
        self.clock.advance(0.5)
        self.server.mode = "up"
        self.clock.advance(0.5)
        self.assertEqual(self.pool.alive(), 2)
        self.assertEqual(self.logged(), ["database connection lost (server closed the "
                                         "connection unexpectedly)",
                                         "database connection back after 1.5 s"])

    def test_recovers_to_full_size(self):
        self.server.mode = "refuse"
        for link in list(self.server.links):
            link.lose()
        self.assertEqual(self.pool.alive(), 0)
        self.clock.advance(3)
        self.server.mode = "up"
        self.clock.advance(0.5)
        self.assertEqual(self.pool.alive(), 2)
        d = self.pool.run(query)
        self.server.open_links()[0].answer([(7,)])
        self.assertEqual(self.successResultOf(d), [(7,)])

    def test_lost_in_flight_drops_the_connection(self):
        d = self.pool.run(query)
        link = self.server.links[0]
        link.answer(psycopg2.OperationalError("server closed the connection unexpectedly"))
        self.failureResultOf(d, psycopg2.OperationalError)  # the Database translates it
        self.assertTrue(link.abandoned)
        self.assertEqual(self.pool.alive(), 2)

    def test_close_fails_what_waits_and_runs(self):
        calls = [self.pool.run(query) for _ in range(3)]
        self.pool.close()
        for d in calls:
            self.assertEqual(str(self.failureResultOf(d, DatabaseUnavailable).value), "stopped")
        self.assertEqual(self.pool.alive(), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class DatabaseTestCase(SynchronousTestCase):
    """A Database over a started fake pool, on a Clock, with its log captured."""

    def setUp(self):
        self.clock = task.Clock()
        self.server = FakeServer()
        self.db = Database(self.clock, "dbname=x", pool_size=1)
        self.db.pool = Pool(self.clock, self.server.connect, 1, timeout=5.0,
                            reconnect_backoff=steady())
        self.successResultOf(self.db.pool.start())
        self.db.schema_version = 3
        self.events = []
        self.db.failures.log = Logger(observer=self.events.append)
        self.link = self.server.links[0]

    def fail_with(self, error_class, message="failed"):
        d = self.db.run_query("INSERT ...")
        self.link.answer(error_class(message))
        return d


class TranslationTests(DatabaseTestCase):
    """Server-side failures are unavailable; the caller's mistakes are not."""

    def test_server_side_failures(self):
        for cls, reason in [(psycopg2.errors.ReadOnlySqlTransaction, failures.READ_ONLY),
                            (psycopg2.errors.DiskFull, failures.DISK_FULL),
                            (psycopg2.errors.InsufficientResources, failures.NO_RESOURCES),
                            (psycopg2.errors.OutOfMemory, failures.NO_RESOURCES),
                            (psycopg2.errors.QueryCanceled, failures.STATEMENT_TIMEOUT),
                            (psycopg2.errors.IoError, failures.SERVER_ERROR),
                            (psycopg2.errors.InternalError_, failures.SERVER_ERROR)]:
            d = self.fail_with(cls)
            self.assertEqual(str(self.failureResultOf(d, DatabaseUnavailable).value), reason)
            self.assertFalse(self.link.abandoned, cls)  # the connection is fine

    def test_connection_failures_drop_the_connection(self):
        d = self.fail_with(psycopg2.errors.AdminShutdown)
        self.assertEqual(str(self.failureResultOf(d, DatabaseUnavailable).value),
                         failures.LOST)
        self.assertTrue(self.link.abandoned)

    def test_conflicts_can_be_retried(self):
        d = self.fail_with(psycopg2.errors.DeadlockDetected)
        self.failureResultOf(d, database.DatabaseConflict)

    def test_programming_errors_stay_errors(self):
        for cls in (psycopg2.errors.SyntaxError, psycopg2.errors.UniqueViolation,
                    psycopg2.errors.UndefinedColumn):
            self.failureResultOf(self.fail_with(cls), cls)
        self.assertEqual(self.events, [])

    def test_one_log_line_per_kind_per_minute(self):
        for _ in range(3):
            self.failureResultOf(self.fail_with(psycopg2.errors.ReadOnlySqlTransaction,
                                                "cannot execute INSERT in a read-only "
                                                "transaction\n"))
        self.failureResultOf(self.fail_with(psycopg2.errors.DiskFull))
        self.clock.advance(60)
        self.failureResultOf(self.fail_with(psycopg2.errors.ReadOnlySqlTransaction,
                                            "cannot execute INSERT"))
        lines = [e["log_format"].format(**e) for e in self.events]
        self.assertEqual(lines, [
            "database call failed: database is read-only (cannot execute INSERT in a "
            "read-only transaction)",
            "database call failed: database disk is full (failed)",
            "database call failed: database is read-only (cannot execute INSERT)"
            " (2 more in the last minute)",
        ])


class LongInteractionTests(DatabaseTestCase):
    """The summary's sliced reads have a deadline of their own."""

    def test_longer_deadline(self):
        d = self.db.run_long_interaction(120, lambda cursor: cursor.execute("FETCH 2000"))
        self.assertEqual([sql for sql, _ in self.link.pending], ["BEGIN"])
        self.link.answer(None)
        self.clock.advance(119.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.assertEqual(str(self.failureResultOf(d, DatabaseUnavailable).value),
                         failures.NOT_ANSWERING)

    def test_ordinary_interaction_has_the_pool_deadline(self):
        d = self.db.run_interaction(lambda cursor: cursor.execute("SELECT 1"))
        self.clock.advance(5)
        self.failureResultOf(d, DatabaseUnavailable)

    def test_commit_after_the_interaction(self):
        d = self.db.run_interaction(lambda cursor: cursor.execute("INSERT 1"))
        for _ in range(3):
            self.link.answer(None)
        self.successResultOf(d)
        self.assertEqual(self.link.pending, [])

    def test_rollback_after_a_failed_interaction(self):
        d = self.db.run_interaction(lambda cursor: cursor.execute("INSERT 1"))
        self.link.answer(None)  # BEGIN
        self.link.answer(psycopg2.errors.UniqueViolation("duplicate"))
        self.assertEqual([sql for sql, _ in self.link.pending], ["ROLLBACK"])
        self.link.answer(None)
        self.failureResultOf(d, psycopg2.errors.UniqueViolation)


class HealthTests(DatabaseTestCase):
    """check(): a real query, cached for a second, with a one-line reason."""

    def test_ok(self):
        d = self.db.check()
        self.assertEqual(self.link.pending[0][0], database.HEALTH_QUERY)
        self.link.answer([(False,)])
        ok, details = self.successResultOf(d)
        self.assertEqual((ok, details["database"], details["connections"]),
                         (True, "ok", {"alive": 1, "total": 1, "idle": 1}))

    def test_read_only(self):
        d = self.db.check()
        self.link.answer([(True,)])
        self.assertEqual(self.successResultOf(d),
                         (False, {"database": "unavailable", "reason": failures.READ_ONLY,
                                  "connections": {"alive": 1, "total": 1, "idle": 1},
                                  "schema_version": 3}))

    def test_cached_for_a_second_and_shared(self):
        first, second = self.db.check(), self.db.check()
        self.link.answer([(False,)])
        self.assertEqual(self.successResultOf(first), self.successResultOf(second))
        self.clock.advance(0.9)
        self.successResultOf(self.db.check())
        self.assertEqual(self.link.pending, [])  # no second query
        self.clock.advance(0.1)
        again = self.db.check()
        self.assertEqual(len(self.link.pending), 1)
        self.link.answer([(True,)])
        self.assertFalse(self.successResultOf(again)[0])

    def test_not_answering_within_the_deadline(self):
        d = self.db.check()
        self.clock.advance(5)
        ok, details = self.successResultOf(d)
        self.assertEqual((ok, details["reason"]), (False, failures.NOT_ANSWERING))

    def test_connection_lost(self):
        self.server.mode = "refuse"
        self.link.lose()
        ok, details = self.successResultOf(self.db.check())
        self.assertEqual((ok, details["reason"]), (False, failures.LOST))

    def test_recent_server_failure_is_reported_for_a_while(self):
        self.failureResultOf(self.fail_with(psycopg2.errors.DiskFull))
        d = self.db.check()
        self.link.answer([(False,)])
        self.assertEqual(self.successResultOf(d)[1]["reason"], failures.DISK_FULL)
        self.clock.advance(database.FAILURE_MEMORY)
        d = self.db.check()
        self.link.answer([(False,)])
        self.assertTrue(self.successResultOf(d)[0])


    def test_a_call_that_works_clears_the_recent_failure(self):
        self.failureResultOf(self.fail_with(psycopg2.errors.DiskFull))
        d = self.db.run_query("INSERT ...")
        self.link.answer([])
        self.successResultOf(d)
        d = self.db.check()
        self.link.answer([(False,)])
        self.assertTrue(self.successResultOf(d)[0])


class ConnectionParamsTests(SynchronousTestCase):
    """The deadline reaches libpq and PostgreSQL."""

    def test_deadlines_added(self):
        params = connection_params("host=/tmp dbname=x options='-c work_mem=8MB'", 2.5)
        self.assertEqual(params["options"], "-c work_mem=8MB -c statement_timeout=2500")
        self.assertEqual((params["keepalives"], params["keepalives_idle"],
                          params["keepalives_interval"], params["keepalives_count"],
                          params["connect_timeout"], params["tcp_user_timeout"]),
                         ("1", "3", "1", "3", "3", "2500"))

    def test_url(self):
        params = connection_params("postgresql://u@db.example/registry", 5)
        self.assertEqual((params["host"], params["dbname"], params["options"]),
                         ("db.example", "registry", "-c statement_timeout=5000"))

    def test_operator_choices_win(self):
        params = connection_params("dbname=x connect_timeout=30 keepalives_idle=60", 5)
        self.assertEqual((params["connect_timeout"], params["keepalives_idle"]), ("30", "60"))

    def test_malformed(self):
        with self.assertRaises(psycopg2.ProgrammingError):
            connection_params("host=/tmp dbname", 5)


class StartupProblemTests(SynchronousTestCase):
    """What start-up retries and what stops it, with the one line that says why."""

    def test_retried(self):
        for message in ['connection to server on socket "/tmp/.s.PGSQL.5432" failed: '
                        'No such file or directory',
                        "could not connect to server: Connection refused",
                        'connection to server failed: FATAL:  the database system is '
                        'starting up', "timeout expired"]:
            self.assertIsNone(failures.startup_problem(
                psycopg2.OperationalError(message), "--database"), message)
        self.assertIsNone(failures.startup_problem(
            DatabaseUnavailable(failures.NOT_ANSWERING), "--database"))

    def test_fatal(self):
        for message, expected in [
                ('connection to server failed: FATAL:  password authentication failed for '
                 'user "u"', "fix the user or password in --database"),
                ('connection to server failed: FATAL:  database "nope" does not exist',
                 "create that database or fix the database name in --database"),
                ('connection to server failed: FATAL:  role "who" does not exist',
                 "create that role or fix the user in --database")]:
            line = failures.startup_problem(psycopg2.OperationalError(message), "--database")
            self.assertIn(expected, line)
            self.assertNotIn("\n", line)

    def test_malformed_dsn(self):
        try:
            connection_params("host=/tmp dbname", 5)
        except psycopg2.ProgrammingError as e:
            line = failures.startup_problem(e, "--database")
        self.assertTrue(line.startswith("--database is not a libpq connection string"), line)


class IdleLinkTests(SynchronousTestCase):
    """A real txpostgres connection whose server died while it was idle."""

    def link(self, raised):
        from txpostgres import txpostgres

        def do_read(connection):
            raise raised

        self.patch(txpostgres.Connection, "doRead", do_read)
        return database._Link(task.Clock(), lambda link, reason: None)

    def test_a_closed_socket_is_a_lost_connection(self):
        # psycopg2 closed the socket (fileno -1) and the reactor refused to watch it
        # again: the reactor gets a reason to drop the connection, not a traceback.
        result = self.link(ValueError("file descriptor cannot be a negative integer (-1)"))
        self.assertIsInstance(result.doRead(), error.ConnectionDone)

    def test_a_server_error_is_returned(self):
        result = self.link(psycopg2.OperationalError("server closed the connection"))
        self.assertIsInstance(result.doRead(), psycopg2.OperationalError)
