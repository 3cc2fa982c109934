"""Interpreter settings for a long-running daemon, set once when it starts."""

from typing import Any
import gc
import resource
import sys

from twisted.logger import Logger

log = Logger()

# How long a thread may hold the GIL while another waits for it (Python's default
# is 5 ms). The summary pass gzips in a worker thread while the reactor thread
# renders; zlib hands the GIL back every time its output buffer grows, and at 5 ms
# a hand-over the worker finished long after the rendering (pass 0.9-1.0 s at
# 100 000 online, against 0.67-0.72 s at 1 ms). With one busy thread it costs nothing.
SWITCH_INTERVAL = 0.001


def tune() -> None:
    """Apply the settings; call once everything long-lived has been imported."""
    # What exists now (modules, classes, the service tree) lives as long as the
    # process: keep it out of the collector's full passes, which otherwise
    # stalled the reactor ~40 ms during summary passes over 100 000 farmers.
    gc.freeze()
    sys.setswitchinterval(SWITCH_INTERVAL)


def raise_descriptor_limit(limits: Any = resource) -> tuple:
    """Raise the soft limit on open descriptors to the hard limit, and log both.

    Every connection costs a descriptor: at the usual soft limit of 1024 a few
    hundred idle clients were enough to make the daemon refuse new ones.
    Returns the (soft, hard) limits in force afterwards.
    """
    soft, hard = limits.getrlimit(limits.RLIMIT_NOFILE)
    if soft != hard:
        try:
            limits.setrlimit(limits.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as e:
            log.warn("could not raise the descriptor limit from {soft} to {hard}: {error}",
                     soft=soft, hard=hard, error=e)
    log.info("open descriptors: at most {soft} (hard limit {hard})", soft=soft, hard=hard)
    return soft, hard
