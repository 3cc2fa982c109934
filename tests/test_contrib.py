"""contrib/: the systemd unit, its environment file and the logrotate example."""

import os
import shutil
import subprocess

from twisted.internet import defer
from twisted.trial import unittest

from dataserv.daemon.config import OPTIONS, Settings
from tests.test_daemon import SOURCE_TREE, TWISTD, Daemon, child_environment, http_client

CONTRIB = os.path.join(SOURCE_TREE, "contrib")


def unit_sections(path):
    """{section: {key: [values]}} of a systemd unit (comments left out)."""
    sections, current = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                current = sections.setdefault(line.strip("[]"), {})
                continue
            key, _, value = line.partition("=")
            current.setdefault(key, []).append(value)
    return sections


def environment_file(path):
    """KEY=value lines of a systemd EnvironmentFile."""
    values = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                values[key] = value
    return values


class UnitTests(unittest.TestCase):
    """The unit runs twistd in the foreground as its own user, hardened."""

    def setUp(self):
        self.service = unit_sections(os.path.join(CONTRIB, "dataserv.service"))["Service"]

    def test_command_and_policy(self):
        one = {key: values[-1] for key, values in self.service.items()}
        self.assertTrue(one["ExecStart"].endswith("/twistd -n --pidfile= dataserv"),
                        one["ExecStart"])
        expected = {"EnvironmentFile": "/etc/dataserv/dataserv.env", "User": "dataserv",
                    "Group": "dataserv", "Restart": "on-failure", "LimitNOFILE": "65536",
                    "StateDirectory": "dataserv", "NoNewPrivileges": "yes",
                    "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes"}
        self.assertEqual({k: one.get(k) for k in expected}, expected)

    def test_port_80_without_root_is_explained(self):
        with open(os.path.join(CONTRIB, "dataserv.service")) as f:
            text = f.read()
        self.assertIn("#AmbientCapabilities=CAP_NET_BIND_SERVICE", text)

    def test_systemd_accepts_it(self):
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            raise unittest.SkipTest("systemd-analyze is not installed")
        with open(os.path.join(CONTRIB, "dataserv.service")) as f:
            text = f.read().replace("/opt/dataserv/bin/twistd", TWISTD)
        path = os.path.join(self.mktemp() + "-dataserv.service")
        with open(path, "w") as f:
            f.write(text)
        done = subprocess.run([analyze, "verify", path], capture_output=True, text=True)
        self.assertEqual((done.returncode, done.stderr), (0, ""))


class EnvironmentTests(unittest.TestCase):
    """The example environment names real settings with valid values."""

    def setUp(self):
        self.env = environment_file(os.path.join(CONTRIB, "dataserv.env"))

    def test_every_variable_is_a_setting(self):
        known = {o.environment for o in OPTIONS}
        self.assertEqual(set(self.env) - known, set())

    def test_values_parse(self):
        # The unit's LogsDirectory= makes /var/log/dataserv; here a scratch directory.
        logs = os.path.abspath(self.mktemp())
        os.makedirs(logs)
        env = dict(self.env, DATASERV_ACCESS_LOG=os.path.join(logs, "access.log"))
        settings = Settings.from_mapping({}, environ=env)
        self.assertEqual((settings.log_format, settings.data_dir), ("json", "/var/lib/dataserv"))

    def test_logrotate_covers_the_access_log(self):
        with open(os.path.join(CONTRIB, "logrotate")) as f:
            text = f.read()
        self.assertIn(self.env["DATASERV_ACCESS_LOG"] + " {", text)
        self.assertNotIn("\n    copytruncate", text)  # the daemon reopens on SIGHUP
        self.assertIn("systemctl kill --signal=HUP --kill-whom=main dataserv.service", text)

    @defer.inlineCallbacks
    def test_the_units_command_serves(self):
        # ExecStart's command line with the example environment (paths moved into
        # a scratch directory) starts a daemon that answers /health.
        daemon = Daemon(self)
        env = dict(self.env, DATASERV_LISTEN=daemon.listen_string(),
                   DATASERV_DATA_DIR=daemon.data_dir,
                   DATASERV_ACCESS_LOG=os.path.join(daemon.directory, "access.log"))
        command = unit_sections(os.path.join(CONTRIB, "dataserv.service"))["Service"][
            "ExecStart"][-1].split()
        self.assertEqual(command[1:], ["-n", "--pidfile=", "dataserv"])
        with open(os.path.join(daemon.directory, "stdout"), "w") as stdout, \
                open(os.path.join(daemon.directory, "stderr"), "w") as stderr:
            daemon.process = subprocess.Popen(
                [TWISTD] + command[1:], cwd=daemon.directory, env=child_environment(**env),
                stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL)
        self.addCleanup(daemon._stop_cluster)
        self.addCleanup(daemon._kill)
        yield daemon.wait_healthy(http_client())
        self.assertIn((yield daemon.terminate()), (0, -15))
        with open(os.path.join(daemon.directory, "stdout")) as f:
            first = f.readline()
        self.assertTrue(first.startswith('{"time":'), first)  # json, as the env file asks
