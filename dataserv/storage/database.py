"""The PostgreSQL connection pool as a service: start with retry, heal, report readiness.

Every query goes through :class:`Database`. Failures that mean "the database is not
there" come out as :class:`DatabaseUnavailable` (the HTTP layer answers 503), and the
Deferreds it returns are shielded from cancellation: Klein cancels a handler's
Deferred when the client hangs up, and txpostgres would turn that into a query cancel
in PostgreSQL (and a second cancel into an unhandled error).
"""

import psycopg2
from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from txpostgres import reconnection, retrying, txpostgres

from dataserv.storage import migrations


class DatabaseUnavailable(Exception):
    """PostgreSQL cannot be reached right now; try again later."""


def _is_outage(failure):
    return failure.check(reconnection.ConnectionDead, psycopg2.OperationalError,
                         psycopg2.InterfaceError, txpostgres.RollbackFailed) is not None


def _backoff(initial=0.25, maximum=5.0):
    return retrying.simpleBackoffIterator(
        initialDelay=initial, maxDelay=maximum, factor=2, maxRetries=0, now=True)


def shielded(d):
    """A Deferred with d's result whose cancellation does not reach d."""
    out = defer.Deferred()

    def relay(result):
        if not out.called:
            out.callback(result)
        elif isinstance(result, Failure):
            Database.log.failure("query finished after its caller went away", result)
        return None

    d.addBoth(relay)
    return out


class _Detector(reconnection.DeadConnectionDetector):
    """A DeadConnectionDetector whose reconnection loop can be stopped with the pool."""

    _retrying = None
    stopped = False

    def startReconnecting(self, f):  # noqa: N802 (txpostgres' name)
        if self.stopped:
            return
        call = retrying.RetryingCall(self.reconnect)
        call.reactor = self.reactor
        self._retrying = call.start(self.reconnectionIterator())
        self._retrying.addCallback(lambda _: self.connectionRecovered())
        self._retrying.addErrback(lambda f: f.trap(defer.CancelledError))

    def reconnect(self):
        if self.stopped:
            return None
        return super().reconnect()

    def stop(self):
        """Give up reconnecting (the pool is closing)."""
        self.stopped = True
        if self._retrying is not None and not self._retrying.called:
            self._retrying.cancel()


class HealingPool(txpostgres.ConnectionPool):
    """txpostgres' pool where each connection has its own DeadConnectionDetector.

    One detector shared by the pool only ever reconnects one connection; one each
    lets every connection heal after a PostgreSQL restart. Queries go to a live
    connection when there is one.
    """

    def __init__(self, clock, dsn, size, reconnect_backoff):
        self.reactor = clock
        self._reconnect_backoff = reconnect_backoff
        super().__init__(None, dsn, min=size)
        self._all = list(self.connections)

    def connectionFactory(self, reactor, cooperator):  # noqa: N802 (txpostgres' name)
        detector = _Detector(reactor=reactor, reconnectionIterator=self._reconnect_backoff)
        return txpostgres.Connection(reactor, cooperator, detector=detector)

    def alive(self):
        """How many connections are believed alive."""
        return sum(1 for c in self._all if not c.detector.connectionIsDead)

    def close(self):
        """Stop reconnecting and close every connection, connected or not."""
        for c in self._all:
            c.detector.stop()
            if c._connection is not None:
                c.close()

    def _take(self):
        for c in self.connections:
            if not c.detector.connectionIsDead:
                self.connections.remove(c)
                return c
        return self.connections.pop()

    def _runQuery(self, *args, **kwargs):  # noqa: N802
        c = self._take()
        return c.runQuery(*args, **kwargs).addBoth(self._putBackAndPassthrough, c)

    def _runOperation(self, *args, **kwargs):  # noqa: N802
        c = self._take()
        return c.runOperation(*args, **kwargs).addBoth(self._putBackAndPassthrough, c)

    def _runInteraction(self, interaction, *args, **kwargs):  # noqa: N802
        c = self._take()
        return c.runInteraction(interaction, *args, **kwargs).addBoth(
            self._putBackAndPassthrough, c)


class Database(service.Service):
    """Owns the pool. ``dsn`` is a string or a zero-argument callable returning a Deferred
    of one (the embedded cluster supplies it once it has started)."""

    log = Logger()
    name = "database"

    def __init__(self, clock, dsn, pool_size=4, retry_backoff=_backoff,
                 schema_dir=None):
        self.clock = clock
        self._dsn = dsn
        self.pool_size = pool_size
        self._retry_backoff = retry_backoff
        self._schema_dir = schema_dir
        self.pool = None
        self.schema_version = None
        self.reason = "starting"
        self._stopping = False
        self._starting = None
        self._ready_waiters = []

    # -- readiness ----------------------------------------------------------

    @property
    def ready(self):
        """Whether queries can be expected to work now."""
        return self.pool is not None and self.schema_version is not None and self.pool.alive() > 0

    def status(self):
        """(ready, details) for /health."""
        if self.pool is None or self.schema_version is None:
            return False, {"database": "unavailable", "reason": self.reason}
        alive = self.pool.alive()
        details = {"database": "ok" if alive else "unavailable",
                   "connections": {"alive": alive, "total": self.pool_size,
                                   "idle": len(self.pool.connections)},
                   "schema_version": self.schema_version}
        if not alive:
            details["reason"] = "lost every connection to PostgreSQL; reconnecting"
        return alive > 0, details

    def when_ready(self):
        """A Deferred that fires once the pool is connected and migrated."""
        if self.pool is not None and self.schema_version is not None:
            return defer.succeed(self)
        d = defer.Deferred()
        self._ready_waiters.append(d)
        return d

    # -- lifecycle ----------------------------------------------------------

    def startService(self):  # noqa: N802
        super().startService()
        self._stopping = False
        self._starting = self._start()

    @defer.inlineCallbacks
    def _start(self):
        try:
            dsn = self._dsn
            if callable(dsn):
                self.reason = "waiting for the embedded PostgreSQL to start"
                dsn = yield dsn()
        except Exception as e:
            self.reason = "embedded PostgreSQL failed: %s" % (e,)
            self.log.critical("{reason}", reason=self.reason)
            return
        delays = self._retry_backoff()
        while not self._stopping:
            pool = HealingPool(self.clock, dsn, self.pool_size, self._retry_backoff)
            try:
                yield pool.start()
                version = yield pool.runInteraction(
                    migrations.apply_all, migrations.load(self._schema_dir))
            except migrations.SchemaTooNew as e:
                self.reason = str(e)
                self.log.critical("{reason}", reason=self.reason)
                pool.close()
                return
            except Exception as e:
                pool.close()
                self.reason = "cannot reach PostgreSQL: %s" % (str(e).strip() or type(e).__name__,)
                delay = next(delays)
                self.log.warn("{reason}; retrying in {delay:.1f}s", reason=self.reason, delay=delay)
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

    def stopService(self):  # noqa: N802
        super().stopService()
        self._stopping = True
        if self._starting is not None and not self._starting.called:
            self._starting.cancel()
        if self.pool is not None:
            self.pool.close()
            self.pool = None
        self.schema_version = None
        self.reason = "stopped"

    # -- queries ------------------------------------------------------------

    def _guard(self, method, *args, **kwargs):
        if self.pool is None or self.schema_version is None:
            return defer.fail(DatabaseUnavailable(self.reason or "not connected"))
        call = getattr(self.pool, method)

        def translate(failure):
            if _is_outage(failure):
                raise DatabaseUnavailable(str(failure.value).strip() or "connection lost")
            return failure

        return shielded(defer.maybeDeferred(call, *args, **kwargs).addErrback(translate))

    def run_query(self, sql, params=None):
        """Run one statement and return its rows."""
        return self._guard("runQuery", sql, params)

    def run_operation(self, sql, params=None):
        """Run one statement, discarding rows."""
        return self._guard("runOperation", sql, params)

    def run_interaction(self, interaction, *args, **kwargs):
        """Run ``interaction(cursor, ...)`` in one transaction."""
        return self._guard("runInteraction", interaction, *args, **kwargs)


def _sleep(clock, seconds):
    d = defer.Deferred(lambda d: call.cancel() if call.active() else None)
    call = clock.callLater(seconds, d.callback, None)
    return d
