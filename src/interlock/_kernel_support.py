"""Helpers of the kernel API that need no state: output validation, task records, JSON checks."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from interlock.errors import LimitExceeded, UsageError
from interlock.graph import Topology
from interlock.jsonvalues import JSON
from interlock.limits import Limits
from interlock.planning import TaskPlan
from interlock.records import NewArtifact, NodeRecord, TaskRecord
from interlock.states import TaskState
from interlock.values import Output

__all__ = ["error_text", "json_object", "json_value", "outputs_to_artifacts", "task_records"]


def outputs_to_artifacts(
    task_id: str, outputs: Iterable[Output | Mapping[str, Any]], limits: Limits
) -> list[NewArtifact]:
    """Validate a worker's outputs and qualify their ids (``{task_id}/{local id}``).

    Malformed outputs raise UsageError; outputs over a limit raise LimitExceeded.
    """
    try:
        items = [Output.coerce(o) for o in outputs]
    except TypeError as exc:
        raise UsageError(f"task {task_id!r}: {exc}") from exc
    if len(items) > limits.max_outputs_per_task:
        raise LimitExceeded("max_outputs_per_task", len(items),
                            limits.max_outputs_per_task, f"task {task_id!r}")
    out: list[NewArtifact] = []
    seen: set[str] = set()
    for k, item in enumerate(items):
        local = str(k) if item.id is None else item.id
        if not isinstance(local, str) or not local or local in seen:
            raise UsageError(f"task {task_id!r}: output {k} has an empty or repeated id "
                             f"{local!r}")
        seen.add(local)
        what = f"task {task_id!r} output {local!r}"
        if not isinstance(item.fields, Mapping):
            raise UsageError(f"{what} fields must be a JSON object, got "
                             f"{type(item.fields).__name__}")
        # one encoding validates the fields, measures them and (decoded) deep-copies them
        text = _encode(dict(item.fields), f"{what} fields")
        if len(text) > limits.max_fields_bytes:
            raise LimitExceeded("max_fields_bytes", len(text), limits.max_fields_bytes, what)
        fields = json.loads(text)
        data = item.data if _plain_scalar(item.data) else json_value(item.data, f"{what} data")
        out.append(NewArtifact(f"{task_id}/{local}", fields, data))
    return out


def task_records(run_id: str, topology: Topology, node: NodeRecord,
                 plans: Sequence[TaskPlan], now: float) -> list[TaskRecord]:
    """Task ids are ``{slug}.{generation}.{seq}``: deterministic, so launches are repeatable."""
    slug = topology.slugs[node.index]
    return [
        TaskRecord(run_id, f"{slug}.{node.generation}.{plan.seq}", node.index, node.generation,
                   plan.seq, TaskState.QUEUED,
                   {"inputs": {s: [a.to_dict() for a in arts] for s, arts in plan.inputs.items()},
                    "bindings": dict(plan.bindings)},
                   plan.origin, plan.origin_mode, updated_at=now)
        for plan in plans
    ]


def _encode(value: Any, what: str) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{what} is not JSON: {exc}") from exc


def _plain_scalar(value: Any) -> bool:
    """An immutable JSON scalar needs no validating copy (the common ``data``: a path)."""
    kind = type(value)
    return (value is None or kind is str or kind is bool or kind is int
            or (kind is float and math.isfinite(value)))


def json_value(value: Any, what: str) -> JSON:
    """A validated deep copy of a JSON value; UsageError naming ``what`` otherwise."""
    return json.loads(_encode(value, what))


def json_object(value: Any, what: str) -> dict[str, JSON]:
    if not isinstance(value, Mapping):
        raise UsageError(f"{what} must be a JSON object, got {type(value).__name__}")
    result = json_value(dict(value), what)
    assert isinstance(result, dict)
    return result


def error_text(error: str | BaseException) -> str:
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {error}"
    return str(error)
