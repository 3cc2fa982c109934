"""Builds side by side: ``python -m benchmarks.ab --twistd A --twistd B [--mode throttled]``.

Each ``--twistd`` is the twistd of one build (say, a virtualenv with an older commit
installed). One durable PostgreSQL holds a database per build; 2 000 farmers are seeded in
each; the builds take turns, ``--runs`` rounds, each a daemon started afresh and driven
with signed pings for ``--seconds``: ``throttled`` (every farmer pinged once first, so
the measured pings are throttled) or ``durable`` (``--max-ping 0``: every ping a write).
Printed per run and as the median round of each build: the rate, and the CPU time the
daemon and PostgreSQL spent per answer (from /proc), which moves less than the rate on a
shared machine. A build older than ``--no-limits`` runs without it (the flag is dropped
when its ``--help`` does not know it).
"""

import argparse
import email.utils
import io
import os
import re
import statistics
import subprocess
import sys
import time

import psycopg2

from benchmarks import presign, run, seed


def tree_cpu(pid):
    """CPU seconds (user and system) of a process and its children."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    ticks = 0
    for each in [pid] + [int(p) for p in children.stdout.split()]:
        try:
            with open("/proc/%d/stat" % each) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        except OSError:
            pass  # a child that has just gone
    return ticks / os.sysconf("SC_CLK_TCK")


def postgres_cpu(data_dir):
    """CPU seconds of the postmaster and its children."""
    with open(os.path.join(data_dir, "postmaster.pid")) as f:
        return tree_cpu(int(f.readline()))


def wrapper(twistd, directory):
    """A twistd for ``twistd`` that drops --no-limits if that build lacks it."""
    known = subprocess.run([twistd, "dataserv", "--help"], capture_output=True, text=True)
    if "--no-limits" in known.stdout:
        return twistd
    path = os.path.join(directory, "twistd-%d" % abs(hash(twistd)))
    with open(path, "w") as f:
        f.write('#!/bin/sh\nargs=""\nfor a in "$@"; do [ "$a" = --no-limits ] || '
                'args="$args \\"$a\\""; done\neval exec "%s" $args\n' % twistd)
    os.chmod(path, 0o755)
    return path


def seed_farmers(dsn, field):
    """Empty the build's tables and COPY the field in, in the columns its schema has."""
    conn = seed.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT table_name FROM information_schema.tables"
                        " WHERE table_schema = 'public' AND table_name <> 'schema_version'")
            tables = ", ".join(row[0] for row in cur.fetchall())
            cur.execute("TRUNCATE " + tables + " RESTART IDENTITY CASCADE")
            cur.execute("SELECT column_name FROM information_schema.columns"
                        " WHERE table_name = 'farmers'")
            columns = {row[0] for row in cur.fetchall()}
            wanted = [c for c in ("btc_addr", "payout_addr", "height", "claimed_height",
                                  "reg_time", "height_at", "last_seen") if c in columns]
            values = {"height": "1", "claimed_height": "1", "reg_time": "0",
                      "height_at": "0", "last_seen": "0"}
            rows = io.StringIO("".join(
                "\t".join(f.address if c in ("btc_addr", "payout_addr") else values[c]
                          for c in wanted) + "\n" for f in field))
            cur.copy_expert("COPY farmers (%s) FROM STDIN" % ", ".join(wanted), rows)
            cur.execute("ANALYZE farmers")
    finally:
        conn.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--twistd", action="append", required=True, help="one per build")
    parser.add_argument("--mode", choices=("throttled", "durable"), default="throttled")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--farmers", type=int, default=2000)
    args = parser.parse_args(argv)
    bench = run.Bench(argparse.Namespace(connections=16, seconds=args.seconds, repeat=1,
                                         ceiling_runs=1))
    bench.start_database()
    data_dir = os.path.join(bench.tmp, "pg-data", "pg")
    field = presign.farmers(args.farmers)
    flags = ("--max-ping", "0") if args.mode == "durable" else ()
    builds = [wrapper(t, bench.tmp) for t in args.twistd]
    dsns = {}
    try:
        admin = psycopg2.connect(bench.dsn)
        admin.autocommit = True
        for i, build in enumerate(builds):
            admin.cursor().execute("CREATE DATABASE build_%d" % i)
            dsns[build] = re.sub(r"dbname=\S+", "dbname=build_%d" % i, bench.dsn)
            bench.dsn = dsns[build]
            run.twistd = lambda build=build: build
            bench.daemon().stop()  # its migrations make the build's schema
        admin.close()
        results = {build: [] for build in builds}
        for _ in range(args.runs):
            for build, name in zip(builds, args.twistd):
                bench.dsn = dsns[build]
                run.twistd = lambda build=build: build
                seed_farmers(bench.dsn, field)
                daemon = bench.daemon(*flags)
                try:
                    if args.mode == "throttled":
                        # Dated 20 s back: none of them is one of the measured requests
                        # (each is accepted once).
                        first = presign.signed_requests(
                            "%s:%d" % (run.HOST, daemon.port), field,
                            bench.server_address(daemon.url),
                            lambda f: "/api/ping/" + f.address,
                            date=email.utils.formatdate(time.time() - 20, localtime=True))
                        bench.driver.run(run.HOST, daemon.port, first, 16,
                                         max(1.0, len(first) / 1000.0))
                    requests = bench._pings(daemon.port, daemon.url, field)
                    cpu, pg = daemon.cpu_seconds(), postgres_cpu(data_dir)
                    result = bench.driver.run(run.HOST, daemon.port, requests, 16, args.seconds)
                    answers = max(1, result.requests)
                    row = dict(rps=result.rps, non_2xx=result.non_2xx, p99_ms=result.p99_ms,
                               daemon_us=1e6 * (daemon.cpu_seconds() - cpu) / answers,
                               postgres_us=1e6 * (postgres_cpu(data_dir) - pg) / answers)
                finally:
                    daemon.stop()
                results[build].append(row)
                print(name, {k: round(v, 1) for k, v in row.items()}, flush=True)
        for build, name in zip(builds, args.twistd):
            rows = results[build]
            print("median", name, {k: round(statistics.median(r[k] for r in rows), 1)
                                   for k in ("rps", "daemon_us", "postgres_us")})
    finally:
        bench.cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
