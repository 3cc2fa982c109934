"""The daemon's service tree: embedded PostgreSQL, database pool, summariser, HTTP."""

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.endpoints import serverFromString
from twisted.internet import task, threads
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from twisted.web import http, server

from dataserv.daemon import memory, process
from dataserv.web.api import API
from dataserv.identity.auth import Verifier
from dataserv.storage.database import Database
from dataserv.storage.embedded import EmbeddedPostgres
from dataserv.registry.farmers import Farmers
from dataserv.daemon.listening import ReusePortService
from dataserv.web.metrics import RequestCounter
from dataserv.web.snapshot import SnapshotRenderer
from dataserv.storage.store import FarmerStore
from dataserv.registry.summary import Summariser
from dataserv.proofs.rounds import ChallengeRounds
from dataserv.proofs.rules import Proofs
from dataserv.storage.proofs_store import ProofStore

log = Logger()


class _Channel(http.HTTPChannel):
    """An HTTPChannel that answers an over-long request line or header.

    Twisted drops the connection without a word when a line is longer than
    MAX_LENGTH, and answers too many header bytes with a 400 followed by a close
    that can reset the connection before the client reads it. Here the answer is
    followed by a half-close and the rest of the request is discarded, so the
    client gets to read the status line.
    """

    def lineLengthExceeded(self, line):  # noqa: N802 (Twisted's name)
        if self._receivedHeaderSize == 0:  # still in this request's first line
            self._refuse(b"414 URI Too Long")
        else:
            self._refuse(b"431 Request Header Fields Too Large")

    def _respondToBadRequestAndDisconnect(self):  # noqa: N802 (Twisted's name)
        self._refuse(b"400 Bad Request")

    def _refuse(self, status):
        # Nothing more of this connection is parsed: no request can start after this.
        self.dataReceived = self.lineReceived = self.rawDataReceived = lambda data: None
        self.transport.write(
            b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        # The channel's idle timeout still ends a client that never closes its side.
        half_close = getattr(self.transport, "loseWriteConnection", None)
        (half_close or self.transport.loseConnection)()


class Site(server.Site):
    """A Site whose access log is a plain file with a 64 KiB buffer, or nothing.

    Without --access-log nothing is logged per request: sending every request through
    the twistd log cost about 30 % of throughput when measured. The file is never
    rotated by the daemon (use logrotate with copytruncate).
    """

    noisy = False
    protocol = _Channel

    def __init__(self, resource, requests=None, **kwargs):
        super().__init__(resource, **kwargs)
        self.requests = requests if requests is not None else RequestCounter()

    def _openLogFile(self, path):  # noqa: N802 (Twisted's name)
        return open(path, "a", buffering=1 << 16, newline="\n")

    def log(self, request):
        self.requests.count(request)
        if self.logPath:
            super().log(request)


def summariser_hooks(reactor):
    """A Summariser's hooks on a real reactor, as the daemon uses them: a reactor
    turn between slices, the reactor's thread pool for zlib, and freed heap handed
    back to the system after each pass."""
    return {
        "pause": lambda: task.deferLater(reactor, 0, lambda: None),
        "in_thread": lambda f, *args: threads.deferToThreadPool(
            reactor, reactor.getThreadPool(), f, *args),
        "after_pass": memory.release,
    }


def start_warnings(settings):
    """What the daemon warns about on every start: switches that are for testing only."""
    warnings = []
    if settings.skip_authentication:
        warnings.append("--skip-authentication is on: requests are NOT verified. "
                        "Never use this in production.")
    if settings.no_limits:
        warnings.append("--no-limits is on: no per-IP, per-network or per-farmer limit "
                        "applies and heights are credited as claimed. Testing and "
                        "benchmarks only; never use this in production.")
    return warnings


class _Warning(service.Service):
    def __init__(self, message):
        self.message = message

    def startService(self):  # noqa: N802
        super().startService()
        log.warn(self.message)


class _PoolService(service.Service):
    """Starts and stops a thread pool with the daemon."""

    def __init__(self, pool):
        self.pool = pool

    def startService(self):  # noqa: N802
        super().startService()
        self.pool.start()

    def stopService(self):  # noqa: N802
        super().stopService()
        self.pool.stop()


class Dataserv(service.MultiService):
    """The whole daemon; its parts are attributes so tests and tools can reach them."""

    def startService(self):  # noqa: N802
        process.tune()
        super().startService()

    def __init__(self, settings, reactor, embedded=None):
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
        self.database = Database(reactor, dsn, pool_size=settings.pool_size)
        self.database.setServiceParent(self)
        self.store = FarmerStore(self.database, reactor)
        self.verifier = Verifier(settings.address, settings.auth_timeout)
        self.farmers = Farmers(self.store, self.verifier, settings)
        self.summariser = Summariser(
            self.store, settings, reactor, SnapshotRenderer(settings),
            when_ready=self.database.when_ready, **summariser_hooks(reactor))
        self.summariser.setServiceParent(self)
        self.proof_store = ProofStore(self.database, reactor, timings=self.store.timings)
        # Proofs are checked in a pool of their own, at a lowered priority (see
        # proofs/verification.py): chiapos releases the GIL, so two threads use both cores.
        self.verify_pool = ThreadPool(minthreads=0, maxthreads=2, name="proofs")
        self.proofs = Proofs(
            self.proof_store, self.farmers, settings,
            in_thread=lambda f, *args: threads.deferToThreadPool(
                reactor, self.verify_pool, f, *args))
        _PoolService(self.verify_pool).setServiceParent(self)
        self.rounds = ChallengeRounds(self.proof_store, settings, reactor,
                                      when_ready=self.database.when_ready)
        self.rounds.setServiceParent(self)
        self.requests = RequestCounter()
        self.api = API(self.farmers, self.summariser, self.database, settings, reactor,
                       requests=self.requests, proofs=self.proofs)
        self.site = Site(self.api.resource(), self.requests,
                         logPath=settings.access_log or None, reactor=reactor)
        self.site.displayTracebacks = False
        if settings.reuse_port:
            self.http = ReusePortService(reactor, settings.listen, self.site,
                                         when_ready=self.summariser.when_summarised)
        else:
            self.http = StreamServerEndpointService(
                serverFromString(reactor, settings.listen), self.site)
            self.http._raiseSynchronously = True
        self.http.setServiceParent(self)

