"""The stateful machine: random pipelines driven through two Kernels, one over the store under
test and one over the reference store, with the same calls in the same order; invariants after
every step. A failure prints the shrunk program of kernel calls (Hypothesis' notes)."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

import attrs
from hypothesis import settings as Settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from interlock.errors import InterlockError
from interlock.graph import validate
from interlock.kernel import Kernel
from interlock.protocols import DagStore
from interlock.records import RunRecord, TaskRecord, Transition
from interlock.states import RunState, TaskState
from interlock.testing._invariants import CALLS, FAILURES, Side, check_side, fail, same_state
from interlock.testing._races import run_concurrently
from interlock.testing._strategies import OUTPUTS, PICK, pipeline_specs
from interlock.testing._support import FakeClock, RecordingDispatcher
from interlock.testing._watch import Tally, Watched
from interlock.values import Claim, RunFinished

__all__ = ["MachineConfig", "run_machine"]

T = TypeVar("T")
Outputs = list[dict[str, Any]]
_COMPLETE = ("complete.once", "complete.fenced", "complete.counters")
_FAIL = ("fail.retry", "fail.fenced")


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
    batched: bool = False
    """The ability ``batched`` is declared: both kernels take the batched store paths and the
    batch rules run."""

    @property
    def abilities(self) -> frozenset[str]:
        return frozenset({"batched"}) if self.batched else frozenset()


def _norm(value: object) -> object:
    """What must be equal between the two sides for one call's result."""
    if isinstance(value, Transition):
        return (value.outcome, tuple(sorted(value.ready)),
                None if value.run_state is None else value.run_state.value)
    if isinstance(value, RunRecord):
        return value.to_dict()
    if isinstance(value, Claim):
        return ("claim", value.attempt_id, value.input)
    if isinstance(value, list | tuple):
        return [_norm(v) for v in value]
    return value


def jobs_text(jobs: Sequence[tuple[TaskRecord, Outputs]]) -> str:
    return ", ".join(f"({t.task_id!r}, {t.attempt_id!r}, {o!r})" for t, o in jobs)


def _choose(items: Sequence[T], pick: int) -> T:
    return items[pick % len(items)]


class StoreMachine(RuleBasedStateMachine):
    config: ClassVar[MachineConfig]
    _runs: ClassVar[itertools.count[int]] = itertools.count()

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

    # ---- plumbing ------------------------------------------------------------------------

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
                             _COMPLETE, lambda s: s.kernel.on_task_complete(
                                 self.run_id, task_id, attempt_id, outputs))
        self.completions.append((task_id, attempt_id, outputs))
        for side, result in zip(self.sides, results, strict=True):
            if result is not None and result.applied:
                self._published(side, task_id, outputs)

    def _claim(self, task_id: str, attempt_id: str) -> None:
        self._both(f"claim_task({task_id!r}, attempt_id={attempt_id!r})", ("claim.cas",),
                   lambda s: s.kernel.claim_task(self.run_id, task_id, worker="w",
                                                 attempt_id=attempt_id))

    # ---- rules ---------------------------------------------------------------------------

    @initialize(spec=pipeline_specs())
    def start(self, spec: dict[str, Any]) -> None:
        parents = validate(spec).parents
        config = self.config
        self.run_id = f"{config.namespace}-sm{next(StoreMachine._runs)}"
        for name, make in (("store under test", config.make_store),
                           ("reference", config.make_reference)):
            raw = make()
            tally = Tally(parents)
            store = Watched(raw, tally, config.abilities)
            side = Side(name, raw, tally)
            side.store = store
            side.kernel = self._kernel(store, side.dispatcher, side.finished)
            self.sides.append(side)
        self._both(f"start_run({spec!r})", ("run.create", "launch.atomic"),
                   lambda s: s.kernel.start_run(spec, {"seed": 1}, run_id=self.run_id))

    @precondition(lambda self: bool(self._tasks(TaskState.QUEUED)))
    @rule(pick=PICK)
    def claim(self, pick: int) -> None:
        task = _choose(self._tasks(TaskState.QUEUED), pick)
        attempt_id = f"a{next(self.attempts)}"
        self.claims.append((task.task_id, attempt_id))
        self._claim(task.task_id, attempt_id)

    @precondition(lambda self: bool(self._tasks(TaskState.RUNNING)))
    @rule(pick=PICK, outputs=OUTPUTS)
    def complete(self, pick: int, outputs: Outputs) -> None:
        task = _choose(self._tasks(TaskState.RUNNING), pick)
        self._complete(task.task_id, str(task.attempt_id), outputs)

    @precondition(lambda self: bool(self._tasks(TaskState.RUNNING)))
    @rule(pick=PICK, how=st.sampled_from(["fail", "fail-final", "crash", "wait"]))
    def end_attempt(self, pick: int, how: str) -> None:
        task = _choose(self._tasks(TaskState.RUNNING), pick)
        self._deliver(task.task_id, str(task.attempt_id), how, [])

    def _deliver(self, tid: str, attempt_id: str, how: str, outputs: Outputs) -> None:
        run_id = self.run_id
        call = f"{how}({tid!r}, {attempt_id!r})"
        if how == "complete":
            self._complete(tid, attempt_id, outputs)
        elif how in ("fail", "fail-final"):
            retryable = how == "fail"
            self._both(call, _FAIL, lambda s: s.kernel.on_task_failed(
                run_id, tid, attempt_id, "boom", retryable=retryable))
        elif how in ("crash", "expired"):
            error = "attempt lease expired" if how == "expired" else "worker lost"
            self._both(call, ("lease.expired", *_FAIL) if how == "expired" else _FAIL,
                       lambda s: s.kernel.on_task_crashed(run_id, tid, attempt_id, error))
        elif how == "wait":
            self._both(call, ("wait.fenced",), lambda s: s.kernel.wait_task(
                run_id, tid, attempt_id, "human"))
        else:
            self._both(call, ("lease.renew",), lambda s: s.kernel.heartbeat(
                run_id, tid, attempt_id))

    @precondition(lambda self: bool(self._tasks(TaskState.RUNNING)))
    @rule(pick=PICK, how=st.sampled_from(["complete", "fail", "fail-final", "crash", "wait"]),
          outputs=OUTPUTS)
    def redeliver(self, pick: int, how: str, outputs: Outputs) -> None:
        """A lease runs out while the worker still runs: the attempt is crashed, the retry is
        claimed by another worker, then the first worker's callback arrives (must be stale)."""
        task = _choose(self._tasks(TaskState.RUNNING), pick)
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
        tid = _choose(self._tasks(TaskState.WAITING), pick).task_id
        self._both(f"resume_task({tid!r}, {payload})", ("wait.resume",),
                   lambda s: s.kernel.resume_task(self.run_id, tid, {"answer": payload}))

    @precondition(lambda self: bool(self.completions) or bool(self.claims))
    @rule(pick=PICK, completion=st.booleans())
    def repeat(self, pick: int, completion: bool) -> None:
        """An exact repeat of an earlier completion or claim (at-least-once delivery)."""
        if completion and self.completions:
            self._complete(*_choose(self.completions, pick))
        elif self.claims:
            self._claim(*_choose(self.claims, pick))

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
        tid, attempt_id = _choose(self._late(), pick)
        self._deliver(tid, attempt_id, how, outputs)

    @precondition(lambda self: bool(self._tasks(TaskState.QUEUED)))
    @rule(pick=PICK, outputs=OUTPUTS, result=st.sampled_from(
        ["complete", "complete", "complete", "fail", "fail-final", "crash", "wait", "running"]))
    def work(self, pick: int, outputs: Outputs, result: str) -> None:
        """A worker cycle: claim a queued task, then complete / fail / crash / park it (or
        leave it running)."""
        task = _choose(self._tasks(TaskState.QUEUED), pick)
        attempt_id = f"a{next(self.attempts)}"
        self.claims.append((task.task_id, attempt_id))
        self._claim(task.task_id, attempt_id)
        current = self.sides[1].raw.get_task(self.run_id, task.task_id)
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

    # ---- the batched ability --------------------------------------------------------------

    @precondition(lambda self: self.config.batched and bool(self._tasks(TaskState.QUEUED)))
    @rule(pick=PICK, size=st.integers(1, 4), twice=st.booleans())
    def batch_claim(self, pick: int, size: int, twice: bool) -> None:
        """claim_tasks of some queued tasks (with ``twice``, the first one again)."""
        queued = self._tasks(TaskState.QUEUED)
        start = pick % len(queued)
        chosen = (queued[start:] + queued[:start])[:size]
        pairs = [(t.task_id, f"a{next(self.attempts)}") for t in chosen]
        if twice:
            pairs.append((chosen[0].task_id, f"a{next(self.attempts)}"))
        self.claims.extend(pairs)
        now = self.clock.now()
        self._both(f"claim_tasks({pairs!r})", ("batch.claim", "claim.cas"),
                   lambda s: [outcome for outcome, _ in s.store.claim_tasks(
                       self.run_id, pairs, "w", now + 60.0, now)])

    @precondition(lambda self: self.config.batched and bool(self._tasks(TaskState.RUNNING)))
    @rule(pick=PICK, outputs=st.lists(OUTPUTS, min_size=1, max_size=4), repeat=st.booleans())
    def batch_complete(self, pick: int, outputs: list[Outputs], repeat: bool) -> None:
        """on_tasks_complete of some running tasks (with ``repeat``, plus an earlier
        completion delivered again in the same batch)."""
        running = self._tasks(TaskState.RUNNING)
        start = pick % len(running)
        chosen = running[start:] + running[:start]
        jobs = [(t.task_id, str(t.attempt_id), o)
                for t, o in zip(chosen, outputs, strict=False)]
        if repeat and self.completions:
            jobs.append(_choose(self.completions, pick))
        results = self._both(f"on_tasks_complete({jobs!r})", ("batch.complete", *_COMPLETE),
                             lambda s: s.kernel.on_tasks_complete(self.run_id, jobs))
        self.completions.extend(jobs)
        for side, transitions in zip(self.sides, results, strict=True):
            for (tid, _, out), transition in zip(jobs, transitions or [], strict=True):
                if transition.applied:
                    self._published(side, tid, out)

    # ---- races (store under test only; the reference replays the serial order) ---------

    def _racers(self) -> list[Kernel]:
        ut = self.sides[0]
        if not self.racers:
            if self.config.race_mode == "processes":
                for _ in range(self.config.threads):
                    raw = self.config.make_store()
                    self.extra.append(raw)
                    self.racers.append(self._kernel(Watched(raw, ut.tally, self.config.abilities),
                                                    ut.dispatcher,
                                                    ut.finished))
            else:
                self.racers = [ut.kernel] * self.config.threads
        return self.racers

    @precondition(lambda self: self.config.race_mode is not None
                  and bool(self._tasks(TaskState.QUEUED)))
    @rule(pick=PICK)
    def race_claim(self, pick: int) -> None:
        tid = _choose(self._tasks(TaskState.QUEUED), pick).task_id
        racers = self._racers()
        attempts = [f"a{next(self.attempts)}" for _ in racers]
        self.calls.append(f"concurrently: claim_task({tid!r}) with attempt ids {attempts}")
        won = run_concurrently([
            functools.partial(k.claim_task, self.run_id, tid, worker="w", attempt_id=a)
            for k, a in zip(racers, attempts, strict=True)])
        winners = [a for a, c in zip(attempts, won, strict=True) if c is not None]
        if len(winners) > 1:
            fail("race-one-winner", ("claim.cas",),
                 f"{len(winners)} of {len(racers)} concurrent claims of {tid} won: {winners}")
        self.claims.extend((tid, a) for a in attempts)
        attempt_id = winners[0] if winners else attempts[0]
        ref = self.sides[1].kernel.claim_task(self.run_id, tid, worker="w", attempt_id=attempt_id)
        if (ref is None) != (not winners):
            fail("same-outcome", ("claim.cas",), f"concurrent claims of {tid}: winners "
                                                 f"{winners} vs reference claim {ref!r}")
        self._compare_dispatch(f"race_claim({tid!r})", ("claim.cas",))

    @precondition(lambda self: self.config.race_mode is not None
                  and bool(self._tasks(TaskState.QUEUED, TaskState.RUNNING)))
    @rule(pick=PICK, outputs=st.lists(OUTPUTS, min_size=1, max_size=4))
    def race_node(self, pick: int, outputs: list[Outputs]) -> None:
        """Claim every queued task of one node, then complete all its running tasks at once
        (counters and the barrier under concurrency)."""
        node = _choose(sorted({t.node_index for t in self._tasks(TaskState.QUEUED,
                                                                 TaskState.RUNNING)}), pick)
        for task in self._tasks(TaskState.QUEUED):
            if task.node_index == node:
                attempt_id = f"a{next(self.attempts)}"
                self.claims.append((task.task_id, attempt_id))
                self._claim(task.task_id, attempt_id)
        running = [t for t in self._tasks(TaskState.RUNNING) if t.node_index == node]
        jobs = list(zip(running, itertools.cycle(outputs), strict=False))
        if not jobs:
            return
        racers = self._racers()
        self.calls.append(f"concurrently: on_task_complete of {jobs_text(jobs)}")
        results = run_concurrently([
            functools.partial(racers[i % len(racers)].on_task_complete, self.run_id,
                              t.task_id, str(t.attempt_id), o)
            for i, (t, o) in enumerate(jobs)])
        ut, ref = self.sides
        for (task, out), result in zip(jobs, results, strict=True):
            if not result.applied:
                fail("same-outcome", _COMPLETE, f"concurrent completion of RUNNING task "
                                                f"{task.task_id} returned {result!r}")
            self._published(ut, task.task_id, out)

        def serial_position(job: tuple[TaskRecord, Outputs]) -> int:
            task = job[0]
            seqs = [a.seq for a in ut.raw.get_artifacts(self.run_id, task.node_index,
                                                        task.generation)
                    if a.task_id == task.task_id]
            return min(seqs, default=0)

        for task, out in sorted(jobs, key=serial_position):
            self.completions.append((task.task_id, str(task.attempt_id), out))
            result = ref.kernel.on_task_complete(self.run_id, task.task_id,
                                                 str(task.attempt_id), out)
            if result.applied:
                self._published(ref, task.task_id, out)
        self._compare_dispatch(f"race_node({node})", _COMPLETE)

    @precondition(lambda self: self.config.race_mode is not None
                  and bool(self._tasks(TaskState.RUNNING)))
    @rule(pick=PICK, outputs=OUTPUTS)
    def race_duplicate(self, pick: int, outputs: Outputs) -> None:
        """One completion delivered by every racing thread at once."""
        task = _choose(self._tasks(TaskState.RUNNING), pick)
        tid, attempt_id = task.task_id, str(task.attempt_id)
        racers = self._racers()
        self.calls.append(f"concurrently x{len(racers)}: on_task_complete({tid!r}, "
                          f"{attempt_id!r}, {outputs!r})")
        results = run_concurrently([
            functools.partial(k.on_task_complete, self.run_id, tid, attempt_id, outputs)
            for k in racers])
        applied = sum(1 for r in results if r.applied)
        if applied != 1:
            fail("race-one-winner", ("complete.once",),
                 f"{applied} of {len(results)} concurrent deliveries of one completion of "
                 f"{tid} applied: {[r.outcome for r in results]}")
        ut, ref = self.sides
        self._published(ut, tid, outputs)
        self.completions.append((tid, attempt_id, outputs))
        if ref.kernel.on_task_complete(self.run_id, tid, attempt_id, outputs).applied:
            self._published(ref, tid, outputs)
        self._compare_dispatch(f"race_duplicate({tid!r})", ("complete.once",))

    # ---- invariants ----------------------------------------------------------------------

    @invariant()
    def stores_agree(self) -> None:
        if len(self.sides) < 2:
            return
        observed = [check_side(side, self.run_id) for side in self.sides]
        same_state(observed[0], observed[1])

    def teardown(self) -> None:
        stores = [s.raw for s in self.sides[:1]] + self.extra
        for store in reversed(stores):
            self.config.cleanup(store)


def run_machine(config: MachineConfig, settings: Settings, name: str) -> None:
    """Run the machine as a test (raises with the shrunk program on failure).

    A failure born in a race may not fail again when Hypothesis replays its program, and
    Hypothesis then raises a Flaky error instead of it. That is re-raised as the invariant's
    own AssertionError (invariant and clauses first) with a word about the race and whatever
    program Hypothesis printed.
    """
    machine = type(name, (StoreMachine,), {"config": config})
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
