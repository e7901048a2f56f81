"""Cancelling work in bulk on SQLite: a cancelled run, or a failed task's siblings, are made
CANCELLED by one UPDATE (``SqliteRunTransaction.cancel_unfinished``) instead of every task read,
decoded and rewritten under the write lock — and the result is exactly what the generic loop of
the storekit writes."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import attrs
import pytest

from interlock import (
    FailurePolicy,
    FanMode,
    Kernel,
    Node,
    NodeState,
    Pipeline,
    RetryPolicy,
    RunState,
    TaskState,
)
from interlock_sqlite import SqliteStore
from interlock_sqlite.transaction import SqliteRunTransaction


class Clock:
    def __init__(self) -> None:
        self.t = 1_000.0

    def now(self) -> float:
        return self.t


class Statements:
    """``on_connect`` hook: every statement the store's connections run, while ``on``."""

    def __init__(self) -> None:
        self.on = False
        self.seen: list[str] = []

    def __call__(self, conn: sqlite3.Connection) -> None:
        conn.set_trace_callback(lambda sql: self.seen.append(sql) if self.on else None)


def _pipeline(count: int, policy: FailurePolicy) -> Pipeline:
    return Pipeline("fan", [
        Node("source", "emit", config={"count": count}),
        Node("item", "work", depends_on=["source"], retry=RetryPolicy(max_attempts=1)),
        Node("total", "sum", depends_on=["item"], fan_mode=FanMode.AGGREGATE),
    ], failure_policy=policy)


Running = dict[str, str]
"""Attempt ids of the running tasks, by task id."""


def _half_done(path: Path, statements: Statements, count: int = 60,
               policy: FailurePolicy = FailurePolicy.FAIL_FAST
               ) -> tuple[Kernel, Clock, Running]:
    """A run of ``count`` items: 10 completed, 9 running, 1 waiting, the rest queued.
    Returns the kernel, its clock and the attempt ids of the running items."""
    clock = Clock()
    kernel = Kernel(SqliteStore(path, on_connect=statements), clock=clock)
    kernel.start_run(_pipeline(count, policy), run_id="r")
    claim = kernel.claim_task("r", "source.0.0", worker="w")
    assert claim is not None
    kernel.on_task_complete("r", "source.0.0", claim.attempt_id,
                            [{"id": str(i), "fields": {"i": i}} for i in range(count)])
    running: Running = {}
    for i in range(20):
        clock.t += 1
        claim = kernel.claim_task("r", f"item.0.{i}", worker="w")
        assert claim is not None
        if i < 10:
            kernel.on_task_complete("r", claim.task_id, claim.attempt_id, [{"fields": {}}])
        elif i == 10:
            assert kernel.wait_task("r", claim.task_id, claim.attempt_id, "ask") == "applied"
        else:
            running[claim.task_id] = claim.attempt_id
    clock.t += 1
    return kernel, clock, running


def _contents(kernel: Kernel) -> Any:
    """What the store holds about the run, attempt ids (random) left out."""
    store = kernel.store
    return (store.get_run("r"), store.get_nodes("r"),
            [attrs.evolve(t, attempt_id=None) for t in store.list_tasks("r")])


def _without_bulk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the store's transactions take the storekit's generic loop."""
    monkeypatch.delattr(SqliteRunTransaction, "cancel_unfinished")


def test_cancel_run_is_one_update_and_writes_what_the_loop_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    statements = Statements()
    kernel, clock, _ = _half_done(tmp_path / "bulk.db", statements)
    statements.on = True
    transition = kernel.cancel_run("r", "stop")
    statements.on = False
    assert transition.applied and transition.run_state is RunState.CANCELLED
    # no task row read; one statement for all of them
    assert not [s for s in statements.seen if s.startswith("SELECT") and "FROM tasks" in s]
    assert len([s for s in statements.seen if s.startswith("UPDATE tasks")]) == 1
    tasks = {t.task_id: t for t in kernel.store.list_tasks("r")}
    for i in range(60):
        task = tasks[f"item.0.{i}"]
        if i < 10:
            assert task.state is TaskState.COMPLETED and task.updated_at < clock.t
        else:
            assert task.state is TaskState.CANCELLED
            assert (task.lease_until, task.updated_at) == (None, clock.t)
    assert [n.state for n in kernel.store.get_nodes("r")] == [
        NodeState.COMPLETED, NodeState.CANCELLED, NodeState.CANCELLED]
    assert kernel.cancel_run("r").outcome == "duplicate"

    _without_bulk(monkeypatch)
    loop, _, _ = _half_done(tmp_path / "loop.db", Statements())
    loop.cancel_run("r", "stop")
    assert _contents(loop) == _contents(kernel)


def test_a_failed_task_cancels_its_siblings_in_one_update(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CONTINUE: the node fails, its unfinished siblings are cancelled (their leases kept, as
    the loop keeps them) and the node settles; FAIL_FAST: the run is terminated, everything
    unfinished cancelled."""
    for policy in (FailurePolicy.CONTINUE, FailurePolicy.FAIL_FAST):
        results = []
        for name in ("bulk", "loop"):
            if name == "loop":
                _without_bulk(monkeypatch)
            statements = Statements()
            kernel, _, running = _half_done(tmp_path / f"{policy.value}-{name}.db",
                                            statements, policy=policy)
            statements.on = True
            failed = kernel.on_task_failed("r", "item.0.11", running["item.0.11"], "boom",
                                           retryable=False)
            statements.on = False
            assert failed.applied
            if name == "bulk":  # the failed task is read; its unfinished siblings are not
                assert not [s for s in statements.seen
                            if s.startswith("SELECT") and "tasks_by_state" in s]
                # the siblings, the whole run (FAIL_FAST), the failed task: never one per task
                assert len([s for s in statements.seen if s.startswith("UPDATE tasks")]) <= 3
            tasks = {t.task_id: t for t in kernel.store.list_tasks("r")}
            assert tasks["item.0.11"].state is TaskState.FAILED
            assert tasks["item.0.12"].state is TaskState.CANCELLED
            assert tasks["item.0.12"].lease_until is not None or policy is FailurePolicy.FAIL_FAST
            assert tasks["item.0.40"].state is TaskState.CANCELLED
            run = kernel.store.get_run("r")
            assert run is not None and run.state is RunState.FAILED
            # CONTINUE settles the failed node (its child skipped); FAIL_FAST terminates
            assert kernel.store.get_nodes("r")[2].state is (
                NodeState.CANCELLED if policy is FailurePolicy.FAIL_FAST else NodeState.SKIPPED)
            results.append(_contents(kernel))
            monkeypatch.undo()
        assert results[0] == results[1], policy


def test_records_written_earlier_in_the_step_are_cancelled_too(tmp_path: Path) -> None:
    """A task the transaction itself wrote (not in the file yet) is cancelled with the rest,
    and one it wrote finished is left as written."""
    store = SqliteStore(tmp_path / "a.db")
    kernel = Kernel(store, clock=Clock())
    kernel.start_run(_pipeline(3, FailurePolicy.FAIL_FAST), run_id="r")
    with store.transaction("r") as tx:
        assert tx is not None
        source = tx.task("source.0.0")
        assert source is not None and source.state is TaskState.QUEUED
        fresh = attrs.evolve(source, task_id="extra.0.0", seq=7)
        tx.put_task(fresh)  # new, unfinished
        tx.put_task(attrs.evolve(source, state=TaskState.COMPLETED))  # written finished
        tx.cancel_unfinished(None, 5.0, clear_lease=True)
        assert tx.task("extra.0.0") == attrs.evolve(fresh, state=TaskState.CANCELLED,
                                                    updated_at=5.0)
        assert tx.task("source.0.0").state is TaskState.COMPLETED  # type: ignore[union-attr]
    extra = store.get_task("r", "extra.0.0")
    assert extra is not None and extra.state is TaskState.CANCELLED
    source_after = store.get_task("r", "source.0.0")
    assert source_after is not None and source_after.state is TaskState.COMPLETED
