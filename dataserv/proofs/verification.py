"""Checking proofs with chiapos' Verifier.

One verification costs about 80-150 microseconds of CPU (measured for k=20-25);
chiapos releases the GIL while it runs (see README, "Proofs"), so the daemon runs
batches of them in its thread pool, off the thread that answers pings.
"""

from typing import Iterable

from chiapos import Verifier

_VERIFIER = Verifier()


def valid_proofs(plot_id: bytes, k: int, challenge: bytes, proofs: Iterable[bytes]) -> int:
    """How many distinct proofs are valid for the plot and the challenge."""
    valid = 0
    for proof in set(proofs):
        if _VERIFIER.validate_proof(plot_id, k, challenge, proof) is not None:
            valid += 1
    return valid


def count_valid(items: Iterable[tuple]) -> list:
    """valid_proofs for each (plot_id, k, challenge, proofs): one call for a batch,
    so a whole answer is checked in one trip to a worker thread."""
    return [valid_proofs(*item) for item in items]
