"""Every command-line entry point answers --help with exit 0; `twistd dataserv
--version` prints dataserv's one version."""

import importlib.metadata
import os
import subprocess
import sys

from twisted.trial import unittest

import dataserv
from tests.test_daemon import SOURCE_TREE, TWISTD, child_environment

# (argv after the interpreter, text the help must contain)
ENTRY_POINTS = (
    (["-m", "dataserv.client", "--help"], "python -m dataserv.client URL"),
    (["-m", "dataserv.client", "-h"], "python -m dataserv.client URL"),
    (["-m", "dataserv.storage.pgcluster", "--help"], "start|stop DIR"),
    (["-m", "benchmarks.run", "--help"], "--url"),
    (["-m", "benchmarks.summary_pass", "--help"], "usage"),
    (["-m", "benchmarks.ceiling", "--help"], "PORT"),
    (["-m", "benchmarks.operating_costs", "--help"], "--baseline-twistd"),
    (["-m", "benchmarks.hot_path", "--help"], "--batches"),
    ([TWISTD, "dataserv", "--help"], "--listen"),
)


def run(argv):
    """Run a command from the source tree; (exit code, stdout, stderr)."""
    if argv[0] != TWISTD:
        argv = [sys.executable] + argv
    done = subprocess.run(argv, cwd=SOURCE_TREE, env=child_environment(), capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    return done.returncode, done.stdout, done.stderr


class HelpTests(unittest.TestCase):
    """--help is a request, not a mistake: the text on stdout, exit 0."""

    def test_every_help_exits_zero(self):
        if not os.access(TWISTD, os.X_OK):
            raise unittest.SkipTest("no twistd next to %s" % (sys.executable,))
        outcomes = {}
        for argv, expected in ENTRY_POINTS:
            code, out, err = run(argv)
            outcomes[" ".join(argv[-3:])] = (code, expected in out)
        self.assertEqual(outcomes, {k: (0, True) for k in outcomes})

    def test_client_usage_mistake_still_exits_2(self):
        code, out, err = run(["-m", "dataserv.client"])
        self.assertEqual((code, out), (2, ""))
        self.assertIn("usage:", err)


class VersionTests(unittest.TestCase):
    """One version, in dataserv/__init__.py; setup.py and --version read it."""

    def test_twistd_dataserv_version(self):
        if not os.access(TWISTD, os.X_OK):
            raise unittest.SkipTest("no twistd next to %s" % (sys.executable,))
        code, out, err = run([TWISTD, "dataserv", "--version"])
        self.assertEqual((code, out), (0, "dataserv %s\n" % (dataserv.__version__,)), err)

    def test_installed_metadata_has_the_same_version(self):
        self.assertEqual(importlib.metadata.version("dataserv"), dataserv.__version__)

    def test_version_is_plain(self):
        self.assertRegex(dataserv.__version__, r"^\d+\.\d+\.\d+")
