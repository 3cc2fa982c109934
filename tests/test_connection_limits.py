"""Limits that come before any work: per-IP rate, connections, request size and deadlines.

Route-level limits go through StubTreq; connection-level ones through the daemon's own
Site and HTTP channel over a StringTransport, with a Clock for every deadline.
"""

import dataclasses
import os
import socket
import subprocess
import sys
import io
import ipaddress

from treq.testing import StubTreq
from twisted.internet import defer, endpoints, protocol, reactor, task
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.web import resource, server

from dataserv.daemon.config import Settings
from dataserv.daemon import service
from dataserv.daemon.service import ConnectionLimits, Site
from dataserv.web.api import API
from dataserv.web.body import Body
from dataserv.web.limits import RateLimiter, client_key

PLAIN = [b"text/plain; charset=utf-8"]
ADDRESS_PATH = "http://dataserv.test/api/address"
PING_PATH = "http://dataserv.test/api/ping/1F3sAm6ZtwLAUnj7d38pGFxtP3RVEvtsbV"


class ClientKeyTests(unittest.SynchronousTestCase):
    """Which clients share a bucket."""

    def test_ipv4_is_itself(self):
        self.assertEqual(client_key("192.0.2.7"), "192.0.2.7")
        self.assertNotEqual(client_key("192.0.2.7"), client_key("192.0.2.8"))

    def test_ipv6_is_its_64(self):
        self.assertEqual(client_key("2001:db8:1:2:aaaa::1"), client_key("2001:db8:1:2:bbbb::9"))
        self.assertEqual(client_key("2001:db8:1:2::1"), "2001:db8:1:2::/64")
        self.assertNotEqual(client_key("2001:db8:1:2::1"), client_key("2001:db8:1:3::1"))

    def test_ipv4_mapped(self):
        self.assertEqual(client_key("::ffff:192.0.2.7"), "192.0.2.7")

    def test_nothing(self):
        self.assertIsNone(client_key(None))


class RateLimiterTests(unittest.SynchronousTestCase):
    """The token bucket."""

    def test_burst_then_refused(self):
        limiter = RateLimiter(rate=2, burst=3)
        self.assertEqual([limiter.take("a", 100.0) for _ in range(4)], [0, 0, 0, 0.5])

    def test_refills_at_the_rate(self):
        limiter = RateLimiter(rate=2, burst=3)
        for _ in range(3):
            limiter.take("a", 100.0)
        self.assertEqual(limiter.take("a", 100.5), 0)       # one token back after 0.5 s
        self.assertGreater(limiter.take("a", 100.5), 0)
        self.assertEqual([limiter.take("a", 200.0) for _ in range(3)], [0, 0, 0])  # never > burst
        self.assertGreater(limiter.take("a", 200.0), 0)

    def test_clients_are_separate(self):
        limiter = RateLimiter(rate=1, burst=1)
        self.assertEqual((limiter.take("a", 0.0), limiter.take("b", 0.0)), (0, 0))
        self.assertGreater(limiter.take("a", 0.0), 0)

    def test_memory_is_bounded(self):
        limiter = RateLimiter(rate=1, burst=1, max_clients=100)
        for i in range(10000):
            limiter.take(client_key("2001:db8:%x::1" % i), 0.0)
        self.assertEqual(len(limiter), 100)

    def test_recently_used_are_kept(self):
        limiter = RateLimiter(rate=1, burst=1, max_clients=2)
        limiter.take("a", 0.0)
        limiter.take("b", 0.0)
        limiter.take("a", 0.0)   # refused, and now the most recently used
        limiter.take("c", 0.0)   # pushes out b, not a
        self.assertGreater(limiter.take("a", 0.0), 0)


class _Untouchable:
    """A collaborator that fails the request if anything calls it or reads its state."""

    def __getattr__(self, name):
        def called(*args, **kwargs):
            raise AssertionError("work was done: %s" % name)

        if name in ("snapshot", "store"):
            called()
        return called


def _api(clock, **changes):
    settings = dataclasses.replace(Settings(), **changes)
    return API(_Untouchable(), _Untouchable(), _Untouchable(), settings, clock)


class RateLimitRouteTests(unittest.SynchronousTestCase):
    """429 with Retry-After, before any signature is looked at."""

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)

    def get(self, http, url, headers=None):
        response = self.successResultOf(http.get(url, headers=headers or {}))
        return response, self.successResultOf(response.content())

    def test_refused_before_any_work(self):
        http = StubTreq(_api(self.clock, rate_limit=1, rate_burst=2).resource())
        for _ in range(2):
            response, _ = self.get(http, ADDRESS_PATH)
            self.assertEqual(response.code, 200)
        # The farmers object would fail the test if the ping reached it.
        response, body = self.get(http, PING_PATH)
        self.assertEqual((response.code, body), (429, b"Too many requests: slow down."))
        self.assertEqual(response.headers.getRawHeaders(b"Content-Type"), PLAIN)
        self.assertEqual(response.headers.getRawHeaders(b"Retry-After"), [b"1"])
        self.clock.advance(1)
        self.assertEqual(self.get(http, ADDRESS_PATH)[0].code, 200)

    def test_retry_after_rounds_up(self):
        http = StubTreq(_api(self.clock, rate_limit=0.1, rate_burst=1).resource())
        self.get(http, ADDRESS_PATH)
        self.clock.advance(2.5)
        response, _ = self.get(http, ADDRESS_PATH)
        self.assertEqual(response.headers.getRawHeaders(b"Retry-After"), [b"8"])

    def test_zero_and_no_limits_turn_it_off(self):
        for changes in ({"rate_limit": 0}, {"rate_limit": 1, "rate_burst": 1, "no_limits": True}):
            http = StubTreq(_api(self.clock, **changes).resource())
            codes = {self.get(http, ADDRESS_PATH)[0].code for _ in range(50)}
            self.assertEqual(codes, {200}, changes)

    def test_real_client_behind_a_trusted_proxy(self):
        # StubTreq's peer is 127.0.0.1: the proxy. Each forwarded client has its bucket.
        http = StubTreq(_api(self.clock, rate_limit=1, rate_burst=1,
                             trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),))
                        .resource())
        first = {b"X-Forwarded-For": [b"198.51.100.1"]}
        second = {b"X-Forwarded-For": [b"198.51.100.2"]}
        self.assertEqual(self.get(http, ADDRESS_PATH, first)[0].code, 200)
        self.assertEqual(self.get(http, ADDRESS_PATH, second)[0].code, 200)
        self.assertEqual(self.get(http, ADDRESS_PATH, first)[0].code, 429)

    def test_field_clients_never_limited_by_the_defaults(self):
        # Defaults: 20/s, burst 100. A dashboard page load and a client's start-up
        # (address, register, a few reads) at once, then a request every 0.1 s for
        # ten minutes: ten times any field client's pace, from one address.
        http = StubTreq(_api(self.clock).resource())
        codes = [self.get(http, ADDRESS_PATH)[0].code for _ in range(50)]
        for _ in range(6000):
            self.clock.advance(0.1)
            codes.append(self.get(http, ADDRESS_PATH)[0].code)
        self.assertEqual(set(codes), {200})


class WireTests(unittest.SynchronousTestCase):
    """What every answer looks like."""

    def setUp(self):
        self.clock = task.Clock()
        self.http = StubTreq(_api(self.clock).resource())

    def get(self, url, method="GET"):
        response = self.successResultOf(self.http.request(method, url))
        return response, self.successResultOf(response.content())

    def test_server_names_dataserv(self):
        response, _ = self.get(ADDRESS_PATH)
        self.assertEqual(response.headers.getRawHeaders(b"Server"), [b"dataserv/3.0.0"])

    def test_not_found_is_text(self):
        response, body = self.get("http://dataserv.test/nowhere")
        self.assertEqual((response.code, body), (404, b"404 Not Found"))
        self.assertEqual(response.headers.getRawHeaders(b"Content-Type"), PLAIN)

    def test_method_not_allowed_is_text(self):
        response, body = self.get(ADDRESS_PATH, method="POST")
        self.assertEqual((response.code, body), (405, b"405 Method Not Allowed"))
        self.assertEqual(response.headers.getRawHeaders(b"Content-Type"), PLAIN)
        self.assertIn(b"GET", response.headers.getRawHeaders(b"Allow")[0])

    def test_head_on_state_changing_routes_is_405(self):
        # _Untouchable fails the request if any of them reached the rules.
        for path in ("register/1F3sAm6ZtwLAUnj7d38pGFxtP3RVEvtsbV",
                     "ping/1F3sAm6ZtwLAUnj7d38pGFxtP3RVEvtsbV",
                     "height/1F3sAm6ZtwLAUnj7d38pGFxtP3RVEvtsbV/5",
                     "bandwidth/1F3sAm6ZtwLAUnj7d38pGFxtP3RVEvtsbV/1/2",
                     "audit/1F3sAm6ZtwLAUnj7d38pGFxtP3RVEvtsbV/1/" + "a" * 64):
            response, body = self.get("http://dataserv.test/api/" + path, method="HEAD")
            self.assertEqual((response.code, body), (405, b""), path)
            self.assertEqual(response.headers.getRawHeaders(b"Allow"), [b"GET"], path)

    def test_unexpected_error_is_short_text(self):
        http = StubTreq(API(_Untouchable(), _Untouchable(), _Untouchable(), Settings(),
                            self.clock).resource())
        response = self.successResultOf(http.get("http://dataserv.test/api/online"))
        body = self.successResultOf(response.content())
        self.assertEqual((response.code, body), (500, b"Internal server error."))
        self.assertEqual(response.headers.getRawHeaders(b"Content-Type"), PLAIN)
        self.assertEqual(len(self.flushLoggedErrors(AssertionError)), 1)

    def test_metrics_refused_outside_the_allowed_networks(self):
        # StubTreq's peer is 127.0.0.1; allow only another network.
        http = StubTreq(_api(self.clock, metrics_allow=(ipaddress.ip_network("10.0.0.0/8"),))
                        .resource())
        response = self.successResultOf(http.get("http://dataserv.test/metrics"))
        body = self.successResultOf(response.content())
        self.assertEqual((response.code, body),
                         (403, b"Forbidden: /metrics is not open to this address."))
        self.assertEqual(response.headers.getRawHeaders(b"Content-Type"), PLAIN)

    def test_metrics_judged_by_the_real_client(self):
        http = StubTreq(_api(self.clock, trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),))
                        .resource())
        response = self.successResultOf(http.get(
            "http://dataserv.test/metrics", headers={b"X-Forwarded-For": [b"203.0.113.9"]}))
        self.assertEqual(response.code, 403)


# -- the HTTP channel -------------------------------------------------------------


class _Recorder(resource.Resource):
    """Answers every request with ``body`` and remembers what it saw."""

    isLeaf = True

    def __init__(self, body=b"ok"):
        super().__init__()
        self.body = body
        self.seen = []

    def render(self, request):
        self.seen.append((request.method, request.content))
        if isinstance(self.body, Body):
            request.setHeader(b"Content-Length", b"%d" % len(self.body))
            self.body.write_to(request).addCallback(
                lambda _: None if request._disconnected else request.finish())
            return server.NOT_DONE_YET
        return self.body


class Connection:
    """One client connection to a Site over a StringTransport."""

    def __init__(self, site, host="192.0.2.1", port=40000):
        peer = (IPv6Address("TCP", host, port) if ":" in host
                else IPv4Address("TCP", host, port))
        self.channel = site.buildProtocol(peer)
        self.lost = False
        if self.channel is not None:
            # Lenient, as TCP: resuming a transport that is closing is harmless.
            self.transport = StringTransport(peerAddress=peer, lenient=True)
            self.channel.makeConnection(self.transport)

    def send(self, data):
        self.channel.dataReceived(data)

    def written(self):
        return self.transport.value()

    @property
    def closed(self):
        return self.transport.disconnecting

    def lose(self):
        if not self.lost:
            self.lost = True
            if self.transport.producer is not None:  # what a TCP transport does first
                self.transport.producer.stopProducing()
            self.channel.connectionLost(Failure(ConnectionDone()))


GET = b"GET / HTTP/1.1\r\nHost: dataserv\r\n\r\n"


class ChannelTestCase(unittest.SynchronousTestCase):
    """A Site with the daemon's channel, a recording resource and a Clock."""

    def site(self, body=b"ok", **limits):
        self.clock = task.Clock()
        self.resource = _Recorder(body)
        site = Site(self.resource, limits=ConnectionLimits(**limits), reactor=self.clock)
        site.logPath = None
        return site

    def connect(self, site, **kwargs):
        connection = Connection(site, **kwargs)
        # A StringTransport never reports its own end: tell the channel, as TCP would.
        self.addCleanup(lambda: connection.channel and connection.lose())
        return connection

    def assertStatus(self, written, status):  # noqa: N802
        self.assertTrue(written.startswith(b"HTTP/1.1 %d " % status), written[:60])


class BodyLimitTests(ChannelTestCase):
    """413 before the body is read; nothing spooled to disk."""

    def test_declared_length_over_the_cap(self):
        connection = self.connect(self.site(max_body=1000))
        connection.send(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 500000000\r\n\r\n"
                        + b"x" * 5000)
        written = connection.written()
        self.assertStatus(written, 413)
        self.assertIn(b"Content-Type: text/plain; charset=utf-8\r\n", written)
        self.assertTrue(written.endswith(b"\r\n\r\nRequest body too large: at most 1000 bytes."))
        self.assertTrue(connection.closed)
        self.assertEqual(self.resource.seen, [])

    def test_expect_continue_is_not_invited(self):
        connection = self.connect(self.site(max_body=1000))
        connection.send(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
                        b"Expect: 100-continue\r\n\r\n")
        self.assertStatus(connection.written(), 413)

    def test_chunked_body_over_the_cap(self):
        connection = self.connect(self.site(max_body=1000))
        connection.send(b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(3):
            connection.send(b"200\r\n" + b"x" * 0x200 + b"\r\n")
        self.assertStatus(connection.written(), 413)
        self.assertEqual(self.resource.seen, [])

    def test_small_bodies_stay_in_memory(self):
        connection = self.connect(self.site(max_body=1000))
        connection.send(b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"5\r\nhello\r\n0\r\n\r\n")
        self.assertStatus(connection.written(), 200)
        [(_, content)] = self.resource.seen
        # Twisted spools a body of unknown length to a temporary file.
        self.assertIsInstance(content, io.BytesIO)

    def test_zero_is_off(self):
        connection = self.connect(self.site(max_body=0))
        connection.send(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000)
        self.assertStatus(connection.written(), 200)

    def test_refused_client_that_keeps_sending_is_cut_off(self):
        connection = self.connect(self.site(max_body=1000))
        connection.send(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 500000000\r\n\r\n")
        # Nothing more is read: TCP holds the sender back.
        self.assertEqual(connection.transport.producerState, "paused")
        self.assertFalse(connection.transport.disconnected)
        self.clock.advance(2)
        self.assertTrue(connection.transport.disconnected)  # aborted


class HeadDeadlineTests(ChannelTestCase):
    """The whole request head within head_timeout of its first byte."""

    def test_slowloris_is_dropped_within_the_deadline(self):
        connection = self.connect(self.site(head_timeout=10, idle_timeout=15))
        head = b"GET / HTTP/1.1\r\nHost: dataserv\r\nX-Slow: " + b"a" * 100
        for byte in range(10):
            connection.send(head[byte:byte + 1])
            self.clock.advance(1)
        self.assertStatus(connection.written(), 408)
        self.assertTrue(connection.closed)
        self.assertEqual(self.resource.seen, [])

    def test_timer_starts_with_the_first_byte_of_each_request(self):
        connection = self.connect(self.site(head_timeout=10, idle_timeout=15))
        connection.send(GET)
        self.clock.advance(12)   # idle between requests: the idle timeout's business
        connection.send(b"GET / HTTP/1.1\r\n")
        self.clock.advance(9)
        connection.send(b"Host: x\r\n\r\n")
        self.assertEqual(connection.written().count(b"HTTP/1.1 200 "), 2)
        self.assertFalse(connection.closed)

    def test_slow_body_is_dropped_too(self):
        connection = self.connect(self.site(head_timeout=10, idle_timeout=15, max_body=1000))
        connection.send(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        for _ in range(10):
            connection.send(b"x")
            self.clock.advance(1)
        self.assertStatus(connection.written(), 408)
        self.assertEqual(self.resource.seen, [])

    def test_zero_is_off(self):
        connection = self.connect(self.site(head_timeout=0, idle_timeout=15))
        for _ in range(30):
            connection.send(b"G")
            self.clock.advance(1)
        self.assertFalse(connection.closed)


class IdleTimeoutTests(ChannelTestCase):
    """A kept-alive connection that sends nothing more is closed."""

    def test_idle_connection_closed(self):
        connection = self.connect(self.site(idle_timeout=15))
        connection.send(GET)
        self.clock.advance(14)
        self.assertFalse(connection.closed)
        self.clock.advance(1)
        self.assertTrue(connection.closed)


class OneTimerTests(ChannelTestCase):
    """The three deadlines share one timer per connection."""

    def counted(self, site):
        made = []
        real = self.clock.callLater

        def callLater(*args, **kwargs):  # noqa: N802
            made.append(args[0])
            return real(*args, **kwargs)

        self.clock.callLater = callLater
        return made

    def test_a_connection_with_one_request_makes_one_timer(self):
        site = self.site(head_timeout=10, idle_timeout=15, send_timeout=60)
        made = self.counted(site)
        connection = self.connect(site)
        connection.send(GET)
        self.assertStatus(connection.written(), 200)
        connection.lose()
        self.assertEqual(made, [10])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_idle_is_counted_from_the_last_response(self):
        connection = self.connect(self.site(head_timeout=10, idle_timeout=15))
        connection.send(GET)
        self.clock.advance(14)
        connection.send(GET)
        self.clock.advance(14)
        self.assertFalse(connection.closed)
        self.assertEqual(connection.written().count(b"HTTP/1.1 200 "), 2)
        self.clock.advance(1)
        self.assertTrue(connection.closed)

    def test_a_sooner_deadline_than_the_timer_gets_a_timer_of_its_own(self):
        # Idle 100 s, then a request whose head must arrive within 10 s.
        connection = self.connect(self.site(head_timeout=10, idle_timeout=100))
        connection.send(GET)
        self.clock.advance(50)
        connection.send(b"GET / HTTP/1.1\r\n")
        self.clock.advance(10)
        self.assertStatus(connection.written().split(b"HTTP/1.1 200 ")[-1]
                          .split(b"\r\n\r\nok")[-1], 408)


class HostTests(ChannelTestCase):
    """HTTP/1.1 requires Host."""

    def test_http11_without_host_is_400(self):
        connection = self.connect(self.site())
        connection.send(b"GET / HTTP/1.1\r\n\r\n")
        written = connection.written()
        self.assertStatus(written, 400)
        self.assertIn(b"Content-Type: text/plain; charset=utf-8\r\n", written)
        self.assertIn(b"Server: dataserv/3.0.0\r\n", written)
        self.assertEqual(self.resource.seen, [])

    def test_http10_without_host_is_answered(self):
        connection = self.connect(self.site())
        connection.send(b"GET / HTTP/1.0\r\n\r\n")
        self.assertTrue(connection.written().startswith(b"HTTP/1.0 200 "))


class SendDeadlineTests(ChannelTestCase):
    """A response the client does not take is dropped, and its body let go."""

    def test_reader_that_takes_nothing_is_dropped(self):
        body = Body([b"x" * 1000] * 10)
        connection = self.connect(self.site(body=body, send_timeout=30))
        connection.send(GET)
        # The StringTransport never asks the pull producer for more: a client that
        # reads nothing.
        self.clock.advance(29)
        self.assertFalse(connection.transport.disconnected)
        self.clock.advance(1)
        self.assertTrue(connection.transport.disconnected)

    def test_finished_response_keeps_the_connection(self):
        connection = self.connect(self.site(send_timeout=30, idle_timeout=100))
        connection.send(GET)
        self.clock.advance(60)
        self.assertFalse(connection.transport.disconnected)
        self.assertEqual(self.clock.getDelayedCalls()[0].getTime(), 100)  # the idle timer

    def test_zero_is_off(self):
        body = Body([b"x" * 1000] * 10)
        connection = self.connect(self.site(body=body, send_timeout=0))
        connection.send(GET)
        self.clock.advance(3600)
        self.assertFalse(connection.transport.disconnected)


class ConnectionCapTests(ChannelTestCase):
    """At most per_ip open connections per client IP (IPv6: per /64)."""

    def test_cap(self):
        site = self.site(per_ip=3)
        connections = [self.connect(site) for _ in range(3)]
        self.assertIsNone(Connection(site).channel)
        self.assertIsNotNone(Connection(site, host="192.0.2.2").channel)
        connections[0].lose()
        self.assertIsNotNone(self.connect(site).channel)
        self.assertIsNone(Connection(site).channel)

    def test_ipv6_counted_by_64(self):
        site = self.site(per_ip=2)
        self.connect(site, host="2001:db8:0:1::1")
        self.connect(site, host="2001:db8:0:1::2")
        self.assertIsNone(Connection(site, host="2001:db8:0:1:ffff::3").channel)
        self.assertIsNotNone(self.connect(site, host="2001:db8:0:2::1").channel)

    def test_nothing_left_behind(self):
        site = self.site(per_ip=3)
        for _ in range(10):
            self.connect(site).lose()
        self.assertEqual(dict(site.connections), {})

    def test_trusted_proxies_are_exempt(self):
        site = self.site(per_ip=1)
        site.trusted_proxies = (ipaddress.ip_network("192.0.2.0/24"),)
        for _ in range(5):
            self.assertIsNotNone(self.connect(site).channel)

    def test_no_limits_and_zero_turn_it_off(self):
        for settings in (Settings(no_limits=True), Settings(max_connections_per_ip=0)):
            self.assertEqual(ConnectionLimits.from_settings(settings).per_ip, 0)
        site = self.site(per_ip=0)
        for _ in range(100):
            self.assertIsNotNone(self.connect(site).channel)

    def test_settings_reach_the_limits(self):
        limits = ConnectionLimits.from_settings(Settings())
        self.assertEqual(limits, ConnectionLimits(max_body=65536, head_timeout=10,
                                                  idle_timeout=15, send_timeout=60, per_ip=64))


class DescriptorExhaustionTests(unittest.SynchronousTestCase):
    """Out of descriptors, the connections already open keep being served.

    The server runs in a child process with RLIMIT_NOFILE at 64 and takes 150
    idle connections more than it can hold; the test's own connection, opened
    before them, still gets its answers.
    """

    LIMIT = 64
    IDLE = 150

    def setUp(self):
        self.child = subprocess.Popen(
            [sys.executable, "-m", "tests.emfile_server", str(self.LIMIT)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self.addCleanup(self._stop)
        self.port = int(self.child.stdout.readline())
        self.sockets = []

    def _stop(self):
        for sock in self.sockets:
            sock.close()
        self.child.kill()
        self.child.wait()
        self.child.stdout.close()
        self.child.stderr.close()

    def connect(self):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.sockets.append(sock)
        return sock

    def ask(self, sock):
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while not answer.endswith(b"hello"):
            data = sock.recv(4096)
            if not data:
                break
            answer += data
        return answer

    def test_existing_keep_alive_connection_still_answered(self):
        kept = self.connect()
        self.assertTrue(self.ask(kept).startswith(b"HTTP/1.1 200 "))
        for _ in range(self.IDLE):
            self.connect()  # the kernel queues them whether or not the child accepts
        for _ in range(3):
            answer = self.ask(kept)
            self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:40])
            self.assertTrue(answer.endswith(b"hello"))
        self.child.kill()
        self.child.wait()
        log = self.child.stderr.read()
        # The child really ran out: Twisted logs each accept(2) it had to refuse.
        self.assertIn(b"EMFILE encountered", log)


class _Collect(protocol.Protocol):
    """Keeps what arrives; ``lost`` fires with it (and when) once the server closes."""

    def __init__(self, clock):
        self.clock = clock
        self.data = b""
        self.lost = defer.Deferred()

    def dataReceived(self, data):  # noqa: N802
        self.data += data

    def connectionLost(self, reason):  # noqa: N802
        self.lost.callback((self.data, self.clock.seconds()))


class RealSocketTests(unittest.TestCase):
    """The daemon's Site on a real loopback socket and the real reactor (short limits)."""

    timeout = 20

    @defer.inlineCallbacks
    def serve(self, **limits):
        # A refused client that stops talking is cut off after the grace period; the
        # server reads nothing more from it, so it cannot see the client go sooner.
        self.patch(service, "REFUSED_GRACE", 0.2)
        site = Site(_Recorder(), limits=ConnectionLimits(per_ip=10, **limits), reactor=reactor)
        port = yield endpoints.serverFromString(
            reactor, "tcp:0:interface=127.0.0.1").listen(site)
        self.addCleanup(port.stopListening)
        self.addCleanup(self.server_side_closed, site)
        return port.getHost().port

    @defer.inlineCallbacks
    def server_side_closed(self, site):
        deadline = reactor.seconds() + 5
        while site.connections and reactor.seconds() < deadline:
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(dict(site.connections), {})

    @defer.inlineCallbacks
    def client(self, port):
        client = _Collect(reactor)
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        yield endpoints.connectProtocol(endpoint, client)
        self.addCleanup(lambda: client.transport.abortConnection())
        return client

    @defer.inlineCallbacks
    def test_slowloris_dropped_at_the_head_deadline(self):
        port = yield self.serve(head_timeout=0.5, idle_timeout=5)
        client = yield self.client(port)
        started = reactor.seconds()
        sender = task.LoopingCall(lambda: client.transport.write(b"a"))
        client.transport.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        sender.start(0.05)
        data, when = yield client.lost
        sender.stop()
        self.assertTrue(data.startswith(b"HTTP/1.1 408 "), data)
        self.assertLess(when - started, 3.0)  # the idle timeout (5 s) never fired

    @defer.inlineCallbacks
    def test_big_body_client_reads_its_413(self):
        port = yield self.serve(max_body=1000)
        client = yield self.client(port)
        client.transport.write(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 500000000\r\n\r\n")
        sender = task.LoopingCall(lambda: client.transport.write(b"x" * 65536))
        sender.start(0.001)
        data, _ = yield client.lost
        sender.stop()
        self.assertTrue(data.startswith(b"HTTP/1.1 413 "), data)
