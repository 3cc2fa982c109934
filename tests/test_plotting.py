"""chiapos' output stays off the client's stdout: fd 1 is a temporary file while a
plot is built, and is put back afterwards, also on error. Each test captures fd 1
itself to see what reached it."""

import contextlib
import ctypes
import io
import os
import sys

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from dataserv.client import plotting
from dataserv.client.farming import make_plots
from tests import plots

LIBC = ctypes.CDLL(None)


@contextlib.contextmanager
def fd1_captured(test):
    """Point fd 1 at a file for the block; yields a function that reads the file."""
    path = test.mktemp()
    with open(path, "w+b") as captured:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(captured.fileno(), 1)

        def written():
            LIBC.fflush(None)
            sys.stdout.flush()
            with open(path, "rb") as f:
                return f.read()

        try:
            yield written
        finally:
            LIBC.fflush(None)
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


class StdoutToTests(SynchronousTestCase):

    def target(self):
        f = open(self.mktemp(), "w+b")
        self.addCleanup(f.close)
        return f

    def test_fd1_goes_to_the_file_and_comes_back(self):
        """Raw writes and C's buffered stdout both land in the file."""
        target = self.target()
        with fd1_captured(self) as written:
            with plotting.stdout_to(target):
                os.write(1, b"one\n")
                LIBC.printf(b"from C, buffered\n")
            os.write(1, b"after\n")
            self.assertEqual(written(), b"after\n")
        target.seek(0)
        self.assertEqual(target.read(), b"one\nfrom C, buffered\n")

    def test_fd1_comes_back_when_the_block_raises(self):
        target = self.target()
        with fd1_captured(self) as written:
            with self.assertRaises(RuntimeError):
                with plotting.stdout_to(target):
                    os.write(1, b"before the error\n")
                    raise RuntimeError("chiapos failed")
            os.write(1, b"after\n")
            self.assertEqual(written(), b"after\n")

    def test_a_failed_plot_says_why_on_stderr_only(self):
        """chiapos refuses k=10 with a bare std::exception after printing the reason
        on stdout: the reason goes to stderr, nothing to stdout."""
        self.patch(sys, "stderr", io.StringIO())
        with fd1_captured(self) as written:
            self.assertRaises(RuntimeError, plotting.create_plot, self.mktemp(),
                              b"\x01" * 20, 10, b"\x02" * 32)
            self.assertEqual(written(), b"")
        self.assertIn("chiapos: Caught plotting error: Plot size k= 10 is invalid",
                      sys.stderr.getvalue())


class PlotCommandOutputTests(SynchronousTestCase):

    def test_plot_shows_only_its_own_lines(self):
        """A real plot: nothing on fd 1, the command's two lines on its output."""
        out = io.StringIO()
        directory = self.mktemp()
        with fd1_captured(self) as written:
            d = make_plots(b"\x01" * 20, plots.K, directory, 1, defer.maybeDeferred, out=out,
                           random_bytes=lambda n: b"\x05" * n)
            [path] = self.successResultOf(d)
            self.assertEqual(written(), b"")
        self.assertEqual(out.getvalue().splitlines(), [
            "plot 1/1: k=%d seed %s ..." % (plots.K, "05" * 32),
            "plot 1/1: done, %s (%d bytes)" % (path, os.path.getsize(path))])
