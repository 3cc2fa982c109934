"""The rules for farmers: what each call checks, in which order, and what it records.

No SQL and no HTTP here: :class:`Farmers` gets a store, a signature verifier and the
settings, and each method gets the raw route values, the request's headers, "now"
(read once at request entry) and the client's IP. Rejections are exceptions from
this module; the API layer maps them to status codes and texts.
"""

import functools
import re
from dataclasses import dataclass
from typing import Any, Callable, Generator, Optional, Set, Tuple, TypeVar

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from dataserv.identity import addresses, replay, v2
from dataserv.registry.uptime import first_uptime_day, uptime_percent
from dataserv.identity.auth import AuthenticationFailed
from dataserv.registry import credit, limits
from dataserv.storage.batching import GroupCommit, WriteBehind
from dataserv.storage.database import DatabaseUnavailable
from dataserv.storage.store import (Claim, ClaimRefused, FarmerRecord, FarmerStore,
                                    RegistrationRefused)


class Rejected(Exception):
    """A request the rules refuse."""


class Unavailable(Exception):
    """The database cannot be reached right now: try again later. Nothing was
    decided here; a write already sent to a server that stalled may still commit
    when it continues (README, "If PostgreSQL goes away")."""

    database_outage = True  # counted in dataserv_database_errors_total


class Starting(Unavailable):
    """This daemon takes no signed request yet: the other daemons on its database
    have not all seen it (see registry.peers). Nothing was decided; try again."""

    text = "Service unavailable: this server is starting. Try again in a few seconds."
    database_outage = False


class InvalidFarmerId(Rejected):
    """The <id> is neither a P2PKH address nor a nodeid."""


class InvalidPayout(Rejected):
    """The payout address is not a P2PKH or P2SH address."""


class Unauthenticated(Rejected):
    """Missing, malformed or wrong signature headers, a Date outside the window, a
    replayed request, or legacy headers from a farmer that has used v2. ``reason``
    is one short line for the X-Auth-Error header."""

    def __init__(self, skew: "int | None" = None,
                 reason: str = "invalid authentication headers") -> None:
        super().__init__(skew, reason)
        self.skew = skew
        self.reason = reason


REPLAYED = "replayed request"
DOWNGRADE = "legacy headers refused: this farmer uses DATASERV-V2"
NEEDS_V2 = "this route needs DATASERV-V2 headers"
_REFUSALS = {"replayed": REPLAYED, "downgrade": DOWNGRADE}


class AlreadyRegistered(Rejected):
    """The address is registered already."""


class FarmerNotFound(Rejected):
    """No farmer has that address."""


class InvalidHeight(Rejected):
    """The height is not a non-negative whole number."""


class HeightLimitExceeded(Rejected):
    """The height is at or above the configured limit."""


class InvalidBandwidth(Rejected):
    """Upload/download are not non-negative numbers."""


class InvalidBlock(Rejected):
    """The audited block height is not a non-negative whole number."""


class InvalidResponse(Rejected):
    """The audit response is not 64 hex digits."""


class TooMany(Rejected):
    """A per-farmer or per-network limit is reached; ``retry_after`` is the whole
    seconds until the next request of this kind will be accepted."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


class TooManyRegistrations(TooMany):
    """The client's network registered its share of new farmers this hour."""


class TooManyAudits(TooMany):
    """The farmer sent its share of audits this hour."""


class TooManyBandwidthReports(TooMany):
    """The farmer sent its share of bandwidth reports this hour."""


class DuplicateAudit(Rejected):
    """The farmer has already submitted an audit for this block."""

    def __init__(self, block: Any) -> None:
        super().__init__(block)
        self.block = block


_T = TypeVar("_T")


def outages_as_unavailable(
        method: Callable[..., Generator[Any, Any, _T]]) -> Callable[..., "defer.Deferred[_T]"]:
    """An inlineCallbacks method whose database outages come out as
    :class:`Unavailable`, the registry's word for "try again later"."""
    call = defer.inlineCallbacks(method)

    def translate(failure: Failure) -> "defer.Deferred[_T]":
        failure.trap(DatabaseUnavailable)
        raise Unavailable(str(failure.value))

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> "defer.Deferred[_T]":
        return call(*args, **kwargs).addErrback(translate)

    return wrapper


_WHOLE = re.compile(r"[0-9]{1,18}")
_NUMBER = re.compile(r"[0-9]{1,18}(\.[0-9]{1,18})?")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def parse_whole(text: Any, error: Any) -> Any:
    """A non-negative int from route text, or raise error()."""
    if not _WHOLE.fullmatch(text):
        raise error()
    return int(text)


def parse_amount(text: Any) -> Any:
    """A non-negative finite float from route text, or raise InvalidBandwidth."""
    if not _NUMBER.fullmatch(text):
        raise InvalidBandwidth()
    return float(text)


@dataclass(frozen=True)
class FarmerStatus:
    """What /api/farmer/<id> reports."""

    record: object
    uptime: float
    audits: int
    last_audit_block: object


@dataclass(slots=True)
class Request:
    """What the rules need from an HTTP request (not frozen: a frozen dataclass
    costs a call per field to build, and one is built per request)."""

    date: object           # the Date header as sent (bytes/str) or None
    authorization: object  # the Authorization header or None
    now: float             # Unix seconds, read once at request entry
    ip: Optional[str] = None  # the client's IP (never published)
    method: str = "GET"    # the request's method
    target: str = ""       # the request target as sent: path and query (v2 signs it)
    body: bytes = b""      # the request body (v2 signs its SHA-256)


# How soon after its answer the replay key of a ping throttled by a daemon alone on
# its database is claimed there (seconds).
THROTTLED_CLAIMS_SECONDS = 0.05


class RecentContacts:
    """The latest stored contact this process knows of for each farmer, to throttle
    pings in memory.

    The ping throttle itself is a rule kept in SQL, in ``record_contacts``
    (storage/schema): a contact is written only ``--max-ping`` seconds or more after
    the stored one, so that every daemon on one database agrees. This is the
    shortcut that spares the database a ping known to be too soon.

    last_seen only ever grows and farmers are never deleted, so once the database
    said a farmer's last_seen is T, the farmer exists and its last_seen stays at
    least T: a ping sooner than max-ping after T is throttled whatever other daemons
    on the same database did. Bounded: expired entries go first, then everything.
    """

    def __init__(self, max_age: Any, limit: Any = 250000) -> None:
        self.max_age = max_age
        self.limit = limit
        self._written: Any = {}

    def throttled(self, address: Any, now: Any) -> Any:
        """Whether a ping now is known to be too soon."""
        written = self._written.get(address)
        return written is not None and 0 <= now - written < self.max_age

    def wrote(self, address: Any, now: Any) -> None:
        """Remember that the farmer's stored last contact is at ``now``."""
        if len(self._written) >= self.limit:
            self._written = {a: t for a, t in self._written.items() if now - t < self.max_age}
            if len(self._written) >= self.limit:
                self._written.clear()
        if now > self._written.get(address, float("-inf")):
            self._written[address] = now

    def __len__(self) -> Any:
        return len(self._written)


class V2Farmers(Set[str]):
    """Farmers this process knows have used v2, so their legacy headers are refused
    without a round trip. Only a cache: the database's farmers.v2_since decides.
    Bounded: when full it starts again empty. A set (``in`` is the set's own, as
    cheap as it gets: every legacy request asks)."""

    def __init__(self, limit: int = 250000) -> None:
        super().__init__()
        self.limit = limit

    def add(self, address: str) -> None:
        """Remember that the farmer has used v2."""
        if len(self) >= self.limit:
            self.clear()
        super().add(address)


class Farmers:
    """Register, ping, height, bandwidth and audits, each in the contract's check order.

    Authentication is the rule "each authenticated request is accepted once": a
    verified request makes a :class:`Claim` (its replay key), which this process's
    :class:`ReplayCache` checks at once and the database checks again in the same
    statement as the request's write (across daemons). A farmer that has used v2
    can no longer use legacy headers (:class:`V2Farmers`, then farmers.v2_since).
    """

    log = Logger()

    def __init__(self, store: FarmerStore, verifier: Any, settings: Any, clock: Any) -> None:
        self.store = store
        self.verifier = verifier
        self.settings = settings
        self.clock = clock
        self.pings = GroupCommit(self._write_pings)
        # The replay keys of pings throttled in memory, claimed a moment after their
        # answer (see ping); a key past its expiry can no longer be replayed anyway.
        self.throttled_claims = WriteBehind(
            self._claim_throttled, clock, THROTTLED_CLAIMS_SECONDS,
            keep=lambda item: item[3].expires > clock.seconds(),
            what="replay keys of throttled pings")
        self.late_replays = 0  # throttled pings found (afterwards) to repeat a request
        # Until when this daemon may take itself to be alone on its database (set by
        # registry.peers.PeerWatch after each check, for two check intervals; until it
        # knows, throttled pings claim their keys before their answer); and from when
        # it takes signed requests (a daemon that finds others at start waits until
        # they have all seen it).
        self.alone_until = 0.0
        self.claims_from = 0.0
        self.timings = store.timings  # the store's transactions, for /metrics
        self.recent = RecentContacts(settings.max_ping)
        limited = not settings.no_limits
        self.fill_rate = credit.fill_rate(settings)
        self.registrations_per_network = (
            settings.registrations_per_network if limited else 0) or None
        self.audits = (limits.HourlyBuckets(settings.audit_limit)
                       if limited and settings.audit_limit else None)
        self.bandwidth_reports = (limits.HourlyBuckets(settings.bandwidth_limit)
                                  if limited and settings.bandwidth_limit else None)
        # A request first accepted at t had |t - Date| < auth_timeout, and a repeat
        # passes the Date check only while |now - Date| < auth_timeout: from
        # t + 2 x auth_timeout on no repeat can, so keys are kept that long.
        self.replay_window = 2 * settings.auth_timeout
        self.replays = replay.ReplayCache(self.replay_window)
        self.v2_farmers = V2Farmers()
        self.contacts_submitted = 0  # pings sent to be written (not throttled in memory)

    @property
    def alone(self) -> bool:
        """Whether this daemon is alone on its database, as far as it knows now."""
        return self.clock.seconds() < self.alone_until

    @alone.setter
    def alone(self, value: bool) -> None:
        self.alone_until = float("inf") if value else 0.0

    # -- shared checks --------------------------------------------------------

    def farmer_id(self, text: str) -> str:
        """The canonical address of an <id> (address or nodeid), or InvalidFarmerId."""
        return self._farmer_id(text)

    def identify(self, farmer_id: str, request: Request,
                 route: str) -> "defer.Deferred[str]":
        """The address of a request-bound (DATASERV-V2) request's <id>, once its
        syntax (InvalidFarmerId) and signature (Unauthenticated) are checked and the
        request is claimed (accepted once, across daemons), as every signed route
        does. Legacy headers are refused: routes that need this never took them."""
        address, claim = self.signed(farmer_id, request, route)
        if claim is None:  # --skip-authentication
            return defer.succeed(address)
        # Whether the farmer exists is the route's business: no mark in memory here.
        d = self.claimed(address, claim, self.store.claim(address, claim, request.now),
                         known=lambda _: False)
        return d.addCallback(lambda _: address)

    def signed(self, farmer_id: str, request: Request,
               route: str) -> Tuple[str, Optional[Claim]]:
        """identify's checks made in memory: (address, Claim for the database, or
        None when authentication is off). The caller makes the claim in its first
        statement and passes that statement's Deferred to :meth:`claimed`."""
        address = self._farmer_id(farmer_id)
        claim = self._authenticate(address, request, route)
        if claim is not None and not claim.v2:
            self._unclaim(claim)
            raise Unauthenticated(reason=NEEDS_V2)
        return address, claim

    def _farmer_id(self, text: Any) -> Any:
        try:
            return addresses.parse_farmer_id(text)
        except addresses.InvalidAddress:
            raise InvalidFarmerId()

    def _authenticate(self, address: Any, request: Any, route: Any, *values: Any) -> Any:
        """Verify the request and claim it in memory; the Claim for the database
        (None when authentication is off). ``route`` and ``values`` (canonical) name
        the request for the legacy replay key."""
        if self.settings.skip_authentication:
            return None
        if request.now < self.claims_from:
            raise Starting()
        try:
            if v2.is_v2(request.authorization):
                signed = self.verifier.verify_request(
                    address, request.method, request.target, request.date,
                    request.authorization, request.body, request.now)
                claim = Claim(replay.v2_key(address, signed), True,
                              request.now + self.replay_window)
            else:
                self.verifier.verify(address, request.date, request.authorization,
                                     request.now)
                if address in self.v2_farmers:
                    raise Unauthenticated(reason=DOWNGRADE)
                # HEAD is a GET without the body: the same request for the key.
                method = "GET" if request.method == "HEAD" else request.method
                claim = Claim(replay.legacy_key(address, method, route, values,
                                                request.date),
                              False, request.now + self.replay_window)
        except AuthenticationFailed as e:
            raise Unauthenticated(getattr(e, "skew", None), e.reason)
        if not self.replays.claim(claim.key, request.now):
            raise Unauthenticated(reason=REPLAYED)
        return claim

    def _unclaim(self, claim: Any) -> None:
        """Give back the key of a request refused before it could change anything."""
        if claim is not None:
            self.replays.release(claim.key)

    @defer.inlineCallbacks
    def claimed(self, address: Any, claim: Any, d: Any, known: Any = bool) -> Any:
        """d's result, once the database has accepted the claim made with it (in
        the statement d stands for; the claimed writes here, and the proof routes).

        A refused claim is Unauthenticated; a failure before the database decided
        (e.g. it is unreachable) gives the key back, so the client can retry. An
        accepted v2 claim marks the farmer as a v2 farmer in memory only when
        ``known(result)`` says the farmer exists (the database marks only a farmer
        it has): a v2 request for an unknown address must not refuse that address's
        legacy registration later.
        """
        try:
            result = yield d
        except ClaimRefused as refused:
            if refused.outcome == "downgrade":
                self.v2_farmers.add(address)
            raise Unauthenticated(reason=_REFUSALS[refused.outcome])
        except BaseException:
            self._unclaim(claim)
            raise
        if claim is not None and claim.v2 and known(result):
            self.v2_farmers.add(address)
        return result

    def _spend(self, buckets: Optional[limits.HourlyBuckets], address: str,
               request: "Request", error: type, claim: Optional[Claim]) -> None:
        """One write of a limited kind for an authenticated farmer, or raise error
        (the request changed nothing: its key is given back for a later retry)."""
        if buckets is not None:
            wait = buckets.take(address, request.now)
            if wait:
                self._unclaim(claim)
                raise error(wait)

    # -- the calls ------------------------------------------------------------

    @outages_as_unavailable
    def register(self, farmer_id: str, payout: Optional[str],
                 request: Request) -> Generator[Any, Any, FarmerRecord]:
        """Register a farmer (payout defaults to its own address); returns its record."""
        address = self._farmer_id(farmer_id)
        parsed_payout = address
        if payout is not None:
            try:
                parsed_payout = addresses.parse_payout_address(payout)
            except addresses.InvalidAddress:
                parsed_payout = None
        claim = self._authenticate(address, request, "register", parsed_payout or payout)
        if parsed_payout is None:
            self._unclaim(claim)
            raise InvalidPayout()
        record = yield self.claimed(address, claim, self.store.register(
            address, parsed_payout, request.now, request.ip,
            network=limits.registration_network(request.ip),
            limit=self.registrations_per_network, period=limits.HOUR, claim=claim),
            known=lambda result: isinstance(result, FarmerRecord))
        if record is None:
            raise AlreadyRegistered()
        if isinstance(record, RegistrationRefused):
            raise TooManyRegistrations(limits.seconds_until(record.retry_at, request.now))
        self.recent.wrote(address, request.now)
        return record

    def ping(self, farmer_id: str, request: Request) -> "defer.Deferred[None]":
        """Keep-alive; one sooner than --max-ping after the last contact writes nothing.

        The hottest call of all: a ping throttled in memory is answered without a
        generator (its Deferred has fired when this returns); the rest wait for the
        group commit (:meth:`_submit_ping`).
        """
        try:
            address = self._farmer_id(farmer_id)
            claim = self._authenticate(address, request, "ping")
        except Exception:
            return defer.fail()
        throttled = self.recent.throttled(address, request.now)
        if throttled and (claim is None or request.now < self.alone_until):
            # Too soon: nothing is written. Alone on the database (PeerWatch), this
            # daemon's cache knows every key the database does, so the answer does
            # not wait: the key is claimed in the database a moment later.
            if claim is not None:
                self.throttled_claims.add((address, request.now, request.ip, claim, False))
                if claim.v2:  # throttled: the farmer is known
                    self.v2_farmers.add(address)
            return defer.succeed(None)
        return self._submit_ping(address, request, claim, throttled)

    def _submit_ping(self, address: str, request: Request, claim: Optional[Claim],
                     throttled: bool) -> "defer.Deferred[None]":
        """A ping that waits for the group commit: its contact is written (unless
        throttled), and with other daemons on the database its key is claimed there
        before the answer, so that a repeat of a request another daemon took is
        refused here too. (Callbacks rather than a generator: this is every durable
        ping.)"""
        item = (address, request.now, request.ip, claim, not throttled)
        self.contacts_submitted += not throttled
        d = self.pings.submit(item)
        d.addCallbacks(self._pinged, self._ping_failed,
                       callbackArgs=(item, throttled), errbackArgs=(claim,))
        return d

    def _ping_failed(self, failure: Failure, claim: Optional[Claim]) -> Failure:
        """The batch failed (or the caller went): as claimed, the key is given back,
        and an outage is Unavailable."""
        self._unclaim(claim)
        if failure.check(DatabaseUnavailable):
            raise Unavailable(str(failure.value))
        return failure

    def _pinged(self, outcomes: Any, item: tuple, throttled: bool) -> None:
        address, claim = item[0], item[3]
        outcome = outcomes[item]
        if outcome.outcome != "ok":
            if outcome.outcome == "downgrade":
                self.v2_farmers.add(address)
            raise Unauthenticated(reason=_REFUSALS[outcome.outcome])
        if throttled:  # throttled in memory: the farmer is known
            if claim is not None and claim.v2:
                self.v2_farmers.add(address)
            return
        if outcome.last_contact is None:
            raise FarmerNotFound()
        if claim is not None and claim.v2:
            self.v2_farmers.add(address)
        # Written by us or not, the stored contact throttles the next pings here:
        # with several daemons, or after a restart, the one before may be another's.
        self.recent.wrote(address, outcome.last_contact)

    def _write_pings(self, items: Any) -> Any:
        return self.store.record_pings(
            items, self.settings.max_ping, self.settings.online_seconds)

    @defer.inlineCallbacks
    def _claim_throttled(self, items: Any) -> Any:
        """Claim the keys of pings throttled in memory (already answered, nothing to
        write). A refusal can only be noted now: a downgrade marks the farmer, and a
        repeat of a request another daemon took first is counted and logged. Only the
        refused come back (nearly always none)."""
        outcomes = yield self.store.record_pings(
            items, self.settings.max_ping, self.settings.online_seconds, refused_only=True)
        late = 0
        for item, outcome in outcomes.items():
            if outcome.outcome == "downgrade":
                self.v2_farmers.add(item[0])
            elif outcome.outcome == "replayed":
                late += 1
        if late:
            self.late_replays += late
            self.log.warn("{count} throttled pings answered here repeated requests another "
                          "daemon had taken (they wrote nothing)", count=late)

    @outages_as_unavailable
    def set_height(self, farmer_id: str, height_text: str,
                   request: Request) -> Generator[Any, Any, None]:
        """Claim a height (generated storage), credited as :mod:`credit` allows;
        always a contact, never throttled."""
        # 2.2.x matched the height in the route itself, so its syntax comes first.
        height = parse_whole(height_text, InvalidHeight)
        address = self._farmer_id(farmer_id)
        claim = self._authenticate(address, request, "height", height)
        if height >= self.settings.height_limit:
            self._unclaim(claim)
            raise HeightLimitExceeded()
        found = yield self.claimed(address, claim, self.store.set_height(
            address, height, request.now, request.ip, self.settings.online_seconds,
            rate=self.fill_rate, claim=claim))
        if not found:
            raise FarmerNotFound()
        self.recent.wrote(address, request.now)

    @outages_as_unavailable
    def set_bandwidth(self, farmer_id: str, upload_text: str, download_text: str,
                      request: Request) -> Generator[Any, Any, None]:
        """Report upload/download bandwidth; a contact."""
        address = self._farmer_id(farmer_id)
        upload, download = parse_amount(upload_text), parse_amount(download_text)
        claim = self._authenticate(address, request, "bandwidth", upload, download)
        self._spend(self.bandwidth_reports, address, request, TooManyBandwidthReports, claim)
        found = yield self.claimed(address, claim, self.store.set_bandwidth(
            address, upload, download, request.now, request.ip, self.settings.online_seconds,
            claim))
        if not found:
            raise FarmerNotFound()
        self.recent.wrote(address, request.now)

    @outages_as_unavailable
    def audit(self, farmer_id: str, block_text: str, response: str,
              request: Request) -> Generator[Any, Any, None]:
        """Store the farmer's audit response for a block; a contact."""
        address = self._farmer_id(farmer_id)
        block = parse_whole(block_text, InvalidBlock)
        if not _SHA256.fullmatch(response):
            raise InvalidResponse()
        claim = self._authenticate(address, request, "audit", block, response.lower())
        self._spend(self.audits, address, request, TooManyAudits, claim)
        outcome = yield self.claimed(address, claim, self.store.add_audit(
            address, block, response.lower(), request.now, request.ip,
            self.settings.online_seconds, claim), known=lambda result: result != "unknown")
        if outcome == "unknown":
            raise FarmerNotFound()
        if outcome == "duplicate":
            raise DuplicateAudit(block)
        self.recent.wrote(address, request.now)

    @outages_as_unavailable
    def status(self, farmer_id: str, now: float) -> Generator[Any, Any, FarmerStatus]:
        """A :class:`FarmerStatus` for self-service; no authentication (it is public)."""
        address = self._farmer_id(farmer_id)
        record = yield self.store.farmer(address, now, self.fill_rate)
        if record is None:
            raise FarmerNotFound()
        count, last_block = yield self.store.audit_summary(record.id)
        days = self.settings.uptime_days
        credited = yield self.store.online_seconds(
            first_uptime_day(now, days), farmer_ids=[record.id])
        uptime = uptime_percent(
            credited.get(record.id, 0.0), record, now, self.settings.online_seconds, days)
        return FarmerStatus(record, uptime, count, last_block)

    @outages_as_unavailable
    def history(self, since: Any, until: Any, points: Any) -> Any:
        """Rows of the totals history in [since, until], at most ``points`` of them."""
        rows = yield self.store.history(since, until, points)
        return rows
