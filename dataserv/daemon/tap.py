"""`twistd dataserv`: the command-line options and makeService()."""

from typing import Any

from twisted.python import usage

from dataserv import __version__
from dataserv.daemon.config import OPTIONS, ConfigError, Settings
from dataserv.storage.pgcluster import ClusterError


def _help(option: Any) -> Any:
    default = option.default
    if option.name == "data-dir":
        shown = ""  # the help text already says it
    elif option.flag:
        shown = ""
    else:
        shown = " [default: %s]" % (default if default != "" else "none",)
    return "%s%s (env %s)" % (option.help, shown, option.environment)


class Options(usage.Options):
    """Every flag of the daemon; each also read from DATASERV_<NAME> (the flag wins)."""

    synopsis = "[options]"
    longdesc = ("Run the dataserv farmer registry. With no --database, a private "
                "PostgreSQL cluster is started in --data-dir.")
    optParameters = [[o.name, None, None, _help(o)] for o in OPTIONS if not o.flag]
    optFlags = [[o.name, None, _help(o)] for o in OPTIONS if o.flag]

    def __init__(self, environ: Any = None) -> None:
        super().__init__()
        self.environ = environ
        self.settings: Any = None

    def parseOptions(self, options: Any = None) -> None:  # noqa: N802 (Twisted's name)
        """As usage.Options does, but an unknown flag, a flag without its value or a
        stray argument is one line too (twistd would print the whole --help first)."""
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            raise SystemExit("dataserv: error: %s (see twistd dataserv --help)" % (e,))

    def opt_version(self) -> None:  # noqa: N802 (Twisted's name)
        """Print dataserv's version and exit."""
        print("dataserv %s" % (__version__,))
        raise SystemExit(0)

    def postOptions(self) -> None:  # noqa: N802 (Twisted's name)
        """Validate everything now, before anything listens: one clear line and exit."""
        try:
            self.settings = Settings.from_mapping(
                {o.name: self[o.name] for o in OPTIONS}, environ=self.environ)
        except ConfigError as e:
            raise SystemExit("dataserv: error: %s" % (e,))


def makeService(options: Options, reactor: object = None) -> Any:  # noqa: N802
    """The daemon's MultiService for validated options."""
    if reactor is None:
        from twisted.internet import reactor  # only entry points touch the global reactor
    from dataserv.daemon.listening import CannotListen
    from dataserv.daemon.service import Dataserv

    try:
        daemon = Dataserv(options.settings, reactor)
        daemon.take_port()
    except (ClusterError, CannotListen) as e:
        raise SystemExit("dataserv: error: %s" % (e,))
    twistd = getattr(options, "parent", None)
    if options.settings.log_format == "json" and twistd is not None:
        from dataserv.daemon.logs import JSONLogging, twistd_json_logger

        return JSONLogging(daemon, twistd_json_logger(twistd))
    return daemon
