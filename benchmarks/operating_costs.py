"""What metrics and JSON logs cost on ping throughput:
``python -m benchmarks.operating_costs [--baseline-twistd PATH]``.

Runs the benchmark's ping scenario c. (pings at the default throttle, so each one is a
signature check and a throttled answer: the daemon's hottest path) against daemons
started with different logging flags, interleaved round by round (in alternating
order) so that a noisy spell on a shared machine hits every configuration alike, and reports the median
rate of each, and the median CPU time the daemon spent per request (which a busy
machine disturbs much less than the rate). ``--baseline-twistd`` adds a daemon from another installation (for
example the code before prometheus_client) as the reference. While a run lasts,
/metrics is scraped every second, far more often than Prometheus would.
"""

import argparse
import json
import os
import statistics
import sys
import threading
import time

from benchmarks import presign, seed
from benchmarks.drivers import best_driver
from benchmarks.run import HOST, Daemon, free_port, get, twistd


def cpu_seconds(pid):
    """User plus system CPU time a process has used so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Scraper(threading.Thread):
    """GET /metrics every ``interval`` seconds until stopped."""

    def __init__(self, url, interval=1.0):
        super().__init__(daemon=True)
        self.url = url
        self.interval = interval
        self.stopped = threading.Event()
        self.scrapes = 0

    def run(self):
        while not self.stopped.wait(self.interval):
            if get(self.url + "/metrics", 2)[0] == 200:
                self.scrapes += 1


def configurations(args, tmp):
    """(name, twistd, flags) of every daemon to compare."""
    access = os.path.join(tmp, "access-%s.log")
    configs = []
    if args.baseline_twistd:
        configs.append(("baseline (before prometheus_client)", args.baseline_twistd, []))
    configs += [
        ("metrics, text log", twistd(), []),
        ("metrics, --log-format json", twistd(), ["--log-format", "json"]),
        ("metrics, combined access log", twistd(),
         ["--access-log", access % "combined"]),
        ("metrics, json access log", twistd(),
         ["--access-log", access % "json", "--access-log-format", "json"]),
    ]
    if args.only:
        names = [name for name, _, _ in configs]
        configs = [configs[names.index(name)] for name in args.only]
    return configs


def measure(args):
    """Every configuration, ``--rounds`` times interleaved; rows of medians."""
    import tempfile

    from dataserv.storage.pgcluster import Cluster

    tmp = tempfile.mkdtemp(prefix="dataserv-opcost-")
    os.chmod(tmp, 0o755)
    cluster = Cluster(os.path.join(tmp, "pg"), durable=True)
    dsn = cluster.start()
    driver = best_driver()
    rates = {}
    cpu_per_request = {}  # the daemon's own CPU: less sensitive to a busy machine
    try:
        first = Daemon(dsn, free_port(), tmp, "--no-limits")  # creates the schema
        try:
            first.wait_ready()
        finally:
            first.stop()
        seed.truncate(dsn)
        field = presign.farmers(args.farmers)
        now = time.time()
        seed.copy_farmers(dsn, [(f.address, f.address, 1, now, now) for f in field])
        configs = configurations(args, tmp)
        for round_number in range(args.rounds):
            # ABC CBA ABC ...: the first daemon of a round runs faster on this machine
            # (measured: reversing the order reverses the ranking), so every
            # configuration gets every position.
            order = configs if round_number % 2 == 0 else configs[::-1]
            for name, command, flags in order:
                port = free_port()
                daemon = Daemon.__new__(Daemon)
                _start(daemon, command, dsn, port, tmp, flags)
                try:
                    daemon.wait_ready()
                    address = json.loads(get(daemon.url + "/api/address")[1])["address"]
                    requests = presign.signed_requests(
                        "%s:%d" % (HOST, port), field, address,
                        lambda f: "/api/ping/" + f.address)
                    driver.run(HOST, port, requests, args.connections, 1.0)  # warm-up
                    scraper = Scraper(daemon.url)
                    scraper.start()
                    cpu = cpu_seconds(daemon.process.pid)
                    result = driver.run(HOST, port, requests, args.connections, args.seconds)
                    cpu = cpu_seconds(daemon.process.pid) - cpu
                    scraper.stopped.set()
                    scraper.join()
                    if result.non_2xx or result.socket_errors:
                        raise RuntimeError("%s: %d non-2xx, %d socket errors" % (
                            name, result.non_2xx, result.socket_errors))
                    rates.setdefault(name, []).append(round(result.rps, 1))
                    cpu_per_request.setdefault(name, []).append(
                        round(cpu / result.requests * 1e6, 1))
                    sys.stderr.write("round %d  %-40s %8.1f req/s %7.1f us CPU/request\n" % (
                        round_number + 1, name, result.rps, cpu_per_request[name][-1]))
                finally:
                    daemon.stop()
    finally:
        cluster.stop()
    reference = statistics.median(rates[configs[0][0]])
    cpu_reference = statistics.median(cpu_per_request[configs[0][0]])
    return [{"configuration": name, "median_rps": statistics.median(runs), "runs": runs,
             "vs_first": round(statistics.median(runs) / reference, 3),
             "median_cpu_us": statistics.median(cpu_per_request[name]),
             "cpu_us_runs": cpu_per_request[name],
             "cpu_vs_first": round(statistics.median(cpu_per_request[name]) / cpu_reference, 3)}
            for name, runs in rates.items()]


def _start(daemon, command, dsn, port, logdir, flags):
    """Daemon.__init__ with another twistd."""
    import subprocess

    daemon.port = port
    daemon.url = "http://%s:%d" % (HOST, port)
    daemon.shares_port = False
    daemon.log = open(os.path.join(logdir, "daemon-%d.log" % port), "w")
    daemon.process = subprocess.Popen(
        [command, "-n", "--pidfile=", "dataserv", "--database", dsn, "--listen",
         "tcp:%d:interface=%s" % (port, HOST)]
        # The load comes from one address: the current build runs without its limits
        # (a baseline from before them has no such flag).
        + (["--no-limits"] if command == twistd() else []) + flags,
        stdout=daemon.log, stderr=subprocess.STDOUT)


def main(argv=None):
    """Measure and print a table (``--json`` writes the rows too)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-twistd", help="twistd of another installation to compare")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--seconds", type=float, default=5.0, help="per load run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--farmers", type=int, default=5000)
    parser.add_argument("--only", action="append",
                        help="run only this configuration (repeatable; in this order)")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    rows = measure(args)
    print("%-40s %9s %7s %11s %7s" % ("configuration", "req/s", "ratio", "CPU us/req",
                                         "ratio"))
    for row in rows:
        print("%-40s %9.1f %7.3f %11.1f %7.3f" % (
            row["configuration"], row["median_rps"], row["vs_first"], row["median_cpu_us"],
            row["cpu_vs_first"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"driver": type(best_driver()).__name__, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
