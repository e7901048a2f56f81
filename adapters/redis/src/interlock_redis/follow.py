"""The ``follow`` ability on Redis: a completion and the launch (+ claim) of the node it
releases in one script, planned *before* the script from predicted facts.

A Redis script cannot call back into Python, so the planning callback of ``complete_and_follow``
runs first, on the facts the completion will produce — predictable when the task's node has one
child whose only parent it is, the node has one task (this one) and the run's ``artifact_seq``
is still what the task's claim reply said: the node's artifacts are then exactly these outputs,
numbered from that seq. The script checks every one of those conditions after completing and
applies the planned follow-up only if they held (then the callback was given exactly the facts
the store would have given); otherwise it returns the real facts, as ``complete_task_prefetch``
does, and the caller plans again from them. A chain step is then one round trip.

:class:`Predictions` keeps, per store object, what the claims of this process returned for
tasks that are their node's only task (the reply says how many the node has): the task record
and the run's ``artifact_seq`` at the claim (a bounded table; a task completed in another
process, or one of several of its node, simply takes the two-round-trip path)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from interlock.packed import PackedOutputs, PublishedView
from interlock.records import Artifact, NewArtifact, NodeFacts, NodeRecord, TaskRecord
from interlock.states import NodeState
from interlock_redis.scripts import text

__all__ = ["Predictions", "predicted_facts"]


class Predictions:
    """(run id, task id) -> (task record as claimed, the run's artifact_seq text then), for
    tasks that are their node's only task."""

    LIMIT = 4096

    def __init__(self) -> None:
        self._known: dict[tuple[str, str], tuple[TaskRecord, str]] = {}
        self._lock = threading.Lock()

    def note(self, run_id: str, task: TaskRecord | None, reply: Sequence[Any]) -> None:
        """Remember a claim's record and seq (``reply``: claim_task.lua's) when the task is its
        node's only one (a node of several tasks completes with the others' artifacts too)."""
        if task is None or len(reply) < 5 or reply[3] is None or text(reply[4]) != "1":
            return
        with self._lock:
            if len(self._known) >= self.LIMIT:
                self._known.clear()
            self._known[(run_id, task.task_id)] = (task, text(reply[3]))

    def get(self, run_id: str, task_id: str, attempt_id: str) -> tuple[TaskRecord, str] | None:
        with self._lock:
            known = self._known.get((run_id, task_id))
        if known is None or known[0].attempt_id != attempt_id:
            return None
        return known

    def drop(self, run_id: str, task_id: str) -> None:
        with self._lock:
            self._known.pop((run_id, task_id), None)


def predicted_facts(task: TaskRecord, seq: int, outputs: Sequence[NewArtifact], child: int
                    ) -> tuple[NodeFacts, NodeFacts]:
    """The facts ``complete_and_follow`` offers when the completion of ``task`` (its node's
    only task, the only parent of ``child``) publishes ``outputs`` after ``seq``: ``child``
    as readied, then the task's node as completed with those artifacts."""
    view = PublishedView(outputs, task.node_index, task.generation, task.task_id, seq + 1,
                         task.origin_mode, task.origin)
    artifacts: Sequence[Artifact] = view if isinstance(outputs, PackedOutputs) else tuple(view)
    return (NodeFacts(NodeRecord(child, task.generation, NodeState.WAITING, 0)),
            NodeFacts(NodeRecord(task.node_index, task.generation, NodeState.COMPLETED, 0, 1, 0),
                      artifacts))
