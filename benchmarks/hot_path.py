"""CPU per throttled ping inside one process: ``python -m benchmarks.hot_path``.

The daemon's real Site, Klein API, rules and verifier (a fake store: every ping is
throttled in memory, as in the benchmark's scenario c.) serve raw HTTP requests
through Twisted's HTTP parser over an in-memory transport, one connection each as
the load drivers do. Variants differ only in what is done per finished request:
nothing at all, the counter the daemon had before prometheus_client, today's
counters and latency histogram, and the access log in either format. CPU time
(process_time) of many small interleaved batches; the fastest batch of each variant
is its figure (as timeit does: a busy machine only ever adds time), the median is
shown beside it. Throughput runs on a shared machine are too noisy to show a few
per cent; this is not.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import Counter

from twisted.internet import task
from twisted.internet.testing import StringTransport
from twisted.web import server

from benchmarks import presign
from dataserv.daemon.config import Settings
from dataserv.daemon.service import Site, access_log_formatter
from dataserv.identity.auth import Verifier
from dataserv.registry.farmers import Farmers
from dataserv.storage.store import Timings
from dataserv.web.api import API
from dataserv.web.metrics import Metrics, route_of


class _Store:
    """Enough of FarmerStore for throttled pings that claim nothing (which never
    reach it: see ``main``'s settings)."""

    def __init__(self, clock):
        self.timings = Timings(clock)


class _OldCounter:
    """What the daemon counted per request before prometheus_client (route, code)."""

    def __init__(self):
        self.counts = Counter()

    def count(self, request, seconds=None):
        self.counts[(route_of(request.uri), request.code)] += 1


class _BareSite(Site):
    """No accounting at all per request: the floor."""

    requestFactory = server.Request

    def log(self, request):
        pass


def build(variant, tmp, clock, field, settings):
    """A Site for ``variant`` whose farmers are all pinged recently (throttled)."""
    metrics = Metrics()
    farmers = Farmers(_Store(clock), Verifier(settings.address, settings.auth_timeout),
                      settings, clock)
    for farmer in field:
        farmers.recent.wrote(farmer.address, clock.seconds())
    api = API(farmers, None, None, settings, clock, metrics=metrics)
    if variant == "nothing per request":
        return _BareSite(api.resource(), logPath=None, reactor=clock)
    if variant == "old counter (before)":
        site = Site(api.resource(), _OldCounter(), logPath=None, reactor=clock)
        site.requestFactory = server.Request
        return site
    log_path, log_format = None, "combined"
    if variant.startswith("metrics + "):
        log_format = variant.split()[2]
        log_path = os.path.join(tmp, "access-%s.log" % log_format)
    chosen = Settings(access_log=log_path or "", access_log_format=log_format)
    site = Site(api.resource(), metrics.requests, logPath=log_path, reactor=clock,
                logFormatter=access_log_formatter(chosen, clock))
    site.startFactory()
    return site


VARIANTS = ("nothing per request", "old counter (before)", "metrics (now)",
            "metrics + combined access log", "metrics + json access log")


def serve(site, requests):
    """Each raw request on a connection of its own; the answers' first bytes."""
    for raw in requests:
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(raw)
        if not transport.value().startswith(b"HTTP/1.1 200"):
            raise RuntimeError(transport.value()[:200])
        channel.connectionLost(None)


def main(argv=None):
    """Print the CPU per request of each variant."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="per batch")
    parser.add_argument("--batches", type=int, default=60, help="per variant, interleaved")
    args = parser.parse_args(argv)
    # Each signed ping is claimed in the database (replay refusal), throttled or
    # not; what is measured here is the cost of the accounting per request, so the
    # pings are taken unsigned and stay in this process.
    settings = Settings(skip_authentication=True)
    field = presign.farmers(args.requests)
    now = time.time()
    clock = task.Clock()
    clock.advance(now)
    import email.utils

    date = email.utils.formatdate(now, usegmt=True)
    requests = [presign.signed_get("127.0.0.1:5000", "/api/ping/" + f.address, f,
                                   settings.address, date) for f in field]
    with tempfile.TemporaryDirectory(prefix="dataserv-hotpath-") as tmp:
        sites = {variant: build(variant, tmp, clock, field, settings)
                 for variant in VARIANTS}
        for site in sites.values():
            serve(site, requests)  # warm-up: every signature verified once, then cached
        cpu = {variant: [] for variant in VARIANTS}
        for _ in range(args.batches):
            for variant, site in sites.items():
                started = time.process_time()
                serve(site, requests)
                cpu[variant].append((time.process_time() - started) / len(requests) * 1e6)
        before = min(cpu["old counter (before)"])
        print("%-32s %12s %10s %12s" % ("variant", "CPU us/ping", "vs before",
                                         "median us"))
        for variant in VARIANTS:
            best = min(cpu[variant])
            print("%-32s %12.1f %+9.1f%% %12.1f" % (
                variant, best, (best / before - 1) * 100, statistics.median(cpu[variant])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
