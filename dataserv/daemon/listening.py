"""Listening with SO_REUSEPORT, so several daemons can share one port (scale-out).

Each process binds its own socket to the same address and the kernel spreads new
connections between them. Only ``tcp:PORT[:interface=HOST][:backlog=N]`` endpoint
strings are supported this way.
"""

import socket

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger


# Endpoint types whose parsers take a backlog= argument.
_BACKLOG_TYPES = ("tcp", "tcp6", "ssl", "unix")


def with_backlog(listen: str, backlog: int) -> str:
    """The endpoint string with backlog=N added, unless it sets one or cannot take one."""
    kind = listen.split(":", 1)[0]
    if kind not in _BACKLOG_TYPES or ":backlog=" in listen:
        return listen
    return "%s:backlog=%d" % (listen, backlog)


class ReusePortError(ValueError):
    """The listen string cannot be served with SO_REUSEPORT."""


def parse_tcp(listen):
    """(host, port, backlog, family) from a tcp/tcp6 endpoint string."""
    parts = listen.split(":")
    kind = parts[0]
    if kind not in ("tcp", "tcp6") or len(parts) < 2:
        raise ReusePortError("--reuse-port needs a tcp:PORT endpoint, not %r" % (listen,))
    family = socket.AF_INET6 if kind == "tcp6" else socket.AF_INET
    host, port, backlog = ("::" if kind == "tcp6" else "0.0.0.0"), None, 50
    for part in parts[1:]:
        key, _, value = part.partition("=")
        if not value and port is None:
            port = key
        elif key == "port":
            port = value
        elif key == "interface":
            host = value
        elif key == "backlog":
            backlog = value
        else:
            raise ReusePortError("--reuse-port: unsupported endpoint option %r" % (part,))
    try:
        return host, int(port), int(backlog), family
    except (TypeError, ValueError):
        raise ReusePortError("--reuse-port needs a numeric port in %r" % (listen,))


class ReusePortService(service.Service):
    """Listens on the address of ``listen`` with SO_REUSEPORT set.

    The socket is bound when the service starts (while the daemon may still hold
    the privileges a low port needs) but listens only once ``when_ready()`` fires.
    Until a socket listens the kernel gives it no connections, so a daemon joining
    others on the port takes no farmer's request before it can answer it.
    """

    log = Logger()

    def __init__(self, reactor, listen, factory, when_ready=None):
        self.reactor = reactor
        self.address = parse_tcp(listen)
        self.factory = factory
        self._when_ready = when_ready or (lambda: defer.succeed(None))
        self._socket = None
        self._waiting = None
        self.port = None

    def privilegedStartService(self):  # noqa: N802 (Twisted's name)
        host, port, _, family = self.address
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
        except BaseException:
            sock.close()
            raise
        self._socket = sock
        super().privilegedStartService()

    def startService(self):  # noqa: N802
        if self._socket is None:  # started without the privileged step
            self.privilegedStartService()
        super().startService()
        host, port, _, _ = self.address
        self.log.info("bound {host}:{port} with SO_REUSEPORT; listening once the database "
                      "is ready and the first summary is built", host=host, port=port)
        self._waiting = self._when_ready()
        self._waiting.addCallback(self._listen)
        self._waiting.addErrback(self._not_listening)

    def _listen(self, _):
        host, port, backlog, family = self.address
        sock, self._socket = self._socket, None
        try:
            sock.listen(backlog)
            sock.setblocking(False)
            self.port = self.reactor.adoptStreamPort(sock.fileno(), family, self.factory)
        finally:
            sock.close()  # the reactor holds its own duplicate of the descriptor
        self.log.info("listening on {host}:{port} with SO_REUSEPORT", host=host, port=port)

    def _not_listening(self, failure):
        if failure.check(defer.CancelledError) is None:
            self.log.failure("not listening", failure)

    def stopService(self):  # noqa: N802
        super().stopService()
        if self._waiting is not None and not self._waiting.called:
            self._waiting.cancel()
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None
