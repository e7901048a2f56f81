"""The SQLite :class:`~interlock.protocols.DagStore`: one file, many threads and processes.

How the store contract is met:

- **Per-run serialisation, atomicity.** Every mutating call is one ``BEGIN IMMEDIATE ...
  COMMIT`` (rolled back if anything raises). ``BEGIN IMMEDIATE`` takes SQLite's single write
  lock up front, so the run row read at BEGIN cannot change under the step and two processes
  never both decide from the same state. SQLite serialises *all* writers of the file, not only
  those of one run; steps are short (a task completion is a handful of indexed statements), so
  this is the price of one file, paid in throughput, never in correctness.
- **Fencing and exactly-once effects** are :mod:`interlock.storekit`'s, applied inside that
  transaction: a replay reads the committed state and returns ``duplicate``/``stale``.
- **Durability.** WAL journal; ``synchronous=NORMAL`` by default: a committed step survives any
  crash of the process (``kill -9`` included), but the last steps before a power loss or OS
  crash may roll back (the file stays consistent). ``synchronous="FULL"`` makes every COMMIT
  durable at the cost of an fsync per step.
- **Reads** (``get_*``, ``list_*``) are single statements in autocommit mode: each sees one
  committed snapshot and never blocks or is blocked by the writer (WAL).

``pipeline`` and ``input`` of a run are immutable once created, so their decoded JSON is cached
per store object (4,096 runs, as many as the kernel keeps contexts for) and a transaction reads
only the run's small state columns; runs whose pipelines have the same text share one decoded
pipeline (the common case of many runs of one pipeline: the cache then costs little more than
the inputs). Run records handed out share those dicts: treat records (frozen) and their
contents as read-only.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from interlock.errors import UsageError
from interlock.records import Artifact, NodeRecord, RunRecord, TaskRecord
from interlock.states import TaskState
from interlock.storekit import TransactionalDagStore
from interlock_sqlite import codec, schema
from interlock_sqlite.connections import SYNCHRONOUS_LEVELS, ConnectionPool
from interlock_sqlite.transaction import SqliteRunTransaction

__all__ = ["SqliteStore"]

_STATIC_CACHE_SIZE = 4096  # runs whose decoded pipeline/input are kept per store instance
_PIPELINES_SHARED = 64  # distinct pipeline texts whose decoded dict runs share
_IN_CHUNK = 500  # bound on ``?`` placeholders per statement (old SQLite builds allow 999)
_Static = tuple[dict[str, Any], dict[str, Any]]
_CREATED_AT = codec.RUN_STATE_COLUMNS.index("created_at")
_RUN_WIDTH = len(codec.RUN_STATE_COLUMNS)


class SqliteStore(TransactionalDagStore):
    """A :class:`~interlock.protocols.DagStore` in the SQLite database file at ``path``.

    Creates the file and its schema if needed (see :mod:`interlock_sqlite.schema`); refuses a
    database written by a newer adapter. Safe to share between threads (one connection per
    thread) and to open from many processes at once. ``busy_timeout_ms`` bounds how long a step
    waits for the write lock before raising ``sqlite3.OperationalError`` ("database is
    locked"). ``synchronous``: ``"NORMAL"`` (default) or ``"FULL"`` / ``"EXTRA"``.
    ``on_connect`` is called with each new connection after it is configured (e.g. to install
    a ``set_trace_callback`` that counts statements; a contended ``BEGIN IMMEDIATE`` is tried
    several times, see :func:`~interlock_sqlite.connections.begin_immediate`, so count
    ``COMMIT``/``ROLLBACK`` for transactions); it must not start a transaction.
    """

    abilities: frozenset[str] = TransactionalDagStore.abilities | {"stream"}

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_ms: int = 30_000,
                 synchronous: str = "NORMAL",
                 on_connect: Callable[[sqlite3.Connection], None] | None = None) -> None:
        filename = os.fspath(path)
        if not filename or filename == ":memory:" or filename.startswith("file:"):
            raise UsageError(
                f"SqliteStore needs a database file path, got {filename!r}: every thread opens "
                "its own connection, so an in-memory or URI database would not be shared "
                "(use the memory:// store for in-process runs)"
            )
        if isinstance(busy_timeout_ms, bool) or not isinstance(busy_timeout_ms, int) \
                or busy_timeout_ms < 0:
            raise UsageError(f"busy_timeout_ms must be an integer >= 0, got {busy_timeout_ms!r}")
        level = str(synchronous).upper()
        if level not in SYNCHRONOUS_LEVELS:
            raise UsageError(f"synchronous must be one of {', '.join(SYNCHRONOUS_LEVELS)}, "
                             f"got {synchronous!r}")
        self.path = filename
        self._absolute = os.path.abspath(filename)
        self.synchronous = level
        self.busy_timeout_ms = busy_timeout_ms
        self._pool = ConnectionPool(filename, busy_timeout_ms=busy_timeout_ms,
                                    synchronous=level, on_connect=on_connect)
        self._static: OrderedDict[tuple[str, float], _Static] = OrderedDict()
        self._pipelines: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._static_lock = threading.Lock()
        try:
            self.schema_version = schema.migrate(self._conn(), filename)
            self._json1 = codec.has_json1(self._conn())
        except sqlite3.DatabaseError as exc:  # not a database, unreadable, locked for too long
            self._pool.close()
            raise UsageError(f"cannot open SQLite store {filename!r}: {exc}") from exc

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r}, synchronous={self.synchronous!r})"

    @property
    def url(self) -> str:
        """The ``sqlite:///`` URL that opens this database again, with this store's options
        (``interlock.stores.open_store``; e.g. in a worker process). The path is absolute, as
        resolved when the store was created; ``on_connect`` is not part of it."""
        location = quote(self._absolute)
        query = urlencode({"synchronous": self.synchronous,
                           "busy_timeout_ms": self.busy_timeout_ms})
        return f"sqlite:///{location}?{query}"

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close this process's connections (call when no thread is using the store)."""
        self._pool.close()

    def _conn(self) -> sqlite3.Connection:
        """The calling thread's connection."""
        return self._pool.get()

    # ---- the transaction primitive ----------------------------------------------------------

    def transaction(self, run_id: str) -> _Step:
        """One ``BEGIN IMMEDIATE ... COMMIT`` on ``run_id``; rolled back if the block raises."""
        return _Step(self, run_id, None)

    def _task_transaction(self, run_id: str, task_id: str) -> _Step:
        """:meth:`transaction` that reads the run, the task and the task's node in one
        statement (the first reads of a claim or a completion)."""
        return _Step(self, run_id, task_id)

    # ---- create -----------------------------------------------------------------------------

    def create_run(self, run: RunRecord, nodes: Sequence[NodeRecord]) -> tuple[RunRecord, bool]:
        """Insert the run and its nodes in one transaction unless the run exists."""
        conn = self._pool.begin()
        try:
            created = conn.execute(codec.INSERT_RUN, codec.run_params(run)).rowcount == 1
            if created:
                conn.execute(codec.INSERT_RUN_STATIC, codec.run_static_params(run))
                conn.executemany(codec.UPSERT_NODE,
                                 [codec.node_params(run.run_id, n) for n in nodes])
                stored: RunRecord | None = run
            else:
                stored = self._read_run(conn, run.run_id)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        assert stored is not None  # inserted, or it existed under the write lock
        return stored, created

    # ---- reads ------------------------------------------------------------------------------

    def get_run(self, run_id: str) -> RunRecord | None:
        return self._read_run(self._conn(), run_id)

    def get_nodes(self, run_id: str, indices: Sequence[int] | None = None) -> list[NodeRecord]:
        conn = self._conn()
        if indices is None:
            rows = conn.execute(codec.SELECT_NODES + " ORDER BY idx", (run_id,)).fetchall()
            return [codec.decode_node(row) for row in rows]
        wanted = sorted(set(indices))
        out: list[NodeRecord] = []
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start:start + _IN_CHUNK]
            marks = ", ".join("?" for _ in chunk)
            rows = conn.execute(f"{codec.SELECT_NODES} AND idx IN ({marks}) ORDER BY idx",
                                (run_id, *chunk)).fetchall()
            out.extend(codec.decode_node(row) for row in rows)
        return out

    def get_task(self, run_id: str, task_id: str) -> TaskRecord | None:
        rows = self._conn().execute(codec.SELECT_TASKS + " AND task_id = ?",
                                    (run_id, task_id)).fetchall()
        return codec.decode_task(rows[0]) if rows else None

    def list_tasks(
        self,
        run_id: str,
        *,
        node_index: int | None = None,
        states: Collection[TaskState] | None = None,
    ) -> list[TaskRecord]:
        sql = codec.SELECT_TASKS if states is None else codec.SELECT_TASKS_BY_STATE
        params: list[object] = [run_id]
        if node_index is not None:
            sql += " AND node_index = ?"
            params.append(node_index)
        if states is not None:
            values = sorted({TaskState(s).value for s in states})
            if not values:
                return []
            sql += f" AND state IN ({', '.join('?' for _ in values)})"
            params.extend(values)
        sql += " ORDER BY node_index, generation, seq"
        rows = self._conn().execute(sql, params).fetchall()
        return [codec.decode_task(row) for row in rows]

    def get_artifacts(self, run_id: str, node_index: int, generation: int) -> list[Artifact]:
        return list(self.iter_artifacts(run_id, node_index, generation))

    def iter_artifacts(self, run_id: str, node_index: int, generation: int
                       ) -> Iterable[Artifact]:
        """[artifacts.stream] One statement (one committed snapshot). With JSON1, SQLite
        builds each artifact's packed text from its columns: from
        :data:`~interlock.packed.PACK_MIN` artifacts on they are handed over as a
        :class:`~interlock.packed.PackedArtifacts` of those texts (no record built until
        read), fewer are decoded. Without JSON1, decoded row by row from the cursor."""
        params = (run_id, node_index, generation)
        if self._json1:
            return codec.artifact_texts(self._conn().execute(codec.SELECT_ARTIFACT_TEXTS, params))
        return map(codec.decode_artifact, self._conn().execute(codec.SELECT_ARTIFACTS, params))

    def list_expired(self, now: float, limit: int) -> list[TaskRecord]:
        if limit <= 0:
            return []
        # ``state = 'running'`` spelled literally: it selects the partial index tasks_lease.
        rows = self._conn().execute(
            f"SELECT {', '.join(codec.TASK_COLUMNS)} FROM tasks "
            "WHERE state = 'running' AND lease_until < ? ORDER BY lease_until LIMIT ?",
            (now, limit),
        ).fetchall()
        return [codec.decode_task(row) for row in rows]

    # ---- helpers ----------------------------------------------------------------------------

    def _read_run(self, conn: sqlite3.Connection, run_id: str) -> RunRecord | None:
        rows = conn.execute(codec.SELECT_RUN_STATE, (run_id,)).fetchall()
        return self._decode_run(conn, run_id, rows[0]) if rows else None

    def _decode_run(self, conn: sqlite3.Connection, run_id: str, row: Sequence[Any]
                    ) -> RunRecord:
        """The run from its state columns (``row`` starts with them) and the cached static
        JSON, read on a cache miss."""
        key = (run_id, float(row[_CREATED_AT]))
        with self._static_lock:
            static = self._static.get(key)
            if static is not None:
                self._static.move_to_end(key)
        if static is None:
            text = conn.execute(codec.SELECT_RUN_STATIC, (run_id,)).fetchall()[0]
            static = (self._shared_pipeline(text[0]), codec.loads_nullable(text[1]))
            with self._static_lock:
                self._static[key] = static
                while len(self._static) > _STATIC_CACHE_SIZE:
                    self._static.popitem(last=False)
        return codec.decode_run(row[:_RUN_WIDTH], *static)

    def _shared_pipeline(self, text: str) -> dict[str, Any]:
        """The decoded pipeline of ``text``, one dict for every run whose pipeline is that
        text."""
        with self._static_lock:
            pipeline = self._pipelines.get(text)
            if pipeline is not None:
                self._pipelines.move_to_end(text)
                return pipeline
        decoded: dict[str, Any] = codec.loads_nullable(text)
        with self._static_lock:
            self._pipelines[text] = decoded
            while len(self._pipelines) > _PIPELINES_SHARED:
                self._pipelines.popitem(last=False)
        return decoded

    def _forget_static(self, run_id: str) -> None:
        with self._static_lock:
            for key in [k for k in self._static if k[0] == run_id]:
                del self._static[key]


class _Step:
    """The context manager of :meth:`SqliteStore.transaction` (a class, not a generator: it
    runs twice per task). With ``task_id``, the first read also fetches that task and its node
    (:data:`~interlock_sqlite.codec.SELECT_RUN_TASK_NODE`) and seeds the transaction with them."""

    __slots__ = ("_conn", "_run_id", "_store", "_task_id", "_tx")

    def __init__(self, store: SqliteStore, run_id: str, task_id: str | None) -> None:
        self._store, self._run_id, self._task_id = store, run_id, task_id
        self._conn: sqlite3.Connection | None = None
        self._tx: SqliteRunTransaction | None = None

    def __enter__(self) -> SqliteRunTransaction | None:
        store, run_id = self._store, self._run_id
        conn = self._conn = store._pool.begin()
        try:
            if self._task_id is None:
                run = store._read_run(conn, run_id)
                if run is not None:
                    self._tx = SqliteRunTransaction(conn, run, store._forget_static,
                                                    texts=store._json1)
            else:
                rows = conn.execute(codec.SELECT_RUN_TASK_NODE,
                                    (self._task_id, run_id)).fetchall()
                if rows:
                    row = rows[0]
                    tx = self._tx = SqliteRunTransaction(
                        conn, store._decode_run(conn, run_id, row), store._forget_static,
                        texts=store._json1)
                    tx.seed(self._task_id, row[codec.TASK_SLICE], row[codec.NODE_SLICE])
        except BaseException:
            self._rollback()
            raise
        return self._tx

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: object) -> None:
        if exc_type is not None:
            self._rollback()
            return
        try:
            if self._tx is not None:
                self._tx.flush()
            assert self._conn is not None
            self._conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        conn = self._conn
        if conn is not None and conn.in_transaction:
            conn.execute("ROLLBACK")
