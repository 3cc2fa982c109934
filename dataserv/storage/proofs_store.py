"""Every SQL statement of proof of space: plots, challenges, answers and tallies.

The one rule kept here for speed is which challenges are *settled*, i.e. count in a
plot's score (see dataserv.proofs.scoring): answered; or fetched and the proof
window over; or never fetched in a round that has closed. It is named
:data:`SETTLED` and used by both tallies.
"""

from collections import namedtuple
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from twisted.internet import defer

from dataserv.storage.store import Timings, check_claim, claim_params

OpenChallenge = namedtuple("OpenChallenge", ["plot_id", "k", "challenge", "fetched_at"])
AnswerTarget = namedtuple("AnswerTarget", [
    "row", "plot_id", "k", "challenge", "fetched_at", "answered_at"])
PlotTally = namedtuple("PlotTally", ["plot_id", "k", "found", "settled", "answered"])

# A challenge that counts in a score, at %(now)s with %(interval)s between rounds and
# %(window)s to answer after a fetch.
SETTLED = ("(c.answered_at IS NOT NULL"
           " OR (c.fetched_at IS NOT NULL AND c.fetched_at + %(window)s < %(now)s)"
           " OR (c.fetched_at IS NULL AND c.issued_at <= %(now)s - %(interval)s))")

# Any constant: the same in every dataserv process (migrations use 0x64617461).
DRAW_LOCK_KEY = 0x706C6F74  # "plot"

TALLY = ("coalesce(sum(c.proofs) FILTER (WHERE " + SETTLED + "), 0),"
         " count(c.id) FILTER (WHERE " + SETTLED + "),"
         " count(c.id) FILTER (WHERE c.answered_at IS NOT NULL)")


@defer.inlineCallbacks
def _locked_farmer(cursor: Any, address: str) -> Any:
    """The farmer's id with its row locked for the transaction, or None: plots are
    added and removed under this lock, so daemons sharing the database agree."""
    yield cursor.execute("SELECT id FROM farmers WHERE btc_addr = %s FOR UPDATE", (address,))
    found = cursor.fetchall()
    return found[0][0] if found else None


class ProofStore:
    """The proof-of-space tables, through a :class:`dataserv.storage.database.Database`."""

    def __init__(self, database: Any, clock: Any, timings: Optional[Timings] = None) -> None:
        self.db = database
        self.timings = timings if timings is not None else Timings(clock)

    def _query(self, name: str, sql: str, params: Any = None) -> "defer.Deferred[Any]":
        return self.timings.measure(name, self.db.run_query(sql, params))

    def _interaction(self, name: str, interaction: Callable[..., Any], *args: Any) -> Any:
        return self.timings.measure(name, self.db.run_interaction(interaction, *args))

    # -- plots --------------------------------------------------------------

    def register_plot(self, address: str, plot_id: bytes, seed: bytes, k: int,
                      now: float, max_plots: int = 0) -> "defer.Deferred[str]":
        """Add a plot: "registered", "again" (the same plot was registered before),
        "conflict" (registered with another k), "full" (the farmer has ``max_plots``
        plots already; 0 = no limit) or "unknown" (no such farmer). The farmer's row
        is locked, so daemons sharing the database never let it past the limit."""
        @defer.inlineCallbacks
        def interaction(cursor: Any) -> Any:
            farmer = yield _locked_farmer(cursor, address)
            if farmer is None:
                return "unknown"
            # After the lock: a statement of its own sees every plot committed before.
            yield cursor.execute(
                "SELECT (SELECT k FROM plots WHERE plot_id = %s),"
                " (SELECT count(*) FROM plots WHERE farmer_id = %s)", (plot_id, farmer))
            existing_k, plots = cursor.fetchall()[0]
            if existing_k is not None:
                return "again" if existing_k == k else "conflict"
            if max_plots and plots >= max_plots:
                return "full"
            yield cursor.execute(
                "INSERT INTO plots (plot_id, farmer_id, seed, k, registered_at)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (plot_id) DO NOTHING RETURNING id",
                (plot_id, farmer, seed, k, now))
            if cursor.rowcount:
                return "registered"
            # Not reached while the farmer's row is locked (a plot id is one nodeid's);
            # answered rather than raised all the same.
            yield cursor.execute("SELECT k FROM plots WHERE plot_id = %s", (plot_id,))
            return "again" if cursor.fetchall()[0][0] == k else "conflict"

        return self._interaction("register_plot", interaction)

    def remove_plot(self, address: str, plot_id: bytes, now: float, since: float,
                    interval: float, window: float,
                    totals_of: Callable[[List[Tuple[int, int, int, int]]], Tuple[int, int]]
                    ) -> "defer.Deferred[Any]":
        """Delete one of the farmer's plots with its challenges, and write the farmer's
        plots and verified bytes without it, in one transaction: (plots, verified
        bytes) as written, "unknown" (no such farmer) or "not found" (not one of its
        plots). ``totals_of`` turns the remaining plots' tallies, rows (farmer id, k,
        found, settled) over the challenges issued after ``since``, into the pair."""
        @defer.inlineCallbacks
        def interaction(cursor: Any) -> Any:
            farmer = yield _locked_farmer(cursor, address)
            if farmer is None:
                return "unknown"
            yield cursor.execute(
                "DELETE FROM plots WHERE plot_id = %s AND farmer_id = %s RETURNING id",
                (plot_id, farmer))
            if not cursor.rowcount:
                return "not found"
            yield cursor.execute(
                "SELECT p.farmer_id, p.k, " + TALLY + " FROM plots p"
                " LEFT JOIN challenges c ON c.plot = p.id AND c.issued_at > %(since)s"
                " WHERE p.farmer_id = %(farmer)s GROUP BY p.id",
                {"now": now, "since": since, "interval": interval, "window": window,
                 "farmer": farmer})
            plots, verified = totals_of([(f, k, int(found), settled)
                                         for f, k, found, settled, _ in cursor.fetchall()])
            yield cursor.execute(
                "UPDATE farmers SET plots = %s, verified_bytes = %s WHERE id = %s",
                (plots, verified, farmer))
            return plots, verified

        return self._interaction("remove_plot", interaction)

    # -- challenges ---------------------------------------------------------

    def draw_round(self, now: float, per_plot: int, interval: float,
                   random_bytes: Callable[[int], bytes]) -> "defer.Deferred[int]":
        """Draw ``per_plot`` fresh 32-byte challenges for every plot, from one call of
        ``random_bytes``; returns how many. Nothing when a round was drawn less than
        half an interval ago (another daemon on the same database drew it)."""
        @defer.inlineCallbacks
        def interaction(cursor: Any) -> Any:
            # Daemons on one database draw one after the other, and the second sees
            # the first one's round.
            yield cursor.execute("SELECT pg_advisory_xact_lock(%s)", (DRAW_LOCK_KEY,))
            yield cursor.execute(
                "SELECT count(*) FROM plots WHERE NOT EXISTS"
                " (SELECT 1 FROM challenges WHERE issued_at > %s)", (now - interval / 2,))
            plots = cursor.fetchall()[0][0]
            if not plots:
                return 0
            blob = random_bytes(plots * per_plot * 32)
            yield cursor.execute(
                "INSERT INTO challenges (plot, challenge, issued_at)"
                " SELECT p.id, substring(%(blob)s FROM ((p.n - 1) * %(per)s + s.i)::int * 32 + 1"
                "   FOR 32), %(now)s"
                " FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM plots) p,"
                "      generate_series(0, %(per)s - 1) AS s(i)"
                " WHERE p.n <= %(plots)s",
                {"blob": blob, "per": per_plot, "now": now, "plots": plots})
            return cursor.rowcount

        return self._interaction("draw_round", interaction)

    def fetch_challenges(self, address: str, now: float, interval: float, window: float,
                         limit: int) -> "defer.Deferred[Optional[List[OpenChallenge]]]":
        """The farmer's challenges that can still be answered (of the current round,
        unanswered, not past their window), at most ``limit``; the first fetch of each
        is recorded as now. None when there is no such farmer."""
        @defer.inlineCallbacks
        def interaction(cursor: Any) -> Any:
            yield cursor.execute("SELECT id FROM farmers WHERE btc_addr = %s", (address,))
            found = cursor.fetchall()
            if not found:
                return None
            yield cursor.execute(
                "WITH picked AS ("
                "  SELECT c.id FROM challenges c JOIN plots p ON p.id = c.plot"
                "  WHERE p.farmer_id = %(farmer)s AND c.issued_at > %(now)s - %(interval)s"
                "    AND c.answered_at IS NULL"
                "    AND (c.fetched_at IS NULL OR %(now)s <= c.fetched_at + %(window)s)"
                "  ORDER BY c.id LIMIT %(limit)s FOR UPDATE OF c)"
                " UPDATE challenges c SET fetched_at = coalesce(c.fetched_at, %(now)s)"
                " FROM picked, plots p WHERE c.id = picked.id AND p.id = c.plot"
                " RETURNING p.plot_id, p.k, c.challenge, c.fetched_at, c.id",
                {"farmer": found[0][0], "now": now, "interval": interval,
                 "window": window, "limit": limit})
            rows = sorted(cursor.fetchall(), key=lambda row: row[-1])
            return [OpenChallenge(bytes(p), k, bytes(c), f) for p, k, c, f, _ in rows]

        return self._interaction("fetch_challenges", interaction)

    @defer.inlineCallbacks
    def answer_targets(self, address: str, answered: Sequence[Tuple[bytes, bytes]],
                       claim: Any, now: float) -> Any:
        """Claim the answering request (``claim``, see
        :meth:`dataserv.storage.store.FarmerStore.claim`) and, in the same statement,
        find the challenges ``answered`` names as (plot id, challenge) among the
        farmer's plots: (farmer exists, {challenge: AnswerTarget}). Challenges of
        other farmers' plots are not found; ClaimRefused if the claim is refused
        (then nothing is looked up).

        The PL/pgSQL function answer_targets (schema 0010) does both with a plan made
        once per connection, in which each pair is one probe of the plot id's index
        and one of the (plot, challenge) index: an answer costs the same whatever the
        number of the farmer's plots and challenges."""
        rows = yield self._query(
            "answer_targets",
            "SELECT * FROM answer_targets(%(addr)s, %(key)s, %(v2)s, %(at)s, %(expires)s,"
            " %(plots)s::bytea[], %(challenges)s::bytea[])",
            dict(zip(("addr", "key", "v2", "at", "expires"), claim_params(address, claim, now)),
                 plots=[bytes(p) for p, _ in answered],
                 challenges=[bytes(c) for _, c in answered]))
        check_claim(rows[0][0])
        targets = {}
        for _, _, row, plot_id, k, challenge, fetched_at, answered_at in rows:
            if row is not None:
                targets[bytes(challenge)] = AnswerTarget(
                    row, bytes(plot_id), k, bytes(challenge), fetched_at, answered_at)
        return rows[0][1] is not None, targets

    @defer.inlineCallbacks
    def farmer_plot_ids(self, address: str) -> Any:
        """The plot ids of a farmer, as a set of bytes."""
        rows = yield self._query(
            "farmer_plot_ids",
            "SELECT p.plot_id FROM plots p JOIN farmers f ON f.id = p.farmer_id"
            " WHERE f.btc_addr = %s", (address,))
        return {bytes(row[0]) for row in rows}

    @defer.inlineCallbacks
    def record_answers(self, now: float, window: float,
                       answers: Iterable[Tuple[int, int]]) -> Any:
        """Write [(challenge row, valid proofs)] for the challenges not answered yet
        whose window, from the first fetch, is still open at now; returns the rows
        written (a second answer, or a late one, writes nothing)."""
        answers = list(answers)
        if not answers:
            return set()
        rows = yield self._query(
            "record_answers",
            "SELECT o_row FROM record_answers(%s, %s, %s::bigint[], %s::int[])",
            (now, window, [r for r, _ in answers], [n for _, n in answers]))
        return {row[0] for row in rows}

    def prune_challenges(self, before: float) -> "defer.Deferred[Any]":
        """Drop the challenges issued before ``before`` (out of every window)."""
        return self._query(
            "prune_challenges",
            "WITH gone AS (DELETE FROM challenges WHERE issued_at < %s RETURNING 1)"
            " SELECT count(*) FROM gone", (before,))

    # -- tallies and scores -------------------------------------------------

    @defer.inlineCallbacks
    def all_tallies(self, now: float, since: float, interval: float, window: float) -> Any:
        """(farmer id, k, proofs found, challenges settled) for every plot, over the
        challenges issued after ``since``."""
        rows = yield self._query(
            "all_tallies",
            "SELECT p.farmer_id, p.k, " + TALLY + " FROM plots p"
            " LEFT JOIN challenges c ON c.plot = p.id AND c.issued_at > %(since)s"
            " GROUP BY p.id",
            {"now": now, "since": since, "interval": interval, "window": window})
        return [(farmer, k, int(found), settled) for farmer, k, found, settled, _ in rows]

    @defer.inlineCallbacks
    def farmer_tallies(self, farmer_id: int, now: float, since: float, interval: float,
                       window: float) -> Any:
        """A PlotTally for each plot of one farmer, in registration order."""
        rows = yield self._query(
            "farmer_tallies",
            "SELECT p.plot_id, p.k, " + TALLY + " FROM plots p"
            " LEFT JOIN challenges c ON c.plot = p.id AND c.issued_at > %(since)s"
            " WHERE p.farmer_id = %(farmer)s GROUP BY p.id ORDER BY p.id",
            {"now": now, "since": since, "interval": interval, "window": window,
             "farmer": farmer_id})
        return [PlotTally(bytes(p), k, int(found), settled, answered)
                for p, k, found, settled, answered in rows]

    def write_farmer_totals(self, totals: Dict[int, Tuple[int, int]]) -> "defer.Deferred[Any]":
        """Set {farmer id: (plots, verified bytes)}; rows that did not change are not
        written, nor those of a farmer whose plots are no longer as many as the
        totals say (a plot was removed or registered since they were tallied: the
        removal wrote its own totals, and the next round writes the new ones)."""
        ids = sorted(totals)
        return self._query(
            "write_farmer_totals",
            "WITH changed AS (UPDATE farmers f SET plots = u.plots, verified_bytes = u.verified"
            " FROM unnest(%s::bigint[], %s::int[], %s::bigint[]) AS u(id, plots, verified)"
            " WHERE f.id = u.id"
            "   AND (f.plots, f.verified_bytes) IS DISTINCT FROM (u.plots, u.verified)"
            "   AND u.plots = (SELECT count(*) FROM plots p WHERE p.farmer_id = f.id)"
            " RETURNING 1) SELECT count(*) FROM changed",
            (ids, [totals[i][0] for i in ids], [totals[i][1] for i in ids]))
