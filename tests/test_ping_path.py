"""GET /api/ping/<id> is answered without Klein (``API.render_ping``): every answer is
byte for byte the Klein route's, a client that goes away cancels the work as Klein
does, and every other request still goes to Klein.

The rules are stubbed (what they answer is the rules' business, tested in
test_api.py over PostgreSQL); the requests go through the daemon's own Site.
"""

import os
import re

from twisted.internet import defer, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import resource

from dataserv.daemon.config import Settings
from dataserv.daemon import service as service_module
from dataserv.daemon.service import Dataserv, Site, io_turn
from dataserv.identity.signing import FarmerKey
from dataserv.registry import farmers as rules
from dataserv.web import api as api_module
from dataserv.web.api import API

ALICE = FarmerKey.from_seed(b"test_ping_path alice").address
PEER = IPv4Address("TCP", "127.0.0.1", 40000)


class StubFarmers:
    """Farmers whose ping answers what the test says."""

    timings = None

    def __init__(self, answer):
        self.answer = answer
        self.pinged = []

    def ping(self, farmer_id, request):
        self.pinged.append(farmer_id)
        return self.answer()


class Spy(resource.Resource):
    """The Klein routes, noting each request that reaches them."""

    isLeaf = True

    def __init__(self, routes):
        super().__init__()
        self.routes = routes
        self.seen = []

    def render(self, request):
        self.seen.append((request.method, request.path))
        return self.routes.render(request)


class PingPathTests(SynchronousTestCase):

    def setUp(self):
        self.patch(api_module, "_PING_PATH", api_module._PING_PATH)  # put back after

    def round_klein(self, allowed):
        """Let pings round Klein (the daemon), or not (as if there were no way round)."""
        api_module._PING_PATH = b"/api/ping/" if allowed else b"/no way round Klein/"

    def serve(self, answer):
        """A Site over an API whose rules' ping answers ``answer()``; Klein's routes
        behind a Spy."""
        clock = task.Clock()
        clock.advance(1700000000)
        self.farmers = StubFarmers(answer)
        api = API(self.farmers, None, None, Settings(rate_limit=0), clock)
        guarded = api.resource()
        self.klein = guarded.routes = Spy(guarded.routes)
        return Site(guarded, logPath=None, reactor=clock)

    def send(self, site, raw):
        """(what the daemon wrote, the connection's channel), the connection open."""
        channel = site.buildProtocol(PEER)
        transport = StringTransport(peerAddress=PEER)
        channel.makeConnection(transport)
        channel.dataReceived(raw)
        return transport, channel

    def answer(self, answer, path="/api/ping/" + ALICE, method="GET", klein=False):
        """What one request is answered (the Date header taken out), and whether it
        reached Klein; ``klein``: as if there were no way around Klein."""
        self.round_klein(not klein)
        site = self.serve(answer)
        transport, channel = self.send(
            site, b"%s %s HTTP/1.1\r\nHost: dataserv\r\nConnection: close\r\n\r\n" % (
                method.encode(), path.encode()))
        channel.connectionLost(Failure(ConnectionDone()))
        return re.sub(rb"\r\nDate: [^\r]*", b"", transport.value()), bool(self.klein.seen)

    def test_a_ping_is_answered_without_klein(self):
        written, through_klein = self.answer(lambda: defer.succeed(None))
        self.assertFalse(through_klein)
        self.assertEqual(self.farmers.pinged, [ALICE])
        self.assertTrue(written.startswith(b"HTTP/1.1 200 OK\r\n"), written)
        self.assertTrue(written.endswith(b"\r\n\r\nPing accepted."), written)

    def test_the_same_answers_as_klein(self):
        outcomes = {
            "accepted": lambda: defer.succeed(None),
            "unauthenticated": lambda: defer.fail(
                rules.Unauthenticated(skew=40, reason=rules.REPLAYED)),
            "invalid id": lambda: defer.fail(rules.InvalidFarmerId()),
            "unknown": lambda: defer.fail(rules.FarmerNotFound()),
            "database down": lambda: defer.fail(rules.Unavailable("down")),
            "a bug": lambda: defer.fail(RuntimeError("a bug")),
            "an answer later": lambda: task.deferLater(self.later, 1, lambda: None),
        }
        for name, outcome in outcomes.items():
            answers = []
            for klein in (False, True):
                self.later = task.Clock()
                self.round_klein(not klein)
                site = self.serve(outcome)
                transport, channel = self.send(
                    site, b"GET /api/ping/%s HTTP/1.1\r\nHost: dataserv\r\n\r\n"
                    % ALICE.encode())
                self.later.advance(1)
                channel.connectionLost(Failure(ConnectionDone()))
                answers.append(re.sub(rb"\r\nDate: [^\r]*", b"", transport.value()))
                self.assertEqual(bool(self.klein.seen), klein, name)
                self.assertEqual(len(self.flushLoggedErrors(RuntimeError)),
                                 name == "a bug", name)
            self.assertEqual(answers[0], answers[1], name)
            self.assertTrue(answers[0].startswith(b"HTTP/1.1 "), name)

    def test_a_client_gone_before_the_answer_cancels_it(self):
        cancelled = []
        for klein in (False, True):
            self.round_klein(not klein)
            site = self.serve(lambda: defer.Deferred(cancelled.append))
            transport, channel = self.send(
                site, b"GET /api/ping/%s HTTP/1.1\r\nHost: dataserv\r\n\r\n"
                % ALICE.encode())
            channel.connectionLost(Failure(ConnectionDone()))
            self.assertEqual(len(cancelled), 1 + klein)
            self.assertEqual(transport.value(), b"")
            self.assertEqual(bool(self.klein.seen), klein)

    def test_everything_else_goes_to_klein(self):
        for method, path in (("HEAD", "/api/ping/" + ALICE),
                             ("POST", "/api/ping/" + ALICE),
                             ("GET", "/api/ping/%31" + ALICE[1:]),
                             ("GET", "/api/ping/" + ALICE + "/"),
                             ("GET", "/api/ping/" + ALICE + "%0A"),
                             ("GET", "/api/ping/" + "a" * 65),
                             ("GET", "/api/ping/"),
                             ("GET", "//api/ping/" + ALICE),
                             ("GET", "/api/address")):
            written, through_klein = self.answer(
                lambda: defer.succeed(None), path=path, method=method)
            self.assertTrue(through_klein, (method, path))
            self.assertTrue(written.startswith(b"HTTP/1.1 "), (method, path))


class _Pipe:
    """A pipe's read end watched by the reactor: ``on_read`` after each read."""

    def __init__(self, on_read):
        self.read_fd, self.write_fd = os.pipe()
        self.on_read = on_read

    def fileno(self):
        return self.read_fd

    def doRead(self):  # noqa: N802 (IReadDescriptor)
        os.read(self.read_fd, 64)
        self.on_read()

    def connectionLost(self, reason):  # noqa: N802
        pass

    def logPrefix(self):  # noqa: N802
        return "pipe"

    def close(self):
        os.close(self.read_fd)
        os.close(self.write_fd)


class IOTurnTests(unittest.TestCase):
    """io_turn, which an answer request waits for before each of its statements, on
    the real reactor."""

    @defer.inlineCallbacks
    def test_io_ready_meanwhile_is_handled_first_even_from_an_io_handler(self):
        # A ping waiting on its connection while an answer is checked is read
        # before the answer goes on (a single call for "now" would run first: the
        # reactor runs those before it polls again).
        order, turned = [], defer.Deferred()
        other = _Pipe(lambda: order.append("other connection"))

        def answer_arrives():
            os.write(other.write_fd, b"x")  # ready now, seen at the next poll
            io_turn(reactor).addCallback(lambda _: order.append("turn")).chainDeferred(
                turned)

        answer = _Pipe(answer_arrives)
        for pipe in (answer, other):
            reactor.addReader(pipe)
            self.addCleanup(pipe.close)
            self.addCleanup(reactor.removeReader, pipe)
        os.write(answer.write_fd, b"x")
        yield turned
        self.assertEqual(order, ["other connection", "turn"])

    def test_the_daemons_answers_pause_with_it(self):
        clock, turns = task.Clock(), []
        self.patch(service_module, "io_turn", lambda reactor: turns.append(reactor) or
                   defer.succeed(None))
        daemon = Dataserv(Settings(database="dbname=x", listen="tcp:0"), clock)
        self.assertIsNone(self.successResultOf(daemon.proofs._pause()))
        self.assertEqual(turns, [clock])
