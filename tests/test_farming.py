"""The farm command's pace: every ``every`` seconds while the server answers, its
Retry-After after a 503 or 429, an exponential back-off with jitter after connection
errors. A scripted client on a Clock; no server, no sleeps."""

import io
import json
import os

from twisted.internet import defer, task
from twisted.internet.error import ConnectionRefusedError
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from dataserv.client import farming
from dataserv.client.farmer import Reply

OK = Reply(200, Headers(), b"Ping accepted.")
NO_CHALLENGES = Reply(200, Headers(), json.dumps({"challenges": []}).encode())


def busy(status, retry_after=None):
    headers = Headers({b"Retry-After": [retry_after]} if retry_after is not None else {})
    return Reply(status, headers, b"Service unavailable.")


class ScriptedClient:
    """Answers each call with the next item of its script (a Reply or an exception to
    fail with), then with the default; notes when each call came."""

    def __init__(self, clock, **scripts):
        self.clock = clock
        self.scripts = {name: list(items) for name, items in scripts.items()}
        self.calls = []

    def _next(self, name, default):
        self.calls.append((name, self.clock.seconds()))
        script = self.scripts.get(name)
        item = script.pop(0) if script else default
        if isinstance(item, Exception):
            return defer.fail(item)
        return defer.succeed(item)

    def ping(self):
        return self._next("ping", OK)

    def challenges(self):
        return self._next("challenges", NO_CHALLENGES)

    def register_plot(self, seed, k):
        return self._next("register_plot", Reply(200, Headers(), b"{}"))

    def times(self, name):
        return [t for n, t in self.calls if n == name]


class FarmPaceTests(SynchronousTestCase):

    def farm(self, jitter=lambda: 0.0, plots=0, **scripts):
        directory = self.mktemp()
        os.makedirs(directory)
        for i in range(plots):
            open(os.path.join(directory, "dataserv-k29-%064x.plot" % i), "w").close()
        clock = task.Clock()
        client = ScriptedClient(clock, **scripts)
        out = io.StringIO()
        farm = farming.Farm(client, directory, clock, defer.maybeDeferred, every=10,
                            out=out, jitter=jitter)
        done = farm.run()
        self.addCleanup(farm.stop)
        return farm, client, clock, done, out

    def test_every_interval_while_the_server_answers(self):
        farm, client, clock, done, _ = self.farm()
        clock.pump([10] * 3)
        self.assertEqual(client.times("ping"), [0, 10, 20, 30])
        self.assertEqual(client.times("challenges"), [0, 10, 20, 30])
        farm.stop()
        self.assertIsNone(self.successResultOf(done))
        clock.pump([10] * 3)
        self.assertEqual(len(client.times("ping")), 4)

    def test_retry_after_is_obeyed_within_bounds(self):
        """503 and 429 wait their Retry-After, at least 1 s and at most
        MAX_RETRY_AFTER; without one, the usual interval."""
        _, client, clock, _, out = self.farm(ping=[
            busy(503, b"7"), busy(429, b"100000"), busy(503, b"0"), busy(503),
            busy(503, b"soon"), OK])
        clock.pump([0.5] * 2000)
        pings = client.times("ping")[:7]
        self.assertEqual(pings, [0, 7, 7 + 300, 7 + 300 + 1, 7 + 300 + 1 + 10,
                                 7 + 300 + 1 + 10 + 10, 7 + 300 + 1 + 10 + 10 + 10])
        # Nothing else is asked of a busy server.
        self.assertEqual(client.times("challenges")[0], pings[5])
        self.assertIn("server busy (ping: 503, retry after 7.0 s); next try in 7 s",
                      out.getvalue())

    def test_busy_challenges_wait_too(self):
        _, client, clock, _, _ = self.farm(challenges=[busy(429, b"42")])
        clock.pump([1] * 60)
        self.assertEqual(client.times("ping")[:3], [0, 42, 52])

    def test_connection_errors_back_off_exponentially_with_a_cap(self):
        refused = [ConnectionRefusedError("no")] * 11
        _, client, clock, _, out = self.farm(jitter=lambda: 1.0, ping=refused)
        clock.pump([1] * 3000)
        pings = client.times("ping")
        waits = [b - a for a, b in zip(pings, pings[1:])]
        self.assertEqual(waits[:12], [2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300, 10])
        self.assertIn("Connection was refused by other side: no.; next try in 2.0 s",
                      out.getvalue())

    def test_jitter_and_reset_after_a_success(self):
        """Each wait is drawn between half and all of the back-off; a success starts
        it afresh."""
        draws = iter([0.0, 0.5, 0.0, 0.5])
        error = ConnectionRefusedError("no")
        _, client, clock, _, _ = self.farm(jitter=lambda: next(draws),
                                           ping=[error, error, OK, error, error])
        clock.pump([0.25] * 200)
        pings = client.times("ping")
        waits = [b - a for a, b in zip(pings, pings[1:])]
        self.assertEqual(waits[:5], [1.0, 3.0, 10, 1.0, 3.0])

    def test_registration_waits_and_is_tried_again(self):
        """A busy server during registration: the plots are registered again after
        the wait; a plot refused for good is skipped and farming goes on."""
        refused = Reply(403, Headers(), b"Too many plots: at most 1 per farmer; remove one first.")
        _, client, clock, _, out = self.farm(
            plots=2, register_plot=[busy(503, b"7"), refused, refused])
        clock.advance(7)
        self.assertEqual(client.times("register_plot"), [0, 7, 7])
        self.assertEqual(client.times("ping"), [7])
        self.assertIn("farming 0 plot(s)", out.getvalue())
        clock.advance(10)
        self.assertEqual(client.times("register_plot"), [0, 7, 7])  # once is enough
        self.assertEqual(client.times("ping"), [7, 17])

    def test_an_unknown_farmer_stops_farming_with_one_line(self):
        """A 404 to a plot's registration or to the ping (a farmer that never
        registered, or a server that lost it): farming ends with an error saying to
        register, instead of trying again forever."""
        unknown = Reply(404, Headers(), b"Farmer not found.")
        for plots, script in ((1, {"register_plot": [unknown]}),
                              (0, {"ping": [Reply(404, Headers(), b"Ping Failed: Farmer not found.")]})):
            _, client, clock, done, _ = self.farm(plots=plots, **script)
            failure = self.failureResultOf(done, farming.NotRegistered)
            self.assertEqual(failure.getErrorMessage(), farming.NOT_REGISTERED)
            calls = list(client.calls)
            clock.pump([10] * 5)
            self.assertEqual(client.calls, calls)
            self.assertNotIn("challenges", [name for name, _ in calls])

    def test_a_server_without_the_proof_routes_stops_farming_with_its_answer(self):
        """Any other 404 to a plot's registration (a server that does not take
        proofs of space): farming ends too, not telling the farmer to register."""
        _, client, clock, done, _ = self.farm(
            plots=1, register_plot=[Reply(404, Headers(), b"404 Not Found")])
        failure = self.failureResultOf(done, farming.CannotFarm)
        self.assertNotIsInstance(failure.value, farming.NotRegistered)
        self.assertEqual(failure.getErrorMessage(),
                         "plot registration: not found on the server (404 Not Found);"
                         " does it take proofs of space?")
        calls = list(client.calls)
        clock.pump([10] * 5)
        self.assertEqual(client.calls, calls)
        for body, shown in ((b"Gone", "(404 Gone)"),
                            (b"<html>\n<h1>Not Found</h1></html>", "(404 an HTML page)")):
            _, _, _, done, _ = self.farm(plots=1, register_plot=[Reply(404, Headers(), body)])
            self.assertIn(shown, self.failureResultOf(done, farming.CannotFarm)
                          .getErrorMessage())

    def test_retry_after_parsing(self):
        self.assertEqual(farming.retry_after(busy(503, b"5")), 5.0)
        self.assertIsNone(farming.retry_after(busy(503)))
        self.assertIsNone(farming.retry_after(busy(503, b"-3")))
        self.assertIsNone(farming.retry_after(busy(503, b"Fri, 04 Dec 2026 14:00:00 GMT")))


class AnswerBatchTests(SynchronousTestCase):
    """How ``farm`` splits its answers into requests: at most so many answers and so
    many bytes of body each, all of them, in order."""

    def answers(self, proofs_each):
        return [{"plot_id": "%064x" % i, "challenge": "%064x" % (i + 1000),
                 "proofs": ["ab" * 8 * 32] * n} for i, n in enumerate(proofs_each)]

    def assertSplit(self, answers, most, size):
        batches = farming.answer_batches(answers, most, size)
        self.assertEqual([a for batch in batches for a in batch], answers)
        for batch in batches:
            self.assertLessEqual(len(batch), most)
            self.assertLessEqual(len(json.dumps({"answers": batch}).encode()), size)
        # None could have taken the next batch's first answer as well.
        for batch, following in zip(batches, batches[1:]):
            grown = json.dumps({"answers": batch + following[:1]}).encode()
            self.assertTrue(len(batch) == most or len(grown) > size)
        return batches

    def test_by_count(self):
        batches = self.assertSplit(self.answers([1] * 70), 32, farming.MAX_BODY)
        self.assertEqual([len(b) for b in batches], [32, 32, 6])
        self.assertEqual(farming.answer_batches([], 32, farming.MAX_BODY), [])

    def test_by_size_when_the_proofs_are_many(self):
        """k=32 proofs, 8 to a challenge: 32 answers would be ~135 KB, twice what the
        server takes."""
        answers = self.answers([8] * 32)
        self.assertGreater(len(json.dumps({"answers": answers})), farming.MAX_BODY)
        batches = self.assertSplit(answers, 32, farming.MAX_BODY)
        self.assertGreater(len(batches), 2)

    def test_exactly_at_the_limit(self):
        answers = self.answers([1, 0, 2, 1])
        size = len(json.dumps({"answers": answers[:3]}))
        self.assertEqual([len(b) for b in self.assertSplit(answers, 32, size)], [3, 1])
        self.assertEqual([len(b) for b in self.assertSplit(answers, 32, size - 1)],
                         [2, 2])

    def test_the_client_takes_what_the_server_takes(self):
        from dataserv.proofs import rules
        self.assertEqual((farming.BATCH, farming.MAX_BODY),
                         (rules.MAX_ANSWERS, rules.MAX_BODY))
