"""Every operator setting in one place: names, defaults, parsing and validation."""

import os
from dataclasses import dataclass, field

from twisted.internet.endpoints import serverFromString


class ConfigError(ValueError):
    """A setting has a value the daemon cannot run with."""


# The server's own Bitcoin address when the operator gives none. Farmers sign
# every request for this address, so a production server should set its own.
DEFAULT_ADDRESS = "15uC1tTcVsN3K4wycQ8Bj7m1UqL1GgtX8t"


def default_data_dir(euid=None):
    """Where the embedded PostgreSQL lives: a system path for root, else ./dataserv-data."""
    if euid is None:
        euid = os.geteuid()
    return "/var/lib/dataserv" if euid == 0 else "./dataserv-data"


def _integer(text, minimum, maximum=None):
    try:
        value = int(str(text).strip(), 10)
    except ValueError:
        raise ConfigError("must be a whole number, not %r" % (text,))
    if value < minimum:
        raise ConfigError("must be at least %d, not %d" % (minimum, value))
    if maximum is not None and value > maximum:
        raise ConfigError("must be at most %d, not %d" % (maximum, value))
    return value


def _number(text, minimum, maximum=None):
    try:
        value = float(str(text).strip())
    except ValueError:
        raise ConfigError("must be a number, not %r" % (text,))
    if value != value or value < minimum:
        raise ConfigError("must be at least %g, not %r" % (minimum, text))
    if maximum is not None and value > maximum:
        raise ConfigError("must be at most %g, not %r" % (maximum, text))
    return value


def _endpoint(text):
    text = str(text).strip()
    try:
        # Builds the endpoint object only; nothing touches a reactor until listen().
        serverFromString(None, text)
    except Exception as e:
        raise ConfigError("is not a server endpoint such as tcp:5000 (%s)" % (e,))
    return text


def _address(text):
    from dataserv.identity.addresses import InvalidAddress, parse_farmer_id

    text = str(text).strip()
    if len(text) == 40:  # a nodeid is not an address a farmer can sign for
        raise ConfigError("must be a Bitcoin P2PKH address, not %r" % (text,))
    try:
        return parse_farmer_id(text)
    except InvalidAddress:
        raise ConfigError("must be a Bitcoin P2PKH address, not %r" % (text,))


def _proxies(text):
    import ipaddress

    networks = []
    for part in str(text).replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ConfigError("must be IP addresses or networks, not %r" % (part,))
    return tuple(networks)


def _text(text):
    return str(text).strip()


def _flag(text):
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
    parse: object
    help: str
    flag: bool = False

    @property
    def attribute(self):
        return self.name.replace("-", "_")

    @property
    def environment(self):
        return "DATASERV_" + self.name.replace("-", "_").upper()


OPTIONS = (
    Option("listen", "tcp:5000", _endpoint, "endpoint to listen on (twisted endpoint string)"),
    Option("database", "", _text,
           "libpq DSN or postgresql:// URL; empty = embedded PostgreSQL in --data-dir"),
    Option("data-dir", None, _text,
           "embedded PostgreSQL directory [default: ./dataserv-data, /var/lib/dataserv as root]"),
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
    Option("access-log", "", _text, "file for the HTTP access log (empty = none)"),
    Option("reuse-port", False, _flag,
           "listen with SO_REUSEPORT so several daemons share the port (tcp only); "
           "bound at start, listening once the first summary is built", flag=True),
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
    Option("skip-authentication", False, _flag,
           "accept requests without signatures (testing only; warns on every start)", flag=True),
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
    access_log: str = _DEFAULTS["access_log"]
    reuse_port: bool = _DEFAULTS["reuse_port"]
    challenge_interval: float = _DEFAULTS["challenge_interval"]
    challenges_per_round: int = _DEFAULTS["challenges_per_round"]
    proof_window: float = _DEFAULTS["proof_window"]
    score_window: float = _DEFAULTS["score_window"]
    min_k: int = _DEFAULTS["min_k"]
    skip_authentication: bool = _DEFAULTS["skip_authentication"]
    no_limits: bool = _DEFAULTS["no_limits"]

    @property
    def online_seconds(self):
        """The online window in seconds."""
        return self.online_time * 60

    @classmethod
    def from_mapping(cls, values, environ=None):
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
