"""The driver's ceiling: a bare Klein route with a constant answer, in its own process.

Run as ``python -m benchmarks.ceiling PORT``. Every figure of the benchmark is also
reported as a ratio to what this serves on the same machine minutes apart.
"""

import sys

from klein import Klein
from twisted.internet import endpoints, reactor
from twisted.web import server


class Constant:
    """One route, one constant body."""

    app = Klein()

    @app.route("/", branch=True)
    def answer(self, request):
        """The same small body for every path."""
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        return b"Ping accepted."


def main(port):
    """Serve on 127.0.0.1:port until killed."""
    site = server.Site(Constant().app.resource())
    site.noisy = False
    site.log = lambda request: None
    endpoints.serverFromString(reactor, "tcp:%d:interface=127.0.0.1" % port).listen(site)
    reactor.run()


if __name__ == "__main__":
    if sys.argv[1:2] in (["-h"], ["--help"]) or len(sys.argv) != 2:
        print("usage: python -m benchmarks.ceiling PORT")
        sys.exit(0 if len(sys.argv) == 2 else 2)
    main(int(sys.argv[1]))
