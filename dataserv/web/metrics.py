"""Metrics for operators, exposed at /metrics through ``prometheus_client``.

Each daemon has a registry of its own (never the library's global one, so a test can
build several daemons). The hot path keeps plain Python counters -- a dict increment
and a bisect per request -- and a custom collector turns them, and the counters the
other parts already keep, into metric families at scrape time.

Other parts report through the :class:`Metrics` object they are given:
``metrics.refused(limit_name)`` when a limit turns a request away,
``metrics.database_error(kind)`` when an answer is a 503 because of the database,
``metrics.proof_checked(outcome, n)`` for the proofs of each answered challenge,
``metrics.challenge_answered(outcome)`` for each answered challenge and
``metrics.plot_changed(change)`` when a plot is registered or removed. The challenge
rounds keep their own figures (:class:`dataserv.proofs.rounds.ChallengeRounds`),
exported by :meth:`Metrics.watch_rounds`.
"""

from bisect import bisect_left
from collections import Counter
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric)
from prometheus_client.exposition import generate_latest

# The text format generate_latest() writes (what /metrics has always declared).
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

_ROUTES = {"address", "register", "ping", "height", "online", "total", "bandwidth",
           "audit", "farmer", "openapi.json", "proofs"}
_ROOT_ROUTES = {"health", "metrics", "", "favicon.ico"}

# Upper bounds (seconds) of the latency buckets; +Inf is implied.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0)
# Upper bounds of the ping batch size buckets.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 5000)


def route_of(path: bytes) -> str:
    """A short, bounded name for a request path (never the farmer's id)."""
    parts = path.split(b"?", 1)[0].decode("latin-1").split("/")
    if len(parts) > 2 and parts[1] == "api" and parts[2] in _ROUTES:
        name = parts[2]
        if name in ("online", "total") and len(parts) > 3 and parts[3] in ("json", "history"):
            name += "_" + parts[3]
        return name.replace(".", "_")
    if len(parts) > 2 and parts[1] == "static":
        return "static"
    if len(parts) == 2 and parts[1] in _ROOT_ROUTES:
        return parts[1].replace(".", "_") or "root"
    return "other"


class RequestStats:
    """Finished requests by route and status, and their latency by route."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        # route -> [count per bucket (the last one is +Inf), sum of seconds]
        self.latency: Dict[str, List[Any]] = {}

    def count(self, request: Any, seconds: Optional[float] = None) -> None:
        """Count one finished request; ``seconds`` is how long it took, when known."""
        route = route_of(request.uri)
        self.counts[(route, request.code)] += 1
        if seconds is not None:
            entry = self.latency.get(route)
            if entry is None:
                entry = self.latency[route] = [[0] * (len(LATENCY_BUCKETS) + 1), 0.0]
            entry[0][bisect_left(LATENCY_BUCKETS, seconds)] += 1
            entry[1] += seconds


def _by_label(name: str, documentation: str, label: str,
              counts: Mapping[str, float]) -> CounterMetricFamily:
    """A counter family with one label, a sample per key of ``counts``, in order."""
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, n in sorted(counts.items()):
        family.add_metric([value], n)
    return family


def _cumulative(bounds: Tuple[float, ...], counts: List[int]) -> List[Tuple[str, int]]:
    buckets, total = [], 0
    for bound, n in zip(bounds + (float("inf"),), counts):
        total += n
        buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
    return buckets


def _batch_histogram(sizes: Dict[int, int]) -> Tuple[List[Tuple[str, int]], float]:
    counts = [0] * (len(BATCH_BUCKETS) + 1)
    for size, n in sizes.items():
        counts[bisect_left(BATCH_BUCKETS, size)] += n
    return _cumulative(BATCH_BUCKETS, counts), float(sum(s * n for s, n in sizes.items()))


def verified_tb(snapshot: Any) -> Optional[float]:
    """Verified capacity of the last pass, once proofs provide it.

    Hook for the proofs work: give the snapshot a ``verified_tb`` attribute and
    ``dataserv_verified_tb`` appears on /metrics.
    """
    return getattr(snapshot, "verified_tb", None)


class DaemonCollector:
    """Reads the daemon's own counters when Prometheus scrapes.

    Any part may be None (a test that builds only some of them); its families are
    then left out.
    """

    def __init__(self, metrics: "Metrics", farmers: Any = None, summariser: Any = None,
                 database: Any = None, clock: Any = None) -> None:
        self.metrics = metrics
        self.farmers = farmers
        self.summariser = summariser
        self.database = database
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        """Every family, built from the current counters."""
        yield from self._requests()
        yield from self._limits_and_errors()
        if self.farmers is not None:
            yield from self._farmers()
        if self.database is not None:
            yield from self._pool()
        if self.summariser is not None:
            yield from self._summary()

    def _requests(self) -> Iterator[Metric]:
        stats = self.metrics.requests
        requests = CounterMetricFamily(
            "dataserv_requests", "Finished HTTP requests by route and status.",
            labels=["route", "code"])
        for (route, code), n in sorted(stats.counts.items(), key=str):
            requests.add_metric([route, str(code)], n)
        yield requests
        latency = HistogramMetricFamily(
            "dataserv_request_duration_seconds",
            "Time from a request's first line to its last byte, by route.", labels=["route"])
        for route, (counts, total) in sorted(stats.latency.items()):
            latency.add_metric([route], _cumulative(LATENCY_BUCKETS, counts), total)
        yield latency

    def _limits_and_errors(self) -> Iterator[Metric]:
        counts = self.metrics
        yield _by_label("dataserv_refused", "Requests turned away by a limit, by limit.",
                        "limit", counts.refusals)
        yield _by_label("dataserv_database_errors",
                        "Answers that were 503 because of the database, by kind.", "kind",
                        counts.database_errors)
        yield _by_label(
            "dataserv_proofs",
            "Proofs of space received, by outcome: valid, invalid, duplicate (sent twice"
            " in one answer), or not checked: late, repeated, unfetched.",
            "outcome", counts.proofs)
        yield _by_label(
            "dataserv_challenge_answers",
            "Answered challenges, by outcome: counted, late, repeated, unfetched.",
            "outcome", counts.answers)
        yield _by_label("dataserv_plot_changes",
                        "Plots registered or removed through this daemon.", "change",
                        counts.plot_changes)

    def _farmers(self) -> Iterator[Metric]:
        timings = self.farmers.timings
        yield _by_label("dataserv_db_transactions", "Database transactions by name.", "name",
                        timings.counts)
        yield _by_label("dataserv_db_transaction_seconds",
                        "Time spent in database transactions by name.", "name",
                        {name: timings.seconds.get(name, 0.0) for name in timings.counts})
        yield CounterMetricFamily(
            "dataserv_throttled_ping_replays",
            "Throttled pings found, once their key was claimed, to repeat a request "
            "another daemon had taken (they wrote nothing).",
            value=self.farmers.late_replays)
        pings = self.farmers.pings
        buckets, total = _batch_histogram(getattr(pings, "sizes", {}))
        batches = HistogramMetricFamily(
            "dataserv_ping_batch_size", "Pings written per group commit.")
        batches.add_metric([], buckets, total)
        yield batches
        verifier = getattr(self.farmers, "verifier", None)
        if verifier is not None:
            yield CounterMetricFamily(
                "dataserv_signature_verifications",
                "Signatures checked by recovering the public key (the costly part).",
                value=verifier.recoveries)
            yield CounterMetricFamily(
                "dataserv_signature_cache_hits",
                "Requests whose identical headers were verified before.",
                value=verifier.cache_hits)

    def _pool(self) -> Iterator[Metric]:
        _, details = self.database.status()
        connections = details.get("connections", {})
        alive = GaugeMetricFamily(
            "dataserv_db_connections", "Pooled PostgreSQL connections by state.",
            labels=["state"])
        idle = connections.get("idle", 0)
        alive.add_metric(["alive"], connections.get("alive", 0))
        alive.add_metric(["idle"], idle)
        alive.add_metric(["busy"], max(0, connections.get("total", 0) - idle))
        yield alive

    def _summary(self) -> Iterator[Metric]:
        summariser = self.summariser
        yield CounterMetricFamily("dataserv_summary_passes", "Summary passes that finished.",
                                  value=summariser.passes)
        yield CounterMetricFamily("dataserv_summary_failures", "Summary passes that failed.",
                                  value=summariser.failures)
        last = getattr(summariser, "last_pass_seconds", None)
        if last is not None:
            yield GaugeMetricFamily("dataserv_summary_pass_seconds",
                                    "Duration of the last summary pass.", value=last)
        phases = GaugeMetricFamily("dataserv_summary_phase_seconds",
                                   "Seconds per step of the last good pass.", labels=["phase"])
        for phase, seconds in sorted(summariser.last_pass_phases.items()):
            phases.add_metric([phase], seconds)
        yield phases
        snapshot = summariser.snapshot
        if snapshot is None:
            return
        if self.clock is not None:
            yield GaugeMetricFamily(
                "dataserv_snapshot_age_seconds",
                "Seconds since the snapshot that the public lists serve was built.",
                value=max(0.0, self.clock.seconds() - snapshot.built_at))
        yield GaugeMetricFamily("dataserv_online_farmers", "Farmers online at the last pass.",
                                value=snapshot.online_farmers)
        yield GaugeMetricFamily("dataserv_claimed_tb",
                                "Terabytes claimed by online farmers (total_TB).",
                                value=snapshot.total_tb)
        verified = verified_tb(snapshot)
        if verified is not None:
            yield GaugeMetricFamily("dataserv_verified_tb",
                                    "Terabytes backed by proofs of space (verified_TB).",
                                    value=verified)


class RoundsCollector:
    """Reads the challenge rounds' figures when Prometheus scrapes."""

    def __init__(self, rounds: Any) -> None:
        self.rounds = rounds

    def collect(self) -> Iterator[Metric]:
        """The rounds' families; the gauges once a round has scored."""
        rounds = self.rounds
        yield CounterMetricFamily("dataserv_challenge_rounds",
                                  "Challenge rounds that finished.", value=rounds.rounds)
        yield CounterMetricFamily("dataserv_challenge_round_failures",
                                  "Challenge rounds that failed.", value=rounds.failures)
        duration = HistogramMetricFamily(
            "dataserv_challenge_round_duration_seconds",
            "Time a challenge round took (scoring, drawing, pruning), failed ones too.")
        duration.add_metric([], _cumulative(rounds.DURATION_BUCKETS, rounds.duration_counts),
                            rounds.seconds_total)
        yield duration
        if rounds.scored is None:
            return
        plots, verified = rounds.scored
        yield GaugeMetricFamily("dataserv_plots",
                                "Registered plots, all farmers, at the last round.",
                                value=plots)
        yield GaugeMetricFamily(
            "dataserv_verified_bytes",
            "Bytes proved by every farmer's plots, at the last round (online or not).",
            value=verified)
        yield GaugeMetricFamily("dataserv_challenges_drawn",
                                "Challenges drawn by the last round.", value=rounds.last_drawn)


class Metrics:
    """One daemon's registry and the counters that other parts increment."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = RequestStats()
        self.refusals: Counter = Counter()
        self.database_errors: Counter = Counter()
        self.proofs: Counter = Counter()
        self.answers: Counter = Counter()
        self.plot_changes: Counter = Counter()

    def watch(self, farmers: Any = None, summariser: Any = None, database: Any = None,
              clock: Any = None) -> None:
        """Export the counters these parts keep (read at scrape time)."""
        self.registry.register(DaemonCollector(self, farmers, summariser, database, clock))

    def watch_rounds(self, rounds: Any) -> None:
        """Export the figures of a :class:`dataserv.proofs.rounds.ChallengeRounds`."""
        self.registry.register(RoundsCollector(rounds))

    def refused(self, limit: str) -> None:
        """A limit named ``limit`` turned one request away."""
        self.refusals[limit] += 1

    def database_error(self, kind: str) -> None:
        """One answer was a 503 because of the database (``kind``: unavailable, ...)."""
        self.database_errors[kind] += 1

    def proof_checked(self, outcome: str, count: int = 1) -> None:
        """``count`` proofs of space had ``outcome`` (valid, invalid, duplicate, late,
        repeated, unfetched)."""
        self.proofs[outcome] += count

    def challenge_answered(self, outcome: str) -> None:
        """One challenge was answered (``outcome``: counted, late, repeated, unfetched)."""
        self.answers[outcome] += 1

    def plot_changed(self, change: str) -> None:
        """A plot was ``registered`` or ``removed``."""
        self.plot_changes[change] += 1

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)
