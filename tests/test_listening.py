"""Tests for :mod:`dataserv.daemon.listening`: --reuse-port."""

import errno
import socket
import time

from twisted.internet import defer, protocol, reactor, task
from twisted.trial import unittest

from dataserv.daemon.listening import (
    CannotListen, EndpointListener, ReusePortError, ReusePortService, parse_tcp, with_backlog)
from tests.test_daemon import free_port


def connect_error(port):
    """0 when 127.0.0.1:port accepts a connection, else the errno."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port))


class Counting(protocol.Factory):
    """Counts the connections it was given and closes them."""

    def __init__(self):
        self.connections = 0

    def buildProtocol(self, addr):  # noqa: N802
        self.connections += 1
        p = protocol.Protocol()
        p.connectionMade = lambda: p.transport.loseConnection()
        return p


class ParseTests(unittest.SynchronousTestCase):

    def test_forms(self):
        self.assertEqual(parse_tcp("tcp:8080"), ("0.0.0.0", 8080, 50, socket.AF_INET))
        self.assertEqual(parse_tcp("tcp:port=80:interface=127.0.0.1:backlog=200"),
                         ("127.0.0.1", 80, 200, socket.AF_INET))
        self.assertEqual(parse_tcp("tcp6:8080"), ("::", 8080, 50, socket.AF_INET6))

    def test_refused(self):
        for listen, said in (("unix:/tmp/x", "needs a tcp:PORT"), ("tcp", "needs a tcp:PORT"),
                             ("tcp:http", "numeric port"), ("tcp:80:ssl=1", "unsupported"),
                             ("tcp:80:backlog=many", "numeric port")):
            with self.assertRaises(ReusePortError) as raised:
                parse_tcp(listen)
            self.assertIn(said, str(raised.exception), listen)


class BacklogTests(unittest.SynchronousTestCase):
    """--backlog applies wherever --listen does not set one."""

    def test_added_when_absent(self):
        self.assertEqual(with_backlog("tcp:5000", 1024), "tcp:5000:backlog=1024")
        self.assertEqual(with_backlog("tcp:5000:interface=127.0.0.1", 7),
                         "tcp:5000:interface=127.0.0.1:backlog=7")
        self.assertEqual(parse_tcp(with_backlog("tcp6:5000", 2048))[2], 2048)

    def test_listen_string_wins(self):
        self.assertEqual(with_backlog("tcp:5000:backlog=10", 1024), "tcp:5000:backlog=10")

    def test_endpoints_without_a_backlog(self):
        self.assertEqual(with_backlog("systemd:domain=INET:index=0", 1024),
                         "systemd:domain=INET:index=0")

    def test_daemon_listens_with_it(self):
        from twisted.internet import task

        from dataserv.daemon.config import Settings
        from dataserv.daemon.service import Dataserv

        plain = Dataserv(Settings(database="dbname=x", listen="tcp:0", backlog=777), task.Clock())
        self.assertEqual(plain.http.endpoint._backlog, 777)
        shared = Dataserv(Settings(database="dbname=x", listen="tcp:0", reuse_port=True),
                          task.Clock())
        self.assertEqual(shared.http.address[2], 1024)


class ReusePortServiceTests(unittest.TestCase):

    def setUp(self):
        self.port = free_port()
        self.listen = "tcp:%d:interface=127.0.0.1" % self.port

    def service(self, when_ready=None):
        factory = Counting()
        svc = ReusePortService(reactor, self.listen, factory, when_ready=when_ready)
        svc.privilegedStartService()
        svc.startService()
        self.addCleanup(lambda: svc.running and svc.stopService())
        return svc, factory

    def test_listens_only_when_ready(self):
        ready = defer.Deferred()
        svc, _ = self.service(lambda: ready)
        # Bound (the port is taken) but not listening: connections are refused.
        self.assertEqual(connect_error(self.port), errno.ECONNREFUSED)
        ready.callback(None)
        self.assertEqual(connect_error(self.port), 0)
        return svc.stopService()

    @defer.inlineCallbacks
    def test_two_share_the_port(self):
        (first, one), (second, other) = self.service(), self.service()
        deadline = time.monotonic() + 10
        # The kernel spreads connections over both by their source ports.
        while not (one.connections and other.connections):
            self.assertLess(time.monotonic(), deadline, "one daemon got every connection")
            self.assertEqual(connect_error(self.port), 0)
            yield task.deferLater(reactor, 0.001, lambda: None)
        yield first.stopService()
        # The other keeps serving the port alone.
        self.assertEqual(connect_error(self.port), 0)
        yield second.stopService()
        self.assertEqual(connect_error(self.port), errno.ECONNREFUSED)

    def test_stopped_before_ready(self):
        ready = defer.Deferred()
        svc, factory = self.service(lambda: ready)
        svc.stopService()
        # The socket is closed: a plain bind (no SO_REUSEPORT) gets the port.
        with socket.socket() as s:
            s.bind(("127.0.0.1", self.port))
        self.assertTrue(ready.called)  # cancelled: it will not listen later
        self.assertFalse(svc.running)
        self.assertIsNone(svc.port)


def held_port():
    """A port on 127.0.0.1 that a plain socket (no SO_REUSEPORT) listens on; the socket."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


class CannotListenTests(unittest.TestCase):
    """A port the daemon cannot have is CannotListen, one line naming --listen."""

    def assertCannotListen(self, svc, listen, reason):  # noqa: N802
        with self.assertRaises(CannotListen) as raised:
            svc.take_port()
        message = str(raised.exception)
        self.assertEqual(message, "--listen %s: cannot listen (%s)" % (listen, reason))
        self.assertIsNone(svc.port)

    def test_endpoint_port_in_use(self):
        holder = held_port()
        self.addCleanup(holder.close)
        listen = "tcp:%d:interface=127.0.0.1" % holder.getsockname()[1]
        self.assertCannotListen(EndpointListener(reactor, listen, Counting()), listen,
                                "Address already in use")

    def test_endpoint_port_out_of_range(self):
        self.assertCannotListen(EndpointListener(reactor, "tcp:70000", Counting()),
                                "tcp:70000", "bind(): port must be 0-65535.")

    def test_reuse_port_in_use(self):
        holder = held_port()
        self.addCleanup(holder.close)
        listen = "tcp:%d:interface=127.0.0.1" % holder.getsockname()[1]
        self.assertCannotListen(ReusePortService(reactor, listen, Counting()), listen,
                                "Address already in use")

    def test_reuse_port_out_of_range(self):
        self.assertCannotListen(ReusePortService(reactor, "tcp:70000", Counting()),
                                "tcp:70000", "bind(): port must be 0-65535.")

    def test_privileged_start_raises(self):
        holder = held_port()
        self.addCleanup(holder.close)
        svc = EndpointListener(reactor, "tcp:%d:interface=127.0.0.1" % holder.getsockname()[1],
                               Counting())
        self.assertRaises(CannotListen, svc.privilegedStartService)


class EndpointListenerTests(unittest.TestCase):
    """Any endpoint string; the port is taken once, by take_port() or on start."""

    def setUp(self):
        self.port = free_port()
        self.factory = Counting()
        self.svc = EndpointListener(reactor, "tcp:%d:interface=127.0.0.1" % self.port,
                                    self.factory)

    def test_take_port_then_start(self):
        self.svc.take_port()
        self.assertEqual(connect_error(self.port), 0)
        # twistd's start after makeService took the port: the port is kept, not taken twice.
        self.svc.privilegedStartService()
        self.svc.startService()
        self.assertEqual(connect_error(self.port), 0)
        return self.svc.stopService().addCallback(
            lambda _: self.assertEqual(connect_error(self.port), errno.ECONNREFUSED))

    def test_start_alone_listens(self):
        self.svc.startService()
        self.assertEqual(connect_error(self.port), 0)
        return self.svc.stopService()
