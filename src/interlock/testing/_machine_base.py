"""The stateful machine's plumbing: its configuration, the two sides it drives and the helpers
its rules share (one call applied to both sides, results compared; claims, completions, the
other worker callbacks and continuations through ``Kernel.complete_and_continue``). The rules
live in ``_machine`` (runs and tasks), ``_machine_races`` (concurrent bursts) and
``_machine_abilities`` (the optional abilities)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

import attrs
from hypothesis.stateful import RuleBasedStateMachine

from interlock.errors import InterlockError
from interlock.kernel import Kernel
from interlock.limits import Limits
from interlock.protocols import DagStore
from interlock.records import RunRecord, TaskRecord, TaskRef, Transition
from interlock.states import NodeState, RunState, TaskState
from interlock.testing._invariants import CALLS, Side, fail
from interlock.testing._support import (
    FakeClock,
    RecordingDispatcher,
    first_difference,
    observe,
)
from interlock.testing._watch import FollowCrash
from interlock.values import Claim, RunFinished

__all__ = ["ACCEPT", "COMPLETE", "FAIL", "MACHINE_ABILITIES", "MachineBase", "MachineConfig",
           "Outputs", "choose", "jobs_text"]

T = TypeVar("T")
Outputs = list[dict[str, Any]]
COMPLETE = ("complete.once", "complete.fenced", "complete.counters")
FAIL = ("fail.retry", "fail.fenced")
MACHINE_ABILITIES = frozenset({"batched", "handover", "follow", "launch_many", "launch_ahead"})
"""The optional abilities whose store paths the machine drives when they are declared."""


@attrs.frozen
class MachineConfig:
    make_store: Callable[[], DagStore]
    make_reference: Callable[[], DagStore]
    cleanup: Callable[[DagStore], None]
    namespace: str
    race_mode: str | None = None
    """``threads`` (racing kernels share the store object), ``processes`` (one store object
    per racing kernel) or None (no race rules)."""
    threads: int = 6
    abilities: frozenset[str] = frozenset()
    """The declared abilities the machine drives (:data:`MACHINE_ABILITIES`): both kernels take
    their store paths and their rules run. ``batched``: claim_tasks / complete_tasks;
    ``handover``: launch_and_claim; ``follow``: complete_and_follow (every completion);
    ``launch_many``: launch_nodes (whenever a step readies several nodes); ``launch_ahead``:
    launch_node_ahead (the later batches of a launch, in runs with narrow batches)."""

    @property
    def batched(self) -> bool:
        return "batched" in self.abilities

    @property
    def continues(self) -> bool:
        """A continuation path is declared: the rule driving complete_and_continue runs."""
        return bool({"handover", "follow"} & self.abilities)

    @property
    def follow(self) -> bool:
        return "follow" in self.abilities


def _norm(value: object) -> object:
    """What must be equal between the two sides for one call's result."""
    if isinstance(value, Transition):
        return (value.outcome, tuple(sorted(value.ready)),
                None if value.run_state is None else value.run_state.value)
    if isinstance(value, RunRecord):
        return value.to_dict()
    if isinstance(value, Claim):
        return ("claim", value.task_id, value.attempt_id, value.input)
    if isinstance(value, list | tuple):
        return [_norm(v) for v in value]
    return value


def jobs_text(jobs: Sequence[tuple[TaskRecord, Outputs]]) -> str:
    return ", ".join(f"({t.task_id!r}, {t.attempt_id!r}, {o!r})" for t, o in jobs)


def choose(items: Sequence[T], pick: int) -> T:
    return items[pick % len(items)]


def _not_first(ref: TaskRef) -> bool:
    return not ref.task_id.endswith(".0")


ACCEPT: dict[str, Callable[[TaskRef], bool]] = {
    "any": lambda ref: True, "none": lambda ref: False, "not-first": _not_first}
"""The ``accept`` filters a continuing worker passes (``not-first``: a task other than the
first of its node, so a store that claims the wrong one of a launch's tasks shows)."""


class MachineBase(RuleBasedStateMachine):
    """State and helpers of the machine; no rules."""

    config: ClassVar[MachineConfig]
    runs: ClassVar[itertools.count[int]] = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        self.sides: list[Side] = []
        self.run_id = ""
        self.clock = FakeClock()
        self.attempts = itertools.count(1)
        self.follows = itertools.count()
        """Counts continuations that must take the follow path (every other one, the first
        included, first fails inside its step: see ``_crash_follow``)."""
        self.claims: list[tuple[str, str]] = []
        self.completions: list[tuple[str, str, Outputs]] = []
        self.extra: list[DagStore] = []
        self.racers: list[Kernel] = []
        self.calls: list[str] = []
        self.step_clauses: list[str] = []
        """The clauses of the calls of the current step (named by a ``same-state`` failure)."""
        self.limits = Limits()
        """The kernels' limits; a run with narrow batches (see ``StoreMachine.start``)
        launches one task, then two at a time (``launch.batches``, and ``launch.ahead`` when
        declared)."""
        CALLS.set(self.calls)

    def _kernel(self, store: DagStore, dispatcher: RecordingDispatcher,
                finished: list[RunFinished]) -> Kernel:
        return Kernel(store, dispatcher, clock=self.clock, on_run_finished=finished.append,
                      lease_seconds=60.0, crash_attempts=2, limits=self.limits)

    def _both(self, call: str, clauses: Sequence[str],
              fn: Callable[[Side], T]) -> list[T | None]:
        """Apply one kernel call to both sides; their results must agree."""
        self.calls.append(call)
        results: list[T | None] = []
        normal: list[object] = []
        errors: list[InterlockError | None] = []
        many = [side.tally.many for side in self.sides]
        for side in self.sides:
            try:
                result = fn(side)
            except InterlockError as exc:
                results.append(None)
                errors.append(exc)
                normal.append(("raised", type(exc).__name__))
            else:
                results.append(result)
                errors.append(None)
                normal.append(_norm(result))
        if [side.tally.many for side in self.sides] != many:  # the kernel launched together
            clauses = (*clauses, "launch.many")
        if normal[0] != normal[1]:
            fail("same-outcome", clauses, f"{call}: store under test -> {normal[0]!r}, "
                                          f"reference -> {normal[1]!r}")
        if errors[1] is not None:
            # Every call the machine makes is legal: an error with the reference store is a
            # bug in Interlock itself (kernel or reference), not in the store under test.
            fail("kernel-error", clauses, f"{call} raised {errors[1]!r} with the reference "
                 "store too: a bug in interlock, please report it with this program")
        self._compare_dispatch(call, clauses)
        return results

    def _compare_dispatch(self, call: str, clauses: Sequence[str]) -> None:
        self.step_clauses.extend(c for c in clauses if c not in self.step_clauses)
        # distinct refs: dispatch is at least once (a repeated completion re-dispatches what
        # it released, however many racers repeated it)
        sent = [sorted({(r.task_id, r.not_before) for r in s.dispatcher.take()})
                for s in self.sides]
        if sent[0] != sent[1]:
            fail("same-outcome", clauses, f"{call} dispatched {sent[0]} with the store under "
                                          f"test but {sent[1]} with the reference")

    def _agree(self, call: str, clauses: Sequence[str]) -> None:
        """``same-state`` right after ``call``, naming the clauses of that call (the invariant
        after the step can only guess them from where the states differ)."""
        observed = [observe(side.raw, self.run_id) for side in self.sides]
        diff = first_difference(observed[0], observed[1])
        if diff is not None:
            fail("same-state", clauses, f"after {call}: the store under test differs from the "
                                        f"reference at {diff} (under test vs reference)")

    def _tasks(self, *states: TaskState) -> list[TaskRecord]:
        if not self.sides:
            return []
        return self.sides[1].raw.list_tasks(self.run_id, states=list(states))

    def _run_state(self) -> RunState | None:
        run = self.sides[1].raw.get_run(self.run_id) if self.sides else None
        return None if run is None else run.state

    def _published(self, side: Side, task_id: str, outputs: Outputs) -> None:
        if task_id in side.published:
            fail("outputs-once", ("complete.once",),
                 f"{side.name}: a second completion of {task_id} applied")
        side.published[task_id] = outputs

    def _complete(self, task_id: str, attempt_id: str, outputs: Outputs) -> None:
        # with 'follow' a completion is complete_and_follow (the kernel uses it for each one)
        clauses = (*COMPLETE, "complete.follow") if self.config.follow else COMPLETE
        results = self._both(f"on_task_complete({task_id!r}, {attempt_id!r}, {outputs!r})",
                             clauses, lambda s: s.kernel.on_task_complete(
                                 self.run_id, task_id, attempt_id, outputs))
        self.completions.append((task_id, attempt_id, outputs))
        for side, result in zip(self.sides, results, strict=True):
            if result is not None and result.applied:
                self._published(side, task_id, outputs)

    def _claim(self, task_id: str, attempt_id: str) -> None:
        self._both(f"claim_task({task_id!r}, attempt_id={attempt_id!r})", ("claim.cas",),
                   lambda s: s.kernel.claim_task(self.run_id, task_id, worker="w",
                                                 attempt_id=attempt_id))

    def _deliver(self, tid: str, attempt_id: str, how: str, outputs: Outputs) -> None:
        run_id = self.run_id
        call = f"{how}({tid!r}, {attempt_id!r})"
        if how == "complete":
            self._complete(tid, attempt_id, outputs)
        elif how in ("fail", "fail-final"):
            retryable = how == "fail"
            self._both(call, FAIL, lambda s: s.kernel.on_task_failed(
                run_id, tid, attempt_id, "boom", retryable=retryable))
        elif how in ("crash", "expired"):
            error = "attempt lease expired" if how == "expired" else "worker lost"
            self._both(call, ("lease.expired", *FAIL) if how == "expired" else FAIL,
                       lambda s: s.kernel.on_task_crashed(run_id, tid, attempt_id, error))
        elif how == "wait":
            self._both(call, ("wait.fenced",), lambda s: s.kernel.wait_task(
                run_id, tid, attempt_id, "human"))
        elif how == "continue":
            self._continue(tid, attempt_id, outputs, "any")
        else:
            self._both(call, ("lease.renew",), lambda s: s.kernel.heartbeat(
                run_id, tid, attempt_id))

    # ---- continuations (abilities handover / follow) ------------------------------------

    def _releasing(self, follow: bool) -> list[TaskRecord]:
        """Unfinished tasks whose completion would ready a node (the last task to complete of
        a node that is the last unsettled parent of a waiting child), so that a continuation
        launches it. With ``follow``, only those whose completion must take the follow path:
        the only task of the only parent of that child (its facts must then be offered)."""
        parents = self.sides[1].tally.parents
        nodes = self.sides[1].raw.get_nodes(self.run_id)
        ready = {p for i, ps in enumerate(parents) if nodes[i].state is NodeState.WAITING
                 and nodes[i].remaining_parents == 1 and (len(ps) == 1 or not follow)
                 for p in ps}
        return [t for t in self._tasks(TaskState.QUEUED, TaskState.RUNNING)
                if t.node_index in ready and nodes[t.node_index].remaining_tasks == 1
                and nodes[t.node_index].generation == t.generation
                and (nodes[t.node_index].total_tasks == 1 or not follow)]

    def _continue_clauses(self) -> tuple[str, ...]:
        declared = self.config.abilities
        return (*(["launch.claim"] if "handover" in declared else []),
                *(["complete.follow"] if "follow" in declared else []), "claim.cas", *COMPLETE)

    def _continue(self, tid: str, attempt_id: str, outputs: Outputs,
                  accept: str) -> Claim | None:
        """One ``complete_and_continue`` on both sides; the claim it handed back (if any).
        With 'follow', every other completion that must take the follow path is first made to
        fail inside its step (:meth:`_crash_follow`)."""
        if self.config.follow and any(t.task_id == tid for t in self._releasing(follow=True)) \
                and next(self.follows) % 2 == 0 \
                and not self._crash_follow(tid, attempt_id, outputs):
            return None
        attempt = f"a{next(self.attempts)}"
        call = (f"complete_and_continue({tid!r}, {attempt_id!r}, {outputs!r}, "
                f"accept={accept}) claiming as {attempt!r}")
        clauses = self._continue_clauses()

        def run(side: Side) -> tuple[Transition, Claim | None]:
            side.store.attempt = attempt
            try:
                transition, claim = side.kernel.complete_and_continue(
                    self.run_id, tid, attempt_id, outputs, worker="w", accept=ACCEPT[accept])
            finally:
                side.store.attempt = None
            if claim is not None and claim.attempt_id != attempt:
                # a plain claim_task after the launch: the kernel reports the id it drew, the
                # watched store stored ``attempt`` in its place
                claim = attrs.evolve(claim, attempt_id=attempt)
            return transition, claim

        results = self._both(call, clauses, run)
        self.completions.append((tid, attempt_id, outputs))
        for side, result in zip(self.sides, results, strict=True):
            if result is not None and result[0].applied:
                self._published(side, tid, outputs)
        self._agree(call, clauses)
        claim = results[1][1] if results[1] is not None else None
        if claim is not None:
            self.claims.append((claim.task_id, claim.attempt_id))
        return claim

    def _crash_follow(self, tid: str, attempt_id: str, outputs: Outputs) -> bool:
        """Deliver a completion whose ``complete_and_follow`` step fails inside its callback:
        where the callback ran, the call must have changed nothing. True when it failed on
        both sides (the completion is still to deliver); False when the reference did not call
        the callback (the completion was then delivered plainly on both sides, and compared)."""
        c = ("complete.follow", *COMPLETE)
        call = (f"on_task_complete({tid!r}, {attempt_id!r}, {outputs!r}) failing inside the "
                "follow callback of its complete_and_follow step")
        ut, ref = self.sides
        self.calls.append(call)
        crashed, result = self._crash_one(ref, call, tid, attempt_id, outputs)
        if not crashed:
            # no facts offered: the reference applied it as a plain completion; so must the
            # store under test (offering facts in more cases is allowed, hence no crash here)
            def plain(side: Side) -> Transition:
                if side is ut:
                    return side.kernel.on_task_complete(self.run_id, tid, attempt_id, outputs)
                if isinstance(result, InterlockError):
                    raise result
                return result

            results = self._both(call, c, plain)
            self.completions.append((tid, attempt_id, outputs))
            for side, done in zip(self.sides, results, strict=True):
                if done is not None and done.applied:
                    self._published(side, tid, outputs)
            return False
        if not self._crash_one(ut, call, tid, attempt_id, outputs)[0]:
            fail("same-outcome", c, f"{call}: the store under test applied the completion "
                 "although the follow callback raised (or never called the callback, where the "
                 "reference did: the completion readied one node whose only parent, the "
                 "completed node, had one task, so its facts must be offered)")
        self._compare_dispatch(call, c)
        return True

    def _crash_one(self, side: Side, call: str, tid: str, attempt_id: str, outputs: Outputs
                   ) -> tuple[bool, Transition | InterlockError]:
        """(whether the callback ran and failed the call, else what the call returned)."""
        before = observe(side.raw, self.run_id)
        side.store.crash = True
        try:
            return False, side.kernel.on_task_complete(self.run_id, tid, attempt_id, outputs)
        except FollowCrash:
            diff = first_difference(before, observe(side.raw, self.run_id))
            if diff is not None:
                fail("same-state", ("complete.follow",), f"{side.name}: {call}: the failed "
                     f"call changed the store (it must be one atomic step): {diff}")
            return True, Transition("stale")  # not used: the call was rolled back
        except InterlockError as exc:
            return False, exc
        finally:
            side.store.crash = False
