"""Each authenticated request is accepted once, in one daemon and across daemons on one
database; DATASERV-V2 requests through the API; downgrade protection.

"Two daemons" are two :class:`tests.test_api.Server` objects (each its own Farmers,
store, caches and API) over one PostgreSQL, as two twistd processes would be.
"""

import hashlib

from twisted.internet import defer

from dataserv.identity.signing import v2_headers_for
from dataserv.registry import farmers as rules
from dataserv.storage.database import DatabaseUnavailable
from tests.test_api import (
    ALICE, BOB, AUDIT_UNAUTHENTICATED, BANDWIDTH_UNAUTHENTICATED, HEIGHT_OK,
    HEIGHT_UNAUTHENTICATED, PING_OK, PING_UNAUTHENTICATED, REGISTER_UNAUTHENTICATED,
    APITestCase, Server, farmer_json)
from tests.test_v2 import malleated, malleated_signature

REPLAYED = b"replayed request"
DOWNGRADE = b"legacy headers refused: this farmer uses DATASERV-V2"
SHA = hashlib.sha256(b"block").hexdigest()


class Base(APITestCase):

    def other(self):
        """A second daemon over the same database and clock."""
        return Server(self.db, self.clock, self.settings)

    def v2(self, key, path, date=None):
        return v2_headers_for(key, self.settings.address, "GET", path,
                              date=self.date() if date is None else date)

    def assertRefused(self, reply, body, reason=REPLAYED):  # noqa: N802
        """401 with the route's contract body and the reason beside it."""
        self.assertAnswer(reply, 401, body, b"text/html; charset=utf-8")
        self.assertEqual(self.header(reply, b"X-Auth-Error"), reason)

    @defer.inlineCallbacks
    def claims(self):
        rows = yield self.db.run_query("SELECT count(*) FROM request_claims")
        return rows[0][0]

    def claimed_behind(self, server=None):
        """Write the replay keys of throttled pings now (a daemon alone on its
        database claims them a moment after their answer) and wait for it."""
        return (server or self.server).farmers.throttled_claims.drain()

    @defer.inlineCallbacks
    def v2_ping_on_another_daemon(self, key):
        """Register ``key`` here; 10 s later it pings another daemon with v2, and a
        second passes: this daemon throttles it in memory and has not seen it use v2."""
        yield self.registered(key)
        path = "/api/ping/" + key.address
        self.clock.advance(10)
        self.assertAnswer((yield self.get(path, self.v2(key, path), server=self.other())),
                          200, PING_OK)
        self.clock.advance(1)

    @defer.inlineCallbacks
    def v2_since(self, key):
        rows = yield self.db.run_query(
            "SELECT v2_since FROM farmers WHERE btc_addr = %s", (key.address,))
        return rows[0][0]


class LegacyReplayTests(Base):

    @defer.inlineCallbacks
    def test_exact_repeat_of_a_ping_is_refused(self):
        yield self.registered(ALICE)
        self.clock.advance(61)
        headers = self.signed(ALICE)
        self.assertAnswer((yield self.ping(ALICE, headers)), 200, PING_OK)
        batches = self.server.farmers.pings.batches
        self.clock.advance(1)
        self.assertRefused((yield self.ping(ALICE, headers)), PING_UNAUTHENTICATED)
        self.assertEqual((yield self.last_seen(ALICE)), self.t0 + 61)
        # This daemon knew the key: the repeat never went to the database.
        self.assertEqual(self.server.farmers.pings.batches, batches)

    @defer.inlineCallbacks
    def test_repeat_on_another_daemon_is_refused(self):
        yield self.registered(ALICE)
        self.clock.advance(61)
        headers = self.signed(ALICE)
        other = self.other()
        self.assertAnswer((yield self.ping(ALICE, headers)), 200, PING_OK)
        reply = yield self.get("/api/ping/" + ALICE.address, headers, server=other)
        self.assertRefused(reply, PING_UNAUTHENTICATED)

    @defer.inlineCallbacks
    def test_throttled_ping_repeat_refused_on_another_daemon(self):
        # The ping writes nothing (throttled in memory) yet its key is claimed.
        self.serve(max_ping=20)
        yield self.registered(ALICE)
        self.clock.advance(5)
        headers = self.signed(ALICE)
        self.assertAnswer((yield self.ping(ALICE, headers)), 200, PING_OK)
        self.assertEqual(self.server.farmers.contacts_submitted, 0)
        other = self.other()
        self.clock.advance(16)  # past max-ping, within the Date window: it would be written
        reply = yield self.get("/api/ping/" + ALICE.address, headers, server=other)
        self.assertRefused(reply, PING_UNAUTHENTICATED)
        self.assertEqual((yield self.last_seen(ALICE)), self.t0)

    @defer.inlineCallbacks
    def test_one_pair_on_two_routes_in_one_second_is_accepted(self):
        # dataserv-client 2.x signs with one-second Dates: ping then height may
        # carry the same Date and Authorization.
        yield self.registered(ALICE)
        self.clock.advance(61)
        headers = self.signed(ALICE)
        self.assertAnswer((yield self.ping(ALICE, headers)), 200, PING_OK)
        self.assertAnswer((yield self.height(ALICE, 5, headers)), 200, HEIGHT_OK)
        self.assertRefused((yield self.height(ALICE, 5, headers)), HEIGHT_UNAUTHENTICATED)
        # Another height is another request.
        self.assertAnswer((yield self.height(ALICE, 6, headers)), 200, HEIGHT_OK)

    @defer.inlineCallbacks
    def test_every_route_refuses_its_repeat_on_another_daemon(self):
        other = self.other()
        headers = self.signed(BOB)
        for path, body in (
                ("/api/register/" + BOB.address, REGISTER_UNAUTHENTICATED),
                ("/api/height/%s/7" % BOB.address, HEIGHT_UNAUTHENTICATED),
                ("/api/bandwidth/%s/1/2" % BOB.address, BANDWIDTH_UNAUTHENTICATED),
                ("/api/audit/%s/3/%s" % (BOB.address, SHA), AUDIT_UNAUTHENTICATED)):
            first = yield self.get(path, headers)
            self.assertEqual(first.status, 200, (path, first.body))
            self.assertRefused((yield self.get(path, headers, server=other)), body)
            self.assertRefused((yield self.get(path, headers)), body)
        record = yield self.server.store.farmer(BOB.address)
        self.assertEqual((record.height, record.bandwidth_upload), (7, 1.0))

    @defer.inlineCallbacks
    def test_other_spellings_of_the_same_request_are_refused(self):
        yield self.registered(ALICE)
        self.clock.advance(61)
        headers = self.signed(ALICE)
        self.assertAnswer((yield self.height(ALICE, 5, headers)), 200, HEIGHT_OK)
        for path in ("/api/height/%s/5" % ALICE.nodeid, "/api/height/%s/05" % ALICE.address,
                     "/api/height/%s/5?again=1" % ALICE.address):
            self.assertRefused((yield self.get(path, headers)), HEIGHT_UNAUTHENTICATED)
        # The other valid encoding of the same signature is no new request either.
        other = malleated_signature(headers[b"Authorization"])
        self.assertNotEqual(other, headers[b"Authorization"])
        self.assertTrue(self.server.verifier.verify(ALICE.address, headers[b"Date"], other,
                                                    self.clock.seconds()) is None)
        reply = yield self.height(ALICE, 5, {**headers, b"Authorization": other})
        self.assertRefused(reply, HEIGHT_UNAUTHENTICATED)

    @defer.inlineCallbacks
    def test_head_repeat_of_a_get_is_refused(self):
        # Whatever the routes do with HEAD, the rules take it for the same request.
        yield self.registered(ALICE)
        self.clock.advance(61)
        headers = self.signed(ALICE)
        self.assertAnswer((yield self.ping(ALICE, headers)), 200, PING_OK)
        request = rules.Request(date=headers[b"Date"], authorization=headers[b"Authorization"],
                                now=self.clock.seconds(), method="HEAD",
                                target="/api/ping/" + ALICE.address)
        failure = yield self.assertFailure(
            self.server.farmers.ping(ALICE.address, request), rules.Unauthenticated)
        self.assertEqual(failure.reason, REPLAYED.decode())

    @defer.inlineCallbacks
    def test_race_between_two_daemons_one_wins(self):
        yield self.registered(ALICE)
        self.clock.advance(61)
        headers = self.signed(ALICE)
        other = self.other()
        path = "/api/height/%s/9" % ALICE.address
        started = [self.server.start(path, headers), other.start(path, headers)]
        replies = yield defer.gatherResults(
            [self.server.settle(started[0]), other.settle(started[1])])
        self.assertEqual(sorted(r.status for r in replies), [200, 401])

    @defer.inlineCallbacks
    def test_refused_before_any_write_is_not_a_claim(self):
        # A 413 changes nothing: its repeat is answered the same, not as a replay.
        yield self.registered(ALICE)
        headers = self.signed(ALICE)
        for _ in range(2):
            reply = yield self.height(ALICE, 200000, headers)
            self.assertEqual(reply.status, 413)

    @defer.inlineCallbacks
    def test_database_outage_gives_the_key_back(self):
        yield self.registered(ALICE)
        self.clock.advance(61)
        headers = self.signed(ALICE)
        store = self.server.store
        real = store.set_height
        store.set_height = lambda *a, **k: defer.fail(DatabaseUnavailable("down"))
        self.assertEqual((yield self.height(ALICE, 5, headers)).status, 503)
        store.set_height = real
        self.assertAnswer((yield self.height(ALICE, 5, headers)), 200, HEIGHT_OK)

    @defer.inlineCallbacks
    def test_claims_expire_and_are_pruned(self):
        yield self.registered(ALICE)
        self.assertEqual((yield self.claims()), 1)
        self.clock.advance(2 * self.settings.auth_timeout + 1)
        yield self.server.summariser.run_pass()
        self.assertEqual((yield self.claims()), 0)

    @defer.inlineCallbacks
    def test_skip_authentication_claims_nothing(self):
        self.serve(skip_authentication=True)
        yield self.get("/api/register/" + ALICE.address)
        self.clock.advance(61)
        for _ in range(2):
            self.assertAnswer((yield self.get("/api/ping/" + ALICE.address)), 200, PING_OK)
        self.assertEqual((yield self.claims()), 0)


class AloneTests(Base):
    """A daemon alone on its database (registry.peers.PeerWatch says so) answers a
    throttled ping at once and claims its key a moment later."""

    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        self.serve(max_ping=20)
        self.server.farmers.alone = True

    @defer.inlineCallbacks
    def test_throttled_ping_is_answered_before_its_claim(self):
        yield self.registered(ALICE)
        claims = yield self.claims()
        self.clock.advance(5)
        headers = self.signed(ALICE)
        batches = self.server.farmers.pings.batches
        self.assertAnswer((yield self.ping(ALICE, headers)), 200, PING_OK)
        self.assertEqual(self.server.farmers.pings.batches, batches)
        self.assertEqual((yield self.claims()), claims)
        # Its repeat is refused here from memory.
        self.assertRefused((yield self.ping(ALICE, headers)), PING_UNAUTHENTICATED)
        self.clock.advance(rules.THROTTLED_CLAIMS_SECONDS)
        yield self.claimed_behind()
        self.assertEqual((yield self.claims()), claims + 1)
        self.assertEqual((yield self.last_seen(ALICE)), self.t0)

    @defer.inlineCallbacks
    def test_throttled_pings_claim_first_once_the_lease_lapses(self):
        # PeerWatch trusts a check that found no other daemon for a while only.
        yield self.registered(ALICE)
        self.server.farmers.alone_until = self.clock.seconds() + 2
        self.clock.advance(1)
        batches = self.server.farmers.pings.batches
        self.assertAnswer((yield self.ping(ALICE, self.signed(ALICE))), 200, PING_OK)
        self.assertEqual(self.server.farmers.pings.batches, batches)
        self.clock.advance(2)  # the lease is over, the ping still throttled
        self.assertAnswer((yield self.ping(ALICE, self.signed(ALICE))), 200, PING_OK)
        self.assertEqual(self.server.farmers.pings.batches, batches + 1)
        self.assertEqual((yield self.last_seen(ALICE)), self.t0)

    @defer.inlineCallbacks
    def test_a_starting_daemon_answers_signed_requests_503(self):
        # registry.peers: other daemons on the database have not all seen this one.
        self.server.farmers.claims_from = self.clock.seconds() + 3
        reply = yield self.get("/api/register/" + BOB.address, self.signed(BOB))
        self.assertEqual((reply.status, reply.body),
                         (503, b"Service unavailable: this server is starting. "
                               b"Try again in a few seconds."))
        self.assertIsNotNone(self.header(reply, b"Retry-After"))
        health = yield self.get("/health")
        self.assertEqual((health.status, health.json()["database"]), (503, "ok"))
        self.assertIn("starting", health.json())
        self.clock.advance(3)
        reply = yield self.get("/api/register/" + BOB.address, self.signed(BOB))
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual((yield self.get("/health")).status, 200)

    @defer.inlineCallbacks
    def test_throttled_ping_is_answered_while_the_database_is_down(self):
        # It writes nothing, so it needs no database; its key waits in memory and
        # is claimed once the database answers again.
        yield self.registered(ALICE)
        claims = yield self.claims()
        store = self.server.store
        real = store.record_pings
        store.record_pings = lambda *a, **k: defer.fail(DatabaseUnavailable("down"))
        self.clock.advance(5)
        headers = self.signed(ALICE)
        self.assertAnswer((yield self.ping(ALICE, headers)), 200, PING_OK)
        self.assertRefused((yield self.ping(ALICE, headers)), PING_UNAUTHENTICATED)
        self.clock.advance(rules.THROTTLED_CLAIMS_SECONDS)
        self.assertEqual(len(self.server.farmers.throttled_claims), 1)
        store.record_pings = real
        yield self.claimed_behind()
        self.assertEqual((yield self.claims()), claims + 1)

    @defer.inlineCallbacks
    def test_a_repeat_of_a_request_taken_elsewhere_is_counted(self):
        # What "alone" rules out: were another daemon to take a request first, a
        # throttled repeat here would be answered (writing nothing) and only
        # counted once its claim met the other's.
        yield self.registered(ALICE)
        self.clock.advance(5)
        headers = self.signed(ALICE)
        other = self.other()
        reply = yield self.get("/api/ping/" + ALICE.address, headers, server=other)
        self.assertAnswer(reply, 200, PING_OK)
        self.assertAnswer((yield self.ping(ALICE, headers)), 200, PING_OK)
        self.assertEqual(self.server.farmers.late_replays, 0)
        yield self.claimed_behind()
        self.assertEqual(self.server.farmers.late_replays, 1)
        self.assertEqual((yield self.last_seen(ALICE)), self.t0)

    @defer.inlineCallbacks
    def test_the_claim_still_meets_a_v2_mark(self):
        # A legacy ping throttled here after the farmer used v2 (as only another
        # daemon could have made happen) is refused once its claim meets the mark.
        yield self.v2_ping_on_another_daemon(ALICE)
        self.assertAnswer((yield self.ping(ALICE)), 200, PING_OK)
        yield self.claimed_behind()
        self.clock.advance(1)
        self.assertRefused((yield self.ping(ALICE)), PING_UNAUTHENTICATED, DOWNGRADE)
        self.assertEqual((yield self.last_seen(ALICE)), self.t0)

    @defer.inlineCallbacks
    def test_not_alone_claims_before_answering(self):
        # The same throttled ping with another daemon on the database: claimed in
        # the group commit, before its answer.
        self.server.farmers.alone = False
        yield self.registered(ALICE)
        claims = yield self.claims()
        self.clock.advance(5)
        self.assertAnswer((yield self.ping(ALICE)), 200, PING_OK)
        self.assertEqual((yield self.claims()), claims + 1)
        self.assertEqual(len(self.server.farmers.throttled_claims), 0)


class V2Tests(Base):

    @defer.inlineCallbacks
    def test_register_ping_height_with_v2(self):
        path = "/api/register/" + ALICE.address
        reply = yield self.get(path, self.v2(ALICE, path))
        self.assertAnswer(reply, 200, farmer_json(ALICE, self.t0))
        self.assertEqual((yield self.v2_since(ALICE)), self.t0)
        self.clock.advance(61)
        path = "/api/ping/" + ALICE.address
        self.assertAnswer((yield self.get(path, self.v2(ALICE, path))), 200, PING_OK)
        path = "/api/height/%s/4" % ALICE.address
        self.assertAnswer((yield self.get(path, self.v2(ALICE, path))), 200, HEIGHT_OK)
        self.assertEqual((yield self.last_seen(ALICE)), self.t0 + 61)

    @defer.inlineCallbacks
    def test_v2_signature_for_another_path_is_401(self):
        yield self.registered(ALICE)
        headers = self.v2(ALICE, "/api/ping/" + ALICE.address)
        reply = yield self.height(ALICE, 199999, headers)
        self.assertAnswer(reply, 401, HEIGHT_UNAUTHENTICATED)
        self.assertEqual(self.header(reply, b"X-Auth-Error"),
                         b"signature does not match the request")

    @defer.inlineCallbacks
    def test_v2_is_accepted_once_in_every_daemon(self):
        yield self.registered(ALICE)
        other = self.other()
        path = "/api/ping/" + ALICE.address
        for throttled in (True, False):
            self.clock.advance(1 if throttled else 61)
            headers = self.v2(ALICE, path)
            self.assertAnswer((yield self.get(path, headers)), 200, PING_OK)
            self.assertRefused((yield self.get(path, headers)), PING_UNAUTHENTICATED)
            self.assertRefused((yield self.get(path, headers, server=other)),
                               PING_UNAUTHENTICATED)
            malleable = {**headers, b"Authorization": malleated(headers[b"Authorization"])}
            self.assertRefused((yield self.get(path, malleable, server=other)),
                               PING_UNAUTHENTICATED)

    @defer.inlineCallbacks
    def test_two_v2_requests_in_one_second_are_both_accepted(self):
        yield self.registered(ALICE)
        path = "/api/height/%s/3" % ALICE.address
        for _ in range(2):
            self.assertAnswer((yield self.get(path, self.v2(ALICE, path))), 200, HEIGHT_OK)


class DowngradeTests(Base):

    @defer.inlineCallbacks
    def used_v2(self):
        yield self.registered(ALICE)
        self.clock.advance(61)
        path = "/api/ping/" + ALICE.address
        self.assertAnswer((yield self.get(path, self.v2(ALICE, path))), 200, PING_OK)

    @defer.inlineCallbacks
    def test_legacy_refused_after_v2_in_this_daemon(self):
        yield self.used_v2()
        self.assertEqual(self.server.farmers.contacts_submitted, 1)
        for call, body in ((lambda: self.ping(ALICE), PING_UNAUTHENTICATED),
                           (lambda: self.height(ALICE, 3), HEIGHT_UNAUTHENTICATED),
                           (lambda: self.audit(ALICE, 1), AUDIT_UNAUTHENTICATED),
                           (lambda: self.register(ALICE), REGISTER_UNAUTHENTICATED)):
            self.assertRefused((yield call()), body, DOWNGRADE)
        # Refused in memory: nothing more went to be written.
        self.assertEqual(self.server.farmers.contacts_submitted, 1)

    @defer.inlineCallbacks
    def test_legacy_refused_after_v2_in_another_daemon(self):
        yield self.used_v2()
        other = self.other()
        self.clock.advance(61)
        for throttled in (False, True):
            reply = yield self.get("/api/ping/" + ALICE.address, self.fresh(ALICE), server=other)
            self.assertRefused(reply, PING_UNAUTHENTICATED, DOWNGRADE)
        reply = yield self.get("/api/height/%s/3" % ALICE.address, self.fresh(ALICE),
                               server=self.other())
        self.assertRefused(reply, HEIGHT_UNAUTHENTICATED, DOWNGRADE)
        reply = yield self.get("/api/register/" + ALICE.address, self.fresh(ALICE),
                               server=self.other())
        self.assertRefused(reply, REGISTER_UNAUTHENTICATED, DOWNGRADE)
        self.assertEqual((yield self.last_seen(ALICE)), self.t0 + 61)

    @defer.inlineCallbacks
    def test_throttled_legacy_ping_refused_after_v2_elsewhere(self):
        # This daemon throttles the farmer in memory (it wrote its last contact) and
        # has not seen it use v2: the key-only claim still meets farmers.v2_since.
        yield self.v2_ping_on_another_daemon(ALICE)
        submitted = self.server.farmers.contacts_submitted
        self.assertRefused((yield self.ping(ALICE)), PING_UNAUTHENTICATED, DOWNGRADE)
        self.assertEqual(self.server.farmers.contacts_submitted, submitted)
        self.assertIn(ALICE.address, self.server.farmers.v2_farmers)

    @defer.inlineCallbacks
    def test_other_farmers_keep_legacy(self):
        yield self.used_v2()
        yield self.registered(BOB)
        self.clock.advance(61)
        self.assertAnswer((yield self.ping(BOB)), 200, PING_OK)

    @defer.inlineCallbacks
    def test_v2_registration_marks_the_farmer(self):
        path = "/api/register/" + ALICE.address
        yield self.get(path, self.v2(ALICE, path))
        self.assertRefused((yield self.ping(ALICE)), PING_UNAUTHENTICATED, DOWNGRADE)
        other = self.other()
        reply = yield self.get("/api/ping/" + ALICE.address, self.fresh(ALICE), server=other)
        self.assertRefused(reply, PING_UNAUTHENTICATED, DOWNGRADE)

