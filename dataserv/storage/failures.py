"""What a database failure means: whose fault it is, and the one line that says so.

Server-side failures that waiting can heal (a lost or stalled connection, a read-only
or full database, an administrator's shutdown) become :class:`DatabaseUnavailable`
with a short reason; the HTTP layer answers them with 503. Errors in what we asked
(syntax, constraints, bad data) are not classified here and stay real errors.
"""

from typing import Any
import psycopg2
import psycopg2.errorcodes
import psycopg2.errors
from twisted.internet import error as net_error


def _sqlstates() -> Any:
    # psycopg2 raises a class per SQLSTATE; map each back to its code, so an error
    # is classified the same whether it came from the server or was built by hand.
    by_class: Any = {}
    for value in vars(psycopg2.errorcodes).values():
        if isinstance(value, str) and len(value) == 5:
            try:
                by_class.setdefault(psycopg2.errors.lookup(value), value)
            except KeyError:
                pass
    return by_class


_SQLSTATE = _sqlstates()


class DatabaseUnavailable(Exception):
    """PostgreSQL cannot serve this call right now; try again later.

    ``str()`` is one short line (one of the reasons below), never a traceback or a path.
    """


class DatabaseConflict(DatabaseUnavailable):
    """PostgreSQL picked this transaction as a serialisation or deadlock victim; safe to repeat."""


class StartupError(Exception):
    """A start-up mistake that waiting cannot heal; the message names the setting and the fix."""


NOT_ANSWERING = "database not answering"
LOST = "database connection lost"
READ_ONLY = "database is read-only"
DISK_FULL = "database disk is full"
NO_RESOURCES = "database out of resources"
STATEMENT_TIMEOUT = "database statement timed out"
CONFLICT = "database transaction conflict"
SERVER_ERROR = "database server error"
STOPPED = "stopped"

# Reasons after which the connection the call was on cannot be used again.
CONNECTION_REASONS = frozenset({NOT_ANSWERING, LOST})


def reason_for(error: BaseException) -> "str | None":
    """The short reason when ``error`` is a server-side failure that is not the caller's
    fault, else None (a programming or data error, which stays a real error)."""
    if isinstance(error, DatabaseUnavailable):
        return str(error)
    if isinstance(error, (psycopg2.InterfaceError, net_error.ConnectionDone,
                          net_error.ConnectionLost)):
        return LOST
    if not isinstance(error, psycopg2.Error):
        return None
    code = error.pgcode or _SQLSTATE.get(type(error), "")
    if code == "25006":
        return READ_ONLY
    if code == "53100":
        return DISK_FULL
    if code.startswith("53"):
        return NO_RESOURCES
    if code == "57014":
        return STATEMENT_TIMEOUT
    if code.startswith(("08", "57P")):
        return LOST
    if code.startswith("40"):
        return CONFLICT
    if code.startswith(("58", "XX")):
        return SERVER_ERROR
    if not code and isinstance(error, psycopg2.OperationalError):
        return LOST  # libpq's own: the server closed the connection, or it never opened
    return None


def unavailable(error: BaseException) -> "DatabaseUnavailable | None":
    """``error`` as a DatabaseUnavailable (a DatabaseConflict for a rollback victim), or
    None when it is not a server-side failure."""
    if isinstance(error, DatabaseUnavailable):
        return error
    reason = reason_for(error)
    if reason is None:
        return None
    return DatabaseConflict(reason) if reason == CONFLICT else DatabaseUnavailable(reason)


def first_line(error: object) -> str:
    """The first line of an error's message, without libpq's "FATAL:  " prefixes."""
    text = str(error).strip() or type(error).__name__
    line = text.splitlines()[0].strip()
    for prefix in ("FATAL:", "ERROR:"):
        if line.startswith(prefix):
            line = line[len(prefix):].strip()
    return line


# What a failed connection attempt at start-up says when waiting can heal it.
_TRANSIENT = (
    "connection refused", "no such file or directory", "timeout expired", "timed out",
    "the database system is starting up", "the database system is shutting down",
    "the database system is in recovery mode", "not yet accepting connections",
    "too many clients", "remaining connection slots", "server closed the connection",
    "network is unreachable", "no route to host", "could not translate host name",
    "terminating connection",
)


def startup_problem(error: BaseException, setting: str) -> "str | None":
    """Why a connection attempt at start-up failed, when waiting cannot heal it: one
    line naming ``setting`` and the fix. None when it is worth retrying."""
    if isinstance(error, DatabaseUnavailable):
        return None
    text = str(error).lower()
    if isinstance(error, psycopg2.OperationalError) and not error.pgcode:
        if any(marker in text for marker in _TRANSIENT):
            return None
        line = first_line(error)
        if "password" in text or "pg_hba.conf" in text or "authentication" in text:
            return ("PostgreSQL refused the login (%s): fix the user or password in %s, "
                    "or PostgreSQL's pg_hba.conf" % (line, setting))
        if "database" in text and "does not exist" in text:
            return ("%s: create that database or fix the database name in %s"
                    % (line, setting))
        if "role" in text and "does not exist" in text:
            return "%s: create that role or fix the user in %s" % (line, setting)
        return "cannot connect to PostgreSQL (%s): check %s" % (line, setting)
    if isinstance(error, psycopg2.ProgrammingError) and "dsn" in text:
        return ("%s is not a libpq connection string or postgresql:// URL (%s): fix %s"
                % (setting, first_line(error), setting))
    return None
