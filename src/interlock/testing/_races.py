"""Concurrency checks: many threads make the same (or competing) calls at the same instant.

Threads start together behind a :class:`threading.Barrier` (no sleeping); each race runs for
several rounds so a check-then-set window in a store is hit reliably. With the ``processes``
ability every thread gets its own store object from ``make_store()`` (as separate worker
processes would); with ``threads`` they share one.
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from interlock.kernel import Kernel
from interlock.protocols import DagStore
from interlock.records import NewArtifact, NodeRecord, Transition
from interlock.states import NodeState, RunState, TaskState
from interlock.testing._support import (
    Harness,
    RecordingDispatcher,
    Scenario,
    expect,
    expect_eq,
    outputs_for,
    pipeline,
)
from interlock.values import RunFinished

T = TypeVar("T")
_probes = itertools.count()

THREADS = 8
JOIN_TIMEOUT = 120.0


def run_concurrently(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run every call in its own thread, all released at once; results in call order.

    The first exception raised by a call is re-raised (after every thread has ended).
    """
    barrier = threading.Barrier(len(calls))
    results: list[T | None] = [None] * len(calls)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            barrier.wait()
            results[i] = calls[i]()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
        if thread.is_alive():
            raise AssertionError(f"a racing call did not return within {JOIN_TIMEOUT} s "
                                 "(deadlock in the store?)")
    if errors:
        raise errors[0]
    return [r for r in results]  # type: ignore[misc]


def modes(h: Harness) -> list[list[DagStore]]:
    """The store objects the racing threads use: shared (threads), separate (processes)."""
    out: list[list[DagStore]] = []
    if "threads" in h.abilities:
        out.append([h.store] * THREADS)
    if "processes" in h.abilities:
        probe = Scenario(h, f"processes-probe-{next(_probes)}", [[]])
        stores = [h.new_store() for _ in range(THREADS)]
        for store in stores:
            expect(store.get_run(probe.run_id) is not None, "run.create",
                   "ability 'processes' is declared, but a store object from a second "
                   "make_store() call does not see a run created through the first")
        out.append(stores)
    return out


def _one(outcomes: Sequence[str], clause: str, what: str, rest: str) -> int:
    """Exactly one 'applied', every other outcome ``rest``; returns the winner's index."""
    applied = [i for i, o in enumerate(outcomes) if o == "applied"]
    expect(len(applied) == 1, clause,
           f"{len(applied)} of {len(outcomes)} concurrent {what} applied (outcomes {outcomes})")
    others = sorted({o for o in outcomes if o != "applied"})
    expect(others in ([], [rest]), clause,
           f"the losers of concurrent {what} must be {rest!r}, got {outcomes}")
    return applied[0]


def _claim(store: DagStore, run_id: str, task_id: str, attempt_id: str, now: float) -> str:
    return store.claim_task(run_id, task_id, attempt_id, "w", now + 100, now)[0]


def _complete(store: DagStore, run_id: str, task_id: str, outputs: Sequence[NewArtifact],
              children: Sequence[int], now: float) -> Transition:
    return store.complete_task(run_id, task_id, f"{task_id}@1", outputs, children, now)


def race_claim_cas(h: Harness) -> None:
    """[claim.cas] N threads claim the same QUEUED task; exactly one applies."""
    c = "claim.cas"
    rounds = 16
    sc = Scenario(h, "race-claim", [[]])
    tids = sc.start(0, rounds * 2, claim=False)
    for m, stores in enumerate(modes(h)):
        for tid in tids[m * rounds:(m + 1) * rounds]:
            now = h.clock.now()
            calls = [functools.partial(_claim, s, sc.run_id, tid, f"{tid}#{i}", now)
                     for i, s in enumerate(stores)]
            winner = _one(run_concurrently(calls), c, f"claims of {tid}", "stale")
            task = sc.task(tid)
            expect_eq((task.state, task.attempt, task.attempt_id),
                      (TaskState.RUNNING, 1, f"{tid}#{winner}"), c,
                      f"{tid} (state, attempt, attempt_id) after a claim race")


def race_complete_once(h: Harness) -> None:
    """[complete.once] N threads deliver the same completion; one applies, outputs once."""
    c = "complete.once"
    rounds = 12
    sc = Scenario(h, "race-complete-once", [[]])
    tids = sc.start(0, rounds * 2)
    done = 0
    for m, stores in enumerate(modes(h)):
        for tid in tids[m * rounds:(m + 1) * rounds]:
            calls = [functools.partial(_complete, s, sc.run_id, tid, outputs_for(tid, 2), (),
                                       h.clock.now()) for s in stores]
            _one([t.outcome for t in run_concurrently(calls)], c, f"completions of {tid}",
                 "duplicate")
            done += 1
            mine = [a for a in sc.artifacts(0) if a.task_id == tid]
            expect_eq(len(mine), 2, c, f"artifacts of {tid} after a completion race")
            expect_eq(sc.run().artifact_seq, 2 * done, c, "run.artifact_seq after the race")


def race_complete_counters(h: Harness) -> None:
    """[complete.counters] N threads complete N different tasks of one node at once."""
    c = "complete.counters"
    for m, stores in enumerate(modes(h)):
        for r in range(10):
            sc = Scenario(h, f"race-counters-{m}-{r}", [[], [0]])
            tids = sc.start(0, THREADS)
            calls = [functools.partial(_complete, s, sc.run_id, tid, outputs_for(tid, 1), (1,),
                                       h.clock.now())
                     for s, tid in zip(stores, tids, strict=True)]
            results = run_concurrently(calls)
            expect_eq([t.outcome for t in results], ["applied"] * THREADS, c,
                      "outcomes of concurrent completions of different tasks")
            readies = [t for t in results if 1 in t.ready]
            expect(len(readies) == 1, c,
                   f"the child was reported ready by {len(readies)} of {THREADS} concurrent "
                   f"completions (lost or doubled counter update); transitions {results}")
            node, child = sc.node(0), sc.node(1)
            expect_eq((node.state, node.remaining_tasks, child.remaining_parents),
                      (NodeState.COMPLETED, 0, 0), c,
                      "(node state, remaining_tasks, child remaining_parents) after the race")
            expect_eq(sorted(a.seq for a in sc.artifacts(0)), list(range(1, THREADS + 1)), c,
                      "artifact seqs after concurrent completions")


def race_terminal_once(h: Harness) -> None:
    """[terminal.once] cancel vs final completion vs fail-fast, through the kernel."""
    c = "terminal.once"
    spec = pipeline({"slug": "a", "plugin": "work"}, {"slug": "b", "plugin": "work"})
    for m, stores in enumerate(modes(h)):
        for r in range(12):
            finished: list[RunFinished] = []
            kernels = [Kernel(s, RecordingDispatcher(), clock=h.clock,
                              on_run_finished=finished.append) for s in stores[:4]]
            run_id = h.run_id(f"race-terminal-{m}-{r}")
            kernels[0].start_run(spec, run_id=run_id)
            kernels[0].claim_task(run_id, "a.0.0", attempt_id="a")
            kernels[0].claim_task(run_id, "b.0.0", attempt_id="b")
            calls: list[Callable[[], Transition]] = [
                functools.partial(kernels[0].on_task_complete, run_id, "a.0.0", "a"),
                functools.partial(kernels[1].on_task_complete, run_id, "b.0.0", "b"),
                functools.partial(kernels[2].on_task_failed, run_id, "b.0.0", "b", "x",
                                  retryable=False),
                functools.partial(kernels[3].cancel_run, run_id, "race"),
            ]
            results = run_concurrently(calls)
            reported = [t.run_state for t in results if t.run_state is not None]
            expect(len(reported) == 1, c,
                   f"{len(reported)} racing calls reported a terminal run_state: {results}")
            run = stores[0].get_run(run_id)
            expect(run is not None and run.state is reported[0], c,
                   f"stored run state {run and run.state} != reported {reported[0]}")
            expect_eq([f.state for f in finished], reported, c, "on_run_finished calls")


def race_launch_atomic(h: Harness) -> None:
    """[launch.atomic] N threads launch one node; a reader never sees it without its tasks."""
    for m, stores in enumerate(modes(h)):
        for r in range(10):
            _launch_round(h, stores, f"race-launch-{m}-{r}")


def _launch_round(h: Harness, stores: Sequence[DagStore], label: str) -> None:
    """3 threads launch the node while 5 readers check that a LAUNCHED node always shows
    every task of its single launch call."""
    c = "launch.atomic"
    sc = Scenario(h, label, [[]])
    tasks = sc.new_tasks(0, range(3))
    launchers, readers = stores[:3], stores[3:]
    done = threading.Event()
    pending = [len(launchers)]
    lock = threading.Lock()
    seen: list[str] = []

    def read(store: DagStore) -> str:
        while not done.is_set():
            launched = store.get_nodes(sc.run_id, [0])[0].state is NodeState.LAUNCHED
            count = len(store.list_tasks(sc.run_id, node_index=0))
            if launched and count != len(tasks):
                seen.append(f"node LAUNCHED with {count} of its {len(tasks)} tasks visible")
        return "read"

    def launch(store: DagStore) -> str:
        try:
            return store.launch_node(sc.run_id, 0, 0, tasks, len(tasks), h.clock.now())
        finally:
            with lock:
                pending[0] -= 1
                if pending[0] == 0:
                    done.set()

    calls = ([functools.partial(launch, s) for s in launchers]
             + [functools.partial(read, s) for s in readers])
    _one(run_concurrently(calls)[:len(launchers)], c, "launches of one node", "duplicate")
    expect(not seen, c, f"a reader saw a half-written launch: {seen[:1]}")
    expect_eq(sc.tasks(0), tasks, c, "tasks after a launch race")


def _settle(store: DagStore, run_id: str, now: float) -> str:
    return store.settle_node(run_id, 0, 0, NodeState.FILTERED, "none", (1,), None, now).outcome


def race_settle_once(h: Harness) -> None:
    """[settle.once] N threads settle the same node; counters move once."""
    c = "settle.once"
    for m, stores in enumerate(modes(h)):
        for r in range(10):
            sc = Scenario(h, f"race-settle-{m}-{r}", [[], [0], []])
            calls = [functools.partial(_settle, s, sc.run_id, h.clock.now()) for s in stores]
            _one(run_concurrently(calls), c, "settles of one node", "duplicate")
            expect_eq((sc.node(1).remaining_parents, sc.run().unsettled), (0, 2), c,
                      "(child remaining_parents, run.unsettled) after a settle race")


def race_retry_fenced(h: Harness) -> None:
    """[retry.fenced] N threads reopen the same failed run; one applies."""
    c = "retry.fenced"
    for m, stores in enumerate(modes(h)):
        for r in range(8):
            sc = Scenario(h, f"race-retry-{m}-{r}", [[]])
            sc.settle(0, NodeState.FAILED, fail_run=RunState.FAILED)
            fresh = [NodeRecord(0, 1, NodeState.WAITING, 0)]
            calls = [functools.partial(s.reopen_run, sc.run_id, 0, fresh, h.clock.now())
                     for s in stores]
            outcomes = run_concurrently(calls)
            applied = outcomes.count("applied")
            expect(applied == 1, c, f"{applied} of {len(outcomes)} concurrent reopen_run "
                                    f"calls applied ({outcomes})")
            expect_eq((sc.run().retries, sc.run().state), (1, RunState.RUNNING), c,
                      "run (retries, state) after a reopen race")
