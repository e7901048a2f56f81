"""The SQLite schema: DDL as a list of forward migrations, applied in order at open.

Contract:

- ``schema_version`` holds one row per applied migration (``version`` 1, 2, ...).
- :func:`migrate` brings a database to :data:`SCHEMA_VERSION`. The missing migrations run inside
  one ``BEGIN IMMEDIATE`` transaction (SQLite DDL is transactional), so several processes opening
  a fresh file at once serialise on the write lock: the first one creates the schema, the others
  re-read the version under the lock and find nothing to do. A crash mid-migration rolls back.
- A database whose version is newer than this code knows is refused with
  :class:`SchemaVersionError` before anything is read or written: an old adapter must never
  interpret (or "repair") rows written under rules it does not know.
- Migrations are append-only: a released migration is never edited, a change is a new entry.
"""

from __future__ import annotations

import sqlite3
import time

from interlock.errors import UsageError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SchemaVersionError", "migrate", "read_version"]

# Index design (every hot-path statement is a primary-key lookup or an index range scan):
# - tasks_by_node   list_tasks(node_index=...) and the (node, generation, seq) order; reconcile.
# - tasks_by_state  unfinished tasks of a run / of a node (terminate, fail_task siblings) and
#                   list_tasks(states=[QUEUED]) as workers poll: O(matching rows), not O(run).
# - tasks_lease     list_expired: a partial index holding RUNNING tasks only, by lease deadline;
#                   queries must spell ``state = 'running'`` literally for SQLite to use it.
# - artifacts_by_node  get_artifacts(run, node, generation) in seq order.
_V1 = (
    """
    CREATE TABLE runs (
        run_id        TEXT PRIMARY KEY,
        state         TEXT NOT NULL,
        node_count    INTEGER NOT NULL,
        unsettled     INTEGER NOT NULL,
        failed_nodes  INTEGER NOT NULL,
        retries       INTEGER NOT NULL,
        artifact_seq  INTEGER NOT NULL,
        created_at    REAL NOT NULL,
        updated_at    REAL NOT NULL,
        reason        TEXT,
        pipeline      TEXT NOT NULL,  -- JSON, immutable after create_run
        input         TEXT NOT NULL   -- JSON, immutable after create_run
    )
    """,
    """
    CREATE TABLE nodes (
        run_id             TEXT NOT NULL,
        idx                INTEGER NOT NULL,
        generation         INTEGER NOT NULL,
        state              TEXT NOT NULL,
        remaining_parents  INTEGER NOT NULL,
        total_tasks        INTEGER NOT NULL,
        remaining_tasks    INTEGER NOT NULL,
        reason             TEXT,
        PRIMARY KEY (run_id, idx)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE tasks (
        run_id       TEXT NOT NULL,
        task_id      TEXT NOT NULL,
        node_index   INTEGER NOT NULL,
        generation   INTEGER NOT NULL,
        seq          INTEGER NOT NULL,
        state        TEXT NOT NULL,
        origin       TEXT,
        origin_mode  TEXT NOT NULL,
        attempt      INTEGER NOT NULL,
        attempt_id   TEXT,
        worker       TEXT,
        lease_until  REAL,
        not_before   REAL NOT NULL,
        error        TEXT,
        updated_at   REAL NOT NULL,
        plan         TEXT NOT NULL,  -- JSON, written once at launch
        resume       TEXT,           -- JSON or NULL
        PRIMARY KEY (run_id, task_id)
    )
    """,
    "CREATE INDEX tasks_by_node ON tasks (run_id, node_index, generation, seq)",
    "CREATE INDEX tasks_by_state ON tasks (run_id, state, node_index, generation, seq)",
    "CREATE INDEX tasks_lease ON tasks (lease_until) WHERE state = 'running'",
    """
    CREATE TABLE artifacts (
        run_id       TEXT NOT NULL,
        seq          INTEGER NOT NULL,
        node_index   INTEGER NOT NULL,
        generation   INTEGER NOT NULL,
        artifact_id  TEXT NOT NULL,
        task_id      TEXT NOT NULL,
        origin       TEXT,
        fields       TEXT NOT NULL,  -- JSON object
        data         TEXT,           -- JSON or NULL
        PRIMARY KEY (run_id, seq)
    )
    """,
    "CREATE INDEX artifacts_by_node ON artifacts (run_id, node_index, generation, seq)",
)

# Version 2: a run's pipeline and input move out of ``runs`` into ``run_static``. Every step
# rewrites its run's state row (counters, ``updated_at``), and SQLite rewrites a whole row on
# UPDATE: with the pipeline inline, a 10,000-node pipeline (~1 MB of JSON) cost each completion
# ~80 us of copying, growing with the pipeline. ``runs`` keeps the small state columns and is
# rebuilt WITHOUT ROWID (one b-tree lookup by run id instead of an index and the table); a
# rebuild rather than ``ALTER TABLE DROP COLUMN``, which SQLite before 3.35 lacks.
_V2 = (
    """
    CREATE TABLE run_static (
        run_id    TEXT PRIMARY KEY,
        pipeline  TEXT NOT NULL,  -- JSON, immutable after create_run
        input     TEXT NOT NULL   -- JSON, immutable after create_run
    )
    """,
    "INSERT INTO run_static (run_id, pipeline, input) SELECT run_id, pipeline, input FROM runs",
    """
    CREATE TABLE runs_v2 (
        run_id        TEXT PRIMARY KEY,
        state         TEXT NOT NULL,
        node_count    INTEGER NOT NULL,
        unsettled     INTEGER NOT NULL,
        failed_nodes  INTEGER NOT NULL,
        retries       INTEGER NOT NULL,
        artifact_seq  INTEGER NOT NULL,
        created_at    REAL NOT NULL,
        updated_at    REAL NOT NULL,
        reason        TEXT
    ) WITHOUT ROWID
    """,
    "INSERT INTO runs_v2 SELECT run_id, state, node_count, unsettled, failed_nodes, retries, "
    "artifact_seq, created_at, updated_at, reason FROM runs",
    "DROP TABLE runs",
    "ALTER TABLE runs_v2 RENAME TO runs",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2)
"""Migration ``i + 1`` is ``MIGRATIONS[i]``: statements run in order in one transaction."""

SCHEMA_VERSION = len(MIGRATIONS)
"""The schema version this code writes and understands."""

_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version ("
    "version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
)


class SchemaVersionError(UsageError):
    """The database was written by a newer interlock-sqlite than the one installed."""

    def __init__(self, path: str, found: int) -> None:
        self.path, self.found, self.supported = path, found, SCHEMA_VERSION
        super().__init__(
            f"SQLite store {path!r} has schema version {found}, but this interlock-sqlite "
            f"supports versions up to {SCHEMA_VERSION}; upgrade interlock-sqlite (never "
            f"open a database with an older adapter than the newest one that wrote it)"
        )


def read_version(conn: sqlite3.Connection) -> int:
    """The highest applied migration (0 for an empty database). Reads only."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchall()
    if not exists:
        return 0
    rows = conn.execute("SELECT MAX(version) FROM schema_version").fetchall()
    return int(rows[0][0] or 0)


def migrate(conn: sqlite3.Connection, path: str) -> int:
    """Apply the missing migrations; return the resulting version (:data:`SCHEMA_VERSION`).

    ``conn`` must be in autocommit mode (``isolation_level=None``) with no open transaction.
    """
    # Lock-free fast path: an up-to-date database (the common case) takes no write lock at open.
    version = read_version(conn)
    _refuse_future(path, version)
    if version == SCHEMA_VERSION:
        return version
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_VERSION_TABLE)
        version = read_version(conn)  # re-read under the lock: another process may have won
        _refuse_future(path, version)
        for number in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[number - 1]:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                         (number, time.time()))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return SCHEMA_VERSION


def _refuse_future(path: str, version: int) -> None:
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(path, version)
