"""The farmer side of proof of space: building plots with chiapos and finding proofs.

Everything here blocks (plotting takes minutes, a look-up reads the disk): the
client calls it off the reactor thread.

chiapos' plotter prints its phases and tables on the process's standard output
(file descriptor 1, from C++). :func:`create_plot` takes them off it: while it plots,
fd 1 is a temporary file (kept only to show its end if plotting fails), and fd 1 is
put back afterwards, on error too. Anything else written on stdout meanwhile would
go there as well; the client prints its own lines on stderr.
"""

import contextlib
import ctypes
import os
import sys
import tempfile
import threading
from typing import IO, Iterator, List, Tuple

from chiapos import DiskPlotter, DiskProver

from dataserv.proofs.plots import plot_id

# chiapos' reference plotter: a stripe size of 65536 raised RuntimeError at k=22-23;
# 8192 works from k=21 (and 4096 at k=20).
BUFFER_MB = 2000
BUCKETS = 128
SUFFIX = ".plot"
# What is shown of chiapos' output when plotting fails.
TAIL_BYTES = 2000
# One plot at a time may own fd 1.
_fd1 = threading.Lock()


def stripe_size(k: int) -> int:
    """A stripe size chiapos accepts for k."""
    return 4096 if k <= 20 else 8192


def plot_name(k: int, seed: bytes) -> str:
    """The file name of a plot: its k and seed, so the client can register it again."""
    return "dataserv-k%d-%s%s" % (k, seed.hex(), SUFFIX)


def parse_plot_name(name: str) -> Tuple[int, bytes]:
    """(k, seed) from a plot's file name, or ValueError."""
    if not (name.startswith("dataserv-k") and name.endswith(SUFFIX)):
        raise ValueError("not a dataserv plot: %s" % name)
    k_text, seed_hex = name[len("dataserv-k"):-len(SUFFIX)].split("-", 1)
    seed = bytes.fromhex(seed_hex)
    if len(seed) != 32:
        raise ValueError("not a dataserv plot: %s" % name)
    return int(k_text), seed


def _flush_c_stdio() -> None:
    """Write out what C code left in its stdout buffer (a file is fully buffered)."""
    ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def stdout_to(target: IO[bytes]) -> Iterator[None]:
    """While the block runs, what anything writes on fd 1 goes to the file
    ``target``, not to standard output; fd 1 is restored when the block ends, also
    when it raises. (A file, not a pipe: chiapos keeps the GIL while it plots, so no
    Python thread could drain a pipe meanwhile.)"""
    with _fd1:
        sys.stdout.flush()
        saved = os.dup(1)
        try:
            os.dup2(target.fileno(), 1)
            yield
        finally:
            _flush_c_stdio()
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


def create_plot(directory: str, nodeid: bytes, k: int, seed: bytes, threads: int = 2) -> str:
    """Build the plot ``seed`` of size k for the farmer ``nodeid`` in directory; its path.
    Temporary files go to the same directory. chiapos' own output is kept off
    stdout; when plotting fails, its last lines are written on stderr."""
    os.makedirs(directory, exist_ok=True)
    name = plot_name(k, seed)
    with tempfile.TemporaryFile() as said:
        try:
            with stdout_to(said):
                DiskPlotter().create_plot_disk(
                    directory, directory, directory, name, k, seed, plot_id(nodeid, seed),
                    BUFFER_MB, BUCKETS, stripe_size(k), threads, False)
        except BaseException:
            size = said.seek(0, os.SEEK_END)
            said.seek(max(0, size - TAIL_BYTES))
            tail = said.read().decode("utf-8", "replace").strip()
            sys.stderr.write("chiapos: %s%s\n" % ("..." if size > TAIL_BYTES else "", tail))
            raise
    return os.path.join(directory, name)


def list_plots(directory: str) -> List[Tuple[str, int, bytes]]:
    """[(path, k, seed)] of the finished plots in directory."""
    found = []
    for name in sorted(os.listdir(directory)):
        try:
            k, seed = parse_plot_name(name)
        except ValueError:
            continue
        found.append((os.path.join(directory, name), k, seed))
    return found


class Prover:
    """Proofs from one plot file."""

    def __init__(self, path: str) -> None:
        self.prover = DiskProver(path)
        self.plot_id = bytes(self.prover.get_id())
        self.k = self.prover.get_size()

    def proofs(self, challenge: bytes) -> List[bytes]:
        """Every proof the plot holds for challenge (often one, sometimes none or more)."""
        qualities = self.prover.get_qualities_for_challenge(challenge)
        return [bytes(self.prover.get_full_proof(challenge, i)) for i in range(len(qualities))]
