"""Every mutating ``DagStore`` method, implemented once over a per-run transaction primitive.

A store built on a transactional database (SQLite, Postgres, MySQL, an in-process dict under a
lock) subclasses :class:`TransactionalDagStore` and provides :meth:`~TransactionalDagStore.
transaction` plus the read methods; the semantics (fences, counters, settle and terminate
procedures, transition checks) live here and nowhere else. Stores without transactions (Redis)
implement the same procedures natively (Lua) and prove equivalence with the conformance harness.
The procedures themselves (launch, claim, complete, settle, terminate) are the functions of
:mod:`interlock._storekit_steps`; this module is the base class that applies them.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from interlock._evolve import evolve_node as _evolve_node
from interlock._evolve import evolve_run as _evolve_run
from interlock._evolve import evolve_task as _evolve_task
from interlock._storekit_steps import (
    _STALE,
    _cancel_unfinished,
    _claim,
    _complete,
    _current,
    _follow_facts,
    _follow_through,
    _launch,
    _preload,
    _settle,
    _terminate,
)
from interlock.protocols import ClaimRequest
from interlock.records import (
    Artifact,
    CompletionItem,
    Followed,
    FollowUp,
    NewArtifact,
    NodeFacts,
    NodeLaunch,
    NodeRecord,
    Outcome,
    RunRecord,
    TaskRecord,
    Transition,
)
from interlock.states import NodeState, RunState, TaskState, check

__all__ = ["RunTransaction", "TransactionalDagStore"]




class RunTransaction(Protocol):
    """One atomic unit of work on one run; everything written commits together or not at all.

    ``run`` is the run as read when the transaction began; writes go through the put methods.
    """

    run: RunRecord

    def node(self, index: int) -> NodeRecord:
        """The node record at ``index`` (as written so far in this transaction)."""
        ...

    def nodes(self) -> Iterator[NodeRecord]:
        """Every node record of the run."""
        ...

    def put_node(self, node: NodeRecord) -> None:
        """Replace the node record with the same index."""
        ...

    def task(self, task_id: str) -> TaskRecord | None:
        """The task, or None."""
        ...

    def put_task(self, task: TaskRecord) -> None:
        """Insert or replace the task with the same id."""
        ...

    def unfinished_tasks(self, node_index: int | None) -> Iterator[TaskRecord]:
        """QUEUED, RUNNING and WAITING tasks (of one node, or of the whole run).

        Optional, next to it: ``cancel_unfinished(node, now, *, clear_lease)`` (``node`` an
        ``(index, generation)`` pair or None for the whole run) sets those tasks CANCELLED
        with ``updated_at = now`` (``lease_until = None`` if ``clear_lease``) as ``put_task``
        of each would, including the tasks written earlier in the transaction; the terminate
        procedure and a failed task's siblings use it when present (a database does it in
        one statement instead of reading and rewriting every task)."""
        ...

    def add_artifacts(self, artifacts: Sequence[Artifact]) -> None:
        """Insert published artifacts. A wide completion's are a lazy sequence that builds
        each record when read: keep the sequence (not a list of its records) until written."""
        ...

    def put_run(self, run: RunRecord) -> None:
        """Replace the run record."""
        ...


class TransactionalDagStore(abc.ABC):
    """Base class implementing the mutating half of :class:`~interlock.protocols.DagStore`,
    plus the optional abilities it declares in ``abilities`` (batched, handover, follow,
    launch_many, launch_ahead)."""

    abilities: frozenset[str] = frozenset({"batched", "handover", "follow", "launch_many",
                                           "launch_ahead"})

    @abc.abstractmethod
    def transaction(self, run_id: str) -> AbstractContextManager[RunTransaction | None]:
        """Open a transaction on ``run_id`` (None if the run does not exist).

        Must serialise with every other transaction on the same run, commit on normal exit and
        roll back when the block raises.
        """

    def _task_transaction(self, run_id: str, task_id: str
                          ) -> AbstractContextManager[RunTransaction | None]:
        """:meth:`transaction` of a step that reads ``tx.task(task_id)`` first (a store may read
        the run, the task and its node at once); by default :meth:`transaction` itself."""
        return self.transaction(run_id)

    # ---- launch / settle ------------------------------------------------------------------

    def launch_node(
        self,
        run_id: str,
        node_index: int,
        generation: int,
        tasks: Sequence[TaskRecord],
        total_tasks: int,
        now: float,
    ) -> Outcome:
        with self.transaction(run_id) as tx:
            if tx is None:
                return "stale"
            return _launch(tx, node_index, generation, tasks, total_tasks)

    def launch_nodes(self, run_id: str, launches: Sequence[NodeLaunch], now: float
                     ) -> list[Outcome]:
        """[launch.many] ``launch_node`` of each launch in order, in one transaction."""
        with self.transaction(run_id) as tx:
            if tx is None:
                return ["stale"] * len(launches)
            return [_launch(tx, launch.node_index, launch.generation, launch.tasks,
                            launch.total_tasks) for launch in launches]

    def launch_node_ahead(self, run_id: str, node_index: int, generation: int,
                          tasks: Sequence[TaskRecord], total_tasks: int, now: float
                          ) -> Callable[[], Outcome]:
        """[launch.ahead] ``launch_node``, applied at once (in-process there is nothing to
        overlap); the returned function returns its outcome."""
        outcome = self.launch_node(run_id, node_index, generation, tasks, total_tasks, now)
        return lambda: outcome

    def launch_and_claim(
        self,
        run_id: str,
        node_index: int,
        generation: int,
        tasks: Sequence[TaskRecord],
        total_tasks: int,
        now: float,
        claim: ClaimRequest,
    ) -> tuple[Outcome, tuple[Outcome, TaskRecord | None]]:
        """[launch.claim] ``launch_node`` and, when applied, ``claim_task`` of
        ``claim = (task_id, attempt_id, worker, lease_until)``: one transaction."""
        with self.transaction(run_id) as tx:
            if tx is None:
                return "stale", ("stale", None)
            outcome = _launch(tx, node_index, generation, tasks, total_tasks)
            if outcome != "applied":
                return outcome, ("stale", None)
            task_id, attempt_id, worker, lease_until = claim
            return outcome, _claim(tx, task_id, attempt_id, worker, lease_until, now)

    def settle_node(
        self,
        run_id: str,
        node_index: int,
        generation: int,
        state: NodeState,
        reason: str | None,
        children: Sequence[int],
        fail_run: RunState | None,
        now: float,
    ) -> Transition:
        with self.transaction(run_id) as tx:
            if tx is None:
                return _STALE
            node = tx.node(node_index)
            if node.generation != generation:
                return _STALE
            if node.state is not NodeState.WAITING:
                # an exact repeat is a duplicate even when the first call ended the run
                return Transition("duplicate" if node.state is state else "stale")
            if tx.run.state is not RunState.RUNNING:
                return _STALE
            check("node", node.state, state)
            if state is NodeState.FAILED and fail_run is not None:
                tx.put_node(_evolve_node(node, state=state, reason=reason))
                return _terminate(tx, fail_run, reason, now)
            return _settle(tx, node, state, reason, children, now)

    # ---- task life cycle -----------------------------------------------------------------

    def claim_task(
        self,
        run_id: str,
        task_id: str,
        attempt_id: str,
        worker: str,
        lease_until: float | None,
        now: float,
    ) -> tuple[Outcome, TaskRecord | None]:
        with self._task_transaction(run_id, task_id) as tx:
            if tx is None:
                return "stale", None
            return _claim(tx, task_id, attempt_id, worker, lease_until, now)

    def claim_tasks(
        self,
        run_id: str,
        claims: Sequence[tuple[str, str]],
        worker: str,
        lease_until: float | None,
        now: float,
    ) -> list[tuple[Outcome, TaskRecord | None]]:
        """[batch.claim] ``claim_task`` for each (task_id, attempt_id), in one transaction;
        each item's result is what ``claim_task`` alone would have returned in that order."""
        with self.transaction(run_id) as tx:
            if tx is None:
                return [("stale", None) for _ in claims]
            _preload(tx, [task_id for task_id, _ in claims])
            return [_claim(tx, task_id, attempt_id, worker, lease_until, now)
                    for task_id, attempt_id in claims]

    def heartbeat(self, run_id: str, task_id: str, attempt_id: str, lease_until: float) -> bool:
        with self._task_transaction(run_id, task_id) as tx:
            task = None if tx is None else tx.task(task_id)
            if tx is None or task is None or not _current(task, attempt_id):
                return False
            tx.put_task(_evolve_task(task, lease_until=lease_until))
            return True

    def complete_task(
        self,
        run_id: str,
        task_id: str,
        attempt_id: str,
        outputs: Sequence[NewArtifact],
        children: Sequence[int],
        now: float,
    ) -> Transition:
        with self._task_transaction(run_id, task_id) as tx:
            if tx is None:
                return _STALE
            return _complete(tx, task_id, attempt_id, outputs, children, now)

    def complete_and_follow(
        self,
        run_id: str,
        task_id: str,
        attempt_id: str,
        outputs: Sequence[NewArtifact],
        children: Sequence[int],
        parents: Sequence[Sequence[int]],
        now: float,
        follow: Callable[[Sequence[NodeFacts]], FollowUp | None],
    ) -> Followed:
        """[complete.follow] ``complete_task``, and the follow-up launch (+ claim) planned by
        ``follow`` inside the same transaction, when the completion readied exactly one node
        whose facts the transaction can give (see :func:`_follow_facts`)."""
        with self._task_transaction(run_id, task_id) as tx:
            if tx is None:
                return Followed(_STALE)
            published: list[Sequence[Artifact]] = []
            transition = _complete(tx, task_id, attempt_id, outputs, children, now, published)
            facts = _follow_facts(tx, task_id, transition, children, parents, published)
            follow_up = follow(facts) if facts else None
            if follow_up is None:
                return Followed(transition, facts)
            return _follow_through(tx, transition, facts, follow_up, now)

    def complete_tasks(
        self, run_id: str, items: Sequence[CompletionItem], now: float
    ) -> list[Transition]:
        """[batch.complete] ``complete_task`` for each item, in one transaction; each item's
        Transition is what ``complete_task`` alone would have returned in that order."""
        with self.transaction(run_id) as tx:
            if tx is None:
                return [_STALE for _ in items]
            _preload(tx, [i.task_id for i in items])
            return [_complete(tx, i.task_id, i.attempt_id, i.outputs, i.children, now)
                    for i in items]

    def fail_task(
        self,
        run_id: str,
        task_id: str,
        attempt_id: str,
        error: str,
        retry_at: float | None,
        final_state: TaskState,
        children: Sequence[int],
        fail_run: RunState | None,
        now: float,
    ) -> Transition:
        with self._task_transaction(run_id, task_id) as tx:
            task = None if tx is None else tx.task(task_id)
            if tx is None or task is None:
                return _STALE
            if task.attempt_id == attempt_id and (
                task.state in (TaskState.FAILED, TaskState.CRASHED)
                or (task.state is TaskState.QUEUED and task.error is not None)
            ):
                return Transition("duplicate")
            if not _current(task, attempt_id) or tx.run.state is not RunState.RUNNING:
                return _STALE
            if retry_at is not None:
                check("task", task.state, TaskState.QUEUED)
                tx.put_task(_evolve_task(task, state=TaskState.QUEUED, not_before=retry_at,
                                         error=error, lease_until=None, updated_at=now))
                return Transition("applied")
            check("task", task.state, final_state)
            tx.put_task(_evolve_task(task, state=final_state, error=error, lease_until=None,
                                     updated_at=now))
            _cancel_unfinished(tx, (task.node_index, task.generation), now, clear_lease=False)
            node = tx.node(task.node_index)
            if node.generation != task.generation or node.state is not NodeState.LAUNCHED:
                return Transition("applied")
            reason = f"task {task_id} {final_state.value}: {error}"
            if fail_run is not None:
                tx.put_node(_evolve_node(node, state=NodeState.FAILED, reason=reason))
                return _terminate(tx, fail_run, reason, now)
            return _settle(tx, node, NodeState.FAILED, reason, children, now)

    def suspend_task(
        self, run_id: str, task_id: str, attempt_id: str, reason: str, now: float
    ) -> Outcome:
        with self._task_transaction(run_id, task_id) as tx:
            task = None if tx is None else tx.task(task_id)
            if tx is None or task is None:
                return "stale"
            if task.state is TaskState.WAITING and task.attempt_id == attempt_id:
                return "duplicate"
            if not _current(task, attempt_id) or tx.run.state is not RunState.RUNNING:
                return "stale"
            check("task", task.state, TaskState.WAITING)
            tx.put_task(_evolve_task(task, state=TaskState.WAITING, error=reason or None,
                                     lease_until=None, updated_at=now))
            return "applied"

    def resume_task(
        self, run_id: str, task_id: str, payload: object, now: float
    ) -> tuple[Outcome, TaskRecord | None]:
        with self._task_transaction(run_id, task_id) as tx:
            task = None if tx is None else tx.task(task_id)
            if tx is None or task is None:
                return "stale", None
            if task.state is not TaskState.WAITING or tx.run.state is not RunState.RUNNING:
                return "stale", task
            check("task", task.state, TaskState.QUEUED)
            task = _evolve_task(task, state=TaskState.QUEUED, resume=payload, error=None,
                                not_before=0.0, updated_at=now)
            tx.put_task(task)
            return "applied", task

    # ---- run level -----------------------------------------------------------------------

    def cancel_run(self, run_id: str, reason: str, now: float) -> Transition:
        with self.transaction(run_id) as tx:
            if tx is None:
                return _STALE
            if tx.run.state.terminal:
                return Transition("duplicate" if tx.run.state is RunState.CANCELLED else "stale")
            return _terminate(tx, RunState.CANCELLED, reason, now)

    def reopen_run(
        self, run_id: str, expected_retries: int, nodes: Sequence[NodeRecord], now: float
    ) -> Outcome:
        with self.transaction(run_id) as tx:
            if tx is None:
                return "stale"
            run = tx.run
            if run.retries != expected_retries or run.state not in (
                RunState.FAILED, RunState.CRASHED, RunState.CANCELLED
            ):
                return "duplicate" if run.retries > expected_retries else "stale"
            check("run", run.state, RunState.RUNNING)
            for node in nodes:
                old = tx.node(node.index)
                check("node", old.state, NodeState.WAITING, f"{node.index}")
                tx.put_node(node)
            tx.put_run(_evolve_run(run, state=RunState.RUNNING, unsettled=len(nodes),
                                   failed_nodes=0, retries=run.retries + 1, reason=None,
                                   updated_at=now))
            return "applied"
