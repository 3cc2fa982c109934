"""Proof-of-space verification cost: ``python -m benchmarks.proofs [--plots N]``.

1. Builds a few real k=21 plots (chiapos reference plotter) and looks up the proofs for
   random challenges; the proofs are then replicated to stand for 10,000 plots x
   --challenges-per-round (4) challenges x ~1 proof. A replicated proof costs the
   Verifier exactly what a fresh one does (it has no cache: every call rebuilds the
   64 x-values' f-functions), so the throughput is the real one.
2. Verifies the lot in batches of one answer request (the client's BATCH) handed to
   the reactor's thread pool (1 and 2 threads), and reports the seconds per round of
   10,000 plots.
3. Ping latency on the reactor thread while it verifies, against idle: paced (a
   round's proofs spread over the interval, batch by batch, as answers arrive) and
   flat out (two batches always in flight, several times a round's rate). A
   Twisted HTTP server in this process (a route that answers like a throttled ping,
   without the database) and a client in another process measuring sequential
   requests on a kept-alive connection.
4. ``--daemon``: the same question asked of the real daemon (``twistd dataserv`` on a
   throwaway PostgreSQL): a farmer with real k=21 plots answers prepared challenges
   (their rows written straight into the database, fetched) at a round's pace for
   10,000 plots, over signed HTTP as the client does, while another farmer's signed
   v2 pings are timed, ``--ping-rate`` a second; idle first, then busy, ``--runs``
   times. ``--without-proofs`` sends the same answers with no proofs (the requests'
   own cost, nothing to verify).
5. ``--rounds``: the challenge rounds' own work (score, draw, prune) at --farm-plots
   plots with a full score window of challenges, on the real daemon, and ping p99 in
   10 s runs with a round in them against runs without.
"""

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from dataserv.client.farming import BATCH

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


def verify_round(items, threads, batch=BATCH):
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
    and busy pings); ``pace`` seconds between batches of BATCH, or flat out."""
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
        chunk = items[start:start + BATCH] or items[:BATCH]
        d = threads.deferToThreadPool(reactor, reactor.getThreadPool(), count_valid, chunk)
        def next_batch(found):
            busy["proofs"] += len(chunk)
            following = (start + BATCH) % len(items)
            if pace is None:
                verify_more(following)

        d.addCallback(next_batch)
        if pace is not None:
            reactor.callLater(pace, verify_more, (start + BATCH) % len(items))

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


# -- the real daemon ------------------------------------------------------------

PINGER = r'''
import http.client, json, sys, time
from dataserv.identity.signing import FarmerKey, v2_headers_for
port, seconds, server, seed = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
rate = float(sys.argv[5])  # pings a second; 0 = one after the other, flat out
arrivals = sys.argv[6] if len(sys.argv) > 6 else "paced"
key = FarmerKey.from_seed(seed.encode())
path = "/api/ping/" + key.nodeid
c = http.client.HTTPConnection("127.0.0.1", port)
# Signed before the clock starts (as the legacy benchmark presigns): the load
# generator shares the machine's two cores with the daemon, and its signing would
# otherwise be counted against the daemon's latency.
wanted = int(rate * seconds) + 10 if rate else int(seconds * 3000)
signed = [{k.decode(): v.decode()
           for k, v in v2_headers_for(key, server, "GET", path).items()}
          for _ in range(wanted)]
# When each ping is due (seconds from the start): every 1/rate s ("paced"), or at
# random, as pings from many farmers arrive ("random": exponential gaps, the same
# mean rate, the same draw every run). Paced pings fall in step with the daemon's
# own timers (one started by a ping fires exactly on a later ping's turn).
if arrivals == "random":
    import random
    draw, due, t = random.Random(1), [], 0.0
    for _ in range(wanted):
        due.append(t)
        t += draw.expovariate(rate)
else:
    due = [i / rate if rate else 0.0 for i in range(wanted)]
lat, codes = [], {}
start = time.monotonic()
end = start + seconds
while time.monotonic() < end and len(lat) < wanted:
    if rate:
        time.sleep(max(0.0, start + due[len(lat)] - time.monotonic()))
    headers = signed[len(lat)]
    t = time.perf_counter()
    c.request("GET", path, headers=headers)
    r = c.getresponse()
    r.read()
    lat.append(time.perf_counter() - t)
    codes[r.status] = codes.get(r.status, 0) + 1
lat.sort()
print(json.dumps({"pings": len(lat), "p50_ms": lat[len(lat) // 2] * 1e3,
                  "p99_ms": lat[int(len(lat) * 0.99)] * 1e3, "codes": codes}))
'''

ANSWERER = r'''
import http.client, json, pickle, sys, time
from dataserv.client.farming import BATCH, MAX_BODY, answer_batches
from dataserv.identity.signing import FarmerKey, v2_headers_for
port, server, seed, items_path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
pace, seconds, with_proofs = float(sys.argv[5]), float(sys.argv[6]), sys.argv[7] == "1"
key = FarmerKey.from_seed(seed.encode())
with open(items_path, "rb") as f:
    items = pickle.load(f)
path = "/api/proofs/%s/answers" % key.nodeid
c = http.client.HTTPConnection("127.0.0.1", port)
done = {"requests": 0, "answers": 0, "proofs_sent": 0, "counted": 0, "valid_proofs": 0,
        "codes": {}}
# Every request built and signed before the clock starts (see the pinger), split
# into requests as the client splits them.
answers = [{"plot_id": p.hex(), "challenge": ch.hex(),
            "proofs": [x.hex() for x in proofs] if with_proofs else []}
           for p, ch, proofs in items]
requests = []
for batch in answer_batches(answers, BATCH, MAX_BODY):
    body = json.dumps({"answers": batch}).encode()
    headers = {k.decode(): v.decode()
               for k, v in v2_headers_for(key, server, "POST", path, body).items()}
    headers["Content-Type"] = "application/json"
    requests.append((batch, body, headers))
print("ready", flush=True)
sys.stdin.readline()  # go
start = time.monotonic()
for n, (batch, body, headers) in enumerate(requests):
    if time.monotonic() - start > seconds:
        break
    c.request("POST", path, body=body, headers=headers)
    r = c.getresponse()
    data = r.read()
    done["requests"] += 1
    done["codes"][r.status] = done["codes"].get(r.status, 0) + 1
    done["answers"] += len(batch)
    done["proofs_sent"] += sum(len(a["proofs"]) for a in batch)
    if r.status == 200:
        out = json.loads(data)
        done["counted"] += out["counted"]
        done["valid_proofs"] += out["valid_proofs"]
    if pace > 0:
        time.sleep(max(0.0, start + (n + 1) * pace - time.monotonic()))
done["seconds"] = time.monotonic() - start
sys.stdout.write(json.dumps(done) + "\n")
'''

FARMER_SEED = "benchmarks.proofs farmer"
PINGER_SEED = "benchmarks.proofs pinger"


def daemon_items(plots, challenges, cache):
    """[(plot_id, challenge, [proof])] from ``plots`` real k=K plots of the benchmark
    farmer, ``challenges`` random challenges each, and the plots' seeds; kept in
    ``cache`` (a directory) between runs, since the look-ups take minutes."""
    import pickle

    from dataserv.client.plotting import Prover, create_plot, plot_name
    from dataserv.identity.signing import FarmerKey

    nodeid = bytes.fromhex(FarmerKey.from_seed(FARMER_SEED.encode()).nodeid)
    os.makedirs(cache, exist_ok=True)
    path = os.path.join(cache, "items-k%d-%d-%d.pickle" % (K, plots, challenges))
    if os.path.exists(path):
        with open(path, "rb") as f:
            return pickle.load(f)
    seeds, items = [], []
    for i in range(plots):
        seed = bytes([i + 1]) * 32
        seeds.append(seed)
        started = time.time()
        plot = os.path.join(cache, plot_name(K, seed))
        if not os.path.exists(plot):
            create_plot(cache, nodeid, K, seed)
            print("plot %d: %.1f s" % (i + 1, time.time() - started), file=sys.stderr)
        prover = Prover(plot)
        for _ in range(challenges):
            challenge = os.urandom(32)
            items.append((prover.plot_id, challenge, prover.proofs(challenge)))
    # Interleave the plots, as a farmer's answers would be.
    items.sort(key=lambda item: item[1])
    with open(path, "wb") as f:
        pickle.dump((seeds, items), f)
    return seeds, items


def _signed(url, key, server, method, path, value=None):
    """One v2-signed request from the benchmark process; (status, body)."""
    import http.client
    from urllib.parse import urlsplit

    from dataserv.identity.signing import v2_headers_for

    body = json.dumps(value).encode() if value is not None else b""
    headers = {k.decode(): v.decode()
               for k, v in v2_headers_for(key, server, method, path, body).items()}
    if value is not None:
        headers["Content-Type"] = "application/json"
    parts = urlsplit(url)
    c = http.client.HTTPConnection(parts.hostname, parts.port)
    c.request(method, path, body=body or None, headers=headers)
    r = c.getresponse()
    return r.status, r.read()


@contextlib.contextmanager
def _throwaway_daemon(prefix, flags, keys, durable=True):
    """A throwaway PostgreSQL with ``twistd dataserv`` on it and ``keys`` registered
    (v2-signed, as the client does): yields (daemon, cluster, dsn, server address,
    a scratch directory); all of it gone afterwards."""
    import urllib.request

    from benchmarks.run import Daemon, free_port
    from dataserv.storage.pgcluster import Cluster

    tmp = tempfile.mkdtemp(prefix=prefix)
    os.chmod(tmp, 0o755)
    cluster = Cluster(os.path.join(tmp, "pg-data"), durable=durable)
    dsn = cluster.start()
    daemon = None
    try:
        daemon = Daemon(dsn, free_port(), tmp, *flags)
        daemon.wait_ready()
        server = json.loads(urllib.request.urlopen(daemon.url + "/api/address").read())[
            "address"]
        for key in keys:
            status, body = _signed(daemon.url, key, server, "GET",
                                   "/api/register/" + key.address)
            assert status == 200, body
        yield daemon, cluster, dsn, server, tmp
    finally:
        if daemon is not None:
            daemon.stop()
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def daemon_latency(args):
    """Ping latency of the real daemon (twistd, PostgreSQL) idle and while it checks
    a round's proofs (paced over the interval), ``args.runs`` times; every run's
    figures."""
    import pickle

    from benchmarks import seed as seeding
    from dataserv.identity.signing import FarmerKey

    seeds, items = daemon_items(args.plots, args.challenges, args.cache)
    farmer = FarmerKey.from_seed(FARMER_SEED.encode())
    pinger = FarmerKey.from_seed(PINGER_SEED.encode())
    runs = []
    with _throwaway_daemon("dataserv-bench-proofs-",
                           ["--min-k", str(K), "--proof-window", "3600"] + args.flags,
                           [farmer, pinger], durable=not args.no_fsync) as (
            daemon, cluster, dsn, server, tmp):
        items_path = os.path.join(tmp, "items.pickle")
        with open(items_path, "wb") as f:
            pickle.dump(items, f)
        for s in seeds:
            status, body = _signed(daemon.url, farmer, server, "POST",
                                   "/api/proofs/%s/plots" % farmer.nodeid,
                                   {"seed": s.hex(), "k": K})
            assert status == 200, body
        conn = seeding.connect(dsn)
        for statement in args.setup_sql:
            with conn.cursor() as cur:
                cur.execute(statement)
        # Requests as the client sends them: BATCH answers each.
        pace = args.interval * BATCH / (args.farm_plots * args.per_round)

        from benchmarks.ab import postgres_cpu, tree_cpu

        def daemon_cpu():
            """The daemon's CPU seconds with its children's (the proof workers)."""
            return tree_cpu(daemon.process.pid)

        def pings(seconds):
            """The pinger's figures, with the CPU the daemon and PostgreSQL used
            meanwhile."""
            cpu, pg = daemon_cpu(), postgres_cpu(cluster.pgdata)
            out = json.loads(subprocess.check_output([
                sys.executable, "-c", PINGER, str(daemon.port), str(seconds), server,
                PINGER_SEED, str(args.ping_rate), args.ping_arrivals]))
            out["daemon_cpu_s"] = round(daemon_cpu() - cpu, 3)
            out["postgres_cpu_s"] = round(postgres_cpu(cluster.pgdata) - pg, 3)
            return out

        for run in range(args.runs):
            # Fresh rows for the prepared challenges, fetched just now.
            with conn.cursor() as cur:
                cur.execute("DELETE FROM challenges")
                now = time.time()
                cur.execute(
                    "INSERT INTO challenges (plot, challenge, issued_at, fetched_at)"
                    " SELECT p.id, u.c, %s, %s FROM unnest(%s::bytea[], %s::bytea[])"
                    " AS u(pid, c) JOIN plots p ON p.plot_id = u.pid",
                    (now, now, [i[0] for i in items], [i[1] for i in items]))
                cur.execute("ANALYZE challenges")
            idle = pings(args.seconds)
            answerer = subprocess.Popen(
                [sys.executable, "-c", ANSWERER, str(daemon.port), server, FARMER_SEED,
                 items_path, str(pace), str(args.seconds + 2),
                 "0" if args.without_proofs else "1"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert answerer.stdout.readline().strip() == "ready"
            answerer.stdin.write("go\n")
            answerer.stdin.flush()
            time.sleep(0.5)
            busy = pings(args.seconds)
            answered = json.loads(answerer.communicate()[0])
            runs.append({"idle": idle, "busy": busy, "answered": answered})
            print("run %d: idle p99 %.3f ms, busy p99 %.3f ms, %d proofs valid; CPU"
                  " daemon %.2f -> %.2f s, PostgreSQL %.2f -> %.2f s" % (
                      run + 1, idle["p99_ms"], busy["p99_ms"], answered["valid_proofs"],
                      idle["daemon_cpu_s"], busy["daemon_cpu_s"], idle["postgres_cpu_s"],
                      busy["postgres_cpu_s"]), file=sys.stderr)
        conn.close()
    return runs


def summarise(runs):
    """Medians over the runs."""
    import statistics

    def median(path):
        values = [run[path[0]][path[1]] for run in runs]
        return round(statistics.median(values), 3)

    figures = {name: median(path) for name, path in (
        ("idle_p50_ms", ("idle", "p50_ms")), ("idle_p99_ms", ("idle", "p99_ms")),
        ("busy_p50_ms", ("busy", "p50_ms")), ("busy_p99_ms", ("busy", "p99_ms")),
        ("valid_proofs_per_run", ("answered", "valid_proofs")),
        ("answers_per_run", ("answered", "answers")))}
    figures["p99_increase_pct"] = round(
        100 * (figures["busy_p99_ms"] / figures["idle_p99_ms"] - 1), 1)
    # Each run's busy p99 over its own idle p99 (measured just before): the machine
    # is shared, and its load drifts between runs more than within one.
    figures["median_run_p99_increase_pct"] = round(100 * (statistics.median(
        r["busy"]["p99_ms"] / r["idle"]["p99_ms"] for r in runs) - 1), 1)
    # What the answers cost beyond the pings: the CPU used while they came, less the
    # CPU of the idle phase just before (as long, the same pings), per request.
    for who in ("daemon", "postgres"):
        figures[who + "_ms_per_answer_request"] = round(statistics.median(
            1e3 * (r["busy"][who + "_cpu_s"] - r["idle"][who + "_cpu_s"])
            / max(1, r["answered"]["requests"]) for r in runs), 3)
    figures["runs"] = [{"idle_p99_ms": round(r["idle"]["p99_ms"], 3),
                        "busy_p99_ms": round(r["busy"]["p99_ms"], 3),
                        "valid_proofs": r["answered"]["valid_proofs"],
                        "codes": r["answered"]["codes"]} for r in runs]
    return figures


def rounds_latency(args):
    """The challenge rounds' own work at ``args.farm_plots`` plots (score, draw,
    prune), on the real daemon: plots of 100 farmers and a full score window of
    challenge rows (59 rounds, three in four answered) written into the database,
    then ``args.runs`` back-to-back 10 s ping runs at --ping-rate; the rounds the
    daemon runs meanwhile (every 60 s, its default) land in some of them."""
    import statistics
    import urllib.request

    from benchmarks import seed as seeding
    from dataserv.identity.signing import FarmerKey

    keys = [FarmerKey.from_seed(b"benchmarks.proofs rounds %d" % i) for i in range(100)]
    with _throwaway_daemon("dataserv-bench-rounds-", ["--no-limits"] + args.flags,
                           keys + [FarmerKey.from_seed(PINGER_SEED.encode())]) as (
            daemon, cluster, dsn, server, tmp):
        conn = seeding.connect(dsn)
        now = time.time()
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO plots (plot_id, farmer_id, seed, k, registered_at)"
                " SELECT decode(md5('p' || i) || md5('q' || i), 'hex'), f.id,"
                "  decode(md5('s' || i) || md5('t' || i), 'hex'), 32, %s"
                " FROM generate_series(1, %s) i JOIN (SELECT id, row_number() OVER"
                "  (ORDER BY id) - 1 AS n FROM farmers WHERE btc_addr = ANY(%s)) f"
                "  ON f.n = i %% 100", (now - 7200, args.farm_plots, [k.address for k in keys]))
            cur.execute(
                "INSERT INTO challenges (plot, challenge, issued_at, fetched_at,"
                " answered_at, proofs)"
                " SELECT p.id, decode(md5(p.id || '-' || r || '-' || j)"
                "  || md5(j || '-' || r || '-' || p.id), 'hex'), %(now)s - 60 * r,"
                "  %(now)s - 60 * r + 5, CASE WHEN (p.id + j) %% 4 > 0"
                "  THEN %(now)s - 60 * r + 6 END, (p.id + j) %% 3"
                " FROM plots p, generate_series(1, 59) r, generate_series(1, %(per)s) j",
                {"now": now, "per": args.per_round})
            cur.execute("VACUUM ANALYZE challenges")
        conn.close()

        def scrape():
            figures = {}
            text = urllib.request.urlopen(daemon.url + "/metrics").read().decode()
            for line in text.splitlines():
                name, _, value = line.rpartition(" ")
                figures[name] = float(value) if name and not line.startswith("#") else None
            return figures

        runs = []
        for _ in range(args.runs):
            before = scrape()
            out = json.loads(subprocess.check_output([
                sys.executable, "-c", PINGER, str(daemon.port), "10", server, PINGER_SEED,
                str(args.ping_rate)]))
            after = scrape()
            rounds = (after["dataserv_challenge_rounds_total"]
                      - before["dataserv_challenge_rounds_total"])
            runs.append({"rounds": rounds, "p50_ms": round(out["p50_ms"], 3),
                         "p99_ms": round(out["p99_ms"], 3)})
            print(runs[-1], file=sys.stderr)
        done = after["dataserv_challenge_rounds_total"]
        with_round = [r["p99_ms"] for r in runs if r["rounds"]]
        without = [r["p99_ms"] for r in runs if not r["rounds"]]
        return {
            "plots": args.farm_plots, "challenge_rows": 59 * args.per_round * args.farm_plots,
            "round_seconds": round(after["dataserv_challenge_round_duration_seconds_sum"]
                                   / after["dataserv_challenge_round_duration_seconds_count"], 2),
            "all_tallies_seconds": round(after[
                'dataserv_db_transaction_seconds_total{name="all_tallies"}'] / done, 2),
            "draw_round_seconds": round(after[
                'dataserv_db_transaction_seconds_total{name="draw_round"}'] / done, 2),
            "p99_ms_runs_with_a_round": with_round, "p99_ms_runs_without": without,
            "p99_increase_pct": round(100 * (statistics.median(with_round)
                                             / statistics.median(without) - 1), 1)
            if with_round and without else None}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plots", type=int, default=3)
    parser.add_argument("--challenges", type=int, default=200)
    parser.add_argument("--farm-plots", type=int, default=10000)
    parser.add_argument("--per-round", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=60.0)
    parser.add_argument("--daemon", action="store_true",
                        help="measure ping latency on the real daemon and PostgreSQL "
                             "while it checks a round's proofs, paced (--plots real "
                             "plots, --challenges each; --runs runs)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--without-proofs", action="store_true",
                        help="with --daemon: the same answers with no proofs in them (a "
                             "control: the requests' cost without the verification)")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(),
                                                        "dataserv-bench-proofs-cache"))
    parser.add_argument("--ping-rate", type=float, default=200.0,
                        help="with --daemon: pings a second (0 = flat out, one after "
                             "the other)")
    parser.add_argument("--ping-arrivals", choices=("paced", "random"), default="paced",
                        help="with --daemon: pings every 1/--ping-rate s, or at random "
                             "(exponential gaps, the same mean rate)")
    parser.add_argument("--no-fsync", action="store_true",
                        help="with --daemon: PostgreSQL without fsync or synchronous "
                             "commit (to tell disk waits from CPU)")
    parser.add_argument("--setup-sql", action="append", default=[],
                        help="with --daemon: SQL run once the daemon is up (experiments)")
    parser.add_argument("--flag", dest="flags", action="append", default=[],
                        help="a daemon flag (repeat), e.g. --flag=--pool-size=8")
    parser.add_argument("--rounds", action="store_true",
                        help="the rounds' own work at --farm-plots plots on the real "
                             "daemon: round duration, ping p99 in --runs 10 s runs with "
                             "and without a round in them")
    args = parser.parse_args(argv)
    if args.rounds:
        print(json.dumps(rounds_latency(args), indent=1))
        return
    if args.daemon:
        print(json.dumps(summarise(daemon_latency(args)), indent=1))
        return
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
    pace = args.interval * BATCH / wanted
    for name, mode in (("paced", pace), ("flat_out", None)):
        figures[name] = dict(zip(
            ("idle_p50_ms", "idle_p99_ms", "busy_p50_ms", "busy_p99_ms", "proofs_verified",
             "idle_pings", "busy_pings"),
            [round(x, 3) for x in subprocess_latency(replicated, args.seconds, mode)]))
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
