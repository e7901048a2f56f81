"""The stateful machine's plumbing: its configuration, the two sides it drives and the helpers
its rules share (one call applied to both sides, results compared; claims, completions and the
other worker callbacks). The rules live in ``_machine`` (runs and tasks), ``_machine_races``
(concurrent bursts) and ``_machine_abilities`` (the optional abilities)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

import attrs
from hypothesis.stateful import RuleBasedStateMachine

from interlock.errors import InterlockError
from interlock.kernel import Kernel
from interlock.protocols import DagStore
from interlock.records import RunRecord, TaskRecord, Transition
from interlock.states import RunState, TaskState
from interlock.testing._invariants import CALLS, Side, fail
from interlock.testing._support import (
    FakeClock,
    RecordingDispatcher,
    first_difference,
    observe,
)
from interlock.values import Claim, RunFinished

__all__ = ["COMPLETE", "FAIL", "MACHINE_ABILITIES", "MachineBase", "MachineConfig", "Outputs",
           "choose", "jobs_text"]

T = TypeVar("T")
Outputs = list[dict[str, Any]]
COMPLETE = ("complete.once", "complete.fenced", "complete.counters")
FAIL = ("fail.retry", "fail.fenced")
MACHINE_ABILITIES = frozenset({"batched", "handover", "follow"})
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
    ``handover``: launch_and_claim; ``follow``: complete_and_follow (every completion)."""

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
        self.claims: list[tuple[str, str]] = []
        self.completions: list[tuple[str, str, Outputs]] = []
        self.extra: list[DagStore] = []
        self.racers: list[Kernel] = []
        self.calls: list[str] = []
        CALLS.set(self.calls)

    def _kernel(self, store: DagStore, dispatcher: RecordingDispatcher,
                finished: list[RunFinished]) -> Kernel:
        return Kernel(store, dispatcher, clock=self.clock, on_run_finished=finished.append,
                      lease_seconds=60.0, crash_attempts=2)

    def _both(self, call: str, clauses: Sequence[str],
              fn: Callable[[Side], T]) -> list[T | None]:
        """Apply one kernel call to both sides; their results must agree."""
        self.calls.append(call)
        results: list[T | None] = []
        normal: list[object] = []
        errors: list[InterlockError | None] = []
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
        sent = [sorted((r.task_id, r.not_before) for r in s.dispatcher.take())
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
        results = self._both(f"on_task_complete({task_id!r}, {attempt_id!r}, {outputs!r})",
                             COMPLETE, lambda s: s.kernel.on_task_complete(
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
        else:
            self._both(call, ("lease.renew",), lambda s: s.kernel.heartbeat(
                run_id, tid, attempt_id))
