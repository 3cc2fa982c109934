"""Proofs checked in worker processes of the daemon's own.

chiapos releases the GIL while it checks a proof, but a thread checking a batch takes
the GIL back after every proof, competing with the reactor thread that answers pings.
Measured on the real daemon (benchmarks/RESULTS.md, "Proofs"): with the same work in
processes instead of threads, ping p99 while a round's proofs are checked rose about
half as much. Workers run at a lowered priority
(verification.NICENESS), so pings and PostgreSQL win the CPU from them.
"""

import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Optional

from twisted.application import service
from twisted.internet import defer, threads
from twisted.logger import Logger

from dataserv.proofs.verification import NICENESS

PROCESSES = 2  # the cores of a small server; a batch is one answer request
ORPHAN_CHECK_SECONDS = 1.0


def _start_worker(daemon: int) -> None:
    """Run in each worker as it starts: lower its priority, and end the worker
    within a second of the daemon's end, however that comes (a worker waiting for
    work is not always told when the daemon is killed)."""
    try:
        current = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, 0, max(current, NICENESS))
    except (AttributeError, OSError):  # not allowed, or not Unix: run as is
        pass

    def watch() -> None:
        while os.getppid() == daemon:
            time.sleep(ORPHAN_CHECK_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="orphan check", daemon=True).start()


class WorkersUnavailable(Exception):
    """The work could not be done in a worker: the workers are stopped, or one died
    again while its call was made once more."""


def _ready() -> int:
    return os.getpid()


class VerificationProcesses(service.Service):
    """A pool of ``processes`` worker processes, started with the service (so the
    first answer does not wait for them) and stopped after the work in hand.

    :meth:`run` ``(f, *args)`` calls a module-level function in a worker and fires
    its Deferred in the reactor thread. A worker that dies (the kernel's OOM killer,
    a signal) breaks the pool: it is replaced, logged, and the call made once more;
    when that fails too, or the service is stopped, the Deferred fails with
    WorkersUnavailable.
    """

    log = Logger()

    def __init__(self, reactor: Any, processes: int = PROCESSES) -> None:
        self.reactor = reactor
        self.processes = processes
        self._pool: Optional[ProcessPoolExecutor] = None
        self.replaced = 0  # pools replaced after a worker died

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn: workers are fresh interpreters, not forks of the daemon, whose other
        # threads (thread pool, database) may hold locks at the moment of a fork.
        # They end with the daemon, even one killed with SIGKILL (tested).
        return ProcessPoolExecutor(self.processes,
                                   mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_worker, initargs=(os.getpid(),))

    def startService(self) -> None:
        super().startService()
        self._pool = self._new_pool()
        # The workers are started once the reactor runs, not here: twistd starts the
        # services before it installs its signal handlers, and a SIGTERM that came
        # while this process was spawning them would kill it without a clean stop.
        self.reactor.callWhenRunning(self._start_workers, self._pool)

    def _start_workers(self, pool: ProcessPoolExecutor) -> None:
        if pool is self._pool:  # not stopped meanwhile
            for _ in range(self.processes):
                pool.submit(_ready)

    def stopService(self) -> "defer.Deferred[None]":
        super().stopService()
        pool, self._pool = self._pool, None
        if pool is None:
            return defer.succeed(None)
        # The batches in hand are checked and answered; nothing new is taken.
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                         pool.shutdown, True)

    def run(self, f: Callable[..., Any], *args: Any) -> "defer.Deferred[Any]":
        """f(*args) in a worker process."""
        d: "defer.Deferred[Any]" = defer.Deferred()
        self._submit(d, f, args, retry=True)
        return d

    def _submit(self, d: "defer.Deferred[Any]", f: Callable[..., Any], args: tuple,
                retry: bool) -> None:
        pool = self._pool
        if pool is None:
            d.errback(WorkersUnavailable("proof verification is stopped"))
            return
        try:
            future = pool.submit(f, *args)
        except BrokenProcessPool as e:
            self._broken(pool, e, d, f, args, retry)
            return
        future.add_done_callback(
            lambda done: self.reactor.callFromThread(self._done, pool, done, d, f, args,
                                                     retry))

    def _done(self, pool: ProcessPoolExecutor, future: "Future[Any]",
              d: "defer.Deferred[Any]", f: Callable[..., Any], args: tuple,
              retry: bool) -> None:
        error = future.exception()
        if isinstance(error, BrokenProcessPool):
            self._broken(pool, error, d, f, args, retry)
        elif error is not None:
            d.errback(error)
        else:
            d.callback(future.result())

    def _broken(self, pool: ProcessPoolExecutor, error: BaseException,
                d: "defer.Deferred[Any]", f: Callable[..., Any], args: tuple,
                retry: bool) -> None:
        if pool is self._pool:  # the first call to find it broken replaces it
            self.log.error("a proof verification worker died ({error}); starting new "
                           "workers", error=error)
            pool.shutdown(wait=False)
            self._pool = self._new_pool()
            self.replaced += 1
        if retry:
            self._submit(d, f, args, retry=False)
        else:
            d.errback(WorkersUnavailable("a proof verification worker died twice (%s)"
                                         % error))
