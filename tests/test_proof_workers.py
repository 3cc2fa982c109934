"""The worker processes that check proofs (dataserv.proofs.workers) on the real
reactor: real processes, real chiapos."""

import os
import signal
import subprocess
import sys
import time

from twisted.internet import defer, reactor
from twisted.trial import unittest

from dataserv.identity.signing import FarmerKey
from dataserv.proofs import verification
from dataserv.proofs.workers import VerificationProcesses, WorkersUnavailable
from tests import plots


def whoami():
    """Run in a worker: its pid and priority."""
    return os.getpid(), os.getpriority(os.PRIO_PROCESS, 0)


def die_once(marker):
    """Run in a worker: the first call kills its process, the next one answers."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return "alive"


def die():
    """Run in a worker: kill its process."""
    os.kill(os.getpid(), signal.SIGKILL)


def fail():
    raise ValueError("bad batch")


class NotRunning:
    """A reactor that has not started running yet."""

    def __init__(self):
        self.when_running = []

    def callWhenRunning(self, f, *args):
        self.when_running.append((f, args))


class StartTests(unittest.SynchronousTestCase):

    def test_workers_are_started_once_the_reactor_runs(self):
        # twistd installs its signal handlers when the reactor runs: a process that
        # spawned its workers before would die of a SIGTERM sent meanwhile.
        not_running = NotRunning()
        workers = VerificationProcesses(not_running, processes=1)
        workers.startService()
        self.addCleanup(workers._pool.shutdown)
        self.assertEqual(len(not_running.when_running), 1)
        self.assertFalse(workers._pool._processes)


class VerificationProcessesTests(unittest.TestCase):

    def setUp(self):
        self.workers = VerificationProcesses(reactor, processes=1)
        self.workers.startService()
        self.addCleanup(lambda: self.workers.running and self.workers.stopService())

    @defer.inlineCallbacks
    def test_work_runs_in_another_process_at_a_lowered_priority(self):
        pid, priority = yield self.workers.run(whoami)
        self.assertNotEqual(pid, os.getpid())
        self.assertEqual(priority, max(os.getpriority(os.PRIO_PROCESS, 0),
                                       verification.NICENESS))

    @defer.inlineCallbacks
    def test_proofs_are_counted(self):
        # The plot test_proofs uses too: built once a run.
        key = FarmerKey.from_seed(b"test_proofs alice")
        prover = plots.plot(bytes.fromhex(key.nodeid), bytes([1]) * 32)
        items = []
        for i in range(40):
            challenge = bytes([i]) * 32
            proofs = prover.proofs(challenge)
            if proofs:
                items.append((prover.plot_id, plots.K, challenge, proofs))
                items.append((prover.plot_id, plots.K, bytes([i + 1]) * 32, proofs))
        valid = yield self.workers.run(verification.count_valid, items)
        self.assertEqual(valid, [verification.valid_proofs(*item) for item in items])
        self.assertTrue(any(valid))

    @defer.inlineCallbacks
    def test_an_error_in_the_work_is_the_callers(self):
        yield self.assertFailure(self.workers.run(fail), ValueError)
        self.assertEqual(self.workers.replaced, 0)

    @defer.inlineCallbacks
    def test_a_dead_worker_is_replaced_and_the_work_done(self):
        directory = os.path.abspath(self.mktemp())
        os.mkdir(directory)
        marker = os.path.join(directory, "died")
        answer = yield self.workers.run(die_once, marker)
        self.assertEqual(answer, "alive")
        self.assertEqual(self.workers.replaced, 1)
        self.flushLoggedErrors()
        pid, _ = yield self.workers.run(whoami)  # the new pool goes on working
        self.assertNotEqual(pid, os.getpid())

    @defer.inlineCallbacks
    def test_work_that_kills_its_worker_twice_is_refused(self):
        # Tried once more in new workers, then WorkersUnavailable (the answers route
        # makes it a 503); the pool is ready for the next call.
        yield self.assertFailure(self.workers.run(die), WorkersUnavailable)
        self.assertEqual(self.workers.replaced, 2)
        self.flushLoggedErrors()
        pid, _ = yield self.workers.run(whoami)
        self.assertNotEqual(pid, os.getpid())

    @defer.inlineCallbacks
    def test_stop_finishes_the_work_in_hand_and_ends_the_workers(self):
        first = self.workers.run(whoami)
        yield self.workers.stopService()
        pid, _ = yield first
        with self.assertRaises(ProcessLookupError):
            os.kill(pid, 0)
        yield self.assertFailure(self.workers.run(whoami), WorkersUnavailable)


ORPHAN = """
import os, signal
from dataserv.proofs.workers import VerificationProcesses, WorkersUnavailable
from twisted.internet import reactor
workers = VerificationProcesses(reactor)
workers.startService()
pids = [workers._pool.submit(os.getpid).result() for _ in range(8)]
print(" ".join(str(pid) for pid in set(pids)), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def gone(pid):
    """Whether a process has ended (a zombie nobody reaped has ended too)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


class OrphanTests(unittest.SynchronousTestCase):

    def test_workers_end_when_the_daemon_is_killed(self):
        # A real process killed with SIGKILL: no Clock can stand in for that.
        # Only its first line is read: the workers hold the pipe too.
        daemon = subprocess.Popen([sys.executable, "-c", ORPHAN], stdout=subprocess.PIPE,
                                  text=True)
        self.addCleanup(daemon.stdout.close)
        workers = [int(pid) for pid in daemon.stdout.readline().split()]
        daemon.wait(60)
        self.assertTrue(workers)
        deadline = time.monotonic() + 10
        while not all(map(gone, workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual([pid for pid in workers if not gone(pid)], [])
