"""The kernel's continuation machinery: hand one launched task to the completing worker, and,
with stores that can, launch (and claim) a released node inside the completion's own atomic
step. Mixed into :class:`interlock.kernel.Kernel` with
:class:`~interlock._kernel_launch.LaunchMixin`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from interlock._ids import handover_id, new_id
from interlock._kernel_launch import Hold, LaunchMixin, RunContext
from interlock._kernel_support import task_records
from interlock.graph import Topology
from interlock.model import FanMode
from interlock.planning import Launch, Upstream, plan_node
from interlock.protocols import ClaimRequest
from interlock.records import (
    Followed,
    FollowUp,
    NewArtifact,
    NodeFacts,
    NodeRecord,
    Outcome,
    TaskRecord,
    TaskRef,
    Transition,
)
from interlock.states import NodeState

__all__ = ["FollowMixin", "accept_any"]

log = logging.getLogger("interlock")


def accept_any(ref: TaskRef) -> bool:
    """The default of ``complete_and_continue(accept=...)``: any task."""
    return True


class _Unknown(Exception):
    """Planning inside a store's step needed a node the facts do not cover."""


class FollowMixin(LaunchMixin):
    """Needs ``_handover`` and ``_follow`` (declared abilities) besides LaunchMixin's needs."""

    _follow: bool

    def _pick(self, run_id: str, topology: Topology, tasks: Sequence[TaskRecord], now: float
              ) -> tuple[TaskRef, ClaimRequest] | None:
        """The task an active, empty :class:`Hold` of this run takes among ``tasks`` (the first
        due one it accepts) with the claim to make for it; None if none."""
        hold: Hold | None = getattr(self._holds, "hold", None)
        if hold is None or hold.ref is not None or hold.run_id != run_id:
            return None
        for task in tasks:
            ref = TaskRef(run_id, task.task_id, topology.node(task.node_index).plugin,
                          task.not_before)
            if hold.takes(ref, now):
                lease_until = now + self._lease(topology, ref.task_id)
                return ref, (ref.task_id, handover_id(hold.attempt_id, ref.task_id)
                             if hold.attempt_id else new_id(), hold.worker, lease_until)
        return None

    def _release(self, hold: Hold) -> None:
        """Dispatch what ``hold`` kept back but did not claim (the caller will not run it). A
        task claimed by the launch is RUNNING under the caller's attempt: its lease covers it."""
        if hold.ref is not None and hold.claimed is None:
            self._send([hold.ref])

    def _hand_over(self, ref: TaskRef, record: TaskRecord | None) -> None:
        hold: Hold | None = getattr(self._holds, "hold", None)
        if hold is not None and record is not None:
            hold.ref, hold.claimed = ref, record

    def _launch_and_claim(self, run_id: str, topology: Topology, node: NodeRecord,
                          batch: Sequence[TaskRecord], total: int) -> Outcome | None:
        """With a ``handover`` store and an active, empty Hold of this run, the first batch's
        launch also claims the task the hold takes (one atomic call); None when that does not
        apply (the caller launches plainly)."""
        if not self._handover:
            return None
        now = self.clock.now()
        picked = self._pick(run_id, topology, batch, now)
        if picked is None:
            return None
        ref, claim = picked
        outcome, (claimed, record) = self.store.launch_and_claim(  # type: ignore[attr-defined]
            run_id, node.index, node.generation, batch, total, now, claim)
        if claimed == "applied":
            self._hand_over(ref, record)
        return outcome  # type: ignore[no-any-return]

    def _complete_following(self, run_id: str, context: RunContext, task_id: str,
                            attempt_id: str, artifacts: Sequence[NewArtifact],
                            children: Sequence[int]
                            ) -> tuple[Transition, Sequence[NodeFacts], bool]:
        """``complete_and_follow`` (ability ``follow``): the transition, the facts for the
        usual planning of what it readied, and whether the store already launched that (then
        its tasks, less the one handed over, are dispatched here and nothing is left to
        plan)."""
        topology = context.topology
        followed: Followed = self.store.complete_and_follow(  # type: ignore[attr-defined]
            run_id, task_id, attempt_id, artifacts, children,
            [topology.parents[c] for c in children], self.clock.now(),
            self._planner(run_id, context))
        follow_up = followed.follow_up
        if follow_up is None:
            return followed.transition, followed.facts, False
        if follow_up.claim is not None and followed.claimed is not None:
            claimed = followed.claimed
            self._hand_over(TaskRef(run_id, claimed.task_id,
                                    topology.node(claimed.node_index).plugin), claimed)
        self._dispatch(run_id, topology, follow_up.tasks)
        return followed.transition, (), True

    def _planner(self, run_id: str, context: RunContext
                 ) -> Callable[[Sequence[NodeFacts]], FollowUp | None]:
        def follow(facts: Sequence[NodeFacts]) -> FollowUp | None:
            try:
                return self._follow_up(run_id, context, facts)
            except Exception:  # planned again after the commit, where errors surface as usual
                log.debug("no follow-up for run %s", run_id, exc_info=True)
                return None

        return follow

    def _follow_up(self, run_id: str, context: RunContext, facts: Sequence[NodeFacts]
                   ) -> FollowUp | None:
        """Plan the ready node (``facts[0]``) from the facts alone — no store call: this runs
        inside the store's step. A launch that fits one batch becomes the follow-up."""
        node = facts[0].node
        if node.state is not NodeState.WAITING:
            return None
        memo = {f.node.index: Upstream(f.node.state, f.artifacts) for f in facts}

        def lookup(index: int) -> Upstream:
            if index not in memo:
                raise _Unknown(index)
            return memo[index]

        topology = context.topology
        if topology.node(node.index).fan_mode is FanMode.SINGLE and any(
                len(f.artifacts) > self.limits.single_launch for f in facts[1:]):
            return None  # a task per artifact: too wide to follow, not worth planning twice
        decision = plan_node(topology, node.index, lookup, context.input, self.limits)
        if not isinstance(decision, Launch) or \
                not 0 < decision.count <= self.limits.single_launch:
            return None  # planned again after the commit, in batches
        now = self.clock.now()
        tasks = task_records(run_id, topology, node, decision.tasks, now)
        picked = self._pick(run_id, topology, tasks, now)
        return FollowUp(node.index, node.generation, tuple(tasks),
                        picked[1] if picked is not None else None)
