"""Store records: the frozen values a :class:`~interlock.protocols.DagStore` persists.

They are plain data (JSON-compatible fields, enums for states) so a store can serialise them to
rows, hashes or documents. ``to_dict``/``from_dict`` give that JSON form once for every adapter.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeAlias

import attrs

from interlock.jsonvalues import JSON
from interlock.states import NodeState, RunState, TaskState

__all__ = [
    "Artifact",
    "CompletionItem",
    "FollowUp",
    "Followed",
    "NewArtifact",
    "NodeFacts",
    "NodeLaunch",
    "NodeRecord",
    "OriginMode",
    "Outcome",
    "RunRecord",
    "TaskRecord",
    "TaskRef",
    "Transition",
]

OriginMode: TypeAlias = Literal["inherit", "self", "broadcast"]
"""How a task's outputs get their origin: ``inherit`` the task's ``origin``; ``self`` (each
output is its own origin: roots and ``correlation: new``); ``broadcast`` (no origin: aggregate)."""

Outcome: TypeAlias = Literal["applied", "duplicate", "stale"]
"""``applied``: this call changed state. ``duplicate``: an exact repeat of an applied call; the
first result stands and nothing changed. ``stale``: fenced out (old attempt, old generation,
finished run); nothing changed."""


_NAMES: dict[type, tuple[str, ...]] = {}


def _to_json(record: Any) -> dict[str, Any]:
    cls = type(record)
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = tuple(field.name for field in attrs.fields(cls))
    out: dict[str, Any] = {}
    for name in names:
        value = getattr(record, name)
        out[name] = value.value if isinstance(value, enum.Enum) else value
    return out


@attrs.frozen
class RunRecord:
    """A run: the pipeline snapshot it runs, its input, state and settle counters.

    ``unsettled`` counts nodes not yet settled in their current generation; when a write brings
    it to 0 the same write commits the terminal state (``failed_nodes`` > 0 -> FAILED).
    ``retries`` counts applied :meth:`~interlock.protocols.DagStore.reopen_run` calls (a fence).
    ``artifact_seq`` is the last run-wide artifact sequence number handed out.
    """

    run_id: str
    pipeline: dict[str, JSON]
    input: dict[str, JSON]
    state: RunState
    node_count: int
    unsettled: int
    failed_nodes: int = 0
    retries: int = 0
    artifact_seq: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _to_json(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunRecord:
        return cls(**{**data, "state": RunState(data["state"])})


@attrs.frozen
class NodeRecord:
    """A node of a run in its current ``generation``.

    ``remaining_parents``: parents not yet settled; 0 means the node is ready to be planned.
    ``remaining_tasks``: launched tasks not yet completed; 0 completes the node.
    """

    index: int
    generation: int
    state: NodeState
    remaining_parents: int
    total_tasks: int = 0
    remaining_tasks: int = 0
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _to_json(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NodeRecord:
        return cls(**{**data, "state": NodeState(data["state"])})


@attrs.frozen
class TaskRecord:
    """One unit of work, planned once at launch.

    ``plan`` is the persisted task input: ``{"inputs": {dep_slug: [artifact dict, ...]},
    "bindings": {name: value}}``; an aggregate task over at least
    :data:`~interlock.planning.REF_MIN_ARTIFACTS` artifacts holds ``{"refs": {dep_slug:
    [[node_index, generation, count, [[start, stop], ...]], ...]}, "bindings": ...}`` instead:
    the positions of its artifacts among the stored artifacts of those node generations (read
    back by ``Kernel.claim_task``/``build_task_input``). ``attempt_id`` is the current (or last)
    attempt; only a callback naming it may change the task. ``not_before``: do not start before
    this time.
    """

    run_id: str
    task_id: str
    node_index: int
    generation: int
    seq: int
    state: TaskState
    plan: dict[str, JSON]
    origin: str | None
    origin_mode: OriginMode
    attempt: int = 0
    attempt_id: str | None = None
    worker: str | None = None
    lease_until: float | None = None
    not_before: float = 0.0
    error: str | None = None
    resume: JSON = None
    updated_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return _to_json(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskRecord:
        return cls(**{**data, "state": TaskState(data["state"])})

    def output_origin(self, artifact_id: str) -> str | None:
        """The origin of an output of this task (the rule every store applies)."""
        if self.origin_mode == "self":
            return artifact_id
        if self.origin_mode == "broadcast":
            return None
        return self.origin


@attrs.frozen
class NewArtifact:
    """An output as the kernel hands it to ``complete_task``: id already qualified by task."""

    artifact_id: str
    fields: dict[str, JSON]
    data: JSON = None


@attrs.frozen
class CompletionItem:
    """One completion of a batch (``BatchedDagStore.complete_tasks``)."""

    task_id: str
    attempt_id: str
    outputs: tuple[NewArtifact, ...]
    children: tuple[int, ...]


@attrs.frozen
class Artifact:
    """A published output. ``seq`` is run-wide publication order, assigned by the store;
    ``origin`` is derived by the store with :meth:`TaskRecord.output_origin`."""

    artifact_id: str
    node_index: int
    generation: int
    task_id: str
    seq: int
    fields: dict[str, JSON]
    data: JSON
    origin: str | None

    def to_dict(self) -> dict[str, Any]:
        # spelled out: called once per artifact per consuming task when plans are written
        return {"artifact_id": self.artifact_id, "node_index": self.node_index,
                "generation": self.generation, "task_id": self.task_id, "seq": self.seq,
                "fields": self.fields, "data": self.data, "origin": self.origin}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Artifact:
        return cls(**data)


@attrs.frozen
class NodeFacts:
    """A node record with the artifacts of its current generation (empty unless COMPLETED):
    what planning needs to know about a node. Returned by the ``prefetch`` ability. A store
    may give the artifacts as any read-only sequence (a wide completion's are built on
    access: :class:`interlock.packed.PublishedView`)."""

    node: NodeRecord
    artifacts: Sequence[Artifact] = ()


@attrs.frozen
class Transition:
    """What a mutating store call did.

    ``ready``: child node indices this call made ready (their ``remaining_parents`` hit 0 while
    WAITING). ``run_state``: set only on the one call that committed the run's terminal state.
    """

    outcome: Outcome
    ready: tuple[int, ...] = ()
    run_state: RunState | None = None

    @property
    def applied(self) -> bool:
        return self.outcome == "applied"


@attrs.frozen
class TaskRef:
    """What a Dispatcher hands to workers: enough to claim the task."""

    run_id: str
    task_id: str
    plugin: str
    not_before: float = 0.0


@attrs.frozen
class FollowUp:
    """A launch (and optionally a claim) to apply in the same atomic step as the completion
    that released the node (the ``follow`` ability): all ``tasks`` of ``node_index`` at
    ``generation``, and ``claim = (task_id, attempt_id, worker, lease_until)`` of one of them."""

    node_index: int
    generation: int
    tasks: tuple[TaskRecord, ...]
    claim: tuple[str, str, str, float | None] | None = None


@attrs.frozen
class NodeLaunch:
    """One ``launch_node`` of a ``launch_nodes`` call (the ``launch_many`` ability): ``tasks``
    of ``node_index`` at ``generation``, ``total_tasks`` in all."""

    node_index: int
    generation: int
    tasks: tuple[TaskRecord, ...]
    total_tasks: int


@attrs.frozen
class Followed:
    """What ``complete_and_follow`` did: the completion's transition, the facts planning was
    given (empty when the store offered none), and the follow-up applied with the claim's
    result (``None`` when there was none: the caller plans and launches as usual)."""

    transition: Transition
    facts: tuple[NodeFacts, ...] = ()
    follow_up: FollowUp | None = None
    claimed: TaskRecord | None = None
