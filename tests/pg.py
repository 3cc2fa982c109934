"""The PostgreSQL the tests run against: one throwaway cluster per run, or
$DATASERV_TEST_DATABASE (a DSN) to use an existing server instead."""

import atexit
import os
import shutil
import tempfile

from twisted.internet import defer, reactor

from dataserv.storage.database import Database
from dataserv.storage.pgcluster import Cluster
from dataserv.storage.store import TRUNCATE_ALL

_cluster = None
_dsn = None


def cluster():
    """The suite's own cluster (started on first use), or None with DATASERV_TEST_DATABASE."""
    global _cluster, _dsn
    if os.environ.get("DATASERV_TEST_DATABASE"):
        return None
    if _cluster is None:
        directory = tempfile.mkdtemp(prefix="dataserv-test-")
        os.chmod(directory, 0o755)  # the cluster user must reach it when we are root
        _cluster = Cluster(directory, durable=False)

        def remove():
            try:
                _cluster.stop()
            finally:
                shutil.rmtree(directory, ignore_errors=True)

        atexit.register(remove)
        _dsn = _cluster.start()
    return _cluster


def dsn():
    """libpq DSN of the test database."""
    if os.environ.get("DATASERV_TEST_DATABASE"):
        return os.environ["DATASERV_TEST_DATABASE"]
    cluster()
    return _dsn


@defer.inlineCallbacks
def open_database(testcase, pool_size=2, clean=True, name=None, dsn_text=None):
    """A started, migrated Database on the real reactor, stopped at test cleanup
    (``name``: the daemon name its connections carry; ``dsn_text``: another DSN)."""
    db = Database(reactor, dsn_text or dsn(), pool_size=pool_size, name=name)
    db.startService()
    testcase.addCleanup(db.stopService)
    yield db.when_ready()
    if clean:
        yield db.run_operation(TRUNCATE_ALL)
    return db
