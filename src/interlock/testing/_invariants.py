"""The stateful machine's invariants, checked on each side after every step.

- ``launch-once``: a node is launched, or settled without tasks, at most once per generation.
- ``barrier``: a node launches or settles only after every parent settled, a COMPLETED parent
  with all its tasks COMPLETED; a COMPLETED node has ``total_tasks`` tasks, all COMPLETED.
- ``outputs-once``: artifact ids are unique; a task's artifacts are exactly the outputs of its
  one winning completion; a second winning completion is a failure.
- ``terminal-final``: a terminal run state changes only through an applied ``retry_run``.
- ``callback-once``: ``on_run_finished`` fired once per terminal transition.
- ``same-state``: everything a reader sees equals the reference store's.
(``same-outcome``, ``race-one-winner`` and ``kernel-error``, an error with the reference store
too, are checked by the rules themselves.)
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

import attrs

from interlock.kernel import Kernel
from interlock.protocols import DagStore
from interlock.states import RunState
from interlock.testing._support import RecordingDispatcher, first_difference, observe
from interlock.testing._watch import Tally, Watched
from interlock.values import RunFinished

__all__ = ["CALLS", "FAILURES", "INVARIANTS", "Side", "check_side", "fail", "same_state"]

INVARIANTS = ("same-outcome", "race-one-winner", "kernel-error", "launch-once", "barrier",
              "outputs-once", "terminal-final", "callback-once", "same-state")


@attrs.define
class Side:
    """One of the two stores the machine drives, with what it saw of it."""

    name: str
    raw: DagStore
    tally: Tally
    kernel: Kernel = attrs.field(init=False)
    store: Watched = attrs.field(init=False)
    dispatcher: RecordingDispatcher = attrs.field(factory=RecordingDispatcher)
    finished: list[RunFinished] = attrs.field(factory=list)
    published: dict[str, list[dict[str, Any]]] = attrs.field(factory=dict)
    last: tuple[RunState, int] | None = None


FAILURES: ContextVar[list[str] | None] = ContextVar("interlock_machine_failures", default=None)
"""Messages of the failures of the current machine run (see ``run_machine``: a race-born
failure may not replay, and Hypothesis then reports a Flaky error instead of it)."""


CALLS: ContextVar[list[str] | None] = ContextVar("interlock_machine_calls", default=None)
"""The kernel calls of the current example, in order (recorded with each failure)."""


def fail(invariant: str, clauses: Sequence[str], message: str) -> None:
    """Raise AssertionError naming the invariant and the clauses it points at."""
    text = f"[stateful:{invariant}] ({', '.join(clauses)}) {message}"
    seen = FAILURES.get()
    if seen is not None:
        calls = "".join(f"\n  {call}" for call in CALLS.get() or [])
        seen.append(f"{text}\nkernel calls of the failing example, in order:{calls}")
    raise AssertionError(text)


def check_side(side: Side, run_id: str) -> dict[str, Any]:
    """Check the per-side invariants; returns what was observed (for ``same-state``)."""
    observed = observe(side.raw, run_id)
    _launch_once(side)
    _barrier(side, observed)
    _outputs_once(side, observed)
    _terminal(side, observed)
    return observed


def _launch_once(side: Side) -> None:
    tally = side.tally
    with tally.lock:
        launched, settled = dict(tally.launched), dict(tally.settled)
    for (index, generation), count in sorted(launched.items()):
        if count > 1:
            fail("launch-once", ("launch.atomic",), f"{side.name}: node n{index} generation "
                                                    f"{generation} was launched {count} times")
        if (index, generation) in settled:
            fail("launch-once", ("launch.atomic", "settle.once"),
                 f"{side.name}: node n{index} generation {generation} was launched AND settled "
                 "without tasks")
    for (index, generation), count in sorted(settled.items()):
        if count > 1:
            fail("launch-once", ("settle.once",), f"{side.name}: node n{index} generation "
                                                  f"{generation} was settled {count} times")


def _barrier(side: Side, observed: dict[str, Any]) -> None:
    with side.tally.lock:
        violations = list(side.tally.violations)
    if violations:
        fail("barrier", ("launch.batches", "complete.counters"), f"{side.name}: {violations[0]}")
    nodes, tasks = observed["nodes"], observed["tasks"]
    for node in nodes:
        index, state = node["index"], node["state"]
        if state == "completed":
            mine = [t for t in tasks
                    if t["node_index"] == index and t["generation"] == node["generation"]]
            unfinished = [t["task_id"] for t in mine if t["state"] != "completed"]
            if unfinished or len(mine) != node["total_tasks"]:
                fail("barrier", ("complete.counters", "launch.batches"),
                     f"{side.name}: node n{index} is COMPLETED with {len(mine)} of "
                     f"{node['total_tasks']} tasks stored, not completed: {unfinished}")
        if state in ("waiting", "cancelled"):
            continue
        for parent in side.tally.parents[index]:
            if nodes[parent]["state"] in ("waiting", "launched", "cancelled"):
                fail("barrier", ("complete.counters", "settle.once"),
                     f"{side.name}: node n{index} is {state} while its parent n{parent} is "
                     f"{nodes[parent]['state']}")


def _outputs_once(side: Side, observed: dict[str, Any]) -> None:
    artifacts = [a for found in observed["artifacts"].values() for a in found]
    ids = [a["artifact_id"] for a in artifacts]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        fail("outputs-once", ("complete.once",),
             f"{side.name}: artifact ids published more than once: {repeated}")
    by_task: dict[str, list[tuple[Any, ...]]] = {}
    for a in artifacts:
        by_task.setdefault(a["task_id"], []).append((a["artifact_id"], a["fields"], a["data"]))
    for task_id, outputs in sorted(side.published.items()):
        expected = [(f"{task_id}/{k}", o["fields"], o.get("data"))
                    for k, o in enumerate(outputs)]
        got = by_task.pop(task_id, [])
        if got != expected:
            fail("outputs-once", ("complete.once", "artifacts.origin"),
                 f"{side.name}: task {task_id} published {got}, its winning completion "
                 f"returned {expected}")
    if by_task:
        fail("outputs-once", ("complete.once", "complete.fenced"),
             f"{side.name}: artifacts of tasks without a winning completion: {sorted(by_task)}")


def _terminal(side: Side, observed: dict[str, Any]) -> None:
    run = observed["run"]
    if run is None:
        fail("same-state", ("run.create",), f"{side.name}: the run disappeared")
        return
    state, retries = RunState(run["state"]), int(run["retries"])
    if side.last is not None:
        last_state, last_retries = side.last
        if retries < last_retries:
            fail("terminal-final", ("retry.fenced",),
                 f"{side.name}: run.retries went down from {last_retries} to {retries}")
        if retries == last_retries and last_state.terminal and state is not last_state:
            fail("terminal-final", ("terminal.once",),
                 f"{side.name}: the run went {last_state.value} -> {state.value} without an "
                 "applied retry_run")
    side.last = (state, retries)
    expected = retries + (1 if state.terminal else 0)
    fired = [f.state.value for f in side.finished]
    if len(fired) != expected:
        fail("callback-once", ("terminal.once",),
             f"{side.name}: on_run_finished fired {len(fired)} times ({fired}) for {expected} "
             f"terminal transition(s) (run {state.value}, retries {retries})")
    if state.terminal and fired[-1] != state.value:
        fail("callback-once", ("terminal.once",),
             f"{side.name}: the last on_run_finished reported {fired[-1]}, the run is "
             f"{state.value}")


_HINTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("remaining_parents", ("complete.counters", "settle.once")),
    ("remaining_tasks", ("complete.counters", "launch.batches")),
    ("unsettled", ("settle.once", "complete.counters")),
    ("failed_nodes", ("fail.fenced", "settle.once")),
    ("artifact_seq", ("complete.once", "reads.ordering")),
    ("origin", ("artifacts.origin",)),
    (".artifacts", ("complete.once", "artifacts.origin", "reads.ordering")),
    ("attempt", ("claim.cas", "complete.fenced", "fail.fenced")),
    ("not_before", ("fail.retry",)),
    ("lease_until", ("lease.renew", "claim.cas")),
    ("resume", ("wait.resume",)),
    ("retries", ("retry.fenced",)),
    ("generation", ("retry.fenced",)),
    (".tasks", ("launch.atomic", "terminal.cancels-unfinished", "complete.fenced")),
    (".nodes", ("launch.atomic", "settle.once", "terminal.cancels-unfinished")),
    (".run", ("terminal.once",)),
)


def same_state(under_test: dict[str, Any], reference: dict[str, Any],
               step: Sequence[str] = ()) -> None:
    """Fail when the two observed states differ, naming the clauses where they differ points
    at, then those of the calls of the step (``step``) that made them differ."""
    diff = first_difference(under_test, reference)
    if diff is not None:
        hinted = next((c for key, c in _HINTS if key in diff.split(":")[0]), ("run.create",))
        clauses = (*hinted, *(c for c in step if c not in hinted))
        fail("same-state", clauses,
             f"the store under test differs from the reference at {diff} (under test vs "
             "reference)")
