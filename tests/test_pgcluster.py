"""The private PostgreSQL cluster with the real binaries: initdb, start, adopt, stop."""

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile

from twisted.internet import defer
from twisted.trial import unittest

from dataserv.storage import pgcluster
from dataserv.storage.embedded import EmbeddedPostgres
from dataserv.storage.pgcluster import Cluster, ClusterError, DataDirLock, find_bindir
from tests.test_migrations import admin


def server_bindir():
    """The server binaries; skip when an external test database stands in for them."""
    try:
        return find_bindir()
    except ClusterError:
        if os.environ.get("DATASERV_TEST_DATABASE"):
            raise unittest.SkipTest("no PostgreSQL server binaries")
        raise


def reachable_directory(testcase, prefix="dataserv-cluster-"):
    """A temporary directory under /tmp that the cluster user can enter."""
    directory = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(directory, 0o755)
    testcase.addCleanup(shutil.rmtree, directory, True)
    return directory


def new_cluster(testcase, data_dir):
    """A Cluster on data_dir that is stopped at cleanup, whatever happens."""
    cluster = Cluster(data_dir, bindir=server_bindir(), durable=False)
    testcase.addCleanup(cluster.stop)
    return cluster


def fake_bindir(testcase):
    """A directory with executable initdb, pg_ctl and postgres that do nothing."""
    directory = reachable_directory(testcase, "dataserv-fake-bin-")
    for name in ("initdb", "pg_ctl", "postgres"):
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            f.write("#!/bin/sh\nexit 0\n")
        os.chmod(path, 0o755)
    return directory


class ClusterLifecycleTests(unittest.TestCase):
    """Start, stop, restart and adopt a real cluster."""

    timeout = 120

    def setUp(self):
        self.directory = reachable_directory(self)

    def test_first_start_initialises(self):
        cluster = new_cluster(self, self.directory)
        self.assertFalse(cluster.is_initialised())
        self.assertFalse(cluster.is_running())
        dsn = cluster.start()
        self.assertTrue(cluster.is_initialised())
        self.assertTrue(cluster.is_running())
        self.assertEqual(admin(dsn, "SELECT 40 + 2"), [(42,)])
        self.assertEqual(admin(dsn, "SHOW listen_addresses"), [("",)])
        cluster.stop()
        self.assertFalse(cluster.is_running())
        self.assertFalse(os.path.exists(os.path.join(cluster.pgdata, "postmaster.pid")))

    def test_restart_keeps_data(self):
        first = new_cluster(self, self.directory)
        dsn = first.start()
        admin(dsn, "CREATE TABLE kept (word text)")
        admin(dsn, "INSERT INTO kept VALUES ('still here')")
        first.stop()
        self.assertFalse(first.is_running())
        second = new_cluster(self, self.directory)
        self.assertTrue(second.is_initialised())
        dsn = second.start()
        self.assertEqual(admin(dsn, "SELECT word FROM kept"), [("still here",)])

    def test_adopts_running_cluster(self):
        first = new_cluster(self, self.directory)
        first.start()
        second = new_cluster(self, self.directory)
        self.assertTrue(second.is_running())
        dsn = second.start()
        self.assertEqual(second.socket_dir, first.socket_dir)
        self.assertEqual(admin(dsn, "SELECT 1"), [(1,)])
        second.stop()
        self.assertFalse(first.is_running())


class UnreachableDataDirTests(unittest.TestCase):
    """As root, a data dir the cluster user cannot enter is refused with the fix."""

    def setUp(self):
        if os.geteuid() != 0:
            raise unittest.SkipTest("only root runs the cluster as another user")
        self.parent = tempfile.mkdtemp(prefix="dataserv-private-")  # 0700, root's
        self.addCleanup(shutil.rmtree, self.parent, True)

    def test_refused_with_the_fix(self):
        before = os.stat(self.parent)
        data_dir = os.path.join(self.parent, "data")
        cluster = new_cluster(self, data_dir)
        with self.assertRaises(ClusterError) as caught:
            cluster.start()
        message = str(caught.exception)
        self.assertIn(data_dir, message)
        self.assertIn("--data-dir", message)
        self.assertIn("postgres", message)
        self.assertNotIn("\n", message)
        self.assertFalse(cluster.is_running())
        after = os.stat(self.parent)
        self.assertEqual(
            (stat.S_IMODE(after.st_mode), after.st_uid, after.st_gid),
            (stat.S_IMODE(before.st_mode), before.st_uid, before.st_gid))


class FindBindirTests(unittest.SynchronousTestCase):
    """Where the server binaries are looked for."""

    def _hide_system_binaries(self):
        self.patch(pgcluster.shutil, "which", lambda name: None)
        self.patch(pgcluster.glob, "glob", lambda pattern: [])
        self.patch(pgcluster.importlib.util, "find_spec", lambda name, *a: None)

    def test_environment_first(self):
        fake = fake_bindir(self)
        self.assertEqual(find_bindir({"DATASERV_PG_BIN": fake}), fake)

    def test_environment_without_other_binaries(self):
        self._hide_system_binaries()
        fake = fake_bindir(self)
        self.assertEqual(find_bindir({"DATASERV_PG_BIN": fake}), fake)

    def test_nothing_found(self):
        self._hide_system_binaries()
        with self.assertRaises(ClusterError) as caught:
            find_bindir({"DATASERV_PG_BIN": "/nonexistent/bin"})
        message = str(caught.exception)
        for hint in ("initdb", "DATASERV_PG_BIN", "--database", "apt-get install postgresql"):
            self.assertIn(hint, message)

    def test_system_binaries(self):
        bindir = server_bindir()
        for name in ("initdb", "pg_ctl", "postgres"):
            self.assertTrue(os.access(os.path.join(bindir, name), os.X_OK), name)



# Takes the lock the way a daemon does, says so, then waits to be killed.
_HOLDER = """
import sys, time
from dataserv.storage.pgcluster import DataDirLock
lock = DataDirLock(sys.argv[1])
lock.acquire()
print("locked", flush=True)
time.sleep(60)
"""


class DataDirLockTests(unittest.SynchronousTestCase):
    """One daemon per data dir: flock on a file in it, with the holder's pid."""

    def setUp(self):
        self.directory = reachable_directory(self)

    def held(self):
        lock = DataDirLock(self.directory)
        lock.acquire()
        self.addCleanup(lock.release)
        return lock

    def test_second_lock_names_the_holder(self):
        self.held()
        with self.assertRaises(ClusterError) as caught:
            DataDirLock(self.directory).acquire()
        self.assertEqual(str(caught.exception).split(";")[0],
                         "data directory %s is in use by pid %d" % (self.directory, os.getpid()))

    def test_released_lock_is_free(self):
        self.held().release()
        self.held()
        with open(os.path.join(self.directory, DataDirLock.NAME)) as f:
            self.assertEqual(f.read(), "%d\n" % (os.getpid(),))

    def test_lock_of_a_killed_process_is_taken_over(self):
        holder = subprocess.Popen([sys.executable, "-c", _HOLDER, self.directory],
                                  stdout=subprocess.PIPE, text=True)
        self.addCleanup(holder.wait)
        self.addCleanup(lambda: holder.poll() is None and holder.kill())
        self.assertEqual(holder.stdout.readline(), "locked\n")
        holder.stdout.close()
        with self.assertRaises(ClusterError) as caught:
            DataDirLock(self.directory).acquire()
        self.assertIn("in use by pid %d" % (holder.pid,), str(caught.exception))
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        self.held()  # the kernel dropped the dead process's lock

    def test_unwritable_data_dir(self):
        with self.assertRaises(ClusterError) as caught:
            DataDirLock(os.path.join(self.directory, "missing")).acquire()
        self.assertIn("--data-dir", str(caught.exception))


class DataDirCreationTests(unittest.SynchronousTestCase):
    """The data dir is created, but not a tree of directories up to it."""

    def setUp(self):
        self.directory = reachable_directory(self)

    def prepared(self, data_dir):
        cluster = Cluster(data_dir, bindir=fake_bindir(self), user=None)
        cluster.prepare()
        return cluster

    def test_created_in_existing_parent(self):
        data_dir = os.path.join(self.directory, "data")
        self.prepared(data_dir)
        self.assertTrue(os.path.isdir(os.path.join(data_dir, "pg")))

    def test_missing_parent(self):
        parent = os.path.join(self.directory, "typo")
        with self.assertRaises(ClusterError) as caught:
            self.prepared(os.path.join(parent, "data"))
        self.assertIn("%s does not exist" % (parent,), str(caught.exception))
        self.assertIn("--data-dir", str(caught.exception))
        self.assertFalse(os.path.exists(parent))

    def test_parent_is_a_file(self):
        parent = os.path.join(self.directory, "file")
        open(parent, "w").close()
        with self.assertRaises(ClusterError) as caught:
            self.prepared(os.path.join(parent, "data"))
        self.assertIn("%s is not a directory" % (parent,), str(caught.exception))

    def test_data_dir_is_a_file(self):
        data_dir = os.path.join(self.directory, "data")
        open(data_dir, "w").close()
        with self.assertRaises(ClusterError) as caught:
            self.prepared(data_dir)
        self.assertIn("not a directory", str(caught.exception))



class EmbeddedServiceStartTests(unittest.SynchronousTestCase):
    """twistd starts services before the reactor runs and installs its SIGTERM handler
    only when it does: the embedded cluster's start waits for that, so a stop asked
    for during initdb is handled (not a default-action kill in the middle of it)."""

    class Reactor:
        def __init__(self):
            self.when_running = []

        def callWhenRunning(self, f, *args):  # noqa: N802
            self.when_running.append((f, args))

        def run(self):
            for f, args in self.when_running:
                f(*args)

    class Cluster:
        pgdata = "/nowhere/pg"
        socket_dir = "/nowhere"

        def start(self):
            return "dsn"

        def stop(self):
            return None

        def dsn(self):
            return "dsn"

    def embedded(self):
        reactor, cluster = self.Reactor(), self.Cluster()
        embedded = EmbeddedPostgres(reactor, cluster)
        ran = []
        embedded._in_thread = lambda f: (ran.append(f.__name__), defer.succeed(f()))[1]
        return embedded, reactor, ran

    def test_the_start_waits_for_the_reactor(self):
        embedded, reactor, ran = self.embedded()
        embedded.startService()
        self.assertEqual(ran, [])
        reactor.run()
        self.assertEqual(ran, ["start"])
        self.assertEqual(self.successResultOf(embedded.dsn()), "dsn")

    def test_stopped_before_the_reactor_ran_it_never_starts(self):
        embedded, reactor, ran = self.embedded()
        embedded.startService()
        self.successResultOf(embedded.stopService())
        reactor.run()
        self.assertEqual(ran, ["stop"])
