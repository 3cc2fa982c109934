"""Tests for :mod:`dataserv.registry.peers` and what it stands on: daemons see each
other on their database by the name in their connections' application_name, and a
daemon alone there loads the unexpired replay keys before it answers throttled pings
without a round trip."""

import time
import uuid
from types import SimpleNamespace

from twisted.internet import defer, reactor, task
from twisted.logger import Logger
from twisted.trial import unittest

from dataserv.identity.replay import ReplayCache
from dataserv.registry.peers import (CHECK_SECONDS, GATE_SECONDS, LEASE_SECONDS,
                                     OPEN_POLL_SECONDS, PeerWatch)
from dataserv.storage.database import connection_params, daemon_name
from dataserv.storage.store import FarmerStore
from tests import pg


def unique_name(tag):
    return "dataserv/test-%s/%s" % (tag, uuid.uuid4().hex[:8])


@defer.inlineCallbacks
def eventually(check, timeout=10.0):
    """check() (a Deferred of a bool) until true; fails after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not (yield check()):
        if time.monotonic() > deadline:
            raise AssertionError("did not happen within %ss" % timeout)
        yield task.deferLater(reactor, 0.05, lambda: None)


class NameTests(unittest.SynchronousTestCase):

    def test_the_daemon_name_is_host_and_pid(self):
        import os
        import socket
        self.assertEqual(daemon_name(), "dataserv/%s/%d" % (socket.gethostname(), os.getpid()))

    def test_the_name_goes_after_the_operators_own(self):
        params = connection_params("dbname=x application_name=billing", 5, "dataserv/h/1")
        self.assertEqual(params["application_name"], "billing dataserv/h/1")
        self.assertEqual(connection_params("dbname=x", 5, "dataserv/h/1")["application_name"],
                         "dataserv/h/1")


class OtherDaemonsTests(unittest.TestCase):
    """store.other_daemons over the suite's real PostgreSQL."""

    @defer.inlineCallbacks
    def test_another_database_client_by_name(self):
        own = unique_name("a")
        db = yield pg.open_database(self, name=own)
        store = FarmerStore(db, task.Clock())
        before = yield store.other_daemons(own)
        other = yield pg.open_database(self, clean=False, name=unique_name("b"),
                                       dsn_text=pg.dsn() + " application_name=ops")
        yield eventually(lambda: store.other_daemons(own).addCallback(
            lambda n: n == before + 1))
        # Its own connections never count, however many there are.
        self.assertEqual((yield FarmerStore(other, task.Clock()).other_daemons(
            other.daemon_name)) >= 1, True)
        yield other.stopService()
        yield eventually(lambda: store.other_daemons(own).addCallback(
            lambda n: n == before))

    @defer.inlineCallbacks
    def test_unexpired_claims(self):
        db = yield pg.open_database(self)
        store = FarmerStore(db, task.Clock())
        yield db.run_operation("INSERT INTO request_claims (key, expires) VALUES"
                               " ('\\x01', 100), ('\\x02', 200)")
        self.assertEqual((yield store.unexpired_claims(150)), [(b"\x02", 200)])


class FakeStore:
    """unexpired_claims and other_daemons answered by the test."""

    def __init__(self):
        self.keys = []
        self.others = 0
        self.error = None
        self.loads = 0

    def unexpired_claims(self, now):
        self.loads += 1
        if self.error:
            return defer.fail(self.error)
        return defer.succeed(self.keys)

    def other_daemons(self, name):
        if self.error:
            return defer.fail(self.error)
        return defer.succeed(self.others)


class PeerWatchTests(unittest.SynchronousTestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1000)
        self.store = FakeStore()
        self.farmers = SimpleNamespace(alone_until=0.0, claims_from=0.0,
                                       replays=ReplayCache(60))
        self.events = []
        self.watch = PeerWatch(self.store, self.farmers, "dataserv/me/1", self.clock,
                               when_ready=lambda: defer.succeed(None))
        self.watch.log = Logger(observer=self.events.append)

    def start(self):
        self.watch.startService()
        self.addCleanup(self.watch.stopService)

    def alone(self):
        return self.clock.seconds() < self.farmers.alone_until

    def test_alone_once_the_keys_are_loaded(self):
        self.store.keys = [(b"k" * 16, 1050.0)]
        self.start()
        self.assertTrue(self.alone())
        self.assertFalse(self.farmers.replays.claim(b"k" * 16, 1001))
        self.assertEqual(self.store.loads, 1)
        self.clock.advance(CHECK_SECONDS)
        self.assertEqual(self.store.loads, 1)  # loaded once

    def test_not_alone_while_the_keys_cannot_be_loaded(self):
        self.store.error = RuntimeError("database not answering")
        self.start()
        self.clock.advance(CHECK_SECONDS)
        self.assertFalse(self.alone())
        self.assertEqual([e["log_format"].format(**e) for e in self.events],
                         ["the check for other daemons on the database failed: "
                          "database not answering"])
        self.store.error = None
        self.clock.advance(CHECK_SECONDS)
        self.assertTrue(self.alone())

    def test_others_come_and_go(self):
        self.start()
        self.assertTrue(self.alone())
        self.store.others = 2
        self.clock.advance(CHECK_SECONDS)
        self.assertFalse(self.alone())
        self.store.others = 0
        self.clock.advance(CHECK_SECONDS)
        self.assertTrue(self.alone())

    def test_a_failed_check_lets_the_lease_lapse(self):
        # Unheard from, another daemon may have started: past the lease, throttled
        # pings claim before their answer again.
        self.start()
        self.store.error = RuntimeError("down")
        self.clock.advance(CHECK_SECONDS)
        self.assertTrue(self.alone())
        self.clock.advance(LEASE_SECONDS - CHECK_SECONDS)
        self.assertFalse(self.alone())
        self.store.error = None
        self.clock.advance(CHECK_SECONDS)
        self.assertTrue(self.alone())

    def test_no_signed_request_before_the_first_check(self):
        ready = defer.Deferred()
        self.watch._when_ready = lambda: ready
        self.start()
        self.assertEqual(self.farmers.claims_from, float("inf"))
        opened = []
        self.watch.when_open().addCallback(opened.append)
        ready.callback(None)
        self.assertEqual(self.farmers.claims_from, 0.0)
        self.clock.advance(OPEN_POLL_SECONDS)
        self.assertEqual(opened, [None])

    def test_with_others_at_start_requests_wait_until_they_have_seen_this_one(self):
        self.store.others = 1
        self.start()
        self.assertEqual(self.farmers.claims_from, 1000 + GATE_SECONDS)
        opened = []
        self.watch.when_open().addCallback(opened.append)
        self.clock.pump([OPEN_POLL_SECONDS] * int(GATE_SECONDS / OPEN_POLL_SECONDS - 1))
        self.assertEqual(opened, [])
        self.clock.advance(2 * OPEN_POLL_SECONDS)
        self.assertEqual(opened, [None])
        # Others leaving later opens nothing that was closed: the gate is for start.
        self.store.others = 0
        self.clock.advance(CHECK_SECONDS)
        self.assertEqual(self.farmers.claims_from, 1000 + GATE_SECONDS)
        self.assertTrue(self.alone())

    def test_a_cache_that_dropped_keys_in_their_window_is_never_alone_again(self):
        self.farmers.replays = ReplayCache(60, limit=2)
        for key in (b"a", b"b", b"c"):
            self.farmers.replays.claim(key, 1000)
        self.start()
        self.assertFalse(self.alone())
