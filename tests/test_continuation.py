"""Continuation: a completion hands one task it launched to the completing worker
(``Kernel.complete_and_continue``), which runs it without a trip through the queue.

Kernel-level tests drive a MemoryStore with a recording dispatcher; runtime tests run the
``Worker`` loop (``LocalRunner`` in threads) on a real SQLite file. No sleeps.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import Calls, Harness

from interlock import Output, RunState, StoreUnavailable, TaskInput, TaskState
from interlock.plugins import PluginRegistry
from interlock.runtime import LocalRunner, QueueDispatcher, WaitForHuman, Worker
from interlock.runtime.worker import TaskOutcome
from interlock_sqlite import SqliteStore


def chain(n: int) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [{"slug": "c0", "plugin": "step"}]
    nodes += [{"slug": f"c{i}", "plugin": "step", "depends_on": [f"c{i - 1}"]}
              for i in range(1, n)]
    return {"name": "chain", "nodes": nodes}


FAN = {"name": "fan", "nodes": [
    {"slug": "src", "plugin": "list"},
    {"slug": "each", "plugin": "step", "depends_on": ["src"]},
    {"slug": "agg", "plugin": "step", "depends_on": ["each"], "fan_mode": "aggregate"},
]}


def first(h: Harness, run_id: str) -> tuple[str, str]:
    ref = h.dispatcher.refs.pop(0)
    claim = h.kernel.claim_task(run_id, ref.task_id, worker="w")
    assert claim is not None
    return ref.task_id, claim.attempt_id


# ---- kernel --------------------------------------------------------------------------------


def test_a_chain_step_is_handed_over_not_dispatched() -> None:
    h = Harness()
    h.kernel.start_run(chain(3), run_id="r")
    task_id, attempt = first(h, "r")
    steps = 1
    while True:
        transition, claim = h.kernel.complete_and_continue("r", task_id, attempt,
                                                           [{"data": steps}], worker="w")
        assert transition.outcome == "applied"
        if claim is None:
            break
        record = h.store.get_task("r", claim.task_id)
        assert record is not None and record.state is TaskState.RUNNING
        assert record.attempt_id == claim.attempt_id and record.worker == "w"
        assert claim.input.inputs["c" + str(steps - 1)][0].data == steps
        task_id, attempt = claim.task_id, claim.attempt_id
        steps += 1
    assert steps == 3
    assert h.dispatcher.refs == [] and h.dispatcher.sent == 1  # only the root went out
    run = h.store.get_run("r")
    assert run is not None and run.state is RunState.COMPLETED


def test_a_fan_out_hands_over_one_task_and_dispatches_the_rest() -> None:
    h = Harness()
    h.kernel.start_run(FAN, run_id="r")
    task_id, attempt = first(h, "r")
    outputs = [Output(data=i) for i in range(5)]
    _, claim = h.kernel.complete_and_continue("r", task_id, attempt, outputs)
    assert claim is not None and claim.task_id.startswith("each.")
    sent = {ref.task_id for ref in h.dispatcher.refs}
    assert len(sent) == 4 and claim.task_id not in sent


def test_accept_refusing_every_task_dispatches_them_all() -> None:
    h = Harness()
    h.kernel.start_run(chain(2), run_id="r")
    task_id, attempt = first(h, "r")
    _, claim = h.kernel.complete_and_continue("r", task_id, attempt, [Output(data=1)],
                                              accept=lambda ref: ref.plugin != "step")
    assert claim is None
    assert [ref.task_id for ref in h.dispatcher.refs] == ["c1.0.0"]


def test_a_completion_that_launches_nothing_continues_with_nothing() -> None:
    h = Harness()
    h.kernel.start_run(FAN, run_id="r")
    task_id, attempt = first(h, "r")
    h.kernel.on_task_complete("r", task_id, attempt, [Output(data=1), Output(data=2)])
    ref = h.dispatcher.refs.pop(0)
    claim = h.kernel.claim_task("r", ref.task_id)
    assert claim is not None
    _, following = h.kernel.complete_and_continue("r", ref.task_id, claim.attempt_id)
    assert following is None  # the aggregate still waits for the other task


class FailingClaims:
    """Wraps a store without declaring ``handover`` (so the kernel claims after the launch);
    claim_task raises StoreUnavailable while ``down`` is set."""

    abilities = frozenset({"batched"})

    def __init__(self, store: Any) -> None:
        self._store = store
        self.down = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def claim_task(self, *args: Any) -> Any:
        if self.down:
            raise StoreUnavailable("claims are down")
        return self._store.claim_task(*args)


def test_a_claim_that_raises_dispatches_the_task_it_held() -> None:
    from interlock_memory import MemoryStore

    store = FailingClaims(MemoryStore())
    h = Harness(store=store)
    h.kernel.start_run(chain(2), run_id="r")
    task_id, attempt = first(h, "r")
    store.down = True
    with pytest.raises(StoreUnavailable):
        h.kernel.complete_and_continue("r", task_id, attempt, [Output(data=1)])
    assert [ref.task_id for ref in h.dispatcher.refs] == ["c1.0.0"]  # not lost
    record = store.get_task("r", task_id)
    assert record is not None and record.state is TaskState.COMPLETED


@pytest.mark.parametrize(("abilities", "calls"), [
    ({"batched", "handover", "follow"}, ["complete_and_follow"]),
    ({"batched", "handover"}, ["complete_task", "launch_and_claim"]),
    ({"batched"}, ["complete_task", "launch_node", "claim_task"]),
])
def test_store_calls_of_a_chain_step(abilities: set[str], calls: list[str]) -> None:
    from interlock_memory import MemoryStore

    store = Calls(MemoryStore())
    store.abilities = frozenset(abilities)
    h = Harness(store=store)
    h.kernel.start_run(chain(3), run_id="r")
    task_id, attempt = first(h, "r")
    store.names.clear()
    _, claim = h.kernel.complete_and_continue("r", task_id, attempt, [Output(data=1)])
    assert claim is not None and claim.task_id == "c1.0.0"
    assert store.names == calls
    record = store.get_task("r", "c1.0.0")
    assert record is not None and record.attempt_id == claim.attempt_id
    assert record.state is TaskState.RUNNING
    assert claim.input.inputs["c0"][0].data == 1
    assert h.dispatcher.refs == []
    # a plain completion with follow: one call, the released task is dispatched
    store.names.clear()
    h.kernel.on_task_complete("r", claim.task_id, claim.attempt_id, [Output(data=2)])
    assert [ref.task_id for ref in h.dispatcher.refs] == ["c2.0.0"]
    if "follow" in abilities:
        assert store.names == ["complete_and_follow"]


def test_malformed_outputs_change_nothing_and_hold_nothing() -> None:
    h = Harness()
    h.kernel.start_run(chain(2), run_id="r")
    task_id, attempt = first(h, "r")
    with pytest.raises(Exception, match="output"):
        h.kernel.complete_and_continue("r", task_id, attempt, [{"nonsense": 1}])
    assert h.dispatcher.refs == []
    _, claim = h.kernel.complete_and_continue("r", task_id, attempt, [Output(data=1)])
    assert claim is not None and claim.task_id == "c1.0.0"


def test_tasks_of_another_run_launched_from_a_callback_are_dispatched() -> None:
    h = Harness()
    started: list[str] = []

    def on_finished(event: Any) -> None:
        if event.run_id == "r" and not started:
            started.append("other")
            h.kernel.start_run(chain(2), run_id="other")

    h.kernel.on_run_finished = on_finished
    h.kernel.start_run(chain(1), run_id="r")
    task_id, attempt = first(h, "r")
    _, claim = h.kernel.complete_and_continue("r", task_id, attempt)
    assert claim is None
    assert [(ref.run_id, ref.task_id) for ref in h.dispatcher.refs] == [("other", "c0.0.0")]


# ---- the worker loop -----------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    db = SqliteStore(str(tmp_path / "runs.db"))
    yield db
    db.close()


def counting_registry(seen: list[str], wait_at: str | None = None) -> PluginRegistry:
    registry = PluginRegistry()

    def step(task: TaskInput) -> list[Output]:
        seen.append(task.node)
        if task.node == wait_at and task.resume is None:
            raise WaitForHuman("approve")
        previous = [a.data for arts in task.inputs.values() for a in arts]
        return [Output(data=(previous[0] if previous else 0) + 1)]

    registry.register("step", step)
    return registry


class CountingQueue(QueueDispatcher):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    def dispatch(self, tasks: Any) -> None:
        self.sent.extend(t.task_id for t in tasks)
        super().dispatch(tasks)


@pytest.mark.parametrize("batch", [1, 16])
def test_the_worker_runs_a_chain_from_one_delivery(store: SqliteStore, batch: int) -> None:
    from interlock import Kernel

    seen: list[str] = []
    queue = CountingQueue()
    stop = threading.Event()
    kernel = Kernel(store, queue, on_run_finished=lambda event: stop.set())
    outcomes: list[TaskOutcome] = []
    worker = Worker(kernel, queue, counting_registry(seen), batch=batch,
                    on_outcome=outcomes.append, recover_interval=None)
    kernel.start_run(chain(30), run_id="r")
    worker.run(stop)
    assert seen == [f"c{i}" for i in range(30)]
    assert queue.sent == ["c0.0.0"]  # every later step was handed over
    assert [o.continues for o in outcomes] == [True] * 29 + [False]
    last = store.get_artifacts("r", 29, 0)
    assert [a.data for a in last] == [30]


def test_a_long_chain_does_not_hold_back_the_lease_sweep(store: SqliteStore) -> None:
    # a worker may run a whole chain from one delivery: its periodic recover must still run
    # between the steps, or expired leases of other workers wait for the chain to end
    from interlock import Kernel

    seen: list[str] = []
    swept_at: list[int] = []
    queue = CountingQueue()
    stop = threading.Event()
    kernel = Kernel(store, queue, on_run_finished=lambda event: stop.set())

    def recover() -> int:
        swept_at.append(len(seen))
        return 0

    worker = Worker(kernel, queue, counting_registry(seen), recover_interval=1e-9,
                    recover=recover)
    kernel.start_run(chain(10), run_id="r")
    worker.run(stop)
    assert queue.sent == ["c0.0.0"]  # one delivery: the rest were continuations
    # one sweep after each continued step (c1 .. c8 were followed by another step)
    assert [n for n in swept_at if 0 < n < 10] == list(range(2, 10))


def test_continue_chains_off_sends_every_step_through_the_queue(store: SqliteStore) -> None:
    from interlock import Kernel

    seen: list[str] = []
    queue = CountingQueue()
    stop = threading.Event()
    kernel = Kernel(store, queue, on_run_finished=lambda event: stop.set())
    worker = Worker(kernel, queue, counting_registry(seen), continue_chains=False,
                    recover_interval=None)
    kernel.start_run(chain(5), run_id="r")
    worker.run(stop)
    assert queue.sent == [f"c{i}.0.0" for i in range(5)]


def test_execute_called_directly_never_holds_a_task(store: SqliteStore) -> None:
    from interlock import Kernel

    queue = CountingQueue()
    kernel = Kernel(store, queue)
    worker = Worker(kernel, queue, counting_registry([]))
    kernel.start_run(chain(2), run_id="r")
    (delivery,) = queue.receive(1, 0)
    assert worker.execute(delivery.ref, "w").status == "completed"
    assert queue.sent == ["c0.0.0", "c1.0.0"]  # dispatched: nobody would run a held task


def test_local_runner_returns_when_a_handed_over_task_waits_for_a_human(
        store: SqliteStore) -> None:
    seen: list[str] = []
    runner = LocalRunner(store, counting_registry(seen, wait_at="c2"), workers=2)
    result = runner.run(chain(4), run_id="r")
    assert seen == ["c0", "c1", "c2"]
    assert result.waiting == ("c2.0.0",)
    task = store.get_task("r", "c2.0.0")
    assert task is not None and task.state is TaskState.WAITING
    resumed = LocalRunner(store, counting_registry(seen), workers=2)
    from interlock import Kernel

    Kernel(store, QueueDispatcher()).resume_task("r", "c2.0.0", "yes")
    final = resumed.resume("r")
    assert final.summary.state is RunState.COMPLETED
    assert seen[-2:] == ["c2", "c3"]


def test_a_continued_plugin_failure_is_retried_through_the_queue(store: SqliteStore) -> None:
    calls: list[str] = []
    registry = PluginRegistry()

    def flaky(task: TaskInput) -> list[Output]:
        calls.append(task.node)
        if task.node == "c1" and calls.count("c1") == 1:
            raise RuntimeError("first attempt fails")
        return [Output(data=1)]

    registry.register("step", flaky)
    pipeline = chain(3)
    for node in pipeline["nodes"]:
        node["retry"] = {"max_attempts": 2, "backoff_seconds": 0}
    result = LocalRunner(store, registry, workers=1).run(pipeline, run_id="r")
    assert result.summary.state is RunState.COMPLETED
    assert calls == ["c0", "c1", "c1", "c2"]
