"""The JSON texts the Redis scripts store and compare: one encoding, and the jmap layout.

Every value a script stores, compares or copies is the text :func:`dumps` produces, so what
Python wrote is byte for byte what Python reads back. A *jmap* (see ``lua/_common.lua``) is a
JSON object whose values are JSON texts: Lua decodes and re-encodes only strings, never a
number or a user value. These functions run once or more per task on the hot path (launch,
claim, complete): they avoid building intermediate dicts where the layout is fixed.
"""

from __future__ import annotations

import enum
import json
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from interlock.packed import PACK_MIN, ArtifactTexts
from interlock.records import Artifact, TaskRecord
from interlock.states import TaskState
from interlock_redis.scripts import text

__all__ = ["artifacts", "decode_jmap", "dumps", "encode_jmap", "task_parts", "task_record",
           "task_records", "tasks_parts", "wide_artifacts"]

_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))
_encode_str: Callable[[str], str] = json.encoder.encode_basestring_ascii


def dumps(value: Any) -> str:
    """The one JSON encoding every text stored or compared by the scripts goes through
    (``json.dumps(value, ensure_ascii=True, separators=(",", ":"))``, with fast paths for
    scalars that produce the same text)."""
    kind = type(value)
    if kind is str:
        return _encode_str(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return int.__repr__(value)
    if kind is float and math.isfinite(value):
        return float.__repr__(value)
    return _ENCODER.encode(value)


def encode_jmap(data: Mapping[str, Any]) -> str:
    """A jmap: a JSON object whose values are the JSON texts of ``data``'s values."""
    return _ENCODER.encode({key: dumps(value) for key, value in data.items()})


_KEYS: dict[str, str] = {}  # key -> its JSON text (record keys: a handful of names)


def _key(name: str) -> str:
    encoded = _KEYS.get(name)
    if encoded is None:
        encoded = _encode_str(name)
        if len(_KEYS) < 4096:
            _KEYS[name] = encoded
    return encoded


def decode_jmap(raw: str | bytes, **extra: str | bytes | None) -> dict[str, Any]:
    """The values of a jmap, decoded. The texts are spliced into one JSON object and parsed
    once (keys are re-encoded, values are JSON texts already); ``extra`` JSON texts (a task's
    plan) join the same parse."""
    texts: dict[str, Any] = json.loads(raw)
    joined = ",".join([f"{_key(key)}:{value}" for key, value in texts.items()])
    for key, value in extra.items():
        if value is not None:
            joined = f"{joined},{_key(key)}:{text(value)}" if joined \
                else f"{_key(key)}:{text(value)}"
    result: dict[str, Any] = json.loads("{" + joined + "}")
    return result


# TaskRecord's attributes but the plan, in declaration order (the order to_dict gives): one
# getter for all of them, and the JSON text of each key with ':' (the key part of a jmap member)
_TASK_NAMES: tuple[str, ...] = tuple(
    field.name for field in attrs.fields(TaskRecord) if field.name != "plan")
_TASK_VALUES = operator.attrgetter(*_TASK_NAMES)
_TASK_HEADS: tuple[str, ...] = tuple(_encode_str(name) + ":" for name in _TASK_NAMES)
_UNSET = object()


def task_parts(task: TaskRecord) -> tuple[str, str]:
    """The task's jmap without its plan, and the plan's JSON text: the text
    ``encode_jmap`` of ``task.to_dict()`` minus ``plan`` gives, without the dict."""
    return tasks_parts([task])[0]


def tasks_parts(tasks: Sequence[TaskRecord]) -> list[tuple[str, str]]:
    """``task_parts`` of each task. The tasks of a launch share most attribute values (the
    same run id, node, generation, state, timestamps: the very objects), so a member whose
    value is the object the previous task had is reused, not encoded again."""
    heads = _TASK_HEADS
    last: list[object] = [_UNSET] * len(heads)
    memo = [""] * len(heads)
    out = []
    for task in tasks:
        members = []
        for k, value in enumerate(_TASK_VALUES(task)):
            if value is not last[k]:
                text_ = dumps(value.value if isinstance(value, enum.Enum) else value)
                last[k] = value
                memo[k] = heads[k] + _encode_str(text_)
            members.append(memo[k])
        out.append(("{" + ",".join(members) + "}", dumps(task.plan)))
    return out


def task_record(raw: str | bytes, plan: str | bytes | None) -> TaskRecord:
    """The TaskRecord of a stored jmap and plan text (an absent plan is ``{}``)."""
    data = decode_jmap(raw, plan=plan)
    data.setdefault("plan", {})
    return TaskRecord.from_dict(data)


def _joined(raws: Sequence[str | bytes]) -> str:
    """The JSON array text of several JSON texts (one parse for all of them)."""
    return "[" + ",".join([text(raw) for raw in raws]) + "]"


def artifacts(raws: Sequence[str | bytes]) -> list[Artifact]:
    """The artifacts of their stored JSON texts, built at once (:class:`ArtifactTexts`'
    iteration: one parse per chunk of texts, not one per text)."""
    return list(ArtifactTexts(raws))


def wide_artifacts(raws: Sequence[str | bytes]) -> Sequence[Artifact]:
    """``artifacts(raws)``, or from :data:`~interlock.packed.PACK_MIN` texts on, the texts as
    they came (:class:`~interlock.packed.ArtifactTexts`: each record is built when read — the
    planning of a wide launch, or by reference, reads few or reads them batch by batch)."""
    if len(raws) >= PACK_MIN:
        return ArtifactTexts(raws)
    return artifacts(raws)


def task_records(items: Sequence[tuple[str | bytes, str | bytes | None]]) -> list[TaskRecord]:
    """``task_record`` of each (jmap, plan) pair, in two JSON parses for the whole list (a
    batch of claims): what ``task_record`` gives for each, with less per-record work."""
    if not items:
        return []
    heads: list[dict[str, str]] = json.loads(_joined([raw for raw, _ in items]))
    objects = []
    for texts, (_, plan) in zip(heads, items, strict=True):
        members = [f"{_key(key)}:{value}" for key, value in texts.items()]
        members.append('"plan":' + ("{}" if plan is None else text(plan)))
        objects.append("{" + ",".join(members) + "}")
    out = []
    for data in json.loads("[" + ",".join(objects) + "]"):
        data["state"] = TaskState(data["state"])
        out.append(TaskRecord(**data))
    return out
