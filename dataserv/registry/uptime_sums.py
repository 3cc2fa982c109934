"""The uptime seconds credited to online farmers, kept up to date between passes.

Summing 30 days of per-day buckets for 100 000 farmers on every pass would cost
more than the rest of the pass, so the sums are split: the window's days before
today (they change only around midnight) and today's (re-read only for farmers
with a contact since the previous read). :class:`UptimeSums` holds both and knows
which farmers' totals changed since they were last taken.
"""

import datetime
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

from twisted.internet import defer

from dataserv.registry.uptime import day_start, first_uptime_day

# Today's buckets are re-read only for farmers with a contact since the last read,
# less this margin for writes that committed late.
TODAY_MARGIN = 60.0


class UptimeSums:
    """Credited seconds per online farmer over the uptime window."""

    def __init__(self, store: Any, online_seconds: float, uptime_days: int,
                 pause: Callable[[], "defer.Deferred[None]"]) -> None:
        self.store = store
        self.online_seconds = online_seconds
        self.uptime_days = uptime_days
        self._pause = pause
        self.before: Dict[int, float] = {}   # seconds on the window's earlier days
        self._before_key: Optional[Tuple[datetime.date, bool]] = None
        self._before_known: Set[int] = set()  # farmers whose earlier days are summed
        self.today: Dict[int, float] = {}    # seconds credited today
        self._today_key: Optional[datetime.date] = None
        self._today_read_at: Optional[float] = None
        # Farmers whose total changed since taken (all online ones after a full read).
        self._changed: Set[int] = set()
        self._all_changed = False

    def total(self, farmer_id: int) -> float:
        """Seconds credited to a farmer in the window."""
        return self.before.get(farmer_id, 0.0) + self.today.get(farmer_id, 0.0)

    def mark_changed(self, farmer_ids: Iterable[int]) -> None:
        """Have these farmers' totals taken again (e.g. their entries are new)."""
        self._changed.update(farmer_ids)

    def take_changed(self, online_ids: Callable[[], List[int]]) -> List[int]:
        """The farmers whose totals changed since the last call (``online_ids()``
        after a full read), and forget them."""
        ids = online_ids() if self._all_changed else list(self._changed)
        self._changed, self._all_changed = set(), False
        return ids

    @defer.inlineCallbacks
    def refresh_today(self, now: float) -> Any:
        """Re-read today's sums for the farmers with a contact since the previous
        read (all online farmers on a new day)."""
        seen_since = now - self.online_seconds
        today = first_uptime_day(now, 1)
        if today != self._today_key:
            # (On a new day the earlier days are read again for everyone online,
            # and that refreshes every online farmer's total.)
            self.today, self._today_key = {}, today
        elif self._today_read_at is not None:
            seen_since = max(seen_since, self._today_read_at - TODAY_MARGIN)
        changed = yield self.store.online_seconds(
            today, seen_since=seen_since, last_day=today, pause=self._pause)
        self.today.update(changed)
        self._changed.update(changed)
        self._today_read_at = now

    @defer.inlineCallbacks
    def refresh_earlier_days(self, online_ids: Callable[[], List[int]], now: float,
                             new_ids: Callable[[Set[int]], "defer.Deferred[List[int]]"]) -> Any:
        """Keep the sums of the window's days before today.

        They only change when a contact credits the online window after a previous
        contact from before midnight, so they are summed for every online farmer
        when the day changes and once more when the online window has passed into
        the new day; a farmer that comes online later is summed when first seen
        (``new_ids(known)`` finds those among the online ones).
        """
        today = first_uptime_day(now, 1)
        settled = now >= day_start(today) + self.online_seconds
        first_day = first_uptime_day(now, self.uptime_days)
        yesterday = today - datetime.timedelta(days=1)
        if (today, settled) != self._before_key:
            self.before = yield self.store.online_seconds(
                first_day, last_day=yesterday, seen_since=now - self.online_seconds,
                pause=self._pause)
            self._before_known = set(online_ids())
            self._before_key = (today, settled)
            self._all_changed = True
            return
        new = yield new_ids(self._before_known)
        if new:
            sums = yield self.store.online_seconds(
                first_day, last_day=yesterday, farmer_ids=new, pause=self._pause)
            self.before.update(sums)
            self._changed.update(sums)
            self._before_known.update(new)
