"""The :class:`~interlock.storekit.RunTransaction` of the SQLite store.

A transaction lives inside one ``BEGIN IMMEDIATE ... COMMIT`` opened by the store. It reads what
it needs lazily (point lookups by primary key, index range scans), keeps what it read and what
it wrote in memory, and writes everything in :meth:`SqliteRunTransaction.flush`, just before
COMMIT, with one ``executemany`` per table. Buffering costs nothing in safety (the database
transaction is what makes the step atomic) and turns a launch of N tasks into one batched
insert instead of N round trips; the last write of a record wins, so a node touched several
times in one step is written once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs

from interlock.records import Artifact, NodeRecord, RunRecord, TaskRecord
from interlock.states import TaskState
from interlock_sqlite import codec

_PACK_FACTS = 64
"""Stored artifacts a completion's step reads packed from this many on (fewer: records)."""

__all__ = ["SqliteRunTransaction"]

_UNFINISHED = frozenset({TaskState.QUEUED, TaskState.RUNNING, TaskState.WAITING})


class SqliteRunTransaction:
    """One atomic step on one run (see :class:`~interlock.storekit.RunTransaction`).

    ``run`` is the run as read at BEGIN (the storekit may reassign it). ``on_static_change`` is
    called if the step rewrites the run's pipeline or input, so the store drops its cache.
    """

    def __init__(self, conn: sqlite3.Connection, run: RunRecord,
                 on_static_change: Callable[[str], None], *, texts: bool = False) -> None:
        self.run = run
        self._texts = texts  # JSON1: read artifacts as packed texts built by SQLite
        self._conn = conn
        self._run_id = run.run_id
        self._read_run = run
        self._on_static_change = on_static_change
        self._put_run: RunRecord | None = None
        self._nodes: dict[int, NodeRecord] = {}  # current view: as read, then as written
        self._node_row: Sequence[Any] | None = None  # a node read with the task, not decoded yet
        self._dirty_nodes: set[int] = set()
        self._all_nodes = False
        self._stored: dict[str, TaskRecord | None] = {}  # as stored at BEGIN (None: absent)
        self._written: dict[str, TaskRecord] = {}
        self._artifacts: list[Sequence[Artifact]] = []  # as given: a wide one is lazy

    # ---- nodes -------------------------------------------------------------------------------

    def seed(self, task_id: str, task_row: Sequence[Any], node_row: Sequence[Any]) -> None:
        """Take the task ``task_id`` (``task_row``: :data:`~interlock_sqlite.codec.TASK_COLUMNS`,
        all NULL if it does not exist) and its node (:data:`~interlock_sqlite.codec.
        NODE_COLUMNS`) as read in this transaction; the node is decoded when first asked for."""
        if task_row[0] is None:
            self._stored[task_id] = None
            return
        self._stored[task_id] = codec.decode_task(task_row)
        self._node_row = node_row

    def node(self, index: int) -> NodeRecord:
        node = self._nodes.get(index)
        if node is None:
            row = self._node_row
            if row is not None and row[0] == index:
                self._node_row = None
                node = self._nodes[index] = codec.decode_node(row)
                return node
            rows = self._conn.execute(codec.SELECT_NODES + " AND idx = ?",
                                      (self._run_id, index)).fetchall()
            if not rows:
                raise IndexError(f"run {self._run_id!r} has no node {index}")
            node = self._nodes[index] = codec.decode_node(rows[0])
        return node

    def nodes(self) -> Iterator[NodeRecord]:
        if not self._all_nodes:
            for row in self._conn.execute(codec.SELECT_NODES, (self._run_id,)).fetchall():
                node = codec.decode_node(row)
                self._nodes.setdefault(node.index, node)  # never overwrite a written node
            self._all_nodes = True
        for index in sorted(self._nodes):
            yield self._nodes[index]

    def put_node(self, node: NodeRecord) -> None:
        self._nodes[node.index] = node
        self._dirty_nodes.add(node.index)

    # ---- tasks -------------------------------------------------------------------------------

    def task(self, task_id: str) -> TaskRecord | None:
        written = self._written.get(task_id)
        if written is not None:
            return written
        if task_id not in self._stored:
            rows = self._conn.execute(codec.SELECT_TASKS + " AND task_id = ?",
                                      (self._run_id, task_id)).fetchall()
            self._stored[task_id] = codec.decode_task(rows[0]) if rows else None
        return self._stored[task_id]

    def preload(self, task_ids: Sequence[str]) -> None:
        """Read the stored rows of ``task_ids`` not read yet, in as few statements as the
        variable limit allows (a batch of claims or completions then costs no SELECT each)."""
        missing = [t for t in dict.fromkeys(task_ids)
                   if t not in self._stored and t not in self._written]
        for start in range(0, len(missing), 500):
            chunk = missing[start:start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(f"{codec.SELECT_TASKS} AND task_id IN ({marks})",
                                      (self._run_id, *chunk)).fetchall()
            for task_id in chunk:
                self._stored[task_id] = None
            for row in rows:
                task = codec.decode_task(row)
                self._stored[task.task_id] = task

    def put_task(self, task: TaskRecord) -> None:
        self._written[task.task_id] = task

    def unfinished_tasks(self, node_index: int | None) -> Iterator[TaskRecord]:
        sql = f"{codec.SELECT_TASKS_BY_STATE} AND {codec.UNFINISHED}"
        params: tuple[object, ...] = (self._run_id,)
        if node_index is not None:
            sql += " AND node_index = ?"
            params += (node_index,)
        seen: set[str] = set()
        for row in self._conn.execute(sql, params).fetchall():
            stored = codec.decode_task(row)
            seen.add(stored.task_id)
            self._stored.setdefault(stored.task_id, stored)
            current = self.task(stored.task_id)
            if current is not None and current.state in _UNFINISHED:
                yield current
        # tasks written in this step (new, or re-opened) that the database does not show yet
        for task_id, task in list(self._written.items()):
            if (task_id not in seen and task.state in _UNFINISHED
                    and (node_index is None or task.node_index == node_index)):
                yield task

    def cancel_unfinished(self, node: tuple[int, int] | None, now: float, *,
                          clear_lease: bool) -> None:
        """The unfinished tasks of the run (or of ``node = (index, generation)``) CANCELLED in
        one UPDATE, none of them read or decoded: cancelling a run of 100,000 tasks under the
        write lock takes ~0.4 s here, not ~3 s. The records this transaction holds follow,
        so the step reads what it wrote and :meth:`flush` writes what it changed on top."""
        sql, params = codec.CANCEL_UNFINISHED, [now, self._run_id]
        if clear_lease:
            sql = sql.replace("updated_at = ?", "updated_at = ?, lease_until = NULL")
        if node is not None:
            sql += " AND node_index = ? AND generation = ?"
            params += node
        self._conn.execute(sql, params)
        for held in (self._stored, self._written):
            for task_id, task in held.items():
                if task is not None and task.state in _UNFINISHED and (
                        node is None or (task.node_index, task.generation) == node):
                    held[task_id] = attrs.evolve(
                        task, state=TaskState.CANCELLED, updated_at=now,
                        lease_until=None if clear_lease else task.lease_until)

    # ---- artifacts and run -----------------------------------------------------------------------

    def add_artifacts(self, artifacts: Sequence[Artifact]) -> None:
        self._artifacts.append(artifacts)

    def put_run(self, run: RunRecord) -> None:
        self.run = self._put_run = run

    def stored_artifacts(self, node_index: int, generation: int, limit: int
                         ) -> Sequence[Artifact] | None:
        """The artifacts of ``node_index`` in ``generation`` committed before this step, by
        ``seq``, or None when there are more than ``limit`` (with JSON1 and from
        :data:`_PACK_FACTS` on, packed: planning an aggregate by reference then decodes one,
        and it happens under the write lock)."""
        params = (self._run_id, node_index, generation, max(limit, -1) + 1)
        if self._texts:
            cursor = self._conn.execute(codec.SELECT_ARTIFACT_TEXTS + " LIMIT ?", params)
            rows = cursor.fetchall()
            return codec.artifact_texts(rows, _PACK_FACTS) if len(rows) <= limit else None
        rows = self._conn.execute(codec.SELECT_ARTIFACTS + " LIMIT ?", params).fetchall()
        return [codec.decode_artifact(row) for row in rows] if len(rows) <= limit else None

    # ---- commit ------------------------------------------------------------------------------

    def flush(self) -> None:
        """Write every buffered change (the store commits right after)."""
        conn, run_id = self._conn, self._run_id
        if self._dirty_nodes:
            _write(conn, codec.UPSERT_NODE, [codec.node_params(run_id, self._nodes[i])
                                             for i in sorted(self._dirty_nodes)])
        inserts: list[tuple[object, ...]] = []
        updates: list[tuple[object, ...]] = []
        for task_id, task in self._written.items():
            stored = self._stored.get(task_id)
            if stored is not None and codec.same_launch(stored, task):
                updates.append(codec.task_state_params(task))  # the plan is not rewritten
            else:
                inserts.append(codec.task_params(task))  # new, or replaced wholesale
        if inserts:
            _write(conn, codec.UPSERT_TASK, inserts)
        if updates:
            _write(conn, codec.UPDATE_TASK_STATE, updates)
        if self._artifacts:
            # a generator: a completion with many outputs never holds every row at once
            conn.executemany(codec.INSERT_ARTIFACT, (params for arts in self._artifacts
                                                     for params in codec.artifacts_params(
                                                         run_id, arts)))
        run = self._put_run
        if run is not None:
            conn.execute(codec.UPDATE_RUN_STATE, codec.run_state_params(run))
            old = self._read_run
            if not (run.pipeline is old.pipeline or run.pipeline == old.pipeline) or not (
                    run.input is old.input or run.input == old.input):
                conn.execute(codec.UPDATE_RUN_STATIC, (codec.dumps(run.pipeline),
                                                       codec.dumps(run.input), run_id))
                self._on_static_change(run_id)


def _write(conn: sqlite3.Connection, sql: str, rows: list[tuple[object, ...]]) -> None:
    """``executemany``, or ``execute`` for the common single row (no iteration machinery)."""
    if len(rows) == 1:
        conn.execute(sql, rows[0])
    else:
        conn.executemany(sql, rows)
