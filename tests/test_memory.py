"""Tests for :mod:`dataserv.daemon.memory`."""

import ctypes.util

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from dataserv.daemon import memory


class ReleaseTests(SynchronousTestCase):

    def test_release_trims_the_heap(self):
        calls = []
        self.patch(memory, "_trim", lambda pad: calls.append(pad))
        memory.release()
        self.assertEqual(calls, [0])

    def test_finds_glibc_malloc_trim(self):
        if "libc.so" not in (ctypes.util.find_library("c") or ""):
            raise SkipTest("not glibc")
        self.patch(memory, "_trim", None)
        self.assertEqual(memory._malloc_trim().__name__, "malloc_trim")
        self.assertIs(memory.release(), True)  # the real call, on the real heap

    def test_without_malloc_trim(self):
        """Where the C library has no malloc_trim, release() does nothing."""
        def no_libc(name):
            raise OSError("no such library: %s" % (name,))

        self.patch(memory, "_trim", None)
        self.patch(memory.ctypes, "CDLL", no_libc)
        self.assertIs(memory.release(), False)
        self.assertIs(memory._trim, False)  # looked for once, not again
