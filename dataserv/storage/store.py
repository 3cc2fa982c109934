"""Every SQL statement dataserv runs, one method per use case, nothing else.

Methods take plain values (the canonical address, "now" as Unix seconds) and return
plain values or :class:`FarmerRecord`. Each one names its transaction; the names feed
the per-statement timings in :attr:`FarmerStore.timings`.
"""

import math
from collections import namedtuple
from typing import Any, Optional

from twisted.internet import defer

from dataserv.storage.database import NAME_PREFIX
from dataserv.storage.failures import DatabaseConflict

# {height}: the stored credited height, or the credited_height(...) expression.
FARMER_COLUMNS = ("id, btc_addr, payout_addr, {height}, reg_time, last_seen,"
                  " bandwidth_upload, bandwidth_download, claimed_height, height_at,"
                  " plots, verified_bytes")

# The credited-height rule (schema 0004, named by dataserv.registry.credit) applied
# at %(now)s with %(rate)s shards per second; NULL rate: the claim as it is.
CREDITED_HEIGHT = ("credited_height(height, height_at, claimed_height,"
                   " %(rate)s::float8, %(now)s::float8)")

ACTIVITY_COLUMNS = ("id, " + CREDITED_HEIGHT + " AS credited, last_seen,"
                    " bandwidth_upload, bandwidth_download, claimed_height, plots, verified_bytes")

# plots and verified_bytes: what the last challenge round proved (dataserv.proofs);
# 0 for farmers without plots.
FarmerRecord = namedtuple("FarmerRecord", [
    "id", "btc_addr", "payout_addr", "height", "reg_time", "last_seen",
    "bandwidth_upload", "bandwidth_download", "claimed_height", "height_at",
    "plots", "verified_bytes"], defaults=(None, 0, 0))

# A registration refused because the farmer's network had its share this period;
# retry_at: when the next one from there will be accepted (Unix seconds).
RegistrationRefused = namedtuple("RegistrationRefused", ["retry_at"])

HistoryRow = namedtuple("HistoryRow", ["at", "online_farmers", "total_tb", "total_height",
                                       "verified_tb"], defaults=(0.0,))

# Empties every table (the test suite and the benchmark start from nothing).
TRUNCATE_ALL = ("TRUNCATE challenges, plots, audits, uptime_days, totals_history,"
                " request_claims, farmers"
                " RESTART IDENTITY CASCADE")

NEVER_THROTTLED = -math.inf
# work_mem for the summary's reads: sorting 100 000 online farmers by height spilled
# to disk at PostgreSQL's default 4 MB (107 ms) and takes ~45 ms in memory.
SORT_MEMORY = "64MB"
RETRIES = 3
# The summary's sliced reads take one transaction of many statements; each statement
# keeps the usual --db-timeout, the whole read may take this long (seconds).
SLICED_READ_SECONDS = 120.0


class Timings:
    """Count and total seconds per named transaction."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.counts: Any = {}
        self.seconds: Any = {}

    def measure(self, name: Any, d: Any) -> Any:
        """Record how long the Deferred d takes under name."""
        started = self.clock.seconds()

        def done(result: Any) -> Any:
            self.counts[name] = self.counts.get(name, 0) + 1
            self.seconds[name] = self.seconds.get(name, 0.0) + self.clock.seconds() - started
            return result

        return d.addBoth(done)


# An authenticated request's claim: its replay key (bytes), whether it used v2, and
# until when the key must be kept (Unix seconds). None: authentication is off.
Claim = namedtuple("Claim", ["key", "v2", "expires"])

# What one item of a ping batch came to: the claim's outcome ("ok", "replayed" or
# "downgrade"), and for a contact of a known farmer whether it was written and the
# farmer's last_seen as stored afterwards (both None otherwise).
PingOutcome = namedtuple("PingOutcome", ["outcome", "written", "last_contact"])


class ClaimRefused(Exception):
    """The request's claim was refused: ``outcome`` is "replayed" (its replay key is
    taken) or "downgrade" (legacy headers from a farmer that has used v2)."""

    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


def claim_params(address: Any, claim: Any, now: Any) -> Any:
    """The claim_request(p_addr, p_key, p_v2, p_at, p_expires) arguments."""
    if claim is None:
        return (address, None, False, now, None)
    return (address, claim.key, claim.v2, now, claim.expires)


def check_claim(outcome: Any) -> None:
    """Raise ClaimRefused unless claim_request's ``outcome`` is "ok"."""
    if outcome != "ok":
        raise ClaimRefused(outcome)


class FarmerStore:
    """The farmers' tables in PostgreSQL, through a :class:`dataserv.storage.database.Database`."""

    def __init__(self, database: Any, clock: Any) -> None:
        self.db = database
        self.timings = Timings(clock)

    def _query(self, name: Any, sql: Any, params: Any = None) -> Any:
        return self.timings.measure(name, self.db.run_query(sql, params))

    def _interaction(self, name: Any, interaction: Any, *args: Any) -> Any:
        return self.timings.measure(name, self.db.run_interaction(interaction, *args))

    # -- farmers ------------------------------------------------------------

    @defer.inlineCallbacks
    def register(self, address: str, payout: str, now: float, ip: Optional[str],
                 network: Optional[str] = None, limit: Optional[int] = None,
                 period: float = 3600.0, claim: "Claim | None" = None) -> Any:
        """Insert a farmer; returns its record, None if the address is taken, or
        :class:`RegistrationRefused` when ``network`` already has ``limit``
        registrations in the ``period`` seconds before ``now`` (counted across every
        daemon on the database; no limit when ``limit`` or ``network`` is None).

        The request's claim is made first, in the same statement; ClaimRefused if
        refused (then nothing is registered or counted)."""
        rows = yield self._query(
            "register",
            "SELECT * FROM register_claimed(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (address, payout, now, ip, network, limit, period)
            + claim_params(address, claim, now)[1:3]
            + (None if claim is None else claim.expires,))
        if not rows:
            return None
        check_claim(rows[0][0])
        if rows[0][1] is not None:
            return RegistrationRefused(rows[0][1])
        return FarmerRecord(*rows[0][2:])

    @defer.inlineCallbacks
    def farmer(self, address: str, now: Optional[float] = None,
               rate: Optional[float] = None) -> Any:
        """The farmer's record, or None. Its height is the height credited at ``now``
        with a fill rate of ``rate`` shards per second (None: the claim as it is);
        without ``now``, the credited height as last stored."""
        height = "height" if now is None else CREDITED_HEIGHT
        rows = yield self._query(
            "farmer", "SELECT " + FARMER_COLUMNS.format(height=height)
            + " FROM farmers WHERE btc_addr = %(address)s",
            {"address": address, "now": now, "rate": rate})
        return FarmerRecord(*rows[0]) if rows else None

    @defer.inlineCallbacks
    def record_pings(self, items: list, min_gap: float, window: float,
                     refused_only: bool = False) -> Any:
        """Claim and record a batch of pings in one statement and one commit.

        ``items`` are (address, at, ip, claim, contact) tuples; an item whose
        ``contact`` is false (a ping throttled in memory) only claims its key.
        Returns {item: PingOutcome}; with ``refused_only``, only the items whose
        claim was refused are in it (the others' rows are not even sent back). A
        batch that records no contact claims keys only, which commits without
        waiting for the disk (see README, Security).
        """
        items = list(items)
        columns = list(zip(*items)) if items else [(), (), (), (), ()]
        addresses, ats, ips, claims, contacts = columns
        params = (list(addresses), list(ats), list(ips),
                  [None if c is None else c.key for c in claims],
                  [c is not None and c.v2 for c in claims],
                  list(contacts),
                  [None if c is None else c.expires for c in claims],
                  min_gap, window)
        sql = ("SELECT item, outcome, written, last_contact FROM record_pings("
               "%s::text[], %s::float8[], %s::text[], %s::bytea[], %s::boolean[],"
               " %s::boolean[], %s::float8[], %s, %s)")
        if not any(contacts):
            sql = ("SELECT item, outcome, written, last_contact"
                   " FROM set_config('synchronous_commit', 'off', true),"
                   " LATERAL (" + sql + ") AS r")
        if refused_only:
            sql = "SELECT * FROM (" + sql + ") AS refused WHERE outcome <> 'ok'"
        for attempt in range(RETRIES):
            try:
                rows = yield self._query("record_pings", sql, params)
            except DatabaseConflict:
                # As record_contacts: safe to repeat if picked as a deadlock victim.
                if attempt == RETRIES - 1:
                    raise
                continue
            return {items[item - 1]: PingOutcome(outcome, written, last)
                    for item, outcome, written, last in rows}

    @defer.inlineCallbacks
    def _claimed_call(self, name: str, call: str, params: tuple, address: str,
                      claim: "Claim | None", now: float) -> Any:
        """The result of the PL/pgSQL ``call``, run only if the request's claim is
        accepted, in the same statement; ClaimRefused if refused."""
        rows = yield self._query(
            name, "SELECT c, CASE WHEN c = 'ok' THEN " + call + " END"
            " FROM claim_request(%s, %s, %s, %s, %s) AS c",
            params + claim_params(address, claim, now))
        check_claim(rows[0][0])
        return rows[0][1]

    @defer.inlineCallbacks
    def claim(self, address: str, claim: "Claim", now: float) -> Any:
        """Claim a request that writes nothing of its own here (its route's writes
        follow); ClaimRefused if refused."""
        rows = yield self._query(
            "claim", "SELECT claim_request(%s, %s, %s, %s, %s)",
            claim_params(address, claim, now))
        check_claim(rows[0][0])

    @defer.inlineCallbacks
    def set_height(self, address: str, height: int, now: float, ip: Optional[str],
                   window: float, rate: Optional[float] = None,
                   claim: "Claim | None" = None) -> Any:
        """Claim a height and record a contact; returns whether the farmer exists.

        The claim is credited as the credited-height rule allows at ``rate`` shards
        per second (None: as claimed); see :mod:`dataserv.registry.credit`. The
        request's claim is made in the same statement; ClaimRefused if refused.
        """
        found = yield self._claimed_call(
            "set_height", "set_height(%s, %s, %s, %s, %s, %s::float8)",
            (address, height, now, ip, window, rate), address, claim, now)
        return found

    @defer.inlineCallbacks
    def set_bandwidth(self, address: str, upload: float, download: float, now: float,
                      ip: Optional[str], window: float,
                      claim: "Claim | None" = None) -> Any:
        """Set the bandwidth figures and record a contact; whether the farmer exists.

        The request's claim is made in the same statement; ClaimRefused if refused.
        """
        found = yield self._claimed_call(
            "set_bandwidth", "set_bandwidth(%s, %s, %s, %s, %s, %s)",
            (address, upload, download, now, ip, window), address, claim, now)
        return found

    def add_audit(self, address: str, block: int, response: str, now: float,
                  ip: Optional[str],
                  window: float, claim: "Claim | None" = None) -> defer.Deferred:
        """Store an audit: "accepted", "duplicate" or "unknown" (no such farmer).

        The request's claim is made in the same transaction; ClaimRefused if refused.
        """
        @defer.inlineCallbacks
        def interaction(cursor: Any) -> Any:
            yield cursor.execute("SELECT claim_request(%s, %s, %s, %s, %s)",
                                 claim_params(address, claim, now))
            check_claim(cursor.fetchall()[0][0])
            # Lock the farmer first: the audit's foreign key would otherwise take a
            # share lock that two audits of one farmer both hold and both try to
            # upgrade when they record the contact, which deadlocks.
            yield cursor.execute(
                "SELECT id FROM farmers WHERE btc_addr = %s FOR UPDATE", (address,))
            found = cursor.fetchall()
            if not found:
                return "unknown"
            yield cursor.execute(
                "INSERT INTO audits (farmer_id, block, response, submitted_at)"
                " VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (farmer_id, block) DO NOTHING RETURNING farmer_id",
                (found[0][0], block, response, now))
            if cursor.rowcount == 0:
                return "duplicate"
            yield _contact(cursor, address, now, ip, window)
            return "accepted"

        return self._interaction("add_audit", interaction)

    @defer.inlineCallbacks
    def audit_summary(self, farmer_id: Any) -> Any:
        """(number of audits, highest audited block or None) for one farmer."""
        rows = yield self._query(
            "audit_summary",
            "SELECT count(*), max(block) FROM audits WHERE farmer_id = %s", (farmer_id,))
        return rows[0][0], rows[0][1]

    # -- the summary's reads ------------------------------------------------

    def _fetch_in_slices(self, name: Any, sql: Any, params: Any, pause: Any, size: Any = 2000,
                         into: Any = list) -> Any:
        """All rows of a query, fetched ``size`` at a time with ``pause()`` between,
        so 100 000 rows never hold the reactor for one long stretch. ``into=dict``
        gives {first column: second column} for two columns, else {first: the rest}."""
        pause = pause or (lambda: defer.succeed(None))

        # A server-side cursor: libpq would otherwise parse the whole result in one
        # go on the reactor thread (about 50 ms for 100 000 rows).
        # cursor_tuple_fraction: every row is wanted, so plan for all of them (the
        # default plans cursors for the first 10 % and chose a plan 5x slower).
        @defer.inlineCallbacks
        def interaction(cursor: Any) -> Any:
            yield cursor.execute("SET LOCAL cursor_tuple_fraction = 1")
            yield cursor.execute("SET LOCAL work_mem = '%s'" % SORT_MEMORY)
            yield cursor.execute("DECLARE slices NO SCROLL CURSOR FOR " + sql, params)
            result = into()
            while True:
                yield cursor.execute("FETCH %d FROM slices" % size)
                chunk = cursor.fetchall()
                if into is list:
                    result.extend(chunk)
                elif chunk and len(chunk[0]) == 2:
                    result.update(chunk)
                else:
                    result.update((row[0], row[1:]) for row in chunk)
                if len(chunk) < size:
                    return result
                yield pause()

        return self.timings.measure(
            name, self.db.run_long_interaction(SLICED_READ_SECONDS, interaction))

    def online_activity(self, cutoff: float, pause: Any = None, now: Optional[float] = None,
                        rate: Optional[float] = None) -> Any:
        """(id, height, last_seen, bandwidth_upload, bandwidth_download,
        claimed_height, plots, verified_bytes) of farmers seen at or after cutoff, by height desc then
        registration order. The height is the one credited at ``now`` with ``rate``
        shards per second (see :meth:`farmer`). The columns that never change are
        left to :meth:`identities` (fetched once per farmer)."""
        return self._fetch_in_slices(
            "online_activity",
            "SELECT " + ACTIVITY_COLUMNS + " FROM farmers WHERE last_seen >= %(cutoff)s"
            " ORDER BY credited DESC, id",
            {"cutoff": cutoff, "now": cutoff if now is None else now, "rate": rate}, pause)

    def identities(self, farmer_ids: Any, pause: Any = None) -> Any:
        """{id: (btc_addr, payout_addr, reg_time)}: what never changes about farmers."""
        return self._fetch_in_slices(
            "identities",
            "SELECT id, btc_addr, payout_addr, reg_time FROM farmers"
            " WHERE id = ANY(%s::bigint[])", (_id_array(farmer_ids),), pause, into=dict)

    def online_seconds(self, first_day: Any, last_day: Any = None, seen_since: Any = None,
                       farmer_ids: Any = None,
                       pause: Any = None) -> Any:
        """{farmer id: seconds credited from first_day (to last_day, if given)}, for
        the farmers seen since ``seen_since`` and/or those in ``farmer_ids``."""
        sql = ("SELECT u.farmer_id, sum(u.online_seconds) FROM uptime_days u"
               " JOIN farmers f ON f.id = u.farmer_id WHERE u.day >= %s")
        params = [first_day]
        if last_day is not None:
            sql += " AND u.day <= %s"
            params.append(last_day)
        if seen_since is not None:
            sql += " AND f.last_seen >= %s"
            params.append(seen_since)
        if farmer_ids is not None:
            sql += " AND u.farmer_id = ANY(%s::bigint[])"
            params.append(_id_array(farmer_ids))
        return self._fetch_in_slices(
            "online_seconds", sql + " GROUP BY u.farmer_id", params, pause, into=dict)

    def prune_uptime(self, before_day: Any) -> Any:
        """Drop uptime buckets older than before_day (a date)."""
        return self._query(
            "prune_uptime",
            "WITH gone AS (DELETE FROM uptime_days WHERE day < %s RETURNING 1)"
            " SELECT count(*) FROM gone", (before_day,))

    @defer.inlineCallbacks
    def unexpired_claims(self, now: float) -> Any:
        """[(key, expires)] of every replay key that can still pass the Date check."""
        rows = yield self._query(
            "unexpired_claims", "SELECT key, expires FROM request_claims WHERE expires >= %s",
            (now,))
        return [(bytes(key), expires) for key, expires in rows]

    @defer.inlineCallbacks
    def other_daemons(self, own_name: str) -> Any:
        """How many other daemons are connected to this database (by the name each
        puts in its connections' application_name; see storage.database)."""
        rows = yield self._query(
            "other_daemons",
            "SELECT count(DISTINCT substring(application_name FROM %(pattern)s))"
            " FROM pg_stat_activity"
            " WHERE substring(application_name FROM %(pattern)s) <> %(own)s",
            {"pattern": "(" + NAME_PREFIX + r"\S+)$", "own": own_name})
        return rows[0][0]

    def prune_request_claims(self, now: float) -> Any:
        """Drop replay keys that can no longer pass the Date check."""
        return self._query(
            "prune_request_claims",
            "WITH gone AS (DELETE FROM request_claims WHERE expires < %s RETURNING 1)"
            " SELECT count(*) FROM gone", (now,))

    # -- totals history -----------------------------------------------------

    def append_history(self, at: Any, online_farmers: Any, total_tb: Any, total_height: Any,
                       min_gap: Any = 0,
                       verified_tb: Any = 0.0) -> Any:
        """Add one totals row unless one newer than ``at - min_gap`` exists (another
        daemon on the same database may have written it)."""
        return self._query(
            "append_history",
            "INSERT INTO totals_history (at, online_farmers, total_tb, total_height,"
            " verified_tb)"
            " SELECT %s, %s, %s, %s, %s WHERE NOT EXISTS"
            " (SELECT 1 FROM totals_history WHERE at > %s)"
            " ON CONFLICT (at) DO NOTHING RETURNING at",
            (at, online_farmers, total_tb, total_height, verified_tb, at - min_gap))

    @defer.inlineCallbacks
    def last_history_time(self) -> Any:
        """When the newest totals row was written, or None."""
        rows = yield self._query("last_history_time", "SELECT max(at) FROM totals_history")
        return rows[0][0]

    @defer.inlineCallbacks
    def history(self, since: Any, until: Any, points: Any) -> Any:
        """Totals rows in [since, until], averaged into at most ``points`` buckets."""
        rows = yield self._query(
            "history",
            "WITH span AS (SELECT count(*) AS n FROM totals_history WHERE at BETWEEN %(s)s AND %(u)s),"
            " numbered AS (SELECT *, (row_number() OVER (ORDER BY at) - 1) AS i"
            "   FROM totals_history WHERE at BETWEEN %(s)s AND %(u)s)"
            " SELECT max(at), round(avg(online_farmers))::int, avg(total_tb),"
            "        round(avg(total_height))::bigint, avg(verified_tb)"
            " FROM numbered, span"
            " GROUP BY (i * %(p)s) / greatest(span.n, 1)"
            " ORDER BY 1",
            {"s": since, "u": until, "p": points})
        return [HistoryRow(*row) for row in rows]


def _id_array(ids: Any) -> Any:
    """Ids as a PostgreSQL array literal: ten times cheaper than adapting a list
    when there are 100 000 of them."""
    return "{%s}" % ",".join(map(str, map(int, ids)))


def _contact(cursor: Any, address: Any, now: Any, ip: Any, window: Any) -> Any:
    return cursor.execute(
        "SELECT written FROM record_contacts(%s::text[], %s::float8[], %s::text[], %s, %s)",
        ([address], [now], [ip], NEVER_THROTTLED, window))

