"""The public lists and totals, pre-rendered once per summary pass.

The summariser (dataserv.registry.summary) decides who is online and what each
farmer has been credited; this module turns that into the bytes the routes send,
so a dashboard poll never touches the database. Large lists are rendered a slice
at a time with a pause between slices, and the gzip copy is made in a worker
thread while the slices are rendered; the pieces are never joined (see
dataserv.web.body and dataserv.web.gzipping).
"""

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Tuple

from twisted.internet import defer

from dataserv.registry.uptime import day_start, first_uptime_day
from dataserv.web import render
from dataserv.web.body import Body
from dataserv.web.gzipping import BackgroundGzip

# Farmers rendered between two pauses of the reactor.
SLICE = 1000
# zlib level for the gzip copy of /api/online/json. Measured on a 28.7 MB list
# (100 000 farmers): level 6 took 0.41 s for 6.66 MB, level 4 0.26 s for 6.83 MB.
GZIP_LEVEL = 4

ActivityRow = Tuple[int, int, float, float, float, int, int]
Pause = Callable[[], "defer.Deferred[None]"]
InThread = Callable[..., "defer.Deferred[Any]"]


@dataclass(frozen=True)
class Snapshot:
    """One pass's view of the online farmers, with the bodies pre-rendered."""

    built_at: float
    online_farmers: int
    total_height: int
    total_tb: float
    online_html: Body
    online_json: Body
    online_json_gzip: Body
    total_json: bytes
    verified_bytes: int = 0
    verified_tb: float = 0.0


class SnapshotRenderer:
    """Renders the summariser's view into a :class:`Snapshot`.

    The summariser keeps one opaque entry per farmer, made by :meth:`entry` when it
    first sees the farmer and updated with :meth:`with_credit`; the entry holds the
    parts of the farmer's JSON that never change, so a pass renders only what
    moved.
    """

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    # The entry helpers are render's: one tuple per farmer (see render.farmer_entry).
    entry = staticmethod(render.farmer_entry)
    with_credit = staticmethod(render.with_credit)

    @defer.inlineCallbacks
    def build(self, activity: List[ActivityRow], now: float, entries: Dict[int, Any],
              pause: Pause, in_thread: InThread) -> Any:
        """A Deferred of the Snapshot of ``activity`` (rows of online farmers, in list
        order), which is emptied as it is rendered: the rows are freed a slice at a
        time, since freeing 100 000 of them at the end of the pass in one go held the
        reactor for tens of milliseconds."""
        settings = self.settings
        window = settings.online_seconds
        window_start = day_start(first_uptime_day(now, settings.uptime_days))
        gzip = BackgroundGzip(GZIP_LEVEL, in_thread)
        json_parts, html_parts = [b'{"farmers": ['], []
        gzip.feed(json_parts[0])
        total_height = verified_bytes = 0
        count = len(activity)
        first = True
        while activity:
            if not first:
                yield pause()
            chunk = activity[:SLICE]
            del activity[:SLICE]
            objects, html, heights, verified = render.render_slice(
                chunk, now, entries, window, window_start)
            del chunk
            total_height += heights
            verified_bytes += verified
            piece = (("" if first else ", ") + objects).encode("utf-8")
            json_parts.append(piece)
            gzip.feed(piece)
            html_parts.append(html.encode("utf-8"))
            first = False
        json_parts.append(b"]}")
        gzip.feed(json_parts[-1])
        online_json_gzip = yield gzip.finish()
        total = render.total_dict(now, count, total_height, settings.shard_size,
                                  verified_bytes)
        return Snapshot(
            built_at=now,
            online_farmers=count,
            total_height=total_height,
            total_tb=total["total_TB"],
            online_html=Body(html_parts),
            online_json=Body(json_parts),
            online_json_gzip=online_json_gzip,
            total_json=render.json_bytes(total),
            verified_bytes=verified_bytes,
            verified_tb=total["verified_TB"],
        )

