"""Bodies of the public routes, as 2.2.x wrote them, plus the fields beyond it."""

import json
from typing import TYPE_CHECKING, Any, List, Tuple

from dataserv.identity.addresses import address_to_nodeid

if TYPE_CHECKING:
    from dataserv.storage.store import FarmerRecord


def farmer_dict(record: "FarmerRecord", now: float, uptime: float) -> dict:
    """The farmer JSON object: 2.2.x's four fields first, then ours. ``height`` is
    the credited height, ``claimed_height`` the farmer's last claim."""
    return {
        "btc_addr": record.btc_addr,
        "payout_addr": record.payout_addr,
        "height": record.height,
        "last_seen": max(0, int(now - record.last_seen)),
        "nodeid": address_to_nodeid(record.btc_addr),
        "reg_time": int(record.reg_time),
        "uptime": uptime,
        "bandwidth_upload": record.bandwidth_upload,
        "bandwidth_download": record.bandwidth_download,
        "claimed_height": record.claimed_height,
        "plots": record.plots,
        "verified_bytes": record.verified_bytes,
    }


def farmer_entry(btc_addr: Any, payout_addr: Any, reg_time: Any, credit: Any = 0.0) -> Any:
    """The summariser's entry for a farmer, ready for render_slice: the JSON before
    its height, the JSON between last_seen and uptime, its payout address, its
    registration time (those four never change), and the uptime seconds credited
    in the window (see with_credit). One entry, so that rendering a farmer looks
    up one dict, not three; a tuple of strings and numbers, which the garbage
    collector stops tracking (100 000 lists made its full passes take tens of ms)."""
    return (
        '{"btc_addr": "%s", "payout_addr": "%s", "height": ' % (btc_addr, payout_addr),
        ', "nodeid": "%s", "reg_time": %d, "uptime": ' % (
            address_to_nodeid(btc_addr), int(reg_time)),
        payout_addr,
        reg_time,
        credit,
    )


def with_credit(entry: Any, credit: Any) -> Any:
    """The farmer_entry with other credited seconds."""
    return entry[:4] + (credit,)


def last_seen_text(seconds: Any) -> Any:
    """2.2.x's wording: seconds under a minute, then minutes, then hours."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return "%d second(s)" % seconds
    if seconds < 3600:
        return "%d minute(s)" % (seconds // 60)
    return "%d hour(s)" % (seconds // 3600)


def online_html_entry(record: Any, now: Any) -> Any:
    """One farmer's entry on /api/online (entries are concatenated, no newline)."""
    return "%s |  Last Seen: %s | Height: %d<br/>" % (
        record.payout_addr, last_seen_text(now - record.last_seen), record.height)


def render_slice(activity: list, now: float, farmers: dict, window: float,
                 window_start: float) -> Tuple[str, str, int, int]:
    """The summariser's inner loop: for a slice of online farmers, their
    /api/online/json objects joined with ", ", their /api/online entries, the sum
    of their heights and the sum of their verified bytes.

    ``activity`` rows are (id, credited height, last_seen, bandwidth_upload,
    bandwidth_download, claimed_height, plots, verified_bytes); ``farmers`` maps each
    id to its farmer_entry(...). Gives exactly what json_bytes(farmer_dict(...)),
    online_html_entry and registry.uptime.uptime_percent give (tested), written out
    in one loop because at 100 000 farmers per pass the
    calls cost more than the work.
    """
    objects: List[str] = []
    entries: List[str] = []
    add_object, add_entry = objects.append, entries.append
    height_sum = verified_sum = 0
    for farmer_id, height, last_seen, upload, download, claimed, plots, verified in activity:
        prefix, middle, payout, reg_time, credit = farmers[farmer_id]
        height_sum += height
        verified_sum += verified
        ago = int(now - last_seen)
        if ago < 0:
            ago = 0
        if ago < 60:
            seen = "%d second(s)" % ago
        elif ago < 3600:
            seen = "%d minute(s)" % (ago // 60)
        else:
            seen = "%d hour(s)" % (ago // 3600)
        add_entry("%s |  Last Seen: %s | Height: %d<br/>" % (payout, seen, height))
        elapsed = now - (reg_time if reg_time > window_start else window_start)
        if elapsed <= 0:
            uptime = 100.0
        else:
            current = now - last_seen
            current = 0.0 if current < 0 else (window if current > window else current)
            uptime = round(min(100.0, 100.0 * (credit + current) / elapsed), 3)
        add_object('%s%d, "last_seen": %d%s%r, "bandwidth_upload": %r, '
                   '"bandwidth_download": %r, "claimed_height": %d, "plots": %d, '
                   '"verified_bytes": %d}' % (
                       prefix, height, ago, middle, uptime, upload, download, claimed,
                       plots, verified))
    return ", ".join(objects), "".join(entries), height_sum, verified_sum


def total_tb(total_height: Any, shard_size: Any) -> Any:
    """Terabytes managed, as /api/total reports them: always a float, 2 decimals."""
    return float(round(total_height * shard_size / 1024 ** 4, 2))


def verified_tb(verified_bytes: Any) -> Any:
    """Terabytes proved by plots, in the unit of total_TB (1024**4 bytes), 2 decimals."""
    return float(round(verified_bytes / 1024 ** 4, 2))


def total_dict(now: Any, online_farmers: Any, total_height: Any, shard_size: Any,
               verified_bytes: Any = 0) -> Any:
    """The /api/total object: 2.2.x's three fields, then the verified terabytes."""
    return {
        "id": int(now / 60 / 30),
        "total_TB": total_tb(total_height, shard_size),
        "total_farmers": online_farmers,
        "verified_TB": verified_tb(verified_bytes),
    }


def json_bytes(value: Any) -> Any:
    """Compact UTF-8 JSON."""
    return json.dumps(value, separators=(", ", ": ")).encode("utf-8")
