"""Tests for :mod:`dataserv.daemon.process`."""

import gc
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
