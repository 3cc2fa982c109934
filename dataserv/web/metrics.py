"""Counters for operators, exposed at /metrics in Prometheus' text format."""

from collections import Counter

_ROUTES = {"address", "register", "ping", "height", "online", "total", "bandwidth",
           "audit", "farmer", "proofs"}


def route_of(path):
    """A short, bounded name for a request path (never the farmer's id)."""
    parts = path.split(b"?", 1)[0].decode("latin-1").split("/")
    if len(parts) > 2 and parts[1] == "api" and parts[2] in _ROUTES:
        name = parts[2]
        if name in ("online", "total") and len(parts) > 3 and parts[3] in ("json", "history"):
            name += "_" + parts[3]
        return name
    if len(parts) == 2 and parts[1] in ("health", "metrics", ""):
        return parts[1] or "root"
    return "other"


class RequestCounter:
    """Finished requests by route and status code."""

    def __init__(self):
        self.counts = Counter()

    def count(self, request):
        """Count one finished request."""
        self.counts[(route_of(request.uri), request.code)] += 1


def _line(lines, metric, value, **labels):
    if labels:
        text = ",".join('%s="%s"' % (k, v) for k, v in sorted(labels.items()))
        lines.append("%s{%s} %s" % (metric, text, value))
    else:
        lines.append("%s %s" % (metric, value))


def render(requests, timings, pings, summariser, connections_alive):
    """The /metrics body: ``timings`` of the store's transactions, the ``pings``
    group commit, the summariser and how many database connections are alive."""
    lines = []

    def family(name, kind, help_text):
        lines.append("# HELP %s %s" % (name, help_text))
        lines.append("# TYPE %s %s" % (name, kind))

    family("dataserv_requests_total", "counter", "Finished HTTP requests.")
    for (route, code), n in sorted(requests.counts.items()):
        _line(lines, "dataserv_requests_total", n, route=route, code=code)
    family("dataserv_db_transactions_total", "counter", "Database transactions by name.")
    for name, n in sorted(timings.counts.items()):
        _line(lines, "dataserv_db_transactions_total", n, name=name)
    family("dataserv_db_transaction_seconds_total", "counter",
           "Time spent in database transactions by name.")
    for name, seconds in sorted(timings.seconds.items()):
        _line(lines, "dataserv_db_transaction_seconds_total", round(seconds, 6), name=name)
    family("dataserv_db_connections_alive", "gauge", "Pooled connections believed alive.")
    _line(lines, "dataserv_db_connections_alive", connections_alive)
    family("dataserv_ping_batches_total", "counter", "Group commits of pings.")
    _line(lines, "dataserv_ping_batches_total", pings.batches)
    family("dataserv_ping_batch_items_total", "counter", "Pings written through group commits.")
    _line(lines, "dataserv_ping_batch_items_total", pings.items)
    family("dataserv_summary_passes_total", "counter", "Summary passes that finished.")
    _line(lines, "dataserv_summary_passes_total", summariser.passes)
    family("dataserv_summary_failures_total", "counter", "Summary passes that failed.")
    _line(lines, "dataserv_summary_failures_total", summariser.failures)
    family("dataserv_summary_phase_seconds", "gauge", "Seconds per step of the last pass.")
    for phase, seconds in sorted(summariser.last_pass_phases.items()):
        _line(lines, "dataserv_summary_phase_seconds", seconds, phase=phase)
    snapshot = summariser.snapshot
    if snapshot is not None:
        family("dataserv_online_farmers", "gauge", "Farmers online at the last pass.")
        _line(lines, "dataserv_online_farmers", snapshot.online_farmers)
        family("dataserv_total_tb", "gauge", "Terabytes managed at the last pass.")
        _line(lines, "dataserv_total_tb", snapshot.total_tb)
    return ("\n".join(lines) + "\n").encode("utf-8")
