"""A plot's score: proofs found over proofs expected in the trailing window.

A challenge picks a k-bit value; a complete plot holds about 2^k entries in its last
table, so it answers a challenge with about one proof (Poisson-like: none, one or
several). Measured over 1000 random challenges per plot: 1.001 proofs per challenge at
k=20, 1.011 at k=21, 1.023 at k=22 (and 0.91-1.04 over 300 at k=21-25 in the project
notes). A plot missing a fraction of its tables answers about that fraction less, so
the ratio over many challenges estimates how much of the plot is there.

Only settled challenges count: answered, or fetched with the proof window over, or
never fetched in a round that has closed (see ProofStore.plot_tallies).
"""

from typing import Iterable, Tuple

from dataserv.proofs.plots import plot_bytes

PROOFS_PER_CHALLENGE = 1.0


def verified_fraction(found: int, settled: int) -> float:
    """Proofs found over proofs expected for ``settled`` challenges, capped at 1."""
    if settled <= 0:
        return 0.0
    return min(1.0, found / (settled * PROOFS_PER_CHALLENGE))


def verified_bytes(k: int, found: int, settled: int) -> int:
    """The bytes one plot proved: its size for k times its verified fraction."""
    return int(plot_bytes(k) * verified_fraction(found, settled))


def farmer_totals(tallies: Iterable[Tuple[int, int, int, int]]) -> dict:
    """{farmer id: (plots, verified bytes)} from rows (farmer id, k, found, settled),
    one row per registered plot."""
    totals: dict = {}
    for farmer_id, k, found, settled in tallies:
        plots, verified = totals.get(farmer_id, (0, 0))
        totals[farmer_id] = (plots + 1, verified + verified_bytes(k, found, settled))
    return totals
