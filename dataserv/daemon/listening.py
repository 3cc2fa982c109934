"""The daemon's listeners: any endpoint string, or SO_REUSEPORT for scale-out.

Both take their port in privilegedStartService, before any other part of the
daemon starts, and raise CannotListen there when the operator's --listen cannot
be served (port in use, out of range, no permission).

With SO_REUSEPORT each process binds its own socket to the same address and the
kernel spreads new connections between them. Only
``tcp:PORT[:interface=HOST][:backlog=N]`` endpoint strings are supported this way.
"""

from __future__ import annotations

import socket
from typing import Any, List

from twisted.application import service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IReactorCore
from twisted.logger import Logger
from twisted.python.failure import Failure


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


class CannotListen(Exception):
    """The --listen address cannot be listened on; the message says why, in one line."""

    def __init__(self, listen: str, error: BaseException) -> None:
        if isinstance(error, CannotListenError) and error.socketError is not None:
            error = error.socketError
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        super().__init__("--listen %s: cannot listen (%s)" % (listen, reason))


class EndpointListener(service.Service):
    """Listens on a Twisted endpoint string; ``port`` is the listening port.

    Unlike StreamServerEndpointService, a failure to listen is raised as
    CannotListen, from take_port() or privilegedStartService, rather than logged
    once the reactor runs.
    """

    def __init__(self, reactor: IReactorCore, listen: str, factory: IProtocolFactory,
                 backlog: int = 0) -> None:
        self.listen = listen  # as the operator wrote it, for messages
        self.endpoint = serverFromString(
            reactor, with_backlog(listen, backlog) if backlog else listen)
        self.factory = factory
        self.port: IListeningPort | None = None

    def privilegedStartService(self) -> None:  # noqa: N802 (Twisted's name)
        super().privilegedStartService()
        self.take_port()

    def take_port(self) -> None:
        """Listen now, unless already listening; raises CannotListen saying why not."""
        if self.port is not None:
            return
        outcome: List[Any] = []
        self.endpoint.listen(self.factory).addBoth(outcome.append)
        # Stream endpoints listen at once; a later result would be too late to refuse.
        if not outcome:
            raise CannotListen(self.listen, RuntimeError("the endpoint did not listen at once"))
        if isinstance(outcome[0], Failure):
            raise CannotListen(self.listen, outcome[0].value)  # type: ignore[arg-type]
        self.port = outcome[0]

    def startService(self) -> None:  # noqa: N802
        self.take_port()  # when started without the privileged step
        super().startService()

    def stopService(self) -> defer.Deferred | None:  # noqa: N802
        super().stopService()
        if self.port is not None:
            port: Any = self.port  # zope interfaces read as classes to mypy
            self.port = None
            return defer.maybeDeferred(port.stopListening)
        return None


def parse_tcp(listen: Any) -> Any:
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
        return host, int(port), int(backlog), family  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ReusePortError("--reuse-port needs a numeric port in %r" % (listen,))


class ReusePortService(service.Service):
    """Listens on the address of ``listen`` with SO_REUSEPORT set.

    The socket is bound by take_port() or when the service starts (while the daemon
    may still hold the privileges a low port needs) but listens only once
    ``when_ready()`` fires.
    Until a socket listens the kernel gives it no connections, so a daemon joining
    others on the port takes no farmer's request before it can answer it.
    """

    log = Logger()

    def __init__(self, reactor: Any, listen: Any, factory: Any, when_ready: Any = None,
                 backlog: Any = 0) -> None:
        self.reactor = reactor
        self.listen = listen  # as the operator wrote it, for messages
        self.address = parse_tcp(with_backlog(listen, backlog) if backlog else listen)
        self.factory = factory
        self._when_ready = when_ready or (lambda: defer.succeed(None))
        self._socket: Any = None
        self._waiting: Any = None
        self.port = None

    def privilegedStartService(self) -> None:  # noqa: N802 (Twisted's name)
        self.take_port()
        super().privilegedStartService()

    def take_port(self) -> None:
        """Bind now, unless already bound; raises CannotListen saying why not."""
        if self._socket is not None or self.port is not None:
            return
        host, port, _, family = self.address
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
        except (OSError, OverflowError) as e:
            sock.close()
            raise CannotListen(self.listen, e)
        except BaseException:
            sock.close()
            raise
        self._socket = sock

    def startService(self) -> None:  # noqa: N802
        self.take_port()  # when started without the privileged step
        super().startService()
        host, port, _, _ = self.address
        self.log.info("bound {host}:{port} with SO_REUSEPORT; listening once the database "
                      "is ready and the first summary is built", host=host, port=port)
        self._waiting = self._when_ready()
        self._waiting.addCallback(self._listen)
        self._waiting.addErrback(self._not_listening)

    def _listen(self, _: Any) -> None:
        host, port, backlog, family = self.address
        sock, self._socket = self._socket, None
        try:
            sock.listen(backlog)
            sock.setblocking(False)
            self.port = self.reactor.adoptStreamPort(sock.fileno(), family, self.factory)
        finally:
            sock.close()  # the reactor holds its own duplicate of the descriptor
        self.log.info("listening on {host}:{port} with SO_REUSEPORT", host=host, port=port)

    def _not_listening(self, failure: Any) -> None:
        if failure.check(defer.CancelledError) is None:
            self.log.failure("not listening", failure)

    def stopService(self) -> Any:  # noqa: N802
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
