"""The stateful machine's concurrent bursts: racing kernels over the store under test only;
the reference replays the order the store under test serialised."""

from __future__ import annotations

import functools
import itertools

from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from interlock.kernel import Kernel
from interlock.records import TaskRecord
from interlock.states import TaskState
from interlock.testing._invariants import fail
from interlock.testing._machine_base import COMPLETE, MachineBase, Outputs, choose, jobs_text
from interlock.testing._races import run_concurrently
from interlock.testing._strategies import OUTPUTS, PICK
from interlock.testing._watch import Watched

__all__ = ["RaceRules"]


class RaceRules(MachineBase):
    """Rules that run only with a race mode (ability ``threads`` or ``processes``)."""

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
        tid = choose(self._tasks(TaskState.QUEUED), pick).task_id
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
        node = choose(sorted({t.node_index for t in self._tasks(TaskState.QUEUED,
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
                fail("same-outcome", COMPLETE, f"concurrent completion of RUNNING task "
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
        self._compare_dispatch(f"race_node({node})", COMPLETE)

    @precondition(lambda self: self.config.race_mode is not None
                  and bool(self._tasks(TaskState.RUNNING)))
    @rule(pick=PICK, outputs=OUTPUTS)
    def race_duplicate(self, pick: int, outputs: Outputs) -> None:
        """One completion delivered by every racing thread at once."""
        task = choose(self._tasks(TaskState.RUNNING), pick)
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
