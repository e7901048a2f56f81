"""The ``launch_many`` ability: a step that readies several nodes launches those that fit one
batch each in one ``launch_nodes`` call (one transaction / one round trip), then dispatches
them; a wide node still goes batch by batch, a single ready node takes the usual path."""

from __future__ import annotations

from typing import Any

import pytest
from support import Calls, Harness

from interlock import Limits, Output, RunState, TaskInput, TaskState
from interlock_memory import MemoryStore

FORK = {"name": "fork", "nodes": [
    {"slug": "src", "plugin": "emit"},
    {"slug": "a", "plugin": "step", "depends_on": ["src"]},
    {"slug": "b", "plugin": "step", "depends_on": ["src"]},
    {"slug": "c", "plugin": "step", "depends_on": ["src"], "fan_mode": "aggregate"},
    {"slug": "end", "plugin": "step", "depends_on": ["a", "b", "c"], "fan_mode": "aggregate"},
]}


def _emit(n: int) -> Any:
    def behaviour(task: TaskInput) -> list[dict[str, Any]]:
        if task.node == "src":
            return [{"fields": {"i": i}} for i in range(n)]
        return [{"fields": {"from": task.node}}]
    return behaviour


def _first(h: Harness) -> tuple[str, str]:
    ref = h.dispatcher.refs.pop(0)
    claim = h.kernel.claim_task("r", ref.task_id, worker="w")
    assert claim is not None
    return ref.task_id, claim.attempt_id


@pytest.mark.parametrize(("abilities", "launches"), [
    ({"batched", "launch_many"}, ["launch_nodes"]),
    ({"batched"}, ["launch_node"] * 3),
])
def test_a_completion_readying_three_nodes_launches_them_in_one_call(
        abilities: set[str], launches: list[str]) -> None:
    store = Calls(MemoryStore())
    store.abilities = frozenset(abilities)
    h = Harness(store=store)
    h.kernel.start_run(FORK, run_id="r")
    task_id, attempt = _first(h)
    store.names.clear()
    h.dispatcher.calls = 0
    h.kernel.on_task_complete("r", task_id, attempt, _emit(3)(_input(h, task_id)))
    assert store.names == ["complete_task", *launches]
    # every launched task dispatched once, after the launch: a, b (3 tasks each), c (1); with
    # launch_many in one dispatch call (one XADD pipeline on a Redis stream), else per node
    assert h.dispatcher.calls == (1 if "launch_many" in abilities else 3)
    assert sorted(ref.task_id for ref in h.dispatcher.refs) == sorted(
        [f"a.0.{s}" for s in range(3)] + [f"b.0.{s}" for s in range(3)] + ["c.0.0"])
    assert all(t.state is TaskState.QUEUED for t in store.list_tasks("r") if t.node_index)
    h.work(_emit(3))
    run = store.get_run("r")
    assert run is not None and run.state is RunState.COMPLETED
    (end,) = store.list_tasks("r", node_index=4)
    assert end.state is TaskState.COMPLETED


def _forked(limits: Limits) -> tuple[Harness, Calls, str, str]:
    """FORK started on a recording MemoryStore with launch_many; src claimed, calls cleared."""
    store = Calls(MemoryStore())
    store.abilities = frozenset({"batched", "launch_many"})
    h = Harness(store=store, limits=limits)
    h.kernel.start_run(FORK, run_id="r")
    task_id, attempt = _first(h)
    store.names.clear()
    return h, store, task_id, attempt


def _input(h: Harness, task_id: str) -> TaskInput:
    return h.kernel.build_task_input("r", task_id)


def test_a_wide_node_is_launched_in_batches_beside_the_small_ones() -> None:
    """``a`` and ``b`` have 100 tasks each, over ``launch_first_batch`` (8): each is launched
    batch by batch (ramped); only ``c`` is small, and alone it takes launch_node."""
    h, store, task_id, attempt = _forked(Limits(launch_first_batch=8, launch_batch_size=32))
    h.kernel.on_task_complete("r", task_id, attempt, _emit(100)(_input(h, task_id)))
    assert store.names[0] == "complete_task"
    assert "launch_nodes" not in store.names
    assert store.names.count("launch_node") == 2 * 5 + 1  # 8, 16, 32, 32, 12 twice; c once
    h.work(_emit(100))
    assert store.get_run("r").state is RunState.COMPLETED  # type: ignore[union-attr]


def test_small_launches_go_together_while_a_wide_one_is_batched() -> None:
    h, store, task_id, attempt = _forked(Limits(launch_first_batch=8, launch_batch_size=32))
    # 5 outputs: a and b have 5 tasks each (one batch), c one: all three together
    h.kernel.on_task_complete("r", task_id, attempt, _emit(5)(_input(h, task_id)))
    assert store.names == ["complete_task", "launch_nodes"]


def test_a_continuing_worker_gets_a_task_of_nodes_launched_together() -> None:
    store = Calls(MemoryStore())
    store.abilities = frozenset({"batched", "handover", "launch_many"})
    h = Harness(store=store)
    h.kernel.start_run(FORK, run_id="r")
    task_id, attempt = _first(h)
    store.names.clear()
    _, claim = h.kernel.complete_and_continue("r", task_id, attempt,
                                              [Output(fields={"i": i}) for i in range(2)])
    assert claim is not None and claim.task_id == "a.0.0"
    assert store.names == ["complete_task", "launch_nodes", "claim_task"]
    # the continuing worker holds a.0.0; the others are dispatched
    assert sorted(ref.task_id for ref in h.dispatcher.refs) == ["a.0.1", "b.0.0", "b.0.1",
                                                                 "c.0.0"]
    record = store.get_task("r", "a.0.0")
    assert record is not None and record.state is TaskState.RUNNING
    h.kernel.on_task_complete("r", claim.task_id, claim.attempt_id, [{"fields": {}}])
    h.work(_emit(2))
    assert store.get_run("r").state is RunState.COMPLETED  # type: ignore[union-attr]
