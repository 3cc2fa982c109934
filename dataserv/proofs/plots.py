"""What a plot is to the server: its id, bound to one farmer, and its size for its k.

The plot id is computed by the server from what the farmer registers, never taken
from the farmer: ``SHA-256(PLOT_ID_TAG || nodeid || seed)``, where nodeid is the 20
bytes of the farmer's hash160 and seed the 32 bytes the farmer chose. chiapos builds
a plot for one id only, so a plot made for one farmer proves nothing for another.
"""

import hashlib

# The domain tag: no other hash in dataserv starts with these bytes.
PLOT_ID_TAG = b"dataserv plot id v1\x00"
SEED_BYTES = 32
# chiapos refuses to build or verify plots outside these sizes; --min-k raises the floor.
SMALLEST_K = 18
LARGEST_K = 50
# A proof is 64 x-values of k bits each: 8 * k bytes.
PROOF_BYTES_PER_K = 8
# chia's expected plot size is (2k + 1) * 2^(k - 1) "times a constant factor": real
# files are smaller. Measured here: 0.786 (k=20), 0.796 (21), 0.783 (22), 0.789 (23);
# a k=32 plot is 101.4 GiB, 0.779 of the formula. chia itself counts 0.762 of it as a
# plot's space; we take the same, so a verified byte is never more than was stored.
ACTUAL_SPACE_FACTOR = 0.762


def plot_id(nodeid: bytes, seed: bytes) -> bytes:
    """The 32-byte chiapos plot id of the plot ``seed`` of the farmer ``nodeid``."""
    if len(nodeid) != 20 or len(seed) != SEED_BYTES:
        raise ValueError("a nodeid is 20 bytes and a seed 32")
    return hashlib.sha256(PLOT_ID_TAG + nodeid + seed).digest()


def plot_bytes(k: int) -> int:
    """The bytes a complete plot of size k is credited with."""
    return int((2 * k + 1) * 2 ** (k - 1) * ACTUAL_SPACE_FACTOR)


def proof_bytes(k: int) -> int:
    """The length of one proof for a plot of size k."""
    return PROOF_BYTES_PER_K * k
