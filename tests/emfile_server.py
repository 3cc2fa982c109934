"""A Site from the daemon under a low descriptor limit, for tests/test_limits.py.

Run as ``python -m tests.emfile_server LIMIT``: prints the port it listens on, then
serves ``hello`` on every path until killed.
"""

import resource
import sys

from twisted.internet import endpoints, reactor  # an entry point: owns the reactor
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.web import resource as web_resource

from dataserv.daemon.service import ConnectionLimits, Site


class Hello(web_resource.Resource):
    """hello."""

    isLeaf = True

    def render_GET(self, request):  # noqa: N802 (Twisted's name)
        return b"hello"


def main(limit: int) -> None:
    """Serve under at most ``limit`` open descriptors."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)],
                                     redirectStandardIO=False)
    site = Site(Hello(), limits=ConnectionLimits(idle_timeout=60), reactor=reactor)
    endpoint = endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1:backlog=1024")
    endpoint.listen(site).addCallback(
        lambda port: print(port.getHost().port, flush=True))
    reactor.run()


if __name__ == "__main__":
    main(int(sys.argv[1]))
