"""Values the kernel API hands to and takes from user code (workers, callbacks)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from interlock.jsonvalues import JSON
from interlock.records import Artifact, TaskRecord
from interlock.states import RunState

__all__ = ["Claim", "Output", "RunFinished", "TaskInput", "task_node_slug"]


_OUTPUT_KEYS = frozenset({"id", "fields", "data"})


@attrs.frozen
class Output:
    """What a worker returns per artifact: a local ``id`` (unique within the task's outputs;
    default: its position), routing ``fields`` (JSON object) and opaque ``data``."""

    fields: dict[str, JSON] = attrs.field(factory=dict)
    data: JSON = None
    id: str | None = None

    @classmethod
    def coerce(cls, value: Output | Mapping[str, Any]) -> Output:
        """Accept an Output or a dict with keys ``id``, ``fields``, ``data``."""
        if isinstance(value, Output):
            return value
        if type(value) is not dict and not isinstance(value, Mapping):
            raise TypeError(f"an output must be an Output or a mapping, got "
                            f"{type(value).__name__}")
        if not _OUTPUT_KEYS.issuperset(value):
            extra = set(value) - _OUTPUT_KEYS
            raise TypeError(f"unknown output key {sorted(extra)[0]!r} (allowed: id, fields, data)")
        return cls(fields=value.get("fields") or {}, data=value.get("data"), id=value.get("id"))


@attrs.frozen
class TaskInput:
    """Exactly what was planned for a task when its node launched.

    ``inputs``: per dependency slug, the artifacts (ids, fields, data) that reached the task,
    in ``seq`` order, as a read-only sequence: a list, or — for 1,000 artifacts or more read
    from a store with the ``stream`` ability — a :class:`~interlock.packed.PackedArtifacts` (or
    :class:`~interlock.packed.ArtifactTexts`), which holds them compactly and builds each
    record when read (equal to the list of the same records; slicing gives a list;
    ``list(seq)`` materialises them all).
    ``bindings``: resolved bindings. ``resume``: the payload given to ``resume_task``, if any.
    """

    run_id: str
    task_id: str
    node: str
    plugin: str
    attempt_id: str | None
    inputs: Mapping[str, Sequence[Artifact]]
    bindings: Mapping[str, JSON]
    config: Mapping[str, JSON]
    resume: JSON = None

    @classmethod
    def from_task(cls, task: TaskRecord, node: str, plugin: str,
                  config: Mapping[str, JSON],
                  artifacts: Callable[[int, int], Sequence[Artifact]] | None = None
                  ) -> TaskInput:
        """The input of ``task``. ``artifacts(node_index, generation)`` (a store's
        ``get_artifacts`` for the task's run) reads the artifacts a large aggregate's plan
        holds by reference; without it such a plan raises ValueError."""
        plan = task.plan
        refs = plan.get("refs")
        if refs is not None:
            if artifacts is None:
                raise ValueError(f"task {task.task_id!r} holds its input by reference: "
                                 "pass artifacts= to read it")
            from interlock.planning import resolve_refs

            assert isinstance(refs, dict)
            inputs = resolve_refs(refs, artifacts)
        else:
            inputs = {slug: [Artifact.from_dict(a) for a in arts]
                      for slug, arts in plan.get("inputs", {}).items()}
        return cls(task.run_id, task.task_id, node, plugin, task.attempt_id, inputs,
                   dict(plan.get("bindings", {})), dict(config), task.resume)


@attrs.frozen
class Claim:
    """A won claim: run the task under ``attempt_id`` and report back with it."""

    run_id: str
    task_id: str
    attempt_id: str
    input: TaskInput


@attrs.frozen
class RunFinished:
    """Passed to ``on_run_finished`` once per winning terminal transition, after commit."""

    run_id: str
    state: RunState
    reason: str | None


def task_node_slug(task_id: str) -> str:
    """The node slug in a task id (task ids are ``{slug}.{generation}.{seq}``)."""
    return task_id.rsplit(".", 2)[0]
