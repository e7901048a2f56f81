"""The Worker with ``batch`` > 1: receive(k) -> kernel.claim_tasks -> plugins ->
kernel.on_tasks_complete -> ack(k), on the in-process queue and a MemoryStore.

Synchronisation is by events and store state only: no sleeps.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
from support import worker_running

from interlock import Kernel, Output, RunState, TaskInput, TaskState
from interlock.plugins import PluginRegistry
from interlock.records import TaskRef
from interlock.runtime import QueueDispatcher, WaitForHuman
from interlock.runtime.worker import TaskOutcome, Worker
from interlock_memory import MemoryStore

FAN = {
    "name": "fan",
    "nodes": [
        {"slug": "items", "plugin": "items", "bindings": {"n": {"input": "n"}}},
        {"slug": "work", "plugin": "work", "depends_on": ["items"]},
        {"slug": "total", "plugin": "total", "depends_on": ["work"], "fan_mode": "aggregate"},
    ],
}


class CountingStore(MemoryStore):
    """A MemoryStore counting its claim and completion calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def claim_task(self, *args: Any, **kwargs: Any) -> Any:
        self.calls["claim_task"] += 1
        return super().claim_task(*args, **kwargs)

    def claim_tasks(self, *args: Any, **kwargs: Any) -> Any:
        self.calls["claim_tasks"] += 1
        return super().claim_tasks(*args, **kwargs)

    def complete_task(self, *args: Any, **kwargs: Any) -> Any:
        self.calls["complete_task"] += 1
        return super().complete_task(*args, **kwargs)

    def complete_tasks(self, *args: Any, **kwargs: Any) -> Any:
        self.calls["complete_tasks"] += 1
        return super().complete_tasks(*args, **kwargs)


class Plugins:
    """items -> work -> total; ``work`` misbehaves for the items named in ``behaviour``."""

    def __init__(self, behaviour: dict[int, str] | None = None) -> None:
        self.registry = PluginRegistry()
        self.behaviour = behaviour or {}
        self.ran: Counter[str] = Counter()
        self.lock = threading.Lock()
        reg = self.registry

        @reg.plugin("items")
        def items(task: TaskInput) -> list[Output]:
            n = int(task.bindings["n"])  # type: ignore[arg-type]
            return [Output(fields={"i": i}) for i in range(n)]

        @reg.plugin("work")
        def work(task: TaskInput) -> list[Any]:
            (artifact,) = task.inputs["items"]
            i = int(artifact.fields["i"])  # type: ignore[arg-type]
            with self.lock:
                self.ran[task.task_id] += 1
            action = self.behaviour.get(i)
            if action == "raise":
                raise ValueError(f"item {i} is broken")
            if action == "wait":
                raise WaitForHuman(f"is item {i} right?")
            if action == "malformed":
                return [{"bogus": i}]
            return [{"fields": {"v": 2 * i}}]

        @reg.plugin("total")
        def total(task: TaskInput) -> list[Output]:
            values = [a.fields["v"] for a in task.inputs["work"]]
            return [Output(fields={"n": len(values), "sum": sum(values)})]  # type: ignore[arg-type]


def _fan_run(store: MemoryStore, plugins: Plugins, n: int, run_id: str,
             attempts: int = 1) -> tuple[Kernel, QueueDispatcher, list[TaskRef]]:
    """Start the run, run its source task; return the work refs in the queue."""
    queue = QueueDispatcher()
    kernel = Kernel(store, queue, plugins=plugins.registry)
    nodes = [dict(node) for node in FAN["nodes"]]  # type: ignore[attr-defined]
    nodes[1]["retry"] = {"max_attempts": attempts}
    kernel.start_run({**FAN, "nodes": nodes}, {"n": n}, run_id=run_id)
    (source,) = queue.receive(10, 0)
    Worker(kernel, queue, plugins.registry).execute(source.ref)
    queue.ack([source])
    deliveries = queue.receive(10 * n, 0)
    queue.ack(deliveries)
    return kernel, queue, [d.ref for d in deliveries]


def _summary(outcomes: Sequence[TaskOutcome]) -> list[tuple[str, str, str | None]]:
    return sorted((o.ref.task_id, o.status, o.error) for o in outcomes)


def test_batched_worker_runs_a_fan_out_once_per_task_with_batched_store_calls() -> None:
    store = CountingStore()
    plugins = Plugins()
    finished = threading.Event()
    queue = QueueDispatcher()
    kernel = Kernel(store, queue, plugins=plugins.registry,
                    on_run_finished=lambda event: finished.set())
    outcomes: list[TaskOutcome] = []
    worker = Worker(kernel, queue, plugins.registry, batch=8, receive_timeout=5.0,
                    recover_interval=None, on_outcome=outcomes.append)
    with worker_running(worker, queue):
        kernel.start_run(FAN, {"n": 50}, run_id="fan")
        assert finished.wait(30)

    run = store.get_run("fan")
    assert run is not None and run.state is RunState.COMPLETED
    tasks = store.list_tasks("fan")
    assert len(tasks) == 52
    assert {t.state for t in tasks} == {TaskState.COMPLETED}
    assert {t.attempt for t in tasks} == {1}
    assert set(plugins.ran.values()) == {1} and len(plugins.ran) == 50
    (total,) = store.get_artifacts("fan", 2, 0)
    assert total.fields == {"n": 50, "sum": 2 * sum(range(50))}
    assert Counter(o.status for o in outcomes) == {"completed": 52}

    calls = store.calls
    assert calls["claim_tasks"] >= 1 and calls["complete_tasks"] >= 1
    assert calls["claim_task"] + calls["claim_tasks"] < 52
    assert calls["complete_task"] + calls["complete_tasks"] < 52


@pytest.mark.parametrize("attempts", [2, 1])
def test_a_mixed_batch_is_handled_task_by_task_as_the_single_path_does(attempts: int) -> None:
    behaviour = {3: "raise", 4: "wait", 7: "malformed"}
    n = 8

    # the single path, one delivery at a time
    single_store = MemoryStore()
    single_plugins = Plugins(behaviour)
    kernel, queue, refs = _fan_run(single_store, single_plugins, n, "mixed", attempts)
    single = Worker(kernel, queue, single_plugins.registry)
    single_outcomes = [single.execute(ref) for ref in refs]

    # the batched path: one batch of the same deliveries
    store = CountingStore()
    plugins = Plugins(behaviour)
    kernel, queue, refs = _fan_run(store, plugins, n, "mixed", attempts)
    store.calls.clear()
    batched = Worker(kernel, queue, plugins.registry, batch=16, batch_budget=math.inf)
    batched_outcomes = batched.execute_batch(refs)

    assert store.calls["claim_tasks"] == 1 and store.calls["claim_task"] == 0
    assert _summary(batched_outcomes) == _summary(single_outcomes)

    def state(s: MemoryStore) -> list[tuple[str, str, int, str | None]]:
        # a task cancelled after its claim was taken in the batch counts that attempt
        return sorted((t.task_id, t.state.value,
                       -1 if t.state is TaskState.CANCELLED else t.attempt, t.error)
                      for t in s.list_tasks("mixed"))

    assert state(store) == state(single_store)
    assert store.get_run("mixed").state == single_store.get_run("mixed").state  # type: ignore[union-attr]
    assert store.get_artifacts("mixed", 1, 0) == single_store.get_artifacts("mixed", 1, 0)
    assert plugins.ran == single_plugins.ran
    if attempts == 1:  # item 3 failed the node and the run: what follows is not run
        assert Counter(o.status for o in batched_outcomes) == {
            "completed": 3, "failed": 1, "lost": n - 4}
        return
    statuses = Counter(o.status for o in batched_outcomes)
    assert statuses == {"completed": n - 3, "failed": 2, "waiting": 1}
    errors = {o.ref.task_id: o.error for o in batched_outcomes}
    assert "item 3 is broken" in (errors["work.0.3"] or "")
    assert "unknown output key" in (errors["work.0.7"] or "")
    assert store.calls["complete_tasks"] == 1  # 0-2 together; 5-7 one by one (7 malformed)
    by_id = {t.task_id: t for t in store.list_tasks("mixed")}
    assert by_id["work.0.7"].state is TaskState.FAILED  # malformed: not retried
    assert by_id["work.0.3"].attempt == 1 and by_id["work.0.3"].error is not None
    assert by_id["work.0.4"].error == "is item 4 right?"  # waited, then cancelled by 7
    assert by_id["work.0.0"].state is TaskState.COMPLETED
    assert by_id["work.0.6"].state is TaskState.COMPLETED


def test_a_task_delivered_twice_in_one_batch_runs_once() -> None:
    store = CountingStore()
    plugins = Plugins()
    kernel, queue, refs = _fan_run(store, plugins, 4, "dup")
    store.calls.clear()
    worker = Worker(kernel, queue, plugins.registry, batch=16, batch_budget=math.inf)
    outcomes = worker.execute_batch([*refs, refs[0], refs[2]])
    assert plugins.ran == {ref.task_id: 1 for ref in refs}
    assert Counter(o.status for o in outcomes) == {"completed": 4, "lost": 2}
    lost = sorted(o.ref.task_id for o in outcomes if o.status == "lost")
    assert lost == sorted([refs[0].task_id, refs[2].task_id])
    assert store.calls["claim_tasks"] == 1 and store.calls["complete_tasks"] == 1
    assert {t.attempt for t in store.list_tasks("dup", node_index=1)} == {1}


def test_slow_or_unknown_plugins_are_claimed_one_at_a_time() -> None:
    store = CountingStore()
    plugins = Plugins()
    kernel, queue, refs = _fan_run(store, plugins, 4, "adaptive")
    store.calls.clear()
    worker = Worker(kernel, queue, plugins.registry, batch=16, batch_budget=0.0)
    outcomes = worker.execute_batch(refs)  # never fast enough: the one-task path
    assert Counter(o.status for o in outcomes) == {"completed": 4}
    assert store.calls["claim_tasks"] == 0 and store.calls["claim_task"] == 4
