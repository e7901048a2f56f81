"""The stateful machine: random pipelines driven through two Kernels, one over the store under
test and one over the reference store, with the same calls in the same order; invariants after
every step. A failure prints the shrunk program of kernel calls (Hypothesis' notes).

This module holds the rules every store runs (runs, claims, callbacks, time) and the runner;
``_machine_base`` the plumbing, ``_machine_races`` the concurrent bursts and
``_machine_abilities`` the rules of optional abilities."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import settings as Settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky
from hypothesis.stateful import initialize, invariant, precondition, rule, run_state_machine_as_test

from interlock.graph import validate
from interlock.limits import Limits
from interlock.states import RunState, TaskState
from interlock.testing._invariants import CALLS, FAILURES, Side, check_side, fail, same_state
from interlock.testing._machine_abilities import BatchRules, ContinueRules
from interlock.testing._machine_base import (
    MACHINE_ABILITIES,
    MachineBase,
    MachineConfig,
    Outputs,
    choose,
)
from interlock.testing._machine_races import RaceRules
from interlock.testing._strategies import OUTPUTS, PICK, pipeline_specs
from interlock.testing._watch import Tally, Watched

__all__ = ["MACHINE_ABILITIES", "MachineConfig", "machine_class", "run_machine"]


class StoreMachine(MachineBase):
    """The rules every store runs; :func:`machine_class` adds the batch, race and (when
    declared) continuation rules."""

    @initialize(spec=pipeline_specs())
    def start(self, spec: dict[str, Any]) -> None:
        parents = validate(spec).parents
        config = self.config
        if len(parents) % 2:
            # a pipeline of an odd number of nodes launches in narrow batches (one task, then
            # two at a time): read from the printed spec, not drawn apart, so a failing
            # program replays as printed and shrinks as before
            self.limits = Limits(launch_first_batch=1, launch_batch_size=2)
        self.run_id = f"{config.namespace}-sm{next(MachineBase.runs)}"
        for name, make in (("store under test", config.make_store),
                           ("reference", config.make_reference)):
            raw = make()
            tally = Tally(parents)
            # a reference that lacks an ability takes the kernel's plain path: same results
            abilities = config.abilities if name != "reference" else \
                config.abilities & getattr(raw, "abilities", frozenset())
            store = Watched(raw, tally, abilities)
            side = Side(name, raw, tally)
            side.store = store
            side.kernel = self._kernel(store, side.dispatcher, side.finished)
            self.sides.append(side)
        self._both(f"start_run({spec!r})", ("run.create", "launch.atomic"),
                   lambda s: s.kernel.start_run(spec, {"seed": 1}, run_id=self.run_id))

    @precondition(lambda self: bool(self._tasks(TaskState.QUEUED)))
    @rule(pick=PICK)
    def claim(self, pick: int) -> None:
        task = choose(self._tasks(TaskState.QUEUED), pick)
        attempt_id = f"a{next(self.attempts)}"
        self.claims.append((task.task_id, attempt_id))
        self._claim(task.task_id, attempt_id)

    @precondition(lambda self: bool(self._tasks(TaskState.RUNNING)))
    @rule(pick=PICK, outputs=OUTPUTS)
    def complete(self, pick: int, outputs: Outputs) -> None:
        task = choose(self._tasks(TaskState.RUNNING), pick)
        self._complete(task.task_id, str(task.attempt_id), outputs)

    @precondition(lambda self: bool(self._tasks(TaskState.RUNNING)))
    @rule(pick=PICK, how=st.sampled_from(["fail", "fail-final", "crash", "wait"]))
    def end_attempt(self, pick: int, how: str) -> None:
        task = choose(self._tasks(TaskState.RUNNING), pick)
        self._deliver(task.task_id, str(task.attempt_id), how, [])

    @precondition(lambda self: bool(self._tasks(TaskState.RUNNING)))
    @rule(pick=PICK, how=st.sampled_from(["complete", "fail", "fail-final", "crash", "wait"]),
          outputs=OUTPUTS)
    def redeliver(self, pick: int, how: str, outputs: Outputs) -> None:
        """A lease runs out while the worker still runs: the attempt is crashed, the retry is
        claimed by another worker, then the first worker's callback arrives (must be stale)."""
        task = choose(self._tasks(TaskState.RUNNING), pick)
        tid, old = task.task_id, str(task.attempt_id)
        self._deliver(tid, old, "crash", [])
        retried = self.sides[1].raw.get_task(self.run_id, tid)
        if retried is not None and retried.state is TaskState.QUEUED:
            if retried.not_before > self.clock.now():
                self.calls.append(f"clock + {retried.not_before - self.clock.now()} s")
                self.clock.advance(retried.not_before - self.clock.now())
            new = f"a{next(self.attempts)}"
            self.claims.append((tid, new))
            self._claim(tid, new)
        self._deliver(tid, old, how, outputs)

    @precondition(lambda self: bool(self._tasks(TaskState.WAITING)))
    @rule(pick=PICK, payload=st.integers(0, 9))
    def resume(self, pick: int, payload: int) -> None:
        tid = choose(self._tasks(TaskState.WAITING), pick).task_id
        self._both(f"resume_task({tid!r}, {payload})", ("wait.resume",),
                   lambda s: s.kernel.resume_task(self.run_id, tid, {"answer": payload}))

    @precondition(lambda self: bool(self.completions) or bool(self.claims))
    @rule(pick=PICK, completion=st.booleans())
    def repeat(self, pick: int, completion: bool) -> None:
        """An exact repeat of an earlier completion or claim (at-least-once delivery)."""
        if completion and self.completions:
            self._complete(*choose(self.completions, pick))
        elif self.claims:
            self._claim(*choose(self.claims, pick))

    def _late(self) -> list[tuple[str, str]]:
        """Earlier attempts of unfinished tasks that now run (or wait) under another attempt,
        else every earlier claim: the callbacks a fence must turn away."""
        unfinished = {t.task_id: t.attempt_id for t in self._tasks(
            TaskState.QUEUED, TaskState.RUNNING, TaskState.WAITING)}
        late = [(tid, a) for tid, a in self.claims
                if tid in unfinished and unfinished[tid] not in (None, a)]
        return late or self.claims

    @precondition(lambda self: bool(self.claims))
    @rule(pick=PICK, how=st.sampled_from(["complete", "fail", "fail-final", "crash", "wait",
                                          "heartbeat"]), outputs=OUTPUTS)
    def late_callback(self, pick: int, how: str, outputs: Outputs) -> None:
        """A callback of an earlier attempt (one that was retried, lost a claim race or whose
        task finished): the fence must make it stale."""
        tid, attempt_id = choose(self._late(), pick)
        self._deliver(tid, attempt_id, how, outputs)

    @precondition(lambda self: bool(self._tasks(TaskState.QUEUED)))
    @rule(pick=PICK, outputs=OUTPUTS, result=st.sampled_from(
        ["complete", "complete", "complete", "fail", "fail-final", "crash", "wait", "running"]))
    def work(self, pick: int, outputs: Outputs, result: str) -> None:
        """A worker cycle: claim a queued task, then complete / fail / crash / park it (or
        leave it running). With ``handover`` or ``follow`` declared it completes through
        ``complete_and_continue``, as a continuing worker does."""
        task = choose(self._tasks(TaskState.QUEUED), pick)
        attempt_id = f"a{next(self.attempts)}"
        self.claims.append((task.task_id, attempt_id))
        self._claim(task.task_id, attempt_id)
        current = self.sides[1].raw.get_task(self.run_id, task.task_id)
        if result == "complete" and self.config.continues:
            result = "continue"  # such a worker continues: a task handed back stays RUNNING
        if result != "running" and current is not None and current.attempt_id == attempt_id:
            self._deliver(task.task_id, attempt_id, result, outputs)

    @rule(action=st.sampled_from(["reconcile", "reconcile", "cancel"]))
    def run_level(self, action: str) -> None:
        """reconcile_run (any time, any number of times) or cancel_run."""
        run_id = self.run_id
        if action == "reconcile":
            self._both("reconcile_run()", ("launch.atomic", "settle.once", "complete.counters"),
                       lambda s: s.kernel.reconcile_run(run_id))
        else:
            self._both("cancel_run()", ("terminal.once", "terminal.cancels-unfinished"),
                       lambda s: s.kernel.cancel_run(run_id, "stop"))

    @precondition(lambda self: self._run_state() in (RunState.FAILED, RunState.CRASHED,
                                                     RunState.CANCELLED))
    @rule()
    def retry(self) -> None:
        """retry_run of a failed, crashed or cancelled run."""
        self._both("retry_run()", ("retry.fenced",), lambda s: s.kernel.retry_run(self.run_id))

    @rule(seconds=st.sampled_from([1, 5, 30, 120]), expire=st.booleans())
    def time_passes(self, seconds: int, expire: bool) -> None:
        """The clock moves on; with ``expire`` every attempt whose lease ran out is crashed
        (what recover_expired does, limited to this run)."""
        now = self.clock.advance(seconds)
        self.calls.append(f"clock + {seconds} s")
        if not expire:
            return
        found = [sorted((t.task_id, str(t.attempt_id)) for t in s.raw.list_expired(now, 1000)
                        if t.run_id == self.run_id) for s in self.sides]
        if found[0] != found[1]:
            fail("same-outcome", ("lease.expired",),
                 f"list_expired({now}): store under test {found[0]}, reference {found[1]}")
        for tid, attempt_id in found[1]:
            self._deliver(tid, attempt_id, "expired", [])

    # ---- invariants ----------------------------------------------------------------------

    @invariant()
    def stores_agree(self) -> None:
        if len(self.sides) < 2:
            return
        observed = [check_side(side, self.run_id) for side in self.sides]
        step, self.step_clauses = self.step_clauses, []
        same_state(observed[0], observed[1], step)

    def teardown(self) -> None:
        stores = [s.raw for s in self.sides[:1]] + self.extra
        for store in reversed(stores):
            self.config.cleanup(store)


def machine_class(config: MachineConfig, name: str) -> type[StoreMachine]:
    """The machine for ``config``. The continuation rules join only when ``handover`` or
    ``follow`` is declared (so the programs drawn, and shrunk, for any other store are those of
    the rules it can run); the batch and race rules are always there, enabled by their
    preconditions."""
    mixins: list[type[MachineBase]] = [ContinueRules] if config.continues else []
    return type(name, (*mixins, BatchRules, RaceRules, StoreMachine), {"config": config})


def run_machine(config: MachineConfig, settings: Settings, name: str) -> None:
    """Run the machine as a test (raises with the shrunk program on failure).

    A failure born in a race may not fail again when Hypothesis replays its program, and
    Hypothesis then raises a Flaky error instead of it. That is re-raised as the invariant's
    own AssertionError (invariant and clauses first) with a word about the race and whatever
    program Hypothesis printed.
    """
    machine = machine_class(config, name)
    token, calls = FAILURES.set([]), CALLS.set(None)
    try:
        # through a typed name: Hypothesis' own annotations differ between releases
        runner: Callable[..., None] = run_state_machine_as_test
        runner(machine, settings=settings)
    except Flaky as exc:
        seen = FAILURES.get() or []
        inner = [e for e in getattr(exc, "exceptions", ()) if isinstance(e, AssertionError)]
        message = seen[0] if seen else (str(inner[0]) if inner else None)
        if message is None:
            raise
        error = AssertionError(f"{message}\n(found in a race: Hypothesis could not make the "
                               "failing program fail again when it replayed it, as races go; "
                               "rerun, and see the *_race tests)")
        for note in getattr(exc, "__notes__", []):
            error.add_note(note)
        raise error from None
    finally:
        FAILURES.reset(token)
        CALLS.reset(calls)
