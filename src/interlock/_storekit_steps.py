"""The steps of :mod:`interlock.storekit`: the store-independent procedures every mutating
``DagStore`` call applies inside one :class:`~interlock.storekit.RunTransaction` (launch, claim,
complete, the settle and terminate procedures, the facts a completion hands its follow-up).
Pure functions of the transaction and their arguments; kept apart from the base class so each
module stays small."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from interlock._evolve import evolve_node as _evolve_node
from interlock._evolve import evolve_run as _evolve_run
from interlock._evolve import evolve_task as _evolve_task
from interlock.packed import PACK_MIN, PackedArtifacts, PublishedView
from interlock.records import (
    Artifact,
    Followed,
    FollowUp,
    NewArtifact,
    NodeFacts,
    NodeRecord,
    Outcome,
    TaskRecord,
    Transition,
)
from interlock.states import NodeState, RunState, TaskState, check

if TYPE_CHECKING:
    from interlock.storekit import RunTransaction

_STALE = Transition("stale")
_APPLIED = Transition("applied")  # records are frozen: one shared value for the common result
_FACTS_LIMIT = 1_000  # artifacts a completion step may read to hand its follow-up facts


def _cancel_unfinished(tx: RunTransaction, node: tuple[int, int] | None, now: float, *,
                       clear_lease: bool) -> None:
    """Every QUEUED, RUNNING and WAITING task of the run — or of ``node = (index,
    generation)`` — CANCELLED, ``updated_at = now`` (and ``lease_until = None`` if
    ``clear_lease``). A transaction that can do it without reading the tasks (an optional
    ``cancel_unfinished`` method with this signature, e.g. SQLite's one UPDATE) does: a
    cancelled run of 100,000 tasks otherwise reads and rewrites every one of them while its
    store holds the write lock."""
    bulk = getattr(tx, "cancel_unfinished", None)
    if bulk is not None:
        bulk(node, now, clear_lease=clear_lease)
        return
    for task in list(tx.unfinished_tasks(None if node is None else node[0])):
        if node is None or task.generation == node[1]:
            tx.put_task(_evolve_task(task, state=TaskState.CANCELLED, updated_at=now,
                                     lease_until=None if clear_lease else task.lease_until))


def _preload(tx: RunTransaction, task_ids: Sequence[str]) -> None:
    """Let a transaction that can (an optional ``preload(task_ids)`` method, e.g. SQLite's one
    SELECT for a batch) read the tasks of a batch at once."""
    preload = getattr(tx, "preload", None)
    if preload is not None:
        preload(task_ids)


def _launch(tx: RunTransaction, node_index: int, generation: int,
            tasks: Sequence[TaskRecord], total_tasks: int) -> Outcome:
    """[launch.atomic] within an open transaction."""
    if tx.run.state is not RunState.RUNNING:
        return "stale"
    node = tx.node(node_index)
    if node.generation != generation:
        return "stale"
    if node.state is NodeState.WAITING:
        check("node", node.state, NodeState.LAUNCHED)
        tx.put_node(_evolve_node(node, state=NodeState.LAUNCHED, total_tasks=total_tasks,
                                 remaining_tasks=total_tasks))
        outcome: Outcome = "applied"
    elif node.state is NodeState.LAUNCHED:
        outcome = "duplicate"
    else:
        return "stale"
    if outcome == "duplicate":  # a later batch (or a repeat): which tasks exist, in one read
        _preload(tx, [task.task_id for task in tasks])
    for task in tasks:
        if outcome == "applied" or tx.task(task.task_id) is None:
            tx.put_task(task)
    return outcome


def _claim(
    tx: RunTransaction,
    task_id: str,
    attempt_id: str,
    worker: str,
    lease_until: float | None,
    now: float,
) -> tuple[Outcome, TaskRecord | None]:
    """[claim.cas] within an open transaction."""
    task = tx.task(task_id)
    if task is None:
        return "stale", None
    if task.state is TaskState.RUNNING and task.attempt_id == attempt_id:
        return "duplicate", task
    if (tx.run.state is not RunState.RUNNING or task.state is not TaskState.QUEUED
            or now < task.not_before):
        return "stale", task
    check("task", task.state, TaskState.RUNNING)
    task = _evolve_task(task, state=TaskState.RUNNING, attempt=task.attempt + 1,
                        attempt_id=attempt_id, worker=worker, lease_until=lease_until,
                        updated_at=now)
    tx.put_task(task)
    return "applied", task


def _complete(
    tx: RunTransaction,
    task_id: str,
    attempt_id: str,
    outputs: Sequence[NewArtifact],
    children: Sequence[int],
    now: float,
    published: list[Sequence[Artifact]] | None = None,
) -> Transition:
    """[complete.once] within an open transaction; the artifacts it publishes are appended to
    ``published`` (as one sequence) when given."""
    task = tx.task(task_id)
    if task is None:
        return _STALE
    if task.state is TaskState.COMPLETED and task.attempt_id == attempt_id:
        return Transition("duplicate")
    if not _current(task, attempt_id) or tx.run.state is not RunState.RUNNING:
        return _STALE
    check("task", task.state, TaskState.COMPLETED)
    tx.put_task(_evolve_task(task, state=TaskState.COMPLETED, lease_until=None, updated_at=now))
    seq = tx.run.artifact_seq
    if len(outputs) >= PACK_MIN:
        # a wide completion: the records are built from the outputs when read (the store
        # writes them one at a time), never all held besides the outputs
        view = PublishedView(outputs, task.node_index, task.generation, task.task_id,
                             seq + 1, task.origin_mode, task.origin)
        tx.add_artifacts(view)
        if published is not None:
            published.append(view)
    elif outputs:
        artifacts = [
            Artifact(o.artifact_id, task.node_index, task.generation, task.task_id,
                     seq + i + 1, o.fields, o.data, task.output_origin(o.artifact_id))
            for i, o in enumerate(outputs)
        ]
        tx.add_artifacts(artifacts)
        if published is not None:
            published.append(artifacts)
    seq += len(outputs)
    node = tx.node(task.node_index)
    if (node.generation == task.generation and node.state is NodeState.LAUNCHED
            and node.remaining_tasks <= 1):
        # the node's last task: the settle writes the node and the run once, counters included
        return _settle(tx, node, NodeState.COMPLETED, None, children, now,
                       remaining_tasks=node.remaining_tasks - 1, artifact_seq=seq)
    tx.run = _evolve_run(tx.run, artifact_seq=seq, updated_at=now)
    tx.put_run(tx.run)
    if node.generation != task.generation or node.state is not NodeState.LAUNCHED:
        return _APPLIED
    tx.put_node(_evolve_node(node, remaining_tasks=node.remaining_tasks - 1))
    return _APPLIED



def _follow_through(tx: RunTransaction, transition: Transition, facts: tuple[NodeFacts, ...],
                    follow_up: FollowUp, now: float) -> Followed:
    """Launch ``follow_up`` in ``tx`` and claim its task if it asks: the second half of
    ``complete_and_follow`` (a launch that is not applied is a completion without follow-up)."""
    launched = _launch(tx, follow_up.node_index, follow_up.generation, follow_up.tasks,
                       len(follow_up.tasks))
    if launched != "applied":
        return Followed(transition, facts)
    claimed = None
    if follow_up.claim is not None:
        claim_id, attempt, worker, lease_until = follow_up.claim
        outcome, record = _claim(tx, claim_id, attempt, worker, lease_until, now)
        claimed = record if outcome == "applied" else None
    return Followed(transition, facts, follow_up, claimed)

def _follow_facts(tx: RunTransaction, task_id: str, transition: Transition,
                  children: Sequence[int], parents: Sequence[Sequence[int]],
                  published: list[Sequence[Artifact]]) -> tuple[NodeFacts, ...]:
    """The facts of the one node ``transition`` readied and of its parents, or (): besides
    ``published`` (by ``task_id``, in this step), parents' artifacts are read in the step by an
    optional ``tx.stored_artifacts(index, generation, limit)`` (None past ``limit``)."""
    if not transition.applied or len(transition.ready) != 1 or transition.run_state is not None:
        return ()
    ready = transition.ready[0]
    task = tx.task(task_id)
    if task is None or ready not in children:
        return ()
    read = getattr(tx, "stored_artifacts", None)
    facts = [NodeFacts(tx.node(ready))]
    budget = _FACTS_LIMIT
    for index in parents[list(children).index(ready)]:
        parent = tx.node(index)
        if parent.state is not NodeState.COMPLETED:
            facts.append(NodeFacts(parent))
            continue
        mine = index == task.node_index
        own: Sequence[Artifact] = (published[0] if published else ()) if mine else ()
        if mine and parent.total_tasks == 1:  # this completion's outputs are all there is
            facts.append(NodeFacts(parent, own if isinstance(own, PublishedView) else tuple(own)))
            continue
        stored = None if read is None or isinstance(own, PublishedView) \
            else read(index, parent.generation, budget)  # a wide view is never copied here
        if stored is None:
            return ()
        budget -= len(stored)
        # packed stays packed (own, published in this step, follows by seq)
        facts.append(NodeFacts(parent, stored.plus(own) if isinstance(stored, PackedArtifacts)
                               else (*stored, *own)))
    return tuple(facts)


def _current(task: TaskRecord, attempt_id: str) -> bool:
    """The fence: only the current attempt of a RUNNING task may change it."""
    return task.state is TaskState.RUNNING and task.attempt_id == attempt_id


def _settle(
    tx: RunTransaction,
    node: NodeRecord,
    state: NodeState,
    reason: str | None,
    children: Sequence[int],
    now: float,
    *,
    remaining_tasks: int | None = None,
    artifact_seq: int | None = None,
) -> Transition:
    """The settle procedure of :mod:`interlock.protocols`. ``remaining_tasks`` and
    ``artifact_seq``, when given, are written with the node and the run (a completion that
    settles the node folds its own counter updates into the settle's records)."""
    tx.put_node(_evolve_node(node, state=state, reason=reason, remaining_tasks=(
        node.remaining_tasks if remaining_tasks is None else remaining_tasks)))
    run = tx.run
    run = _evolve_run(run, unsettled=run.unsettled - 1, updated_at=now,
                      failed_nodes=run.failed_nodes + (state is NodeState.FAILED),
                      artifact_seq=run.artifact_seq if artifact_seq is None else artifact_seq)
    ready = []
    for index in children:
        child = tx.node(index)
        child = _evolve_node(child, remaining_parents=child.remaining_parents - 1)
        tx.put_node(child)
        if child.remaining_parents == 0 and child.state is NodeState.WAITING:
            ready.append(index)
    run_state = None
    if run.unsettled == 0:
        run_state = RunState.COMPLETED if run.failed_nodes == 0 else RunState.FAILED
        check("run", run.state, run_state)
        run = _evolve_run(run, state=run_state)
    tx.run = run
    tx.put_run(run)
    if ready or run_state is not None:
        return Transition("applied", tuple(ready), run_state)
    return _APPLIED


def _terminate(
    tx: RunTransaction, state: RunState, reason: str | None, now: float
) -> Transition:
    """The terminate procedure: terminal run state, unfinished work cancelled, together."""
    check("run", tx.run.state, state)
    _cancel_unfinished(tx, None, now, clear_lease=True)
    for node in list(tx.nodes()):
        if node.state in (NodeState.WAITING, NodeState.LAUNCHED):
            tx.put_node(_evolve_node(node, state=NodeState.CANCELLED))
    tx.run = _evolve_run(tx.run, state=state, reason=reason, updated_at=now)
    tx.put_run(tx.run)
    return Transition("applied", (), state)
