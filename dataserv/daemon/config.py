"""Every operator setting in one place: names, defaults, parsing and validation."""

import os
from dataclasses import dataclass, field
from typing import Any, Callable

from twisted.internet.endpoints import serverFromString


class ConfigError(ValueError):
    """A setting has a value the daemon cannot run with."""


# The server's own Bitcoin address when the operator gives none. Farmers sign
# every request for this address, so a production server should set its own.
DEFAULT_ADDRESS = "15uC1tTcVsN3K4wycQ8Bj7m1UqL1GgtX8t"


def default_data_dir(euid: Any = None) -> Any:
    """Where the embedded PostgreSQL lives: a system path for root, else ./dataserv-data."""
    if euid is None:
        euid = os.geteuid()
    return "/var/lib/dataserv" if euid == 0 else "./dataserv-data"


def _integer(text: Any, minimum: Any, maximum: Any = None) -> Any:
    try:
        value = int(str(text).strip(), 10)
    except ValueError:
        raise ConfigError("must be a whole number, not %r" % (text,))
    if value < minimum:
        raise ConfigError("must be at least %d, not %d" % (minimum, value))
    if maximum is not None and value > maximum:
        raise ConfigError("must be at most %d, not %d" % (maximum, value))
    return value


def _number(text: Any, minimum: Any, maximum: Any = None) -> Any:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise ConfigError("must be a number, not %r" % (text,))
    if value != value or value < minimum:
        raise ConfigError("must be at least %g, not %r" % (minimum, text))
    if maximum is not None and value > maximum:
        raise ConfigError("must be at most %g, not %r" % (maximum, text))
    return value


def _endpoint(text: Any) -> Any:
    text = str(text).strip()
    try:
        # Builds the endpoint object only; nothing touches a reactor until listen().
        serverFromString(None, text)
    except Exception as e:
        raise ConfigError("is not a server endpoint such as tcp:5000 (%s)" % (e,))
    return text


def _address(text: Any) -> Any:
    from dataserv.identity.addresses import InvalidAddress, parse_farmer_id

    text = str(text).strip()
    if len(text) == 40:  # a nodeid is not an address a farmer can sign for
        raise ConfigError("must be a Bitcoin P2PKH address, not %r" % (text,))
    try:
        return parse_farmer_id(text)
    except InvalidAddress:
        raise ConfigError("must be a Bitcoin P2PKH address, not %r" % (text,))


def _proxies(text: Any) -> Any:
    import ipaddress

    networks = []
    for part in str(text).replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ConfigError("must be IP addresses or networks, not %r" % (part,))
    return tuple(networks)


def _text(text: Any) -> Any:
    return str(text).strip()


def _dsn(text: Any) -> Any:
    text = str(text).strip()
    if not text:
        return text  # the embedded PostgreSQL
    from psycopg2 import ProgrammingError
    from psycopg2.extensions import parse_dsn

    try:
        parse_dsn(text)  # syntax only: whether the server answers is checked at start
    except ProgrammingError as e:
        reason = str(e).strip().splitlines()[0]
        if reason.startswith("invalid dsn: "):
            reason = reason[len("invalid dsn: "):]
        if "://" in text:  # libpq may quote the whole URL, password included
            reason = reason.replace(text, "...")
        raise ConfigError("is not a libpq DSN (key=value ...) or postgresql:// URL: %s"
                          % (reason,))
    return text


def _log_file(text: Any) -> Any:
    """A file the daemon can append to: its directory exists and is writable."""
    text = str(text).strip()
    if not text:
        return text
    path = os.path.abspath(text)
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise ConfigError("%s: directory %s does not exist (create it with mkdir -p)"
                          % (text, directory))
    if os.path.isdir(path):
        raise ConfigError("%s is a directory, not a file" % (text,))
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            raise ConfigError("%s: no permission to write to it" % (text,))
    elif not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError("%s: no permission to create files in %s" % (text, directory))
    return text


def _choice(*choices: Any) -> Any:
    def parse(text: Any) -> Any:
        value = str(text).strip().lower()
        if value not in choices:
            raise ConfigError("must be one of %s, not %r" % (", ".join(choices), text))
        return value
    return parse


def _flag(text: Any) -> Any:
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("", "0", "false", "no", "off"):
        return False
    raise ConfigError("must be true or false, not %r" % (text,))


@dataclass(frozen=True)
class Option:
    """One setting: flag name, default (as text), parser and help."""

    name: str
    default: object
    parse: Callable[[Any], Any]
    help: str
    flag: bool = False

    @property
    def attribute(self) -> Any:
        return self.name.replace("-", "_")

    @property
    def environment(self) -> Any:
        return "DATASERV_" + self.name.replace("-", "_").upper()


OPTIONS = (
    Option("listen", "tcp:5000", _endpoint, "endpoint to listen on (twisted endpoint string)"),
    Option("database", "", _dsn,
           "libpq DSN or postgresql:// URL; empty = embedded PostgreSQL in --data-dir"),
    Option("data-dir", None, _text,
           "embedded PostgreSQL directory; created if missing (its parent must exist); one "
           "daemon at a time [default: ./dataserv-data, /var/lib/dataserv as root]"),
    Option("address", DEFAULT_ADDRESS, _address, "this server's Bitcoin address (farmers sign for it)"),
    Option("online-time", "15", lambda v: _integer(v, 1, 10080),
           "minutes since last contact that a farmer counts as online"),
    Option("max-ping", "60", lambda v: _integer(v, 0, 86400),
           "seconds between pings that are written; sooner pings answer 200 and write nothing"),
    Option("auth-timeout", "30", lambda v: _integer(v, 1, 86400),
           "seconds a signed Date header may differ from the server's clock"),
    Option("height-limit", "200000", lambda v: _integer(v, 1),
           "heights at or above this are refused with 413"),
    Option("shard-size", "134217728", lambda v: _integer(v, 1), "bytes per unit of height"),
    Option("summary-interval", "5", lambda v: _number(v, 0.1, 3600),
           "seconds between rebuilds of the online list and totals"),
    Option("history-interval", "300", lambda v: _number(v, 1),
           "seconds between rows appended to the totals history"),
    Option("uptime-days", "30", lambda v: _integer(v, 1, 3650),
           "days of uptime that are reported and kept"),
    Option("trusted-proxies", "", _proxies,
           "peers (IPs/networks) whose X-Forwarded-For is believed"),
    Option("pool-size", "4", lambda v: _integer(v, 1, 100), "PostgreSQL connections"),
    Option("db-timeout", "5", lambda v: _number(v, 0.1, 3600),
           "seconds a database call may take before it is abandoned and answered 503"),
    Option("access-log", "", _log_file,
           "file for the HTTP access log (combined format; its directory must exist), "
           "written out at least every second and reopened on SIGHUP"),
    Option("log-format", "text", _choice("text", "json"),
           "daemon log: text, or json (one object per line, to twistd's --logfile)"),
    Option("access-log-format", "combined", _choice("combined", "json"),
           "access log lines: combined (Apache), or json (one object per line)"),
    Option("reuse-port", False, _flag,
           "listen with SO_REUSEPORT so several daemons share the port (tcp only); "
           "bound at start, listening once the first summary is built", flag=True),
    Option("backlog", "1024", lambda v: _integer(v, 1, 65535),
           "listen queue length, used when --listen sets no backlog= (the kernel caps it at "
           "net.core.somaxconn)"),
    Option("rate-limit", "20", lambda v: _number(v, 0),
           "requests per second each client IP (IPv6: each /64) may sustain; 429 beyond "
           "(0 = off)"),
    Option("rate-burst", "100", lambda v: _integer(v, 1),
           "requests a client IP may send at once before --rate-limit applies"),
    Option("max-connections-per-ip", "64", lambda v: _integer(v, 0),
           "open connections per client IP (IPv6: per /64); more are closed at once "
           "(0 = off; trusted proxies are exempt)"),
    Option("max-body", "65536", lambda v: _integer(v, 0),
           "bytes of request body; larger is 413 before it is read (0 = off)"),
    Option("head-timeout", "10", lambda v: _number(v, 0),
           "seconds from a request's first byte until its last (head and body) (0 = off)"),
    Option("idle-timeout", "15", lambda v: _number(v, 0),
           "seconds a connection may wait for its next request (0 = off)"),
    Option("send-timeout", "60", lambda v: _number(v, 0),
           "seconds a client has to take a whole response; then it is dropped (0 = off)"),
    Option("metrics-allow", "127.0.0.0/8 ::1", _proxies,
           "networks that may read /metrics (others get 403; empty = nobody)"),
    Option("challenge-interval", "60", lambda v: _number(v, 1, 86400),
           "seconds between rounds of proof-of-space challenges (and plot scores)"),
    Option("challenges-per-round", "4", lambda v: _integer(v, 1, 64),
           "challenges drawn for every registered plot in each round"),
    Option("proof-window", "30", lambda v: _number(v, 1, 3600),
           "seconds after its first fetch that a challenge's answer counts"),
    Option("score-window", "3600", lambda v: _number(v, 1, 30 * 86400),
           "seconds of challenges a plot's verified fraction is worked out over"),
    Option("min-k", "29", lambda v: _integer(v, 18, 50),
           "smallest plot size (chiapos k) accepted: a plot must take far longer than "
           "--proof-window to build, even with a fast plotter"),
    Option("max-plots", "1000", lambda v: _integer(v, 0),
           "plots one farmer may have registered; more are refused with 403 (0 = no "
           "limit)"),
    Option("skip-authentication", False, _flag,
           "accept requests without signatures (testing only; warns on every start)", flag=True),
    Option("max-fill-rate", "1073741824", lambda v: _integer(v, 0),
           "bytes per second by which a claimed height is credited (in shards of "
           "--shard-size; the rest is credited as time passes); 0 = credit claims as they are"),
    Option("audit-limit", "12", lambda v: _integer(v, 0),
           "audits per farmer per hour (a burst of as many); 0 = no limit"),
    Option("bandwidth-limit", "60", lambda v: _integer(v, 0),
           "bandwidth reports per farmer per hour (a burst of as many); 0 = no limit"),
    Option("registrations-per-network", "10", lambda v: _integer(v, 0),
           "new farmers per hour from one network (/24 for IPv4, /64 for IPv6), "
           "counted across daemons; 0 = no limit"),
    Option("no-limits", False, _flag,
           "turn off every per-IP, per-network and per-farmer limit and credit heights as "
           "claimed (testing and benchmarks only; warns on every start)", flag=True),
)


# Every default once, parsed as the operator would have typed it.
_DEFAULTS = {option.attribute: option.parse(option.default)
             for option in OPTIONS if option.default is not None}


@dataclass(frozen=True)
class Settings:
    """Validated settings. Build with from_mapping(); defaults live in OPTIONS."""

    listen: str = _DEFAULTS["listen"]
    database: str = _DEFAULTS["database"]
    data_dir: str = field(default_factory=default_data_dir)
    address: str = _DEFAULTS["address"]
    online_time: int = _DEFAULTS["online_time"]
    max_ping: int = _DEFAULTS["max_ping"]
    auth_timeout: int = _DEFAULTS["auth_timeout"]
    height_limit: int = _DEFAULTS["height_limit"]
    shard_size: int = _DEFAULTS["shard_size"]
    summary_interval: float = _DEFAULTS["summary_interval"]
    history_interval: float = _DEFAULTS["history_interval"]
    uptime_days: int = _DEFAULTS["uptime_days"]
    trusted_proxies: tuple = _DEFAULTS["trusted_proxies"]
    pool_size: int = _DEFAULTS["pool_size"]
    db_timeout: float = _DEFAULTS["db_timeout"]
    access_log: str = _DEFAULTS["access_log"]
    log_format: str = _DEFAULTS["log_format"]
    access_log_format: str = _DEFAULTS["access_log_format"]
    reuse_port: bool = _DEFAULTS["reuse_port"]
    backlog: int = _DEFAULTS["backlog"]
    rate_limit: float = _DEFAULTS["rate_limit"]
    rate_burst: int = _DEFAULTS["rate_burst"]
    max_connections_per_ip: int = _DEFAULTS["max_connections_per_ip"]
    max_body: int = _DEFAULTS["max_body"]
    head_timeout: float = _DEFAULTS["head_timeout"]
    idle_timeout: float = _DEFAULTS["idle_timeout"]
    send_timeout: float = _DEFAULTS["send_timeout"]
    metrics_allow: tuple = _DEFAULTS["metrics_allow"]
    challenge_interval: float = _DEFAULTS["challenge_interval"]
    challenges_per_round: int = _DEFAULTS["challenges_per_round"]
    proof_window: float = _DEFAULTS["proof_window"]
    score_window: float = _DEFAULTS["score_window"]
    min_k: int = _DEFAULTS["min_k"]
    max_plots: int = _DEFAULTS["max_plots"]
    skip_authentication: bool = _DEFAULTS["skip_authentication"]
    max_fill_rate: int = _DEFAULTS["max_fill_rate"]
    audit_limit: int = _DEFAULTS["audit_limit"]
    bandwidth_limit: int = _DEFAULTS["bandwidth_limit"]
    registrations_per_network: int = _DEFAULTS["registrations_per_network"]
    no_limits: bool = _DEFAULTS["no_limits"]

    @property
    def online_seconds(self) -> Any:
        """The online window in seconds."""
        return self.online_time * 60

    @classmethod
    def from_mapping(cls, values: Any, environ: Any = None) -> Any:
        """Parse raw values (flag wins, then DATASERV_* from environ, then default)."""
        if environ is None:
            environ = os.environ
        parsed = {}
        for option in OPTIONS:
            raw = values.get(option.name)
            source = "--" + option.name
            # usage.Options leaves an absent flag as 0, not False: fall back on either.
            if raw is None or (option.flag and not raw):
                raw = environ.get(option.environment)
                source = option.environment
            if raw is None:
                if option.default is None:
                    continue
                raw = option.default
            try:
                parsed[option.attribute] = option.parse(raw)
            except ConfigError as e:
                raise ConfigError("%s %s" % (source, e))
        if not parsed.get("data_dir"):
            parsed.pop("data_dir", None)
        if parsed.get("reuse_port"):
            from dataserv.daemon.listening import ReusePortError, parse_tcp

            try:
                parse_tcp(parsed["listen"])
            except ReusePortError as e:
                raise ConfigError(str(e))
        return cls(**parsed)
