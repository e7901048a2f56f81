"""Decoding the Lua scripts' replies (and encoding a few of their arguments) for RedisStore.

Kept apart from :mod:`interlock_redis.store` so that the store module holds the operations and
this one the wire shapes; every function here is pure.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from interlock.errors import UsageError
from interlock.packed import PackedOutputs
from interlock.records import (
    NewArtifact,
    NodeFacts,
    NodeRecord,
    Outcome,
    RunRecord,
    TaskRecord,
    Transition,
)
from interlock.states import IllegalTransition, NodeState, RunState, TaskState
from interlock_redis.codec import (
    decode_jmap,
    dumps,
    task_record,
    task_records,
    tasks_parts,
    wide_artifacts,
)
from interlock_redis.scripts import Arg, text

_ENUMS: Mapping[str, Any] = {"run": RunState, "node": NodeState, "task": TaskState}


def decode_node(raw: str | bytes) -> NodeRecord:
    return NodeRecord.from_dict(decode_jmap(raw))


def decode_run(pairs: Mapping[Any, Any]) -> RunRecord:
    return RunRecord.from_dict({text(k): json.loads(v) for k, v in pairs.items()})


def opt_arg(value: Any) -> str:
    """JSON text of an optional enum/value passed to a script, '' for None."""
    if value is None:
        return ""
    return dumps(value.value if hasattr(value, "value") else value)



def index_args(children: Iterable[int]) -> list[Arg]:
    return [str(int(i)) for i in children]


def checked(reply: Any, run_id: str) -> Any:
    """Raise for the scripts' error replies ({'illegal', ...}, {'nonode', index})."""
    if isinstance(reply, list) and reply:
        tag = text(reply[0]) if isinstance(reply[0], bytes | str) else None
        if tag == "illegal":
            kind, source, target, what = (text(x) for x in reply[1:5])
            enum = _ENUMS[kind]
            raise IllegalTransition(kind, enum(source), enum(target), what)
        if tag == "nonode":
            raise UsageError(f"run {run_id!r} has no node {text(reply[1])}")
    return reply


def decode_outcome(reply: Any) -> Outcome:
    value = text(reply)
    if value not in ("applied", "duplicate", "stale"):  # pragma: no cover - script bug
        raise RuntimeError(f"unexpected script reply {reply!r}")
    return value  # type: ignore[return-value]


def output_args(outputs: Sequence[NewArtifact]) -> list[Arg]:
    """Per output: its id (JSON text) and the members after "artifact_id" ('"fields":...,
    "data":...'); the completion scripts add node, generation, task, seq and origin."""
    args: list[Arg] = []
    if isinstance(outputs, PackedOutputs):  # a wide completion: its fields texts as they are
        for k in range(len(outputs)):
            args += [dumps(outputs.artifact_id(k)),
                     f'"fields":{outputs.fields_text(k)},"data":{dumps(outputs.data(k))}']
        return args
    for output in outputs:
        body = dumps({"fields": output.fields, "data": output.data})
        args += [dumps(output.artifact_id), body[1:-1]]
    return args


WIDE_PARENTS = 32
"""A child with more parents than this has its parents stored in the run (``Keys.parents``)
by a completion that sends them once, and named by the later ones, instead of sent with each:
a join of N parents then costs O(1) per completion, not O(N) (O(N^2) in all)."""


def wide_children(children: Sequence[int], parents: Sequence[Sequence[int]]) -> list[int]:
    """The children of more than :data:`WIDE_PARENTS` parents."""
    return [child for child, its in zip(children, parents, strict=True)
            if len(its) > WIDE_PARENTS]


def prefetch_args(children: Sequence[int], parents: Sequence[Sequence[int]],
                  send: Collection[int] = ()) -> list[Arg]:
    """The children block of complete_task_prefetch.lua's ARGV: their number, then per child
    its index, its parents' count and their indices — for a child of more than
    :data:`WIDE_PARENTS` parents only ``-P`` (stored in the run), unless it is in ``send``:
    then ``sP`` and the indices, which the script stores."""
    args: list[Arg] = [len(children)]
    for child, its in zip(children, parents, strict=True):
        if len(its) <= WIDE_PARENTS:
            args += [child, len(its), *index_args(its)]
        elif child in send:
            args += [child, f"s{len(its)}", *index_args(its)]
        else:
            args += [child, f"-{len(its)}"]
    return args


def wants_parents(reply: Any) -> bool:
    """Whether a prefetching script answered ``{'parents', child}`` (before any write): a
    wide child's parents are not stored in the run; repeat, sending them."""
    return (isinstance(reply, list) and len(reply) == 2
            and isinstance(reply[0], bytes | str) and text(reply[0]) == "parents")


def decode_facts(flat: Sequence[Any]) -> list[NodeFacts]:
    """Decode complete_task_prefetch.lua's flat facts list."""
    facts: list[NodeFacts] = []
    i = 0
    while i < len(flat):
        node = decode_node(flat[i + 1])
        count = int(flat[i + 2])
        arts = wide_artifacts(flat[i + 3:i + 3 + count])
        facts.append(NodeFacts(node, tuple(arts) if isinstance(arts, list) else arts))
        i += 3 + count
    return facts


def decode_transition(reply: Any) -> Transition:
    outcome = decode_outcome(reply[0])
    state = text(reply[1]) if len(reply) > 1 else ""
    run_state = RunState(json.loads(state)) if state else None
    return Transition(outcome, tuple(int(i) for i in reply[2:]), run_state)


def launch_args(tasks: Sequence[TaskRecord]) -> tuple[list[Arg], bool]:
    """The (task id, jmap without plan, plan JSON) triples of a launch's ARGV, and whether any
    task is written RUNNING with a lease (the run must then join the leased-runs set)."""
    args: list[Arg] = []
    leased = False
    for task, (head, plan) in zip(tasks, tasks_parts(tasks), strict=True):
        args += [task.task_id, head, plan]
        leased = leased or (task.state is TaskState.RUNNING and task.lease_until is not None)
    return args, leased


def decode_task_replies(replies: Sequence[Any]) -> list[tuple[Outcome, TaskRecord | None]]:
    """``decode_task_reply`` of each reply (claim_tasks.lua's), the records decoded together."""
    records = iter(task_records([(reply[1], reply[2] if len(reply) > 2 else None)
                                 for reply in replies if len(reply) >= 2]))
    return [(decode_outcome(reply[0]), next(records) if len(reply) >= 2 else None)
            for reply in replies]


def decode_task_reply(reply: Any) -> tuple[Outcome, TaskRecord | None]:
    outcome = decode_outcome(reply[0])
    if len(reply) < 2:
        return outcome, None
    return outcome, task_record(reply[1], reply[2] if len(reply) > 2 else None)


