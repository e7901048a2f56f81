"""The Worker repeats a completion the store could not take (StoreUnavailable), with the same
attempt: whether the failed call applied (its reply lost) or not, the task runs once, its
outputs are kept, and what the completion launched is dispatched — no reconcile_run.

Synchronisation is by events and store state only: no sleeps.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest
from support import worker_running

from interlock import Kernel, Output, RunState, StoreUnavailable, TaskInput
from interlock.plugins import PluginRegistry
from interlock.runtime import QueueDispatcher
from interlock.runtime.worker import Worker, repeat_while_unavailable
from interlock_memory import MemoryStore


class FlakyStore(MemoryStore):
    """A MemoryStore whose ``method`` raises StoreUnavailable on its first ``times`` calls,
    after applying them (``applied``: the reply was lost) or without (the request was)."""

    def __init__(self, method: str, applied: bool, times: int = 1) -> None:
        super().__init__()
        self.method, self.applied, self.left = method, applied, times
        self.faults = 0
        real = getattr(self, method)

        def flaky(*args: Any, **kwargs: Any) -> Any:
            if self.left == 0:
                return real(*args, **kwargs)
            self.left -= 1
            self.faults += 1
            if self.applied:
                real(*args, **kwargs)
            raise StoreUnavailable(f"{method}: connection lost (injected)")

        setattr(self, method, flaky)


def _registry(ran: Counter[str]) -> PluginRegistry:
    reg = PluginRegistry()

    @reg.plugin("step")
    def step(task: TaskInput) -> list[Output]:
        ran[task.task_id] += 1
        before = [a.data for arts in task.inputs.values() for a in arts]
        return [Output(data=(before[0] if before else 0) + 1)]

    @reg.plugin("items")
    def items(task: TaskInput) -> list[Output]:
        ran[task.task_id] += 1
        return [Output(fields={"i": i}, data=i) for i in range(20)]

    @reg.plugin("total")
    def total(task: TaskInput) -> list[Output]:
        ran[task.task_id] += 1
        return [Output(data=sum(a.data for a in task.inputs["step"]))]  # type: ignore[misc]

    return reg


CHAIN = {"name": "chain", "nodes": [
    {"slug": "a", "plugin": "step"},
    {"slug": "b", "plugin": "step", "depends_on": ["a"]},
    {"slug": "c", "plugin": "step", "depends_on": ["b"]},
    {"slug": "d", "plugin": "step", "depends_on": ["c"]},
]}
FAN = {"name": "fan", "nodes": [
    {"slug": "items", "plugin": "items"},
    {"slug": "step", "plugin": "step", "depends_on": ["items"]},
    {"slug": "total", "plugin": "total", "depends_on": ["step"], "fan_mode": "aggregate"},
]}


def _run(store: FlakyStore, pipeline: dict[str, Any], **worker_args: Any) -> Counter[str]:
    ran: Counter[str] = Counter()
    registry = _registry(ran)
    finished = threading.Event()
    queue = QueueDispatcher()
    kernel = Kernel(store, queue, plugins=registry, on_run_finished=lambda _: finished.set())
    worker = Worker(kernel, queue, registry, receive_timeout=5.0, recover_interval=None,
                    **worker_args)
    with worker_running(worker, queue):
        kernel.start_run(pipeline, run_id="r")
        assert finished.wait(30), "the run did not finish"
    run = store.get_run("r")
    assert run is not None and run.state is RunState.COMPLETED
    assert store.faults == 3
    return ran


@pytest.mark.parametrize("applied", [True, False], ids=["reply-lost", "request-lost"])
def test_chain_steps_whose_completion_failed_are_repeated_not_rerun(applied: bool) -> None:
    # chain steps go through complete_and_continue -> the store's complete_and_follow, which
    # launches the next step in the same step: a lost reply loses that launch's dispatch
    store = FlakyStore("complete_and_follow", applied, times=3)
    ran = _run(store, CHAIN)
    assert ran == {"a.0.0": 1, "b.0.0": 1, "c.0.0": 1, "d.0.0": 1}
    (last,) = store.get_artifacts("r", 3, 0)
    assert last.data == 4


@pytest.mark.parametrize("applied", [True, False], ids=["reply-lost", "request-lost"])
def test_batched_completions_that_failed_are_repeated_not_rerun(applied: bool) -> None:
    store = FlakyStore("complete_tasks", applied, times=3)
    ran = _run(store, FAN, batch=8)
    assert set(ran.values()) == {1} and len(ran) == 22
    (total,) = store.get_artifacts("r", 2, 0)
    assert total.data == sum(range(1, 21))


def test_repeats_end_with_the_stop_event_and_raise_the_last_error() -> None:
    calls = 0

    def unavailable() -> None:
        nonlocal calls
        calls += 1
        raise StoreUnavailable(f"down ({calls})")

    stop = threading.Event()
    stop.set()  # a stopping worker does not wait out the pauses: one repeat, then the error
    with pytest.raises(StoreUnavailable, match=r"down \(2\)"):
        repeat_while_unavailable(unavailable, stop, "test %s", 1)
    assert calls == 2
    results = iter([StoreUnavailable("once"), "done"])

    def once() -> str:
        result = next(results)
        if isinstance(result, Exception):
            raise result
        return result

    assert repeat_while_unavailable(once, None, "test") == "done"
