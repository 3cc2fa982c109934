"""The rules for farmers: what each call checks, in which order, and what it records.

No SQL and no HTTP here: :class:`Farmers` gets a store, a signature verifier and the
settings, and each method gets the raw route values, the request's headers, "now"
(read once at request entry) and the client's IP. Rejections are exceptions from
this module; the API layer maps them to status codes and texts.
"""

import functools
import re
from dataclasses import dataclass

from twisted.internet import defer

from dataserv.identity import addresses
from dataserv.registry.uptime import first_uptime_day, uptime_percent
from dataserv.identity.auth import AuthenticationFailed
from dataserv.storage.batching import GroupCommit
from dataserv.storage.database import DatabaseUnavailable


class Rejected(Exception):
    """A request the rules refuse."""


class Unavailable(Exception):
    """The database cannot be reached right now: nothing was decided, try again later."""


class InvalidFarmerId(Rejected):
    """The <id> is neither a P2PKH address nor a nodeid."""


class InvalidPayout(Rejected):
    """The payout address is not a P2PKH or P2SH address."""


class Unauthenticated(Rejected):
    """Missing, malformed or wrong signature headers, or a Date outside the window."""

    def __init__(self, skew=None):
        super().__init__(skew)
        self.skew = skew


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


class DuplicateAudit(Rejected):
    """The farmer has already submitted an audit for this block."""

    def __init__(self, block):
        super().__init__(block)
        self.block = block


def _outages_as_unavailable(method):
    """An inlineCallbacks method whose database outages come out as
    :class:`Unavailable`, the registry's word for "try again later"."""
    call = defer.inlineCallbacks(method)

    def translate(failure):
        failure.trap(DatabaseUnavailable)
        raise Unavailable(str(failure.value))

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        return call(*args, **kwargs).addErrback(translate)

    return wrapper


_WHOLE = re.compile(r"^[0-9]{1,18}$")
_NUMBER = re.compile(r"^[0-9]{1,18}(\.[0-9]{1,18})?$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


def parse_whole(text, error):
    """A non-negative int from route text, or raise error()."""
    if not _WHOLE.match(text):
        raise error()
    return int(text)


def parse_amount(text):
    """A non-negative finite float from route text, or raise InvalidBandwidth."""
    if not _NUMBER.match(text):
        raise InvalidBandwidth()
    return float(text)


@dataclass(frozen=True)
class FarmerStatus:
    """What /api/farmer/<id> reports."""

    record: object
    uptime: float
    audits: int
    last_audit_block: object


@dataclass(frozen=True)
class Request:
    """What the rules need from an HTTP request."""

    date: object           # the Date header as sent (bytes/str) or None
    authorization: object  # the Authorization header or None
    now: float             # Unix seconds, read once at request entry
    ip: str = None         # the client's IP (never published)


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

    def __init__(self, max_age, limit=250000):
        self.max_age = max_age
        self.limit = limit
        self._written = {}

    def throttled(self, address, now):
        """Whether a ping now is known to be too soon."""
        written = self._written.get(address)
        return written is not None and 0 <= now - written < self.max_age

    def wrote(self, address, now):
        """Remember that the farmer's stored last contact is at ``now``."""
        if len(self._written) >= self.limit:
            self._written = {a: t for a, t in self._written.items() if now - t < self.max_age}
            if len(self._written) >= self.limit:
                self._written.clear()
        if now > self._written.get(address, float("-inf")):
            self._written[address] = now

    def __len__(self):
        return len(self._written)


class Farmers:
    """Register, ping, height, bandwidth and audits, each in the contract's check order."""

    def __init__(self, store, verifier, settings):
        self.store = store
        self.verifier = verifier
        self.settings = settings
        self.pings = GroupCommit(self._write_pings)
        self.timings = store.timings  # the store's transactions, for /metrics
        self.recent = RecentContacts(settings.max_ping)

    # -- shared checks --------------------------------------------------------

    def farmer_id(self, text: str) -> str:
        """The canonical address of an <id> (address or nodeid), or InvalidFarmerId."""
        return self._farmer_id(text)

    def identify(self, farmer_id: str, request: Request) -> str:
        """The address of a signed request's <id> after the id's syntax (InvalidFarmerId)
        and the signature (Unauthenticated) are checked, as every signed route does."""
        address = self._farmer_id(farmer_id)
        self._authenticate(address, request)
        return address

    def _farmer_id(self, text):
        try:
            return addresses.parse_farmer_id(text)
        except addresses.InvalidAddress:
            raise InvalidFarmerId()

    def _authenticate(self, address, request):
        if self.settings.skip_authentication:
            return
        try:
            self.verifier.verify(address, request.date, request.authorization, request.now)
        except AuthenticationFailed as e:
            raise Unauthenticated(getattr(e, "skew", None))

    # -- the calls ------------------------------------------------------------

    @_outages_as_unavailable
    def register(self, farmer_id, payout, request):
        """Register a farmer (payout defaults to its own address); returns its record."""
        address = self._farmer_id(farmer_id)
        self._authenticate(address, request)
        if payout is None:
            payout = address
        else:
            try:
                payout = addresses.parse_payout_address(payout)
            except addresses.InvalidAddress:
                raise InvalidPayout()
        record = yield self.store.register(address, payout, request.now, request.ip)
        if record is None:
            raise AlreadyRegistered()
        self.recent.wrote(address, request.now)
        return record

    @_outages_as_unavailable
    def ping(self, farmer_id, request):
        """Keep-alive; one sooner than --max-ping after the last contact writes nothing."""
        address = self._farmer_id(farmer_id)
        self._authenticate(address, request)
        if self.recent.throttled(address, request.now):
            return
        known = yield self.pings.submit((address, request.now, request.ip))
        if address not in known:
            raise FarmerNotFound()
        # Written by us or not, the stored contact throttles the next pings here:
        # with several daemons, or after a restart, the one before may be another's.
        self.recent.wrote(address, known[address].last_contact)

    def _write_pings(self, contacts):
        return self.store.record_contacts(
            contacts, self.settings.max_ping, self.settings.online_seconds)

    @_outages_as_unavailable
    def set_height(self, farmer_id, height_text, request):
        """Advertise generated storage; always a contact, never throttled."""
        # 2.2.x matched the height in the route itself, so its syntax comes first.
        height = parse_whole(height_text, InvalidHeight)
        address = self._farmer_id(farmer_id)
        self._authenticate(address, request)
        if height >= self.settings.height_limit:
            raise HeightLimitExceeded()
        found = yield self.store.set_height(
            address, height, request.now, request.ip, self.settings.online_seconds)
        if not found:
            raise FarmerNotFound()
        self.recent.wrote(address, request.now)

    @_outages_as_unavailable
    def set_bandwidth(self, farmer_id, upload_text, download_text, request):
        """Report upload/download bandwidth; a contact."""
        address = self._farmer_id(farmer_id)
        upload, download = parse_amount(upload_text), parse_amount(download_text)
        self._authenticate(address, request)
        found = yield self.store.set_bandwidth(
            address, upload, download, request.now, request.ip, self.settings.online_seconds)
        if not found:
            raise FarmerNotFound()
        self.recent.wrote(address, request.now)

    @_outages_as_unavailable
    def audit(self, farmer_id, block_text, response, request):
        """Store the farmer's audit response for a block; a contact."""
        address = self._farmer_id(farmer_id)
        block = parse_whole(block_text, InvalidBlock)
        if not _SHA256.match(response):
            raise InvalidResponse()
        self._authenticate(address, request)
        outcome = yield self.store.add_audit(
            address, block, response.lower(), request.now, request.ip,
            self.settings.online_seconds)
        if outcome == "unknown":
            raise FarmerNotFound()
        if outcome == "duplicate":
            raise DuplicateAudit(block)
        self.recent.wrote(address, request.now)

    @_outages_as_unavailable
    def status(self, farmer_id, now):
        """A :class:`FarmerStatus` for self-service; no authentication (it is public)."""
        address = self._farmer_id(farmer_id)
        record = yield self.store.farmer(address)
        if record is None:
            raise FarmerNotFound()
        count, last_block = yield self.store.audit_summary(record.id)
        days = self.settings.uptime_days
        credited = yield self.store.online_seconds(
            first_uptime_day(now, days), farmer_ids=[record.id])
        uptime = uptime_percent(
            credited.get(record.id, 0.0), record, now, self.settings.online_seconds, days)
        return FarmerStatus(record, uptime, count, last_block)

    @_outages_as_unavailable
    def history(self, since, until, points):
        """Rows of the totals history in [since, until], at most ``points`` of them."""
        rows = yield self.store.history(since, until, points)
        return rows
