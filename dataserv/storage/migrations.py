"""Numbered .sql files in dataserv/schema/, applied in order inside one transaction.

An advisory lock makes a second daemon starting on the same database wait for the
first one's migration instead of racing it.
"""

import os
import re
from typing import Any, List, Optional, Sequence, Tuple

import psycopg2
from twisted.internet import defer

from dataserv.storage.failures import reason_for

SCHEMA_DIR = os.path.join(os.path.dirname(__file__), "schema")
# Any constant works; it only has to be the same for every dataserv process.
LOCK_KEY = 0x64617461  # "data"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class SchemaTooNew(Exception):
    """The database was migrated by a newer dataserv than this one."""


class MigrationFailed(Exception):
    """A schema file failed to apply for a reason that waiting will not heal."""

    def __init__(self, name: str, error: Exception):
        super().__init__(name, error)
        self.name = name
        self.error = error

    def __str__(self) -> str:
        message = (str(self.error).strip() or type(self.error).__name__).splitlines()[0]
        return ("schema migration %s failed (%s): fix or restore that file in "
                "dataserv/storage/schema/ (or reinstall dataserv) and start again"
                % (self.name, message))


Step = Tuple[int, str, str]


def load(directory: Optional[str] = None) -> List[Step]:
    """[(version, name, sql)] from a schema directory, in version order."""
    directory = directory or SCHEMA_DIR
    found = []
    for name in sorted(os.listdir(directory)):
        match = _NAME.match(name)
        if match:
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                found.append((int(match.group(1)), name, f.read()))
    versions = [v for v, _, _ in found]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError("schema files must be numbered 0001, 0002, ... without gaps: %r"
                         % ([n for _, n, _ in found],))
    return found


@defer.inlineCallbacks
def apply_all(cursor: Any, steps: Sequence[Step]) -> Any:
    """Bring the schema up to date; returns the version it ends at. Runs in one transaction."""
    yield cursor.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
    yield cursor.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version integer PRIMARY KEY,"
        " name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())")
    yield cursor.execute("SELECT coalesce(max(version), 0) FROM schema_version")
    current = cursor.fetchall()[0][0]
    newest = steps[-1][0] if steps else 0
    if current > newest:
        raise SchemaTooNew(
            "the database is at schema version %d but this dataserv only knows up to %d; "
            "it was used by a newer dataserv: upgrade this one" % (current, newest))
    for version, name, sql in steps:
        if version > current:
            try:
                yield cursor.execute(sql)
            except psycopg2.Error as e:
                if reason_for(e) is not None:
                    raise  # the server's trouble (lost, read-only, full): worth a retry
                raise MigrationFailed(name, e)
            yield cursor.execute(
                "INSERT INTO schema_version (version, name) VALUES (%s, %s)", (version, name))
    return max(current, newest)
