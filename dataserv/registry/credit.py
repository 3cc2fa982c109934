"""The credited-height rule: a claimed height is credited no faster than a disk fills.

A farmer claims a height (shards stored); the registry credits it, and totals and
the public lists count what is credited. Above the farmer's previous credited
height, the credited height may rise by at most ``--max-fill-rate`` bytes per
second (in shards of ``--shard-size``) times the seconds since that credit; the
rest is credited as time passes, the credited height growing toward the last claim
at that rate. A claim at or below the credited height is credited at once (a
farmer that deleted data drops at once).

It is stored as (credited height, when it was credited, last claim), and "as time
passes" needs no background job: every reader works out the credited height at
its own "now". That is done in PostgreSQL, for speed (the summary orders and
totals 100 000 farmers by it): the SQL function ``credited_height`` (schema 0004)
is the rule, and ``set_height``, the summary's read and a farmer's status all go
through it. This module gives the rule its name and its one parameter.
"""

from typing import Any, Optional


def fill_rate(settings: Any) -> Optional[float]:
    """Shards per second by which a claim is credited, or None to credit claims as
    they are (``--max-fill-rate 0`` or ``--no-limits``)."""
    if settings.no_limits or not settings.max_fill_rate:
        return None
    return settings.max_fill_rate / settings.shard_size
