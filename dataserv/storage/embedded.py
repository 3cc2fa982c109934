"""The embedded PostgreSQL as a service: started with the daemon, stopped with it."""

from __future__ import annotations

from typing import Any, List, Optional

from twisted.application import service
from twisted.internet import defer, threads
from twisted.logger import Logger

from dataserv.storage.pgcluster import Cluster, DataDirLock


class EmbeddedPostgres(service.Service):
    """Runs a :class:`~dataserv.storage.pgcluster.Cluster`; blocking steps run in a thread."""

    log = Logger()
    name = "embedded-postgres"

    def __init__(self, reactor: Any, cluster: Cluster, lock: DataDirLock | None = None) -> None:
        self.reactor = reactor
        self.cluster = cluster
        self.lock = lock
        self._started: Optional[defer.Deferred] = None
        self._waiters: List[defer.Deferred] = []

    @classmethod
    def checked(cls, reactor: Any, data_dir: str) -> "EmbeddedPostgres":
        """Build one after checking, synchronously, that the cluster can be set up
        (binaries found, data dir reachable and not used by another daemon); raises
        ClusterError saying why not."""
        cluster = Cluster(data_dir)
        cluster.prepare()
        lock = DataDirLock(cluster.data_dir)
        lock.acquire()
        return cls(reactor, cluster, lock)

    def _in_thread(self, f: Any) -> Any:
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), f)

    def startService(self) -> None:  # noqa: N802
        super().startService()
        if self.lock is not None:
            self.lock.record_pid()  # twistd may have forked since the lock was taken
        # twistd starts its services before the reactor runs and handles SIGTERM only
        # from then on: a stop asked for while the cluster starts must find the
        # handlers in place, so the start (and the line saying so) waits for them.
        self.reactor.callWhenRunning(self._start)

    def _start(self) -> None:
        if not self.running:
            return
        self.log.info("starting embedded PostgreSQL in {pgdata}", pgdata=self.cluster.pgdata)
        self._started = self._in_thread(self.cluster.start)
        self._started.addCallbacks(self._up, self._failed)

    def _up(self, dsn: Any) -> Any:
        self.log.info("embedded PostgreSQL is up ({dsn})", dsn=dsn)
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(dsn)
        return dsn

    def _failed(self, failure: Any) -> None:
        self.log.critical("embedded PostgreSQL did not start: {error}", error=failure.value)
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.errback(failure)
        return None

    def dsn(self) -> Any:
        """A Deferred of the DSN once the cluster runs."""
        d: Any = defer.Deferred()
        if self._started is not None and self._started.called and self.cluster.socket_dir:
            d.callback(self.cluster.dsn())
        else:
            self._waiters.append(d)
        return d

    def stopService(self) -> defer.Deferred:  # noqa: N802
        super().stopService()
        self.log.info("stopping embedded PostgreSQL")
        # A start still busy in its thread (initdb, pg_ctl start) would bring the
        # server up after a stop run beside it: let it finish, then stop.
        finished: defer.Deferred = defer.Deferred()

        def start_finished(result: Any) -> Any:
            finished.callback(None)
            return result

        if self._started is None:
            finished.callback(None)
        else:
            self._started.addBoth(start_finished)
        finished.addCallback(lambda _: self._in_thread(self.cluster.stop))
        if self.lock is not None:
            finished.addBoth(self._release)
        return finished

    def _release(self, result: Any) -> Any:
        self.lock.release()  # type: ignore[union-attr]
        return result
