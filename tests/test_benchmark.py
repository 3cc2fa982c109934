"""Tests for the benchmark's plumbing (:mod:`benchmarks.run`), without load."""

import argparse
import time

from twisted.trial.unittest import SynchronousTestCase

from benchmarks import run
from benchmarks.drivers import Result


class RecordingDriver:
    """Answers each run with the next rate; records the requests it was given."""

    def __init__(self, rates, failures=None):
        self.rates = list(rates)
        self.failures = list(failures or [0] * len(self.rates))
        self.given = []

    def run(self, host, port, requests, connections, seconds):
        self.given.append(requests)
        rate, failed = self.rates.pop(0), self.failures.pop(0)
        return Result(requests=int(rate * seconds), seconds=seconds, rps=rate, p50_ms=1.0,
                      p99_ms=2.0, max_ms=3.0, non_2xx=failed, socket_errors=failed // 2,
                      driver="fake")


class LoadTests(SynchronousTestCase):

    def bench(self, rates, failures=None):
        args = argparse.Namespace(repeat=3, connections=16, seconds=8.0)
        bench = run.Bench.__new__(run.Bench)  # no PostgreSQL, no driver lookup
        bench.args, bench.driver = args, RecordingDriver(rates, failures)
        return bench

    def test_signed_requests_are_made_for_every_run(self):
        """Pre-signed Dates expire after --auth-timeout: a maker is called per run."""
        bench = self.bench([300.0, 100.0, 200.0])
        made = []

        def requests():
            made.append(len(made))
            return ["request %d" % len(made)]

        result = bench.load(5000, requests)
        self.assertEqual(bench.driver.given, [["request 1"], ["request 2"], ["request 3"]])
        # The run with the median rate stands for all three; every rate is kept.
        self.assertEqual((result.rps, result.runs), (200.0, [300.0, 100.0, 200.0]))

    def test_a_plain_list_is_replayed(self):
        bench = self.bench([1.0, 2.0, 3.0])
        bench.load(5000, ["same"])
        self.assertEqual(bench.driver.given, [["same"]] * 3)

    def test_failures_of_every_run_are_counted(self):
        """A fast run full of 401s must not hide behind a clean median run."""
        bench = self.bench([100.0, 200.0, 900.0], failures=[0, 0, 5000])
        result = bench.load(5000, ["x"])
        self.assertEqual((result.rps, result.non_2xx, result.socket_errors), (200.0, 5000, 2500))


class DaemonFlagTests(SynchronousTestCase):
    """The load comes from one address: every daemon runs with --no-limits except
    those that measure what the limits cost."""

    def started(self, call):
        started = []

        class Recorder:
            def __init__(self, dsn, port, logdir, *flags, preexec=None):
                started.append(flags)

            def wait_ready(self):
                pass

        self.patch(run, "Daemon", Recorder)
        bench = run.Bench.__new__(run.Bench)
        bench.dsn, bench.tmp = "dbname=x", "/tmp"
        call(bench)
        return started

    def test_no_limits_by_default(self):
        self.assertEqual(self.started(lambda b: b.daemon("--max-ping", "0")),
                         [("--no-limits", "--max-ping", "0")])

    def test_limited_daemons_sit_behind_a_trusted_proxy(self):
        [flags] = self.started(lambda b: b.limited_daemon("--max-ping", "0"))
        self.assertNotIn("--no-limits", flags)
        self.assertEqual(flags, ("--trusted-proxies", "127.0.0.1", "--max-ping", "0"))

    def test_registrations_come_from_networks_of_their_own(self):
        from benchmarks import presign

        headers = [presign.forwarded_from_many_networks(i, None) for i in (0, 1, 256, 65535)]
        self.assertEqual([h[0][1] for h in headers],
                         ["10.0.0.7", "10.0.1.7", "10.1.0.7", "10.255.255.7"])
        raw = presign.signed_requests("h:1", presign.farmers(2), "1Server",
                                      lambda f: "/p",
                                      headers_for=presign.forwarded_from_many_networks)
        self.assertIn(b"\r\nX-Forwarded-For: 10.0.1.7\r\n", raw[1])


class SigningTests(SynchronousTestCase):
    """Each authenticated request is accepted once: a run's requests all differ."""

    def test_rounds_are_all_different_and_valid(self):
        from benchmarks import presign
        from dataserv.identity import v2
        from dataserv.identity.auth import Verifier

        field = presign.farmers(3, tag="bench-test")
        server = field[0].address
        verifier = Verifier(server, 30)
        for request_bound in (False, True):
            requests = presign.signed_rounds("h", field, server,
                                             lambda f: "/api/ping/" + f.address, 4,
                                             request_bound)
            self.assertEqual(len(set(requests)), 12)
            for raw in requests:
                head = dict(line.split(": ", 1) for line in
                            raw.decode().split("\r\n")[2:] if ": " in line)
                path = raw.decode().split(" ")[1]
                address = path.rsplit("/", 1)[1]
                if request_bound:
                    v2.verify(verifier.backend, server, 30, address, "GET", path,
                              head["Date"], head["Authorization"], b"", time.time())
                else:
                    verifier.verify(address, head["Date"], head["Authorization"], time.time())

    def test_rounds_cover_a_run(self):
        from benchmarks import presign

        self.assertEqual(presign.rounds_for(10000, 8.0), 5)
        self.assertEqual(presign.rounds_for(10, 8.0), presign.MAX_ROUNDS)


class OptionTests(SynchronousTestCase):

    def test_only_unknown_step_is_refused(self):
        import contextlib
        import io

        with contextlib.redirect_stderr(io.StringIO()) as err:
            with self.assertRaises(SystemExit):
                run.main(["--only", "ping,bogus"])
        self.assertIn("bogus", err.getvalue())

    def test_only_selects_steps(self):
        bench = run.Bench.__new__(run.Bench)
        bench.args = argparse.Namespace(only={"ping"})
        self.assertEqual([s for s in run.Bench.STEPS if bench.wanted(s)], ["ping"])
        bench.args = argparse.Namespace(only=None)
        self.assertEqual([s for s in run.Bench.STEPS if bench.wanted(s)], list(run.Bench.STEPS))

    def test_daemon_passes_its_flags_as_given(self):
        # Bench.daemon decides about --no-limits (DaemonFlagTests): a daemon started
        # with its limits on (a limits scenario, the hostile suite) must have them.
        started = []

        class Popen:
            def __init__(self, argv, **kwargs):
                started.append(argv)

        self.patch(run.subprocess, "Popen", Popen)
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            daemon = run.Daemon("dbname=x", 5999, tmp, "--max-ping", "0")
            daemon.log.close()
        self.assertNotIn("--no-limits", started[0])
        self.assertEqual(started[0][-2:], ["--max-ping", "0"])


class BuildComparisonTests(SynchronousTestCase):
    """benchmarks.ab runs builds older than --no-limits through a wrapper without it."""

    def fake_twistd(self, help_text):
        import os
        directory = os.path.abspath(self.mktemp())
        os.mkdir(directory)
        path = os.path.join(directory, "twistd")
        with open(path, "w") as f:
            f.write('#!/bin/sh\nif [ "$2" = --help ]; then echo "%s"; exit 0; fi\n'
                    'printf "%%s\\n" "$@"\n' % help_text)
        os.chmod(path, 0o755)
        return directory, path

    def test_a_build_that_knows_the_flag_runs_as_it_is(self):
        from benchmarks import ab
        directory, twistd = self.fake_twistd("--no-limits  testing only")
        self.assertEqual(ab.wrapper(twistd, directory), twistd)

    def test_an_older_build_gets_every_flag_but_no_limits(self):
        import subprocess
        from benchmarks import ab
        directory, twistd = self.fake_twistd("--max-ping")
        wrapped = ab.wrapper(twistd, directory)
        out = subprocess.run([wrapped, "-n", "dataserv", "--no-limits", "--listen", "tcp:1"],
                             capture_output=True, text=True).stdout
        self.assertEqual(out.split(), ["-n", "dataserv", "--listen", "tcp:1"])
