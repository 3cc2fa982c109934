"""The proof-of-space rules without a database: plot ids, sizes, scores, body
parsing, and the rounds' LoopingCall on a Clock."""

import hashlib
import json

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from dataserv.daemon.config import ConfigError, Settings
from dataserv.proofs import plots, rules, scoring
from dataserv.proofs.rounds import ChallengeRounds
from dataserv.storage.database import DatabaseUnavailable


class PlotTests(SynchronousTestCase):

    def test_plot_id_binds_the_nodeid(self):
        nodeid, seed = bytes(range(20)), b"\x07" * 32
        expected = hashlib.sha256(b"dataserv plot id v1\x00" + nodeid + seed).digest()
        self.assertEqual(plots.plot_id(nodeid, seed), expected)
        self.assertNotEqual(plots.plot_id(b"\x01" * 20, seed), expected)
        self.assertRaises(ValueError, plots.plot_id, nodeid, b"short")

    def test_plot_bytes(self):
        """chia's expected size times 0.762; below the real files measured."""
        self.assertEqual(plots.plot_bytes(32), int(65 * 2 ** 31 * 0.762))
        self.assertLess(plots.plot_bytes(20), 16905079)  # a real k=20 plot's size
        self.assertLess(plots.plot_bytes(32), int(101.4 * 1024 ** 3))
        self.assertEqual(plots.proof_bytes(32), 256)


class ScoreTests(SynchronousTestCase):

    def test_fraction_is_found_over_expected_capped_at_one(self):
        self.assertEqual(scoring.verified_fraction(0, 0), 0.0)
        self.assertEqual(scoring.verified_fraction(30, 60), 0.5)
        self.assertEqual(scoring.verified_fraction(80, 60), 1.0)

    def test_farmer_totals(self):
        size = plots.plot_bytes(29)
        totals = scoring.farmer_totals([(1, 29, 10, 10), (1, 29, 5, 10), (2, 29, 0, 0)])
        self.assertEqual(totals, {1: (2, size + int(size * 0.5)), 2: (1, 0)})


class BodyTests(SynchronousTestCase):

    def test_plot_body(self):
        body = json.dumps({"seed": "ab" * 32, "k": 30}).encode()
        self.assertEqual(rules.parse_plot(body), (b"\xab" * 32, 30))
        for bad in (b"[]", b"{", json.dumps({"seed": "ab" * 32, "k": True}).encode(),
                    json.dumps({"seed": "ab" * 32, "k": "30"}).encode(),
                    json.dumps({"seed": 5, "k": 30}).encode()):
            self.assertRaises(rules.InvalidProofRequest, rules.parse_plot, bad)
        self.assertRaises(rules.BodyTooLarge, rules.parse_plot, b" " * (rules.MAX_BODY + 1))

    def test_answers_body_limits(self):
        item = {"plot_id": "00" * 32, "challenge": "11" * 32, "proofs": ["22" * 160]}
        self.assertEqual(rules.parse_answers(json.dumps({"answers": [item]}).encode()),
                         [(b"\x00" * 32, b"\x11" * 32, [b"\x22" * 160])])
        many = [dict(item, challenge="%064x" % i) for i in range(rules.MAX_ANSWERS + 1)]
        self.assertEqual(rules.MAX_ANSWERS, 64)
        self.assertEqual(len(rules.parse_answers(json.dumps({"answers": many[:64]}).encode())),
                         64)
        self.assertRaises(rules.InvalidProofRequest, rules.parse_answers,
                          json.dumps({"answers": many}).encode())
        self.assertRaises(rules.InvalidProofRequest, rules.parse_answers,
                          json.dumps({"answers": [item, item]}).encode())


class SettingsTests(SynchronousTestCase):

    def test_defaults_and_range(self):
        settings = Settings.from_mapping({}, environ={})
        self.assertEqual((settings.min_k, settings.proof_window, settings.challenge_interval,
                          settings.challenges_per_round), (29, 30.0, 60.0, 4))
        self.assertEqual(Settings.from_mapping({}, environ={"DATASERV_MIN_K": "32"}).min_k, 32)
        self.assertRaises(ConfigError, Settings.from_mapping, {"min-k": "17"}, {})


class FakeStore:
    def __init__(self):
        self.calls = []
        self.fail = None

    def all_tallies(self, now, since, interval, window):
        self.calls.append(("tallies", now, since))
        if self.fail:
            return defer.fail(self.fail)
        return defer.succeed([(7, 29, 4, 4)])

    def write_farmer_totals(self, totals):
        self.calls.append(("totals", totals))
        return defer.succeed(None)

    def draw_round(self, now, per_plot, interval, random_bytes):
        self.calls.append(("draw", now, per_plot, len(random_bytes(32))))
        return defer.succeed(per_plot)

    def prune_challenges(self, before):
        self.calls.append(("prune", before))
        return defer.succeed(None)


class RoundsTests(SynchronousTestCase):

    def test_a_round_every_interval_and_errors_do_not_stop_it(self):
        clock, store = task.Clock(), FakeStore()
        settings = Settings(challenge_interval=60, challenges_per_round=4, score_window=600)
        rounds = ChallengeRounds(store, settings, clock)
        rounds.startService()
        self.assertEqual(store.calls, [
            ("tallies", 0, -600), ("totals", {7: (1, plots.plot_bytes(29))}),
            ("draw", 0, 4, 32), ("prune", -720)])
        store.fail = DatabaseUnavailable("down")
        clock.advance(60)
        self.assertEqual((rounds.rounds, rounds.failures), (1, 1))
        store.fail = None
        clock.advance(60)
        self.assertEqual((rounds.rounds, rounds.failures), (2, 1))
        rounds.stopService()
        before = len(store.calls)
        clock.advance(600)
        self.assertEqual(len(store.calls), before)
        self.flushLoggedErrors()


class VerificationThreadTests(SynchronousTestCase):

    def test_checks_run_at_a_lowered_priority_off_the_main_thread(self):
        """A worker thread that checks proofs gives way to the reactor thread."""
        import os
        import threading

        from dataserv.proofs import verification

        seen = {}

        def work():
            seen["valid"] = verification.count_valid(
                [(b"\0" * 32, 20, b"\1" * 32, [b"\2" * 160])])
            seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

        before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        self.assertEqual(seen["valid"], [0])
        self.assertEqual(seen["nice"], verification.NICENESS)
        self.assertEqual(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), before)
