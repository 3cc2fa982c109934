"""Tests for :mod:`dataserv.web.metrics` and the /metrics route."""

import email.utils
from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from dataserv.identity.auth import Verifier
from dataserv.identity.signing import FarmerKey, headers_for
from dataserv.storage.batching import GroupCommit
from dataserv.storage.store import Timings
from dataserv.web import metrics

ADDRESS = "1F3sAm6ZtwLAUnj7d38pGFxtP3RVEvtsbV"
SERVER = "15uC1tTcVsN3K4wycQ8Bj7m1UqL1GgtX8t"


def samples(text):
    """{(sample name, sorted label items): value} of an exposition text."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


class RouteTests(SynchronousTestCase):
    """Paths become a few bounded names; farmer ids never become labels."""

    def test_names(self):
        cases = {
            b"/api/ping/" + ADDRESS.encode(): "ping",
            b"/api/register/" + ADDRESS.encode() + b"/3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy": "register",
            b"/api/height/" + ADDRESS.encode() + b"/5": "height",
            b"/api/online": "online",
            b"/api/online/json": "online_json",
            b"/api/total/history?since=1": "total_history",
            b"/api/total": "total",
            b"/api/openapi.json": "openapi_json",
            b"/health": "health",
            b"/metrics": "metrics",
            b"/": "root",
            b"/static/app.js": "static",
            b"/favicon.ico": "favicon_ico",
            b"/api/" + ADDRESS.encode(): "other",
            b"/health/" + ADDRESS.encode(): "other",
            b"/wp-login.php": "other",
        }
        self.assertEqual({path: metrics.route_of(path) for path in cases}, cases)


def _fake_daemon(passes=3):
    clock = task.Clock()
    clock.advance(1000)
    timings = Timings(clock)
    timings.counts, timings.seconds = {"record_contacts": 4}, {"record_contacts": 0.5}
    pings = SimpleNamespace(sizes={1: 1, 3: 2})
    verifier = SimpleNamespace(recoveries=5, cache_hits=11)
    farmers = SimpleNamespace(timings=timings, pings=pings, verifier=verifier, late_replays=2)
    summariser = SimpleNamespace(
        passes=passes, failures=1, last_pass_phases={"fetch": 0.25}, last_pass_seconds=0.75,
        snapshot=SimpleNamespace(online_farmers=7, total_tb=1.5, built_at=990.0))
    database = SimpleNamespace(
        status=lambda: (True, {"connections": {"alive": 3, "total": 4, "idle": 1}}))
    return clock, farmers, summariser, database


class CollectorTests(SynchronousTestCase):
    """The exposition carries every counter the daemon keeps, read at scrape time."""

    def scrape(self, **parts):
        clock, farmers, summariser, database = _fake_daemon()
        daemon = dict(farmers=farmers, summariser=summariser, database=database, clock=clock)
        daemon.update(parts)
        m = metrics.Metrics()
        m.watch(**daemon)
        return m, lambda: samples(m.exposition().decode())

    def test_daemon_counters(self):
        _, scrape = self.scrape()
        found = scrape()
        expected = {
            ("dataserv_db_transactions_total", (("name", "record_contacts"),)): 4,
            ("dataserv_db_transaction_seconds_total", (("name", "record_contacts"),)): 0.5,
            ("dataserv_db_connections", (("state", "alive"),)): 3,
            ("dataserv_db_connections", (("state", "idle"),)): 1,
            ("dataserv_db_connections", (("state", "busy"),)): 3,
            ("dataserv_ping_batch_size_count", ()): 3,
            ("dataserv_ping_batch_size_sum", ()): 7,
            ("dataserv_ping_batch_size_bucket", (("le", "1.0"),)): 1,
            ("dataserv_ping_batch_size_bucket", (("le", "2.0"),)): 1,
            ("dataserv_ping_batch_size_bucket", (("le", "4.0"),)): 3,
            ("dataserv_signature_verifications_total", ()): 5,
            ("dataserv_signature_cache_hits_total", ()): 11,
            ("dataserv_throttled_ping_replays_total", ()): 2,
            ("dataserv_summary_passes_total", ()): 3,
            ("dataserv_summary_failures_total", ()): 1,
            ("dataserv_summary_pass_seconds", ()): 0.75,
            ("dataserv_summary_phase_seconds", (("phase", "fetch"),)): 0.25,
            ("dataserv_snapshot_age_seconds", ()): 10.0,
            ("dataserv_online_farmers", ()): 7,
            ("dataserv_claimed_tb", ()): 1.5,
        }
        self.assertEqual({k: found.get(k) for k in expected}, expected)
        self.assertNotIn(("dataserv_verified_tb", ()), found)

    def test_values_are_read_at_scrape_time(self):
        clock, farmers, summariser, database = _fake_daemon()
        m = metrics.Metrics()
        m.watch(farmers, summariser, database, clock)
        farmers.verifier.cache_hits = 12
        summariser.snapshot.verified_tb = 0.5  # what proofs will provide
        clock.advance(5)
        found = samples(m.exposition().decode())
        self.assertEqual(found[("dataserv_signature_cache_hits_total", ())], 12)
        self.assertEqual(found[("dataserv_verified_tb", ())], 0.5)
        self.assertEqual(found[("dataserv_snapshot_age_seconds", ())], 15.0)

    def test_requests_and_latency(self):
        m, scrape = self.scrape()
        for uri, code, seconds in ((b"/api/ping/x", 200, 0.0004), (b"/api/ping/y", 200, 0.003),
                                   (b"/api/ping/z", 401, 0.003), (b"/api/total", 200, None)):
            m.requests.count(SimpleNamespace(uri=uri, code=code), seconds)
        found = scrape()
        self.assertEqual(found[("dataserv_requests_total", (("code", "200"), ("route", "ping")))], 2)
        self.assertEqual(found[("dataserv_requests_total", (("code", "401"), ("route", "ping")))], 1)
        self.assertEqual(found[("dataserv_requests_total", (("code", "200"), ("route", "total")))], 1)
        ping = (("route", "ping"),)
        self.assertEqual(found[("dataserv_request_duration_seconds_count", ping)], 3)
        self.assertAlmostEqual(found[("dataserv_request_duration_seconds_sum", ping)], 0.0064)
        self.assertEqual(found[("dataserv_request_duration_seconds_bucket",
                                (("le", "0.0005"), ("route", "ping")))], 1)
        self.assertEqual(found[("dataserv_request_duration_seconds_bucket",
                                (("le", "0.005"), ("route", "ping")))], 3)
        self.assertEqual(found[("dataserv_request_duration_seconds_bucket",
                                (("le", "+Inf"), ("route", "ping")))], 3)
        self.assertNotIn(("dataserv_request_duration_seconds_count", (("route", "total"),)), found)

    def test_refusals_database_errors_and_proofs(self):
        m, scrape = self.scrape()
        m.refused("per_ip_rate")
        m.refused("per_ip_rate")
        m.refused("body_size")
        m.database_error("unavailable")
        m.proof_checked("verified")
        found = scrape()
        self.assertEqual(found[("dataserv_refused_total", (("limit", "per_ip_rate"),))], 2)
        self.assertEqual(found[("dataserv_refused_total", (("limit", "body_size"),))], 1)
        self.assertEqual(found[("dataserv_database_errors_total", (("kind", "unavailable"),))], 1)
        self.assertEqual(found[("dataserv_proofs_total", (("outcome", "verified"),))], 1)

    def test_label_values_are_escaped(self):
        m, scrape = self.scrape()
        m.refused('a "quoted"\nlimit\\')
        self.assertEqual(scrape()[("dataserv_refused_total", (("limit", 'a "quoted"\nlimit\\'),))], 1)

    def test_no_snapshot_no_parts(self):
        _, scrape = self.scrape(summariser=SimpleNamespace(
            passes=0, failures=0, last_pass_phases={}, last_pass_seconds=None, snapshot=None))
        found = scrape()
        self.assertEqual(found[("dataserv_summary_passes_total", ())], 0)
        self.assertNotIn(("dataserv_online_farmers", ()), found)
        self.assertNotIn(("dataserv_snapshot_age_seconds", ()), found)
        bare = metrics.Metrics()
        bare.watch()
        text = bare.exposition().decode()
        self.assertIn("# TYPE dataserv_requests_total counter\n", text)
        self.assertNotIn("dataserv_online_farmers", text)

    def test_two_daemons_have_registries_of_their_own(self):
        first, second = metrics.Metrics(), metrics.Metrics()
        for m in (first, second):
            m.watch()
        first.refused("x")
        self.assertIn(("dataserv_refused_total", (("limit", "x"),)),
                      samples(first.exposition().decode()))
        self.assertNotIn(("dataserv_refused_total", (("limit", "x"),)),
                         samples(second.exposition().decode()))


class SourceCounterTests(SynchronousTestCase):
    """The parts keep the plain counters that the collector reads."""

    def test_verifier_counts_recoveries_and_cache_hits(self):
        key = FarmerKey.from_seed(b"metrics farmer")
        date = email.utils.formatdate(1_000_000)
        headers = headers_for(key, SERVER, date)
        verifier = Verifier(SERVER, 30)
        for _ in range(3):
            verifier.verify(key.address, headers[b"Date"], headers[b"Authorization"], 1_000_000)
        self.assertEqual((verifier.recoveries, verifier.cache_hits), (1, 2))

    def test_group_commit_counts_batch_sizes(self):
        pending = []
        commit = GroupCommit(lambda items: pending.append(defer.Deferred()) or pending[-1])
        for item in range(4):  # the first goes alone, the next three wait together
            commit.submit(item)
        pending[0].callback(None)
        pending[1].callback(None)
        self.assertEqual(dict(commit.sizes), {1: 1, 3: 1})


class WiringTests(SynchronousTestCase):
    """The daemon's Site counts and times every finished request; the API serves the
    text and counts its 503s."""

    def test_site_counts_and_times_without_an_access_log(self):
        from dataserv.daemon.service import Site
        from twisted.web.resource import Resource

        clock = task.Clock()
        stats = metrics.RequestStats()
        site = Site(Resource(), stats, logPath=None, reactor=clock)
        clock.advance(10)
        site.log(SimpleNamespace(uri=b"/api/total", code=200, started=9.99))
        site.log(SimpleNamespace(uri=b"/api/total", code=200))
        self.assertEqual(stats.counts, {("total", 200): 2})
        counts, total = stats.latency["total"]
        self.assertEqual(sum(counts), 1)
        self.assertAlmostEqual(total, 0.01)

    def test_timed_request_notes_its_start(self):
        from dataserv.daemon.service import Site
        from twisted.internet.testing import StringTransport
        from twisted.web.resource import Resource

        clock = task.Clock()
        clock.advance(42)
        site = Site(Resource(), metrics.RequestStats(), logPath=None, reactor=clock)
        channel = site.buildProtocol(None)
        channel.makeConnection(StringTransport())
        request = site.requestFactory(channel)
        self.assertEqual(request.started, 42)

    def _api(self):
        from treq.testing import StubTreq

        from dataserv.daemon.config import Settings
        from dataserv.web.api import API

        clock, farmers, summariser, database = _fake_daemon()
        api = API(farmers, summariser, database, Settings(), clock)
        return api, StubTreq(api.resource())

    def test_route(self):
        _, http = self._api()
        response = self.successResultOf(http.get("http://dataserv/metrics"))
        body = self.successResultOf(response.content()).decode()
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"Content-Type"),
                         [b"text/plain; version=0.0.4; charset=utf-8"])
        self.assertEqual(samples(body)[("dataserv_summary_passes_total", ())], 3)

    def test_unavailable_answers_are_counted(self):
        from dataserv.registry.farmers import Unavailable

        api, http = self._api()
        api.farmers.ping = lambda *args: defer.fail(Unavailable("down"))
        response = self.successResultOf(http.get("http://dataserv/api/ping/" + ADDRESS))
        self.assertEqual(response.code, 503)
        self.assertEqual(api.metrics.database_errors, {"unavailable": 1})


class _RoundStore:
    """A proof store whose scoring takes ``seconds`` on the clock; ``fail`` makes the
    next round fail."""

    def __init__(self, clock, seconds):
        self.clock, self.seconds, self.fail = clock, seconds, False

    def all_tallies(self, now, since, interval, window):
        self.clock.advance(self.seconds)
        if self.fail:
            from dataserv.storage.database import DatabaseUnavailable

            return defer.fail(DatabaseUnavailable("down"))
        # Two plots of farmer 1 (one complete, one half), one of farmer 2 (nothing).
        return defer.succeed([(1, 29, 8, 8), (1, 29, 4, 8), (2, 30, 0, 8)])

    def write_farmer_totals(self, totals):
        return defer.succeed(None)

    def draw_round(self, now, per_plot, interval, random_bytes):
        return defer.succeed(3 * per_plot)

    def prune_challenges(self, before):
        return defer.succeed(None)


class RoundsCollectorTests(SynchronousTestCase):
    """The challenge rounds: how many, how long, and what the last one scored."""

    def test_rounds_figures(self):
        from dataserv.daemon.config import Settings
        from dataserv.proofs.plots import plot_bytes
        from dataserv.proofs.rounds import ChallengeRounds

        clock = task.Clock()
        store = _RoundStore(clock, 0.3)
        rounds = ChallengeRounds(store, Settings(challenges_per_round=4), clock)
        m = metrics.Metrics()
        m.watch()
        m.watch_rounds(rounds)
        found = samples(m.exposition().decode())
        self.assertEqual(found[("dataserv_challenge_rounds_total", ())], 0)
        self.assertEqual(found[("dataserv_challenge_round_duration_seconds_count", ())], 0)
        self.assertNotIn(("dataserv_plots", ()), found)
        self.assertNotIn(("dataserv_verified_bytes", ()), found)
        rounds.run_round()
        store.seconds = 40.0
        rounds.run_round()
        store.fail, store.seconds = True, 0.01
        rounds.run_round()
        self.flushLoggedErrors()
        found = samples(m.exposition().decode())
        expected = {
            ("dataserv_challenge_rounds_total", ()): 2,
            ("dataserv_challenge_round_failures_total", ()): 1,
            ("dataserv_challenge_round_duration_seconds_count", ()): 3,
            ("dataserv_challenge_round_duration_seconds_bucket", (("le", "0.05"),)): 1,
            ("dataserv_challenge_round_duration_seconds_bucket", (("le", "0.5"),)): 2,
            ("dataserv_challenge_round_duration_seconds_bucket", (("le", "30.0"),)): 2,
            ("dataserv_challenge_round_duration_seconds_bucket", (("le", "60.0"),)): 3,
            ("dataserv_challenge_round_duration_seconds_bucket", (("le", "+Inf"),)): 3,
            ("dataserv_plots", ()): 3,
            ("dataserv_verified_bytes", ()): plot_bytes(29) + plot_bytes(29) // 2,
            ("dataserv_challenges_drawn", ()): 12,
        }
        self.assertEqual({k: found.get(k) for k in expected}, expected)
        self.assertAlmostEqual(
            found[("dataserv_challenge_round_duration_seconds_sum", ())], 40.31)

    def test_plot_changes_and_answers(self):
        m = metrics.Metrics()
        m.watch()
        m.plot_changed("registered")
        m.challenge_answered("late")
        m.proof_checked("late", 2)
        found = samples(m.exposition().decode())
        self.assertEqual(found[("dataserv_plot_changes_total", (("change", "registered"),))], 1)
        self.assertEqual(found[("dataserv_challenge_answers_total", (("outcome", "late"),))], 1)
        self.assertEqual(found[("dataserv_proofs_total", (("outcome", "late"),))], 2)
