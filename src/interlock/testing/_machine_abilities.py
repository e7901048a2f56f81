"""The stateful machine's rules for optional abilities the store declares: ``batched``
(claim_tasks / on_tasks_complete) and the continuation paths, ``handover`` (launch_and_claim)
and ``follow`` (complete_and_follow), driven through ``Kernel.complete_and_continue`` the way
a worker runs a chain. (With ``follow`` every completion of the other rules goes through
complete_and_follow too.)"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from interlock.errors import InterlockError
from interlock.records import TaskRecord, TaskRef, Transition
from interlock.states import TaskState
from interlock.testing._invariants import Side, fail
from interlock.testing._machine_base import COMPLETE, MachineBase, Outputs, choose
from interlock.testing._strategies import OUTPUT, OUTPUTS, PICK
from interlock.testing._support import first_difference, observe
from interlock.testing._watch import FollowCrash
from interlock.values import Claim


def _not_first(ref: TaskRef) -> bool:
    return not ref.task_id.endswith(".0")


ACCEPT: dict[str, Callable[[TaskRef], bool]] = {
    "any": lambda ref: True, "none": lambda ref: False, "not-first": _not_first}
"""The ``accept`` filters a continuing worker passes (``not-first``: a task other than the
first of its node, so a store that claims the wrong one of a launch's tasks shows)."""
_ACCEPTS = st.sampled_from(["any", "any", "not-first", "none"])
_SOME = st.lists(OUTPUT, min_size=1, max_size=3)
"""A chain's outputs: at least one, else the child would have nothing to run on."""

__all__ = ["ACCEPT", "BatchRules", "ContinueRules"]


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

    def _continue_clauses(self) -> tuple[str, ...]:
        declared = self.config.abilities
        return (*(["launch.claim"] if "handover" in declared else []),
                *(["complete.follow"] if "follow" in declared else []), "claim.cas", *COMPLETE)

    def _links(self) -> list[TaskRecord]:
        """Unfinished tasks whose completion can take the follow path: the only task of a
        node that is the only parent of a child (the facts must then be offered)."""
        only_parent = {ps[0] for ps in self.sides[1].tally.parents if len(ps) == 1}
        nodes = {n.index: n for n in self.sides[1].raw.get_nodes(self.run_id)}
        return [t for t in self._tasks(TaskState.QUEUED, TaskState.RUNNING)
                if t.node_index in only_parent and nodes[t.node_index].total_tasks == 1
                and nodes[t.node_index].generation == t.generation]

    def _start(self, task: TaskRecord) -> tuple[str, str]:
        """(task id, attempt id) of ``task`` running (a queued one is claimed first)."""
        if task.state is not TaskState.QUEUED:
            return task.task_id, str(task.attempt_id)
        attempt_id = f"a{next(self.attempts)}"
        self.claims.append((task.task_id, attempt_id))
        self._claim(task.task_id, attempt_id)
        return task.task_id, attempt_id

    @precondition(lambda self: bool(self._tasks(TaskState.QUEUED, TaskState.RUNNING)))
    @rule(pick=PICK, outputs=st.lists(_SOME, min_size=1, max_size=4), accept=_ACCEPTS,
          link=st.booleans(), crash=st.booleans())
    def continue_chain(self, pick: int, outputs: list[Outputs], accept: str, link: bool,
                       crash: bool) -> None:
        """A worker's chain: complete a task (a queued one is claimed first) with
        ``complete_and_continue`` and run the task it hands back, for up to ``len(outputs)``
        steps. With ``link``, start from a task whose node hands over to a child, if any; with
        ``crash`` too (ability ``follow``), its ``complete_and_follow`` step first fails inside
        the follow callback, as a process dying there would: that must leave nothing behind
        (then it is delivered again)."""
        links = self._links() if link else []
        tid, attempt_id = self._start(choose(links or self._tasks(TaskState.QUEUED,
                                                                  TaskState.RUNNING), pick))
        if links and crash and self.config.follow \
                and not self._crash_follow(tid, attempt_id, outputs[0]):
            return
        for out in outputs:
            claim = self._continue(tid, attempt_id, out, accept)
            if claim is None:
                return
            tid, attempt_id = claim.task_id, claim.attempt_id

    def _continue(self, tid: str, attempt_id: str, outputs: Outputs,
                  accept: str) -> Claim | None:
        """One ``complete_and_continue`` on both sides; the claim it handed back (if any)."""
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
            fail("same-outcome", c, f"{call}: the store under test did not call the follow "
                 "callback where the reference did (the completion readied one node whose only "
                 "parent, the completed node, had one task: its facts must be offered) and "
                 "applied the completion")
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
