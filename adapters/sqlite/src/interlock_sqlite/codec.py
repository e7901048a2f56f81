"""Records <-> rows: column lists, SQL fragments and (de)serialisation, in one place.

Records go through their own ``to_dict``/``from_dict`` (enums as their values); JSON-valued
fields are stored as compact JSON text (``separators=(",", ":")``), a JSON ``null`` as SQL NULL
where the column allows it. ``ensure_ascii`` stays on: any Python ``str`` (even one with a lone
surrogate) then encodes to valid UTF-8 for SQLite.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from interlock.packed import PACK_MIN, PackedArtifacts, PublishedView
from interlock.records import Artifact, NodeRecord, RunRecord, TaskRecord
from interlock.states import NodeState, RunState, TaskState

# ---- column lists (table column names; the record field is the same except nodes.idx) -------

RUN_STATE_COLUMNS = ("run_id", "state", "node_count", "unsettled", "failed_nodes", "retries",
                     "artifact_seq", "created_at", "updated_at", "reason")
"""Columns a transaction reads and rewrites; ``pipeline`` and ``input`` never change."""
STATIC_COLUMNS = ("run_id", "pipeline", "input")
"""Table ``run_static``: what never changes, apart from the row every step rewrites."""

NODE_FIELDS = ("index", "generation", "state", "remaining_parents", "total_tasks",
               "remaining_tasks", "reason")
NODE_COLUMNS = ("idx", *NODE_FIELDS[1:])

TASK_COLUMNS = ("run_id", "task_id", "node_index", "generation", "seq", "state", "origin",
                "origin_mode", "attempt", "attempt_id", "worker", "lease_until", "not_before",
                "error", "updated_at", "plan", "resume")
TASK_MUTABLE = ("state", "attempt", "attempt_id", "worker", "lease_until", "not_before",
                "error", "updated_at", "resume")
"""What a task's life cycle changes; the rest (identity, origin, ``plan``) is set at launch."""

ARTIFACT_COLUMNS = ("seq", "node_index", "generation", "artifact_id", "task_id", "origin",
                    "fields", "data")

# ---- SQL --------------------------------------------------------------------------------------


def _names(columns: Sequence[str]) -> str:
    return ", ".join(columns)


def _marks(columns: Sequence[str]) -> str:
    return ", ".join("?" for _ in columns)


def _assign(columns: Sequence[str]) -> str:
    return ", ".join(f"{c} = excluded.{c}" for c in columns)


SELECT_RUN_STATE = f"SELECT {_names(RUN_STATE_COLUMNS)} FROM runs WHERE run_id = ?"
SELECT_RUN_STATIC = "SELECT pipeline, input FROM run_static WHERE run_id = ?"
INSERT_RUN = (f"INSERT INTO runs ({_names(RUN_STATE_COLUMNS)}) "
              f"VALUES ({_marks(RUN_STATE_COLUMNS)}) ON CONFLICT (run_id) DO NOTHING")
INSERT_RUN_STATIC = (f"INSERT INTO run_static ({_names(STATIC_COLUMNS)}) "
                     f"VALUES ({_marks(STATIC_COLUMNS)})")
UPDATE_RUN_STATE = (f"UPDATE runs SET {', '.join(f'{c} = ?' for c in RUN_STATE_COLUMNS[1:])} "
                    "WHERE run_id = ?")
UPDATE_RUN_STATIC = "UPDATE run_static SET pipeline = ?, input = ? WHERE run_id = ?"

SELECT_NODES = f"SELECT {_names(NODE_COLUMNS)} FROM nodes WHERE run_id = ?"
UPSERT_NODE = (f"INSERT INTO nodes (run_id, {_names(NODE_COLUMNS)}) "
               f"VALUES (?, {_marks(NODE_COLUMNS)}) "
               f"ON CONFLICT (run_id, idx) DO UPDATE SET {_assign(NODE_COLUMNS[1:])}")

SELECT_TASKS = f"SELECT {_names(TASK_COLUMNS)} FROM tasks WHERE run_id = ?"
SELECT_TASKS_BY_STATE = (f"SELECT {_names(TASK_COLUMNS)} FROM tasks INDEXED BY tasks_by_state "
                         "WHERE run_id = ?")
"""For state-filtered scans: pinning the index keeps them O(matching rows) whatever the planner's
statistics say (it may otherwise prefer tasks_by_node to avoid a sort, scanning the whole run)."""
UPSERT_TASK = (f"INSERT INTO tasks ({_names(TASK_COLUMNS)}) VALUES ({_marks(TASK_COLUMNS)}) "
               f"ON CONFLICT (run_id, task_id) DO UPDATE SET {_assign(TASK_COLUMNS[2:])}")
UPDATE_TASK_STATE = (f"UPDATE tasks SET {', '.join(f'{c} = ?' for c in TASK_MUTABLE)} "
                     "WHERE run_id = ? AND task_id = ?")
UNFINISHED = "state IN ('queued', 'running', 'waiting')"
"""Spelled once: the unfinished task states, as the SQL predicate every query uses."""

CANCEL_UNFINISHED = ("UPDATE tasks INDEXED BY tasks_by_state SET state = 'cancelled', "
                     "updated_at = ? WHERE run_id = ? AND " + UNFINISHED)
"""The unfinished tasks of a run made CANCELLED in one statement (see
``SqliteRunTransaction.cancel_unfinished``); ``lease_until`` is cleared by a variant."""

SELECT_RUN_TASK_NODE = (
    f"SELECT {', '.join(f'r.{c}' for c in RUN_STATE_COLUMNS)}, "
    f"{', '.join(f't.{c}' for c in TASK_COLUMNS)}, {', '.join(f'n.{c}' for c in NODE_COLUMNS)} "
    "FROM runs AS r LEFT JOIN tasks AS t ON t.run_id = r.run_id AND t.task_id = ? "
    "LEFT JOIN nodes AS n ON n.run_id = r.run_id AND n.idx = t.node_index WHERE r.run_id = ?")
"""A run's state, one of its tasks and that task's node in one statement (primary-key lookups);
the task's and the node's columns are NULL when the task does not exist. Parameters: task id,
run id. Rows split with :data:`TASK_SLICE` and :data:`NODE_SLICE`."""
TASK_SLICE = slice(len(RUN_STATE_COLUMNS), len(RUN_STATE_COLUMNS) + len(TASK_COLUMNS))
NODE_SLICE = slice(TASK_SLICE.stop, None)

SELECT_ARTIFACTS = (f"SELECT {_names(ARTIFACT_COLUMNS)} FROM artifacts "
                    "WHERE run_id = ? AND node_index = ? AND generation = ? ORDER BY seq")
# Per artifact the JSON array text PackedArtifacts holds, built by SQLite from the stored
# columns (JSON1's json_quote; fields and data are stored as JSON text already): a wide read
# decodes nothing in Python.
SELECT_ARTIFACT_TEXTS = (
    "SELECT '[' || json_quote(artifact_id) || ',' || node_index || ',' || generation || ','"
    " || json_quote(task_id) || ',' || seq || ',' || fields || ',' || coalesce(data, 'null')"
    " || ',' || json_quote(origin) || ']' FROM artifacts"
    " WHERE run_id = ? AND node_index = ? AND generation = ? ORDER BY seq")
INSERT_ARTIFACT = (f"INSERT INTO artifacts (run_id, {_names(ARTIFACT_COLUMNS)}) "
                   f"VALUES (?, {_marks(ARTIFACT_COLUMNS)})")

# ---- values ------------------------------------------------------------------------------------

# One encoder for every call: json.dumps with non-default options builds a JSONEncoder per call.
# ``encode`` keeps no state between calls, so sharing it across threads is safe.
_ENCODER = json.JSONEncoder(separators=(",", ":"))
_DECODE = json.JSONDecoder().decode
_RUN_STATES = {s.value: s for s in RunState}
_NODE_STATES = {s.value: s for s in NodeState}
_TASK_STATES = {s.value: s for s in TaskState}
# Records are read and written field by field below (not through to_dict/from_dict, which build
# a dict per record): a claim and a completion each read and write several records.


def dumps(value: Any) -> str:
    """Compact JSON text."""
    return _ENCODER.encode(value)


def dumps_nullable(value: Any) -> str | None:
    """Compact JSON text, or SQL NULL for a JSON null."""
    return None if value is None else _ENCODER.encode(value)


def loads_nullable(text: str | None) -> Any:
    return None if text is None else json.loads(text)


# ---- runs --------------------------------------------------------------------------------------


def run_params(run: RunRecord) -> tuple[Any, ...]:
    """Values for :data:`INSERT_RUN` (:data:`RUN_STATE_COLUMNS`)."""
    return (run.run_id, *run_state_params(run)[:-1])


def run_static_params(run: RunRecord) -> tuple[Any, ...]:
    """Values for :data:`INSERT_RUN_STATIC` (:data:`STATIC_COLUMNS`)."""
    return (run.run_id, dumps(run.pipeline), dumps(run.input))


def run_state_params(run: RunRecord) -> tuple[Any, ...]:
    """Values for :data:`UPDATE_RUN_STATE` (the state columns, then ``run_id``)."""
    return (run.state.value, run.node_count, run.unsettled, run.failed_nodes, run.retries,
            run.artifact_seq, run.created_at, run.updated_at, run.reason, run.run_id)


def decode_run(row: Sequence[Any], pipeline: dict[str, Any], input: dict[str, Any]
               ) -> RunRecord:
    """A run from a :data:`RUN_STATE_COLUMNS` row plus its (decoded) static JSON."""
    return RunRecord(run_id=row[0], pipeline=pipeline, input=input, state=_RUN_STATES[row[1]],
                     node_count=row[2], unsettled=row[3], failed_nodes=row[4], retries=row[5],
                     artifact_seq=row[6], created_at=row[7], updated_at=row[8], reason=row[9])


# ---- nodes -------------------------------------------------------------------------------------


def node_params(run_id: str, node: NodeRecord) -> tuple[Any, ...]:
    """Values for :data:`UPSERT_NODE`."""
    return (run_id, node.index, node.generation, node.state.value, node.remaining_parents,
            node.total_tasks, node.remaining_tasks, node.reason)


def decode_node(row: Sequence[Any]) -> NodeRecord:
    """A node from a :data:`NODE_COLUMNS` row (the record's fields, in order)."""
    return NodeRecord(row[0], row[1], _NODE_STATES[row[2]], row[3], row[4], row[5], row[6])


# ---- tasks -------------------------------------------------------------------------------------


def task_params(task: TaskRecord) -> tuple[Any, ...]:
    """Values for :data:`UPSERT_TASK`."""
    return (task.run_id, task.task_id, task.node_index, task.generation, task.seq,
            task.state.value, task.origin, task.origin_mode, task.attempt, task.attempt_id,
            task.worker, task.lease_until, task.not_before, task.error, task.updated_at,
            dumps(task.plan), dumps_nullable(task.resume))


def task_state_params(task: TaskRecord) -> tuple[Any, ...]:
    """Values for :data:`UPDATE_TASK_STATE` (the mutable columns, then the key)."""
    return (task.state.value, task.attempt, task.attempt_id, task.worker, task.lease_until,
            task.not_before, task.error, task.updated_at, dumps_nullable(task.resume),
            task.run_id, task.task_id)


def same_launch(stored: TaskRecord, new: TaskRecord) -> bool:
    """True when ``new`` differs from ``stored`` at most in :data:`TASK_MUTABLE` columns.

    The plan is compared by identity first: records evolved from a stored one share it, so the
    common case costs nothing and the (possibly large) plan is not rewritten on every change.
    """
    return (stored.node_index == new.node_index and stored.generation == new.generation
            and stored.seq == new.seq and stored.origin == new.origin
            and stored.origin_mode == new.origin_mode
            and (stored.plan is new.plan or stored.plan == new.plan))


def decode_task(row: Sequence[Any]) -> TaskRecord:
    """A task from a :data:`TASK_COLUMNS` row."""
    resume = row[16]
    return TaskRecord(
        run_id=row[0], task_id=row[1], node_index=row[2], generation=row[3], seq=row[4],
        state=_TASK_STATES[row[5]], plan=json.loads(row[15]), origin=row[6],
        origin_mode=row[7], attempt=row[8], attempt_id=row[9], worker=row[10],
        lease_until=row[11], not_before=row[12], error=row[13],
        resume=None if resume is None else json.loads(resume), updated_at=row[14])


# ---- artifacts ---------------------------------------------------------------------------------


def artifact_params(run_id: str, artifact: Artifact) -> tuple[Any, ...]:
    """Values for :data:`INSERT_ARTIFACT`."""
    data = artifact.to_dict()
    data["fields"] = dumps(data["fields"])
    data["data"] = dumps_nullable(data["data"])
    return (run_id, *(data[c] for c in ARTIFACT_COLUMNS))


def artifacts_params(run_id: str, artifacts: Sequence[Artifact]) -> Iterator[tuple[Any, ...]]:
    """Values for :data:`INSERT_ARTIFACT` of each artifact, one at a time. A completion's
    wide outputs (a :class:`~interlock.packed.PublishedView` of packed outputs) are written
    from the fields texts their validation produced, which are what :func:`dumps` would
    give: the records are not built."""
    if isinstance(artifacts, PublishedView):
        texts = artifacts.texts()
        if texts is not None:
            node, generation, task = artifacts.node_index, artifacts.generation, artifacts.task_id
            for seq, artifact_id, origin, fields, data in texts:
                yield (run_id, seq, node, generation, artifact_id, task, origin, fields,
                       dumps_nullable(data))
            return
    for artifact in artifacts:
        yield artifact_params(run_id, artifact)


def has_json1(conn: sqlite3.Connection) -> bool:
    """Whether this SQLite has the JSON functions (built in since 3.38; optional before)."""
    try:
        conn.execute("SELECT json_quote('x')").fetchone()
    except sqlite3.OperationalError:
        return False
    return True


def artifact_texts(cursor: Iterable[Sequence[Any]], pack_from: int = PACK_MIN
                   ) -> Sequence[Artifact]:
    """The artifacts of a :data:`SELECT_ARTIFACT_TEXTS` cursor: from ``pack_from`` on packed
    as the texts came (no record built), fewer decoded. The texts are taken one row at a time
    (a wide read never holds every row tuple)."""
    texts = [row[0] for row in cursor]
    if len(texts) >= pack_from:
        return PackedArtifacts.from_texts(texts)
    return [Artifact(*_DECODE(text)) for text in texts]


def decode_artifact(row: Sequence[Any]) -> Artifact:
    data = dict(zip(ARTIFACT_COLUMNS, row, strict=True))
    data["fields"] = json.loads(data["fields"])
    data["data"] = loads_nullable(data["data"])
    return Artifact.from_dict(data)
