"""State enums and the transition tables for runs, nodes, tasks and attempts.

Every legal move is listed here and nowhere else; :func:`check` refuses the rest. Stores call
:func:`check` (or mirror these tables, e.g. in Lua) before writing a state.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Literal, TypeAlias

from interlock.errors import InterlockError

__all__ = [
    "ATTEMPT_TRANSITIONS",
    "NODE_TRANSITIONS",
    "RUN_TRANSITIONS",
    "TASK_TRANSITIONS",
    "UNFINISHED_TASK_STATES",
    "AttemptState",
    "IllegalTransition",
    "NodeState",
    "RunState",
    "TaskState",
    "check",
    "is_legal",
]


# Members are singletons compared by identity, so an identity hash is consistent with eq. Enum's
# own __hash__ is Python code (hash of the name) run for every set/dict lookup of a state: the
# stores and the transition tables do several per task.
_identity_hash = object.__hash__


class RunState(enum.Enum):
    __hash__ = _identity_hash

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CRASHED = "crashed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _RUN_TERMINAL


class NodeState(enum.Enum):
    __hash__ = _identity_hash

    WAITING = "waiting"
    LAUNCHED = "launched"
    COMPLETED = "completed"
    FILTERED = "filtered"
    SKIPPED = "skipped"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def settled(self) -> bool:
        """True once the node can no longer change in this generation."""
        return self not in (NodeState.WAITING, NodeState.LAUNCHED)


class TaskState(enum.Enum):
    __hash__ = _identity_hash

    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CRASHED = "crashed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in _TASK_FINISHED


class AttemptState(enum.Enum):
    __hash__ = _identity_hash

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CRASHED = "crashed"
    EXPIRED = "expired"
    SUSPENDED = "suspended"
    CANCELLED = "cancelled"


_RUN_TERMINAL = frozenset({RunState.COMPLETED, RunState.FAILED, RunState.CRASHED,
                           RunState.CANCELLED})
_TASK_FINISHED = frozenset({TaskState.COMPLETED, TaskState.FAILED, TaskState.CRASHED,
                            TaskState.CANCELLED})
UNFINISHED_TASK_STATES: tuple[TaskState, ...] = tuple(
    state for state in TaskState if state not in _TASK_FINISHED)
"""QUEUED, RUNNING, WAITING (in that order): the states of tasks that still hold work, as
``states=`` of ``DagStore.list_tasks`` takes them."""

R, N, T, A = RunState, NodeState, TaskState, AttemptState

RUN_TRANSITIONS: Mapping[RunState, frozenset[RunState]] = {
    R.PENDING: frozenset({R.RUNNING, R.CANCELLED}),
    R.RUNNING: frozenset({R.COMPLETED, R.FAILED, R.CRASHED, R.CANCELLED}),
    # retry_run re-opens a run from its failure boundary
    R.FAILED: frozenset({R.RUNNING}),
    R.CRASHED: frozenset({R.RUNNING}),
    R.CANCELLED: frozenset({R.RUNNING}),
    R.COMPLETED: frozenset(),
}

NODE_TRANSITIONS: Mapping[NodeState, frozenset[NodeState]] = {
    N.WAITING: frozenset({N.LAUNCHED, N.FILTERED, N.SKIPPED, N.FAILED, N.CANCELLED}),
    N.LAUNCHED: frozenset({N.COMPLETED, N.FAILED, N.CANCELLED}),
    # -> WAITING only through reopen_run (retry_run), which starts a NEW generation: failed,
    # skipped and cancelled nodes, and every descendant of theirs — which may have completed
    # (e.g. an all_done cleanup node) or been filtered — start over
    N.FAILED: frozenset({N.WAITING}),
    N.SKIPPED: frozenset({N.WAITING}),
    N.CANCELLED: frozenset({N.WAITING}),
    N.COMPLETED: frozenset({N.WAITING}),
    N.FILTERED: frozenset({N.WAITING}),
}

TASK_TRANSITIONS: Mapping[TaskState, frozenset[TaskState]] = {
    T.QUEUED: frozenset({T.RUNNING, T.CANCELLED}),
    # RUNNING -> QUEUED: the attempt failed or crashed and the retry policy grants another
    T.RUNNING: frozenset({T.COMPLETED, T.FAILED, T.CRASHED, T.WAITING, T.QUEUED, T.CANCELLED}),
    T.WAITING: frozenset({T.QUEUED, T.CANCELLED}),
    T.COMPLETED: frozenset(),
    T.FAILED: frozenset(),
    T.CRASHED: frozenset(),
    T.CANCELLED: frozenset(),
}

ATTEMPT_TRANSITIONS: Mapping[AttemptState, frozenset[AttemptState]] = {
    A.RUNNING: frozenset({A.SUCCEEDED, A.FAILED, A.CRASHED, A.EXPIRED, A.SUSPENDED,
                          A.CANCELLED}),
    A.SUCCEEDED: frozenset(),
    A.FAILED: frozenset(),
    A.CRASHED: frozenset(),
    A.EXPIRED: frozenset(),
    A.SUSPENDED: frozenset(),
    A.CANCELLED: frozenset(),
}

Kind: TypeAlias = Literal["run", "node", "task", "attempt"]
_TABLES: Mapping[str, Mapping[enum.Enum, frozenset[enum.Enum]]] = {
    "run": RUN_TRANSITIONS,  # type: ignore[dict-item]
    "node": NODE_TRANSITIONS,  # type: ignore[dict-item]
    "task": TASK_TRANSITIONS,  # type: ignore[dict-item]
    "attempt": ATTEMPT_TRANSITIONS,  # type: ignore[dict-item]
}


class IllegalTransition(InterlockError):
    """A state change that the transition tables do not allow."""

    def __init__(self, kind: str, source: enum.Enum, target: enum.Enum, what: str = "") -> None:
        self.kind, self.source, self.target = kind, source, target
        label = f"{kind} {what}".strip()
        super().__init__(f"illegal {label} transition {source.value} -> {target.value}")


_NONE: frozenset[enum.Enum] = frozenset()


def is_legal(kind: Kind, source: enum.Enum, target: enum.Enum) -> bool:
    """True when ``source -> target`` is in the table for ``kind``."""
    return target in _TABLES[kind].get(source, _NONE)


def check(kind: Kind, source: enum.Enum, target: enum.Enum, what: str = "") -> None:
    """Raise :class:`IllegalTransition` unless ``source -> target`` is legal for ``kind``."""
    if target not in _TABLES[kind].get(source, _NONE):  # is_legal, inlined: a few per task
        raise IllegalTransition(kind, source, target, what)
