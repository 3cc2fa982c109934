"""Tests for :mod:`dataserv.daemon.process`."""

import gc
import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from dataserv.daemon import process


class TuneTests(SynchronousTestCase):

    def test_tune(self):
        self.addCleanup(sys.setswitchinterval, sys.getswitchinterval())
        sys.setswitchinterval(0.005)
        gc.unfreeze()  # whatever an earlier tune() froze goes back to the collector
        self.assertEqual(gc.get_freeze_count(), 0)
        process.tune()
        self.assertAlmostEqual(sys.getswitchinterval(), process.SWITCH_INTERVAL)
        self.assertLess(process.SWITCH_INTERVAL, 0.005)
        # Everything that existed was moved out of the collector's reach.
        self.assertGreater(gc.get_freeze_count(), 0)


class _Limits:
    """A stand-in for the resource module."""

    RLIMIT_NOFILE = 7

    def __init__(self, soft, hard, refuse=False):
        self.limits = (soft, hard)
        self.refuse = refuse

    def getrlimit(self, which):
        assert which == self.RLIMIT_NOFILE
        return self.limits

    def setrlimit(self, which, limits):
        if self.refuse:
            raise ValueError("not allowed")
        self.limits = limits


class DescriptorLimitTests(SynchronousTestCase):

    def test_soft_raised_to_hard(self):
        limits = _Limits(1024, 524288)
        self.assertEqual(process.raise_descriptor_limit(limits), (524288, 524288))
        self.assertEqual(limits.limits, (524288, 524288))

    def test_refused_is_logged_not_fatal(self):
        limits = _Limits(1024, 4096, refuse=True)
        self.assertEqual(process.raise_descriptor_limit(limits), (1024, 4096))

    def test_real_process(self):
        script = ("import resource; from dataserv.daemon import process; "
                  "_, hard = resource.getrlimit(resource.RLIMIT_NOFILE); "
                  "resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard)); "
                  "process.raise_descriptor_limit(); "
                  "print(resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard))")
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self.assertEqual(out.stdout, b"True\n")
