"""The dataserv benchmark: ``python -m benchmarks.run [--url URL]``.

With no URL it installs nothing and starts everything itself: a throwaway PostgreSQL
(the test suite's cluster code, durable settings), the daemon (``twistd dataserv``)
and, for the driver's ceiling, a bare Klein route in its own process. Then it runs
every scenario and prints a table; ``--json`` writes the figures. With ``--url`` it
drives any server that speaks the protocol (scenarios that need the database or the
process itself are skipped).
"""

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from benchmarks import presign, seed
from benchmarks.drivers import best_driver

HOST = "127.0.0.1"
LIMITED_REGISTER = "a. register, limits on (from 30 000 networks)"
LIMITED_HEIGHT = "d. height, limits on (fill rate)"


class Progress:
    """One status line on stderr: step k of n, what runs, elapsed time."""

    def __init__(self, steps):
        self.steps = steps
        self.done = 0
        self.started = time.time()

    def step(self, what):
        """Show that ``what`` starts."""
        self.done += 1
        width = 30
        filled = int(width * (self.done - 1) / max(1, self.steps))
        bar = "#" * filled + "-" * (width - filled)
        sys.stderr.write("\r[%s] %2d/%d %-48s %5.0fs" % (
            bar, self.done, self.steps, what[:48], time.time() - self.started))
        sys.stderr.flush()

    def finish(self):
        """End the line."""
        sys.stderr.write("\r[%s] done in %.0fs%s\n" % ("#" * 30, time.time() - self.started, " " * 50))


def median_run(runs):
    """The run with the median rate, carrying every run's rate in ``runs``; its
    non-2xx answers and socket errors are those of all the runs, so that a bad run
    cannot hide behind the median."""
    ordered = sorted(runs, key=lambda r: r.rps)
    middle = ordered[len(ordered) // 2]
    middle.runs = [round(r.rps, 1) for r in runs]
    middle.non_2xx = sum(r.non_2xx for r in runs)
    middle.socket_errors = sum(r.socket_errors for r in runs)
    return middle


def free_port():
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def get(url, timeout=5.0, headers=None):
    """(status, body) of a GET; (0, b"") when nothing answers."""
    try:
        request = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def wait_until(check, timeout, what):
    """Poll ``check`` until true or fail saying ``what``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError("timed out waiting for " + what)


def twistd():
    """The twistd next to this Python."""
    candidate = os.path.join(os.path.dirname(sys.executable), "twistd")
    return candidate if os.path.exists(candidate) else shutil.which("twistd")


class Daemon:
    """One ``twistd -n dataserv`` process."""

    def __init__(self, dsn, port, logdir, *flags, preexec=None):
        self.port = port
        self.url = "http://%s:%d" % (HOST, port)
        self.log = open(os.path.join(logdir, "daemon-%d-%d.log" % (port, time.time())), "w")
        listen = "tcp:%d:interface=%s" % (port, HOST)
        self.shares_port = "--reuse-port" in flags
        # The flags as given: Bench.daemon adds --no-limits unless a scenario measures
        # the limits (or, as the hostile suite, runs with them).
        self.process = subprocess.Popen(
            [twistd(), "-n", "--pidfile=", "dataserv", "--database", dsn, "--listen", listen]
            + list(flags), stdout=self.log, stderr=subprocess.STDOUT,
            preexec_fn=preexec)

    def wait_ready(self):
        """Until /health is 200 and one summary pass has run (for a daemon sharing
        its port, which another may answer for: until it logs that it listens,
        which it does only then)."""
        def ready():
            if self.process.poll() is not None:
                raise RuntimeError("daemon exited; see %s" % self.log.name)
            if self.shares_port:
                with open(self.log.name) as log:
                    return "listening on %s:%d" % (HOST, self.port) in log.read()
            status, body = get(self.url + "/health", 2)
            return status == 200 and json.loads(body)["summary"]["passes"] > 0
        wait_until(ready, 60, "the daemon on port %d" % self.port)

    def passes(self):
        """Summary passes so far."""
        status, body = get(self.url + "/health", 2)
        return json.loads(body)["summary"]["passes"] if status == 200 else -1

    def cpu_seconds(self):
        """CPU time (user and system) the daemon process has used."""
        with open("/proc/%d/stat" % self.process.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self):
        """Resident memory of the daemon process."""
        with open("/proc/%d/status" % self.process.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return None

    def stop(self):
        """SIGTERM and wait."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


class Ceiling:
    """The bare Klein constant route in its own process."""

    def __init__(self):
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.ceiling", str(self.port)],
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        wait_until(lambda: get("http://%s:%d/" % (HOST, self.port), 1)[0] == 200, 30,
                   "the ceiling server")

    def stop(self):
        """Kill it."""
        self.process.terminate()
        self.process.wait()


def report(name, result, ceiling=None, **extra):
    """One row of the table."""
    row = {"scenario": name}
    row.update(result.as_dict())
    if ceiling:
        row["ratio_to_ceiling"] = round(result.rps / ceiling, 3)
    row.update(extra)
    return row


class Bench:
    """Runs the scenarios; keeps the rows."""

    def __init__(self, args):
        self.args = args
        self.driver = best_driver()
        self.rows = []
        self.ceiling_rps = None
        self.tmp = tempfile.mkdtemp(prefix="dataserv-bench-")
        os.chmod(self.tmp, 0o755)
        self.cluster = None
        self.dsn = None

    # -- plumbing -----------------------------------------------------------

    def load(self, port, requests, seconds=None, connections=None, repeat=None):
        """Run the driver against a port ``--repeat`` times; the run with the median
        rate stands for all (the machine is shared and noisy), and ``runs`` keeps
        every rate. ``requests`` is a list, or a function that makes the list: signed
        requests are made afresh for every run, since their Date header is only
        good for --auth-timeout seconds (30 by default)."""
        runs = [self.driver.run(HOST, port, requests() if callable(requests) else requests,
                                connections or self.args.connections,
                                seconds or self.args.seconds)
                for _ in range(repeat or self.args.repeat)]
        return median_run(runs)

    def start_database(self):
        """A throwaway, durable PostgreSQL."""
        from dataserv.storage.pgcluster import Cluster

        self.cluster = Cluster(os.path.join(self.tmp, "pg-data"), durable=True)
        self.dsn = self.cluster.start()

    def daemon(self, *flags, port=None, limits=False, preexec=None):
        """Start and wait for a daemon on the benchmark database. The load comes
        from one address, as a conformance suite's does, so the daemon runs with
        --no-limits unless ``limits`` (the scenarios that measure their cost)."""
        if not limits:
            flags = ("--no-limits",) + flags
        d = Daemon(self.dsn, port or free_port(), self.tmp, *flags, preexec=preexec)
        try:
            d.wait_ready()
        except Exception:
            d.stop()
            raise
        return d

    def measure_ceiling(self):
        """The driver against a constant Klein route (median of runs)."""
        ceiling = Ceiling()
        try:
            requests = [presign.raw_get("%s:%d" % (HOST, ceiling.port), "/api/ping/x")]
            best = self.load(ceiling.port, requests * 64, repeat=self.args.ceiling_runs)
        finally:
            ceiling.stop()
        self.ceiling_rps = best.rps
        self.rows.append(report("ceiling: bare Klein, constant answer", best, self.ceiling_rps))

    def limited_daemon(self, *flags):
        """A daemon with the registry's limits on, as in production, behind a
        trusted proxy (this machine), so that registrations can come from many
        networks (presign.forwarded_from_many_networks): what the limits cost the
        register and height scenarios."""
        return self.daemon("--trusted-proxies", HOST, *flags, limits=True)

    # -- scenarios against our own daemon -----------------------------------

    def seed_farmers(self, count, last_seen, v2_too=False):
        """COPY ``count`` bench farmers (keys known) into an empty table. With
        ``v2_too``, as many others for DATASERV-V2 pings (a farmer that has used v2
        is refused legacy headers), kept in ``self.v2_field``."""
        seed.truncate(self.dsn)
        field = presign.farmers(count)
        self.v2_field = presign.farmers(count, tag="bench-v2") if v2_too else []
        seed.copy_farmers(self.dsn, [(f.address, f.address, 1, last_seen, last_seen)
                                     for f in field + self.v2_field])
        return field

    def server_address(self, url):
        """The server's address from /api/address."""
        return json.loads(get(url + "/api/address")[1])["address"]

    def scenario_register(self, port, url, name="a. register", headers_for=None):
        """a. register fresh farmers; every 200 must be a row."""
        address = self.server_address(url)
        runs, answered, rows = [], 0, 0
        for attempt in range(self.args.repeat):  # fresh farmers every run
            if self.dsn:
                seed.truncate(self.dsn)
            field = presign.farmers(self.args.register_farmers,
                                    tag="register-%d-%d" % (time.time(), attempt))
            requests = presign.signed_requests(
                "%s:%d" % (HOST, port), field, address, lambda f: "/api/register/" + f.address,
                headers_for=headers_for)
            result = self.load(port, requests, repeat=1)
            runs.append(result)
            if self.dsn:
                answered += result.requests - result.non_2xx
                rows += seed.count(self.dsn, "SELECT count(*) FROM farmers")
        extra = {"answered_200": answered, "rows": rows, "lost": max(0, answered - rows)} \
            if self.dsn else {}
        self.rows.append(report(name, median_run(runs), self.ceiling_rps, **extra))

    def _pings(self, port, url, field, request_bound=False, rounds=None):
        """Signed pings, every one different (each is accepted once): ``rounds`` Dates
        per farmer, enough for a run by default."""
        address = self.server_address(url)
        if rounds is None:
            rounds = presign.rounds_for(len(field), self.args.seconds)
        return presign.signed_rounds(
            "%s:%d" % (HOST, port), field, address, lambda f: "/api/ping/" + f.address,
            rounds, request_bound)

    def scenario_ping(self, name, port, url, field, warm_up=False, v2_name=None):
        """b./c. authenticated pings from the seeded field.

        With ``warm_up`` every farmer pings once first (not measured), so that under
        the throttle the measured pings are the ones that write nothing. With
        ``v2_name`` the same runs are made with DATASERV-V2 headers too, legacy and
        v2 runs taking turns on the same daemon (the machine is noisy), and the v2
        row carries its median rate over the legacy one.
        """
        kinds = [False] + ([True] if v2_name else [])
        # v2 pings come from farmers of their own (self.v2_field, as many).
        fields = {False: field, True: getattr(self, "v2_field", None) or field}
        if warm_up:
            for kind in kinds:
                requests = self._pings(port, url, fields[kind], kind, rounds=1)
                self.driver.run(HOST, port, requests, self.args.connections,
                                max(1.0, len(requests) / 1000.0))
        runs = {kind: [] for kind in kinds}
        for _ in range(self.args.repeat):
            for kind in kinds:
                runs[kind].append(self.load(
                    port, lambda: self._pings(port, url, fields[kind], kind), repeat=1))
        result = median_run(runs[False])
        self.rows.append(report(name, result, self.ceiling_rps))
        if v2_name:
            request_bound = median_run(runs[True])
            self.rows.append(report(v2_name, request_bound, self.ceiling_rps,
                                    vs_legacy=round(request_bound.rps / result.rps, 3)))
        return result

    def scenario_height(self, port, url, field, name="d. height"):
        """d. height updates."""
        address = self.server_address(url)
        def requests():
            return presign.signed_rounds(
                "%s:%d" % (HOST, port), field, address,
                lambda f: "/api/height/%s/%d" % (f.address, 100 + len(f.address)),
                presign.rounds_for(len(field), self.args.seconds, rate=3000))
        self.rows.append(report(name, self.load(port, requests), self.ceiling_rps))

    def scenario_lists(self, port, online):
        """e./f. the public lists."""
        host = "%s:%d" % (HOST, port)
        plain = presign.raw_get(host, "/api/online/json")
        gz = presign.raw_get(host, "/api/online/json", [("Accept-Encoding", "gzip")])
        total = presign.raw_get(host, "/api/total")
        for name, raw in (("e. online/json gzip, %d online" % online, gz),
                          ("e. online/json identity, %d online" % online, plain),
                          ("f. total", total)):
            self.rows.append(report(name, self.load(port, [raw] * 64), self.ceiling_rps))

    # -- the whole run ------------------------------------------------------

    # The steps of a local run, in order; --only picks some of them by name.
    STEPS = ("ceiling", "register", "limits", "ping", "scale-out", "throttled", "height", "lists",
             "mix", "summary", "rss")

    def wanted(self, step):
        """Whether --only (if given) asks for ``step``."""
        return not self.args.only or step in self.args.only

    def run_local(self, progress):
        """Every step (or those --only names), against daemons we start."""
        progress.step("starting PostgreSQL")
        self.start_database()
        # The schema comes from the daemon's migrations: one start makes it, whichever
        # steps --only leaves out.
        self.daemon().stop()
        if self.wanted("ceiling"):
            progress.step("ceiling (bare Klein)")
            self.measure_ceiling()

        if self.wanted("register"):
            progress.step("a. register")
            d = self.daemon("--max-ping", "0")
            try:
                self.scenario_register(d.port, d.url)
            finally:
                d.stop()
            progress.step("a. register, registrations counted per network")
            d = self.limited_daemon("--max-ping", "0")
            try:
                self.scenario_register(d.port, d.url, LIMITED_REGISTER,
                                       presign.forwarded_from_many_networks)
            finally:
                d.stop()

        if self.wanted("limits"):  # seeds the farmers table with its own field
            progress.step("limits: on vs --no-limits")
            self.scenario_limits_cost(presign.farmers(self.args.farmers))
        # (After the limits step: the ping steps need the v2 farmers in the table too.)
        field = self.seed_farmers(self.args.farmers, time.time() - 3600, v2_too=True)
        single = None
        if self.wanted("ping"):
            progress.step("b. ping, every one written (legacy and v2)")
            d = self.daemon("--max-ping", "0")
            try:
                single = self.scenario_ping("b. ping, each a durable write", d.port, d.url,
                                            field, v2_name="b. ping v2, each a durable write")
            finally:
                d.stop()

        if self.wanted("scale-out"):
            progress.step("scale-out: 2 daemons, SO_REUSEPORT")
            port = free_port()
            pair = [self.daemon("--max-ping", "0", "--reuse-port", port=port) for _ in range(2)]
            try:
                both = self.load(port, lambda: self._pings(port, pair[0].url, field))
                extra = {"vs_one_daemon": round(both.rps / single.rps, 3)} if single else {}
                self.rows.append(report("scale-out: b. with 2 daemons", both, self.ceiling_rps,
                                        **extra))
            finally:
                for d in pair:
                    d.stop()

        if self.wanted("throttled") or self.wanted("height"):
            d = self.daemon()
            try:
                if self.wanted("throttled"):
                    progress.step("c. ping at the default throttle (legacy and v2)")
                    self.scenario_ping("c. ping, default throttle", d.port, d.url, field,
                                       warm_up=True, v2_name="c. ping v2, default throttle")
                if self.wanted("height"):
                    progress.step("d. height")
                    self.scenario_height(d.port, d.url, field)
            finally:
                d.stop()
        if self.wanted("height"):
            progress.step("d. height, credited at the fill rate")
            # The heights come from this one address (no proxy header): the per-IP
            # rate limit raised out of reach, as in the limits step; the row is
            # about crediting at the fill rate.
            d = self.limited_daemon("--rate-limit", "1000000", "--rate-burst", "1000000")
            try:
                self.scenario_height(d.port, d.url, field, LIMITED_HEIGHT)
            finally:
                d.stop()

        if self.wanted("lists"):
            online = self.args.online
            self.seed_farmers(online, time.time())
            progress.step("e./f. lists with %d online" % online)
            d = self.daemon()
            try:
                self.scenario_lists(d.port, online)
            finally:
                d.stop()

        if self.wanted("mix"):
            progress.step("g. field mix")
            self.scenario_mix(field)

        if self.wanted("summary"):
            progress.step("h. summary pass at 1M / 100k")
            self.scenario_summary_pass()
        if self.wanted("rss"):
            progress.step("i. daemon RSS at 100k online")
            d = self.daemon()
            try:
                wait_until(lambda: d.passes() >= 3, 120, "three summary passes")
                self.rows.append({"scenario": "i. daemon RSS, %d online" % self.args.big_online,
                                  "rss_mb": round(d.rss_mb(), 1)})
            finally:
                d.stop()

    def scenario_limits_cost(self, field):
        """What the connection limits cost: ping (throttled, as most field pings are)
        and /api/online/json with every limit on against --no-limits.

        "On" is every default limit with the rate limit raised out of reach (one
        address drives thousands of requests a second here; at the default rate
        nearly all would be 429, which is cheap but measures nothing). The two
        daemons run one after the other, alternating, ``--repeat`` times each; the
        median run of each stands, with the median of the daemon's CPU time per
        answer.
        """
        runs = {"on": {"ping": [], "json": []}, "off": {"ping": [], "json": []}}
        seed.truncate(self.dsn)
        seed.copy_farmers(self.dsn, [(f.address, f.address, 5, time.time() - 3600, time.time())
                                     for f in field])
        # --max-ping of a day: every ping is throttled in every run. At the default
        # 60 s the farmers' windows run out every few daemons, and whichever mode
        # ran then paid for a round of durable writes.
        throttled = ("--max-ping", "86400")
        modes = (("on", throttled + ("--rate-limit", "1000000", "--rate-burst", "1000000"), True),
                 ("off", throttled, False))
        for repeat in range(self.args.repeat):
            # On, off, off, on, ...: neither gets the quieter half of a noisy machine.
            for mode, flags, limits in (modes if repeat % 2 == 0 else modes[::-1]):
                d = self.daemon(*flags, limits=limits)
                try:
                    host = "%s:%d" % (HOST, d.port)
                    pings = self._pings(d.port, d.url, field)
                    self.driver.run(HOST, d.port, pings, self.args.connections,
                                    max(1.0, len(pings) / 1000.0))  # warm caches
                    raw = presign.raw_get(host, "/api/online/json", [("Accept-Encoding", "gzip")])
                    for what, requests in (("ping", self._pings(d.port, d.url, field)),
                                           ("json", [raw] * 64)):
                        cpu = d.cpu_seconds()
                        result = self.driver.run(HOST, d.port, requests,
                                                 self.args.connections, self.args.seconds)
                        # The daemon's CPU per answer: steadier than the rate on a
                        # shared machine, where the rate moves with the neighbours.
                        result.cpu_us = 1e6 * (d.cpu_seconds() - cpu) / max(1, result.requests)
                        runs[mode][what].append(result)
                finally:
                    d.stop()
        for what, label in (("ping", "ping, throttled"),
                            ("json", "online/json gzip, %d online" % len(field))):
            cpu = {mode: statistics.median(r.cpu_us for r in runs[mode][what])
                   for mode in runs}
            on, off = median_run(runs["on"][what]), median_run(runs["off"][what])
            self.rows.append(report("limits off: " + label, off, self.ceiling_rps,
                                    cpu_us_per_request=round(cpu["off"], 1)))
            self.rows.append(report("limits on: " + label, on, self.ceiling_rps,
                                    vs_no_limits=round(on.rps / off.rps, 3),
                                    cpu_us_per_request=round(cpu["on"], 1),
                                    cpu_vs_no_limits=round(cpu["on"] / cpu["off"], 3)))

    def scenario_mix(self, field):
        """g. pings on their schedule while dashboards poll; ping p99 during passes."""
        seed.truncate(self.dsn)
        seed.copy_farmers(self.dsn, [(f.address, f.address, 5, time.time() - 60, time.time() - 600)
                                     for f in field])
        d = self.daemon("--summary-interval", "1")
        try:
            host = "%s:%d" % (HOST, d.port)
            lists = [presign.raw_get(host, p, h) for p, h in (
                ("/api/online/json", [("Accept-Encoding", "gzip")]), ("/api/total", []),
                ("/api/online", []))] * 32
            dashboards = subprocess.Popen(
                [sys.executable, "-c",
                 "import sys, pickle; from benchmarks.drivers import best_driver;"
                 "r = pickle.load(sys.stdin.buffer); d = best_driver();"
                 "print(d.run('%s', %d, r, 4, %f).rps)" % (HOST, d.port, self.args.seconds)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            import pickle

            dashboards.stdin.write(pickle.dumps(lists))
            dashboards.stdin.close()
            passes_before = d.passes()
            pings = self.load(d.port, lambda: self._pings(d.port, d.url, field),
                              connections=max(1, self.args.connections - 4), repeat=1)
            passes = d.passes() - passes_before
            list_rps = float(dashboards.stdout.read().strip() or 0)
            dashboards.wait()
            self.rows.append(report("g. field mix: pings (12 conns) + dashboards (4 conns)",
                                    pings, self.ceiling_rps, dashboard_rps=round(list_rps, 1),
                                    summary_passes_during=passes))
        finally:
            d.stop()

    def scenario_summary_pass(self):
        """h. run benchmarks.summary_pass against the benchmark database."""
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.summary_pass", self.dsn,
             "--registered", str(self.args.big_registered), "--online", str(self.args.big_online)],
            capture_output=True, text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
        if not lines:
            raise RuntimeError("summary_pass failed: " + out.stderr[-2000:])
        data = json.loads(lines[-1])
        data["scenario"] = "h. summary pass, %d registered / %d online" % (
            self.args.big_registered, self.args.big_online)
        self.rows.append(data)

    def run_remote(self, progress, url):
        """The protocol scenarios against somebody else's server."""
        from urllib.parse import urlparse

        parsed = urlparse(url)
        port = parsed.port or 80
        global HOST
        HOST = parsed.hostname
        progress.step("ceiling (bare Klein, on this machine)")
        host, HOST = HOST, "127.0.0.1"
        self.measure_ceiling()
        HOST = host
        progress.step("a. register")
        self.scenario_register(port, url)
        progress.step("registering the ping field")
        field = presign.farmers(self.args.farmers, tag="remote-%d" % time.time())
        address = self.server_address(url)
        self.load(port, presign.signed_requests(
            "%s:%d" % (HOST, port), field, address, lambda f: "/api/register/" + f.address),
            seconds=max(2.0, self.args.farmers / 500))
        progress.step("c. ping")
        self.scenario_ping("c. ping (server's throttle)", port, url, field)
        progress.step("d. height")
        self.scenario_height(port, url, field)
        progress.step("e./f. lists")
        self.scenario_lists(port, -1)

    def close(self):
        """Stop PostgreSQL and remove the scratch directory."""
        if self.cluster is not None:
            self.cluster.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def machine():
    """What the figures were measured on."""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        model = ""
    return {"cpus": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "kernel": platform.release()}


def table(rows):
    """The rows as a text table."""
    lines = ["%-52s %9s %8s %8s %7s %6s %6s" % (
        "scenario", "req/s", "p50 ms", "p99 ms", "ratio", "non2xx", "sockerr")]
    for row in rows:
        if "rps" in row:
            lines.append("%-52s %9.0f %8.2f %8.2f %7s %6d %6d" % (
                row["scenario"][:52], row["rps"], row["p50_ms"], row["p99_ms"],
                row.get("ratio_to_ceiling", "-"), row["non_2xx"], row["socket_errors"]))
            more = {k: v for k, v in row.items() if k in (
                "runs", "rows", "answered_200", "lost", "vs_one_daemon", "vs_legacy",
                "vs_no_limits", "cpu_us_per_request", "cpu_vs_no_limits", "dashboard_rps",
                "summary_passes_during")}
            if more:
                lines.append("    " + json.dumps(more))
        else:
            lines.append("%-52s %s" % (row["scenario"][:52], json.dumps(
                {k: v for k, v in row.items() if k != "scenario"})))
    return "\n".join(lines)


def main(argv=None):
    """Command line entry point."""
    parser = argparse.ArgumentParser(description="dataserv benchmark")
    parser.add_argument("--url", help="drive this server instead of starting our own")
    parser.add_argument("--seconds", type=float, default=8.0, help="per load run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--ceiling-runs", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3, help="runs per load scenario")
    parser.add_argument("--farmers", type=int, default=10000, help="ping/height field")
    parser.add_argument("--register-farmers", type=int, default=30000)
    parser.add_argument("--online", type=int, default=10000, help="online for e.")
    parser.add_argument("--big-registered", type=int, default=1000000)
    parser.add_argument("--big-online", type=int, default=100000)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--only", type=lambda text: set(text.split(",")), default=None,
                        help="comma-separated steps to run (local runs): "
                             + ",".join(Bench.STEPS))
    args = parser.parse_args(argv)
    unknown = (args.only or set()) - set(Bench.STEPS)
    if unknown:
        parser.error("--only: unknown step(s) %s; choose from %s"
                     % (",".join(sorted(unknown)), ",".join(Bench.STEPS)))

    bench = Bench(args)
    # Steps that make more than one row (a second one with the limits on).
    parts = {"register": 2, "height": 2}
    progress = Progress(6 if args.url else 1 + sum(
        parts.get(step, 1) for step in (args.only or Bench.STEPS)))
    try:
        if args.url:
            bench.run_remote(progress, args.url)
        else:
            bench.run_local(progress)
    finally:
        progress.finish()
        bench.close()
    result = {"machine": machine(), "driver": bench.driver.name,
              "connections": args.connections, "seconds_per_run": args.seconds,
              "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
              "rows": bench.rows}
    print(table(bench.rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
