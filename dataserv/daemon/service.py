"""The daemon's service tree: embedded PostgreSQL, database pool, summariser, HTTP."""

import atexit
import io
import ipaddress
import math
import os
import signal
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Optional

from twisted.application import service
from twisted.internet import defer, task, threads
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web import http, server

from dataserv.daemon import memory, process
from dataserv.daemon.config import DEFAULT_ADDRESS, Settings
from dataserv.daemon.logs import json_access_formatter
from dataserv.web.api import API, SERVER
from dataserv.web.limits import client_key
from dataserv.identity.auth import Verifier
from dataserv.storage.database import Database
from dataserv.storage.embedded import EmbeddedPostgres
from dataserv.registry.farmers import Farmers
from dataserv.registry.peers import PeerWatch
from dataserv.daemon.listening import EndpointListener, ReusePortService
from dataserv.web.metrics import Metrics, RequestStats
from dataserv.web.snapshot import SnapshotRenderer
from dataserv.storage.store import FarmerStore
from dataserv.registry.summary import Summariser
from dataserv.proofs.rounds import ChallengeRounds
from dataserv.proofs.rules import Proofs
from dataserv.proofs.workers import VerificationProcesses
from dataserv.storage.proofs_store import ProofStore

log = Logger()


# How long a refused client has to read its answer before the connection is cut.
REFUSED_GRACE = 2.0
# What a connection is doing, for its one timer (see _Channel).
_IDLE, _RECEIVING, _SENDING = "idle", "receiving", "sending"


@dataclass(frozen=True)
class ConnectionLimits:
    """What one connection may do; a zero turns a limit off."""

    max_body: int = 0            # bytes of request body
    head_timeout: float = 0      # seconds from a request's first byte to its last
    idle_timeout: float = 0      # seconds between requests
    send_timeout: float = 0      # seconds for the client to take a whole response
    per_ip: int = 0              # open connections per client IP (IPv6: per /64)

    @classmethod
    def from_settings(cls, settings: Settings) -> "ConnectionLimits":
        """The limits a daemon with these settings applies."""
        return cls(max_body=settings.max_body, head_timeout=settings.head_timeout,
                   idle_timeout=settings.idle_timeout, send_timeout=settings.send_timeout,
                   per_ip=0 if settings.no_limits else settings.max_connections_per_ip)


def _unsent(transport: Any) -> int:
    """Bytes written to a TCP transport that the client has not taken yet."""
    pending = len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0)
    return pending + getattr(transport, "_tempDataLen", 0)


class _Request(server.Request):
    """A Request whose body is never spooled to disk (the channel caps its size)."""

    channel: Any

    def gotLength(self, length: Any) -> None:  # noqa: N802 (Twisted's name)
        if self.channel.limits.max_body:
            self.content = io.BytesIO()
        else:
            super().gotLength(length)

    def handleContentChunk(self, data: Any) -> None:  # noqa: N802 (Twisted's name)
        if self.channel.body_received(len(data)):
            super().handleContentChunk(data)


class _Channel(http.HTTPChannel):
    """An HTTPChannel with deadlines and size limits, that answers what it refuses.

    Twisted drops the connection without a word when a line is longer than
    MAX_LENGTH, and answers too many header bytes with a 400 followed by a close
    that can reset the connection before the client reads it. Here the answer is
    followed by a half-close and the rest of the request is discarded, so the
    client gets to read the status line.

    Twisted's own timeout is an idle timeout restarted by every byte received, so a
    client that sends one byte at a time is never dropped; here the whole request
    (head and body) must arrive within ``head_timeout`` of its first byte. While a
    response is written Twisted has no timeout at all: a client that reads nothing
    keeps the response (and the snapshot it belongs to) alive, so each response
    must be taken within ``send_timeout``. Between requests (and before the first)
    a connection may stay idle ``idle_timeout`` seconds, counted from its last byte
    received or its last response; this replaces Twisted's idle timer.

    All three deadlines share one timer per connection. A phase change only notes
    its deadline; the timer is remade only for a deadline sooner than the one it is
    set for, and when it fires it looks at the phase and waits on if the deadline
    has moved. A connection that carries one request (as the field clients' do)
    makes one timer in all instead of a handful made and cancelled.
    """

    transport: Any
    _networkProducer: Any
    site: Any

    limits = ConnectionLimits()
    limit_key = None
    # The connection's state starts as these class defaults (an instance sets its own
    # once one changes): a connection costs no __init__ of its own.
    _refused = False
    _receiving = False    # from a request's first byte until its last
    _body_bytes = 0
    _phase = _IDLE
    _due = math.inf       # when the current phase's deadline passes
    _send_due = math.inf  # when the last response must have been taken
    _timer: Any = None
    _timer_at = math.inf
    _grace_call: Any = None
    # "Now" while dataReceived runs: the phases a request goes through within one
    # delivery of bytes (its first byte, its end, often its answer) share one
    # reading of the clock.
    _turn: Optional[float] = None

    def _now(self) -> float:
        now = self._turn
        if now is None:
            now = self.site.reactor.seconds()
        return now

    def _enter(self, phase: str, seconds: float, now: float) -> None:
        """Start a phase that goes wrong ``seconds`` from now (0: never)."""
        self._phase = phase
        self._due = now + seconds if seconds else math.inf
        if self._due < self._timer_at:
            self._arm(self._due, now)

    def _arm(self, at: float, now: float) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._timer_at = at
        if at != math.inf:
            self._timer = self.callLater(max(0.0, at - now), self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        now = self._now()
        if self._send_due <= now:
            self._send_due = math.inf
            if _unsent(self.transport):
                self._send_expired()
                return
        if now < self._due:
            self._arm(min(self._due, self._send_due), now)
        elif self._phase == _RECEIVING:
            self._request_expired()
        elif self._phase == _SENDING:
            if self._handlingRequest or _unsent(self.transport):
                self._send_expired()
        else:
            self.timeoutConnection()  # Twisted's idle close (and abort if ignored)

    def connectionMade(self) -> None:  # noqa: N802 (Twisted's name)
        super().connectionMade()
        now = self._now()
        self._phase = _IDLE
        self._due = now + self.limits.idle_timeout if self.limits.idle_timeout else math.inf
        # Nearly every connection starts a request at once: a first timer no later
        # than that request's deadline spares remaking it then.
        head = now + self.limits.head_timeout if self.limits.head_timeout else math.inf
        self._arm(min(self._due, head), now)

    # -- the request ---------------------------------------------------------

    def dataReceived(self, data: Any) -> None:  # noqa: N802 (Twisted's name)
        outer = self._turn  # Twisted may deliver buffered bytes from within a delivery
        self._turn = now = self.site.reactor.seconds()
        try:
            if not self._receiving and not self._handlingRequest:
                self._receiving = True
                self._enter(_RECEIVING, self.limits.head_timeout or self.limits.idle_timeout,
                            now)
            elif self._receiving and not self.limits.head_timeout \
                    and self.limits.idle_timeout:
                # No request deadline: as Twisted's idle timer, each byte restarts it.
                self._due = now + self.limits.idle_timeout
            super().dataReceived(data)
        finally:
            self._turn = outer

    def _request_expired(self) -> None:
        if self._receiving and not self._refused:
            self._log.info("request not complete in {seconds} s: {peer}",
                           seconds=self.limits.head_timeout,
                           peer=str(self.transport.getPeer()))
            self._refuse(b"408 Request Timeout", b"Request timeout: the request is too slow.")

    def allHeadersReceived(self) -> None:  # noqa: N802 (Twisted's name)
        # The deadline runs on through the body (if any): a body sent one byte at a
        # time is the same attack as a head sent so.
        request = self.requests[-1]
        if self._version == b"HTTP/1.1" and not request.requestHeaders.hasHeader(b"Host"):
            self._refuse(b"400 Bad Request", b"Bad request: HTTP/1.1 needs a Host header.")
            return
        if self.limits.max_body and self.length is not None \
                and self.length > self.limits.max_body:
            self._refuse_body()
            return
        self._body_bytes = 0
        super().allHeadersReceived()

    def body_received(self, size: int) -> bool:
        """Count body bytes as they are decoded: False (and a 413) once over the cap."""
        if self._refused:
            return False
        self._body_bytes += size
        if self.limits.max_body and self._body_bytes > self.limits.max_body:
            self._refuse_body()
            return False
        return True

    def _refuse_body(self) -> None:
        self._refuse(b"413 Content Too Large",
                     b"Request body too large: at most %d bytes." % self.limits.max_body)

    def allContentReceived(self) -> None:  # noqa: N802 (Twisted's name)
        if self._refused:
            return
        self._receiving = False
        self._enter(_SENDING, self.limits.send_timeout, self._now())
        super().allContentReceived()

    # -- the response --------------------------------------------------------

    def requestDone(self, request: Any) -> None:  # noqa: N802 (Twisted's name)
        # Idle from now on, before Twisted resumes reading (which may start the next
        # request at once); the response must still be taken by its deadline.
        if self._phase == _SENDING:
            self._send_due = self._due
        self._enter(_IDLE, self.limits.idle_timeout, self._now())
        super().requestDone(request)

    def _send_expired(self) -> None:
        self._log.info("response not taken in {seconds} s: {peer}",
                       seconds=self.limits.send_timeout,
                       peer=str(self.transport.getPeer()))
        self.transport.abortConnection()

    # -- refusals ------------------------------------------------------------

    def lineLengthExceeded(self, line: Any) -> None:  # noqa: N802 (Twisted's name)
        if self._receivedHeaderSize == 0:  # still in this request's first line
            self._refuse(b"414 URI Too Long", b"Request line too long.")
        else:
            self._refuse(b"431 Request Header Fields Too Large", b"Request headers too large.")

    def _respondToBadRequestAndDisconnect(self) -> None:  # noqa: N802 (Twisted's name)
        self._refuse(b"400 Bad Request", b"Bad request.")

    def _refuse(self, status: Any, body: Any) -> None:
        if self._refused:
            return
        self._refused = True
        # Nothing more of this connection is parsed: no request can start after this.
        self.dataReceived = self.lineReceived = self.rawDataReceived = lambda data: None  # type: ignore[method-assign]
        self.transport.write(
            b"HTTP/1.1 " + status + b"\r\nServer: " + SERVER
            + b"\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d"
            b"\r\nConnection: close\r\n\r\n" % len(body) + body)
        # Read no more: a client sending a 500 MB body is held back by TCP instead of
        # having the daemon read and discard it until the connection is cut.
        self._networkProducer.pauseProducing()
        half_close = getattr(self.transport, "loseWriteConnection", None)
        (half_close or self.transport.loseConnection)()
        # A client that keeps sending (a 500 MB body) or never closes is cut off.
        self._grace_call = self.callLater(REFUSED_GRACE, self.transport.abortConnection)

    def connectionLost(self, reason: Any) -> None:  # type: ignore[override]  # noqa: N802
        timer = self._timer
        if timer is not None:
            self._timer = None
            if timer.active():
                timer.cancel()
        self._timer_at = -math.inf  # nothing arms it again
        if self._grace_call is not None and self._grace_call.active():
            self._grace_call.cancel()
        if self.limit_key is not None and self.factory is not None:
            self.factory.connection_closed(self)
        super().connectionLost(reason)


class _TimedRequest(_Request):
    """A Request that notes when its first line arrived, for the latency metrics."""

    def __init__(self, channel: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(channel, *args, **kwargs)
        self.started: float = channel._now()


class Site(server.Site):
    """The daemon's Site: connection limits, and an access log that is a plain file
    with a 64 KiB buffer, or nothing.

    Without --access-log nothing is logged per request: sending every request through
    the twistd log cost about 30 % of throughput when measured. The buffer is written
    out every FLUSH_INTERVAL seconds, so `tail -f` keeps up. The daemon never rotates
    the file; reopen_access_log() (SIGHUP) lets logrotate move it away.
    """

    noisy = False
    protocol = _Channel  # type: ignore[assignment]  # Twisted types it as a factory of the base class
    requestFactory = _TimedRequest
    FLUSH_INTERVAL = 1.0  # seconds between writes of the access log's buffer


    def __init__(self, resource: Any, requests: Any = None, limits: Any = None,
                 trusted_proxies: Any = (), **kwargs: Any) -> None:
        self.limits = limits or ConnectionLimits()
        # The channels keep the idle timeout themselves, with their other deadlines.
        kwargs["timeout"] = None
        super().__init__(resource, **kwargs)
        self.requests = requests if requests is not None else RequestStats()
        self._flushing: Any = None
        self._flush_failed = False
        self.trusted_proxies = tuple(trusted_proxies)
        self.connections: Any = Counter()  # open connections by client key

    def buildProtocol(self, addr: Any) -> Any:  # noqa: N802 (Twisted's name)
        key = self._limit_key(addr) if self.limits.per_ip else None
        if key is not None and self.connections[key] >= self.limits.per_ip:
            return None  # the port closes the socket
        channel = super().buildProtocol(addr)
        channel.limits = self.limits
        if key is not None:
            channel.limit_key = key
            self.connections[key] += 1
        return channel

    def _limit_key(self, addr: Any) -> Any:
        host = getattr(addr, "host", None)
        if not self.limits.per_ip or host is None:
            return None
        if self.trusted_proxies:
            try:
                ip = ipaddress.ip_address(host)
            except ValueError:
                return None
            if any(ip in network for network in self.trusted_proxies):
                return None  # a proxy speaks for many clients
        return client_key(host)

    def connection_closed(self, channel: Any) -> None:
        """A channel built here has lost its connection."""
        key = channel.limit_key
        if key is not None:
            channel.limit_key = None
            self.connections[key] -= 1
            if self.connections[key] <= 0:
                del self.connections[key]

    def _openLogFile(self, path: Any) -> Any:  # noqa: N802 (Twisted's name)
        return open(path, "a", buffering=1 << 16, newline="\n")

    def _access_log(self) -> Any:
        """The open access log file, or None (no --access-log, or not started)."""
        return getattr(self, "logFile", None) if self.logPath else None

    def startFactory(self) -> None:  # noqa: N802 (Twisted's name)
        super().startFactory()
        if self.logPath:
            self._flushing = task.LoopingCall(self.flush_access_log)
            self._flushing.clock = self.reactor
            self._flushing.start(self.FLUSH_INTERVAL, now=False)

    def stopFactory(self) -> None:  # noqa: N802 (Twisted's name)
        if self._flushing is not None:
            if self._flushing.running:
                self._flushing.stop()
            self._flushing = None
        super().stopFactory()  # closes the file, writing out what is buffered

    def flush_access_log(self) -> None:
        """Write the buffered access log lines to the file."""
        log_file = self._access_log()
        if log_file is None:
            return
        try:
            log_file.flush()
        except OSError as e:
            if not self._flush_failed:  # once per failure, not once a second
                log.error("cannot write the access log {path}: {error}",
                          path=self.logPath, error=e.strerror or str(e))
            self._flush_failed = True
        else:
            self._flush_failed = False

    def reopen_access_log(self) -> None:
        """Close the access log and open its path afresh, e.g. after logrotate moved it.

        If the path cannot be opened, the daemon keeps writing to the old file.
        """
        old = self._access_log()
        if old is None:
            return
        try:
            new = self._openLogFile(self.logPath)
        except OSError as e:
            log.error("cannot reopen the access log {path}: {error}; still writing to the "
                      "file that was open", path=self.logPath, error=e.strerror or str(e))
            return
        self.logFile = new
        try:
            old.close()
        except OSError as e:
            log.error("lines of the old access log were lost: {error}",
                      error=e.strerror or str(e))
        log.info("access log {path} reopened", path=self.logPath)

    def log(self, request: Any) -> None:
        started = getattr(request, "started", None)
        clock: Any = self.reactor
        self.requests.count(
            request, None if started is None else clock.seconds() - started)
        if self.logPath:
            super().log(request)


def access_log_formatter(settings: Settings, clock: IReactorTime) -> Optional[Callable]:
    """The access log's line format: None for Twisted's combined format."""
    return json_access_formatter(clock) if settings.access_log_format == "json" else None


def io_turn(reactor: Any) -> Any:
    """A Deferred that fires once the reactor has polled for I/O (and handled what
    was ready), even when called from an I/O handler: a call made there for "now"
    runs before the next poll, so this takes two. An answer request waits for one
    before each of its statements (see proofs/rules.py, Proofs)."""
    return task.deferLater(reactor, 0, task.deferLater, reactor, 0)


def summariser_hooks(reactor: Any) -> Any:
    """A Summariser's hooks on a real reactor, as the daemon uses them: a reactor
    turn between slices, the reactor's thread pool for zlib, and freed heap handed
    back to the system after each pass."""
    return {
        "pause": lambda: task.deferLater(reactor, 0, lambda: None),
        "in_thread": lambda f, *args: threads.deferToThreadPool(
            reactor, reactor.getThreadPool(), f, *args),
        "after_pass": memory.release,
    }


def start_warnings(settings: Any) -> Any:
    """What the daemon warns about on every start: switches that are for testing only."""
    warnings = []
    if settings.skip_authentication:
        warnings.append("--skip-authentication is on: requests are NOT verified. "
                        "Never use this in production.")
    if settings.no_limits:
        warnings.append("--no-limits is on: no per-IP, per-network or per-farmer limit "
                        "applies and heights are credited as claimed. Testing and "
                        "benchmarks only; never use this in production.")
    if settings.address == DEFAULT_ADDRESS:
        warnings.append("--address is the default %s: headers signed for it are valid on "
                        "every server that keeps the default. Set this server's own "
                        "address." % (DEFAULT_ADDRESS,))
    return warnings


class _Warning(service.Service):
    def __init__(self, message: Any) -> None:
        self.message = message

    def startService(self) -> None:  # noqa: N802
        super().startService()
        log.warn(self.message)


def _exit(status: Any) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


class Dataserv(service.MultiService):
    """The whole daemon; its parts are attributes so tests and tools can reach them."""

    failed = None  # the one line that stopped start-up, if something did

    def fail(self, message: str) -> None:
        """Stop because start-up cannot succeed: one line on stderr, exit status 1.

        twistd exits with 0 whenever its reactor stops, so the status is set by an
        exit handler that runs once the reactor has stopped every service (the
        embedded PostgreSQL included) and twistd has removed its pid file.
        """
        if self.failed is not None:
            return
        self.failed = message
        log.critical("start-up failed: {message}", message=message)
        # The original stderr: twistd sends sys.stderr to the log.
        os.write(2, ("dataserv: error: %s\n" % (message,)).encode("utf-8", "replace"))
        atexit.register(_exit, 1)
        # Start-up may still be under way (a malformed DSN is found at once): stop
        # once the reactor runs.
        self.reactor.callWhenRunning(self.reactor.stop)

    _previous_sighup: Any = None  # (handler,) while ours is installed

    def take_port(self) -> None:
        """Listen (or bind, with --reuse-port) now; raises CannotListen saying why not.

        makeService calls this, before twistd writes its pid file, redirects stderr
        into its log or daemonises: a port the daemon cannot have is then one line on
        the operator's terminal. Starting the service later keeps the port.
        """
        self.http.take_port()

    def startService(self) -> None:  # noqa: N802
        process.tune()
        process.raise_descriptor_limit()
        if self.settings.access_log:
            # logrotate moves the file away and sends SIGHUP; the handler runs between
            # two bytecodes of the reactor thread, so it only schedules the reopen.
            self._previous_sighup = (signal.signal(signal.SIGHUP, self._sighup),)
        super().startService()

    def _sighup(self, signum: Any, frame: Any) -> None:
        self.reactor.callFromThread(self.site.reopen_access_log)

    def stopService(self) -> defer.Deferred:  # noqa: N802
        if self._previous_sighup is not None:
            (previous,), self._previous_sighup = self._previous_sighup, None
            # None: a handler set outside Python, which cannot be put back.
            signal.signal(signal.SIGHUP, signal.SIG_DFL if previous is None else previous)
        # The replay keys of the last moment's throttled pings, before the pool closes.
        drained = self.farmers.throttled_claims.drain()
        return drained.addCallback(lambda _: super(Dataserv, self).stopService())

    def __init__(self, settings: Any, reactor: Any, embedded: Any = None) -> None:
        super().__init__()
        self.settings = settings
        self.reactor = reactor
        for warning in start_warnings(settings):
            _Warning(warning).setServiceParent(self)
        if settings.database:
            dsn = settings.database
        else:
            self.embedded = embedded or EmbeddedPostgres.checked(reactor, settings.data_dir)
            self.embedded.setServiceParent(self)
            dsn = self.embedded.dsn
        self.database = Database(reactor, dsn, pool_size=settings.pool_size,
                                 timeout=settings.db_timeout, on_fatal=self.fail,
                                 setting="--database" if settings.database else "--data-dir")
        self.database.setServiceParent(self)
        self.store = FarmerStore(self.database, reactor)
        self.verifier = Verifier(settings.address, settings.auth_timeout)
        self.farmers = Farmers(self.store, self.verifier, settings, reactor)
        self.peers = PeerWatch(self.store, self.farmers, self.database.daemon_name, reactor,
                               when_ready=self.database.when_ready)
        self.peers.setServiceParent(self)
        self.summariser = Summariser(
            self.store, settings, reactor, SnapshotRenderer(settings),
            when_ready=self.database.when_ready, **summariser_hooks(reactor))
        self.summariser.setServiceParent(self)
        self.proof_store = ProofStore(self.database, reactor, timings=self.store.timings)
        # Proofs are checked in worker processes, at a lowered priority (see
        # proofs/workers.py); stopped after the web server, so answers in hand finish.
        self.verification = VerificationProcesses(reactor)
        self.verification.setServiceParent(self)
        self.metrics = Metrics()
        self.proofs = Proofs(self.proof_store, self.farmers, settings,
                             in_thread=self.verification.run, metrics=self.metrics,
                             pause=lambda: io_turn(reactor))
        self.rounds = ChallengeRounds(self.proof_store, settings, reactor,
                                      when_ready=self.database.when_ready)
        self.rounds.setServiceParent(self)
        self.metrics.watch_rounds(self.rounds)
        self.api = API(self.farmers, self.summariser, self.database, settings, reactor,
                       metrics=self.metrics, proofs=self.proofs)
        self.site = Site(self.api.resource(), self.metrics.requests,
                         limits=ConnectionLimits.from_settings(settings),
                         trusted_proxies=settings.trusted_proxies,
                         logPath=settings.access_log or None, reactor=reactor,
                         logFormatter=access_log_formatter(settings, reactor))
        self.site.displayTracebacks = False
        if settings.reuse_port:
            # Listening only once it answers, signed requests included.
            self.http: Any = ReusePortService(
                reactor, settings.listen, self.site,
                when_ready=lambda: self.summariser.when_summarised().addCallback(
                    lambda _: self.peers.when_open()),
                backlog=settings.backlog)
        else:
            self.http = EndpointListener(reactor, settings.listen, self.site,  # type: ignore[arg-type]
                                         backlog=settings.backlog)
        self.http.setServiceParent(self)

