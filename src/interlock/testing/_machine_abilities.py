"""The stateful machine's rules for optional abilities the store declares: ``batched``
(claim_tasks / on_tasks_complete)."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from interlock.states import TaskState
from interlock.testing._machine_base import COMPLETE, MachineBase, Outputs, choose
from interlock.testing._strategies import OUTPUTS, PICK

__all__ = ["AbilityRules"]


class AbilityRules(MachineBase):
    """Each rule runs only when the store declares its ability."""

    # ---- batched ------------------------------------------------------------------------

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
