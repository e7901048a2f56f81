"""Large launches and large aggregates through the public Kernel API, on memory and SQLite.

An aggregate over many artifacts is persisted with its input by reference (planning.
REF_MIN_ARTIFACTS) and a wide launch is planned and written batch by batch; what a worker sees
must not change: exactly its planned inputs, in order, through claim_task and build_task_input,
after a crash in the middle of a launch too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support import Harness

from interlock import Limits, NodeState, RunState, StoreUnavailable, TaskInput
from interlock.planning import REF_MIN_ARTIFACTS

N = REF_MIN_ARTIFACTS + 500


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "memory":
        from interlock_memory import MemoryStore

        return MemoryStore()
    from interlock_sqlite import SqliteStore

    return SqliteStore(tmp_path / "runs.db")


def _work(h: Harness, seen: dict[str, list[TaskInput]]) -> None:
    def behaviour(task: TaskInput) -> list[dict[str, Any]]:
        seen.setdefault(task.node, []).append(task)
        if task.node == "src":
            return [{"id": f"a{i}", "fields": {"i": i, "even": i % 2 == 0}, "data": f"d{i}"}
                    for i in range(N)]
        if task.node in ("agg", "odd", "both"):
            return []
        (art,) = [a for arts in task.inputs.values() for a in arts]
        return [{"fields": {"i": art.fields["i"], "from": task.node}, "data": art.data}]

    h.work(behaviour)


def test_large_aggregate_gets_exactly_its_inputs_in_order(store: Any) -> None:
    h = Harness(store=store, limits=Limits(max_outputs_per_task=N))
    pipeline = {"name": "p", "nodes": [
        {"slug": "src", "plugin": "list"},
        {"slug": "each", "plugin": "work", "depends_on": ["src"]},
        {"slug": "agg", "plugin": "reduce", "depends_on": ["each"], "fan_mode": "aggregate",
         "bindings": {"ids": "{each.i | length}"}},
        {"slug": "odd", "plugin": "reduce", "depends_on": ["src"], "fan_mode": "aggregate",
         "edge_filters": {"src": [{"field": "even", "op": "eq", "value": False}]}},
    ]}
    seen: dict[str, list[TaskInput]] = {}
    h.kernel.start_run(pipeline, run_id="r")
    _work(h, seen)
    run = h.store.get_run("r")
    assert run is not None and run.state is RunState.COMPLETED
    (agg,) = seen["agg"]
    each = h.store.get_artifacts("r", 1, 0)
    assert len(each) == N
    assert [a.artifact_id for a in agg.inputs["each"]] == [a.artifact_id for a in each]
    assert agg.inputs["each"] == each  # ids, fields, data, seq, origin: what was published
    assert [a.seq for a in agg.inputs["each"]] == sorted(a.seq for a in each)
    assert agg.bindings == {"ids": N}
    (odd,) = seen["odd"]
    assert [a.fields["i"] for a in odd.inputs["src"]] == list(range(1, N, 2))
    # build_task_input gives the worker the same thing again, from the store alone
    (agg_task,) = h.store.list_tasks("r", node_index=2)
    rebuilt = h.kernel.build_task_input("r", agg_task.task_id)
    assert rebuilt.inputs == agg.inputs and rebuilt.bindings == agg.bindings
    assert "refs" in agg_task.plan and "inputs" not in agg_task.plan  # stored by reference


def test_large_aggregate_through_a_passthrough_gate_keeps_seq_order(store: Any) -> None:
    h = Harness(store=store, limits=Limits(max_outputs_per_task=N))
    pipeline = {"name": "p", "nodes": [
        {"slug": "src", "plugin": "list"},
        {"slug": "each", "plugin": "work", "depends_on": ["src"]},
        {"slug": "other", "plugin": "work", "depends_on": ["src"]},
        {"slug": "gate", "plugin": "gate", "passthrough": True, "depends_on": ["each", "other"],
         "fan_mode": "aggregate",
         "edge_filters": {"other": [{"field": "i", "op": "lt", "value": 300}]}},
        {"slug": "both", "plugin": "reduce", "depends_on": ["gate"], "fan_mode": "aggregate",
         "edge_filters": {"gate": [{"field": "i", "op": "gte", "value": 100}]}},
    ]}
    seen: dict[str, list[TaskInput]] = {}
    h.kernel.start_run(pipeline, run_id="r")

    def behaviour(task: TaskInput) -> list[dict[str, Any]]:
        seen.setdefault(task.node, []).append(task)
        if task.node == "src":
            return [{"id": f"a{i}", "fields": {"i": i}} for i in range(N)]
        if task.node in ("gate", "both"):
            return []
        (art,) = [a for arts in task.inputs.values() for a in arts]
        return [{"fields": {"i": art.fields["i"], "from": task.node}}]

    h.work(behaviour)
    run = h.store.get_run("r")
    assert run is not None and run.state is RunState.COMPLETED
    (both,) = seen["both"]
    expected = sorted(
        [a for a in h.store.get_artifacts("r", 1, 0) if a.fields["i"] >= 100]
        + [a for a in h.store.get_artifacts("r", 2, 0) if 100 <= a.fields["i"] < 300],
        key=lambda a: a.seq)
    assert len(expected) == N - 100 + 200
    assert both.inputs["gate"] == expected


def test_reconcile_repairs_a_large_launch_cut_short(store: Any) -> None:
    """A crash after the first batches of a launch: reconcile_run writes the missing tasks
    (the same ids, deterministic planning) and the run completes with every task once."""
    h = Harness(store=store, limits=Limits(max_outputs_per_task=N, launch_batch_size=200,
                                           launch_first_batch=50))
    task_id, attempt_id = _wide(h)

    class Crash(Exception):
        pass

    real = h.store.launch_node
    calls = 0

    def crash_on_third(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise Crash
        return real(*args, **kwargs)

    h.store.launch_node = crash_on_third
    with pytest.raises(Crash):
        h.kernel.on_task_complete("r", task_id, attempt_id,
                                  [{"id": f"a{i}", "fields": {"i": i}} for i in range(N)])
    del h.store.launch_node
    # the two batches written before the crash: 50, then 100 (the ramp doubles up to 200)
    assert len(h.store.list_tasks("r", node_index=1)) == 150
    (each,) = h.store.get_nodes("r", [1])
    assert each.state is NodeState.LAUNCHED and each.total_tasks == N
    h.dispatcher.refs.clear()
    assert h.kernel.reconcile_run("r") == N
    tasks = h.store.list_tasks("r", node_index=1)
    assert [t.task_id for t in tasks] == [f"each.0.{i}" for i in range(N)]
    assert [t.origin for t in tasks] == [f"src.0.0/a{i}" for i in range(N)]
    seen: dict[str, list[TaskInput]] = {}
    _work(h, seen)
    run = h.store.get_run("r")
    assert run is not None and run.state is RunState.COMPLETED
    assert len(seen["each"]) == N
    assert [t.inputs["src"][0].fields["i"] for t in seen["each"]] == list(range(N))
    (agg,) = seen["agg"]
    assert [a.fields["i"] for a in agg.inputs["each"]] == list(range(N))


def _wide(h: Harness) -> tuple[str, str]:
    """Start the 1 -> N -> 1 run "r" and claim its source task: (task id, attempt id)."""
    h.kernel.start_run({"name": "p", "nodes": [
        {"slug": "src", "plugin": "list"},
        {"slug": "each", "plugin": "work", "depends_on": ["src"]},
        {"slug": "agg", "plugin": "reduce", "depends_on": ["each"], "fan_mode": "aggregate"},
    ]}, run_id="r")
    ref = h.dispatcher.refs.pop(0)
    claim = h.kernel.claim_task("r", ref.task_id, worker="w")
    assert claim is not None
    return ref.task_id, claim.attempt_id


def _launch_fault(h: Harness, on_call: int, *, applied: bool) -> None:
    """The ``on_call``-th ``launch_node`` raises StoreUnavailable, after applying (its reply
    lost) or before (its request lost)."""

    real = h.store.launch_node
    calls = 0

    def launch_node(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls != on_call:
            return real(*args, **kwargs)
        if applied:
            real(*args, **kwargs)
        raise StoreUnavailable("launch_node: connection lost (injected)")

    h.store.launch_node = launch_node


@pytest.mark.parametrize("applied", [True, False], ids=["reply-lost", "request-lost"])
def test_a_repeated_completion_finishes_and_dispatches_a_launch_cut_short(
        store: Any, applied: bool) -> None:
    """The worker repeats a completion whose launch failed midway (the launch's reply or
    request lost): the repeat ('duplicate') writes the missing tasks and dispatches every
    task of the launch, without any reconcile_run; the run completes with each task once."""

    h = Harness(store=store, limits=Limits(max_outputs_per_task=N, launch_batch_size=200,
                                           launch_first_batch=50))
    task_id, attempt_id = _wide(h)
    outputs = [{"id": f"a{i}", "fields": {"i": i}} for i in range(N)]
    _launch_fault(h, 3, applied=applied)
    with pytest.raises(StoreUnavailable):
        h.kernel.on_task_complete("r", task_id, attempt_id, outputs)
    del h.store.launch_node
    assert len(h.store.list_tasks("r", node_index=1)) == (350 if applied else 150)
    # what the first call dispatched (the two batches before the fault) may be lost with the
    # worker's queue: the repeat must dispatch every task of the launch on its own
    h.dispatcher.refs.clear()
    assert h.kernel.on_task_complete("r", task_id, attempt_id, outputs).outcome == "duplicate"
    assert sorted({r.task_id for r in h.dispatcher.refs}) == \
        sorted(f"each.0.{i}" for i in range(N))
    assert [t.task_id for t in h.store.list_tasks("r", node_index=1)] == \
        [f"each.0.{i}" for i in range(N)]
    seen: dict[str, list[TaskInput]] = {}
    _work(h, seen)
    run = h.store.get_run("r")
    assert run is not None and run.state is RunState.COMPLETED
    assert sorted(t.task_id for t in seen["each"]) == sorted(f"each.0.{i}" for i in range(N))
    (agg,) = seen["agg"]
    assert [a.fields["i"] for a in agg.inputs["each"]] == list(range(N))


def test_reconcile_counts_only_the_current_generation_of_a_launch(store: Any) -> None:
    """After retry_run, a node's earlier generation keeps its tasks: a relaunch cut short is
    found short by its own generation's count (not the sum over generations) and completed."""
    h = Harness(store=store, limits=Limits(max_outputs_per_task=N, launch_batch_size=200,
                                           launch_first_batch=50))
    task_id, attempt_id = _wide(h)
    h.kernel.on_task_complete("r", task_id, attempt_id,
                              [{"id": f"a{i}", "fields": {"i": i}} for i in range(N)])
    first = h.dispatcher.refs.pop(0)
    claim = h.kernel.claim_task("r", first.task_id, worker="w")
    assert claim is not None
    h.kernel.on_task_failed("r", first.task_id, claim.attempt_id, "boom", retryable=False)
    run = h.store.get_run("r")
    assert run is not None and run.state is RunState.FAILED
    _launch_fault(h, 3, applied=False)
    with pytest.raises(StoreUnavailable):
        h.kernel.retry_run("r")
    del h.store.launch_node
    tasks = h.store.list_tasks("r", node_index=1)
    assert len([t for t in tasks if t.generation == 1]) == 150 and len(tasks) == N + 150
    h.dispatcher.refs.clear()
    assert h.kernel.reconcile_run("r") == N
    assert sorted(r.task_id for r in h.dispatcher.refs) == sorted(f"each.1.{i}" for i in range(N))
    seen: dict[str, list[TaskInput]] = {}
    _work(h, seen)
    run = h.store.get_run("r")
    assert run is not None and run.state is RunState.COMPLETED
    assert len(seen["each"]) == N


def test_reconcile_reads_unfinished_tasks_only_when_every_launch_is_whole(store: Any) -> None:
    """A sweep of a running run whose launches are whole reads the unfinished tasks once — not
    every task of every launched node (plans included) — and still sends every queued one."""
    h = Harness(store=store, limits=Limits(max_outputs_per_task=N))
    task_id, attempt_id = _wide(h)
    h.kernel.on_task_complete("r", task_id, attempt_id,
                              [{"id": f"a{i}", "fields": {"i": i}} for i in range(N)])
    for ref in h.dispatcher.refs[:N - 10]:  # all but 10 done; 5 of those running
        claim = h.kernel.claim_task("r", ref.task_id, worker="w")
        assert claim is not None
        h.kernel.on_task_complete("r", ref.task_id, claim.attempt_id, [])
    running = h.dispatcher.refs[N - 10:N - 5]
    for ref in running:
        assert h.kernel.claim_task("r", ref.task_id, worker="w") is not None
    reads: list[dict[str, Any]] = []
    real = h.store.list_tasks

    def list_tasks(run_id: str, **kwargs: Any) -> Any:
        reads.append(kwargs)
        return real(run_id, **kwargs)

    h.store.list_tasks = list_tasks
    h.dispatcher.refs.clear()
    assert h.kernel.reconcile_run("r") == 5
    assert [sorted(r) for r in reads] == [["states"]]  # one read, no node read whole
    assert sorted(r.task_id for r in h.dispatcher.refs) == sorted(
        f"each.0.{i}" for i in range(N - 5, N))
