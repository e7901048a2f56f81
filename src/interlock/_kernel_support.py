"""Helpers of the kernel API that need no state: output validation, task records, JSON checks."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence, Sized
from typing import Any

from interlock.errors import LimitExceeded, UsageError
from interlock.graph import Topology
from interlock.jsonvalues import JSON
from interlock.limits import Limits
from interlock.packed import PACK_MIN, PackedOutputs, pack_if_wide
from interlock.planning import TaskPlan
from interlock.protocols import DagStore
from interlock.records import Artifact, NewArtifact, NodeRecord, TaskRecord
from interlock.states import TaskState
from interlock.values import _OUTPUT_KEYS, Output

__all__ = ["error_text", "json_object", "json_value", "outputs_to_artifacts", "read_artifacts",
           "task_records"]

# One encoder for every call: json.dumps with non-default options builds a JSONEncoder per
# call. ``encode`` keeps no state between calls, so sharing it across threads is safe.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def outputs_to_artifacts(
    task_id: str, outputs: Iterable[Output | Mapping[str, Any]], limits: Limits
) -> Sequence[NewArtifact]:
    """Validate a worker's outputs and qualify their ids (``{task_id}/{local id}``).

    Malformed outputs raise UsageError; outputs over a limit raise LimitExceeded. The outputs
    are read one at a time (a generator's are never all held) and copied as they are checked:
    into a list, or from :data:`~interlock.packed.PACK_MIN` outputs on, a
    :class:`~interlock.packed.PackedOutputs` (fields kept as their JSON text).
    """
    max_bytes, max_outputs = limits.max_fields_bytes, limits.max_outputs_per_task
    out: list[NewArtifact] = []
    seen: set[str] = set()  # the qualified ids, while ``out`` is a list
    # a list known to be wide is packed from its first output (no record to pack again later)
    packing = _Packing(task_id, []) if isinstance(outputs, Sized) and \
        len(outputs) >= PACK_MIN else None
    iterator = iter(outputs)
    try:
        for k, output in enumerate(iterator):
            if k == max_outputs:
                count = k + 1 + sum(1 for _ in map(_parts, iterator))  # TypeError first
                raise LimitExceeded("max_outputs_per_task", count, max_outputs,
                                    f"task {task_id!r}")
            output_id, fields, data = _parts(output)
            del output
            local = str(k) if output_id is None else output_id
            if packing is None:
                # ids are unique when the qualified ones are (one prefix)
                artifact_id = f"{task_id}/{local}" if isinstance(local, str) and local else ""
                repeated = not artifact_id or artifact_id in seen
                seen.add(artifact_id)
            else:
                repeated = not (isinstance(local, str) and local) or packing.repeated(
                    local, k, output_id)
            if repeated:
                raise UsageError(f"task {task_id!r}: output {k} has an empty or repeated id "
                                 f"{local!r}")
            text, copy = _checked_fields(task_id, local, fields, max_bytes, packing is None)
            if not _plain_scalar(data):
                data = json_value(data, f"{_what(task_id, local)} data")
            if packing is not None:
                packing.add(output_id, text, data)
                continue
            out.append(NewArtifact(artifact_id, json.loads(text) if copy is None else copy,
                                   data))
            if len(out) == PACK_MIN:  # a wide completion: pack from here on
                packing = _Packing(task_id, out)
                out, seen = [], set()
            del fields, data
    except TypeError as exc:
        raise UsageError(f"task {task_id!r}: {exc}") from exc
    return out if packing is None else packing.done()


class _Packing:
    """The outputs of a wide completion as they are validated (see PackedOutputs)."""

    def __init__(self, task_id: str, first: list[NewArtifact]) -> None:
        self.task_id = task_id
        prefix = f"{task_id}/"
        # an id given equal to the default one (the position) is the same qualified id
        self.ids: list[str | None] = [
            None if a.artifact_id == f"{prefix}{k}" else a.artifact_id[len(prefix):]
            for k, a in enumerate(first)]
        self.seen = {local for local in self.ids if local is not None}
        self.texts = [_ENCODER.encode(a.fields) for a in first]
        self.data: list[JSON] = [a.data for a in first]

    def repeated(self, local: str, k: int, given: Any) -> bool:
        """Whether output ``k``'s local id repeats an earlier one. ``seen`` holds the given
        ids only (the worker's strings): a default id (the position, ``str(k)``) repeats a
        given one, or is repeated by a given one naming the position of an earlier default."""
        if given is None:
            return local in self.seen
        if local in self.seen:
            return True
        self.seen.add(local)
        if local.isascii() and local.isdigit() and str(int(local)) == local:
            position = int(local)
            return position < k and self.ids[position] is None
        return False

    def add(self, given: str | None, text: str, data: JSON) -> None:
        self.ids.append(given)
        self.texts.append(text)
        self.data.append(data)

    def done(self) -> PackedOutputs:
        self.seen.clear()
        return PackedOutputs(self.task_id, self.ids, self.texts, self.data)


def read_artifacts(store: DagStore, stream: bool, run_id: str, node_index: int,
                   generation: int) -> Sequence[Artifact]:
    """A node generation's artifacts: with the ``stream`` ability read one at a time and, from
    :data:`~interlock.packed.PACK_MIN` on, packed as they arrive; else ``get_artifacts``."""
    if stream:
        return pack_if_wide(store.iter_artifacts(  # type: ignore[attr-defined]
            run_id, node_index, generation))
    return store.get_artifacts(run_id, node_index, generation)


def _checked_fields(task_id: str, local: str, fields: Any, max_bytes: int, copy: bool
                    ) -> tuple[str, dict[str, JSON] | None]:
    """The JSON text of an output's fields (validated, measured) and, with ``copy``, a plain
    copy of them when they are a flat object of scalars (None: decode the text for a copy)."""
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
        raise LimitExceeded("max_fields_bytes", len(text), max_bytes, _what(task_id, local))
    return text, _flat_copy(fields) if copy else None


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
