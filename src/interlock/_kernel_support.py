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
from interlock.values import _OUTPUT_KEYS, Output

__all__ = ["error_text", "json_object", "json_value", "outputs_to_artifacts", "task_records"]

# One encoder for every call: json.dumps with non-default options builds a JSONEncoder per
# call. ``encode`` keeps no state between calls, so sharing it across threads is safe.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def outputs_to_artifacts(
    task_id: str, outputs: Iterable[Output | Mapping[str, Any]], limits: Limits
) -> list[NewArtifact]:
    """Validate a worker's outputs and qualify their ids (``{task_id}/{local id}``).

    Malformed outputs raise UsageError; outputs over a limit raise LimitExceeded.
    """
    try:
        items = [_parts(o) for o in outputs]
    except TypeError as exc:
        raise UsageError(f"task {task_id!r}: {exc}") from exc
    if len(items) > limits.max_outputs_per_task:
        raise LimitExceeded("max_outputs_per_task", len(items),
                            limits.max_outputs_per_task, f"task {task_id!r}")
    max_bytes = limits.max_fields_bytes
    out: list[NewArtifact] = []
    seen: set[str] = set()
    for k in range(len(items)):
        output_id, fields, data = items[k]
        items[k] = None  # type: ignore[call-overload]  # the worker's copy can go as we copy
        local = str(k) if output_id is None else output_id
        # ids are unique when the qualified ones are (one prefix); ``seen`` holds those, which
        # the outputs keep anyway, rather than a second string per output
        artifact_id = f"{task_id}/{local}" if isinstance(local, str) and local else ""
        if not artifact_id or artifact_id in seen:
            raise UsageError(f"task {task_id!r}: output {k} has an empty or repeated id "
                             f"{local!r}")
        seen.add(artifact_id)
        if type(fields) is not dict:
            if not isinstance(fields, Mapping):
                raise UsageError(f"{_what(task_id, local)} fields must be a JSON object, got "
                                 f"{type(fields).__name__}")
            fields = dict(fields)
        # one encoding validates the fields and measures them; the copy is the decoded text,
        # or, for a flat object of scalars (the common case), a plain dict copy — the same
        # value, without the decoder
        try:
            text = _ENCODER.encode(fields)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{_what(task_id, local)} fields is not JSON: {exc}") from exc
        if len(text) > max_bytes:
            raise LimitExceeded("max_fields_bytes", len(text), max_bytes,
                                _what(task_id, local))
        copy = _flat_copy(fields)
        if not _plain_scalar(data):
            data = json_value(data, f"{_what(task_id, local)} data")
        out.append(NewArtifact(artifact_id, json.loads(text) if copy is None else copy, data))
    return out


def _parts(output: Output | Mapping[str, Any]) -> tuple[Any, Any, Any]:
    """``(id, fields, data)`` of an output, as :meth:`Output.coerce` reads them (TypeError
    likewise); a plain dict with known keys is read directly, without building an Output."""
    if type(output) is dict and _OUTPUT_KEYS.issuperset(output):
        return output.get("id"), output.get("fields") or {}, output.get("data")
    item = Output.coerce(output)
    return item.id, item.fields, item.data


def _what(task_id: str, local: str) -> str:
    return f"task {task_id!r} output {local!r}"


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _flat_copy(fields: dict[str, Any]) -> dict[str, Any] | None:
    """A copy of already-encoded ``fields`` if every key is a str and every value a scalar of
    an exact JSON type (then ``dict()`` copies as deeply as a JSON round trip, and a float is
    finite since the encoder refuses NaN); None otherwise."""
    for key, value in fields.items():
        if type(key) is not str or type(value) not in _SCALARS:
            return None
    return dict(fields)


def task_records(run_id: str, topology: Topology, node: NodeRecord,
                 plans: Sequence[TaskPlan], now: float) -> list[TaskRecord]:
    """Task ids are ``{slug}.{generation}.{seq}``: deterministic, so launches are repeatable."""
    slug = topology.slugs[node.index]
    return [
        TaskRecord(run_id, f"{slug}.{node.generation}.{plan.seq}", node.index, node.generation,
                   plan.seq, TaskState.QUEUED, _plan_dict(plan), plan.origin, plan.origin_mode,
                   updated_at=now)
        for plan in plans
    ]


def _plan_dict(plan: TaskPlan) -> dict[str, JSON]:
    """The persisted plan: the artifacts themselves, or (a large aggregate) references to
    them (``refs``: see :func:`interlock.planning.resolve_refs`)."""
    if plan.refs is not None:
        refs: JSON = plan.refs
        return {"refs": refs, "bindings": dict(plan.bindings)}
    return {"inputs": {s: [a.to_dict() for a in arts] for s, arts in plan.inputs.items()},
            "bindings": dict(plan.bindings)}


def _encode(value: Any, what: str) -> str:
    try:
        return _ENCODER.encode(value)
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
