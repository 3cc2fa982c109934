"""Proof of space end to end on real chiapos plots: registration, challenge rounds,
answers, scores and what is published, through StubTreq over real PostgreSQL.

Rounds run under a Clock; plots are k=20 (tests/plots.py, built once per run) and
accepted through Settings(min_k=20), a test-only value of the setting.
"""

import io
import json
import os
import random

from twisted.internet import defer, reactor

from dataserv.client.farmer import FarmerClient
from dataserv.client import farming
from dataserv.client.farming import Farm, NotRegistered
from dataserv.identity.signing import FarmerKey, headers_for, v2_headers_for
from dataserv.proofs import plots as plot_rules
from dataserv.proofs.rounds import ChallengeRounds
from dataserv.proofs.workers import WorkersUnavailable
from dataserv.registry import farmers as farmer_rules
from dataserv.storage.proofs_store import ProofStore
from tests import plots
from tests.test_api import APITestCase, Server, pumped

ALICE = FarmerKey.from_seed(b"test_proofs alice")
BOB = FarmerKey.from_seed(b"test_proofs bob")
SEEDS = [bytes([i]) * 32 for i in (1, 2)]
PLAIN = b"text/plain; charset=utf-8"
SETTINGS = dict(min_k=plots.K, challenges_per_round=16, challenge_interval=60,
                proof_window=30, score_window=600)


def nodeid(key):
    return bytes.fromhex(key.nodeid)


class ProofsTestCase(APITestCase):
    """A server with proofs, a ChallengeRounds on the test's Clock, and helpers."""

    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        self.serve(**SETTINGS)
        # Challenges from a seeded generator: a plot answers each with a Poisson-like
        # count of proofs, so a random draw would make the score tests flaky; these
        # are the same random-looking challenges on every run.
        self.rounds = ChallengeRounds(ProofStore(self.db, self.clock), self.settings,
                                      self.clock, random_bytes=random.Random(14).randbytes)

    def send(self, key, path, body=None, method="GET", headers=None, server=None):
        """A request signed with DATASERV-V2 headers (unless headers are given) with
        an optional body: the proof routes take no legacy headers. ``server``: another
        daemon than the test's own."""
        server = server or self.server
        if headers is None:
            headers = v2_headers_for(key, self.settings.address, method, path, body or b"",
                                     date=self.date())
        d = server.http.request(method, "http://dataserv.test" + path, headers=headers,
                                data=body)
        d.addCallback(lambda response: server.http.content(response).addCallback(
            lambda content: (response.code, response.headers, content)))
        return pumped([server.http, server.raw], d)

    @defer.inlineCallbacks
    def register(self, key, seeds=SEEDS, k=plots.K):
        yield self.call(key, "/api/register/" + key.address)
        ids = []
        for seed in seeds:
            code, _, body = yield self.send(
                key, "/api/proofs/%s/plots" % key.nodeid,
                json.dumps({"seed": seed.hex(), "k": k}).encode(), "POST")
            self.assertEqual(code, 200, body)
            ids.append(json.loads(body)["plot_id"])
        return ids

    @defer.inlineCallbacks
    def fetch(self, key):
        code, _, body = yield self.send(key, "/api/proofs/%s/challenges" % key.nodeid)
        self.assertEqual(code, 200, body)
        return json.loads(body)["challenges"]

    def answer_body(self, challenges, provers):
        """An answer with the proofs the provers (by plot id hex) find."""
        answers = []
        for c in challenges:
            prover = provers.get(c["plot_id"])
            proofs = prover.proofs(bytes.fromhex(c["challenge"])) if prover else []
            answers.append({"plot_id": c["plot_id"], "challenge": c["challenge"],
                            "proofs": [p.hex() for p in proofs]})
        return answers

    @defer.inlineCallbacks
    def answer(self, key, answers):
        """Send answers in batches of at most 32; the outcomes."""
        outcomes = []
        for start in range(0, len(answers), 32):
            code, _, body = yield self.send(
                key, "/api/proofs/%s/answers" % key.nodeid,
                json.dumps({"answers": answers[start:start + 32]}).encode(), "POST")
            self.assertEqual(code, 200, body)
            outcomes.extend(json.loads(body)["answers"])
        return outcomes

    @defer.inlineCallbacks
    def play_rounds(self, key, provers, rounds=2, forge=None):
        """``rounds`` rounds: draw, fetch, answer (with forge(challenges) if given),
        then the next round scores."""
        for _ in range(rounds):
            yield self.rounds.run_round()
            challenges = yield self.fetch(key)
            answers = forge(challenges) if forge else self.answer_body(challenges, provers)
            yield self.answer(key, answers)
            self.clock.advance(self.settings.challenge_interval)
        yield self.rounds.run_round()

    @defer.inlineCallbacks
    def farmer(self, key):
        reply = yield self.get("/api/farmer/" + key.nodeid)
        return json.loads(reply.body)

    def provers(self, key, seeds=SEEDS):
        return {p.plot_id.hex(): p for p in (plots.plot(nodeid(key), s) for s in seeds)}


class ScoreTests(ProofsTestCase):

    @defer.inlineCallbacks
    def test_honest_farmer_is_verified(self):
        """All plots answered: each plot's fraction near 1 within one window, and the
        farmer's verified bytes published in the lists and the totals."""
        provers = self.provers(ALICE)
        ids = yield self.register(ALICE)
        self.assertEqual(sorted(ids), sorted(provers))
        yield self.play_rounds(ALICE, provers)
        status = yield self.farmer(ALICE)
        self.assertEqual(status["plots"], 2)
        fractions = [s["fraction"] for s in status["plot_scores"]]
        self.assertTrue(all(f >= 0.75 for f in fractions), fractions)
        self.assertEqual([s["challenges_settled"] for s in status["plot_scores"]], [32, 32])
        self.assertEqual([s["challenges_answered"] for s in status["plot_scores"]], [32, 32])
        self.assertEqual(status["verified_bytes"],
                         sum(s["verified_bytes"] for s in status["plot_scores"]))
        self.assertGreater(status["verified_bytes"], 1.5 * plot_rules.plot_bytes(plots.K))
        snap = yield self.server.summariser.run_pass()
        snap = self.server.summariser.snapshot
        listed = json.loads(bytes(snap.online_json))["farmers"][0]
        self.assertEqual((listed["plots"], listed["verified_bytes"]),
                         (2, status["verified_bytes"]))
        self.assertEqual(json.loads(snap.total_json)["verified_TB"],
                         round(status["verified_bytes"] / 1024 ** 4, 2))
        self.assertEqual(snap.verified_bytes, status["verified_bytes"])

    @defer.inlineCallbacks
    def test_half_the_plots_deleted(self):
        """Answering from one of two plots verifies about half."""
        provers = self.provers(ALICE)
        yield self.register(ALICE)
        kept = dict([sorted(provers.items())[0]])
        yield self.play_rounds(ALICE, kept)
        status = yield self.farmer(ALICE)
        whole = 2 * plot_rules.plot_bytes(plots.K)
        self.assertTrue(0.35 * whole < status["verified_bytes"] < 0.55 * whole,
                        status["verified_bytes"] / whole)
        self.assertEqual(sorted(s["fraction"] == 0 for s in status["plot_scores"]),
                         [False, True])

    @defer.inlineCallbacks
    def test_unanswered_plots_score_nothing(self):
        """Challenges never fetched count as expected and unanswered."""
        yield self.register(ALICE)
        yield self.rounds.run_round()
        self.clock.advance(60)
        yield self.rounds.run_round()
        status = yield self.farmer(ALICE)
        self.assertEqual((status["plots"], status["verified_bytes"]), (2, 0))
        self.assertEqual([s["challenges_settled"] for s in status["plot_scores"]], [16, 16])

    @defer.inlineCallbacks
    def test_copied_and_random_proofs_score_nothing(self):
        """A farmer that registers another's seeds has other plot ids: the other's
        proofs, for its own challenges, and random bytes are all worth nothing."""
        alice = self.provers(ALICE)
        yield self.register(ALICE)
        bob_ids = yield self.register(BOB)
        self.assertFalse(set(bob_ids) & set(alice))
        by_position = dict(zip(bob_ids, [alice[i] for i in sorted(alice)]))

        def copied(challenges):
            answers = self.answer_body(challenges, by_position)
            # ... and, for half of them, random proofs of the right length.
            for a in answers[::2]:
                a["proofs"] = [os.urandom(8 * plots.K).hex()]
            return answers

        yield self.play_rounds(BOB, {}, forge=copied)
        status = yield self.farmer(BOB)
        self.assertEqual((status["plots"], status["verified_bytes"]), (2, 0))
        self.assertEqual([s["proofs_found"] for s in status["plot_scores"]], [0, 0])

    @defer.inlineCallbacks
    def test_proof_for_another_challenge_counts_nothing(self):
        provers = self.provers(ALICE)
        yield self.register(ALICE)
        yield self.rounds.run_round()
        challenges = yield self.fetch(ALICE)
        answers = self.answer_body(challenges, provers)
        # Each challenge answered with the proofs found for the next one of its plot.
        shifted = []
        for plot_id in provers:
            mine = [a for a in answers if a["plot_id"] == plot_id]
            shifted += [dict(a, proofs=mine[(i + 1) % len(mine)]["proofs"])
                        for i, a in enumerate(mine)]
        self.assertEqual(len(shifted), 32)
        self.assertGreater(sum(len(a["proofs"]) for a in shifted), 16)
        outcomes = yield self.answer(ALICE, shifted)
        self.assertEqual({(o["outcome"], o["valid_proofs"]) for o in outcomes}, {("counted", 0)})


class WindowTests(ProofsTestCase):

    @defer.inlineCallbacks
    def one_challenge(self):
        provers = self.provers(ALICE)
        yield self.register(ALICE, SEEDS[:1])
        yield self.rounds.run_round()
        challenges = yield self.fetch(ALICE)
        return self.answer_body(challenges, provers)

    @defer.inlineCallbacks
    def test_late_answer_counts_nothing(self):
        answers = yield self.one_challenge()
        self.clock.advance(30.5)
        outcomes = yield self.answer(ALICE, answers)
        self.assertEqual({o["outcome"] for o in outcomes}, {"late"})
        self.clock.advance(60)
        yield self.rounds.run_round()
        status = yield self.farmer(ALICE)
        self.assertEqual(status["plot_scores"][0]["proofs_found"], 0)

    @defer.inlineCallbacks
    def test_a_second_fetch_does_not_move_the_window(self):
        answers = yield self.one_challenge()
        self.clock.advance(20)
        again = yield self.fetch(ALICE)
        self.assertEqual({c["deadline"] for c in again}, {self.clock.seconds() + 10})
        self.clock.advance(15)
        outcomes = yield self.answer(ALICE, answers)
        self.assertEqual({o["outcome"] for o in outcomes}, {"late"})

    @defer.inlineCallbacks
    def test_replayed_answer_counts_once(self):
        answers = yield self.one_challenge()
        first = yield self.answer(ALICE, answers)
        second = yield self.answer(ALICE, answers)
        self.assertEqual({o["outcome"] for o in first}, {"counted"})
        self.assertEqual({o["outcome"] for o in second}, {"repeated"})
        self.clock.advance(60)
        yield self.rounds.run_round()
        status = yield self.farmer(ALICE)
        self.assertEqual(status["plot_scores"][0]["proofs_found"],
                         sum(o["valid_proofs"] for o in first))
        answered = yield self.fetch(ALICE)  # the next round's; none of the answered ones
        self.assertFalse({c["challenge"] for c in answered} & {a["challenge"] for a in answers})

    @defer.inlineCallbacks
    def signed_answer(self):
        """ALICE's answers to a round's challenges, as one answer request: (answers,
        path, body, v2 headers)."""
        answers = yield self.one_challenge()
        path = "/api/proofs/%s/answers" % ALICE.nodeid
        body = json.dumps({"answers": answers}).encode()
        return answers, path, body, v2_headers_for(ALICE, self.settings.address, "POST",
                                                   path, body, date=self.date())

    @defer.inlineCallbacks
    def test_answer_request_repeated_on_another_daemon_is_refused(self):
        answers, path, body, headers = yield self.signed_answer()
        code, _, first = yield self.send(ALICE, path, body, "POST", headers)
        self.assertEqual(code, 200, first)
        other = Server(self.db, self.clock, self.settings)
        code, reply_headers, refused = yield self.send(ALICE, path, body, "POST", headers,
                                                       server=other)
        self.assertEqual((code, reply_headers.getRawHeaders(b"X-Auth-Error")),
                         (401, [b"replayed request"]))
        # Signed afresh, the same answers reach the other daemon: answered already.
        code, _, again = yield self.send(ALICE, path, body, "POST", server=other)
        self.assertEqual(code, 200, again)
        self.assertEqual({o["outcome"] for o in json.loads(again)["answers"]}, {"repeated"})

    @defer.inlineCallbacks
    def test_answer_request_claims_in_its_look_up(self):
        # Two statements an answer request: the claim rides on the look-up.
        answers = yield self.one_challenge()
        farmer_store, proof_store = self.server.store, self.server.proofs.store
        before = dict(farmer_store.timings.counts), dict(proof_store.timings.counts)
        outcomes = yield self.answer(ALICE, answers)
        self.assertEqual({o["outcome"] for o in outcomes}, {"counted"})
        self.assertEqual(farmer_store.timings.counts, before[0])
        after = proof_store.timings.counts
        self.assertEqual({name: after[name] - before[1].get(name, 0) for name in after
                          if after[name] != before[1].get(name, 0)},
                         {"answer_targets": 1, "record_answers": 1})

    @defer.inlineCallbacks
    def test_an_answer_request_pauses_before_each_statement(self):
        # Checked (body, signature), an answer waits for the pause (the daemon's: a
        # reactor turn, so pings waiting meanwhile are served) before its look-up,
        # and again, its proofs checked, before its write.
        answers = yield self.one_challenge()
        store, sent, at_release = self.server.proofs.store, [], []
        for name in ("answer_targets", "record_answers"):
            def recording(*args, _name=name, _real=getattr(store, name)):
                sent.append(_name)
                return _real(*args)
            setattr(store, name, recording)

        def pause():
            gate = defer.Deferred()

            def release():
                at_release.append(list(sent))
                gate.callback(None)

            reactor.callLater(0, release)
            return gate

        self.server.proofs._pause = pause
        outcomes = yield self.answer(ALICE, answers)
        self.assertEqual({o["outcome"] for o in outcomes}, {"counted"})
        self.assertEqual(at_release, [[], ["answer_targets"]])
        self.assertEqual(sent, ["answer_targets", "record_answers"])

    @defer.inlineCallbacks
    def test_an_answer_cancelled_in_its_pause_gives_its_key_back(self):
        # The client went away while the answer waited for its turn: nothing was
        # written, so the same signed request, sent again, is taken.
        answers, path, body, headers = yield self.signed_answer()
        request = farmer_rules.Request(headers[b"Date"], headers[b"Authorization"],
                                       self.clock.seconds(), "127.0.0.1", "POST", path, body)
        proofs = self.server.proofs
        proofs._pause = defer.Deferred  # a turn that never comes
        first = proofs.answer(ALICE.nodeid, body, request)
        first.cancel()
        self.failureResultOf(first, defer.CancelledError)
        proofs._pause = None
        outcomes = yield proofs.answer(ALICE.nodeid, body, request)
        self.assertEqual({o.outcome for o in outcomes}, {"counted"})

    @defer.inlineCallbacks
    def test_an_answer_without_proofs_is_not_sent_to_a_worker(self):
        # A farmer that finds nothing answers with empty lists: counted, 0 valid,
        # with no trip to a verification worker (one with proofs takes one).
        answers = yield self.one_challenge()
        proofs = self.server.proofs
        checked, check = [], proofs._in_thread

        def recording(f, *args):
            checked.append(args)
            return check(f, *args)

        proofs._in_thread = recording
        found = next(i for i, a in enumerate(answers) if a["proofs"])
        empty = [dict(a, proofs=[]) for i, a in enumerate(answers) if i != found]
        self.assertTrue(empty)
        outcomes = yield self.answer(ALICE, empty)
        self.assertEqual([(o["outcome"], o["valid_proofs"]) for o in outcomes],
                         [("counted", 0)] * len(empty))
        self.assertEqual(checked, [])
        outcomes = yield self.answer(ALICE, [answers[found]])
        self.assertEqual(outcomes[0]["outcome"], "counted")
        self.assertEqual(len(checked), 1)

    @defer.inlineCallbacks
    def test_proofs_that_cannot_be_checked_now_are_a_503_and_nothing_is_recorded(self):
        answers = yield self.one_challenge()
        proofs = self.server.proofs
        check = proofs._in_thread
        proofs._in_thread = lambda f, *args: defer.fail(
            WorkersUnavailable("a proof verification worker died twice"))
        code, headers, body = yield self.send(
            ALICE, "/api/proofs/%s/answers" % ALICE.nodeid,
            json.dumps({"answers": answers}).encode(), "POST")
        self.assertEqual((code, body), (503, b"Service unavailable: proofs cannot be"
                                            b" checked right now. Try again in a few"
                                            b" seconds."))
        self.assertTrue(headers.getRawHeaders(b"Retry-After"))
        self.assertEqual(self.server.metrics.database_errors, {})
        proofs._in_thread = check  # the workers are back: the same answers count
        outcomes = yield self.answer(ALICE, answers)
        self.assertEqual({o["outcome"] for o in outcomes}, {"counted"})

    @defer.inlineCallbacks
    def test_a_bug_in_a_proofs_route_is_one_line_and_logged(self):
        answers = yield self.one_challenge()
        self.server.proofs._in_thread = lambda f, *args: defer.fail(KeyError("a bug"))
        code, headers, body = yield self.send(
            ALICE, "/api/proofs/%s/answers" % ALICE.nodeid,
            json.dumps({"answers": answers}).encode(), "POST")
        self.assertEqual((code, body), (500, b"Internal server error."))
        self.assertEqual(headers.getRawHeaders(b"Content-Type"),
                         [b"text/plain; charset=utf-8"])
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    @defer.inlineCallbacks
    def test_answers_are_found_through_the_plot_challenge_index(self):
        # Not by reading every challenge of the farmer's plots (40,000 rows a round
        # for a farmer with 10,000 plots).
        yield self.register(ALICE)
        # A round of 2,500 plots x 4 challenges' worth of rows on ALICE's two plots.
        yield self.db.run_operation(
            "INSERT INTO challenges (plot, challenge, issued_at)"
            " SELECT p.id, decode(md5(p.id || '-' || i) || md5(i || '-' || p.id), 'hex'), %s"
            " FROM plots p, generate_series(1, 5000) AS i", (self.clock.seconds(),))
        challenges = yield self.db.run_query(
            "SELECT p.plot_id, c.challenge FROM challenges c JOIN plots p ON p.id = c.plot"
            " ORDER BY c.id DESC LIMIT 32")
        yield self.db.run_operation("ANALYZE challenges")
        recorded = []

        class Recording:
            def run_query(_, sql, params=None):
                recorded.append((sql, params))
                return self.db.run_query(sql, params)

        exists, targets = yield ProofStore(Recording(), self.clock).answer_targets(
            ALICE.address, [(bytes(p), bytes(c)) for p, c in challenges], None,
            self.clock.seconds())
        self.assertEqual((exists, len(targets)), (True, 32))

        # The plan the function made for its look-up, as auto_explain reports it.
        @defer.inlineCallbacks
        def explained(cursor):
            for statement in ("LOAD 'auto_explain'",
                              "SET LOCAL auto_explain.log_min_duration = 0",
                              "SET LOCAL auto_explain.log_nested_statements = on",
                              "SET LOCAL auto_explain.log_level = 'notice'"):
                yield cursor.execute(statement)
            del cursor.connection.notices[:]
            yield cursor.execute(*recorded[0])
            return "\n".join(cursor.connection.notices)

        plans = yield self.db.run_interaction(explained)
        self.assertIn("Index Scan using plots_plot_id_key", plans)
        self.assertIn("Index Scan using challenges_plot_challenge", plans)
        self.assertNotIn("plots_farmer", plans)
        self.assertNotIn("challenges_plot ", plans)

    @defer.inlineCallbacks
    def test_another_farmers_challenge_is_unknown(self):
        answers = yield self.one_challenge()
        yield self.register(BOB, SEEDS[:1])
        code, headers, body = yield self.send(
            BOB, "/api/proofs/%s/answers" % BOB.nodeid,
            json.dumps({"answers": answers[:1]}).encode(), "POST")
        self.assertEqual((code, body), (404, b"Unknown plot."))


class BadInputTests(ProofsTestCase):

    @defer.inlineCallbacks
    def test_unknown_paths_and_methods_are_short_text(self):
        for method, path, status in (
                ("GET", "/api/proofs/%s" % ALICE.nodeid, 404),
                ("POST", "/api/proofs/%s/plots/x/y" % ALICE.nodeid, 404),
                ("DELETE", "/api/proofs/%s/nothing" % ALICE.nodeid, 404),
                ("GET", "/api/proofs/%s/answers" % ALICE.nodeid, 405)):
            code, headers, body = yield self.send(ALICE, path, method=method, headers={})
            self.assertEqual((code, headers.getRawHeaders(b"Content-Type")), (status, [PLAIN]),
                             (method, path, body))
            self.assertEqual(body, b"404 Not Found" if status == 404
                             else b"405 Method Not Allowed")
        self.assertEqual(headers.getRawHeaders(b"Allow"), [b"POST"])

    @defer.inlineCallbacks
    def assertRefused(self, path, body, status, text, key=ALICE, method="POST", headers=None):
        code, headers, answer = yield self.send(key, path, body, method, headers)
        self.assertEqual((code, answer), (status, text))
        self.assertEqual(headers.getRawHeaders(b"Content-Type"), [PLAIN])

    def plot_body(self, seed="ab" * 32, k=plots.K):
        return json.dumps({"seed": seed, "k": k}).encode()

    @defer.inlineCallbacks
    def test_plot_registration_refusals(self):
        path = "/api/proofs/%s/plots" % ALICE.nodeid
        yield self.assertRefused("/api/proofs/nonsense/plots", self.plot_body(), 400,
                                 b"Invalid nodeid.")
        yield self.assertRefused(path, self.plot_body(), 404, b"Farmer not found.")
        yield self.call(ALICE, "/api/register/" + ALICE.address)
        yield self.assertRefused(path, b"{not json", 400,
                                 b"Invalid body: expected a JSON object.")
        yield self.assertRefused(path, self.plot_body(seed="zz" * 32), 400,
                                 b"Invalid seed: expected hex digits.")
        yield self.assertRefused(path, self.plot_body(seed="ab" * 31), 400,
                                 b"Invalid seed: expected 32 bytes.")
        yield self.assertRefused(path, self.plot_body(k=19), 400,
                                 b"Invalid k: plots from k=20 to k=50 are accepted.")
        yield self.assertRefused(path, self.plot_body(k=51), 400,
                                 b"Invalid k: plots from k=20 to k=50 are accepted.")
        yield self.assertRefused(path, b" " * (64 * 1024 + 1), 413,
                                 b"Body too large: at most 65536 bytes.")
        yield self.assertRefused(path, self.plot_body(), 401,
                                 b"Invalid authentication headers.", headers={})
        yield self.send(ALICE, path, self.plot_body(), "POST")
        yield self.assertRefused(path, self.plot_body(k=21), 409,
                                 b"Plot already registered with another k.")

    @defer.inlineCallbacks
    def test_the_default_min_k_refuses_small_plots(self):
        self.serve()
        yield self.call(ALICE, "/api/register/" + ALICE.address)
        yield self.assertRefused("/api/proofs/%s/plots" % ALICE.nodeid,
                                 self.plot_body(k=28), 400,
                                 b"Invalid k: plots from k=29 to k=50 are accepted.")

    @defer.inlineCallbacks
    def test_answer_refusals(self):
        answers = yield WindowTests.one_challenge(self)
        path = "/api/proofs/%s/answers" % ALICE.nodeid
        good = answers[0]

        def body(**changes):
            return json.dumps({"answers": [dict(good, **changes)]}).encode()

        yield self.assertRefused(path, body(proofs=["xyz"]), 400,
                                 b"Invalid proof: expected hex digits.")
        yield self.assertRefused(path, body(proofs=["ab" * 7]), 400,
                                 b"Invalid proof: wrong length.")
        yield self.assertRefused(path, body(proofs=["ab" * 8 * 21]), 400,
                                 b"Invalid proof: a proof for k=20 is 160 bytes.")
        yield self.assertRefused(path, body(plot_id="cd" * 32), 404, b"Unknown plot.")
        yield self.assertRefused(path, body(challenge="cd" * 32), 404, b"Unknown challenge.")
        yield self.assertRefused(path, body(proofs=["ab" * 160] * 9), 400,
                                 b"Too many proofs: at most 8 per challenge.")
        yield self.assertRefused(path, json.dumps({"answers": []}).encode(), 400,
                                 b"Invalid body: expected a list of answers.")
        yield self.assertRefused(path, body(), 401, b"Invalid authentication headers.",
                                 headers={})
        outcomes = yield self.answer(ALICE, answers)  # nothing above used it up
        self.assertEqual({o["outcome"] for o in outcomes}, {"counted"})


class FarmCommandTests(ProofsTestCase):

    def client_and_farm(self, key):
        """The client's farm command for key over the real routes, on key's plots."""
        provers = self.provers(key)
        directory = os.path.dirname(next(iter(provers.values())).prover.get_filename())
        client = FarmerClient("http://dataserv.test", key, self.settings.address,
                              http=self.server.http)
        return client, Farm(client, directory, self.clock, defer.maybeDeferred,
                            out=io.StringIO())

    @defer.inlineCallbacks
    def test_farm_registers_its_plots_and_answers(self):
        """The client's farm command, over the real routes: its plots are verified."""
        client, farm = self.client_and_farm(ALICE)
        yield pumped([self.server.http], client.register())
        registered = yield pumped([self.server.http], farm.register())
        self.assertEqual(registered, 2)
        yield self.rounds.run_round()
        counted = yield pumped([self.server.http], farm.answer_once())
        self.assertEqual(counted, 32)
        self.clock.advance(60)
        yield self.rounds.run_round()
        status = yield self.farmer(ALICE)
        self.assertGreater(status["verified_bytes"], plot_rules.plot_bytes(plots.K))

    @defer.inlineCallbacks
    def test_farm_keeps_each_request_within_the_body_limit(self):
        """With a body limit of 4 KB, the round's 32 answers go in several requests,
        each within it, and all count."""
        self.patch(farming, "MAX_BODY", 4096)
        client, farm = self.client_and_farm(ALICE)
        sizes = []
        send = client.answers

        def answers(batch):
            sizes.append(len(json.dumps({"answers": batch})))
            return send(batch)

        client.answers = answers
        yield pumped([self.server.http], client.register())
        yield pumped([self.server.http], farm.register())
        yield self.rounds.run_round()
        counted = yield pumped([self.server.http], farm.answer_once())
        self.assertEqual(counted, 32)
        self.assertGreater(len(sizes), 3)
        self.assertLessEqual(max(sizes), 4096)

    @defer.inlineCallbacks
    def test_farm_without_registering_says_so_and_stops(self):
        _, farm = self.client_and_farm(ALICE)
        failures = []
        done = farm.run().addErrback(failures.append)
        yield pumped([self.server.http], done)
        self.assertEqual([f.type for f in failures], [NotRegistered])
        self.assertEqual(farm.provers, {})


class MetricsTests(ProofsTestCase):

    def scraped(self):
        from tests.test_metrics import samples

        found = samples(self.server.metrics.exposition().decode())
        return {(name, labels[0][1]): value for (name, labels), value in found.items()
                if name in ("dataserv_proofs_total", "dataserv_challenge_answers_total",
                            "dataserv_plot_changes_total")}

    @defer.inlineCallbacks
    def test_answers_and_proofs_by_outcome(self):
        """Every answer and every proof received is counted once under its outcome;
        a plot registered again is not a new plot."""
        provers = self.provers(ALICE)
        yield self.register(ALICE)
        yield self.register(ALICE, SEEDS[:1])
        yield self.rounds.run_round()
        answers = self.answer_body((yield self.fetch(ALICE)), provers)
        with_proofs = [a for a in answers if a["proofs"]]
        with_proofs[0]["proofs"] = with_proofs[0]["proofs"] * 2  # one duplicate each
        duplicates = len(with_proofs[0]["proofs"]) // 2
        answers[1]["proofs"].append(os.urandom(8 * plots.K).hex())
        sent = sum(len(a["proofs"]) for a in answers)
        outcomes = yield self.answer(ALICE, answers)
        valid = sum(o["valid_proofs"] for o in outcomes)
        again = yield self.answer(ALICE, answers[:3])
        self.assertEqual({o["outcome"] for o in again}, {"repeated"})
        self.clock.advance(60)
        yield self.rounds.run_round()
        late = self.answer_body((yield self.fetch(ALICE)), provers)[:2]
        self.clock.advance(31)
        yield self.answer(ALICE, late)
        found = self.scraped()
        self.assertEqual(found, {
            ("dataserv_plot_changes_total", "registered"): 2,
            ("dataserv_challenge_answers_total", "counted"): 32,
            ("dataserv_challenge_answers_total", "repeated"): 3,
            ("dataserv_challenge_answers_total", "late"): 2,
            ("dataserv_proofs_total", "valid"): valid,
            ("dataserv_proofs_total", "invalid"): 1,
            ("dataserv_proofs_total", "duplicate"): duplicates,
            ("dataserv_proofs_total", "repeated"): sum(len(a["proofs"]) for a in answers[:3]),
            ("dataserv_proofs_total", "late"): sum(len(a["proofs"]) for a in late),
        })
        self.assertEqual(valid + 1 + duplicates, sent)
        self.assertGreater(valid, 10)


class RemovePlotTests(ProofsTestCase):

    def remove(self, key, plot_id, headers=None, farmer=None):
        return self.send(key, "/api/proofs/%s/plots/%s" % (farmer or key.nodeid, plot_id),
                         method="DELETE", headers=headers)

    @defer.inlineCallbacks
    def test_a_removed_plot_stops_counting_at_once(self):
        """The farmer's plots and verified bytes drop by the plot's at once; it is
        not challenged again and its open challenges cannot be answered; nothing else
        of the farmer changes."""
        provers = self.provers(ALICE)
        gone, kept = yield self.register(ALICE)
        yield self.call(ALICE, "/api/height/%s/7" % ALICE.address)
        yield self.play_rounds(ALICE, provers)
        before = yield self.farmer(ALICE)
        self.assertEqual(before["plots"], 2)
        kept_bytes = [s["verified_bytes"] for s in before["plot_scores"]
                      if s["plot_id"] == kept]
        self.assertGreater(kept_bytes[0], 0)
        self.assertGreater(before["verified_bytes"], kept_bytes[0])
        open_challenges = yield self.fetch(ALICE)
        code, headers, body = yield self.remove(ALICE, gone)
        self.assertEqual((code, headers.getRawHeaders(b"Content-Type")),
                         (200, [b"application/json"]))
        self.assertEqual(json.loads(body), {"plot_id": gone, "removed": True, "plots": 1,
                                            "verified_bytes": kept_bytes[0]})
        after = yield self.farmer(ALICE)
        self.assertEqual((after["plots"], after["verified_bytes"]), (1, kept_bytes[0]))
        self.assertEqual([s["plot_id"] for s in after["plot_scores"]], [kept])
        unchanged = ("plots", "verified_bytes", "plot_scores")
        self.assertEqual({k: v for k, v in after.items() if k not in unchanged},
                         {k: v for k, v in before.items() if k not in unchanged})
        # Its open challenges are gone with it.
        stale = [a for a in self.answer_body(open_challenges, provers) if a["plot_id"] == gone]
        self.assertTrue(stale)
        code, _, body = yield self.send(
            ALICE, "/api/proofs/%s/answers" % ALICE.nodeid,
            json.dumps({"answers": stale[:1]}).encode(), "POST")
        self.assertEqual((code, body), (404, b"Unknown plot."))
        # The next rounds draw for the kept plot only, and score it alone.
        self.clock.advance(60)
        yield self.rounds.run_round()
        drawn = yield self.fetch(ALICE)
        self.assertEqual({c["plot_id"] for c in drawn}, {kept})
        self.clock.advance(60)
        yield self.rounds.run_round()
        later = yield self.farmer(ALICE)
        self.assertEqual(later["plots"], 1)
        self.assertEqual(later["verified_bytes"], later["plot_scores"][0]["verified_bytes"])
        self.assertEqual(self.server.metrics.plot_changes, {"registered": 2, "removed": 1})

    @defer.inlineCallbacks
    def test_removal_refusals(self):
        alice = yield self.register(ALICE, SEEDS[:1])
        bob = yield self.register(BOB, SEEDS[:1])
        refusals = [
            (self.remove(ALICE, alice[0], farmer="nonsense"), 400, b"Invalid nodeid."),
            (self.remove(ALICE, "zz" * 32), 400, b"Invalid plot id: expected hex digits."),
            (self.remove(ALICE, "ab" * 31), 400, b"Invalid plot id: expected 32 bytes."),
            (self.remove(ALICE, alice[0], headers={}), 401, b"Invalid authentication headers."),
            (self.remove(ALICE, alice[0], headers=headers_for(ALICE, self.settings.address,
                                                              self.date())),
             401, b"Invalid authentication headers."),
            (self.remove(ALICE, bob[0]), 404, b"Unknown plot."),
            (self.remove(FarmerKey.from_seed(b"test_proofs carol"), alice[0]), 404,
             b"Farmer not found."),
        ]
        for request, status, text in refusals:
            code, headers, body = yield request
            self.assertEqual((code, body), (status, text))
            self.assertEqual(headers.getRawHeaders(b"Content-Type"), [PLAIN])
        code, _, _ = yield self.remove(ALICE, alice[0])
        self.assertEqual(code, 200)
        code, _, body = yield self.remove(ALICE, alice[0])
        self.assertEqual((code, body), (404, b"Unknown plot."))
        self.assertEqual((yield self.farmer(BOB))["plots"], 0)  # not scored yet
        yield self.rounds.run_round()
        self.assertEqual((yield self.farmer(BOB))["plots"], 1)
        # The seed may be registered again: a new plot, scored afresh.
        again = yield self.register(ALICE, SEEDS[:1])
        self.assertEqual(again, alice)

    @defer.inlineCallbacks
    def test_a_round_that_tallied_before_the_removal_does_not_undo_it(self):
        store = ProofStore(self.db, self.clock)
        gone, _ = yield self.register(ALICE)
        yield self.rounds.run_round()
        now = self.clock.seconds()
        tallies = yield store.all_tallies(now, now - 600, 60, 30)
        self.assertEqual(len(tallies), 2)
        code, _, _ = yield self.remove(ALICE, gone)
        self.assertEqual(code, 200)
        from dataserv.proofs.scoring import farmer_totals

        stale = farmer_totals(tallies)
        yield store.write_farmer_totals(stale)
        self.assertEqual((yield self.farmer(ALICE))["plots"], 1)

    @defer.inlineCallbacks
    def test_the_client_removes_a_plot_by_id_or_file(self):
        provers = self.provers(ALICE)
        first, second = yield self.register(ALICE)
        client = FarmerClient("http://dataserv.test", ALICE, self.settings.address,
                              http=self.server.http)
        path = provers[first].prover.get_filename()
        reply = yield pumped([self.server.http], client.remove_plot(path))
        self.assertEqual((reply.status, reply.json()["plot_id"]), (200, first))
        reply = yield pumped([self.server.http], client.remove_plot(second))
        self.assertEqual((reply.status, reply.json()["plots"]), (200, 0))
        reply = yield pumped([self.server.http], client.remove_plot(second))
        self.assertEqual((reply.status, reply.text), (404, "Unknown plot."))
        self.failureResultOf(client.remove_plot("/plots/not-a-plot"), ValueError)


class MaxPlotsTests(ProofsTestCase):

    def plot(self, key, seed, k=plots.K):
        return self.send(key, "/api/proofs/%s/plots" % key.nodeid,
                         json.dumps({"seed": seed.hex(), "k": k}).encode(), "POST")

    @defer.inlineCallbacks
    def test_a_farmer_may_have_at_most_max_plots(self):
        self.serve(max_plots=2, **SETTINGS)
        seeds = [bytes([i]) * 32 for i in range(10, 14)]
        ids = yield self.register(ALICE, seeds[:2])
        code, headers, body = yield self.plot(ALICE, seeds[2])
        self.assertEqual((code, body),
                         (403, b"Too many plots: at most 2 per farmer; remove one first."))
        self.assertEqual(headers.getRawHeaders(b"Content-Type"), [PLAIN])
        self.assertEqual(self.server.metrics.refusals, {"max_plots": 1})
        # A plot registered already is answered as before, at the limit too.
        code, _, body = yield self.plot(ALICE, seeds[0])
        self.assertEqual((code, json.loads(body)["new"]), (200, False))
        # Per farmer: another farmer has a limit of its own.
        yield self.register(BOB, seeds[2:4])
        # A removal makes room.
        code, _, _ = yield self.send(ALICE, "/api/proofs/%s/plots/%s" % (ALICE.nodeid, ids[0]),
                                     method="DELETE")
        self.assertEqual(code, 200)
        code, _, body = yield self.plot(ALICE, seeds[2])
        self.assertEqual((code, json.loads(body)["new"]), (200, True))
        code, _, _ = yield self.plot(ALICE, seeds[3])
        self.assertEqual(code, 403)

    @defer.inlineCallbacks
    def test_no_limits_switches_it_off(self):
        self.serve(max_plots=1, no_limits=True, **SETTINGS)
        yield self.register(ALICE, [bytes([i]) * 32 for i in range(20, 23)])

    @defer.inlineCallbacks
    def test_zero_is_no_limit(self):
        self.serve(max_plots=0, **SETTINGS)
        yield self.register(ALICE, [bytes([i]) * 32 for i in range(30, 33)])
