"""Scenario h: one summary pass at 1 000 000 registered / 100 000 online farmers.

``python -m benchmarks.summary_pass DSN [--registered N] [--online N]`` seeds the
farmers table with COPY (and 30 days of uptime buckets for the online farmers, made
in SQL), then runs the real Summariser on the real reactor three times while a 5 ms
LoopingCall watches how late the reactor gets to it (the longest stall). Prints one
JSON line.
"""

import argparse
import hashlib
import json
import resource
import statistics
import subprocess
import sys
import time

from twisted.internet import defer, task

from benchmarks import seed
from dataserv.daemon import process
from dataserv.identity.addresses import nodeid_to_address
from dataserv.daemon.config import Settings
from dataserv.storage.database import Database
from dataserv.storage.store import FarmerStore
from dataserv.daemon.service import summariser_hooks
from dataserv.registry.summary import Summariser
from dataserv.web.snapshot import SnapshotRenderer


def fake_addresses(count):
    """Valid, distinct P2PKH addresses (no keys needed to seed)."""
    for i in range(count):
        yield nodeid_to_address(hashlib.sha256(b"seed-%d" % i).digest()[:20].hex())


def seed_field(dsn, registered, online, now):
    """COPY ``registered`` farmers, ``online`` of them seen within the last minutes."""
    seed.truncate(dsn)
    rows = []
    for i, address in enumerate(fake_addresses(registered)):
        seen = now - (i % 600) if i < online else now - 86400 - i
        rows.append((address, address, (i * 7919) % 20000, now - 90 * 86400, seen))
    seed.copy_farmers(dsn, rows)
    conn = seed.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO uptime_days (farmer_id, day, online_seconds)"
                " SELECT f.id, d::date, 80000 FROM farmers f,"
                " generate_series(current_date - 29, current_date, interval '1 day') d"
                " WHERE f.last_seen >= %s", (now - 900,))
            # Do the bulk load's maintenance now, so autovacuum does not compete with
            # the passes for the two cores in the middle of the measurement.
            cur.execute("VACUUM ANALYZE farmers")
            cur.execute("VACUUM ANALYZE uptime_days")
            cur.execute("CHECKPOINT")
    finally:
        conn.close()


class StallWatch:
    """How late a 5 ms LoopingCall fires: the longest time the reactor was busy."""

    def __init__(self, reactor, period=0.005):
        self.reactor = reactor
        self.period = period
        self.longest = 0.0
        self._last = None
        self._loop = task.LoopingCall(self._tick)

    def _tick(self):
        now = time.perf_counter()
        if self._last is not None:
            self.longest = max(self.longest, now - self._last - self.period)
        self._last = now

    def start(self):
        """Begin watching."""
        self._loop.start(self.period)

    def reset(self):
        """Forget what was seen so far."""
        self.longest, self._last = 0.0, None

    def stop(self):
        """Stop watching."""
        self._loop.stop()


@defer.inlineCallbacks
def measure(reactor, dsn, registered, online, passes=5):
    """Seed, then time ``passes`` summary passes; returns the report dict."""
    settings = Settings(database=dsn)
    db = Database(reactor, dsn, pool_size=2)
    db.startService()
    yield db.when_ready()
    # Seed from a child process: the million rows made in Python would otherwise
    # stay in this process's heap and collector, which a daemon does not have.
    seeded_at = time.time()
    yield task.deferLater(reactor, 0, subprocess.run, [
        sys.executable, "-m", "benchmarks.summary_pass", dsn, "--seed-only",
        "--registered", str(registered), "--online", str(online)], check=True)
    seeding = time.time() - seeded_at
    # Built as the daemon builds it (dataserv.daemon.service).
    summariser = Summariser(FarmerStore(db, reactor), settings, reactor, SnapshotRenderer(settings),
                            **summariser_hooks(reactor))
    process.tune()  # as dataserv.daemon.service.Dataserv.startService does
    watch = StallWatch(reactor)
    watch.start()
    walls, stalls, phases = [], [], []
    for _ in range(passes):
        yield task.deferLater(reactor, 0.2, lambda: None)
        watch.reset()
        started = time.perf_counter()
        yield summariser.run_pass()
        walls.append(time.perf_counter() - started)
        phases.append(summariser.last_pass_phases)
        yield task.deferLater(reactor, 0.02, lambda: None)
        stalls.append(watch.longest)
    watch.stop()
    snapshot = summariser.snapshot
    db.stopService()
    return {
        "registered": registered,
        "online": snapshot.online_farmers if snapshot else None,
        "seed_seconds": round(seeding, 1),
        "pass_seconds": [round(w, 3) for w in walls],
        "pass_seconds_median": round(statistics.median(walls), 3),
        "pass_seconds_median_after_first": round(statistics.median(walls[1:]), 3),
        "longest_stall_ms": round(max(stalls) * 1000, 1),
        "longest_stall_ms_after_first": round(max(stalls[1:]) * 1000, 1),
        "stall_ms_per_pass": [round(s * 1000, 1) for s in stalls],
        "phases_per_pass": phases,
        "online_json_bytes": len(snapshot.online_json) if snapshot else None,
        "online_json_gzip_bytes": len(snapshot.online_json_gzip) if snapshot else None,
        "failures": summariser.failures,
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main(argv=None):
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dsn")
    parser.add_argument("--registered", type=int, default=1000000)
    parser.add_argument("--online", type=int, default=100000)
    parser.add_argument("--seed-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.seed_only:
        seed_field(args.dsn, args.registered, args.online, time.time())
        return 0
    from twisted.internet import reactor

    outcome = {}

    def done(report):
        outcome["report"] = report
        print(json.dumps(report))

    def failed(failure):
        outcome["error"] = failure
        failure.printTraceback()

    d = measure(reactor, args.dsn, args.registered, args.online)
    d.addCallbacks(done, failed).addBoth(lambda _: reactor.stop())
    reactor.run()
    return 0 if "report" in outcome else 1


if __name__ == "__main__":
    sys.exit(main())
