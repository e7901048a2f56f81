"""The local runner end to end: the media example in threads and processes, resume after an
interruption, Ctrl-C, retry, human waits, and the in-process queue.

Synchronisation is by events and store state only: no sleeps.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import worker_running

from interlock import (
    GraphError,
    Kernel,
    NodeState,
    Output,
    RunState,
    TaskInput,
    TaskState,
    validate,
)
from interlock.plugins import PluginRegistry
from interlock.records import TaskRef
from interlock.runtime import (
    LocalRunner,
    Progress,
    QueueDispatcher,
    WaitForHuman,
    load_pipeline_file,
)
from interlock_sqlite import SqliteStore

ROOT = Path(__file__).resolve().parent.parent
MEDIA = ROOT / "examples" / "media"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    db = SqliteStore(str(tmp_path / "runs.db"))
    yield db
    close = getattr(db, "close", None)
    if callable(close):
        close()


@pytest.fixture
def media(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The example pipeline, with its directory importable (``plugins:NAME``)."""
    monkeypatch.syspath_prepend(str(MEDIA))
    return load_pipeline_file(MEDIA / "pipeline.yaml")


def _check_media_report(result_run_id: str, workdir: Path, count: int) -> dict[str, Any]:
    run_dir = workdir / result_run_id
    report = json.loads((run_dir / "report.json").read_text())
    files = sorted((run_dir / "files").glob("*-*.*"))
    originals = [f for f in files if not f.name.endswith(".thumb.pgm")]
    assert len(originals) == count
    assert report["totals"]["files"] == count
    assert [f["name"] for f in report["files"]] == sorted(f.name for f in originals)
    kinds = {"text": 0, "video": 0, "subtitle": 0}
    for entry in report["files"]:
        path = run_dir / "files" / entry["name"]
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert entry["bytes"] == path.stat().st_size
        assert entry["label"] == path.stem.upper()
        kinds[entry["kind"]] += 1
        if entry["kind"] == "video":
            thumb = Path(entry["thumbnail"])
            assert thumb.read_text().startswith("P2\n32 16\n255\n")
            assert ("note" in entry) == (entry["bytes"] > 32768)
        elif entry["kind"] == "subtitle":
            assert entry["cues"] >= 3 and entry["duration_seconds"] > 0
        else:
            words = len(path.read_text().split())
            assert entry["words"] == words
    assert report["totals"]["by_kind"] == {k: v for k, v in kinds.items() if v}
    assert report["totals"]["bytes"] == sum(f.stat().st_size for f in originals)
    return report


def test_media_pipeline_threads(store: SqliteStore, media: dict[str, Any],
                                tmp_path: Path) -> None:
    events: list[Progress] = []
    runner = LocalRunner(store, workers=4, on_progress=events.append)
    result = runner.run(media, {"count": 20, "workdir": str(tmp_path / "out"),
                                "title": "nightly batch"})
    assert result.state is RunState.COMPLETED
    report = _check_media_report(result.run_id, tmp_path / "out", 20)
    assert report["title"] == "NIGHTLY BATCH"
    assert report["totals"]["by_kind"] == {"subtitle": 6, "text": 7, "video": 7}
    nodes = {n.slug: n for n in result.summary.nodes}
    assert nodes["hash"].tasks_completed == 20 and nodes["merge"].tasks_completed == 20
    assert nodes["thumbnail"].tasks_total == 7 and nodes["report"].tasks_total == 1
    assert all(n.state is NodeState.COMPLETED for n in nodes.values())
    assert all(n.duration is not None for n in nodes.values())
    assert events[-1].final and events[-1].tasks_done == events[-1].tasks_total == 62
    assert events[-1].nodes_done == 7 and events[-1].failures == 0


def test_media_pipeline_processes(store: SqliteStore, media: dict[str, Any],
                                  tmp_path: Path) -> None:
    runner = LocalRunner(store, workers=2, mode="processes")
    result = runner.run(media, {"count": 9, "workdir": str(tmp_path / "out")})
    assert result.state is RunState.COMPLETED
    report = _check_media_report(result.run_id, tmp_path / "out", 9)
    assert report["title"] == "MEDIA REPORT"


def test_media_with_a_single_file_filters_the_other_branches(
        store: SqliteStore, media: dict[str, Any], tmp_path: Path) -> None:
    result = LocalRunner(store, workers=2).run(media, {"count": 1,
                                                       "workdir": str(tmp_path / "out")})
    assert result.state is RunState.COMPLETED
    states = {n.slug: n.state for n in result.summary.nodes}
    assert states["thumbnail"] is NodeState.FILTERED
    assert states["subtitles"] is NodeState.FILTERED
    _check_media_report(result.run_id, tmp_path / "out", 1)


def test_processes_mode_rejects_plugins_not_importable_by_name(store: SqliteStore) -> None:
    registry = PluginRegistry({"anon": lambda task: None})
    runner = LocalRunner(store, registry, workers=1, mode="processes")
    with pytest.raises(Exception, match="not importable by name"):
        runner.run({"name": "p", "nodes": [{"slug": "a", "plugin": "anon"}]})
    assert not store.list_expired(1e18, 10)


# ---- a small pipeline with controllable plugins -----------------------------------------

PIPELINE = {
    "name": "numbers",
    "nodes": [
        {"slug": "items", "plugin": "items", "bindings": {"n": {"input": "n"}}},
        {"slug": "square", "plugin": "square", "depends_on": ["items"]},
        {"slug": "total", "plugin": "total", "depends_on": ["square"],
         "fan_mode": "aggregate"},
    ],
}


class Numbers:
    """Plugins whose behaviour a test steers: ``on_square(call_number, task)`` hook."""

    def __init__(self) -> None:
        self.registry = PluginRegistry()
        self.calls = 0
        self.lock = threading.Lock()
        self.hook: Any = None
        reg = self.registry

        @reg.plugin("items")
        def items(task: TaskInput) -> list[Output]:
            return [Output(fields={"i": i}) for i in range(int(task.bindings["n"]))]  # type: ignore[arg-type]

        @reg.plugin("square")
        def square(task: TaskInput) -> list[dict[str, Any]]:
            with self.lock:
                self.calls += 1
                number = self.calls
            if self.hook is not None:
                self.hook(number, task)
            (artifact,) = task.inputs["items"]
            return [{"fields": {"v": artifact.fields["i"] ** 2}}]

        @reg.plugin("total")
        def total(task: TaskInput) -> list[Output]:
            return [Output(fields={"sum": sum(a.fields["v"] for a in task.inputs["square"])})]  # type: ignore[misc]


def _total(store: SqliteStore, run_id: str) -> Any:
    (artifact,) = store.get_artifacts(run_id, 2, store.get_nodes(run_id, [2])[0].generation)
    return artifact.fields["sum"]


def test_resume_after_the_runner_died_mid_run(store: SqliteStore) -> None:
    numbers = Numbers()

    def die_on_fifth(number: int, task: TaskInput) -> None:
        if number == 5:
            raise SystemExit("runner process killed")  # a dying process: nothing reported

    numbers.hook = die_on_fifth
    runner = LocalRunner(store, numbers.registry, workers=1, batch=1)  # one claim in hand
    run_id = "interrupted"
    with pytest.raises(SystemExit):
        runner.run(PIPELINE, {"n": 10}, run_id=run_id)
    assert store.get_run(run_id).state is RunState.RUNNING  # type: ignore[union-attr]
    running = store.list_tasks(run_id, states=[TaskState.RUNNING])
    assert [t.task_id for t in running] == ["square.0.4"]
    assert len(store.list_tasks(run_id, states=[TaskState.COMPLETED])) == 5  # items + 4

    numbers.hook = None
    result = LocalRunner(store, numbers.registry, workers=3).resume(run_id)
    assert result.state is RunState.COMPLETED
    assert _total(store, run_id) == sum(i * i for i in range(10))
    task = store.get_task(run_id, "square.0.4")
    assert task is not None and task.attempt == 2  # the abandoned attempt counted as crashed
    assert numbers.calls == 5 + 6


def test_resume_after_a_batching_runner_died_mid_batch(store: SqliteStore) -> None:
    """By default worker threads claim fast tasks in batches: a runner that dies mid-batch
    leaves the batch's claims RUNNING; resume counts each as a crashed attempt, runs it again,
    and every task's output is there exactly once."""
    numbers = Numbers()

    def die_on_sixth(number: int, task: TaskInput) -> None:
        if number == 6:
            raise SystemExit("runner process killed")

    numbers.hook = die_on_sixth
    runner = LocalRunner(store, numbers.registry, workers=1)
    assert runner.batch == 64  # the default of worker threads
    with pytest.raises(SystemExit):
        runner.run(PIPELINE, {"n": 10}, run_id="batched")
    # the batch in hand: the task that died and the others claimed with it (how many depends
    # on the batch size the worker had ramped to, which follows the plugins' timings)
    abandoned = {t.task_id for t in store.list_tasks("batched", states=[TaskState.RUNNING])}
    assert abandoned
    numbers.hook = None
    result = LocalRunner(store, numbers.registry, workers=2).resume("batched")
    assert result.state is RunState.COMPLETED
    assert _total(store, "batched") == sum(i * i for i in range(10))
    attempts = {t.task_id: t.attempt for t in store.list_tasks("batched")}
    assert {t for t, a in attempts.items() if a == 2} == abandoned
    assert set(attempts.values()) == {1, 2}


def test_graceful_stop_then_resume(store: SqliteStore) -> None:
    numbers = Numbers()
    runner = LocalRunner(store, numbers.registry, workers=1)

    def stop_on_third(number: int, task: TaskInput) -> None:
        if number == 3:
            runner.stop()

    numbers.hook = stop_on_third
    result = runner.run(PIPELINE, {"n": 8}, run_id="stopped")
    assert result.interrupted and result.state is RunState.RUNNING
    assert not store.list_tasks("stopped", states=[TaskState.RUNNING])  # reported, not lost
    numbers.hook = None
    resumed = LocalRunner(store, numbers.registry, workers=2).resume("stopped")
    assert resumed.state is RunState.COMPLETED and not resumed.interrupted
    assert _total(store, "stopped") == sum(i * i for i in range(8))
    assert numbers.calls == 8


def test_keyboard_interrupt_in_a_plugin_cancels_the_run(store: SqliteStore) -> None:
    numbers = Numbers()

    def interrupt(number: int, task: TaskInput) -> None:
        if number == 3:
            raise KeyboardInterrupt

    numbers.hook = interrupt
    with pytest.raises(KeyboardInterrupt):
        LocalRunner(store, numbers.registry, workers=2).run(PIPELINE, {"n": 20},
                                                            run_id="ctrl-c")
    run = store.get_run("ctrl-c")
    assert run is not None and run.state is RunState.CANCELLED
    unfinished = [TaskState.QUEUED, TaskState.RUNNING, TaskState.WAITING]
    assert not store.list_tasks("ctrl-c", states=unfinished)
    assert store.get_nodes("ctrl-c", [2])[0].state is NodeState.CANCELLED


class _SignalOnCancel:
    """A store proxy that sets ``cancelled`` once ``cancel_run`` has committed."""

    def __init__(self, inner: SqliteStore) -> None:
        self._inner = inner
        self.cancelled = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def cancel_run(self, *args: Any) -> Any:
        transition = self._inner.cancel_run(*args)
        self.cancelled.set()
        return transition


def test_sigint_in_the_main_thread_cancels_the_run(store: SqliteStore) -> None:
    numbers = Numbers()
    proxy = _SignalOnCancel(store)

    def press_ctrl_c(number: int, task: TaskInput) -> None:
        if number == 2:
            os.kill(os.getpid(), signal.SIGINT)  # delivered to the main thread
            assert proxy.cancelled.wait(30)

    numbers.hook = press_ctrl_c
    runner = LocalRunner(proxy, numbers.registry, workers=2)  # type: ignore[arg-type]
    with pytest.raises(KeyboardInterrupt):
        runner.run(PIPELINE, {"n": 10}, run_id="sigint")
    assert store.get_run("sigint").state is RunState.CANCELLED  # type: ignore[union-attr]
    # terminal states are final: a late completion cannot revive it
    assert LocalRunner(store, numbers.registry).resume("sigint").state is RunState.CANCELLED


def test_failure_names_node_task_attempt_then_retry(store: SqliteStore) -> None:
    numbers = Numbers()
    broken = {"on": True}

    def fail_on_seven(number: int, task: TaskInput) -> None:
        (artifact,) = task.inputs["items"]
        if broken["on"] and artifact.fields["i"] == 7:
            raise ValueError("cannot square seven")

    numbers.hook = fail_on_seven
    runner = LocalRunner(store, numbers.registry, workers=2)
    result = runner.run(PIPELINE, {"n": 10}, run_id="flaky")
    assert result.state is RunState.FAILED
    task = store.get_task("flaky", "square.0.7")
    assert task is not None and task.state is TaskState.FAILED
    assert task.error is not None
    assert "node 'square', task 'square.0.7', attempt 1" in task.error
    assert "ValueError: cannot square seven" in task.error
    square = {n.slug: n for n in result.summary.nodes}["square"]
    assert square.state is NodeState.FAILED and square.tasks_failed == 1

    broken["on"] = False
    retried = runner.retry("flaky")
    assert retried.state is RunState.COMPLETED
    assert _total(store, "flaky") == sum(i * i for i in range(10))


def test_malformed_outputs_fail_the_task_without_retry(store: SqliteStore) -> None:
    registry = PluginRegistry({"bad": lambda task: [{"fields": {}, "colour": "red"}]})
    pipeline = {"name": "bad", "nodes": [{"slug": "a", "plugin": "bad",
                                          "retry": {"max_attempts": 3}}]}
    result = LocalRunner(store, registry, workers=1).run(pipeline, run_id="bad")
    assert result.state is RunState.FAILED
    task = store.get_task("bad", "a.0.0")
    assert task is not None and task.attempt == 1 and "unknown output key" in (task.error or "")


def test_retry_policy_retries_in_the_local_runner(store: SqliteStore) -> None:
    attempts: list[str] = []

    def flaky(task: TaskInput) -> None:
        attempts.append(task.attempt_id or "")
        if len(attempts) < 3:
            raise RuntimeError("transient")

    pipeline = {"name": "r", "nodes": [{"slug": "a", "plugin": "flaky",
                                        "retry": {"max_attempts": 3}}]}
    result = LocalRunner(store, PluginRegistry({"flaky": flaky})).run(pipeline)
    assert result.state is RunState.COMPLETED
    assert len(set(attempts)) == 3


def test_wait_for_human_then_resume(store: SqliteStore) -> None:
    def approve(task: TaskInput) -> list[Output]:
        if task.resume is None:
            raise WaitForHuman("approve the batch")
        return [Output(fields={"approved_by": task.resume})]  # type: ignore[dict-item]

    registry = PluginRegistry({"approve": approve})
    pipeline = {"name": "h", "nodes": [{"slug": "gate", "plugin": "approve"}]}
    runner = LocalRunner(store, registry, workers=2)
    first = runner.run(pipeline, run_id="human")
    assert first.state is RunState.RUNNING and first.waiting == ("gate.0.0",)
    task = store.get_task("human", "gate.0.0")
    assert task is not None and task.state is TaskState.WAITING
    assert Kernel(store).resume_task("human", "gate.0.0", "ada") == "applied"
    second = runner.resume("human")
    assert second.state is RunState.COMPLETED
    (artifact,) = store.get_artifacts("human", 0, 0)
    assert artifact.fields == {"approved_by": "ada"}


def test_unknown_plugin_is_rejected_before_anything_is_written(store: SqliteStore) -> None:
    with pytest.raises(GraphError, match="unknown plugin"):
        LocalRunner(store, PluginRegistry()).run(PIPELINE, {"n": 1}, run_id="never")
    assert store.get_run("never") is None


# ---- plugin registry ---------------------------------------------------------------------

def test_registry_resolves_module_function_names_and_passthrough() -> None:
    registry = PluginRegistry()

    @registry.plugin("gate", passthrough=True)
    def gate(task: TaskInput) -> None:
        return None

    assert "gate" in registry and registry.is_passthrough("gate")
    assert "json:dumps" in registry and not registry.is_passthrough("json:dumps")
    assert registry.resolve("json:dumps").function is json.dumps
    assert "json:no_such_function" not in registry
    assert "no_such_module_xyz:f" not in registry
    assert "plain-unknown" not in registry and not registry.is_passthrough("plain-unknown")
    with pytest.raises(Exception, match="cannot import module 'no_such_module_xyz'"):
        registry.resolve("no_such_module_xyz:f")
    with pytest.raises(Exception, match="already registered"):
        registry.register("gate", lambda task: None)
    topology = validate({"name": "p", "nodes": [{"slug": "g", "plugin": "gate"}]}, registry)
    assert topology.passthrough == (True,)


# ---- the in-process queue ---------------------------------------------------------------

class _Clock:
    def __init__(self, now: float) -> None:
        self.value = now

    def now(self) -> float:
        return self.value


def test_queue_honours_not_before_and_reports_idle() -> None:
    clock = _Clock(100.0)
    idle = threading.Event()
    queue = QueueDispatcher(clock, on_idle=idle.set)
    assert queue.idle() and queue.receive(5, 0) == []
    queue.dispatch([TaskRef("r", "late.0.0", "p", not_before=105.0),
                    TaskRef("r", "now.0.0", "p"), TaskRef("r", "soon.0.0", "p", 103.0)])
    first = queue.receive(5, 0)
    assert [d.ref.task_id for d in first] == ["now.0.0"]
    assert queue.receive(5, 0) == [] and queue.pending() == 2
    clock.value = 106.0
    due = queue.receive(5, 0)
    assert [d.ref.task_id for d in due] == ["soon.0.0", "late.0.0"]
    queue.ack(first)
    assert not idle.is_set()
    queue.ack(due)
    assert idle.is_set() and queue.idle()


def test_queue_receive_blocks_until_dispatch_or_close() -> None:
    queue = QueueDispatcher()
    got: list[list[Any]] = []
    first = threading.Event()

    def consumer() -> None:
        got.append(queue.receive(1, 60))
        first.set()
        got.append(queue.receive(1, 60))  # blocks until close()

    thread = threading.Thread(target=consumer)
    thread.start()
    queue.dispatch([TaskRef("r", "a.0.0", "p")])
    assert first.wait(10)
    queue.close()
    thread.join(10)
    assert not thread.is_alive()
    assert [d.ref.task_id for d in got[0]] == ["a.0.0"] and got[1] == []


def test_worker_runs_each_task_once_under_duplicate_deliveries(store: SqliteStore) -> None:
    from interlock.runtime import TaskOutcome, Worker

    numbers = Numbers()
    idle = threading.Event()
    queue = QueueDispatcher(on_idle=idle.set)
    kernel = Kernel(store, queue, plugins=numbers.registry)
    run = kernel.start_run(PIPELINE, {"n": 4}, run_id="dupes")
    root = store.list_tasks("dupes")[0]
    queue.dispatch([TaskRef("dupes", root.task_id, "items")] * 3)  # at-least-once delivery
    outcomes: list[TaskOutcome] = []
    worker = Worker(kernel, queue, numbers.registry, on_outcome=outcomes.append,
                    recover_interval=None)
    with worker_running(worker, queue, daemon=False):
        assert idle.wait(30)
    assert store.get_run(run.run_id).state is RunState.COMPLETED  # type: ignore[union-attr]
    statuses = [o.status for o in outcomes]
    assert statuses.count("lost") == 3 and statuses.count("completed") == 1 + 4 + 1
    assert numbers.calls == 4


def test_a_run_that_ends_while_the_idle_check_reads_is_not_called_stuck(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The queue went idle while the last task ran as a continuation (it holds no delivery);
    that task completed the run between the idle check's reads: no "cannot progress"
    warning, and the execution ends."""
    from interlock.runtime.local import _Execution

    store = SqliteStore(tmp_path / "runs.db")
    runner = LocalRunner(store, PluginRegistry())
    kernel = Kernel(store, QueueDispatcher())
    kernel.start_run({"name": "p", "nodes": [{"slug": "a", "plugin": "x"}]}, run_id="r")
    (task,) = store.list_tasks("r")
    claim = kernel.claim_task("r", task.task_id)
    assert claim is not None

    class EndsDuringTheReads:
        """The store, where the run's last task completes right after the RUNNING list."""

        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

        def list_tasks(self, run_id: str, **kwargs: Any) -> Any:
            tasks = store.list_tasks(run_id, **kwargs)
            if kwargs.get("states") == [TaskState.RUNNING] and tasks:
                assert claim is not None
                kernel.on_task_complete("r", claim.task_id, claim.attempt_id, [])
                return []  # read before the completion
            return tasks

    execution = _Execution(runner, "r")
    execution.store = EndsDuringTheReads()  # type: ignore[assignment]
    execution._begun = True
    with caplog.at_level("WARNING", logger="interlock.runtime.local"):
        execution._on_idle()
    assert execution.done.is_set() and execution.waiting == ()
    assert "cannot progress" not in caplog.text
    run = store.get_run("r")
    assert run is not None and run.state is RunState.COMPLETED
