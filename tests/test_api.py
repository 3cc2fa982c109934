"""The HTTP API end to end: the real Klein resource through StubTreq over real PostgreSQL.

Every test builds the collaborators by hand around a :class:`Clock` set to the current
time, so throttling, online windows and Date checks are driven by the test, not by
sleeping. Expected bodies are written out here from the wire contract (DESIGN.md §4),
never taken from the code under test.
"""

import dataclasses
import datetime
import email.utils
import gzip
import ipaddress
import time

from treq.testing import RequestTraversalAgent, StubTreq
from twisted.internet import defer, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.web.client import readBody
from twisted.web.http_headers import Headers

from dataserv.web.api import API
from dataserv.web.metrics import Metrics
from dataserv.identity.auth import Verifier
from dataserv.client.farmer import Reply
from dataserv.daemon.config import Settings
from dataserv.registry.farmers import Farmers
from dataserv.daemon.service import Site
from dataserv.identity.signing import FarmerKey, headers_for
from dataserv.storage.store import FarmerStore
from dataserv.storage.proofs_store import ProofStore
from dataserv.proofs.rules import Proofs
from dataserv.registry.summary import Summariser
from dataserv.web.snapshot import SnapshotRenderer
from tests import pg

ALICE = FarmerKey.from_seed(b"test_api alice")
BOB = FarmerKey.from_seed(b"test_api bob")
CAROL = FarmerKey.from_seed(b"test_api carol")
NOBODY = FarmerKey.from_seed(b"test_api never registered")
OTHER_SERVER = FarmerKey.from_seed(b"test_api another server").address

P2SH_PAYOUT = "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy"
BAD_CHECKSUM = "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLz"
BAD_ID = "notAnAddress"
SHA_A = "a" * 64
SHA_B = "0123456789abcdef" * 4

TEXT = b"text/html; charset=utf-8"
JSON = b"application/json"

REGISTER_BAD_ADDRESS = b"Registration Failed: Invalid Bitcoin address."
REGISTER_UNAUTHENTICATED = b"Registration Failed: Invalid authentication headers."
REGISTER_TAKEN = b"Registration Failed: Address already is registered."
PING_OK = b"Ping accepted."
PING_BAD_ADDRESS = b"Ping Failed: Invalid Bitcoin address."
PING_UNAUTHENTICATED = b"Ping Failed: Invalid authentication headers."
PING_NOT_FOUND = b"Ping Failed: Farmer not found."
HEIGHT_OK = b"Height accepted."
HEIGHT_BAD_ADDRESS = b"Invalid Bitcoin address."
HEIGHT_UNAUTHENTICATED = b"Set height failed: Invalid authentication headers."
HEIGHT_TOO_HIGH = b"Height limit exceeded."
HEIGHT_INVALID = b"Invalid height."
NOT_FOUND = b"Farmer not found."
BANDWIDTH_OK = b"Bandwidth accepted."
BANDWIDTH_UNAUTHENTICATED = b"Set bandwidth failed: Invalid authentication headers."
AUDIT_OK = b"Audit accepted."
AUDIT_UNAUTHENTICATED = b"Audit failed: Invalid authentication headers."
INVALID_NODEID = b"Invalid nodeid."
DATABASE_DOWN = b"Service unavailable: the database cannot be reached. Try again later."
NOT_SUMMARISED = b"Service unavailable: the online list is being built. Try again shortly."


def farmer_json(key, reg_time, payout=None, height=0, last_seen=0, uptime=100.0,
                upload=0.0, download=0.0, extra=b"", claimed=None):
    """The farmer object as the contract spells it: 2.2.x's four fields, then ours
    (``height`` credited, ``claimed_height`` the last claim: the same unless given)."""
    body = (
        '{"btc_addr": "%s", "payout_addr": "%s", "height": %d, "last_seen": %d,'
        ' "nodeid": "%s", "reg_time": %d, "uptime": %r, "bandwidth_upload": %r,'
        ' "bandwidth_download": %r, "claimed_height": %d, "plots": 0, "verified_bytes": 0' % (
            key.address, payout or key.address, height, last_seen, key.nodeid, reg_time,
            uptime, upload, download, height if claimed is None else claimed)).encode()
    return body + extra + b"}"


def online_entry(payout, seen, height):
    """One /api/online entry (note the two spaces before "Last Seen")."""
    return ("%s |  Last Seen: %s | Height: %d<br/>" % (payout, seen, height)).encode()


def date_in_zone(timestamp, hours):
    """An RFC 2822 Date for timestamp written in a fixed UTC offset."""
    zone = datetime.timezone(datetime.timedelta(hours=hours))
    return email.utils.format_datetime(datetime.datetime.fromtimestamp(timestamp, zone))


@defer.inlineCallbacks
def pumped(pumps, d, timeout=15.0):
    """d's result, flushing the in-memory connections while the handlers wait on
    PostgreSQL through the real reactor."""
    finished = []

    def note(result):
        finished.append(True)
        return result

    d.addBoth(note)
    deadline = time.monotonic() + timeout
    while not finished:
        if time.monotonic() > deadline:
            d.cancel()
            raise AssertionError("no answer within %ss" % timeout)
        for pump in pumps:
            pump.flush()
        yield task.deferLater(reactor, 0.001, lambda: None)
    return (yield d)


@dataclasses.dataclass(frozen=True)
class Answer(Reply):
    """A Reply with the Content-Length it came with (UNKNOWN_LENGTH when chunked)."""

    length: object = None


class Server:
    """One daemon's worth of collaborators over a shared Database and Clock."""

    def __init__(self, db, clock, settings):
        self.settings = settings
        self.store = FarmerStore(db, clock)
        self.verifier = Verifier(settings.address, settings.auth_timeout)
        self.farmers = Farmers(self.store, self.verifier, settings, clock)
        self.summariser = Summariser(self.store, settings, clock, SnapshotRenderer(settings),
                                     pause=lambda: defer.succeed(None))
        self.metrics = Metrics()
        self.proofs = Proofs(ProofStore(db, clock), self.farmers, settings,
                             metrics=self.metrics)
        self.api = API(self.farmers, self.summariser, db, settings, clock,
                       metrics=self.metrics, proofs=self.proofs)
        resource = self.api.resource()
        # treq asks for gzip and decodes it; the raw agent shows the bytes as sent.
        self.http = StubTreq(resource)
        self.raw = RequestTraversalAgent(resource)

    def start(self, path, headers=None, method="GET", raw=False):
        """Send one request; a Deferred of its Reply (pump it with :func:`pumped`)."""
        url = "http://dataserv.test" + path
        if raw:
            d = self.raw.request(method.encode(), url.encode(),
                                 Headers({k: [v] for k, v in (headers or {}).items()}))
            read = readBody
        else:
            d = self.http.request(method, url, headers=headers or {})
            read = self.http.content
        return d.addCallback(
            lambda response: read(response).addCallback(
                lambda body: Answer(response.code, response.headers, body, response.length)))

    def settle(self, d):
        """Wait for d while pumping this server's connections."""
        return pumped([self.http, self.raw], d)


class APITestCase(unittest.TestCase):
    """Base: a fresh database, a Clock at the current (whole) second and one server."""

    @defer.inlineCallbacks
    def setUp(self):
        self.db = yield pg.open_database(self)
        self.clock = task.Clock()
        self.clock.advance(int(time.time()))
        self.t0 = int(self.clock.seconds())
        self.serve()

    def serve(self, **changes):
        """(Re)build the server with settings changed from the defaults. Claimed
        heights are credited as claimed unless a test sets ``max_fill_rate`` (the
        contract's tests claim heights the moment their farmers register;
        CreditedHeightTests test the crediting)."""
        changes.setdefault("max_fill_rate", 0)
        self.server = Server(self.db, self.clock, dataclasses.replace(Settings(), **changes))
        return self.server

    @property
    def settings(self):
        return self.server.settings

    # -- requests -------------------------------------------------------------

    def date(self, offset=0):
        """The Date header a farmer whose clock is ``offset`` seconds off would send."""
        return email.utils.formatdate(self.clock.seconds() + offset, localtime=True)

    def signed(self, key, date=None, server=None):
        """Valid headers for key (Date matches the Clock unless given)."""
        return headers_for(key, server or self.settings.address,
                           date=self.date() if date is None else date)

    def get(self, path, headers=None, method="GET", raw=False, server=None):
        """One request, answered."""
        server = server or self.server
        return server.settle(server.start(path, headers, method, raw))

    def fresh(self, key):
        """Valid headers for key that no earlier request of this test used: each
        authenticated request is accepted once, and a legacy signature only differs
        by its Date, so the n-th one within a clock second is dated n - 1 s earlier."""
        second = int(self.clock.seconds())
        used = self.__dict__.setdefault("_dates_used", {})
        n = used.get((key.address, second), 0)
        used[(key.address, second)] = n + 1
        return self.signed(key, date=self.date(-(n % max(1, self.settings.auth_timeout))))

    def call(self, key, path, **kwargs):
        """A request with key's valid signature."""
        return self.get(path, self.fresh(key), **kwargs)

    def register(self, key, payout=None, farmer_id=None):
        """Register key (by address unless farmer_id is given)."""
        path = "/api/register/" + (farmer_id or key.address)
        if payout:
            path += "/" + payout
        return self.call(key, path)

    @defer.inlineCallbacks
    def registered(self, *keys):
        """Register each key (in order), failing the test on anything but 200."""
        for key in keys:
            reply = yield self.register(key)
            self.assertEqual(reply.status, 200, reply.body)

    def ping(self, key, headers=None):
        return self.get("/api/ping/" + key.address,
                        self.fresh(key) if headers is None else headers)

    def height(self, key, height, headers=None):
        return self.get("/api/height/%s/%s" % (key.address, height),
                        self.fresh(key) if headers is None else headers)

    def audit(self, key, block, response=SHA_A, headers=None):
        return self.get("/api/audit/%s/%s/%s" % (key.address, block, response),
                        self.fresh(key) if headers is None else headers)

    @defer.inlineCallbacks
    def summarised(self, path, **kwargs):
        """Run one summary pass now, then GET path."""
        yield self.server.summariser.run_pass()
        return (yield self.get(path, **kwargs))

    @defer.inlineCallbacks
    def last_seen(self, key):
        record = yield self.server.store.farmer(key.address)
        return record.last_seen

    @defer.inlineCallbacks
    def last_ip(self, key):
        rows = yield self.db.run_query(
            "SELECT last_ip FROM farmers WHERE btc_addr = %s", (key.address,))
        return rows[0][0]

    # -- assertions -----------------------------------------------------------

    def assertAnswer(self, reply, status, body, content_type=None):  # noqa: N802
        """Status and exact body bytes (and Content-Type when given)."""
        self.assertEqual((reply.status, reply.body), (status, body))
        if self.header(reply, b"Content-Encoding") is None:
            # A length, as 2.2.x sent, not Twisted's chunked transfer encoding.
            self.assertEqual(reply.length, len(body))
        if content_type is not None:
            self.assertEqual(reply.headers.getRawHeaders(b"Content-Type"), [content_type])

    def assertRetryAfter(self, reply, content_type=b"text/plain; charset=utf-8"):  # noqa: N802
        """A 503 that tells the client when to come back, in one line of plain text
        (/health's is its JSON)."""
        self.assertEqual(reply.status, 503)
        self.assertEqual(reply.headers.getRawHeaders(b"Content-Type"), [content_type])
        retry = self.header(reply, b"Retry-After")
        self.assertIsNotNone(retry, "503 without Retry-After")
        self.assertGreater(int(retry), 0)

    def header(self, reply, name):
        values = reply.headers.getRawHeaders(name)
        return None if values is None else values[0]


class AddressTests(APITestCase):
    """GET /api/address."""

    @defer.inlineCallbacks
    def test_server_address_as_json(self):
        reply = yield self.get("/api/address")
        self.assertAnswer(reply, 200, b'{"address": "15uC1tTcVsN3K4wycQ8Bj7m1UqL1GgtX8t"}', JSON)

    @defer.inlineCallbacks
    def test_configured_address(self):
        self.serve(address=OTHER_SERVER)
        reply = yield self.get("/api/address")
        self.assertAnswer(reply, 200, ('{"address": "%s"}' % OTHER_SERVER).encode(), JSON)


class RegisterTests(APITestCase):
    """GET /api/register/<id>[/<payout>]: the row and its failures in check order."""

    @defer.inlineCallbacks
    def test_register_answers_the_farmer(self):
        reply = yield self.register(ALICE)
        self.assertAnswer(reply, 200, farmer_json(ALICE, self.t0), JSON)

    @defer.inlineCallbacks
    def test_payout_defaults_to_own_address(self):
        yield self.register(ALICE)
        record = yield self.server.store.farmer(ALICE.address)
        self.assertEqual(record.payout_addr, ALICE.address)

    @defer.inlineCallbacks
    def test_p2sh_payout_accepted(self):
        reply = yield self.register(ALICE, payout=P2SH_PAYOUT)
        self.assertAnswer(reply, 200, farmer_json(ALICE, self.t0, payout=P2SH_PAYOUT), JSON)
        record = yield self.server.store.farmer(ALICE.address)
        self.assertEqual(record.payout_addr, P2SH_PAYOUT)

    @defer.inlineCallbacks
    def test_farmers_may_share_a_payout_address(self):
        first = yield self.register(ALICE, payout=CAROL.address)
        second = yield self.register(BOB, payout=CAROL.address)
        self.assertAnswer(first, 200, farmer_json(ALICE, self.t0, payout=CAROL.address))
        self.assertAnswer(second, 200, farmer_json(BOB, self.t0, payout=CAROL.address))

    @defer.inlineCallbacks
    def test_register_sets_reg_time_and_last_seen(self):
        yield self.register(ALICE)
        record = yield self.server.store.farmer(ALICE.address)
        self.assertEqual((record.reg_time, record.last_seen, record.height),
                         (self.t0, self.t0, 0))

    @defer.inlineCallbacks
    def test_register_by_nodeid(self):
        reply = yield self.register(ALICE, farmer_id=ALICE.nodeid)
        self.assertAnswer(reply, 200, farmer_json(ALICE, self.t0), JSON)

    @defer.inlineCallbacks
    def test_nodeid_then_address_is_the_same_farmer(self):
        yield self.register(ALICE, farmer_id=ALICE.nodeid)
        reply = yield self.register(ALICE)
        self.assertAnswer(reply, 409, REGISTER_TAKEN, TEXT)

    @defer.inlineCallbacks
    def test_address_then_nodeid_is_the_same_farmer(self):
        yield self.register(ALICE)
        reply = yield self.register(ALICE, farmer_id=ALICE.nodeid.upper())
        self.assertAnswer(reply, 409, REGISTER_TAKEN, TEXT)

    @defer.inlineCallbacks
    def test_bad_id_is_400(self):
        reply = yield self.call(ALICE, "/api/register/" + BAD_ID)
        self.assertAnswer(reply, 400, REGISTER_BAD_ADDRESS, TEXT)

    @defer.inlineCallbacks
    def test_bad_id_is_checked_before_authentication(self):
        reply = yield self.get("/api/register/" + BAD_ID)
        self.assertAnswer(reply, 400, REGISTER_BAD_ADDRESS)

    @defer.inlineCallbacks
    def test_p2sh_id_is_not_a_farmer(self):
        reply = yield self.call(ALICE, "/api/register/" + P2SH_PAYOUT)
        self.assertAnswer(reply, 400, REGISTER_BAD_ADDRESS)

    @defer.inlineCallbacks
    def test_unauthenticated_is_401(self):
        reply = yield self.get("/api/register/" + ALICE.address)
        self.assertAnswer(reply, 401, REGISTER_UNAUTHENTICATED, TEXT)
        record = yield self.server.store.farmer(ALICE.address)
        self.assertIsNone(record)

    @defer.inlineCallbacks
    def test_signature_of_another_farmer_is_401(self):
        reply = yield self.get("/api/register/" + ALICE.address, self.signed(BOB))
        self.assertAnswer(reply, 401, REGISTER_UNAUTHENTICATED)

    @defer.inlineCallbacks
    def test_bad_payout_with_bad_auth_is_401(self):
        reply = yield self.get("/api/register/%s/%s" % (ALICE.address, BAD_CHECKSUM))
        self.assertAnswer(reply, 401, REGISTER_UNAUTHENTICATED)

    @defer.inlineCallbacks
    def test_bad_payout_with_good_auth_is_400(self):
        reply = yield self.register(ALICE, payout=BAD_CHECKSUM)
        self.assertAnswer(reply, 400, REGISTER_BAD_ADDRESS, TEXT)
        record = yield self.server.store.farmer(ALICE.address)
        self.assertIsNone(record)

    @defer.inlineCallbacks
    def test_nodeid_is_not_a_payout(self):
        reply = yield self.register(ALICE, payout=BOB.nodeid)
        self.assertAnswer(reply, 400, REGISTER_BAD_ADDRESS)

    @defer.inlineCallbacks
    def test_second_register_is_409(self):
        yield self.register(ALICE)
        self.clock.advance(5)
        reply = yield self.register(ALICE, payout=P2SH_PAYOUT)
        self.assertAnswer(reply, 409, REGISTER_TAKEN, TEXT)
        record = yield self.server.store.farmer(ALICE.address)
        self.assertEqual((record.payout_addr, record.reg_time), (ALICE.address, self.t0))

    @defer.inlineCallbacks
    def test_second_register_without_auth_is_401(self):
        yield self.register(ALICE)
        reply = yield self.get("/api/register/" + ALICE.address)
        self.assertAnswer(reply, 401, REGISTER_UNAUTHENTICATED)

    @defer.inlineCallbacks
    def test_concurrent_registers_one_wins(self):
        # Two signatures (an exact repeat of one request is refused: ReplayTests).
        path = "/api/register/" + ALICE.address
        replies = yield self.server.settle(defer.gatherResults(
            [self.server.start(path, self.fresh(ALICE)),
             self.server.start(path, self.fresh(ALICE))]))
        self.assertEqual(sorted((r.status, r.body) for r in replies),
                         [(200, farmer_json(ALICE, self.t0)), (409, REGISTER_TAKEN)])


class PingTests(APITestCase):
    """GET /api/ping/<id>, the throttle and what counts as a contact."""

    @defer.inlineCallbacks
    def test_ping_accepted_moves_last_seen(self):
        yield self.registered(ALICE)
        self.clock.advance(61)
        reply = yield self.ping(ALICE)
        self.assertAnswer(reply, 200, PING_OK, TEXT)
        self.assertEqual((yield self.last_seen(ALICE)), self.t0 + 61)

    @defer.inlineCallbacks
    def test_ping_by_nodeid(self):
        yield self.registered(ALICE)
        self.clock.advance(61)
        reply = yield self.get("/api/ping/" + ALICE.nodeid, self.signed(ALICE))
        self.assertAnswer(reply, 200, PING_OK)
        self.assertEqual((yield self.last_seen(ALICE)), self.t0 + 61)

    @defer.inlineCallbacks
    def test_unknown_farmer_is_404(self):
        reply = yield self.ping(NOBODY)
        self.assertAnswer(reply, 404, PING_NOT_FOUND, TEXT)

    @defer.inlineCallbacks
    def test_unknown_farmer_without_auth_is_401(self):
        reply = yield self.ping(NOBODY, headers={})
        self.assertAnswer(reply, 401, PING_UNAUTHENTICATED, TEXT)

    @defer.inlineCallbacks
    def test_bad_id_is_400_before_auth(self):
        reply = yield self.get("/api/ping/" + BAD_ID)
        self.assertAnswer(reply, 400, PING_BAD_ADDRESS, TEXT)

    @defer.inlineCallbacks
    def test_over_long_id_is_400(self):
        reply = yield self.get("/api/ping/" + "1" * 5000, self.signed(ALICE))
        self.assertAnswer(reply, 400, PING_BAD_ADDRESS)

    @defer.inlineCallbacks
    def test_ping_soon_after_registration_is_throttled(self):
        yield self.registered(ALICE)
        self.clock.advance(59)
        reply = yield self.ping(ALICE)
        self.assertAnswer(reply, 200, PING_OK)
        self.assertEqual((yield self.last_seen(ALICE)), self.t0)

    @defer.inlineCallbacks
    def test_ping_max_ping_after_contact_is_written(self):
        yield self.registered(ALICE)
        self.clock.advance(30)
        yield self.ping(ALICE)
        self.clock.advance(30)
        reply = yield self.ping(ALICE)
        self.assertAnswer(reply, 200, PING_OK)
        self.assertEqual((yield self.last_seen(ALICE)), self.t0 + 60)

    @defer.inlineCallbacks
    def test_max_ping_is_configurable(self):
        self.serve(max_ping=10)
        yield self.registered(ALICE)
        self.clock.advance(10)
        yield self.ping(ALICE)
        self.assertEqual((yield self.last_seen(ALICE)), self.t0 + 10)

    @defer.inlineCallbacks
    def test_throttle_holds_for_another_daemon_on_the_database(self):
        yield self.registered(ALICE)
        self.clock.advance(30)
        other = Server(self.db, self.clock, self.settings)
        reply = yield self.get("/api/ping/" + ALICE.address, self.signed(ALICE), server=other)
        self.assertAnswer(reply, 200, PING_OK)
        self.assertEqual((yield self.last_seen(ALICE)), self.t0)

    @defer.inlineCallbacks
    def test_another_daemons_contact_throttles_in_memory_after_one_look(self):
        """A daemon whose ping the database throttled (the contact before was
        another daemon's) learns when that contact was: the farmer's next pings
        within max-ping are throttled in memory (they only claim their replay key)."""
        yield self.registered(ALICE)
        other = Server(self.db, self.clock, self.settings)
        for _ in range(3):
            self.clock.advance(10)
            reply = yield self.get("/api/ping/" + ALICE.address, self.signed(ALICE), server=other)
            self.assertAnswer(reply, 200, PING_OK)
        self.assertEqual(other.farmers.contacts_submitted, 1)
        self.assertEqual((yield self.last_seen(ALICE)), self.t0)
        # From max-ping after the stored contact, pings are written again.
        self.clock.advance(31)
        reply = yield self.get("/api/ping/" + ALICE.address, self.signed(ALICE), server=other)
        self.assertAnswer(reply, 200, PING_OK)
        self.assertEqual(other.farmers.contacts_submitted, 2)
        self.assertEqual((yield self.last_seen(ALICE)), self.t0 + 61)

    @defer.inlineCallbacks
    def test_height_update_counts_as_contact_for_the_throttle(self):
        yield self.registered(ALICE)
        self.clock.advance(120)
        yield self.height(ALICE, 7)
        self.clock.advance(10)
        reply = yield self.ping(ALICE)
        self.assertAnswer(reply, 200, PING_OK)
        self.assertEqual((yield self.last_seen(ALICE)), self.t0 + 120)

    @defer.inlineCallbacks
    def test_throttled_ping_without_auth_is_401(self):
        yield self.registered(ALICE)
        reply = yield self.ping(ALICE, headers={})
        self.assertAnswer(reply, 401, PING_UNAUTHENTICATED)

    @defer.inlineCallbacks
    def test_throttled_ping_signed_by_another_key_is_401(self):
        yield self.registered(ALICE)
        reply = yield self.ping(ALICE, headers=self.signed(BOB))
        self.assertAnswer(reply, 401, PING_UNAUTHENTICATED)

    @defer.inlineCallbacks
    def test_identical_headers_twice_in_one_second(self):
        yield self.registered(ALICE)
        headers = self.signed(ALICE)
        first = yield self.height(ALICE, 1, headers=headers)
        second = yield self.height(ALICE, 2, headers=headers)
        self.assertAnswer(first, 200, HEIGHT_OK)
        self.assertAnswer(second, 200, HEIGHT_OK)
        record = yield self.server.store.farmer(ALICE.address)
        self.assertEqual(record.height, 2)


class HeightTests(APITestCase):
    """GET /api/height/<id>/<height>."""

    @defer.inlineCallbacks
    def test_height_accepted(self):
        yield self.registered(ALICE)
        reply = yield self.height(ALICE, 1234)
        self.assertAnswer(reply, 200, HEIGHT_OK, TEXT)
        record = yield self.server.store.farmer(ALICE.address)
        self.assertEqual(record.height, 1234)

    @defer.inlineCallbacks
    def test_height_just_below_limit_accepted(self):
        yield self.registered(ALICE)
        reply = yield self.height(ALICE, 199999)
        self.assertAnswer(reply, 200, HEIGHT_OK)

    @defer.inlineCallbacks
    def test_height_at_limit_is_413(self):
        yield self.registered(ALICE)
        reply = yield self.height(ALICE, 200000)
        self.assertAnswer(reply, 413, HEIGHT_TOO_HIGH, TEXT)
        record = yield self.server.store.farmer(ALICE.address)
        self.assertEqual(record.height, 0)

    @defer.inlineCallbacks
    def test_configured_limit(self):
        self.serve(height_limit=10)
        yield self.registered(ALICE)
        reply = yield self.height(ALICE, 10)
        self.assertAnswer(reply, 413, HEIGHT_TOO_HIGH)

    @defer.inlineCallbacks
    def test_limit_is_checked_before_lookup(self):
        reply = yield self.height(NOBODY, 200000)
        self.assertAnswer(reply, 413, HEIGHT_TOO_HIGH)

    @defer.inlineCallbacks
    def test_limit_is_checked_after_auth(self):
        reply = yield self.height(NOBODY, 200000, headers={})
        self.assertAnswer(reply, 401, HEIGHT_UNAUTHENTICATED, TEXT)

    @defer.inlineCallbacks
    def test_unknown_farmer_is_404(self):
        reply = yield self.height(NOBODY, 5)
        self.assertAnswer(reply, 404, NOT_FOUND, TEXT)

    @defer.inlineCallbacks
    def test_unknown_farmer_without_auth_is_401(self):
        reply = yield self.height(NOBODY, 5, headers={})
        self.assertAnswer(reply, 401, HEIGHT_UNAUTHENTICATED)

    @defer.inlineCallbacks
    def test_bad_id_is_400(self):
        reply = yield self.get("/api/height/%s/5" % BAD_ID)
        self.assertAnswer(reply, 400, HEIGHT_BAD_ADDRESS, TEXT)

    @defer.inlineCallbacks
    def test_not_a_whole_number_is_400(self):
        yield self.registered(ALICE)
        for text in ("abc", "-1", "1.5", "1e3", "99999999999999999999"):
            reply = yield self.height(ALICE, text)
            self.assertAnswer(reply, 400, HEIGHT_INVALID)
        record = yield self.server.store.farmer(ALICE.address)
        self.assertEqual(record.height, 0)

    @defer.inlineCallbacks
    def test_height_syntax_is_part_of_the_route(self):
        # 2.2.x matched <int:height> in the route, so a bad height never reached auth.
        reply = yield self.height(NOBODY, "-5", headers={})
        self.assertAnswer(reply, 400, HEIGHT_INVALID, TEXT)

    @defer.inlineCallbacks
    def test_height_is_a_contact_inside_the_ping_throttle(self):
        yield self.registered(ALICE)
        self.clock.advance(10)
        yield self.height(ALICE, 3)
        self.assertEqual((yield self.last_seen(ALICE)), self.t0 + 10)

    @defer.inlineCallbacks
    def test_height_by_nodeid(self):
        yield self.registered(ALICE)
        reply = yield self.get("/api/height/%s/9" % ALICE.nodeid, self.signed(ALICE))
        self.assertAnswer(reply, 200, HEIGHT_OK)
        record = yield self.server.store.farmer(ALICE.address)
        self.assertEqual(record.height, 9)


class AuthenticationTests(APITestCase):
    """Header edge cases: every one a 401 with the route's text, never a 500."""

    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        yield self.registered(ALICE)
        self.clock.advance(61)  # so an accepted ping is a real write

    @defer.inlineCallbacks
    def assertPingRejected(self, headers, skew=None):  # noqa: N802
        reply = yield self.ping(ALICE, headers=headers)
        self.assertAnswer(reply, 401, PING_UNAUTHENTICATED, TEXT)
        self.assertEqual(self.header(reply, b"X-Clock-Skew"), skew)
        self.assertEqual((yield self.last_seen(ALICE)), self.t0)

    @defer.inlineCallbacks
    def assertPingAccepted(self, headers):  # noqa: N802
        reply = yield self.ping(ALICE, headers=headers)
        self.assertAnswer(reply, 200, PING_OK)
        self.assertEqual((yield self.last_seen(ALICE)), self.clock.seconds())

    def without(self, name):
        headers = self.signed(ALICE)
        del headers[name]
        return headers

    def test_missing_date(self):
        return self.assertPingRejected(self.without(b"Date"))

    def test_missing_authorization(self):
        return self.assertPingRejected(self.without(b"Authorization"))

    def test_malformed_date(self):
        return self.assertPingRejected(self.signed(ALICE, date="the day after tomorrow"))

    def test_date_out_of_range(self):
        return self.assertPingRejected(
            self.signed(ALICE, date="Mon, 99 Xyz 99999 99:99:99 +9999"))

    def test_non_ascii_date(self):
        headers = self.signed(ALICE)
        headers[b"Date"] = "Mon, 13 Nov 2023 10:00:00 +0000 \u00e9".encode("latin-1")
        return self.assertPingRejected(headers)

    def test_malformed_base64_authorization(self):
        headers = self.signed(ALICE)
        headers[b"Authorization"] = b"*not base64*" + headers[b"Authorization"][12:]
        return self.assertPingRejected(headers)

    def test_short_signature(self):
        headers = self.signed(ALICE)
        headers[b"Authorization"] = headers[b"Authorization"][:40]
        return self.assertPingRejected(headers)

    def test_oversized_date(self):
        return self.assertPingRejected(self.signed(ALICE, date=self.date() + " " * 150))

    def test_oversized_authorization(self):
        headers = self.signed(ALICE)
        headers[b"Authorization"] += b"A" * 400
        return self.assertPingRejected(headers)

    def test_signature_for_another_server(self):
        return self.assertPingRejected(self.signed(ALICE, server=OTHER_SERVER))

    def test_client_clock_behind_by_the_timeout(self):
        return self.assertPingRejected(self.signed(ALICE, date=self.date(-30)), skew=b"30")

    def test_client_clock_ahead_by_the_timeout(self):
        return self.assertPingRejected(self.signed(ALICE, date=self.date(45)), skew=b"-45")

    def test_client_clock_off_within_the_timeout(self):
        return self.assertPingAccepted(self.signed(ALICE, date=self.date(-29)))

    def test_auth_timeout_is_configurable(self):
        self.serve(auth_timeout=5)
        return self.assertPingRejected(self.signed(ALICE, date=self.date(5)), skew=b"-5")

    def test_replayed_headers_expire(self):
        headers = self.signed(ALICE)
        self.clock.advance(30)
        return self.assertPingRejected(headers, skew=b"30")

    def test_date_in_plus_one_hour_zone(self):
        return self.assertPingAccepted(
            self.signed(ALICE, date=date_in_zone(self.clock.seconds(), 1)))

    def test_date_in_minus_zero_zone(self):
        return self.assertPingAccepted(
            self.signed(ALICE, date=email.utils.formatdate(self.clock.seconds())))

    def test_date_in_gmt(self):
        return self.assertPingAccepted(
            self.signed(ALICE, date=email.utils.formatdate(self.clock.seconds(), usegmt=True)))

    @defer.inlineCallbacks
    def test_each_route_has_its_own_401_text(self):
        routes = [
            ("/api/register/" + BOB.address, REGISTER_UNAUTHENTICATED),
            ("/api/ping/" + ALICE.address, PING_UNAUTHENTICATED),
            ("/api/height/%s/1" % ALICE.address, HEIGHT_UNAUTHENTICATED),
            ("/api/bandwidth/%s/1/1" % ALICE.address, BANDWIDTH_UNAUTHENTICATED),
            ("/api/audit/%s/1/%s" % (ALICE.address, SHA_A), AUDIT_UNAUTHENTICATED),
        ]
        stale = self.signed(ALICE, date=self.date(-3600))
        for path, text in routes:
            reply = yield self.get(path, stale)
            self.assertAnswer(reply, 401, text, TEXT)
            self.assertEqual(self.header(reply, b"X-Clock-Skew"), b"3600")


class PublicListTests(APITestCase):
    """/api/online, /api/online/json and /api/total from the summary snapshot."""

    @defer.inlineCallbacks
    def three_farmers(self):
        """A: height 5 seen at t0; B (P2SH payout): height 10 seen at t0+2;
        C: height 5 seen at t0+5; registered A, B, C in that order."""
        yield self.register(ALICE)
        yield self.register(BOB, payout=P2SH_PAYOUT)
        yield self.register(CAROL)
        yield self.height(ALICE, 5)
        self.clock.advance(2)
        yield self.height(BOB, 10)
        self.clock.advance(3)
        yield self.height(CAROL, 5)

    @defer.inlineCallbacks
    def test_lists_need_a_first_summary_pass(self):
        for path in ("/api/online", "/api/online/json", "/api/total"):
            reply = yield self.get(path)
            self.assertAnswer(reply, 503, NOT_SUMMARISED)
            self.assertRetryAfter(reply)

    @defer.inlineCallbacks
    def test_online_html(self):
        yield self.three_farmers()
        self.clock.advance(2)
        reply = yield self.summarised("/api/online")
        self.assertAnswer(reply, 200, b"".join([
            online_entry(P2SH_PAYOUT, "5 second(s)", 10),
            online_entry(ALICE.address, "7 second(s)", 5),
            online_entry(CAROL.address, "2 second(s)", 5),
        ]), TEXT)

    @defer.inlineCallbacks
    def test_online_empty_when_nobody_is_online(self):
        reply = yield self.summarised("/api/online")
        self.assertAnswer(reply, 200, b"", TEXT)

    @defer.inlineCallbacks
    def test_last_seen_units(self):
        self.serve(online_time=180)
        yield self.registered(ALICE)
        expected = [(59, "59 second(s)"), (60, "1 minute(s)"), (119, "1 minute(s)"),
                    (3599, "59 minute(s)"), (3600, "1 hour(s)"), (7199, "1 hour(s)"),
                    (7200, "2 hour(s)")]
        for offset, text in expected:
            self.clock.advance(self.t0 + offset - self.clock.seconds())
            reply = yield self.summarised("/api/online")
            self.assertAnswer(reply, 200, online_entry(ALICE.address, text, 0))

    @defer.inlineCallbacks
    def test_last_seen_does_not_wrap_at_a_day(self):
        self.serve(online_time=7 * 24 * 60)
        yield self.registered(ALICE)
        self.clock.advance(2 * 86400 + 5)
        html = yield self.summarised("/api/online")
        self.assertAnswer(html, 200, online_entry(ALICE.address, "48 hour(s)", 0))
        listed = yield self.get("/api/online/json")
        self.assertEqual(listed.json()["farmers"][0]["last_seen"], 2 * 86400 + 5)

    @defer.inlineCallbacks
    def test_farmers_drop_out_after_online_time(self):
        yield self.registered(ALICE)
        self.clock.advance(5 * 60)
        yield self.registered(BOB)
        self.clock.advance(10 * 60 - 1)
        reply = yield self.summarised("/api/online")
        self.assertAnswer(reply, 200, online_entry(ALICE.address, "14 minute(s)", 0)
                          + online_entry(BOB.address, "9 minute(s)", 0))
        self.clock.advance(2)
        reply = yield self.summarised("/api/online")
        self.assertAnswer(reply, 200, online_entry(BOB.address, "10 minute(s)", 0))
        total = yield self.get("/api/total")
        self.assertEqual(total.json()["total_farmers"], 1)

    @defer.inlineCallbacks
    def test_configured_online_time(self):
        self.serve(online_time=1)
        yield self.registered(ALICE)
        self.clock.advance(61)
        reply = yield self.summarised("/api/online")
        self.assertAnswer(reply, 200, b"")

    @defer.inlineCallbacks
    def test_online_json(self):
        yield self.three_farmers()
        self.clock.advance(2)
        reply = yield self.summarised("/api/online/json", raw=True)
        self.assertAnswer(reply, 200, b'{"farmers": [' + b", ".join([
            farmer_json(BOB, self.t0, payout=P2SH_PAYOUT, height=10, last_seen=5),
            farmer_json(ALICE, self.t0, height=5, last_seen=7),
            farmer_json(CAROL, self.t0, height=5, last_seen=2),
        ]) + b"]}", JSON)
        self.assertEqual(self.header(reply, b"Access-Control-Allow-Origin"), b"*")
        self.assertIsNone(self.header(reply, b"Content-Encoding"))

    @defer.inlineCallbacks
    def test_online_json_empty(self):
        reply = yield self.summarised("/api/online/json", raw=True)
        self.assertAnswer(reply, 200, b'{"farmers": []}', JSON)

    @defer.inlineCallbacks
    def test_online_json_gzip(self):
        yield self.three_farmers()
        yield self.server.summariser.run_pass()
        plain = yield self.get("/api/online/json", raw=True)
        zipped = yield self.get("/api/online/json", {b"Accept-Encoding": b"gzip, deflate"},
                                raw=True)
        self.assertEqual(zipped.status, 200)
        self.assertEqual(self.header(zipped, b"Content-Encoding"), b"gzip")
        self.assertEqual(self.header(zipped, b"Access-Control-Allow-Origin"), b"*")
        self.assertNotEqual(zipped.body, plain.body)
        self.assertEqual(gzip.decompress(zipped.body), plain.body)

    @defer.inlineCallbacks
    def test_total(self):
        yield self.registered(ALICE, BOB)
        yield self.height(ALICE, 1000)
        yield self.height(BOB, 2345)  # 3345 * 128 MiB = 0.408... TB
        reply = yield self.summarised("/api/total", raw=True)
        self.assertAnswer(reply, 200, b'{"id": %d, "total_TB": 0.41, "total_farmers": 2, "verified_TB": 0.0}'
                          % (self.t0 // 1800), JSON)
        self.assertEqual(self.header(reply, b"Access-Control-Allow-Origin"), b"*")

    @defer.inlineCallbacks
    def test_total_tb_is_always_a_float(self):
        yield self.registered(ALICE)
        yield self.height(ALICE, 8192)  # exactly 1 TB
        reply = yield self.summarised("/api/total")
        self.assertAnswer(reply, 200, b'{"id": %d, "total_TB": 1.0, "total_farmers": 1, "verified_TB": 0.0}'
                          % (self.t0 // 1800))

    @defer.inlineCallbacks
    def test_total_when_nobody_is_online(self):
        reply = yield self.summarised("/api/total")
        self.assertAnswer(reply, 200, b'{"id": %d, "total_TB": 0.0, "total_farmers": 0, "verified_TB": 0.0}'
                          % (self.t0 // 1800))

    @defer.inlineCallbacks
    def test_total_shard_size_and_id_follow_the_clock(self):
        self.serve(shard_size=1024 ** 4 // 4)
        yield self.registered(ALICE)
        yield self.height(ALICE, 3)
        self.clock.advance(1800)
        yield self.ping(ALICE)
        reply = yield self.summarised("/api/total")
        self.assertAnswer(reply, 200, b'{"id": %d, "total_TB": 0.75, "total_farmers": 1, "verified_TB": 0.0}'
                          % (self.t0 // 1800 + 1))

    @defer.inlineCallbacks
    def test_lists_are_the_snapshot_until_the_next_pass(self):
        yield self.server.summariser.run_pass()
        yield self.registered(ALICE)
        before = yield self.get("/api/online")
        after = yield self.summarised("/api/online")
        self.assertAnswer(before, 200, b"")
        self.assertAnswer(after, 200, online_entry(ALICE.address, "0 second(s)", 0))


class FarmerIPTests(APITestCase):
    """Client IPs: stored, taken from X-Forwarded-For only behind a trusted proxy,
    never published."""

    FORWARDED = "198.51.100.9"

    def register_forwarded(self, forwarded):
        headers = self.signed(ALICE)
        headers[b"X-Forwarded-For"] = forwarded.encode()
        return self.get("/api/register/" + ALICE.address, headers)

    @defer.inlineCallbacks
    def test_peer_address_without_trusted_proxy(self):
        yield self.register_forwarded(self.FORWARDED)
        self.assertEqual((yield self.last_ip(ALICE)), "127.0.0.1")

    @defer.inlineCallbacks
    def test_untrusted_peer_is_not_believed(self):
        self.serve(trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),))
        yield self.register_forwarded(self.FORWARDED)
        self.assertEqual((yield self.last_ip(ALICE)), "127.0.0.1")

    @defer.inlineCallbacks
    def test_forwarded_for_behind_trusted_proxy(self):
        self.serve(trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),))
        yield self.register_forwarded(self.FORWARDED)
        self.assertEqual((yield self.last_ip(ALICE)), self.FORWARDED)

    @defer.inlineCallbacks
    def test_spoofed_hops_before_the_client_are_ignored(self):
        self.serve(trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),))
        yield self.register_forwarded("192.0.2.66, %s, 127.0.0.5" % self.FORWARDED)
        self.assertEqual((yield self.last_ip(ALICE)), self.FORWARDED)

    @defer.inlineCallbacks
    def test_ips_never_appear_in_public_bodies(self):
        self.serve(trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),))
        registered = yield self.register_forwarded(self.FORWARDED)
        self.assertEqual((yield self.last_ip(ALICE)), self.FORWARDED)
        yield self.height(ALICE, 42)
        yield self.audit(ALICE, 1)
        yield self.server.summariser.run_pass()
        bodies = [registered.body]
        for path in ("/api/online", "/api/online/json", "/api/total", "/api/address",
                     "/api/farmer/" + ALICE.address, "/api/total/history"):
            reply = yield self.get(path, raw=True)
            self.assertEqual(reply.status, 200, path)
            bodies.append(reply.body)
        zipped = yield self.get("/api/online/json", {b"Accept-Encoding": b"gzip"}, raw=True)
        bodies.append(gzip.decompress(zipped.body))
        self.assertIn(ALICE.address.encode(), bodies[1])  # the lists do show the farmer
        for body in bodies:
            self.assertNotIn(self.FORWARDED.encode(), body)
            self.assertNotIn(b"127.0.0.1", body)
            self.assertNotIn(b'ip"', body)


class HTTPTests(APITestCase):
    """Routing, methods and the headers every answer carries."""

    @defer.inlineCallbacks
    def test_unknown_path_is_404(self):
        for path in ("/api/nothing", "/api/ping", "/api/ping/%s/extra" % ALICE.address):
            reply = yield self.get(path)
            self.assertEqual(reply.status, 404, path)
            self.assertIn(b"Not Found", reply.body)

    @defer.inlineCallbacks
    def test_other_methods_are_405(self):
        for method, path in (("POST", "/api/address"), ("PUT", "/api/ping/" + ALICE.address),
                             ("DELETE", "/api/online"), ("POST", "/api/register/" + ALICE.address)):
            reply = yield self.get(path, self.signed(ALICE), method=method)
            self.assertEqual(reply.status, 405, (method, path))
            self.assertIn(b"Method Not Allowed", reply.body)
        self.assertIsNone((yield self.server.store.farmer(ALICE.address)))

    @defer.inlineCallbacks
    def test_head_on_read_routes(self):
        yield self.server.summariser.run_pass()
        for path in ("/api/address", "/api/online", "/api/online/json", "/api/total"):
            reply = yield self.get(path, method="HEAD", raw=True)
            self.assertAnswer(reply, 200, b"")
            self.assertIsNotNone(self.header(reply, b"Content-Type"), path)

    @defer.inlineCallbacks
    def test_every_answer_carries_a_date(self):
        yield self.registered(ALICE)
        replies = [
            (yield self.get("/api/address")),
            (yield self.get("/api/online")),                          # 503
            (yield self.register(ALICE)),                             # 409
            (yield self.ping(ALICE, headers={})),                     # 401
            (yield self.ping(NOBODY)),                                # 404
            (yield self.get("/api/ping/" + BAD_ID)),                  # 400
            (yield self.get("/api/nowhere")),                         # 404 (routing)
            (yield self.get("/api/address", method="POST")),          # 405
            (yield self.height(ALICE, 200000)),                       # 413
            (yield self.ping(ALICE)),                                 # 200
        ]
        self.assertEqual(sorted({r.status for r in replies}),
                         [200, 400, 401, 404, 405, 409, 413, 503])
        for reply in replies:
            date = self.header(reply, b"Date")
            self.assertIsNotNone(date, reply)
            sent = email.utils.parsedate_to_datetime(date.decode()).timestamp()
            self.assertLess(abs(sent - time.time()), 120)


class WholeParameterTests(APITestCase):
    """Path parameters match whole strings: a trailing newline or NUL is a 400."""

    @defer.inlineCallbacks
    def test_trailing_newline_or_nul(self):
        yield self.registered(ALICE)
        for tail in ("%0A", "%00", "%0D%0A"):
            cases = [
                ("/api/ping/" + ALICE.address + tail, 400, PING_BAD_ADDRESS),
                ("/api/register/%s/%s%s" % (ALICE.address, P2SH_PAYOUT, tail), 400,
                 REGISTER_BAD_ADDRESS),
                ("/api/height/%s/77%s" % (ALICE.address, tail), 400, HEIGHT_INVALID),
                ("/api/bandwidth/%s/1%s/2" % (ALICE.address, tail), 400, b"Invalid bandwidth."),
                ("/api/audit/%s/1%s/%s" % (ALICE.address, tail, SHA_A), 400, b"Invalid block."),
                ("/api/audit/%s/1/%s%s" % (ALICE.address, SHA_A, tail), 400,
                 b"Invalid response."),
                ("/api/farmer/" + ALICE.nodeid + tail, 400, INVALID_NODEID),
            ]
            for path, status, body in cases:
                reply = yield self.get(path, self.signed(ALICE))
                self.assertEqual((reply.status, reply.body), (status, body), path)
        rows = yield self.db.run_query(
            "SELECT height, bandwidth_upload, (SELECT count(*) FROM audits) FROM farmers")
        self.assertEqual(rows, [(0, 0.0, 0)])


class HeadTests(APITestCase):
    """HEAD on a route that changes state is 405 and changes nothing."""

    @defer.inlineCallbacks
    def test_head_changes_nothing(self):
        reply = yield self.get("/api/register/" + ALICE.address, self.signed(ALICE),
                               method="HEAD", raw=True)
        self.assertEqual(reply.status, 405)
        self.assertEqual(self.header(reply, b"Allow"), b"GET")
        self.assertIsNone((yield self.server.store.farmer(ALICE.address)))
        yield self.registered(ALICE)
        self.clock.advance(120)
        for path in ("/api/ping/" + ALICE.address, "/api/height/%s/55" % ALICE.address,
                     "/api/bandwidth/%s/5/6" % ALICE.address,
                     "/api/audit/%s/9/%s" % (ALICE.address, SHA_A)):
            reply = yield self.get(path, self.signed(ALICE), method="HEAD", raw=True)
            self.assertEqual((reply.status, self.header(reply, b"Allow")), (405, b"GET"), path)
        record = yield self.server.store.farmer(ALICE.address)
        self.assertEqual((record.height, record.last_seen, record.bandwidth_upload),
                         (0, self.t0, 0.0))
        rows = yield self.db.run_query("SELECT count(*) FROM audits")
        self.assertEqual(rows, [(0,)])


class RequestSizeTests(unittest.SynchronousTestCase):
    """Over-long request lines and headers get a 4xx, never a dropped connection.

    These go through the daemon's own Site (dataserv.daemon.service.Site) rather than
    StubTreq, whose Site is treq's: the limits live in the HTTP channel, not the
    resource. No request here reaches a route, so no database is needed.
    """

    def answer(self, request_head):
        """What the daemon's HTTP channel writes back for a raw request head."""
        api = API(farmers=None, summariser=None, database=None, settings=Settings(),
                  clock=task.Clock())
        site = Site(api.resource(), logPath=None, reactor=task.Clock())
        peer = IPv4Address("TCP", "127.0.0.1", 40000)
        channel = site.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        channel.makeConnection(transport)
        channel.dataReceived(request_head)
        written = transport.value()
        channel.connectionLost(Failure(ConnectionDone()))
        return written

    def assertClientError(self, written):  # noqa: N802
        self.assertRegex(written[:13], rb"^HTTP/1\.1 4\d\d $")

    def test_many_headers_over_the_total_limit(self):
        filler = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 100) for i in range(200))
        self.assertClientError(self.answer(
            b"GET /api/address HTTP/1.1\r\nHost: dataserv\r\n" + filler + b"\r\n"))

    def test_one_over_long_header(self):
        self.assertClientError(self.answer(
            b"GET /api/address HTTP/1.1\r\nHost: dataserv\r\nAuthorization: "
            + b"A" * 20000 + b"\r\n\r\n"))

    def test_over_long_url(self):
        self.assertClientError(self.answer(
            b"GET /api/ping/" + b"1" * 20000 + b" HTTP/1.1\r\nHost: dataserv\r\n\r\n"))


class OutageTests(APITestCase):
    """A stopped database: 503 with Retry-After, never a 200 for a lost write."""

    @defer.inlineCallbacks
    def test_writes_during_an_outage_are_503(self):
        yield self.registered(ALICE)
        yield self.server.summariser.run_pass()
        self.clock.advance(61)
        yield self.db.stopService()
        attempts = [
            self.register(BOB),
            self.ping(ALICE),
            self.height(ALICE, 77),
            self.call(ALICE, "/api/bandwidth/%s/10/20" % ALICE.address),
            self.audit(ALICE, 3),
            self.get("/api/farmer/" + ALICE.address),
            self.get("/api/total/history"),
        ]
        for attempt in attempts:
            reply = yield attempt
            self.assertAnswer(reply, 503, DATABASE_DOWN, PLAIN)
            self.assertRetryAfter(reply)
        # Nothing that was refused made it into the database.
        db = yield pg.open_database(self, clean=False)
        rows = yield db.run_query(
            "SELECT btc_addr, height, last_seen, bandwidth_upload,"
            " (SELECT count(*) FROM audits) FROM farmers")
        self.assertEqual(rows, [(ALICE.address, 0, self.t0, 0.0, 0)])

    @defer.inlineCallbacks
    def test_health(self):
        yield self.server.summariser.run_pass()
        up = yield self.get("/health")
        yield self.db.stopService()
        down = yield self.get("/health")
        self.assertEqual((up.status, up.json()["database"], up.json()["summary"]["passes"]),
                         (200, "ok", 1))
        self.assertIsNone(self.header(up, b"Retry-After"))
        self.assertEqual((down.json()["database"], down.json()["reason"]),
                         ("unavailable", "stopped"))
        self.assertRetryAfter(down, JSON)

    @defer.inlineCallbacks
    def test_lists_keep_serving_the_last_snapshot(self):
        yield self.registered(ALICE)
        before = yield self.summarised("/api/online")
        yield self.db.stopService()
        self.clock.advance(5)
        after = yield self.summarised("/api/online")
        self.assertAnswer(before, 200, online_entry(ALICE.address, "0 second(s)", 0))
        self.assertAnswer(after, 200, before.body)


class BandwidthTests(APITestCase):
    """GET /api/bandwidth/<id>/<upload>/<download>."""

    def bandwidth(self, farmer_id, upload, download, headers):
        return self.get("/api/bandwidth/%s/%s/%s" % (farmer_id, upload, download), headers)

    @defer.inlineCallbacks
    def test_bandwidth_accepted(self):
        yield self.registered(ALICE)
        self.clock.advance(10)
        reply = yield self.bandwidth(ALICE.address, 1024, "2048.5", self.signed(ALICE))
        self.assertAnswer(reply, 200, BANDWIDTH_OK, TEXT)
        record = yield self.server.store.farmer(ALICE.address)
        self.assertEqual((record.bandwidth_upload, record.bandwidth_download, record.last_seen),
                         (1024.0, 2048.5, self.t0 + 10))

    @defer.inlineCallbacks
    def test_bad_id_is_400(self):
        reply = yield self.bandwidth(BAD_ID, 1, 1, {})
        self.assertAnswer(reply, 400, INVALID_NODEID, TEXT)

    @defer.inlineCallbacks
    def test_bad_numbers_are_400(self):
        yield self.registered(ALICE)
        for upload, download in (("abc", "1"), ("1", "-1"), ("1e5", "1"), ("1.", "2")):
            reply = yield self.bandwidth(ALICE.address, upload, download, self.signed(ALICE))
            self.assertAnswer(reply, 400, b"Invalid bandwidth.")
        record = yield self.server.store.farmer(ALICE.address)
        self.assertEqual((record.bandwidth_upload, record.bandwidth_download), (0.0, 0.0))

    @defer.inlineCallbacks
    def test_unauthenticated_is_401(self):
        yield self.registered(ALICE)
        reply = yield self.bandwidth(ALICE.address, 1, 1, self.signed(BOB))
        self.assertAnswer(reply, 401, BANDWIDTH_UNAUTHENTICATED, TEXT)

    @defer.inlineCallbacks
    def test_unknown_farmer_is_404(self):
        reply = yield self.bandwidth(NOBODY.address, 1, 1, self.signed(NOBODY))
        self.assertAnswer(reply, 404, NOT_FOUND, TEXT)


class AuditTests(APITestCase):
    """GET /api/audit/<id>/<block>/<sha256 hex>."""

    @defer.inlineCallbacks
    def audits(self):
        rows = yield self.db.run_query(
            "SELECT f.btc_addr, a.block, a.response FROM audits a"
            " JOIN farmers f ON f.id = a.farmer_id ORDER BY f.id, a.block")
        return rows

    @defer.inlineCallbacks
    def test_audit_accepted(self):
        yield self.registered(ALICE)
        self.clock.advance(10)
        reply = yield self.audit(ALICE, 7, SHA_B.upper())
        self.assertAnswer(reply, 200, AUDIT_OK, TEXT)
        self.assertEqual((yield self.audits()), [(ALICE.address, 7, SHA_B)])
        self.assertEqual((yield self.last_seen(ALICE)), self.t0 + 10)

    @defer.inlineCallbacks
    def test_second_audit_of_a_block_is_409(self):
        yield self.registered(ALICE)
        yield self.audit(ALICE, 7, SHA_A)
        reply = yield self.audit(ALICE, 7, SHA_B)
        self.assertAnswer(reply, 409, b"Duplicate audit: Block 7", TEXT)
        self.assertEqual((yield self.audits()), [(ALICE.address, 7, SHA_A)])

    @defer.inlineCallbacks
    def test_same_block_for_two_farmers(self):
        yield self.registered(ALICE, BOB)
        yield self.audit(ALICE, 7)
        reply = yield self.audit(BOB, 7)
        self.assertAnswer(reply, 200, AUDIT_OK)

    @defer.inlineCallbacks
    def test_concurrent_audits_of_one_block(self):
        yield self.registered(ALICE)
        starts = [self.server.start("/api/audit/%s/7/%s" % (ALICE.address, sha),
                                    self.signed(ALICE)) for sha in (SHA_A, SHA_B)]
        replies = yield self.server.settle(defer.gatherResults(starts))
        self.assertEqual(sorted((r.status, r.body) for r in replies),
                         [(200, AUDIT_OK), (409, b"Duplicate audit: Block 7")])
        self.assertEqual(len((yield self.audits())), 1)

    @defer.inlineCallbacks
    def test_bad_response_is_400(self):
        yield self.registered(ALICE)
        for response in ("xyz", SHA_A[:-1], SHA_A + "0", "g" * 64):
            reply = yield self.audit(ALICE, 7, response)
            self.assertAnswer(reply, 400, b"Invalid response.", TEXT)
        self.assertEqual((yield self.audits()), [])

    @defer.inlineCallbacks
    def test_bad_block_is_400(self):
        yield self.registered(ALICE)
        for block in ("-1", "x", "1.5"):
            reply = yield self.audit(ALICE, block)
            self.assertAnswer(reply, 400, b"Invalid block.")

    @defer.inlineCallbacks
    def test_bad_id_is_400(self):
        reply = yield self.get("/api/audit/%s/7/%s" % (BAD_ID, SHA_A))
        self.assertAnswer(reply, 400, INVALID_NODEID)

    @defer.inlineCallbacks
    def test_unauthenticated_is_401(self):
        yield self.registered(ALICE)
        reply = yield self.audit(ALICE, 7, headers={})
        self.assertAnswer(reply, 401, AUDIT_UNAUTHENTICATED, TEXT)
        self.assertEqual((yield self.audits()), [])

    @defer.inlineCallbacks
    def test_unknown_farmer_is_404(self):
        reply = yield self.audit(NOBODY, 7)
        self.assertAnswer(reply, 404, NOT_FOUND, TEXT)


class FarmerStatusTests(APITestCase):
    """GET /api/farmer/<id>: public self-service status."""

    @defer.inlineCallbacks
    def test_status(self):
        yield self.registered(ALICE)
        self.clock.advance(1000)
        yield self.audit(ALICE, 5)   # credits the online window: 900 s
        self.clock.advance(10)
        yield self.audit(ALICE, 3)   # credits 10 s more
        reply = yield self.get("/api/farmer/" + ALICE.nodeid)
        online_until = self.t0 + 1010 + 900
        self.assertAnswer(reply, 200, farmer_json(
            ALICE, self.t0, uptime=90.099,  # 910 of 1010 seconds
            extra=b', "online": true, "online_until": %d, "audits": 2, "last_audit_block": 5,'
            b' "plot_scores": []' % online_until), JSON)
        self.assertEqual(self.header(reply, b"Access-Control-Allow-Origin"), b"*")

    @defer.inlineCallbacks
    def test_status_without_audits(self):
        yield self.registered(ALICE)
        reply = yield self.get("/api/farmer/" + ALICE.address)
        self.assertAnswer(reply, 200, farmer_json(
            ALICE, self.t0,
            extra=b', "online": true, "online_until": %d, "audits": 0, "last_audit_block": null,'
            b' "plot_scores": []' % (self.t0 + 900)))

    @defer.inlineCallbacks
    def test_offline_after_online_time(self):
        yield self.registered(ALICE)
        self.clock.advance(901)
        reply = yield self.get("/api/farmer/" + ALICE.address)
        status = reply.json()
        self.assertEqual((status["online"], status["online_until"], status["last_seen"]),
                         (False, self.t0 + 900, 901))

    @defer.inlineCallbacks
    def test_status_agrees_with_the_online_list_at_the_edge(self):
        yield self.registered(ALICE)
        self.clock.advance(900)
        listed = yield self.summarised("/api/online")
        status = yield self.get("/api/farmer/" + ALICE.address)
        self.assertAnswer(listed, 200, online_entry(ALICE.address, "15 minute(s)", 0))
        self.assertEqual(status.json()["online"], True)

    @defer.inlineCallbacks
    def test_unknown_farmer_is_404(self):
        reply = yield self.get("/api/farmer/" + NOBODY.address)
        self.assertAnswer(reply, 404, NOT_FOUND, TEXT)

    @defer.inlineCallbacks
    def test_bad_id_is_400(self):
        reply = yield self.get("/api/farmer/" + BAD_ID)
        self.assertAnswer(reply, 400, INVALID_NODEID, TEXT)


class HistoryTests(APITestCase):
    """GET /api/total/history?since=&until=."""

    @defer.inlineCallbacks
    def two_rows(self):
        """Rows at t0 (nobody online) and t0+300 (Alice, 1 TB)."""
        yield self.server.summariser.run_pass()
        self.clock.advance(300)
        yield self.registered(ALICE)
        yield self.height(ALICE, 8192)
        yield self.server.summariser.run_pass()
        self.clock.advance(100)
        yield self.server.summariser.run_pass()  # inside history-interval: no row

    def rows_json(self, since, until, rows):
        entries = ['{"time": %d, "total_farmers": %d, "total_TB": %r, "total_height": %d,'
                   ' "verified_TB": 0.0}' % row
                   for row in rows]
        return ('{"since": %r, "until": %r, "history": [%s]}'
                % (float(since), float(until), ", ".join(entries))).encode()

    @defer.inlineCallbacks
    def test_history_rows(self):
        yield self.two_rows()
        since, until = self.t0 - 1, self.t0 + 1000
        reply = yield self.get("/api/total/history?since=%d&until=%d" % (since, until))
        self.assertAnswer(reply, 200, self.rows_json(since, until, [
            (self.t0, 0, 0.0, 0), (self.t0 + 300, 1, 1.0, 8192)]), JSON)
        self.assertEqual(self.header(reply, b"Access-Control-Allow-Origin"), b"*")

    @defer.inlineCallbacks
    def test_history_range(self):
        yield self.two_rows()
        since, until = self.t0 + 1, self.t0 + 300
        reply = yield self.get("/api/total/history?since=%d&until=%d" % (since, until))
        self.assertAnswer(reply, 200, self.rows_json(since, until, [
            (self.t0 + 300, 1, 1.0, 8192)]))

    @defer.inlineCallbacks
    def test_history_defaults_to_the_last_week(self):
        yield self.two_rows()
        reply = yield self.get("/api/total/history")
        now = self.clock.seconds()
        self.assertAnswer(reply, 200, self.rows_json(now - 7 * 86400, now, [
            (self.t0, 0, 0.0, 0), (self.t0 + 300, 1, 1.0, 8192)]))

    @defer.inlineCallbacks
    def test_garbage_since_is_400(self):
        for since in ("yesterday", "nan", "inf"):
            reply = yield self.get("/api/total/history?since=" + since)
            self.assertAnswer(reply, 400, b"Invalid since: expected Unix seconds.", TEXT)

    @defer.inlineCallbacks
    def test_since_after_until_is_empty(self):
        # Both bounds given and inverted: a range with no time in it has no rows.
        yield self.two_rows()
        since, until = self.t0 + 300, self.t0
        reply = yield self.get("/api/total/history?since=%d&until=%d" % (since, until))
        self.assertAnswer(reply, 200, self.rows_json(since, until, []), JSON)

    @defer.inlineCallbacks
    def test_since_in_the_future_is_empty(self):
        # A poller whose clock runs ahead asks from tomorrow: nothing yet, not an error.
        yield self.two_rows()
        now = self.clock.seconds()
        reply = yield self.get("/api/total/history?since=%d" % (now + 86400,))
        self.assertAnswer(reply, 200, self.rows_json(now + 86400, now, []), JSON)

    @defer.inlineCallbacks
    def test_until_alone_means_the_week_before_it(self):
        yield self.two_rows()
        reply = yield self.get("/api/total/history?until=2001")
        self.assertAnswer(reply, 200, self.rows_json(2001 - 7 * 86400, 2001, []), JSON)
        until = self.t0 + 1
        reply = yield self.get("/api/total/history?until=%d" % (until,))
        self.assertAnswer(reply, 200, self.rows_json(until - 7 * 86400, until, [
            (self.t0, 0, 0.0, 0)]), JSON)

    @defer.inlineCallbacks
    def test_garbage_until_is_400(self):
        for until in ("tomorrow", "nan", "-inf", "1e999"):
            reply = yield self.get("/api/total/history?until=" + until)
            self.assertAnswer(reply, 400, b"Invalid until: expected Unix seconds.", TEXT)


PLAIN = b"text/plain; charset=utf-8"
HOUR = 3600
# --max-fill-rate's default, 1 GiB/s, is 8 shards of 128 MiB a second.
FILL_RATE = 1024 ** 3
SHARDS_PER_SECOND = 8


class LimitTestCase(APITestCase):
    """Limits as a production daemon has them (the defaults)."""

    def serve(self, **changes):
        changes.setdefault("max_fill_rate", FILL_RATE)
        return super().serve(**changes)

    def assertTooMany(self, reply, body, retry_after):  # noqa: N802
        """429, the short text/plain body, Retry-After in whole seconds."""
        self.assertAnswer(reply, 429, body, PLAIN)
        self.assertEqual(self.header(reply, b"Retry-After"), b"%d" % retry_after)

    def from_ip(self, ip, headers):
        """Headers as a trusted proxy would forward them from ``ip``."""
        headers = dict(headers)
        headers[b"X-Forwarded-For"] = ip.encode()
        return headers


class CreditedHeightTests(LimitTestCase):
    """/api/height credits claims no faster than --max-fill-rate; the farmer JSON
    shows the credited height and the claim; totals count what is credited."""

    @defer.inlineCallbacks
    def status(self, key=ALICE):
        reply = yield self.get("/api/farmer/" + key.address)
        self.assertEqual(reply.status, 200)
        farmer = reply.json()
        return farmer["height"], farmer["claimed_height"]

    @defer.inlineCallbacks
    def test_a_claim_right_after_registering_answers_200_and_is_credited_at_the_rate(self):
        yield self.registered(ALICE)
        self.clock.advance(3)
        reply = yield self.height(ALICE, 199999)
        self.assertAnswer(reply, 200, HEIGHT_OK, TEXT)
        self.assertEqual((yield self.status()), (3 * SHARDS_PER_SECOND, 199999))

    @defer.inlineCallbacks
    def test_the_rest_is_credited_as_time_passes(self):
        yield self.registered(ALICE)
        yield self.height(ALICE, 1000)
        self.assertEqual((yield self.status()), (0, 1000))
        self.clock.advance(100)
        self.assertEqual((yield self.status()), (800, 1000))
        reply = yield self.summarised("/api/online/json", raw=True)
        self.assertAnswer(reply, 200, b'{"farmers": [' + farmer_json(
            ALICE, self.t0, height=800, claimed=1000, last_seen=100) + b"]}", JSON)
        html = yield self.get("/api/online")
        self.assertAnswer(html, 200, online_entry(ALICE.address, "1 minute(s)", 800))
        self.clock.advance(25)
        self.assertEqual((yield self.status()), (1000, 1000))

    @defer.inlineCallbacks
    def test_totals_count_credited_heights(self):
        self.serve(online_time=60)
        yield self.registered(ALICE)
        yield self.height(ALICE, 8192)  # 1 TB claimed
        reply = yield self.summarised("/api/total")
        self.assertEqual(reply.json()["total_TB"], 0.0)
        self.clock.advance(512)  # half of it filled at 8 shards a second
        reply = yield self.summarised("/api/total")
        self.assertEqual(reply.json()["total_TB"], 0.5)
        self.clock.advance(600)
        reply = yield self.summarised("/api/total")
        self.assertEqual(reply.json()["total_TB"], 1.0)

    @defer.inlineCallbacks
    def test_a_lower_claim_is_credited_at_once(self):
        yield self.registered(ALICE)
        self.clock.advance(1000)
        yield self.height(ALICE, 5000)
        yield self.height(ALICE, 20)
        self.assertEqual((yield self.status()), (20, 20))

    @defer.inlineCallbacks
    def test_the_rate_follows_the_flag_and_the_shard_size(self):
        self.serve(max_fill_rate=FILL_RATE // 4, shard_size=1024 ** 2)  # 256 shards a second
        yield self.registered(ALICE)
        self.clock.advance(2)
        yield self.height(ALICE, 100000)
        self.assertEqual((yield self.status()), (512, 100000))

    @defer.inlineCallbacks
    def test_zero_credits_claims_as_made(self):
        self.serve(max_fill_rate=0)
        yield self.registered(ALICE)
        yield self.height(ALICE, 199999)
        self.assertEqual((yield self.status()), (199999, 199999))

    @defer.inlineCallbacks
    def test_no_limits_credits_claims_as_made(self):
        self.serve(no_limits=True)
        yield self.registered(ALICE)
        yield self.height(ALICE, 199999)
        self.assertEqual((yield self.status()), (199999, 199999))

    @defer.inlineCallbacks
    def test_registration_shows_the_claim(self):
        reply = yield self.register(ALICE)
        self.assertAnswer(reply, 200, farmer_json(ALICE, self.t0, claimed=0), JSON)


class FarmerLimitTests(LimitTestCase):
    """Audits and bandwidth reports per farmer per hour: 429 with Retry-After."""

    def bandwidth(self, key, upload, headers=None):
        return self.get("/api/bandwidth/%s/%s/1" % (key.address, upload),
                        self.signed(key) if headers is None else headers)

    @defer.inlineCallbacks
    def audit_count(self):
        rows = yield self.db.run_query("SELECT count(*) FROM audits")
        return rows[0][0]

    @defer.inlineCallbacks
    def test_audits_an_hour_then_429(self):
        yield self.registered(ALICE)
        for block in range(12):
            reply = yield self.audit(ALICE, block)
            self.assertAnswer(reply, 200, AUDIT_OK)
        reply = yield self.audit(ALICE, 12)
        self.assertTooMany(reply, b"Too many audits: try again in 300 s.", 300)
        self.assertEqual((yield self.audit_count()), 12)
        self.clock.advance(60)
        reply = yield self.audit(ALICE, 13)
        self.assertTooMany(reply, b"Too many audits: try again in 240 s.", 240)
        self.clock.advance(240)
        reply = yield self.audit(ALICE, 14)
        self.assertAnswer(reply, 200, AUDIT_OK)
        self.assertEqual((yield self.audit_count()), 13)

    @defer.inlineCallbacks
    def test_a_farmer_auditing_every_bitcoin_block_is_never_limited(self):
        """Six blocks an hour on average; even twenty in the first hour pass."""
        yield self.registered(ALICE)
        for block in range(20):
            self.clock.advance(180)
            reply = yield self.audit(ALICE, block)
            self.assertAnswer(reply, 200, AUDIT_OK)
        for block in range(20, 200):
            self.clock.advance(600)
            reply = yield self.audit(ALICE, block)
            self.assertAnswer(reply, 200, AUDIT_OK)

    @defer.inlineCallbacks
    def test_limits_are_per_farmer(self):
        yield self.registered(ALICE, BOB)
        self.serve(audit_limit=1)
        yield self.audit(ALICE, 1)
        reply = yield self.audit(ALICE, 2)
        self.assertEqual(reply.status, 429)
        reply = yield self.audit(BOB, 1)
        self.assertAnswer(reply, 200, AUDIT_OK)

    @defer.inlineCallbacks
    def test_unsigned_requests_spend_nothing(self):
        """Nobody can use up a farmer's audits without its key."""
        yield self.registered(ALICE)
        self.serve(audit_limit=1)
        for block in range(5):
            reply = yield self.audit(ALICE, block, headers={})
            self.assertEqual(reply.status, 401)
        reply = yield self.audit(ALICE, 9)
        self.assertAnswer(reply, 200, AUDIT_OK)

    @defer.inlineCallbacks
    def test_bandwidth_reports_an_hour_then_429(self):
        yield self.registered(ALICE)
        for upload in range(60):
            reply = yield self.bandwidth(ALICE, upload)
            self.assertAnswer(reply, 200, BANDWIDTH_OK)
        reply = yield self.bandwidth(ALICE, 60)
        self.assertTooMany(reply, b"Too many bandwidth reports: try again in 60 s.", 60)
        record = yield self.server.store.farmer(ALICE.address)
        self.assertEqual(record.bandwidth_upload, 59.0)
        self.clock.advance(60)
        reply = yield self.bandwidth(ALICE, 61)
        self.assertAnswer(reply, 200, BANDWIDTH_OK)

    @defer.inlineCallbacks
    def test_the_flags_set_the_limits(self):
        self.serve(audit_limit=2, bandwidth_limit=1)
        yield self.registered(ALICE)
        replies = []
        for block in range(3):
            replies.append((yield self.audit(ALICE, block)).status)
        for upload in range(2):
            replies.append((yield self.bandwidth(ALICE, upload)).status)
        self.assertEqual(replies, [200, 200, 429, 200, 429])

    @defer.inlineCallbacks
    def check_unlimited(self):
        yield self.registered(ALICE)
        for n in range(100):
            audit = yield self.audit(ALICE, n)
            bandwidth = yield self.bandwidth(ALICE, n)
            self.assertEqual((audit.status, bandwidth.status), (200, 200))

    def test_zero_turns_each_off(self):
        # (200 requests at once from one IP: the per-IP rate limit is not the subject.)
        self.serve(audit_limit=0, bandwidth_limit=0, rate_limit=0)
        return self.check_unlimited()

    def test_no_limits_turns_them_off(self):
        self.serve(no_limits=True)
        return self.check_unlimited()


class RegistrationLimitTests(LimitTestCase):
    """New farmers per network (/24, /64) per hour, counted in PostgreSQL."""

    KEYS = [FarmerKey.from_seed(b"test_api network %d" % n) for n in range(12)]
    TOO_MANY = b"Too many registrations from your network: try again in %d s."

    def setUp(self):
        d = super().setUp()
        return d.addCallback(lambda _: self.serve(
            trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),)))

    def register_from(self, ip, key):
        return self.get("/api/register/" + key.address, self.from_ip(ip, self.signed(key)))

    @defer.inlineCallbacks
    def test_ten_an_hour_from_one_slash_24(self):
        for n, key in enumerate(self.KEYS[:10]):
            reply = yield self.register_from("192.0.2.%d" % n, key)
            self.assertEqual(reply.status, 200)
            self.clock.advance(60)
        reply = yield self.register_from("192.0.2.200", self.KEYS[10])
        self.assertTooMany(reply, self.TOO_MANY % (3600 - 600), 3600 - 600)
        self.assertIsNone((yield self.server.store.farmer(self.KEYS[10].address)))
        # Another /24 is not held back; this one is once the first leaves the hour.
        reply = yield self.register_from("192.0.3.1", self.KEYS[11])
        self.assertEqual(reply.status, 200)
        self.clock.advance(3600 - 600)
        reply = yield self.register_from("192.0.2.200", self.KEYS[10])
        self.assertEqual(reply.status, 200)

    @defer.inlineCallbacks
    def test_ipv6_counts_per_slash_64(self):
        self.serve(trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),),
                   registrations_per_network=2)
        statuses = []
        for ip, key in zip(("2001:db8:0:1::1", "2001:db8:0:1:ffff::2", "2001:db8:0:1::3",
                            "2001:db8:0:2::1"), self.KEYS):
            statuses.append((yield self.register_from(ip, key)).status)
        self.assertEqual(statuses, [200, 200, 429, 200])

    @defer.inlineCallbacks
    def test_a_registered_farmer_still_gets_409(self):
        """Clients in the field register on every start and take 409 as "done"."""
        self.serve(registrations_per_network=1)
        yield self.registered(ALICE)
        reply = yield self.register(ALICE)
        self.assertAnswer(reply, 409, REGISTER_TAKEN, TEXT)
        reply = yield self.register(BOB)
        self.assertEqual(reply.status, 429)

    @defer.inlineCallbacks
    def test_the_count_holds_across_daemons(self):
        self.serve(registrations_per_network=1)
        first = self.server
        yield self.registered(ALICE)
        self.serve(registrations_per_network=1)
        self.assertIsNot(self.server, first)
        reply = yield self.register(BOB)
        self.assertTooMany(reply, self.TOO_MANY % 3600, 3600)

    @defer.inlineCallbacks
    def check_unlimited(self):
        for key in self.KEYS:
            reply = yield self.register(key)
            self.assertEqual(reply.status, 200)

    def test_zero_turns_it_off(self):
        self.serve(registrations_per_network=0)
        return self.check_unlimited()

    def test_no_limits_turns_it_off(self):
        self.serve(no_limits=True)
        return self.check_unlimited()


class CapacityAttackTests(LimitTestCase):
    """Issue #12's attack: 5,000 farmers registered from one address, each claiming
    199,999 shards at once, raised total_TB to 122,070 in 7.9 s."""

    ATTACKERS = 5000

    @defer.inlineCallbacks
    def attack(self):
        """Register ATTACKERS farmers from 127.0.0.1, 250 at a time, then claim
        199,999 for each. Through the rules behind the routes (the HTTP layer costs
        the test ~15 s for 10,000 requests and is the same for all of them; the
        last attempt goes through it). Signatures are not the point (an attacker
        owns its keys), so the server skips them; the farmers are named by nodeid."""
        from dataserv.registry import farmers as rules

        nodeids = ["%040x" % (n + 1) for n in range(self.ATTACKERS - 1)]
        request = rules.Request(None, None, self.clock.seconds(), "127.0.0.1")

        @defer.inlineCallbacks
        def all_at_once(call, ids, *args):
            outcomes = []
            for start in range(0, len(ids), 250):
                outcomes.extend((yield defer.DeferredList(
                    [defer.maybeDeferred(call, nodeid, *args, request)
                     for nodeid in ids[start:start + 250]], consumeErrors=True)))
            return [result if ok else result.value for ok, result in outcomes]

        registered = yield all_at_once(self.server.farmers.register, nodeids, None)
        last = yield self.get("/api/register/%040x" % self.ATTACKERS)
        # Those that got in claim 199,999 at once (the others would get 404).
        farmers = [record.btc_addr for record in registered
                   if not isinstance(record, Exception)]
        heights = yield all_at_once(self.server.farmers.set_height, farmers, "199999")
        return [type(r).__name__ for r in registered] + [last.status], heights

    @defer.inlineCallbacks
    def test_registrations_and_capacity_are_held_back(self):
        self.serve(skip_authentication=True)
        registered, heights = yield self.attack()
        self.assertEqual(sorted(registered[:-1]), ["FarmerRecord"] * 10
                         + ["TooManyRegistrations"] * (self.ATTACKERS - 11))
        self.assertEqual(registered[-1], 429)
        self.assertEqual(heights, [None] * 10)
        total = yield self.summarised("/api/total")
        self.assertEqual(total.json()["total_TB"], 0.0)
        self.clock.advance(60)
        total = yield self.summarised("/api/total")
        # 10 farmers credited 60 s at 8 shards a second: 4 800 shards of 128 MiB.
        self.assertEqual(total.json(), {"id": (self.t0 + 60) // 1800,
                                        "total_TB": round(10 * 480 / 8192, 2),
                                        "total_farmers": 10, "verified_TB": 0.0})
