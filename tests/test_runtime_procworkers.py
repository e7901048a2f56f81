"""``LocalRunner(mode="processes")`` over a re-openable store (a SQLite file): worker processes
with their own kernel and store connection. Every fan mode, failures, a dying worker process,
human waits, Ctrl-C, stop, reuse of the processes, resume; and the MemoryStore's pool path.

Synchronisation is by events and store state only: no sleeps. The plugins live in
``tests/proc_plugins.py`` (children import them by name) and are steered by the run input.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import proc_plugins
import pytest

from interlock import Kernel, RunState, TaskState
from interlock.runtime import LocalRunner, Progress
from interlock.runtime.local import PROCESS_BATCH
from interlock.stores import open_store
from interlock_memory import MemoryStore
from interlock_sqlite import SqliteStore

PLUGINS = "proc_plugins"
assert proc_plugins.__name__ == PLUGINS  # importable by that name: children import it so


def pipeline(**retry: Any) -> dict[str, Any]:
    """items -> square (single) -> pair (grouped, items + square) -> total (aggregate)."""
    square: dict[str, Any] = {
        "slug": "square", "plugin": f"{PLUGINS}:square", "depends_on": ["items"],
        "bindings": {"mode": {"input": "mode", "default": "ok"},
                     "dir": {"input": "dir", "default": "."},
                     "runner_pid": {"input": "runner_pid", "default": 0}}}
    if retry:
        square["retry"] = retry
    return {"name": "procs", "nodes": [
        {"slug": "items", "plugin": f"{PLUGINS}:items", "bindings": {"n": {"input": "n"}}},
        square,
        {"slug": "pair", "plugin": f"{PLUGINS}:pair", "depends_on": ["items", "square"],
         "fan_mode": "grouped"},
        {"slug": "total", "plugin": f"{PLUGINS}:total", "depends_on": ["pair"],
         "fan_mode": "aggregate"},
    ]}


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}"


@pytest.fixture
def store(url: str) -> Any:
    return open_store(url)


def total(store: Any, run_id: str) -> Any:
    (node,) = store.get_nodes(run_id, [3])
    (artifact,) = store.get_artifacts(run_id, 3, node.generation)
    return artifact.fields["sum"]


def square_pids(store: Any, run_id: str) -> set[int]:
    (node,) = store.get_nodes(run_id, [1])
    return {a.fields["pid"] for a in store.get_artifacts(run_id, 1, node.generation)}


def squares(n: int) -> int:
    return sum(i * i for i in range(n))


def test_sqlite_store_url_opens_the_same_database(tmp_path: Path) -> None:
    db = SqliteStore(tmp_path / "a b.db", synchronous="FULL", busy_timeout_ms=1234)
    again = open_store(db.url)
    assert isinstance(again, SqliteStore)
    assert again.path == str(tmp_path / "a b.db")
    assert (again.synchronous, again.busy_timeout_ms) == ("FULL", 1234)


def test_every_fan_mode_runs_in_two_worker_processes(url: str, store: Any) -> None:
    with LocalRunner(url, workers=2, mode="processes") as runner:
        assert runner.url is not None and runner.batch == PROCESS_BATCH
        result = runner.run(pipeline(), {"n": 60}, run_id="fans")
    assert result.state is RunState.COMPLETED
    assert total(store, "fans") == squares(60)
    pids = square_pids(store, "fans")
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    workers = {t.worker for t in store.list_tasks("fans", states=[TaskState.COMPLETED])}
    assert all(w is not None and w.startswith("local-") for w in workers)


def test_processes_are_reused_across_runs(url: str, store: Any) -> None:
    with LocalRunner(url, workers=2, mode="processes") as runner:
        first = runner.run(pipeline(), {"n": 30}, run_id="one")
        second = runner.run(pipeline(), {"n": 30}, run_id="two")
    assert first.state is second.state is RunState.COMPLETED
    pids = square_pids(store, "one") | square_pids(store, "two")
    assert len(pids) <= 2  # the same two children served both runs
    assert total(store, "two") == squares(30)


def test_plugin_error_is_retried_then_fails_the_run(url: str, store: Any) -> None:
    with LocalRunner(url, workers=2, mode="processes") as runner:
        result = runner.run(pipeline(max_attempts=2, backoff_seconds=0.05),
                            {"n": 10, "mode": "raise"}, run_id="flaky")
    assert result.state is RunState.FAILED
    task = store.get_task("flaky", "square.0.7")
    assert task is not None and task.state is TaskState.FAILED and task.attempt == 2
    assert "node 'square', task 'square.0.7', attempt 2" in (task.error or "")
    assert "ValueError: cannot square seven" in (task.error or "")


def test_a_dying_worker_process_is_replaced_and_its_attempt_retried(
        url: str, store: Any, tmp_path: Path) -> None:
    with LocalRunner(url, workers=2, mode="processes") as runner:
        result = runner.run(pipeline(), {"n": 12, "mode": "exit", "dir": str(tmp_path)},
                            run_id="crash")
    assert (tmp_path / "exit").exists()
    assert result.state is RunState.COMPLETED
    task = store.get_task("crash", "square.0.3")
    assert task is not None and task.attempt == 2  # the attempt in the dead process crashed
    assert total(store, "crash") == squares(12)


def test_wait_for_human_then_resume(url: str, store: Any) -> None:
    with LocalRunner(url, workers=2, mode="processes") as runner:
        first = runner.run(pipeline(), {"n": 4, "mode": "human"}, run_id="human")
        assert first.state is RunState.RUNNING and first.waiting == ("square.0.1",)
        assert Kernel(store).resume_task("human", "square.0.1", "ok") == "applied"
        second = runner.resume("human")
    assert second.state is RunState.COMPLETED
    assert total(store, "human") == squares(4)


def test_ctrl_c_cancels_the_run_and_kills_the_workers(url: str, store: Any) -> None:
    runner = LocalRunner(url, workers=2, mode="processes")
    with pytest.raises(KeyboardInterrupt):
        runner.run(pipeline(), {"n": 20, "mode": "sigint", "runner_pid": os.getpid()},
                   run_id="ctrl-c")
    run = store.get_run("ctrl-c")
    assert run is not None and run.state is RunState.CANCELLED
    unfinished = [TaskState.QUEUED, TaskState.RUNNING, TaskState.WAITING]
    assert not store.list_tasks("ctrl-c", states=unfinished)
    # the children were killed; the runner starts new ones for its next run
    with runner:
        again = runner.run(pipeline(), {"n": 5}, run_id="after")
    assert again.state is RunState.COMPLETED


def test_stop_lets_workers_finish_then_resume(url: str, store: Any) -> None:
    runner = LocalRunner(url, workers=2, mode="processes", batch=1, progress_interval=0.0)

    def stop_after_five(event: Progress) -> None:
        if event.tasks_done >= 5 and not event.final:
            runner.stop()

    runner.on_progress = stop_after_five
    with runner:
        result = runner.run(pipeline(), {"n": 200}, run_id="stopped")
    assert result.interrupted and result.state is RunState.RUNNING
    assert not store.list_tasks("stopped", states=[TaskState.RUNNING])  # finished, reported
    with LocalRunner(url, workers=2, mode="processes") as again:
        resumed = again.resume("stopped")
    assert resumed.state is RunState.COMPLETED
    assert total(store, "stopped") == squares(200)


def test_resume_after_an_abandoned_execution(url: str, store: Any, tmp_path: Path) -> None:
    with LocalRunner(url, workers=2, mode="processes") as runner, \
            pytest.raises(SystemExit):
        runner.run(pipeline(), {"n": 10, "mode": "abandon", "dir": str(tmp_path)},
                   run_id="abandoned")
    assert store.get_run("abandoned").state is RunState.RUNNING
    running = store.list_tasks("abandoned", states=[TaskState.RUNNING])
    assert "square.0.4" in [t.task_id for t in running]
    with LocalRunner(url, workers=2, mode="processes") as runner:
        result = runner.resume("abandoned")
    assert result.state is RunState.COMPLETED
    task = store.get_task("abandoned", "square.0.4")
    assert task is not None and task.attempt == 2
    assert total(store, "abandoned") == squares(10)


def test_memory_store_keeps_the_process_pool_path() -> None:
    store = MemoryStore()
    runner = LocalRunner(store, workers=2, mode="processes")
    assert runner.url is None and runner.batch == 1
    result = runner.run(pipeline(), {"n": 8}, run_id="memory")
    assert result.state is RunState.COMPLETED
    assert total(store, "memory") == squares(8)
    assert os.getpid() not in square_pids(store, "memory")
