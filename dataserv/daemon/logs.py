"""Structured logs: one flat JSON object per line, for the daemon's log and the access log.

``--log-format json`` hands twistd a log observer factory (twistd's own ``--logger``
mechanism), so twistd's ``--logfile``, ``-n`` and SIGUSR1 rotation keep meaning what
they mean for text logs. ``--access-log-format json`` gives the Site a formatter.
"""

import datetime
import json
import sys
from typing import Any, Callable, Dict, List, Mapping, Optional

from twisted.application import service
from twisted.logger import FileLogObserver, ILogObserver, formatEvent
from twisted.python import logfile
from twisted.python.components import Componentized

# Event keys that are the logging system's own bookkeeping, not fields of the message.
_RESERVED = {"log_logger", "log_source", "log_format", "log_io", "log_trace",
             "log_failure", "log_time", "log_level", "log_namespace", "log_flattened",
             "log_legacy", "log_text", "log_system", "message", "format", "isError",
             "system", "time", "why", "failure"}
_PLAIN = (str, int, float, bool, type(None))


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def _plain(value: Any) -> Any:
    """A JSON-friendly form of a field: scalars as they are, anything else as text."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (list, tuple)) and all(isinstance(v, _PLAIN) for v in value):
        return list(value)
    return str(value)


def event_as_json(event: Mapping[str, Any]) -> str:
    """One log event as a line of flat JSON: time, level, namespace, message, then the
    event's own fields (a traceback as ``traceback`` when the event carries one)."""
    level = event.get("log_level")
    line: Dict[str, Any] = {
        "time": _iso(event.get("log_time") or 0.0),
        "level": level.name if level is not None else "info",
        "namespace": event.get("log_namespace", "log_legacy"),
        "message": formatEvent(dict(event)),
    }
    for key, value in event.items():
        if key not in _RESERVED and not key.startswith("_") and key not in line:
            line[key] = _plain(value)
    failure = event.get("log_failure")
    if failure is not None:
        line["traceback"] = failure.getTraceback()
    return json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n"


def json_observer(out: Any) -> Any:
    """A log observer writing :func:`event_as_json` lines to ``out``."""
    return FileLogObserver(out, event_as_json)


def twistd_json_logger(twistd_options: Mapping[str, Any]) -> Callable[[], ILogObserver]:
    """A factory for twistd's ``--logger``: JSON lines to where twistd would have
    written text (stdout with ``-n`` and no ``--logfile`` or ``--logfile -``, else the
    log file, ``twistd.log`` by default, rotated on SIGUSR1 as twistd does)."""

    def make() -> ILogObserver:
        name = twistd_options.get("logfile") or ""
        if name == "-" or (twistd_options.get("nodaemon") and not name):
            return json_observer(sys.stdout)
        log_file = logfile.LogFile.fromFullPath(name or "twistd.log")
        _rotate_on_usr1(log_file)
        return json_observer(log_file)

    return make


class JSONLogging(service.MultiService):
    """The daemon's service, bringing a JSON log observer to the twistd application.

    twistd uses an application's ILogObserver component unless ``--logger`` is given,
    so the observer is set on the application when the daemon joins it.
    """

    def __init__(self, daemon: Any, observer_factory: Callable[[], Any]) -> None:
        super().__init__()
        self.daemon = daemon
        self.observer_factory = observer_factory
        daemon.setServiceParent(self)

    def setServiceParent(self, parent: Any) -> None:  # noqa: N802 (Twisted's name)
        if isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self.observer_factory())
        super().setServiceParent(parent)


def _rotate_on_usr1(log_file: Any) -> None:
    import signal

    if signal.getsignal(signal.SIGUSR1) in (None, signal.SIG_DFL):
        def rotate(signum: int, frame: Any) -> None:
            from twisted.internet import reactor  # a signal handler: an entry point

            reactor.callFromThread(log_file.rotate)

        signal.signal(signal.SIGUSR1, rotate)


_quote = json.encoder.encode_basestring  # C-accelerated: a JSON string with its quotes


def _text_or_null(value: Optional[bytes]) -> str:
    if value is None:
        return "null"
    return _quote(value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value))


def json_access_formatter(clock: Any) -> Callable[[str, Any], str]:
    """An access log formatter (twisted.web's IAccessLogFormatter) that writes one
    JSON object per request: time, client, method, path, protocol, status, bytes,
    referrer, user agent and, when known, the duration in milliseconds.

    Built by hand rather than with json.dumps (and the time's text kept for the
    second it is good for): it runs once per request on the hot path.
    """
    second: List[Any] = [None, ""]  # whole second -> its ISO text without the fraction

    def format_request(timestamp: str, request: Any) -> str:
        now = clock.seconds()
        whole = int(now)
        if whole != second[0]:
            second[0], second[1] = whole, _iso(whole)[:-5]
        address = request.getClientAddress()
        started: Optional[float] = getattr(request, "started", None)
        return (
            '{"time":"%s.%03dZ","client":%s,"method":%s,"path":%s,"protocol":%s,'
            '"status":%d,"bytes":%d,"referrer":%s,"user_agent":%s%s}' % (
                second[1], int((now - whole) * 1000),
                _text_or_null(getattr(address, "host", None)),
                _text_or_null(request.method), _text_or_null(request.uri),
                _text_or_null(request.clientproto), request.code, request.sentLength or 0,
                _text_or_null(request.getHeader(b"referer")),
                _text_or_null(request.getHeader(b"user-agent")),
                "" if started is None else ',"duration_ms":%.3f' % ((now - started) * 1000.0)))

    return format_request
