"""Records <-> rows: column lists, SQL fragments and (de)serialisation, in one place.

Records go through their own ``to_dict``/``from_dict`` (enums as their values); JSON-valued
fields are stored as compact JSON text (``separators=(",", ":")``), a JSON ``null`` as SQL NULL
where the column allows it. ``ensure_ascii`` stays on: any Python ``str`` (even one with a lone
surrogate) then encodes to valid UTF-8 for SQLite.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from interlock.records import Artifact, NodeRecord, RunRecord, TaskRecord

# ---- column lists (table column names; the record field is the same except nodes.idx) -------

RUN_STATE_COLUMNS = ("run_id", "state", "node_count", "unsettled", "failed_nodes", "retries",
                     "artifact_seq", "created_at", "updated_at", "reason")
"""Columns a transaction reads and rewrites; ``pipeline`` and ``input`` never change."""
RUN_COLUMNS = (*RUN_STATE_COLUMNS, "pipeline", "input")

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
SELECT_RUN_STATIC = "SELECT pipeline, input FROM runs WHERE run_id = ?"
INSERT_RUN = (f"INSERT INTO runs ({_names(RUN_COLUMNS)}) VALUES ({_marks(RUN_COLUMNS)}) "
              "ON CONFLICT (run_id) DO NOTHING")
UPDATE_RUN_STATE = (f"UPDATE runs SET {', '.join(f'{c} = ?' for c in RUN_STATE_COLUMNS[1:])} "
                    "WHERE run_id = ?")
UPDATE_RUN_STATIC = "UPDATE runs SET pipeline = ?, input = ? WHERE run_id = ?"

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

SELECT_ARTIFACTS = (f"SELECT {_names(ARTIFACT_COLUMNS)} FROM artifacts "
                    "WHERE run_id = ? AND node_index = ? AND generation = ? ORDER BY seq")
INSERT_ARTIFACT = (f"INSERT INTO artifacts (run_id, {_names(ARTIFACT_COLUMNS)}) "
                   f"VALUES (?, {_marks(ARTIFACT_COLUMNS)})")

# ---- values ------------------------------------------------------------------------------------


def dumps(value: Any) -> str:
    """Compact JSON text."""
    return json.dumps(value, separators=(",", ":"))


def dumps_nullable(value: Any) -> str | None:
    """Compact JSON text, or SQL NULL for a JSON null."""
    return None if value is None else dumps(value)


def loads_nullable(text: str | None) -> Any:
    return None if text is None else json.loads(text)


# ---- runs --------------------------------------------------------------------------------------


def run_params(run: RunRecord) -> tuple[Any, ...]:
    """Values for :data:`RUN_COLUMNS`."""
    data = run.to_dict()
    return (*(data[c] for c in RUN_STATE_COLUMNS), dumps(data["pipeline"]), dumps(data["input"]))


def run_state_params(run: RunRecord) -> tuple[Any, ...]:
    """Values for :data:`UPDATE_RUN_STATE` (the state columns, then ``run_id``)."""
    data = run.to_dict()
    return (*(data[c] for c in RUN_STATE_COLUMNS[1:]), run.run_id)


def decode_run(row: Sequence[Any], pipeline: dict[str, Any], input: dict[str, Any]
               ) -> RunRecord:
    """A run from a :data:`RUN_STATE_COLUMNS` row plus its (decoded) static JSON."""
    return RunRecord.from_dict({**dict(zip(RUN_STATE_COLUMNS, row, strict=True)),
                                "pipeline": pipeline, "input": input})


# ---- nodes -------------------------------------------------------------------------------------


def node_params(run_id: str, node: NodeRecord) -> tuple[Any, ...]:
    """Values for :data:`UPSERT_NODE`."""
    data = node.to_dict()
    return (run_id, *(data[f] for f in NODE_FIELDS))


def decode_node(row: Sequence[Any]) -> NodeRecord:
    return NodeRecord.from_dict(dict(zip(NODE_FIELDS, row, strict=True)))


# ---- tasks -------------------------------------------------------------------------------------


def task_params(task: TaskRecord) -> tuple[Any, ...]:
    """Values for :data:`UPSERT_TASK`."""
    data = task.to_dict()
    data["plan"] = dumps(data["plan"])
    data["resume"] = dumps_nullable(data["resume"])
    return tuple(data[c] for c in TASK_COLUMNS)


def task_state_params(task: TaskRecord) -> tuple[Any, ...]:
    """Values for :data:`UPDATE_TASK_STATE` (the mutable columns, then the key)."""
    data = task.to_dict()
    data["resume"] = dumps_nullable(data["resume"])
    return (*(data[c] for c in TASK_MUTABLE), task.run_id, task.task_id)


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
    data = dict(zip(TASK_COLUMNS, row, strict=True))
    data["plan"] = json.loads(data["plan"])
    data["resume"] = loads_nullable(data["resume"])
    return TaskRecord.from_dict(data)


# ---- artifacts ---------------------------------------------------------------------------------


def artifact_params(run_id: str, artifact: Artifact) -> tuple[Any, ...]:
    """Values for :data:`INSERT_ARTIFACT`."""
    data = artifact.to_dict()
    data["fields"] = dumps(data["fields"])
    data["data"] = dumps_nullable(data["data"])
    return (run_id, *(data[c] for c in ARTIFACT_COLUMNS))


def decode_artifact(row: Sequence[Any]) -> Artifact:
    data = dict(zip(ARTIFACT_COLUMNS, row, strict=True))
    data["fields"] = json.loads(data["fields"])
    data["data"] = loads_nullable(data["data"])
    return Artifact.from_dict(data)
