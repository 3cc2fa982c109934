"""A client that hangs up makes Klein cancel the handler's Deferred: the database
work must go on (and be kept), with no unhandled error and no query cancel."""

from twisted.internet import defer, task
from twisted.trial import unittest

from dataserv.registry import farmers
from dataserv.daemon.config import Settings
from dataserv.identity.signing import FarmerKey
from dataserv.storage.store import FarmerStore
from tests import pg

T = 1700000000.0
FARMER = FarmerKey.from_seed(b"hangs up").address


def request(now):
    return farmers.Request(date=None, authorization=None, now=now, ip=None)


class CancelTests(unittest.TestCase):

    @defer.inlineCallbacks
    def setUp(self):
        self.db = yield pg.open_database(self)
        clock = task.Clock()
        self.store = FarmerStore(self.db, clock)
        self.farmers = farmers.Farmers(
            self.store, None, Settings(skip_authentication=True, max_ping=0), clock)
        yield self.farmers.register(FARMER, None, request(T))

    @defer.inlineCallbacks
    def settle(self):
        """Let the writes in flight finish: a later query on every connection."""
        yield defer.gatherResults([self.db.run_query("SELECT 1") for _ in range(4)])

    @defer.inlineCallbacks
    def cancelled_then_kept(self, call):
        d = call()
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        yield self.settle()
        yield self.farmers.pings.submit((FARMER, T, None, None, True))  # the queue still works
        return (yield self.store.farmer(FARMER))

    @defer.inlineCallbacks
    def test_ping(self):
        record = yield self.cancelled_then_kept(
            lambda: self.farmers.ping(FARMER, request(T + 100)))
        self.assertEqual(record.last_seen, T + 100)

    @defer.inlineCallbacks
    def test_height(self):
        record = yield self.cancelled_then_kept(
            lambda: self.farmers.set_height(FARMER, "77", request(T + 100)))
        self.assertEqual((record.height, record.last_seen), (77, T + 100))

    @defer.inlineCallbacks
    def test_audit(self):
        yield self.cancelled_then_kept(
            lambda: self.farmers.audit(FARMER, "5", "ab" * 32, request(T + 100)))
        record = yield self.store.farmer(FARMER)
        count, last = yield self.store.audit_summary(record.id)
        self.assertEqual((count, last), (1, 5))
