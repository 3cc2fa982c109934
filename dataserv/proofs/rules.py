"""The rules of proof of space: register a plot, fetch challenges, answer them, and
each plot's score for /api/farmer.

Like :mod:`dataserv.registry.farmers`, no SQL and no HTTP here: each call gets the
raw route values, the body as sent and a :class:`dataserv.registry.farmers.Request`
(headers, "now" read once at request entry, IP), checks in a fixed order (id syntax,
body size, body syntax, signature, then the rest) and raises a rejection that the API
maps to a short text/plain answer. The signature is checked by the registry's own
``Farmers.identify``, the same check every signed route uses.
"""

import json
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.internet import defer

from dataserv.identity.addresses import address_to_nodeid
from dataserv.proofs import plots, scoring
from dataserv.proofs.verification import count_valid
from dataserv.proofs.workers import WorkersUnavailable
from dataserv.registry.farmers import (FarmerNotFound, Rejected, Unavailable,
                                       outages_as_unavailable)

# A body larger than this is refused before it is parsed (413).
MAX_BODY = 64 * 1024
# At most this many challenges in one answer, and proofs for one challenge: a complete
# plot gives about one per challenge (Poisson), more than 8 has a chance of about 1e-6.
MAX_ANSWERS = 64
MAX_PROOFS = 8
# Challenges handed out by one fetch (the rest wait for the next fetch, unstarted).
MAX_FETCH = 1000


class VerificationUnavailable(Unavailable):
    """The proofs of an answer could not be checked (the workers are being replaced,
    or the daemon is stopping): nothing of the answer was recorded; try again."""

    text = ("Service unavailable: proofs cannot be checked right now. Try again in a few"
            " seconds.")
    database_outage = False


class BodyTooLarge(Rejected):
    """The body is larger than MAX_BODY."""


class InvalidProofRequest(Rejected):
    """The body or a value in it is malformed; the text says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KOutOfRange(Rejected):
    """A plot size below --min-k or above what chiapos can build."""

    def __init__(self, smallest: int, largest: int) -> None:
        super().__init__(smallest, largest)
        self.smallest, self.largest = smallest, largest


class PlotConflict(Rejected):
    """The plot is registered already, with another k."""


class TooManyPlots(Rejected):
    """The farmer has --max-plots plots registered already."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


class UnknownPlot(Rejected):
    """A plot id that is not one of the farmer's plots."""


class UnknownChallenge(Rejected):
    """A challenge that was never drawn for that plot."""


@dataclass(frozen=True)
class RegisteredPlot:
    """A plot as the server knows it: its id (computed here) and k."""

    plot_id: bytes
    k: int
    new: bool


@dataclass(frozen=True)
class RemovedPlot:
    """A plot removed, and the farmer's plots and verified bytes without it."""

    plot_id: bytes
    plots: int
    verified_bytes: int


@dataclass(frozen=True)
class AnswerOutcome:
    """What became of one answered challenge: "counted" (with the valid proofs
    among those sent), "late", "unfetched" or "repeated"."""

    challenge: bytes
    outcome: str
    valid: int = 0


def _hex(value: Any, what: str, length: Optional[int] = None) -> bytes:
    if not isinstance(value, str):
        raise InvalidProofRequest("Invalid %s: expected hex digits." % what)
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise InvalidProofRequest("Invalid %s: expected hex digits." % what)
    if length is not None and len(raw) != length:
        raise InvalidProofRequest("Invalid %s: expected %d bytes." % (what, length))
    return raw


def _json_object(body: bytes) -> dict:
    if len(body) > MAX_BODY:
        raise BodyTooLarge()
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidProofRequest("Invalid body: expected a JSON object.")
    if not isinstance(value, dict):
        raise InvalidProofRequest("Invalid body: expected a JSON object.")
    return value


def parse_plot(body: bytes) -> Tuple[bytes, int]:
    """(seed, k) from a registration body ``{"seed": "<64 hex>", "k": <int>}``."""
    value = _json_object(body)
    seed = _hex(value.get("seed"), "seed", plots.SEED_BYTES)
    k = value.get("k")
    if not isinstance(k, int) or isinstance(k, bool):
        raise InvalidProofRequest("Invalid k: expected a whole number.")
    return seed, k


def parse_answers(body: bytes) -> List[Tuple[bytes, bytes, List[bytes]]]:
    """[(plot id, challenge, [proof])] from an answer body
    ``{"answers": [{"plot_id": hex, "challenge": hex, "proofs": [hex, ...]}, ...]}``."""
    value = _json_object(body)
    answers = value.get("answers")
    if not isinstance(answers, list) or not answers:
        raise InvalidProofRequest("Invalid body: expected a list of answers.")
    if len(answers) > MAX_ANSWERS:
        raise InvalidProofRequest("Too many answers: at most %d per request." % MAX_ANSWERS)
    parsed, seen = [], set()
    for item in answers:
        if not isinstance(item, dict):
            raise InvalidProofRequest("Invalid answer: expected a JSON object.")
        plot_id = _hex(item.get("plot_id"), "plot id", 32)
        challenge = _hex(item.get("challenge"), "challenge", 32)
        if challenge in seen:
            raise InvalidProofRequest("Invalid answer: a challenge answered twice.")
        seen.add(challenge)
        proofs = item.get("proofs")
        if not isinstance(proofs, list):
            raise InvalidProofRequest("Invalid answer: expected a list of proofs.")
        if len(proofs) > MAX_PROOFS:
            raise InvalidProofRequest("Too many proofs: at most %d per challenge." % MAX_PROOFS)
        raw = [_hex(p, "proof") for p in proofs]
        for proof in raw:
            if len(proof) % plots.PROOF_BYTES_PER_K or not (
                    plots.proof_bytes(plots.SMALLEST_K) <= len(proof)
                    <= plots.proof_bytes(plots.LARGEST_K)):
                raise InvalidProofRequest("Invalid proof: wrong length.")
        parsed.append((plot_id, challenge, raw))
    return parsed


def _one_farmers_totals(tallies: List[Tuple[int, int, int, int]]) -> Tuple[int, int]:
    """(plots, verified bytes) from the tallies of one farmer's plots; (0, 0) for none."""
    return next(iter(scoring.farmer_totals(tallies).values()), (0, 0))


class _NoMetrics:
    """Counts nothing (a Proofs built without the daemon's metrics)."""

    def proof_checked(self, outcome: str, count: int = 1) -> None:
        """Ignore proofs."""

    def challenge_answered(self, outcome: str) -> None:
        """Ignore answers."""

    def plot_changed(self, change: str) -> None:
        """Ignore plot changes."""


class Proofs:
    """Plot registration, challenges, answers and scores.

    ``farmers`` is the registry's :class:`dataserv.registry.farmers.Farmers` (its
    ``identify`` checks the id and the signature); ``in_thread(f, *args)`` runs the
    proof checks (the daemon's thread pool; at once by default); ``metrics`` (the
    daemon's :class:`dataserv.web.metrics.Metrics`) is told what became of every
    answer and proof and of every plot registered; ``pause()``, when given, is waited
    for before each of an answer's two statements (the daemon's lets the reactor
    poll, so that pings that came meanwhile are served before PostgreSQL, woken by
    the statement, can take the reactor's CPU).
    """

    def __init__(self, store: Any, farmers: Any, settings: Any,
                 in_thread: Optional[Callable[..., "defer.Deferred[Any]"]] = None,
                 metrics: Any = None,
                 pause: Optional[Callable[[], "defer.Deferred[Any]"]] = None) -> None:
        self._pause = pause
        self.store = store
        self.farmers = farmers
        self.settings = settings
        self._in_thread = in_thread or defer.maybeDeferred
        self.metrics = metrics if metrics is not None else _NoMetrics()

    def _after_pause(self, f: Callable[..., Any], *args: Any) -> "defer.Deferred[Any]":
        """f(*args) once the pause (if any) is over."""
        if self._pause is None:
            return defer.maybeDeferred(f, *args)
        return self._pause().addCallback(lambda _: f(*args))

    def _check_k(self, k: int) -> None:
        smallest = self.settings.min_k
        if not smallest <= k <= plots.LARGEST_K:
            raise KOutOfRange(smallest, plots.LARGEST_K)

    @outages_as_unavailable
    def register_plot(self, farmer_id: str, body: bytes, request: Any) -> Any:
        """Register the plot ``seed`` of size k of the farmer; a :class:`RegisteredPlot`.
        Registering the same plot again is harmless (``new`` is then False), also at
        the limit; a new plot beyond --max-plots (unless --no-limits) is refused."""
        self.farmers.farmer_id(farmer_id)
        seed, k = parse_plot(body)
        address = yield self.farmers.identify(farmer_id, request, "plots")
        self._check_k(k)
        plot_id = plots.plot_id(bytes.fromhex(address_to_nodeid(address)), seed)
        limit = 0 if self.settings.no_limits else self.settings.max_plots
        outcome = yield self.store.register_plot(address, plot_id, seed, k, request.now,
                                                 limit)
        if outcome == "unknown":
            raise FarmerNotFound()
        if outcome == "conflict":
            raise PlotConflict()
        if outcome == "full":
            raise TooManyPlots(limit)
        if outcome == "registered":
            self.metrics.plot_changed("registered")
        return RegisteredPlot(plot_id, k, outcome == "registered")

    @outages_as_unavailable
    def remove_plot(self, farmer_id: str, plot_id_hex: str, request: Any) -> Any:
        """Remove one of the farmer's plots: a :class:`RemovedPlot`. From then on it
        is not challenged, its open challenges are gone, and the farmer's ``plots``
        and ``verified_bytes`` no longer count it; nothing else of the farmer
        changes. The same seed may be registered again (its score starts afresh)."""
        self.farmers.farmer_id(farmer_id)
        plot_id = _hex(plot_id_hex, "plot id", 32)
        address = yield self.farmers.identify(farmer_id, request, "remove_plot")
        settings, now = self.settings, request.now
        outcome = yield self.store.remove_plot(
            address, plot_id, now, now - settings.score_window, settings.challenge_interval,
            settings.proof_window, _one_farmers_totals)
        if outcome == "unknown":
            raise FarmerNotFound()
        if outcome == "not found":
            raise UnknownPlot()
        self.metrics.plot_changed("removed")
        return RemovedPlot(plot_id, *outcome)

    @outages_as_unavailable
    def challenges(self, farmer_id: str, request: Any) -> Any:
        """The farmer's open challenges; the first fetch of each starts its window."""
        address = yield self.farmers.identify(farmer_id, request, "challenges")
        settings = self.settings
        found = yield self.store.fetch_challenges(
            address, request.now, settings.challenge_interval, settings.proof_window,
            MAX_FETCH)
        if found is None:
            raise FarmerNotFound()
        return found

    @outages_as_unavailable
    def answer(self, farmer_id: str, body: bytes, request: Any) -> Any:
        """Check and record the proofs in an answer; an :class:`AnswerOutcome` per
        challenge. Only the first answer to a challenge, within the proof window after
        its first fetch, counts."""
        self.farmers.farmer_id(farmer_id)
        answers = parse_answers(body)
        # The request is claimed in the look-up's statement: one round trip less on
        # the busiest proofs route.
        address, claim = self.farmers.signed(farmer_id, request, "answers")
        # Paused inside claimed(): cancelled meanwhile (the client went away), the
        # request's key is given back like any failure before the database decided.
        exists, targets = yield self.farmers.claimed(
            address, claim, self._after_pause(
                self.store.answer_targets, address,
                [(plot_id, challenge) for plot_id, challenge, _ in answers],
                claim, request.now),
            known=lambda found: found[0])
        if not exists:
            raise FarmerNotFound()
        now, window = request.now, self.settings.proof_window
        owned: Optional[set] = None
        outcomes: Dict[bytes, AnswerOutcome] = {}
        to_check = []
        for plot_id, challenge, proofs in answers:
            target = targets.get(challenge)
            if target is None or target.plot_id != plot_id:
                if owned is None:
                    owned = yield self.store.farmer_plot_ids(address)
                if plot_id not in owned:
                    raise UnknownPlot()
                raise UnknownChallenge()
            if any(len(p) != plots.proof_bytes(target.k) for p in proofs):
                raise InvalidProofRequest(
                    "Invalid proof: a proof for k=%d is %d bytes."
                    % (target.k, plots.proof_bytes(target.k)))
            if target.answered_at is not None:
                outcomes[challenge] = AnswerOutcome(challenge, "repeated")
            elif target.fetched_at is None:
                outcomes[challenge] = AnswerOutcome(challenge, "unfetched")
            elif now > target.fetched_at + window:
                outcomes[challenge] = AnswerOutcome(challenge, "late")
            else:
                to_check.append((target, proofs))
        # Late and repeated answers are never checked: they cost no CPU; nor does an
        # answer with no proofs in it cost a trip to a worker.
        checks = [(target.plot_id, target.k, target.challenge, proofs)
                  for target, proofs in to_check]
        if any(proofs for _, proofs in to_check):
            try:
                valid = yield self._in_thread(count_valid, checks)
            except WorkersUnavailable as e:
                raise VerificationUnavailable(str(e))
        else:
            valid = [0] * len(checks)
        written = yield self._after_pause(
            self.store.record_answers, now, window,
            [(target.row, n) for (target, _), n in zip(to_check, valid)])
        for (target, _), n in zip(to_check, valid):
            if target.row in written:
                outcomes[target.challenge] = AnswerOutcome(target.challenge, "counted", n)
            else:  # another answer to it was written meanwhile
                outcomes[target.challenge] = AnswerOutcome(target.challenge, "repeated")
        self._count(answers, outcomes)
        return [outcomes[challenge] for _, challenge, _ in answers]

    def _count(self, answers: List[Tuple[bytes, bytes, List[bytes]]],
               outcomes: Dict[bytes, AnswerOutcome]) -> None:
        """Tell the metrics what became of each answer and of every proof in it: a
        counted answer's distinct proofs are valid or invalid, the copies duplicate;
        an answer that did not count has its proofs counted under its outcome."""
        metrics = self.metrics
        for _, challenge, proofs in answers:
            outcome = outcomes[challenge]
            metrics.challenge_answered(outcome.outcome)
            if outcome.outcome != "counted":
                metrics.proof_checked(outcome.outcome, len(proofs))
                continue
            distinct = len(set(proofs))
            metrics.proof_checked("valid", outcome.valid)
            metrics.proof_checked("invalid", distinct - outcome.valid)
            metrics.proof_checked("duplicate", len(proofs) - distinct)

    @outages_as_unavailable
    def plot_scores(self, farmer_row: int, now: float) -> Any:
        """Each plot's tally over the score window (for /api/farmer), in
        registration order."""
        settings = self.settings
        tallies = yield self.store.farmer_tallies(
            farmer_row, now, now - settings.score_window, settings.challenge_interval,
            settings.proof_window)
        return tallies


def plot_score_dict(tally: Any) -> dict:
    """One plot's entry in /api/farmer's ``plot_scores``."""
    return {
        "plot_id": tally.plot_id.hex(),
        "k": tally.k,
        "fraction": round(scoring.verified_fraction(tally.found, tally.settled), 3),
        "verified_bytes": scoring.verified_bytes(tally.k, tally.found, tally.settled),
        "proofs_found": tally.found,
        "proofs_expected": round(tally.settled * scoring.PROOFS_PER_CHALLENGE, 3),
        "challenges_answered": tally.answered,
        "challenges_settled": tally.settled,
    }
