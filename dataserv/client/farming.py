"""The ``plot`` and ``farm`` commands: build plots, then answer challenges.

Plotting and look-ups block (CPU and disk); they run through ``in_thread`` (the
reactor's thread pool from the command line), never on the reactor thread.

``farm`` backs off when the server asks it to or cannot be reached: after a 503 or
429 it waits the answer's Retry-After (at most MAX_RETRY_AFTER seconds), after a
connection error (or any other failure of a step) an exponential back-off from
BACKOFF_BASE seconds, doubling up to BACKOFF_CAP, each wait drawn between half and
all of it (jitter, so farmers cut off together do not come back together); a step
that succeeds brings it back to every ``every`` seconds. A farmer the server does
not know (404 "Farmer not found.") stops farming with one line that says to
register; any other 404 (a server without the proof routes) stops it too, with the
server's answer.
"""

import json
import os
import random
import sys
from typing import Any, Callable, Dict, List, Optional

from twisted.internet import defer
from twisted.logger import Logger

from dataserv.client.farmer import Reply
from dataserv.client.plotting import Prover, create_plot, list_plots

log = Logger()
# Answers per request, and bytes of body: the most the server takes.
BATCH = 64
MAX_BODY = 64 * 1024
# Seconds: the longest Retry-After obeyed, the first back-off and its cap.
MAX_RETRY_AFTER = 300.0
BACKOFF_BASE = 2.0
BACKOFF_CAP = 300.0
# Statuses that say "come back later".
BUSY = (429, 503)


class ServerBusy(Exception):
    """The server answered 503 or 429; ``retry_after`` is its Retry-After in seconds
    (None when it sent none that could be read)."""

    def __init__(self, what: str, status: int, retry_after: Optional[float]) -> None:
        super().__init__("%s: %d, retry after %s s" % (what, status, retry_after))
        self.retry_after = retry_after


class CannotFarm(Exception):
    """A 404 from the server: farming stops, since trying again cannot help."""


class NotRegistered(CannotFarm):
    """The server does not know this farmer: nothing it sends can count until the
    farmer registers."""


def answer_batches(answers: List[dict], most: int, size: int) -> List[List[dict]]:
    """``answers`` in order, split into requests of at most ``most`` answers whose
    body (``{"answers": [...]}`` as JSON) is at most ``size`` bytes."""
    envelope = len(json.dumps({"answers": []}))
    batches: List[List[dict]] = []
    batch: List[dict] = []
    length = envelope
    for answer in answers:
        item = len(json.dumps(answer))
        # Each answer after a batch's first also costs its separator, ", ".
        if batch and (len(batch) == most or length + 2 + item > size):
            batches.append(batch)
            batch, length = [], envelope
        length += item + (2 if batch else 0)
        batch.append(answer)
    if batch:
        batches.append(batch)
    return batches


NOT_REGISTERED = "this farmer is not registered on the server: run `register` first"
# How this server says it does not know a farmer (the ping's text ends with it).
FARMER_NOT_FOUND = "Farmer not found."


def _stop_on_404(what: str, reply: Reply) -> None:
    """Raise NotRegistered for a 404 that says the farmer is unknown, CannotFarm for
    any other 404 (the server has no such route: it does not take proofs of space)."""
    if reply.status != 404:
        return
    if reply.text.strip().endswith(FARMER_NOT_FOUND):
        raise NotRegistered(NOT_REGISTERED)
    text = reply.brief()
    raise CannotFarm("%s: not found on the server (%s); does it take proofs of space?"
                     % (what, text if text.startswith("404") else ("404 " + text).strip()))


def retry_after(reply: Any) -> Optional[float]:
    """A reply's Retry-After in seconds (the delay form), or None."""
    headers = getattr(reply, "headers", None)
    values = headers.getRawHeaders(b"Retry-After") if headers is not None else None
    if not values:
        return None
    try:
        seconds = float(values[0])
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _check(what: str, reply: Any) -> Any:
    """The reply, unless it is a 503 or 429 (ServerBusy)."""
    if reply.status in BUSY:
        raise ServerBusy(what, reply.status, retry_after(reply))
    return reply


@defer.inlineCallbacks
def make_plots(nodeid: bytes, k: int, directory: str, count: int,
               in_thread: Callable[..., Any], out: Any = sys.stderr,
               random_bytes: Callable[[int], bytes] = os.urandom) -> Any:
    """Build ``count`` plots of size k for the farmer in directory; their paths.
    Progress goes to ``out`` (chiapos' own output never reaches stdout)."""
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
    ``every`` seconds until stopped, backing off as the module says (``jitter()``
    draws the jitter, from [0, 1))."""

    def __init__(self, client: Any, directory: str, clock: Any,
                 in_thread: Callable[..., Any], every: float = 10.0,
                 out: Any = sys.stderr, jitter: Callable[[], float] = random.random) -> None:
        self.client = client
        self.directory = directory
        self.clock = clock
        self.in_thread = in_thread
        self.every = every
        self.out = out
        self.jitter = jitter
        self.provers: Dict[str, Prover] = {}
        self.counted = 0
        self.registered = False
        self.failures = 0  # connection errors in a row
        self._call: Any = None
        self._done: Optional[defer.Deferred] = None

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    @defer.inlineCallbacks
    def register(self) -> Any:
        """Register every plot in the directory; returns how many the server took.
        Raises ServerBusy on a 503 or 429 (registering again is harmless)."""
        found = yield self.in_thread(list_plots, self.directory)
        for path, k, seed in found:
            reply = _check("register plot", (yield self.client.register_plot(seed, k)))
            _stop_on_404("plot registration", reply)
            if reply.status != 200:
                self._say("plot %s refused: %d %s" % (path, reply.status, reply.text))
                continue
            prover = yield self.in_thread(Prover, path)
            if prover.plot_id.hex() != reply.json()["plot_id"]:
                self._say("plot %s was made for another farmer; skipped" % path)
                continue
            self.provers[prover.plot_id.hex()] = prover
        self._say("farming %d plot(s)" % len(self.provers))
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
        """Fetch the open challenges and answer them; how many answers counted.
        Raises ServerBusy on a 503 or 429."""
        reply = _check("challenges", (yield self.client.challenges()))
        if reply.status != 200:
            self._say("challenges: %d %s" % (reply.status, reply.text))
            return 0
        answers = yield self.in_thread(self._look_up, reply.json()["challenges"])
        counted = 0
        for batch in answer_batches(answers, BATCH, MAX_BODY):
            result = _check("answers", (yield self.client.answers(batch)))
            if result.status == 200:
                counted += result.json()["counted"]
            else:
                self._say("answers: %d %s" % (result.status, result.text))
        self.counted += counted
        if answers:
            self._say("answered %d challenge(s), %d counted" % (len(answers), counted))
        return counted

    @defer.inlineCallbacks
    def step(self) -> Any:
        """Register (until that has gone through once), ping, answer; the seconds to
        wait before the next step (None: farming ended on a 404)."""
        try:
            if not self.registered:
                yield self.register()
                self.registered = True
            reply = _check("ping", (yield self.client.ping()))
            _stop_on_404("ping", reply)
            if reply.status != 200:
                self._say("ping: %d %s" % (reply.status, reply.text))
            yield self.answer_once()
        except CannotFarm as e:
            self._finish(e)
            return None
        except ServerBusy as e:
            wait = self.every if e.retry_after is None else e.retry_after
            wait = min(max(wait, 1.0), MAX_RETRY_AFTER)
            self._say("server busy (%s); next try in %.0f s" % (e, wait))
            return wait
        except Exception as e:  # keep farming through a server that is away
            self.failures += 1
            ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (self.failures - 1))
            wait = ceiling * (0.5 + 0.5 * self.jitter())
            self._say("error: %s; next try in %.1f s" % (e, wait))
            return wait
        self.failures = 0
        return self.every

    def _next(self, wait: Optional[float]) -> None:
        if wait is not None and self._done is not None and not self._done.called:
            self._call = self.clock.callLater(wait, self._run_step)

    def _run_step(self) -> None:
        self._call = None
        self.step().addCallback(self._next)

    def run(self) -> "defer.Deferred[None]":
        """Farm until :meth:`stop`; a Deferred that fires then, or fails with
        NotRegistered as soon as the server says it does not know the farmer, or
        CannotFarm on any other 404."""
        self._done = defer.Deferred()
        self._run_step()
        return self._done

    def stop(self) -> None:
        """Stop after the step under way (no further step is scheduled)."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._finish(None)

    def _finish(self, error: Optional[Exception]) -> None:
        """End farming: run()'s Deferred fires (or fails with ``error``)."""
        if self._done is not None and not self._done.called:
            if error is None:
                self._done.callback(None)
            else:
                self._done.errback(error)
