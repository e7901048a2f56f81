"""The stateful machine's rules for optional abilities the store declares: ``batched``
(claim_tasks / on_tasks_complete) and the continuation paths, ``handover`` (launch_and_claim)
and ``follow`` (complete_and_follow), driven through ``Kernel.complete_and_continue`` the way
a worker runs a chain. (With ``follow`` every completion of the other rules goes through
complete_and_follow too.)"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from interlock.records import TaskRecord
from interlock.states import TaskState
from interlock.testing._machine_base import COMPLETE, MachineBase, Outputs, choose
from interlock.testing._strategies import OUTPUT, OUTPUTS, PICK

__all__ = ["BatchRules", "ContinueRules"]

_ACCEPTS = st.sampled_from(["any", "any", "not-first", "none"])
"""Which tasks a continuing worker accepts (see ``ACCEPT``)."""
_SOME = st.lists(OUTPUT, min_size=1, max_size=3)
"""A chain's outputs: at least one, else the child would have nothing to run on."""


class BatchRules(MachineBase):
    """The rules of the ability ``batched`` (part of the machine only when it is declared)."""

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
            jobs.append(choose(self.completions, pick))
        results = self._both(f"on_tasks_complete({jobs!r})", ("batch.complete", *COMPLETE),
                             lambda s: s.kernel.on_tasks_complete(self.run_id, jobs))
        self.completions.extend(jobs)
        for side, transitions in zip(self.sides, results, strict=True):
            for (tid, _, out), transition in zip(jobs, transitions or [], strict=True):
                if transition.applied:
                    self._published(side, tid, out)



class ContinueRules(MachineBase):
    """The rules of the abilities ``handover`` and ``follow`` (part of the machine only when one
    of them is declared)."""

    def _start(self, task: TaskRecord) -> tuple[str, str]:
        """(task id, attempt id) of ``task`` running (a queued one is claimed first)."""
        if task.state is not TaskState.QUEUED:
            return task.task_id, str(task.attempt_id)
        attempt_id = f"a{next(self.attempts)}"
        self.claims.append((task.task_id, attempt_id))
        self._claim(task.task_id, attempt_id)
        return task.task_id, attempt_id

    @precondition(lambda self: bool(self._tasks(TaskState.QUEUED, TaskState.RUNNING)))
    @rule(pick=PICK, outputs=st.lists(_SOME, min_size=1, max_size=4), accept=_ACCEPTS)
    def continue_chain(self, pick: int, outputs: list[Outputs], accept: str) -> None:
        """A busy worker: up to ``len(outputs)`` completions with ``complete_and_continue``,
        each of the task the previous one handed back, else of another task (a queued one is
        claimed first)."""
        self._chain(pick, outputs, accept, lambda: self._tasks(TaskState.QUEUED,
                                                              TaskState.RUNNING))

    @precondition(lambda self: bool(self._releasing(follow=False)))
    @rule(pick=PICK, outputs=st.lists(_SOME, min_size=1, max_size=4), accept=_ACCEPTS)
    def hand_over(self, pick: int, outputs: list[Outputs], accept: str) -> None:
        """``continue_chain`` from tasks whose completion readies a node (the launch that a
        continuation claims from, or that ``follow`` applies in the completion's step)."""
        self._chain(pick, outputs, accept, lambda: self._releasing(follow=False))

    def _chain(self, pick: int, outputs: list[Outputs], accept: str,
               candidates: Callable[[], list[TaskRecord]]) -> None:
        """One continuation per ``outputs`` item: of the task handed back by the previous
        one, else of a task of ``candidates()`` (stops when there is none)."""
        held: tuple[str, str] | None = None
        for step, out in enumerate(outputs):
            if held is None:
                found = candidates()
                if not found:
                    return
                held = self._start(choose(found, pick + step))
            claim = self._continue(*held, out, accept)
            held = None if claim is None else (claim.task_id, claim.attempt_id)
