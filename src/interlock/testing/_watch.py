"""A DagStore wrapper that watches the kernel's writes: launches and settles per node and
generation, and the barrier at the moment a node launches or settles without tasks. It also
makes the kernel's own claims reproducible (the attempt ids the kernel draws at random are
replaced by one the machine chooses, the same on both sides) and can make a
``complete_and_follow`` step fail inside its callback, as a process dying there would."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import cast

import attrs

from interlock.protocols import (
    BatchedDagStore,
    ClaimRequest,
    DagStore,
    FollowingDagStore,
    HandoverDagStore,
    LaunchAheadDagStore,
    ManyLaunchDagStore,
)
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
from interlock.states import NodeState, RunState, TaskState

__all__ = ["FollowCrash", "Tally", "Watched"]


class FollowCrash(Exception):
    """Raised inside a ``complete_and_follow`` step by the machine (see ``Watched.crash``): the
    store must roll the whole call back."""


class Tally:
    """What the watched store(s) of one side saw; thread-safe."""

    def __init__(self, parents: Sequence[Sequence[int]]) -> None:
        self.parents = [tuple(p) for p in parents]
        self.launched: Counter[tuple[int, int]] = Counter()
        self.settled: Counter[tuple[int, int]] = Counter()
        self.violations: list[str] = []
        self.many = 0
        """Calls of launch_nodes (the machine names clause launch.many in the steps with one)."""
        self.lock = threading.Lock()

    def note(self, counter: Counter[tuple[int, int]], key: tuple[int, int]) -> None:
        with self.lock:
            counter[key] += 1

    def violation(self, text: str) -> None:
        with self.lock:
            self.violations.append(text)


class Watched:
    """Delegates every DagStore call to ``inner``; records applied launches and settles.

    ``abilities`` is what the harness declares for the inner store (the kernel reads it).
    While ``attempt`` is set, every claim the kernel makes (claim_task, the claim of
    launch_and_claim and of a follow-up) is made under that attempt id instead of the random
    one the kernel drew, so both sides of the machine store the same records. While ``crash``
    is set, the follow callback of complete_and_follow raises :class:`FollowCrash` after
    planning (the call must then change nothing)."""

    def __init__(self, inner: DagStore, tally: Tally,
                 abilities: frozenset[str] = frozenset()) -> None:
        self.inner = inner
        self.tally = tally
        self.abilities = abilities
        self.attempt: str | None = None
        self.crash = False

    # ---- reads ---------------------------------------------------------------------------

    def get_run(self, run_id: str) -> RunRecord | None:
        return self.inner.get_run(run_id)

    def get_nodes(self, run_id: str, indices: Sequence[int] | None = None) -> list[NodeRecord]:
        return self.inner.get_nodes(run_id, indices)

    def get_task(self, run_id: str, task_id: str) -> TaskRecord | None:
        return self.inner.get_task(run_id, task_id)

    def list_tasks(self, run_id: str, *, node_index: int | None = None,
                   states: Collection[TaskState] | None = None) -> list[TaskRecord]:
        return self.inner.list_tasks(run_id, node_index=node_index, states=states)

    def get_artifacts(self, run_id: str, node_index: int, generation: int) -> list[Artifact]:
        return self.inner.get_artifacts(run_id, node_index, generation)

    def iter_artifacts(self, run_id: str, node_index: int, generation: int
                       ) -> Iterable[Artifact]:
        return self.inner.iter_artifacts(  # type: ignore[attr-defined,no-any-return]
            run_id, node_index, generation)

    def list_expired(self, now: float, limit: int) -> list[TaskRecord]:
        return self.inner.list_expired(now, limit)

    # ---- mutations -----------------------------------------------------------------------

    def create_run(self, run: RunRecord, nodes: Sequence[NodeRecord]) -> tuple[RunRecord, bool]:
        return self.inner.create_run(run, nodes)

    def launch_node(self, run_id: str, node_index: int, generation: int,
                    tasks: Sequence[TaskRecord], total_tasks: int, now: float) -> Outcome:
        outcome = self.inner.launch_node(run_id, node_index, generation, tasks, total_tasks, now)
        if outcome == "applied":
            self.tally.note(self.tally.launched, (node_index, generation))
            self._barrier(run_id, node_index, "launched")
        return outcome

    def launch_node_ahead(self, run_id: str, node_index: int, generation: int,
                          tasks: Sequence[TaskRecord], total_tasks: int, now: float
                          ) -> Callable[[], Outcome]:
        outcome_of = cast(LaunchAheadDagStore, self.inner).launch_node_ahead(
            run_id, node_index, generation, tasks, total_tasks, now)

        def outcome() -> Outcome:
            result = outcome_of()
            if result == "applied":
                self.tally.note(self.tally.launched, (node_index, generation))
                self._barrier(run_id, node_index, "launched (launch_node_ahead)")
            return result

        return outcome

    def launch_nodes(self, run_id: str, launches: Sequence[NodeLaunch], now: float
                     ) -> list[Outcome]:
        with self.tally.lock:
            self.tally.many += 1
        outcomes = cast(ManyLaunchDagStore, self.inner).launch_nodes(run_id, launches, now)
        for launch, outcome in zip(launches, outcomes, strict=True):
            if outcome == "applied":
                self.tally.note(self.tally.launched, (launch.node_index, launch.generation))
                self._barrier(run_id, launch.node_index, "launched (launch_nodes)")
        return outcomes

    def settle_node(self, run_id: str, node_index: int, generation: int, state: NodeState,
                    reason: str | None, children: Sequence[int], fail_run: RunState | None,
                    now: float) -> Transition:
        transition = self.inner.settle_node(run_id, node_index, generation, state, reason,
                                            children, fail_run, now)
        if transition.applied:
            self.tally.note(self.tally.settled, (node_index, generation))
            self._barrier(run_id, node_index, f"settled {state.value}")
        return transition

    def launch_and_claim(self, run_id: str, node_index: int, generation: int,
                         tasks: Sequence[TaskRecord], total_tasks: int, now: float,
                         claim: ClaimRequest
                         ) -> tuple[Outcome, tuple[Outcome, TaskRecord | None]]:
        claim = self._claim(claim)
        result = cast(HandoverDagStore, self.inner).launch_and_claim(
            run_id, node_index, generation, tasks, total_tasks, now, claim)
        if result[0] == "applied":
            self.tally.note(self.tally.launched, (node_index, generation))
            self._barrier(run_id, node_index, "launched (launch_and_claim)")
        return result

    def claim_task(self, run_id: str, task_id: str, attempt_id: str, worker: str,
                   lease_until: float | None, now: float) -> tuple[Outcome, TaskRecord | None]:
        attempt_id = self.attempt or attempt_id
        return self.inner.claim_task(run_id, task_id, attempt_id, worker, lease_until, now)

    def claim_tasks(self, run_id: str, claims: Sequence[tuple[str, str]], worker: str,
                    lease_until: float | None,
                    now: float) -> list[tuple[Outcome, TaskRecord | None]]:
        batched = cast(BatchedDagStore, self.inner)
        return batched.claim_tasks(run_id, claims, worker, lease_until, now)

    def heartbeat(self, run_id: str, task_id: str, attempt_id: str, lease_until: float) -> bool:
        return self.inner.heartbeat(run_id, task_id, attempt_id, lease_until)

    def complete_task(self, run_id: str, task_id: str, attempt_id: str,
                      outputs: Sequence[NewArtifact], children: Sequence[int],
                      now: float) -> Transition:
        return self.inner.complete_task(run_id, task_id, attempt_id, outputs, children, now)

    def complete_and_follow(self, run_id: str, task_id: str, attempt_id: str,
                            outputs: Sequence[NewArtifact], children: Sequence[int],
                            parents: Sequence[Sequence[int]], now: float,
                            follow: Callable[[Sequence[NodeFacts]], FollowUp | None]
                            ) -> Followed:
        crash = self.crash

        def planned(facts: Sequence[NodeFacts]) -> FollowUp | None:
            follow_up = follow(facts)
            if crash:
                raise FollowCrash("the machine failed this complete_and_follow step inside "
                                  "its follow callback")
            if follow_up is None or follow_up.claim is None:
                return follow_up
            return attrs.evolve(follow_up, claim=self._claim(follow_up.claim))

        followed = cast(FollowingDagStore, self.inner).complete_and_follow(
            run_id, task_id, attempt_id, outputs, children, parents, now, planned)
        if followed.follow_up is not None:
            key = (followed.follow_up.node_index, followed.follow_up.generation)
            self.tally.note(self.tally.launched, key)
            self._barrier(run_id, key[0], "launched (complete_and_follow)")
        return followed

    def complete_tasks(self, run_id: str, items: Sequence[CompletionItem],
                       now: float) -> list[Transition]:
        return cast(BatchedDagStore, self.inner).complete_tasks(run_id, items, now)

    def fail_task(self, run_id: str, task_id: str, attempt_id: str, error: str,
                  retry_at: float | None, final_state: TaskState, children: Sequence[int],
                  fail_run: RunState | None, now: float) -> Transition:
        return self.inner.fail_task(run_id, task_id, attempt_id, error, retry_at, final_state,
                                    children, fail_run, now)

    def suspend_task(self, run_id: str, task_id: str, attempt_id: str, reason: str,
                     now: float) -> Outcome:
        return self.inner.suspend_task(run_id, task_id, attempt_id, reason, now)

    def resume_task(self, run_id: str, task_id: str, payload: object,
                    now: float) -> tuple[Outcome, TaskRecord | None]:
        return self.inner.resume_task(run_id, task_id, payload, now)

    def cancel_run(self, run_id: str, reason: str, now: float) -> Transition:
        return self.inner.cancel_run(run_id, reason, now)

    def reopen_run(self, run_id: str, expected_retries: int, nodes: Sequence[NodeRecord],
                   now: float) -> Outcome:
        return self.inner.reopen_run(run_id, expected_retries, nodes, now)

    def _claim(self, claim: ClaimRequest) -> ClaimRequest:
        task_id, attempt_id, worker, lease_until = claim
        return task_id, self.attempt or attempt_id, worker, lease_until

    # ---- the barrier, checked right after the write that passed it ---------------------

    def _barrier(self, run_id: str, index: int, what: str) -> None:
        nodes = self.inner.get_nodes(run_id)
        for p in self.tally.parents[index]:
            parent = nodes[p]
            if not parent.state.settled or parent.state is NodeState.CANCELLED:
                self.tally.violation(f"node n{index} {what} while its parent n{p} was "
                                     f"{parent.state.value}")
            elif parent.state is NodeState.COMPLETED:
                tasks = [t for t in self.inner.list_tasks(run_id, node_index=p)
                         if t.generation == parent.generation]
                unfinished = [t.task_id for t in tasks if t.state is not TaskState.COMPLETED]
                if unfinished or len(tasks) != parent.total_tasks:
                    self.tally.violation(
                        f"node n{index} {what} while its COMPLETED parent n{p} had "
                        f"{len(tasks)} of {parent.total_tasks} tasks stored, not completed: "
                        f"{unfinished}")
