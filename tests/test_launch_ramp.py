"""A large launch ramps up (Limits.launch_first_batch): its first batch is small and each batch
is dispatched as soon as it is written, so workers start while the rest is still written."""

from __future__ import annotations

from typing import Any

import pytest
from support import Harness

from interlock import Kernel, Limits, RunState, TaskInput, TaskRef, TaskState
from interlock_memory import MemoryStore

PIPELINE = {"name": "p", "nodes": [
    {"slug": "src", "plugin": "e"}, {"slug": "each", "plugin": "x", "depends_on": ["src"]},
    {"slug": "agg", "plugin": "x", "depends_on": ["each"], "fan_mode": "aggregate"}]}


class LaunchingStore(MemoryStore):
    """A store that launches after the completion commits (like Redis: no ``follow``)."""

    abilities = frozenset({"batched", "handover"})


class BatchRecorder:
    """A dispatcher that keeps each dispatch call's refs apart."""

    def __init__(self) -> None:
        self.batches: list[list[TaskRef]] = []
        self.on_dispatch: Any = None

    def dispatch(self, tasks: Any) -> None:
        self.batches.append(list(tasks))
        if self.on_dispatch is not None:
            self.on_dispatch(self.batches[-1])


def _behaviour(n: int) -> Any:
    def behaviour(task: TaskInput) -> list[dict[str, Any]]:
        if task.node == "src":
            return [{"fields": {"i": i}} for i in range(n)]
        return [{"fields": {}}] if task.node == "each" else []
    return behaviour


def _run(store: Any, n: int, limits: Limits | None = None) -> tuple[Harness, list[int]]:
    h = Harness(store=store, **({"limits": limits} if limits else {}))
    sizes: list[int] = []
    original = h.dispatcher.dispatch

    def recording(tasks: Any) -> None:
        sizes.append(len(tasks))
        original(tasks)

    h.dispatcher.dispatch = recording  # type: ignore[method-assign]
    h.kernel.start_run(PIPELINE, run_id="r")
    h.work(_behaviour(n))
    assert h.store.get_run("r").state is RunState.COMPLETED  # type: ignore[union-attr]
    return h, sizes


def test_a_1000_task_launch_dispatches_a_small_first_batch_first() -> None:
    _, sizes = _run(LaunchingStore(), 1_000)
    # src; each: 64, then doubling (128, 256, 512) up to launch_batch_size; agg
    assert sizes == [1, 64, 128, 256, 512, 40, 1]


def test_a_launch_over_one_batch_ramps_on_a_follow_store_too() -> None:
    _, sizes = _run(MemoryStore(), 2_500)
    assert sizes == [1, 64, 128, 256, 512, 1_000, 540, 1]


def test_a_follow_store_writes_only_a_first_batch_with_the_completion() -> None:
    # ``follow``: a launch that fits the first batch is written with the completion, in one
    # step; a wider one ramps as on any store, so workers start on its first tasks early
    _, sizes = _run(MemoryStore(), 64)
    assert sizes == [1, 64, 1]
    _, sizes = _run(MemoryStore(), 1_000)
    assert sizes == [1, 64, 128, 256, 512, 40, 1]


@pytest.mark.parametrize("first", [0, 1_000, 5_000])
def test_no_ramp_when_the_first_batch_is_off_or_not_smaller(first: int) -> None:
    _, sizes = _run(LaunchingStore(), 1_000, Limits(launch_first_batch=first))
    assert sizes == [1, 1_000, 1]


def test_small_launches_are_not_split() -> None:
    _, sizes = _run(LaunchingStore(), 64)
    assert sizes == [1, 64, 1]


def test_tasks_of_the_first_batch_can_run_while_the_rest_is_written() -> None:
    """A worker completes a task of the first batch before the second is written; the node
    settles only when every task of every batch is done, and the aggregate sees them all."""
    dispatcher = BatchRecorder()
    store = LaunchingStore()
    kernel = Kernel(store, dispatcher, limits=Limits(launch_first_batch=4,
                                                     launch_batch_size=16))
    kernel.start_run(PIPELINE, run_id="r")
    (src,) = dispatcher.batches.pop()
    done: list[str] = []

    def run_one(batch: list[TaskRef]) -> None:
        if done or batch[0].task_id == src.task_id:
            return
        ref = batch[0]  # a task of the first batch, while the launch is still going on
        claim = kernel.claim_task("r", ref.task_id)
        assert claim is not None
        dispatcher.on_dispatch = None
        kernel.on_task_complete("r", ref.task_id, claim.attempt_id, [{"fields": {}}])
        done.append(ref.task_id)

    dispatcher.on_dispatch = run_one
    claim = kernel.claim_task("r", src.task_id)
    assert claim is not None
    kernel.on_task_complete("r", src.task_id, claim.attempt_id, _behaviour(40)(claim.input))
    assert [len(b) for b in dispatcher.batches] == [4, 8, 16, 12] and len(done) == 1
    for batch in list(dispatcher.batches):
        for ref in batch:
            if ref.task_id in done:
                continue
            c = kernel.claim_task("r", ref.task_id)
            assert c is not None
            kernel.on_task_complete("r", ref.task_id, c.attempt_id, [{"fields": {}}])
    (agg,) = dispatcher.batches[-1]
    c = kernel.claim_task("r", agg.task_id)
    assert c is not None and len(c.input.inputs["each"]) == 40
    kernel.on_task_complete("r", agg.task_id, c.attempt_id, [])
    assert store.get_run("r").state is RunState.COMPLETED  # type: ignore[union-attr]


def test_a_cancel_after_the_first_batch_stops_the_launch() -> None:
    dispatcher = BatchRecorder()
    store = LaunchingStore()
    kernel = Kernel(store, dispatcher, limits=Limits(launch_first_batch=4,
                                                     launch_batch_size=16))
    kernel.start_run(PIPELINE, run_id="r")
    (src,) = dispatcher.batches.pop()
    dispatcher.on_dispatch = lambda batch: kernel.cancel_run("r")
    claim = kernel.claim_task("r", src.task_id)
    assert claim is not None
    kernel.on_task_complete("r", src.task_id, claim.attempt_id, _behaviour(40)(claim.input))
    # only the first batch was written and dispatched; the cancel ended it
    assert [len(b) for b in dispatcher.batches] == [4]
    assert store.get_run("r").state is RunState.CANCELLED  # type: ignore[union-attr]
    tasks = store.list_tasks("r")
    assert len(tasks) == 5
    assert {t.state for t in tasks if t.task_id != src.task_id} == {TaskState.CANCELLED}
