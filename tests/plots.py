"""Small real plots for the tests, built once per run and reused.

k=20 is the smallest size the reference plotter builds reliably here (k=18 and 19
failed with most stripe sizes); one plot takes 7-20 s on a loaded 2-core machine.
The tests use it through Settings(min_k=20); the daemon's default stays --min-k 29.
"""

import atexit
import shutil
import tempfile

from dataserv.client.plotting import Prover, create_plot

K = 20
_directory = None
_plots = {}


def plot(nodeid: bytes, seed: bytes) -> Prover:
    """A Prover of the plot ``seed`` of the farmer ``nodeid`` (built at first use)."""
    global _directory
    if (nodeid, seed) not in _plots:
        if _directory is None:
            _directory = tempfile.mkdtemp(prefix="dataserv-plots-")
            atexit.register(shutil.rmtree, _directory, True)
        _plots[(nodeid, seed)] = Prover(create_plot(_directory, nodeid, K, seed))
    return _plots[(nodeid, seed)]
