"""Proof-of-space verification cost: ``python -m benchmarks.proofs [--plots N]``.

1. Builds a few real k=21 plots (chiapos reference plotter) and looks up the proofs for
   random challenges; the proofs are then replicated to stand for 10,000 plots x
   --challenges-per-round (4) challenges x ~1 proof. A replicated proof costs the
   Verifier exactly what a fresh one does (it has no cache: every call rebuilds the
   64 x-values' f-functions), so the throughput is the real one.
2. Verifies the lot as the daemon does: batches of 32 answers handed to the reactor's
   thread pool (1 and 2 threads), and reports the seconds per round of 10,000 plots.
3. Ping latency on the reactor thread while it verifies, against idle: paced (a
   round's proofs spread over the interval, batch by batch, as answers arrive) and
   flat out (two batches always in flight, several times a round's rate). A
   Twisted HTTP server in this process (a route that answers like a throttled ping,
   without the database) and a client in another process measuring sequential
   requests on a kept-alive connection.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

K = 21
CLIENT = r'''
import http.client, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port)
lat = []
end = time.monotonic() + seconds
while time.monotonic() < end:
    t = time.perf_counter()
    c.request("GET", "/api/ping/x")
    c.getresponse().read()
    lat.append(time.perf_counter() - t)
lat.sort()
print(len(lat), lat[len(lat) // 2], lat[int(len(lat) * 0.99)])
'''


def build_proofs(plots, challenges):
    """[(plot_id, k, challenge, [proof])] from real plots."""
    from dataserv.client.plotting import Prover, create_plot

    items = []
    # create_plot keeps chiapos' own output off stdout, which stays for the JSON.
    with tempfile.TemporaryDirectory(prefix="dataserv-bench-plots-") as directory:
        for i in range(plots):
            started = time.time()
            path = create_plot(directory, bytes(20), K, os.urandom(32))
            print("plot %d: %.1f s" % (i + 1, time.time() - started), file=sys.stderr)
            prover = Prover(path)
            for _ in range(challenges):
                challenge = os.urandom(32)
                items.append((prover.plot_id, K, challenge, prover.proofs(challenge)))
    return items


def verify_round(items, threads, batch=32):
    """Seconds to verify ``items`` in batches through a pool of ``threads``."""
    from concurrent.futures import ThreadPoolExecutor

    from dataserv.proofs.verification import count_valid

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        found = sum(sum(r) for r in pool.map(
            count_valid, [items[i:i + batch] for i in range(0, len(items), batch)]))
    return time.perf_counter() - started, found


def ping_latency(items, seconds, pace=None):
    """(idle p50, idle p99, busy p50, busy p99 in ms, proofs verified while busy, idle
    and busy pings); ``pace`` seconds between batches of 32, or flat out."""
    from klein import Klein
    from twisted.internet import reactor, threads
    from twisted.web.server import Site

    from dataserv.proofs.verification import count_valid

    app = Klein()

    @app.route("/api/ping/<farmer_id>")
    def ping(request, farmer_id):
        return b"Ping accepted."

    port = reactor.listenTCP(0, Site(app.resource()), interface="127.0.0.1").getHost().port
    reactor.getThreadPool().adjustPoolsize(2, 2)
    results, busy = {}, {"on": False, "proofs": 0}

    def verify_more(start=0):
        if not busy["on"]:
            return
        chunk = items[start:start + 32] or items[:32]
        d = threads.deferToThreadPool(reactor, reactor.getThreadPool(), count_valid, chunk)
        def next_batch(found):
            busy["proofs"] += len(chunk)
            following = (start + 32) % len(items)
            if pace is None:
                verify_more(following)

        d.addCallback(next_batch)
        if pace is not None:
            reactor.callLater(pace, verify_more, (start + 32) % len(items))

    def measure(name):
        return threads.deferToThread(subprocess.check_output, [
            sys.executable, "-c", CLIENT, str(port), str(seconds)]).addCallback(
            lambda out: results.__setitem__(name, [float(x) for x in out.split()]))

    def run():
        d = measure("idle")

        def start_busy(_):
            busy["on"] = True
            verify_more(0)
            if pace is None:
                verify_more(len(items) // 2)  # two batches in flight: both threads busy
            return measure("busy")

        d.addCallback(start_busy)
        d.addBoth(lambda r: (busy.__setitem__("on", False), reactor.stop(), r))

    reactor.callWhenRunning(run)
    reactor.run()
    idle, loaded = results["idle"], results["busy"]
    return (idle[1] * 1e3, idle[2] * 1e3, loaded[1] * 1e3, loaded[2] * 1e3, busy["proofs"],
            int(idle[0]), int(loaded[0]))


def subprocess_latency(items, seconds, pace):
    """ping_latency in a fresh process (a reactor runs once per process)."""
    import pickle

    with tempfile.NamedTemporaryFile(suffix=".pickle") as f:
        pickle.dump((items, seconds, pace), f)
        f.flush()
        out = subprocess.check_output([
            sys.executable, "-c",
            "import pickle, sys, json; from benchmarks.proofs import ping_latency; "
            "print(json.dumps(ping_latency(*pickle.load(open(sys.argv[1], 'rb')))))",
            f.name])
    return json.loads(out.splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plots", type=int, default=3)
    parser.add_argument("--challenges", type=int, default=200)
    parser.add_argument("--farm-plots", type=int, default=10000)
    parser.add_argument("--per-round", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=60.0)
    args = parser.parse_args(argv)
    items = build_proofs(args.plots, args.challenges)
    proofs = sum(len(p) for _, _, _, p in items)
    per_item = proofs / len(items)
    wanted = args.farm_plots * args.per_round
    replicated = (items * (wanted // len(items) + 1))[:wanted]
    figures = {"k": K, "proofs_per_challenge": round(per_item, 3), "challenges": wanted,
               "proofs": sum(len(p) for _, _, _, p in replicated)}
    for n in (1, 2):
        seconds, found = verify_round(replicated, n)
        assert found == figures["proofs"]
        figures["round_seconds_%d_thread" % n] = round(seconds, 2)
    pace = args.interval * 32 / wanted
    for name, mode in (("paced", pace), ("flat_out", None)):
        figures[name] = dict(zip(
            ("idle_p50_ms", "idle_p99_ms", "busy_p50_ms", "busy_p99_ms", "proofs_verified",
             "idle_pings", "busy_pings"),
            [round(x, 3) for x in subprocess_latency(replicated, args.seconds, mode)]))
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
