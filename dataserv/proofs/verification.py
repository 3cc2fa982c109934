"""Checking proofs with chiapos' Verifier.

One verification costs about 80-150 microseconds of CPU (measured for k=20-25);
chiapos releases the GIL while it runs (see README, "Proofs"), so the daemon runs
batches of them in its thread pool, off the thread that answers pings.
"""

import os
import threading
from typing import Iterable

from chiapos import Verifier

_VERIFIER = Verifier()
# Niceness of the threads that check proofs: background work, which the reactor thread
# (pings) and PostgreSQL should win the CPU from. Linux applies it per thread.
NICENESS = 10
_niced = threading.local()


def _lower_this_threads_priority() -> None:
    if getattr(_niced, "done", False) or threading.current_thread() is threading.main_thread():
        return
    _niced.done = True
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICENESS)
    except (AttributeError, OSError):  # not Linux, or not allowed: run as is
        pass


def valid_proofs(plot_id: bytes, k: int, challenge: bytes, proofs: Iterable[bytes]) -> int:
    """How many distinct proofs are valid for the plot and the challenge."""
    valid = 0
    for proof in set(proofs):
        if _VERIFIER.validate_proof(plot_id, k, challenge, proof) is not None:
            valid += 1
    return valid


def count_valid(items: Iterable[tuple]) -> list:
    """valid_proofs for each (plot_id, k, challenge, proofs): one call for a batch,
    so a whole answer is checked in one trip to a worker thread (whose priority is
    lowered, see NICENESS)."""
    _lower_this_threads_priority()
    return [valid_proofs(*item) for item in items]
