"""The daemon's CPU per answered ping, inside one process: ``python -m benchmarks.ping_cpu``.

The daemon's real Site, channel, Klein API, rules, verifier, replay claims, group
commit and store serve pre-signed raw pings through Twisted's HTTP parser over an
in-memory transport (one connection each, ``Connection: close``, as the load
drivers send them). Only PostgreSQL is left out: the store's queries go to a fake
database that answers at once, as record_pings would (every claim accepted, every
contact written). So what is counted is the daemon's own work per answer, the
figure ``benchmarks.ab`` reports as ``daemon_us``, without the system calls.

``--mode throttled``: every farmer was pinged a moment ago, the daemon is alone on
its database, so each ping is verified, claimed in memory and answered, and its
replay key written a moment later (write-behind). ``--mode durable`` (``--max-ping
0``): every ping is a contact written by the group commit before its answer.
Every request is signed afresh (its own Date), so each costs one public key
recovery, as in the benchmark.

``--source DIR`` runs the dataserv package found in DIR instead (e.g. an older
commit unpacked with ``git archive``; its layout before the package was regrouped
is known too), so that two versions are measured by the same harness.

Figures: CPU time (process_time) of interleaved batches, the fastest batch as the
figure (a busy machine only adds time); ``--profile FILE`` writes a cProfile (pstats);
``--bytecodes`` counts the Python bytecodes each function runs per ping (exact and
repeatable, for a per-function comparison); ``--callgrind`` counts instructions
under valgrind (with and without the N measured requests, the difference divided
by N: start-up, signing and warm-up cancel out), which a shared machine does not disturb.
"""

import argparse
import email.utils
import gc
import importlib
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter

# Before anything imports dataserv: --source decides which one.
if "--source" in sys.argv:
    sys.path.insert(0, os.path.abspath(sys.argv[sys.argv.index("--source") + 1]))

from twisted.internet import defer, task  # noqa: E402
from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402

NOW = 1.8e9  # a fixed "now" (2027-01-15): every run signs and serves the same bytes
PEER = IPv4Address("TCP", "127.0.0.1", 40000)


def _module(new, old):
    """Import ``dataserv.<new>``, or ``dataserv.<old>`` from before the regrouping."""
    try:
        return importlib.import_module("dataserv." + new)
    except ImportError:
        return importlib.import_module("dataserv." + old)


class FakeDatabase:
    """Answers the ping statements at once as PostgreSQL would, when every claim is
    accepted and every contact written; any other statement is an error."""

    def __init__(self):
        self.statements = 0

    def run_query(self, sql, params=None):
        self.statements += 1
        if "record_pings(" in sql:  # (item, outcome, written, last_contact)
            if "outcome <> 'ok'" in sql:
                return defer.succeed([])  # refused ones only: none
            ats, contacts = params[1], params[5]
            return defer.succeed([(i + 1, "ok", contact or None, at if contact else None)
                                  for i, (at, contact) in enumerate(zip(ats, contacts))])
        if "record_contacts(" in sql:  # before the replay claims: (btc_addr, written, at)
            return defer.succeed([(a, True, at) for a, at in zip(params[0], params[1])])
        return defer.fail(RuntimeError("unexpected statement: " + sql[:60]))


LIMITS = False  # --limits: the per-IP, per-network and per-farmer limits on


def build(mode, clock, addresses):
    """The daemon's HTTP stack over a fake database, as ``twistd dataserv`` builds it
    with --no-limits (and --max-ping 0 for ``durable``); with ``--limits``, with every
    limit on, the per-IP rate set out of reach (checked on every request, never
    refusing: every request here comes from one address)."""
    config = _module("daemon.config", "config")
    service = _module("daemon.service", "service")
    store_module = _module("storage.store", "store")
    auth = _module("identity.auth", "auth")
    farmers_module = _module("registry.farmers", "farmers")
    api_module = _module("web.api", "api")
    fields = config.Settings.__dataclass_fields__
    values = {"max_ping": 0} if mode == "durable" else {}
    if LIMITS:
        values.update(rate_limit=1e9, rate_burst=10 ** 9)
    elif "no_limits" in fields:
        values["no_limits"] = True
    settings = config.Settings(**values)
    store = store_module.FarmerStore(FakeDatabase(), clock)
    verifier = auth.Verifier(settings.address, settings.auth_timeout)
    try:
        farmers = farmers_module.Farmers(store, verifier, settings, clock)
    except TypeError:  # before the registry read the clock
        farmers = farmers_module.Farmers(store, verifier, settings)
    farmers.alone = True  # as PeerWatch finds it: no other daemon on the database
    if mode == "throttled":
        for address in addresses:
            farmers.recent.wrote(address, clock.seconds())
    if hasattr(service, "ConnectionLimits"):
        metrics = importlib.import_module("dataserv.web.metrics").Metrics()
        api = api_module.API(farmers, None, None, settings, clock, metrics=metrics)
        site = service.Site(api.resource(), metrics.requests,
                            limits=service.ConnectionLimits.from_settings(settings),
                            trusted_proxies=settings.trusted_proxies, logPath=None,
                            reactor=clock,
                            logFormatter=service.access_log_formatter(settings, clock))
    else:
        requests = importlib.import_module("dataserv.metrics").RequestCounter()
        api = api_module.API(farmers, None, None, settings, clock, requests=requests)
        site = service.Site(api.resource(), requests, logPath=None, reactor=clock)
    site.displayTracebacks = False
    return site, settings, farmers


def sign(count, farmers_count, v2):
    """A warm-up round (one ping per farmer) and ``count`` more different signed pings
    (as many rounds as it takes, a Date a second apart for each): ``farmers_count``
    farmers. In the benchmark every farmer has been seen before the measured pings."""
    from benchmarks import presign
    from dataserv.daemon.config import Settings

    field = presign.farmers(farmers_count, tag="ping-cpu")
    address = Settings().address
    make = presign.v2_signed_get if v2 else presign.signed_get
    rounds = []
    for r in range(1 + -(-count // farmers_count)):
        date = email.utils.formatdate(NOW - 1 - r, usegmt=True)
        rounds.append([make("127.0.0.1:5000", "/api/ping/" + f.address, f, address, date)
                       for f in field])
    return [f.address for f in field], rounds[0], sum(rounds[1:], [])[:count]


def serve(site, clock, requests, write_every=150):
    """Each raw request on a connection of its own; the clock moves on by the
    write-behind interval every ``write_every`` requests (about 0.05 s of them at
    the benchmark's rate), so the replay keys of throttled pings are written as in
    the daemon."""
    for i, raw in enumerate(requests, 1):
        channel = site.buildProtocol(PEER)
        transport = StringTransport(peerAddress=PEER)
        channel.makeConnection(transport)
        channel.dataReceived(raw)
        if not transport.value().startswith(b"HTTP/1.1 200"):
            raise RuntimeError(transport.value()[:300])
        channel.connectionLost(None)
        if i % write_every == 0:
            clock.advance(0.05)
    clock.advance(0.05)


def measure(args, signed):
    """CPU µs per request: the fastest of ``--batches`` batches; optionally a profile."""
    addresses, warm_up, requests = signed
    size = max(1, -(-len(requests) // args.batches))
    batches = [requests[i:i + size] for i in range(0, len(requests), size)]

    def prepared():
        clock = task.Clock()
        clock.advance(NOW)
        site = build(args.mode, clock, addresses)[0]
        serve(site, clock, warm_up)  # every farmer once: imports, caches, first calls
        gc.freeze()  # as the daemon does once started (daemon/process.py)
        return site, clock

    site, clock = prepared()
    if args.callgrind_once:
        serve(site, clock, requests)
        return None
    times = []
    for batch in batches:
        started = time.process_time()
        serve(site, clock, batch)
        times.append((time.process_time() - started) / len(batch) * 1e6)
    if args.profile:
        import cProfile

        site, clock = prepared()  # a fresh replay cache: these requests are new to it
        profile = cProfile.Profile()
        profile.enable()
        serve(site, clock, requests)
        profile.disable()
        profile.dump_stats(args.profile)
    return times


def bytecodes(args, signed):
    """Python bytecodes executed per request, in all and by function (their own, not
    their callees'): {"file:function": count per request}. Deterministic: the same
    code and requests give the same figures on any machine, however busy."""
    addresses, warm_up, requests = signed
    clock = task.Clock()
    clock.advance(NOW)
    site = build(args.mode, clock, addresses)[0]
    serve(site, clock, warm_up)
    counts = Counter()

    def trace(frame, event, arg):
        if event == "call":
            frame.f_trace_opcodes = True
            frame.f_trace_lines = False
        elif event == "opcode":
            code = frame.f_code
            counts[os.path.basename(code.co_filename) + ":" + code.co_name] += 1
        return trace

    sys.settrace(trace)
    try:
        serve(site, clock, requests)
    finally:
        sys.settrace(None)
    return {name: n / len(requests) for name, n in counts.items()}


def callgrind(args, signed_path):
    """Instructions per request under callgrind: runs with N and 2N requests."""
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed")
    counts = []
    for n in (0, args.requests):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "callgrind.out")
            command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                       sys.executable, "-m", "benchmarks.ping_cpu", "--mode", args.mode,
                       "--signed", signed_path, "--use", str(n), "--callgrind-once"]
            if args.source:
                command += ["--source", args.source]
            if args.limits:
                command.append("--limits")
            subprocess.run(command, check=True, capture_output=True)
            with open(out) as f:
                totals = [line for line in f if line.startswith(("summary:", "totals:"))]
            counts.append(int(totals[-1].split()[1]))
    return (counts[1] - counts[0]) / args.requests


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("throttled", "durable"), default="throttled")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--farmers", type=int, default=500)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--v2", action="store_true", help="DATASERV-V2 pings")
    parser.add_argument("--limits", action="store_true",
                        help="every limit on (the per-IP rate out of reach), not --no-limits")
    parser.add_argument("--source", help="a directory holding the dataserv to measure")
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile (pstats)")
    parser.add_argument("--callgrind", action="store_true",
                        help="count instructions per request under valgrind")
    parser.add_argument("--bytecodes", type=int, metavar="N", nargs="?", const=25,
                        help="count Python bytecodes per request; show the N costliest"
                        " functions")
    parser.add_argument("--signed", help=argparse.SUPPRESS)  # pickled (addresses, requests)
    parser.add_argument("--sign-to", help=argparse.SUPPRESS)
    parser.add_argument("--use", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--callgrind-once", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    global LIMITS
    LIMITS = args.limits
    if args.sign_to:
        with open(args.sign_to, "wb") as f:
            pickle.dump(sign(args.requests, args.farmers, args.v2), f)
        return 0
    if args.signed:
        with open(args.signed, "rb") as f:
            addresses, warm_up, requests = pickle.load(f)
        signed = (addresses, warm_up, requests[:args.use])
    else:
        # Signed by this tree's dataserv (a --source may not have v2 or presign's
        # imports), in a process of its own.
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "signed.pickle")
            command = [sys.executable, "-m", "benchmarks.ping_cpu", "--requests", str(args.requests), "--farmers", str(args.farmers),
                       "--sign-to", path] + (["--v2"] if args.v2 else [])
            subprocess.run(command, check=True, cwd=os.path.dirname(
                os.path.dirname(os.path.abspath(__file__))))
            with open(path, "rb") as f:
                signed = pickle.load(f)
    if args.callgrind_once:
        args.batches = 1
        measure(args, signed)
        return 0
    if args.callgrind:
        with tempfile.NamedTemporaryFile(suffix=".pickle", delete=False) as f:
            pickle.dump(signed, f)
        try:
            per_request = callgrind(args, f.name)
        finally:
            os.unlink(f.name)
        print("%s: %.0f instructions per ping" % (args.mode, per_request))
        return 0
    if args.bytecodes is not None:
        counts = bytecodes(args, signed)
        print("%s: %.0f Python bytecodes per ping" % (args.mode, sum(counts.values())))
        for name, n in sorted(counts.items(), key=lambda item: -item[1])[:args.bytecodes]:
            print("%8.1f  %s" % (n, name))
        return 0
    times = measure(args, signed)
    print("%s: %.1f µs CPU per ping (fastest of %d batches of %d; median %.1f)" % (
        args.mode, min(times), len(times), len(signed[2]) // len(times),
        sorted(times)[len(times) // 2]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
