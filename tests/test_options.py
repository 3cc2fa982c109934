"""`twistd dataserv` options: defaults, DATASERV_* fallbacks, validation, the plugin."""

import ipaddress
import os

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase

from dataserv.daemon import config
from dataserv.daemon import tap

ADDRESS = "1F3sAm6ZtwLAUnj7d38pGFxtP3RVEvtsbV"
NODEID = "9a1c78a507689f6f54b847ad1cef1e614ee23f1e"

# option name -> (expected default, a valid raw value, what that value parses to)
EXPECTED = {
    "listen": ("tcp:5000", "tcp:8080:interface=127.0.0.1", "tcp:8080:interface=127.0.0.1"),
    "database": ("", "host=/tmp dbname=x", "host=/tmp dbname=x"),
    "address": (config.DEFAULT_ADDRESS, ADDRESS, ADDRESS),
    "online-time": (15, "5", 5),
    "max-ping": (60, "0", 0),
    "auth-timeout": (30, "20", 20),
    "height-limit": (200000, "1000", 1000),
    "shard-size": (134217728, "1024", 1024),
    "summary-interval": (5.0, "0.5", 0.5),
    "history-interval": (300.0, "60", 60.0),
    "uptime-days": (30, "7", 7),
    "trusted-proxies": ((), "10.0.0.1, 192.168.0.0/16",
                        (ipaddress.ip_network("10.0.0.1/32"),
                         ipaddress.ip_network("192.168.0.0/16"))),
    "pool-size": (4, "9", 9),
    "db-timeout": (5.0, "2.5", 2.5),
    "access-log": ("", "/tmp/access.log", "/tmp/access.log"),
    "log-format": ("text", "json", "json"),
    "access-log-format": ("combined", "JSON", "json"),
    "data-dir": (None, "/srv/dataserv", "/srv/dataserv"),
    "max-fill-rate": (1073741824, "0", 0),
    "audit-limit": (12, "3", 3),
    "bandwidth-limit": (60, "0", 0),
    "registrations-per-network": (10, "250", 250),
    "backlog": (1024, "4096", 4096),
    "rate-limit": (20.0, "0", 0.0),
    "rate-burst": (100, "10", 10),
    "max-connections-per-ip": (64, "0", 0),
    "max-body": (65536, "1024", 1024),
    "head-timeout": (10.0, "2.5", 2.5),
    "idle-timeout": (15.0, "0", 0.0),
    "send-timeout": (60.0, "30", 30.0),
    "metrics-allow": ((ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")),
                      "10.1.0.0/16", (ipaddress.ip_network("10.1.0.0/16"),)),
    "challenge-interval": (60.0, "30", 30.0),
    "challenges-per-round": (4, "8", 8),
    "proof-window": (30.0, "20", 20.0),
    "score-window": (3600.0, "600", 600.0),
    "min-k": (29, "32", 32),
    "max-plots": (1000, "50", 50),
}

BOOLEAN_FLAGS = [o.name for o in config.OPTIONS if o.flag]


def _attribute(name):
    return name.replace("-", "_")


def _environment(name):
    return "DATASERV_" + _attribute(name).upper()


def parse(args=(), environ=None):
    """Settings parsed from a command line and an environment (empty by default)."""
    options = tap.Options(environ=dict(environ or {}))
    options.parseOptions(list(args))
    return options.settings


class ParsingTestsMixin:
    """Helpers shared by the option tests."""

    def assertRejected(self, args=(), environ=None, names=None):  # noqa: N802
        """Parsing stops with SystemExit: one line, 'dataserv: error:', naming ``names``."""
        with self.assertRaises(SystemExit) as caught:
            parse(args, environ)
        message = caught.exception.code
        self.assertIsInstance(message, str)
        self.assertNotIn("\n", message)
        self.assertTrue(message.startswith("dataserv: error: "), message)
        self.assertIn(names, message)
        return message


class DefaultTests(SynchronousTestCase):
    """With no flags and an empty environment every setting has its documented default."""

    def test_every_option_is_covered(self):
        self.assertEqual(set(EXPECTED) | set(BOOLEAN_FLAGS),
                         {o.name for o in config.OPTIONS})

    def test_defaults(self):
        settings = parse()
        for name, (default, _, _) in EXPECTED.items():
            if name == "data-dir":
                continue
            self.assertEqual(getattr(settings, _attribute(name)), default, name)
        for name in BOOLEAN_FLAGS:
            self.assertIs(getattr(settings, _attribute(name)), False, name)

    def test_settings_defaults_are_the_options_defaults(self):
        # Settings() in code and no flags on the command line mean the same daemon.
        self.assertEqual(config.Settings(), config.Settings.from_mapping({}, environ={}))

    def test_online_seconds(self):
        self.assertEqual(parse(["--online-time", "2"]).online_seconds, 120)

    def test_data_dir_default_for_root(self):
        self.assertEqual(config.default_data_dir(0), "/var/lib/dataserv")

    def test_data_dir_default_for_user(self):
        self.assertEqual(config.default_data_dir(1000), "./dataserv-data")

    def test_data_dir_default_follows_euid(self):
        self.patch(os, "geteuid", lambda: 0)
        self.assertEqual(parse().data_dir, "/var/lib/dataserv")
        self.patch(os, "geteuid", lambda: 1000)
        self.assertEqual(parse().data_dir, "./dataserv-data")


class EnvironmentTests(SynchronousTestCase):
    """Each setting is read from DATASERV_<NAME>; the flag wins over it."""

    def test_each_from_environment(self):
        for name, (_, raw, value) in EXPECTED.items():
            settings = parse(environ={_environment(name): raw})
            self.assertEqual(getattr(settings, _attribute(name)), value, name)

    def test_each_from_flag(self):
        for name, (_, raw, value) in EXPECTED.items():
            settings = parse(["--" + name, raw])
            self.assertEqual(getattr(settings, _attribute(name)), value, name)

    def test_flag_beats_environment(self):
        settings = parse(["--max-ping", "7", "--listen", "tcp:7000"],
                         {"DATASERV_MAX_PING": "9", "DATASERV_LISTEN": "tcp:9000"})
        self.assertEqual((settings.max_ping, settings.listen), (7, "tcp:7000"))

    def test_flag_beats_invalid_environment(self):
        self.assertEqual(parse(["--max-ping", "5"], {"DATASERV_MAX_PING": "abc"}).max_ping, 5)

    def test_environment_is_the_given_mapping(self):
        # Options(environ=...) must not fall back to the process environment.
        self.patch(os, "environ", dict(os.environ, DATASERV_MAX_PING="11"))
        self.assertEqual(parse().max_ping, 60)


class FlagTests(SynchronousTestCase):
    """--skip-authentication (a flag without a value) from the command line and env."""

    def test_flag(self):
        self.assertIs(parse(["--skip-authentication"]).skip_authentication, True)

    def test_environment_true(self):
        for raw in ("true", "1", "yes", "on", "TRUE"):
            settings = parse(environ={"DATASERV_SKIP_AUTHENTICATION": raw})
            self.assertIs(settings.skip_authentication, True, raw)

    def test_environment_false(self):
        for raw in ("false", "0", "no", "off", ""):
            settings = parse(environ={"DATASERV_SKIP_AUTHENTICATION": raw})
            self.assertIs(settings.skip_authentication, False, raw)

    def test_flag_beats_environment_false(self):
        settings = parse(["--skip-authentication"], {"DATASERV_SKIP_AUTHENTICATION": "false"})
        self.assertIs(settings.skip_authentication, True)


class InvalidValueTests(ParsingTestsMixin, SynchronousTestCase):
    """A bad value stops parsing with one line that names the flag or variable."""

    def test_negative_max_ping(self):
        self.assertRejected(["--max-ping", "-1"], names="--max-ping")

    def test_unknown_flag(self):
        message = self.assertRejected(["--bogus"], names="--bogus")
        self.assertIn("not recognized", message)

    def test_flag_without_its_value(self):
        self.assertRejected(["--min-k"], names="--min-k")

    def test_stray_argument(self):
        self.assertRejected(["5000"], names="Wrong number of arguments")

    def test_online_time_not_a_number(self):
        self.assertRejected(["--online-time", "abc"], names="--online-time")

    def test_summary_interval_nan(self):
        self.assertRejected(["--summary-interval", "nan"], names="--summary-interval")

    def test_address_not_an_address(self):
        self.assertRejected(["--address", "notanaddress"], names="--address")

    def test_address_nodeid(self):
        # A nodeid names a farmer but is not an address a server can be signed for.
        self.assertRejected(["--address", NODEID], names="--address")

    def test_listen_nonsense(self):
        self.assertRejected(["--listen", "nonsense:xx"], names="--listen")

    def test_listen_bad_port(self):
        self.assertRejected(["--listen", "tcp:abc"], names="--listen")

    def test_trusted_proxies(self):
        message = self.assertRejected(["--trusted-proxies", "10.0.0.1,bogus"],
                                      names="--trusted-proxies")
        self.assertIn("bogus", message)

    def test_limits(self):
        for flag, value in (("--rate-limit", "-1"), ("--rate-burst", "0"),
                            ("--max-body", "lots"), ("--head-timeout", "nan"),
                            ("--backlog", "0"), ("--max-connections-per-ip", "-5")):
            self.assertRejected([flag, value], names=flag)

    def test_metrics_allow(self):
        message = self.assertRejected(["--metrics-allow", "127.0.0.1 localhost"],
                                      names="--metrics-allow")
        self.assertIn("localhost", message)

    def test_pool_size_zero_from_environment(self):
        self.assertRejected(environ={"DATASERV_POOL_SIZE": "0"}, names="DATASERV_POOL_SIZE")

    def test_online_time_from_environment(self):
        message = self.assertRejected(environ={"DATASERV_ONLINE_TIME": "soon"},
                                      names="DATASERV_ONLINE_TIME")
        self.assertNotIn("--online-time", message)

    def test_skip_authentication_from_environment(self):
        self.assertRejected(environ={"DATASERV_SKIP_AUTHENTICATION": "maybe"},
                            names="DATASERV_SKIP_AUTHENTICATION")

    def test_database_not_a_dsn(self):
        message = self.assertRejected(["--database", "dbname"], names="--database")
        self.assertIn('missing "="', message)

    def test_database_url_with_unknown_parameter(self):
        message = self.assertRejected(
            environ={"DATASERV_DATABASE": "postgresql://u:secret@db/x?colour=red"},
            names="DATASERV_DATABASE")
        self.assertIn("colour", message)

    def test_database_error_hides_the_password(self):
        message = self.assertRejected(["--database", "postgresql://u:secret@[::1/x"],
                                      names="--database")
        self.assertNotIn("secret", message)

    def test_access_log_in_missing_directory(self):
        missing = os.path.join(self.mktemp(), "logs")
        message = self.assertRejected(["--access-log", os.path.join(missing, "access.log")],
                                      names="--access-log")
        self.assertIn(missing + " does not exist", message)

    def test_access_log_is_a_directory(self):
        directory = self.mktemp()
        os.makedirs(directory)
        self.assertRejected(["--access-log", directory], names="--access-log")

    def test_access_log_in_unwritable_directory(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        os.chmod(directory, 0o500)
        self.addCleanup(os.chmod, directory, 0o700)
        if os.access(directory, os.W_OK):
            self.skipTest("root may write anywhere")
        message = self.assertRejected(["--access-log", os.path.join(directory, "access.log")],
                                      names="--access-log")
        self.assertIn("no permission", message)

    def test_access_log_existing_file_accepted(self):
        path = os.path.abspath(self.mktemp())
        open(path, "w").close()
        self.assertEqual(parse(["--access-log", path]).access_log, path)

    def test_limits_are_whole_numbers_of_zero_or_more(self):
        for flag in ("--max-fill-rate", "--audit-limit", "--bandwidth-limit",
                     "--registrations-per-network"):
            self.assertRejected([flag, "-1"], names=flag)
            self.assertRejected([flag, "1.5"], names=flag)

    def test_flag_error_names_flag_despite_environment(self):
        message = self.assertRejected(["--max-ping", "-1"], {"DATASERV_MAX_PING": "3"},
                                      names="--max-ping")
        self.assertNotIn("DATASERV_MAX_PING", message)


class PluginTests(SynchronousTestCase):
    """`twistd dataserv` finds the drop-in."""

    def test_discoverable(self):
        import twisted.plugins

        makers = {p.tapname: p for p in getPlugins(IServiceMaker, twisted.plugins)}
        self.assertIn("dataserv", makers)
        self.assertIs(makers["dataserv"].options, tap.Options)
        self.assertIs(makers["dataserv"].makeService, tap.makeService)


class StartWarningTests(SynchronousTestCase):
    """The testing-only switches are announced on every start."""

    def test_none_with_an_own_address(self):
        from dataserv.daemon.service import start_warnings

        self.assertEqual(start_warnings(parse(["--address", ADDRESS])), [])

    def test_each_switch_warns(self):
        from dataserv.daemon.service import start_warnings

        for flag in ("--skip-authentication", "--no-limits"):
            [warning] = start_warnings(parse([flag, "--address", ADDRESS]))
            self.assertIn(flag + " is on", warning)


class ReadmeTests(SynchronousTestCase):
    """README's options table lists every flag, with the default the code has."""

    def table(self):
        readme = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "README.md")
        if not os.path.exists(readme):
            self.skipTest("no README.md next to tests/")
        rows = {}
        with open(readme) as f:
            for line in f:
                if line.startswith("| `--"):
                    flag, default = [cell.strip() for cell in line.split("|")[1:3]]
                    rows[flag.strip("`")[2:]] = default
        return rows

    def test_every_flag_once_with_its_default(self):
        rows = self.table()
        self.assertEqual(sorted(rows), sorted(o.name for o in config.OPTIONS))
        for option in config.OPTIONS:
            shown = rows[option.name]
            if option.flag:
                self.assertEqual(shown, "off", option.name)
            elif option.default is None:
                self.assertIn("`%s`" % (config.default_data_dir(1000),), shown)
                self.assertIn("`%s`" % (config.default_data_dir(0),), shown)
            elif option.default == "":
                self.assertIn(shown, ("(empty)", "(none)"), option.name)
            else:
                self.assertEqual(shown, "`%s`" % (option.default,), option.name)
    def test_default_address_warns(self):
        from dataserv.daemon.service import start_warnings

        [warning] = start_warnings(parse())
        self.assertIn("--address is the default " + config.DEFAULT_ADDRESS, warning)
        [warning] = start_warnings(parse(environ={"DATASERV_ADDRESS": config.DEFAULT_ADDRESS}))
        self.assertIn("--address is the default", warning)
