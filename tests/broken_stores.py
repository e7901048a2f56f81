"""Deliberately broken MemoryStore variants: each breaks one promise of the store contract.

tests/test_harness_catches_broken_stores.py proves the conformance harness catches every one.
``time.sleep(0.001)`` below is fault injection, not synchronisation: it widens a
check-then-set window that a correct store would not have, so the harness's racing threads
reliably interleave inside it even on a loaded machine (``sleep(0)`` only released the GIL and
let a busy machine run the window through uninterrupted now and then).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import attrs

from interlock._storekit_steps import (
    _claim,
    _complete,
    _follow_facts,
    _follow_through,
    _launch,
    _settle,
)
from interlock.packed import PublishedView
from interlock.protocols import ClaimRequest
from interlock.records import (
    Artifact,
    Followed,
    FollowUp,
    NewArtifact,
    NodeFacts,
    NodeLaunch,
    NodeRecord,
    Outcome,
    TaskRecord,
    Transition,
)
from interlock.states import NodeState, RunState, TaskState
from interlock_memory import MemoryStore

Handed = tuple[Outcome, tuple[Outcome, TaskRecord | None]]
Follow = Callable[[Sequence[NodeFacts]], FollowUp | None]


class NonAtomicClaim(MemoryStore):
    """(1) claim.cas: checks QUEUED, yields, then writes RUNNING without re-checking."""

    def claim_task(self, run_id: str, task_id: str, attempt_id: str, worker: str,
                   lease_until: float | None, now: float) -> tuple[Outcome, TaskRecord | None]:
        task, run = self.get_task(run_id, task_id), self.get_run(run_id)
        if task is None or run is None:
            return "stale", None
        if task.state is TaskState.RUNNING and task.attempt_id == attempt_id:
            return "duplicate", task
        if run.state is not RunState.RUNNING or task.state is not TaskState.QUEUED \
                or now < task.not_before:
            return "stale", task
        time.sleep(0.001)  # the window between the check and the set
        claimed = attrs.evolve(task, state=TaskState.RUNNING, attempt=task.attempt + 1,
                               attempt_id=attempt_id, worker=worker, lease_until=lease_until,
                               updated_at=now)
        with self.transaction(run_id) as tx:
            assert tx is not None
            tx.put_task(claimed)
        return "applied", claimed


class ReplayPublishesTwice(MemoryStore):
    """(2) complete.once: a repeated completion re-appends the outputs (says 'duplicate')."""

    def complete_task(self, run_id: str, task_id: str, attempt_id: str,
                      outputs: Sequence[NewArtifact], children: Sequence[int],
                      now: float) -> Transition:
        with self.transaction(run_id) as tx:
            task = None if tx is None else tx.task(task_id)
            if tx is not None and task is not None and task.state is TaskState.COMPLETED \
                    and task.attempt_id == attempt_id:
                seq = tx.run.artifact_seq
                tx.add_artifacts([
                    Artifact(o.artifact_id, task.node_index, task.generation, task_id,
                             seq + i + 1, o.fields, o.data, task.output_origin(o.artifact_id))
                    for i, o in enumerate(outputs)])
                tx.put_run(attrs.evolve(tx.run, artifact_seq=seq + len(outputs)))
                return Transition("duplicate")
        return super().complete_task(run_id, task_id, attempt_id, outputs, children, now)


class LostCounterUpdate(MemoryStore):
    """(3) complete.counters: remaining_tasks is decremented read-modify-write outside the
    per-run lock, so concurrent completions lose updates and the barrier never fires."""

    def complete_task(self, run_id: str, task_id: str, attempt_id: str,
                      outputs: Sequence[NewArtifact], children: Sequence[int],
                      now: float) -> Transition:
        with self.transaction(run_id) as tx:
            task = None if tx is None else tx.task(task_id)
            if tx is None or task is None:
                return Transition("stale")
            if task.state is TaskState.COMPLETED and task.attempt_id == attempt_id:
                return Transition("duplicate")
            if task.state is not TaskState.RUNNING or task.attempt_id != attempt_id \
                    or tx.run.state is not RunState.RUNNING:
                return Transition("stale")
            tx.put_task(attrs.evolve(task, state=TaskState.COMPLETED, lease_until=None,
                                     updated_at=now))
            seq = tx.run.artifact_seq
            tx.add_artifacts([
                Artifact(o.artifact_id, task.node_index, task.generation, task_id, seq + i + 1,
                         o.fields, o.data, task.output_origin(o.artifact_id))
                for i, o in enumerate(outputs)])
            tx.run = attrs.evolve(tx.run, artifact_seq=seq + len(outputs), updated_at=now)
            tx.put_run(tx.run)
        node = self.get_nodes(run_id, [task.node_index])[0]  # read outside the lock...
        time.sleep(0.001)  # the read-modify-write window (see the module docstring)
        if node.generation != task.generation or node.state is not NodeState.LAUNCHED:
            return Transition("applied")
        node = attrs.evolve(node, remaining_tasks=node.remaining_tasks - 1)
        with self.transaction(run_id) as tx:  # ...written back without re-reading
            assert tx is not None
            if node.remaining_tasks > 0:
                tx.put_node(node)
                return Transition("applied")
            return _settle(tx, node, NodeState.COMPLETED, None, children, now)


class TerminalTwice(MemoryStore):
    """(4) terminal.once: cancel_run of a terminal run reports the terminal state again."""

    def cancel_run(self, run_id: str, reason: str, now: float) -> Transition:
        run = self.get_run(run_id)
        if run is not None and run.state.terminal:
            return Transition("applied", (), run.state)
        return super().cancel_run(run_id, reason, now)


class SkipsLastChild(MemoryStore):
    """(5) complete.counters / readiness: a completed node does not decrement
    remaining_parents of its last child, which is then never reported ready."""

    def complete_task(self, run_id: str, task_id: str, attempt_id: str,
                      outputs: Sequence[NewArtifact], children: Sequence[int],
                      now: float) -> Transition:
        return super().complete_task(run_id, task_id, attempt_id, outputs, children[:-1], now)


class FenceIgnoresAttempt(MemoryStore):
    """(6) complete.fenced / fail.fenced: a callback of an old attempt is accepted as if it
    came from the current one."""

    def _current_attempt(self, run_id: str, task_id: str, attempt_id: str) -> str:
        task = self.get_task(run_id, task_id)
        if task is not None and task.state is TaskState.RUNNING and task.attempt_id:
            return task.attempt_id
        return attempt_id

    def complete_task(self, run_id: str, task_id: str, attempt_id: str,
                      outputs: Sequence[NewArtifact], children: Sequence[int],
                      now: float) -> Transition:
        attempt_id = self._current_attempt(run_id, task_id, attempt_id)
        return super().complete_task(run_id, task_id, attempt_id, outputs, children, now)

    def fail_task(self, run_id: str, task_id: str, attempt_id: str, error: str,
                  retry_at: float | None, final_state: TaskState, children: Sequence[int],
                  fail_run: RunState | None, now: float) -> Transition:
        attempt_id = self._current_attempt(run_id, task_id, attempt_id)
        return super().fail_task(run_id, task_id, attempt_id, error, retry_at, final_state,
                                 children, fail_run, now)


class HalfWrittenLaunch(MemoryStore):
    """(7) launch.atomic: the node claim and its tasks are written in two transactions."""

    def launch_node(self, run_id: str, node_index: int, generation: int,
                    tasks: Sequence[TaskRecord], total_tasks: int, now: float) -> Outcome:
        outcome = super().launch_node(run_id, node_index, generation, (), total_tasks, now)
        time.sleep(0.001)  # a reader (or a crash) lands between the two writes
        if outcome != "stale":
            with self.transaction(run_id) as tx:
                assert tx is not None
                for task in tasks:
                    if tx.task(task.task_id) is None:
                        tx.put_task(task)
        return outcome


class HandoverUnrecordedAttempt(MemoryStore):
    """(8) launch.claim: launch_and_claim marks the task RUNNING for the worker but does not
    record the attempt (number and id), though it returns the task as claimed: the claimant's
    own callbacks are then fenced out, and the task can be claimed again."""

    def launch_and_claim(self, run_id: str, node_index: int, generation: int,
                         tasks: Sequence[TaskRecord], total_tasks: int, now: float,
                         claim: ClaimRequest) -> Handed:
        task_id, attempt_id, worker, lease_until = claim
        with self.transaction(run_id) as tx:
            outcome = "stale" if tx is None else _launch(tx, node_index, generation, tasks,
                                                         total_tasks)
            if tx is None or outcome != "applied":
                return outcome, ("stale", None)
            task = tx.task(task_id)
            assert task is not None
            stored = attrs.evolve(task, state=TaskState.RUNNING, worker=worker,
                                  lease_until=lease_until, updated_at=now)
            tx.put_task(stored)
        return outcome, ("applied", attrs.evolve(stored, attempt=task.attempt + 1,
                                                 attempt_id=attempt_id))


class HandoverClaimsOtherTask(MemoryStore):
    """(9) launch.claim: launch_and_claim claims a queued task of another node of the run
    (when there is one) instead of the requested task of the node it launched."""

    def launch_and_claim(self, run_id: str, node_index: int, generation: int,
                         tasks: Sequence[TaskRecord], total_tasks: int, now: float,
                         claim: ClaimRequest) -> Handed:
        task_id, attempt_id, worker, lease_until = claim
        with self.transaction(run_id) as tx:
            if tx is None:
                return "stale", ("stale", None)
            other = next((t.task_id for t in tx.unfinished_tasks(None)
                          if t.state is TaskState.QUEUED and t.node_index != node_index), None)
            outcome = _launch(tx, node_index, generation, tasks, total_tasks)
            if outcome != "applied":
                return outcome, ("stale", None)
            return outcome, _claim(tx, other or task_id, attempt_id, worker, lease_until, now)


class HandoverClaimOverwritten(MemoryStore):
    """(10) launch.claim / claim.cas: launch_and_claim writes the launch's task rows again
    after the claim, so the claimed task is stored QUEUED: another worker can claim it too."""

    def launch_and_claim(self, run_id: str, node_index: int, generation: int,
                         tasks: Sequence[TaskRecord], total_tasks: int, now: float,
                         claim: ClaimRequest) -> Handed:
        task_id, attempt_id, worker, lease_until = claim
        with self.transaction(run_id) as tx:
            if tx is None:
                return "stale", ("stale", None)
            outcome = _launch(tx, node_index, generation, tasks, total_tasks)
            if outcome != "applied":
                return outcome, ("stale", None)
            claimed = _claim(tx, task_id, attempt_id, worker, lease_until, now)
            for task in tasks:  # the lost update: the batch as planned, over the claim
                tx.put_task(task)
            return outcome, claimed


class FollowCompletesApart(MemoryStore):
    """(11) complete.follow: complete_and_follow commits the completion, then plans and
    launches the follow-up in a second transaction (a callback that raises, or a crash
    between the two, leaves the completion applied and the released node unlaunched)."""

    def complete_and_follow(self, run_id: str, task_id: str, attempt_id: str,
                            outputs: Sequence[NewArtifact], children: Sequence[int],
                            parents: Sequence[Sequence[int]], now: float,
                            follow: Follow) -> Followed:
        published: list[Artifact] = []
        with self.transaction(run_id) as tx:
            if tx is None:
                return Followed(Transition("stale"))
            transition = _complete(tx, task_id, attempt_id, outputs, children, now, published)
            facts = _follow_facts(tx, task_id, transition, children, parents, published)
        follow_up = follow(facts) if facts else None
        if follow_up is None:
            return Followed(transition, facts)
        with self.transaction(run_id) as tx:  # the bug: a second transaction
            assert tx is not None
            return _follow_through(tx, transition, facts, follow_up, now)


class FollowLosesWrite(MemoryStore):
    """(12) complete.follow: the follow-up's launch writes back the run row as read before the
    completion (a lost update: the completion's artifact_seq and unsettled count are gone)."""

    def complete_and_follow(self, run_id: str, task_id: str, attempt_id: str,
                            outputs: Sequence[NewArtifact], children: Sequence[int],
                            parents: Sequence[Sequence[int]], now: float,
                            follow: Follow) -> Followed:
        before = self.get_run(run_id)
        followed = super().complete_and_follow(run_id, task_id, attempt_id, outputs, children,
                                               parents, now, follow)
        if followed.follow_up is not None and before is not None:
            with self.transaction(run_id) as tx:
                assert tx is not None
                tx.put_run(before)
        return followed


class LaunchManyDropsTasks(MemoryStore):
    """(13) launch.many: launch_nodes claims every node in one transaction but inserts only the
    first launch's tasks (the batch insert is built from launches[0]): the other nodes are
    LAUNCHED with tasks that never exist, and can never complete."""

    def launch_nodes(self, run_id: str, launches: Sequence[NodeLaunch], now: float
                     ) -> list[Outcome]:
        with self.transaction(run_id) as tx:
            if tx is None:
                return ["stale"] * len(launches)
            return [_launch(tx, launch.node_index, launch.generation,
                            launch.tasks if k == 0 else (), launch.total_tasks)
                    for k, launch in enumerate(launches)]


class FollowOnStaleFacts(MemoryStore):
    """(14) complete.follow: predicts the facts of a completion from what the task's claim saw
    (the run's artifact_seq then), as a store that cannot call back inside its step would, and
    applies the planned follow-up without checking that the prediction held: after another
    task of the run published in between, the follow-up carries stale artifact seqs."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[tuple[str, str], int] = {}

    def claim_task(self, run_id: str, task_id: str, attempt_id: str, worker: str,
                   lease_until: float | None, now: float) -> tuple[Outcome, TaskRecord | None]:
        result = super().claim_task(run_id, task_id, attempt_id, worker, lease_until, now)
        run = self.get_run(run_id)
        if result[0] == "applied" and run is not None:
            self.seen[(run_id, task_id)] = run.artifact_seq
        return result

    def complete_and_follow(self, run_id: str, task_id: str, attempt_id: str,
                            outputs: Sequence[NewArtifact], children: Sequence[int],
                            parents: Sequence[Sequence[int]], now: float,
                            follow: Follow) -> Followed:
        seq = self.seen.pop((run_id, task_id), None)
        task = self.get_task(run_id, task_id)
        if seq is None or task is None or len(children) != 1:
            return super().complete_and_follow(run_id, task_id, attempt_id, outputs, children,
                                               parents, now, follow)
        view = PublishedView(outputs, task.node_index, task.generation, task_id, seq + 1,
                             task.origin_mode, task.origin)
        facts = (NodeFacts(NodeRecord(children[0], task.generation, NodeState.WAITING, 0)),
                 NodeFacts(NodeRecord(task.node_index, task.generation, NodeState.COMPLETED, 0,
                                      1, 0), tuple(view)))
        follow_up = follow(facts)
        with self.transaction(run_id) as tx:
            assert tx is not None
            transition = _complete(tx, task_id, attempt_id, outputs, children, now, [])
            if follow_up is None or transition.ready != (children[0],):
                return Followed(transition)
            return _follow_through(tx, transition, facts, follow_up, now)  # the bug: unchecked


class AheadSharesOneBuffer(MemoryStore):
    """(15) launch.ahead: a pipelined launch that keeps the batch being sent in one buffer of
    the store, written when the outcome is read: with two begun, both write the second batch
    and the first batch's tasks are never written."""

    def __init__(self) -> None:
        super().__init__()
        self.buffer: Sequence[TaskRecord] = ()

    def launch_node_ahead(self, run_id: str, node_index: int, generation: int,
                          tasks: Sequence[TaskRecord], total_tasks: int, now: float
                          ) -> Callable[[], Outcome]:
        self.buffer = tasks
        return lambda: self.launch_node(run_id, node_index, generation, self.buffer,
                                        total_tasks, now)


class ReadManySorted(MemoryStore):
    """(16) artifacts.many: the node generations read in their sorted order, not in the order
    asked (a store that sorts the keys to read them in one scan and forgets to put them
    back)."""

    def get_artifacts_many(self, run_id: str, generations: Sequence[tuple[int, int]]
                           ) -> list[Sequence[Artifact]]:
        return [self.get_artifacts(run_id, index, generation)
                for index, generation in sorted(generations)]


BROKEN_STORES = (NonAtomicClaim, ReplayPublishesTwice, LostCounterUpdate, TerminalTwice,
                 SkipsLastChild, FenceIgnoresAttempt, HalfWrittenLaunch,
                 HandoverUnrecordedAttempt, HandoverClaimsOtherTask, HandoverClaimOverwritten,
                 FollowCompletesApart, FollowLosesWrite, LaunchManyDropsTasks,
                 FollowOnStaleFacts, AheadSharesOneBuffer, ReadManySorted)
