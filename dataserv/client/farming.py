"""The ``plot`` and ``farm`` commands: build plots, then answer challenges.

Plotting and look-ups block (CPU and disk); they run through ``in_thread`` (the
reactor's thread pool from the command line), never on the reactor thread.
"""

import os
import sys
from typing import Any, Callable, Dict, List

from twisted.internet import defer, task
from twisted.logger import Logger

from dataserv.client.plotting import Prover, create_plot, list_plots

log = Logger()
# Answers per request: the server takes at most 32 (and 64 KiB).
BATCH = 32


@defer.inlineCallbacks
def make_plots(nodeid: bytes, k: int, directory: str, count: int,
               in_thread: Callable[..., Any], out: Any = sys.stderr,
               random_bytes: Callable[[int], bytes] = os.urandom) -> Any:
    """Build ``count`` plots of size k for the farmer in directory; their paths."""
    paths = []
    for i in range(count):
        seed = random_bytes(32)
        print("plot %d/%d: k=%d seed %s ..." % (i + 1, count, k, seed.hex()), file=out,
              flush=True)
        path = yield in_thread(create_plot, directory, nodeid, k, seed)
        print("plot %d/%d: done, %s (%d bytes)" % (i + 1, count, path, os.path.getsize(path)),
              file=out, flush=True)
        paths.append(path)
    return paths


class Farm:
    """Registers the plots in a directory, then fetches and answers challenges every
    ``every`` seconds until stopped."""

    def __init__(self, client: Any, directory: str, clock: Any,
                 in_thread: Callable[..., Any], every: float = 10.0,
                 out: Any = sys.stderr) -> None:
        self.client = client
        self.directory = directory
        self.clock = clock
        self.in_thread = in_thread
        self.every = every
        self.out = out
        self.provers: Dict[str, Prover] = {}
        self.counted = 0
        self._loop: Any = None

    @defer.inlineCallbacks
    def register(self) -> Any:
        """Register every plot in the directory; returns how many the server took."""
        found = yield self.in_thread(list_plots, self.directory)
        for path, k, seed in found:
            reply = yield self.client.register_plot(seed, k)
            if reply.status != 200:
                print("plot %s refused: %d %s" % (path, reply.status, reply.text),
                      file=self.out, flush=True)
                continue
            prover = yield self.in_thread(Prover, path)
            if prover.plot_id.hex() != reply.json()["plot_id"]:
                print("plot %s was made for another farmer; skipped" % path, file=self.out)
                continue
            self.provers[prover.plot_id.hex()] = prover
        print("farming %d plot(s)" % len(self.provers), file=self.out, flush=True)
        return len(self.provers)

    def _look_up(self, challenges: List[dict]) -> List[dict]:
        answers = []
        for c in challenges:
            prover = self.provers.get(c["plot_id"])
            if prover is None:
                continue
            proofs = prover.proofs(bytes.fromhex(c["challenge"]))
            answers.append({"plot_id": c["plot_id"], "challenge": c["challenge"],
                            "proofs": [p.hex() for p in proofs[:8]]})
        return answers

    @defer.inlineCallbacks
    def answer_once(self) -> Any:
        """Fetch the open challenges and answer them; how many answers counted."""
        reply = yield self.client.challenges()
        if reply.status != 200:
            print("challenges: %d %s" % (reply.status, reply.text), file=self.out)
            return 0
        answers = yield self.in_thread(self._look_up, reply.json()["challenges"])
        counted = 0
        for start in range(0, len(answers), BATCH):
            result = yield self.client.answers(answers[start:start + BATCH])
            if result.status == 200:
                counted += result.json()["counted"]
            else:
                print("answers: %d %s" % (result.status, result.text), file=self.out)
        self.counted += counted
        if answers:
            print("answered %d challenge(s), %d counted" % (len(answers), counted),
                  file=self.out, flush=True)
        return counted

    @defer.inlineCallbacks
    def _tick(self) -> Any:
        try:
            yield self.client.ping()
            yield self.answer_once()
        except Exception as e:  # keep farming through a server that is away
            print("error: %s" % (e,), file=self.out, flush=True)

    @defer.inlineCallbacks
    def run(self) -> Any:
        """Register, then answer every ``every`` seconds (the Deferred of the loop)."""
        yield self.register()
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self.clock
        yield self._loop.start(self.every, now=True)
