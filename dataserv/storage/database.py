"""The PostgreSQL connection pool as a service: start with retry, deadlines, healing.

Every query goes through :class:`Database`. Every call has a deadline (``--db-timeout``):
PostgreSQL enforces it per statement (``statement_timeout``), libpq's TCP keepalives
notice a peer that vanished, and a client-side timer covers a server that does not
answer at all. A call that misses it fails with :class:`DatabaseUnavailable` and the
connection it was on is closed and replaced, never reused while its old query is
pending. Server-side failures that are not the caller's fault (lost connection,
read-only, disk full, ...) come out as :class:`DatabaseUnavailable` too (the HTTP
layer answers 503); errors in what was asked stay real errors.

The pool is built on txpostgres' public ``Connection`` API. The Deferreds it returns
are shielded from cancellation: Klein cancels a handler's Deferred when the client
hangs up, and txpostgres would turn that into a query cancel in PostgreSQL (and a
second cancel into an unhandled error); here the work runs to its end or to its
deadline, whichever comes first.
"""

import collections
import functools
import math
import os
import socket
from typing import Any, Callable, Optional

import psycopg2
import psycopg2.extensions
from twisted.application import service
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from txpostgres import txpostgres

from dataserv.storage import migrations
from dataserv.storage.failures import (
    CONFLICT, CONNECTION_REASONS, LOST, NOT_ANSWERING, READ_ONLY, STOPPED,
    DatabaseConflict, DatabaseUnavailable, StartupError, first_line, reason_for,
    startup_problem, unavailable)

__all__ = ["Database", "DatabaseConflict", "DatabaseUnavailable", "Pool", "StartupError",
           "connection_params", "daemon_name", "shielded"]

DEFAULT_TIMEOUT = 5.0
# /health asks the database at most this often (seconds).
HEALTH_CACHE = 1.0
# A server-side failure (disk full, ...) keeps /health at 503 for this long (seconds),
# unless a call succeeds meanwhile.
FAILURE_MEMORY = 5.0
# Log at most one line per kind of failure in this many seconds.
LOG_INTERVAL = 60.0
# Migrations may rewrite big tables: their own, longer deadline (seconds).
MIGRATION_TIMEOUT = 600.0
HEALTH_QUERY = ("SELECT pg_is_in_recovery()"
                " OR current_setting('transaction_read_only') = 'on'")


def backoff(initial: float = 0.1, maximum: float = 1.0) -> Any:
    """Delays between connection attempts: doubling from ``initial`` up to ``maximum``.

    A maximum of one second keeps the pool back within about a second of PostgreSQL
    answering again.
    """
    delay = initial
    while True:
        yield delay
        delay = min(delay * 2, maximum)


def connection_params(dsn: str, timeout: float, name: Optional[str] = None) -> dict:
    """libpq parameters for ``dsn`` with the deadlines added, and ``name`` in the
    application_name (after the operator's own, if the DSN sets one): how daemons
    sharing the database see each other in pg_stat_activity.

    Raises psycopg2.ProgrammingError when the DSN or URL is malformed.
    """
    params = psycopg2.extensions.parse_dsn(dsn)
    if name:
        own = params.get("application_name")
        params["application_name"] = "%s %s" % (own, name) if own else name
    milliseconds = max(1, int(timeout * 1000))
    options = params.get("options", "")
    params["options"] = (options + " -c statement_timeout=%d" % milliseconds).strip()
    seconds = max(1, int(math.ceil(timeout)))
    params.setdefault("connect_timeout", str(max(2, seconds)))  # libpq's minimum is 2
    params.setdefault("keepalives", "1")
    params.setdefault("keepalives_idle", str(seconds))
    params.setdefault("keepalives_interval", "1")
    params.setdefault("keepalives_count", "3")
    params.setdefault("tcp_user_timeout", str(milliseconds))
    return params


# Every daemon's connections carry "dataserv/<host>/<pid>" in their application_name.
NAME_PREFIX = "dataserv/"


def daemon_name() -> str:
    """This process's name among the daemons sharing a database."""
    return "%s%s/%d" % (NAME_PREFIX, socket.gethostname(), os.getpid())


def shielded(d: defer.Deferred) -> defer.Deferred:
    """A Deferred with d's result whose cancellation does not reach d."""
    out: defer.Deferred = defer.Deferred()

    def relay(result: Any) -> None:
        if not out.called:
            out.callback(result)
        elif isinstance(result, Failure):
            Database.log.warn("a database call failed after its caller went away: {why}",
                              why=first_line(result.value))
        return None

    d.addBoth(relay)
    return out


class _Link(txpostgres.Connection):
    """A txpostgres Connection that reports a connection lost while idle to its pool.

    txpostgres keeps an idle connection registered for reading; when the server goes
    away, its doRead raises and the reactor logs a traceback. Here the error is
    returned instead, so the reactor calls connectionLost with it, quietly.
    """

    def __init__(self, reactor: Any, on_lost: Any) -> None:
        super().__init__(reactor)
        self._on_lost = on_lost
        self.abandoned = False

    def doRead(self) -> Any:  # noqa: N802 (IReadDescriptor)
        try:
            return super().doRead()
        except psycopg2.Error as e:
            return e
        except ValueError as e:
            # psycopg2 closed the socket (fileno -1) as the server died, and
            # txpostgres asked the reactor to watch it again: the connection is gone.
            return ConnectionDone(str(e))

    def connectionLost(self, reason: Any) -> None:  # noqa: N802 (IReadDescriptor)
        super().connectionLost(reason)
        if not self.abandoned:
            self._on_lost(self, reason)

    def abandon(self) -> None:
        """Close the connection, whatever it is doing; a query in flight fails."""
        self.abandoned = True
        if self.pollable() is not None:
            self.close()


def link_connector(reactor: Any, params: dict) -> "Callable[..., defer.Deferred]":
    """A ``connect(on_lost)`` for :class:`Pool`: opens one txpostgres connection."""

    def connect(on_lost: Any) -> Any:
        link = _Link(reactor, on_lost)
        opening = link.connect(**params)

        def cancel(d: Any) -> None:
            d.errback(defer.CancelledError())
            link.abandon()

        opened: Any = defer.Deferred(cancel)

        def done(result: Any) -> None:
            if isinstance(result, Failure):
                link.abandon()  # a failed attempt may leave its socket watched
            if opened.called:  # cancelled: the attempt took too long
                link.abandon()
                return None
            if isinstance(result, Failure):
                opened.errback(result)
            else:
                opened.callback(link)
            return None

        opening.addBoth(done)
        return opened

    return connect


@defer.inlineCallbacks
def in_transaction(link: Any, interaction: "Callable[..., object]", *args: Any,
                   **kwargs: Any) -> Any:
    """Run ``interaction(cursor, ...)`` between BEGIN and COMMIT on link.

    On failure the transaction is rolled back and the failure passed on; if the
    rollback itself fails, the connection is broken and that failure is passed on.
    """
    cursor = link.cursor()
    yield cursor.execute("BEGIN")
    try:
        result = yield interaction(cursor, *args, **kwargs)
    except Exception:
        failed = Failure()
        yield cursor.execute("ROLLBACK")
        failed.raiseException()
    yield cursor.execute("COMMIT")
    return result


class _Slot:
    """One place in the pool: an open connection or a reconnection in progress."""

    def __init__(self) -> None:
        self.link = None
        self.call = None
        self.retry = None  # the DelayedCall of the next connection attempt
        self.attempt = None  # the connection attempt in progress
        self.reconnecting = False


class _Call:
    def __init__(self, work: Any, result: Any) -> None:
        self.work = work
        self.result = result
        self.slot = None
        self.timer = None


class RateLimitedLog:
    """One log line per kind of event per ``interval`` seconds; the rest are counted."""

    def __init__(self, clock: Any, log: Any, interval: Any = LOG_INTERVAL) -> None:
        self.clock = clock
        self.log = log
        self.interval = interval
        self._last: Any = {}
        self._quiet: Any = collections.Counter()

    def warn(self, kind: str, text: str, **fields: Any) -> bool:
        """Log ``text`` (a format string) unless ``kind`` was logged recently; whether it was."""
        now = self.clock.seconds()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._quiet[kind] += 1
            return False
        self._last[kind] = now
        quiet = self._quiet.pop(kind, 0)
        if quiet:
            text += " ({quiet} more in the last minute)"
            fields["quiet"] = quiet
        self.log.warn(text, **fields)
        return True


class Pool:
    """``size`` connections, each running one call at a time, each with a deadline.

    ``connect(on_lost)`` returns a Deferred of a connection (a :class:`_Link` or a
    fake in tests) and calls ``on_lost(link, reason)`` when it is lost while idle.
    A connection that is lost or misses a deadline is closed and replaced: the pool
    keeps trying (``reconnect_backoff`` between attempts) until it is back to size.
    """

    log = Logger()

    def __init__(self, clock: Any, connect: "Callable[..., defer.Deferred]", size: int,
                 timeout: float = DEFAULT_TIMEOUT, reconnect_backoff: Any = backoff) -> None:
        self.clock = clock
        self._connect = connect
        self.size = size
        self.timeout = timeout
        self._backoff = reconnect_backoff
        self._slots = [_Slot() for _ in range(size)]
        self._queue: collections.deque = collections.deque()
        self.started = False
        self.closed = False
        self.outage_since = None
        self.last_lost = None  # why the latest connection was lost

    def alive(self) -> int:
        """How many connections are open."""
        return sum(1 for slot in self._slots if slot.link is not None)

    def idle(self) -> int:
        """How many live connections have no call on them now."""
        return sum(1 for slot in self._slots if slot.link is not None and slot.call is None)

    def start(self) -> defer.Deferred:
        """Open every connection; fails with the first error (after closing the pool)."""
        attempts = [self._open(slot) for slot in self._slots]
        d = defer.gatherResults(attempts, consumeErrors=True)

        def opened(_: Any) -> Any:
            self.started = True
            return self

        def failed(f: Any) -> Any:
            self.close()
            return f.value.subFailure

        return d.addCallbacks(opened, failed)

    def close(self) -> None:
        """Stop reconnecting, fail what waits or runs, close every connection."""
        self.closed = True
        waiting, self._queue = self._queue, collections.deque()
        for call in waiting:
            self._fail(call, STOPPED)
        for slot in self._slots:
            if slot.retry is not None and slot.retry.active():
                slot.retry.cancel()
            if slot.attempt is not None:
                slot.attempt.cancel()
            call, slot.call = slot.call, None
            if call is not None:
                self._fail(call, STOPPED)
            link, slot.link = slot.link, None
            if link is not None:
                link.abandon()

    # -- calls --------------------------------------------------------------

    def run(self, work: Any, timeout: "float | None" = None) -> defer.Deferred:
        """``work(connection)`` on a free connection, within ``timeout`` seconds
        (the pool's when None) of this call, waiting for a connection included.

        Cancelling the returned Deferred does not reach the work.
        """
        inner: defer.Deferred = defer.Deferred()
        if self.closed:
            inner.errback(DatabaseUnavailable(STOPPED))
            return inner
        if self.alive() == 0:
            inner.errback(DatabaseUnavailable(self.last_lost or LOST))
            return inner
        call = _Call(work, inner)
        call.timer = self.clock.callLater(
            self.timeout if timeout is None else timeout, self._expire, call)
        self._queue.append(call)
        self._dispatch()
        return shielded(inner)

    def _dispatch(self) -> None:
        while self._queue:
            slot = next((s for s in self._slots if s.link is not None and s.call is None), None)
            if slot is None:
                return
            call = self._queue.popleft()
            call.slot = slot
            slot.call = call
            link = slot.link
            d = defer.maybeDeferred(call.work, link)
            d.addBoth(self._finished, slot, call)

    def _finished(self, outcome: Any, slot: Any, call: Any) -> None:
        if slot.call is not call:
            return None  # missed its deadline: answered already, its connection closed
        slot.call = None
        if call.timer.active():
            call.timer.cancel()
        if isinstance(outcome, Failure):
            reason = reason_for(outcome.value)  # type: ignore[arg-type]
            if reason in CONNECTION_REASONS:
                self._drop(slot, reason, first_line(outcome.value))
        if isinstance(outcome, Failure):
            call.result.errback(outcome)
        else:
            call.result.callback(outcome)
        self._dispatch()
        return None

    def _expire(self, call: Any) -> None:
        slot = call.slot
        if slot is None:
            self._queue.remove(call)
        elif slot.call is call:
            slot.call = None
            self._drop(slot, NOT_ANSWERING, "no answer within %g s" % (self.timeout,))
        self._fail(call, NOT_ANSWERING)

    def _fail(self, call: Any, reason: Any) -> None:
        if call.timer is not None and call.timer.active():
            call.timer.cancel()
        if not call.result.called:
            call.result.errback(DatabaseUnavailable(reason))

    # -- connections --------------------------------------------------------

    def _open(self, slot: Any) -> Any:
        attempt = slot.attempt = self._connect(functools.partial(self._link_lost, slot))
        timer = self.clock.callLater(self.timeout, attempt.cancel)

        def opened(link: Any) -> None:
            slot.attempt = None
            if timer.active():
                timer.cancel()
            if self.closed:
                link.abandon()
                return None
            slot.link = link
            self._back()
            self._dispatch()
            return None

        def failed(f: Any) -> Any:
            slot.attempt = None
            if timer.active():
                timer.cancel()
            if f.check(defer.CancelledError):
                return Failure(DatabaseUnavailable(NOT_ANSWERING))
            return f

        return attempt.addCallbacks(opened, failed)

    def _link_lost(self, slot: Any, link: Any, reason: Any) -> None:
        if slot.link is link and slot.call is None:
            self._drop(slot, LOST, first_line(reason.value))
        # A call in flight fails on its own and its end drops the connection.

    def _drop(self, slot: Any, reason: Any, detail: Any) -> None:
        link, slot.link = slot.link, None
        if link is not None:
            link.abandon()
        self.last_lost = reason
        if self.started and self.outage_since is None:
            self.outage_since = self.clock.seconds()
            self.log.warn("database connection lost ({detail})", detail=detail, reason=reason)
        if self.alive() == 0:
            waiting, self._queue = self._queue, collections.deque()
            for call in waiting:
                self._fail(call, reason)
        self._reconnect(slot)

    def _reconnect(self, slot: Any) -> None:
        if self.closed or slot.reconnecting:
            return
        slot.reconnecting = True
        delays = self._backoff()

        def attempt() -> None:
            slot.retry = None
            if self.closed:
                return
            self._open(slot).addCallbacks(succeeded, failed)

        def succeeded(_: Any) -> None:
            slot.reconnecting = False

        def failed(_: Any) -> None:
            if not self.closed:
                slot.retry = self.clock.callLater(next(delays), attempt)

        attempt()

    def _back(self) -> None:
        if self.outage_since is not None:
            seconds = self.clock.seconds() - self.outage_since
            self.outage_since = None
            self.last_lost = None
            self.log.info("database connection back after {seconds:.1f} s", seconds=seconds)


class Database(service.Service):
    """Owns the pool. ``dsn`` is a string or a zero-argument callable returning a Deferred
    of one (the embedded cluster supplies it once it has started).

    ``on_fatal(message)`` is called when start-up cannot succeed by waiting (a wrong
    password, an unknown database, a malformed DSN, a failing migration); the message
    is one line naming ``setting`` (or the migration file) and the fix.
    """

    log = Logger()
    name = "database"

    def __init__(self, clock: Any, dsn: Any, pool_size: Any = 4, retry_backoff: Any = backoff,
                 schema_dir: Any = None, timeout: Any = DEFAULT_TIMEOUT, on_fatal: Any = None,
                 setting: Any = "--database",
                 connector: Any = link_connector, name: Optional[str] = None) -> None:
        self.clock = clock
        # This process's connections in pg_stat_activity (see connection_params).
        self.daemon_name = name or daemon_name()
        self._dsn = dsn
        self.pool_size = pool_size
        self.timeout = timeout
        self._retry_backoff = retry_backoff
        self._schema_dir = schema_dir
        self._on_fatal = on_fatal
        self.setting = setting
        self._connector = connector
        self.pool: Any = None
        self.schema_version = None
        self.reason: Any = "starting"
        self.failures = RateLimitedLog(clock, self.log)
        self._stopping = False
        self._starting: Any = None
        self._ready_waiters: Any = []
        self._recent: Any = None  # (reason, when) of the latest server-side failure
        self._health: Any = None  # (when, (ok, details))
        self._checking: Any = None

    # -- readiness ----------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether queries can be expected to work now."""
        return self.pool is not None and self.schema_version is not None and self.pool.alive() > 0

    def status(self) -> tuple:
        """(ready, details) from what the pool knows, without asking the database."""
        if self.pool is None or self.schema_version is None:
            return False, {"database": "unavailable", "reason": self.reason}
        alive = self.pool.alive()
        details = {"database": "ok" if alive else "unavailable",
                   "connections": {"alive": alive, "total": self.pool_size,
                                   "idle": self.pool.idle()},
                   "schema_version": self.schema_version}
        if not alive:
            details["reason"] = self.pool.last_lost or LOST
        return alive > 0, details

    def check(self) -> defer.Deferred:
        """(ok, details) for /health, from a real query answered within the deadline.

        The answer is kept for HEALTH_CACHE seconds; checks asked meanwhile share it.
        """
        ok, details = self.status()
        if self.pool is None or self.schema_version is None:
            return defer.succeed((ok, details))
        now = self.clock.seconds()
        if self._health is not None and now - self._health[0] < HEALTH_CACHE:
            return defer.succeed(self._health[1])
        waiter: defer.Deferred = defer.Deferred()
        if self._checking is not None:
            self._checking.append(waiter)
        else:
            self._checking = [waiter]
            self._call(lambda link: link.runQuery(HEALTH_QUERY),
                       ask=False).addBoth(self._checked)
        return waiter

    def _checked(self, outcome: Any) -> None:
        ok, details = self.status()
        details = dict(details)
        reason = None
        if isinstance(outcome, Failure):
            reason = reason_for(outcome.value) or "database check failed"  # type: ignore[arg-type]
        elif outcome[0][0]:
            reason = READ_ONLY
        elif self._recent is not None and \
                self.clock.seconds() - self._recent[1] < FAILURE_MEMORY:
            reason = self._recent[0]
        if reason is not None:
            ok = False
            details["database"] = "unavailable"
            details["reason"] = reason
        self._health = (self.clock.seconds(), (ok, details))
        waiters, self._checking = self._checking, None
        for waiter in waiters:
            waiter.callback((ok, details))

    def when_ready(self) -> defer.Deferred:
        """A Deferred that fires once the pool is connected and migrated."""
        if self.pool is not None and self.schema_version is not None:
            return defer.succeed(self)
        d: defer.Deferred = defer.Deferred()
        self._ready_waiters.append(d)
        return d

    # -- lifecycle ----------------------------------------------------------

    def startService(self) -> None:  # noqa: N802
        super().startService()
        self._stopping = False
        self._starting = self._start()

    def _fatal(self, message: Any) -> None:
        self.reason = message
        self.log.critical("{reason}", reason=message)
        if self._on_fatal is not None:
            self._on_fatal(message)

    @defer.inlineCallbacks
    def _start(self) -> Any:
        try:
            dsn = self._dsn
            if callable(dsn):
                self.reason = "waiting for the embedded PostgreSQL to start"
                dsn = yield dsn()
        except Exception as e:
            self._fatal("embedded PostgreSQL did not start: %s" % (" ".join(str(e).split()),))
            return
        try:
            params = connection_params(dsn, self.timeout, self.daemon_name)
        except psycopg2.Error as e:
            self._fatal(startup_problem(e, self.setting)
                        or "%s: %s" % (self.setting, first_line(e)))
            return
        delays = self._retry_backoff()
        steps = migrations.load(self._schema_dir)
        while not self._stopping:
            pool = Pool(self.clock, self._connector(self.clock, params), self.pool_size,
                        self.timeout, self._retry_backoff)
            try:
                yield pool.start()
                version = yield pool.run(
                    functools.partial(in_transaction, interaction=_migrate, steps=steps),
                    timeout=max(self.timeout, MIGRATION_TIMEOUT))
            except (migrations.SchemaTooNew, migrations.MigrationFailed) as e:
                pool.close()
                self._fatal(str(e))
                return
            except Exception as e:
                pool.close()
                problem = startup_problem(e, self.setting)
                if problem is not None:
                    self._fatal(problem)
                    return
                self.reason = "cannot reach PostgreSQL (%s)" % (_waiting_reason(e),)
                delay = next(delays)
                self.failures.warn("start:" + self.reason, "{reason} ({detail}); retrying",
                                   reason=self.reason, detail=first_line(e))
                yield _sleep(self.clock, delay)
                continue
            if self._stopping:
                pool.close()
                return
            self.pool = pool
            self.schema_version = version
            self.reason = None
            self.log.info("database ready (schema version {version})", version=version)
            waiters, self._ready_waiters = self._ready_waiters, []
            for d in waiters:
                d.callback(self)
            return

    def stopService(self) -> None:  # noqa: N802
        super().stopService()
        self._stopping = True
        if self._starting is not None and not self._starting.called:
            self._starting.cancel()
        if self.pool is not None:
            self.pool.close()
            self.pool = None
        self.schema_version = None
        self.reason = STOPPED

    # -- queries ------------------------------------------------------------

    def _call(self, work: Any, timeout: Any = None, ask: Any = True) -> Any:
        """work(link) through the pool; ``ask`` is False for /health's own query,
        whose success says nothing about writes."""
        if self.pool is None or self.schema_version is None:
            return defer.fail(DatabaseUnavailable(self.reason or "not connected"))
        d = self.pool.run(work, timeout)
        if ask:
            d.addCallback(self._succeeded)
        return d.addErrback(self._translate)

    def _succeeded(self, result: Any) -> Any:
        self._recent = None  # the latest call worked: no failure to report any more
        return result

    def _translate(self, failure: Any) -> Any:
        error = unavailable(failure.value)
        if error is None:
            return failure
        reason = str(error)
        if reason not in CONNECTION_REASONS and reason != STOPPED:
            if reason != CONFLICT:
                self._recent = (reason, self.clock.seconds())
            self.failures.warn(reason, "database call failed: {reason} ({detail})",
                               reason=reason, detail=first_line(failure.value))
        raise error

    def run_query(self, sql: Any, params: Any = None) -> defer.Deferred:
        """Run one statement and return its rows."""
        return self._call(lambda link: link.runQuery(sql, params))

    def run_operation(self, sql: Any, params: Any = None) -> defer.Deferred:
        """Run one statement, discarding rows."""
        return self._call(lambda link: link.runOperation(sql, params))

    def run_interaction(self, interaction: Any, *args: Any, **kwargs: Any) -> defer.Deferred:
        """Run ``interaction(cursor, ...)`` in one transaction."""
        return self._call(lambda link: in_transaction(link, interaction, *args, **kwargs))

    def run_long_interaction(self, timeout: Any, interaction: Any, *args: Any,
                             **kwargs: Any) -> defer.Deferred:
        """Like run_interaction, with a deadline of its own (for reads that fetch in
        slices: each statement still has the usual statement_timeout)."""
        return self._call(lambda link: in_transaction(link, interaction, *args, **kwargs),
                          timeout=max(timeout, self.timeout))


def _migrate(cursor: Any, steps: Any) -> Any:
    # Migrations may rewrite whole tables: no per-statement limit inside them.
    d = cursor.execute("SET LOCAL statement_timeout = 0")
    return d.addCallback(lambda _: migrations.apply_all(cursor, steps))


def _waiting_reason(error: Any) -> Any:
    text = str(error).lower()
    for marker, said in (("connection refused", "connection refused"),
                         ("no such file or directory", "server not running"),
                         ("starting up", "the database system is starting up"),
                         ("shutting down", "the database system is shutting down"),
                         ("recovery mode", "the database system is in recovery"),
                         ("too many clients", "too many connections"),
                         ("timeout expired", NOT_ANSWERING)):
        if marker in text:
            return said
    return reason_for(error) or "unreachable"


def _sleep(clock: Any, seconds: Any) -> Any:
    d: Any = defer.Deferred(lambda d: call.cancel() if call.active() else None)
    call = clock.callLater(seconds, d.callback, None)
    return d
