"""Uptime arithmetic: the window of days reported and the percentage online in it.

The crediting itself happens in PostgreSQL when a contact is recorded (the
``record_contacts`` function, see docs/architecture.md "Where each rule lives"):
each written contact credits the time since the previous contact, at most the
online window, to per-UTC-day buckets in ``uptime_days``. What is here turns
those credited seconds into the percentage the API reports.
"""

import datetime
from typing import Protocol

DAY = 86400


class HasContactTimes(Protocol):
    """What the uptime of a farmer is worked out from."""

    reg_time: float
    last_seen: float


def day_start(day: datetime.date) -> int:
    """Unix seconds at 00:00 UTC of a date."""
    return (day - datetime.date(1970, 1, 1)).days * DAY


def first_uptime_day(now: float, days: int) -> datetime.date:
    """The oldest UTC day inside a ``days``-day uptime window ending at now."""
    today = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).date()
    return today - datetime.timedelta(days=days - 1)


def uptime_percent(recorded_seconds: float, record: HasContactTimes, now: float,
                   online_window: float, days: int) -> float:
    """Percent of the window the farmer was online, 3 decimals.

    ``recorded_seconds`` are the seconds credited by written contacts; the time since
    the last contact counts too, up to the online window, since the farmer is online
    until that runs out.
    """
    window_start = day_start(first_uptime_day(now, days))
    return uptime_since(recorded_seconds, record, now, online_window, window_start)


def uptime_since(recorded_seconds: float, record: HasContactTimes, now: float,
                 online_window: float, window_start: float) -> float:
    """uptime_percent with the window's first midnight already worked out (the
    summariser does that once per pass, not once per farmer)."""
    elapsed = now - max(record.reg_time, window_start)
    if elapsed <= 0:
        return 100.0
    current = min(max(0.0, now - record.last_seen), online_window)
    return round(min(100.0, 100.0 * (recorded_seconds + current) / elapsed), 3)
