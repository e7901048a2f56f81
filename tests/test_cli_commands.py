"""``interlock status`` / ``retry`` / ``resume`` / ``cancel`` / ``worker`` against a real
SQLite file: exit codes follow the run's state; a failed run never exits 0."""

from __future__ import annotations

import json
import signal
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from interlock import Kernel, RunFinished, RunState, TaskState
from interlock.cli import main
from interlock.cli import worker as worker_command
from interlock.plugins import PluginRegistry
from interlock.runtime import LocalRunner, QueueDispatcher, load_pipeline_file
from interlock_sqlite import SqliteStore

PLUGINS = '''
import os

def items(task):
    return [{"fields": {"i": i}} for i in range(int(task.bindings["n"]))]

def square(task):
    (artifact,) = task.inputs["items"]
    marker = task.bindings.get("needs")
    if marker and artifact.fields["i"] == 1 and not os.path.exists(marker):
        raise ValueError(f"missing {marker}")
    return [{"fields": {"v": artifact.fields["i"] ** 2}}]

def total(task):
    return [{"fields": {"sum": sum(a.fields["v"] for a in task.inputs["square"])}}]
'''


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A pipeline file with its plugin module (unique name), a SQLite URL."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    sys.path.insert(0, str(tmp_path))
    module = f"cliplugins_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(PLUGINS)
    pipeline = tmp_path / "numbers.yaml"
    pipeline.write_text(f"""
name: numbers
nodes:
  - slug: items
    plugin: "{module}:items"
    bindings: {{n: {{input: n}}}}
  - slug: square
    plugin: "{module}:square"
    depends_on: [items]
    bindings: {{needs: {{input: needs, default: ""}}}}
  - slug: total
    plugin: "{module}:total"
    depends_on: [square]
    fan_mode: aggregate
""")
    db = tmp_path / "runs.db"
    return {"pipeline": str(pipeline), "url": f"sqlite:///{db}", "db": db, "module": module,
            "tmp": tmp_path}


def _total(db: Path, run_id: str) -> Any:
    store = SqliteStore(str(db))
    node = store.get_nodes(run_id, [2])[0]
    (artifact,) = store.get_artifacts(run_id, 2, node.generation)
    return artifact.fields["sum"]


def test_failed_run_exits_1_then_retry_exits_0(setup: dict[str, Any],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    marker = setup["tmp"] / "marker"
    args = ["run", setup["pipeline"], "--input", "n=5", "--input", f"needs={marker}",
            "--store", setup["url"], "--run-id", "r1", "--workers", "2"]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "run r1 (numbers) failed" in out
    assert "square: task square.0.1 failed: PluginError: node 'square', task 'square.0.1', " \
           "attempt 1: ValueError: missing" in out
    assert f"retry with: interlock retry r1 --store {setup['url']}" in out
    assert main(["status", "r1", "--store", setup["url"]]) == 1
    assert "failed" in capsys.readouterr().out

    assert main(["resume", "r1", "--store", setup["url"]]) == 1  # ended runs stay as they are
    capsys.readouterr()
    marker.write_text("ok")
    assert main(["retry", "r1", "--store", setup["url"], "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == "r1"
    assert _total(setup["db"], "r1") == sum(i * i for i in range(5))
    assert main(["status", "r1", "--store", setup["url"]]) == 0
    status = capsys.readouterr().out
    assert "run r1 (numbers) completed" in status and "retried 1x" in status
    assert main(["retry", "r1", "--store", setup["url"]]) == 2  # nothing to retry
    assert "nothing to retry" in capsys.readouterr().err


def test_status_json_and_unknown_run(setup: dict[str, Any],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", setup["pipeline"], "--input", "n=3", "--store", setup["url"],
                 "--run-id", "j", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["status", "j", "--store", setup["url"], "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["state"] == "completed"
    assert [n["tasks"] for n in data["nodes"]] == [{"completed": 1}, {"completed": 3},
                                                   {"completed": 1}]
    assert main(["status", "nope", "--store", setup["url"]]) == 2
    assert "no run 'nope'" in capsys.readouterr().err


def _interrupted_run(setup: dict[str, Any], run_id: str) -> SqliteStore:
    """A run stopped mid-way by its runner, with one task claimed by a 'dead' worker."""
    data = load_pipeline_file(setup["pipeline"])
    store = SqliteStore(str(setup["db"]))
    module = __import__(setup["module"])
    registry = PluginRegistry()
    runner = LocalRunner(store, registry, workers=1)
    calls = {"n": 0}

    def square(task: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            runner.stop()
        return module.square(task)

    registry.register(f"{setup['module']}:items", module.items)
    registry.register(f"{setup['module']}:square", square)
    registry.register(f"{setup['module']}:total", module.total)
    result = runner.run(data, {"n": 6}, run_id=run_id)
    assert result.interrupted and result.state is RunState.RUNNING
    queued = store.list_tasks(run_id, states=[TaskState.QUEUED])
    assert queued
    claim = Kernel(store).claim_task(run_id, queued[0].task_id, worker="dead-runner")
    assert claim is not None
    return store


def test_resume_an_interrupted_run(setup: dict[str, Any],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    store = _interrupted_run(setup, "half")
    assert main(["status", "half", "--store", setup["url"]]) == 5  # not finished
    assert "running" in capsys.readouterr().out
    assert main(["resume", "half", "--store", setup["url"], "--workers", "2"]) == 0
    assert "run half (numbers) completed" in capsys.readouterr().out
    assert _total(setup["db"], "half") == sum(i * i for i in range(6))
    crashed = [t for t in store.list_tasks("half") if t.attempt == 2]
    assert len(crashed) == 1  # the dead runner's attempt was crashed and run again


def test_cancel(setup: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    _interrupted_run(setup, "stop-me")
    assert main(["cancel", "stop-me", "--store", setup["url"]]) == 0
    assert "run stop-me cancelled" in capsys.readouterr().out
    assert main(["status", "stop-me", "--store", setup["url"]]) == 4
    assert main(["cancel", "stop-me", "--store", setup["url"]]) == 0  # already cancelled
    assert main(["resume", "stop-me", "--store", setup["url"]]) == 4  # stays cancelled
    assert main(["cancel", "nope", "--store", setup["url"]]) == 2
    assert main(["run", setup["pipeline"], "--input", "n=2", "--store", setup["url"],
                 "--run-id", "done", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["cancel", "done", "--store", setup["url"]]) == 2
    assert "already completed" in capsys.readouterr().err
    assert main(["retry", "stop-me", "--store", setup["url"], "--quiet"]) == 0


def test_worker_serves_a_queue_until_sigterm(setup: dict[str, Any],
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    queue = QueueDispatcher()
    opened: list[str] = []

    def fake_open_queue(url: str) -> QueueDispatcher:
        opened.append(url)
        return queue

    monkeypatch.setattr(worker_command, "open_queue", fake_open_queue)
    store = SqliteStore(str(setup["db"]))
    finished: list[RunFinished] = []
    main_thread = threading.main_thread().ident
    assert main_thread is not None

    def on_finished(event: RunFinished) -> None:
        finished.append(event)
        signal.pthread_kill(main_thread, signal.SIGTERM)

    # the "web app": starts a run whose tasks go to the queue the worker serves
    client = Kernel(store, queue, on_run_finished=on_finished)
    data = load_pipeline_file(setup["pipeline"])
    client.start_run(data, {"n": 7}, run_id="served")
    # the worker's own kernel finishes the run; the client learns it from the store
    original = worker_command.Kernel
    limits: list[Any] = []

    def kernel_factory(*args: Any, **kwargs: Any) -> Any:
        limits.append(kwargs.get("limits"))
        return original(*args, on_run_finished=on_finished, **kwargs)

    monkeypatch.setattr(worker_command, "Kernel", kernel_factory)
    code = main(["worker", "--store", setup["url"], "--queue", "memq://", "--concurrency", "3",
                 "--plugins", setup["module"], "--limit", "max_fields_bytes=4096"])
    assert code == 0
    assert [(lim.max_fields_bytes, lim.max_outputs_per_task) for lim in limits] == [(4096, 10_000)]
    assert opened == ["memq://"]
    assert [e.state for e in finished] == [RunState.COMPLETED]
    assert _total(setup["db"], "served") == sum(i * i for i in range(7))
    assert "worker: stopped" in capsys.readouterr().err


def test_worker_without_a_queue_adapter_exits_2(setup: dict[str, Any],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "--store", setup["url"]]) == 2
    assert "no queue for scheme 'sqlite'" in capsys.readouterr().err


def test_plugins_option_accepts_a_python_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    """``--plugins path/to/mod.py`` makes the folder importable and imports ``mod``: how a
    run whose pipeline names ``mod:fn`` is resumed from another directory."""
    from interlock.cli.common import import_plugin_modules

    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "resume_probe_mod.py").write_text("LOADED = True\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    import_plugin_modules([str(folder / "resume_probe_mod.py")])
    assert sys.modules["resume_probe_mod"].LOADED is True
    sys.modules.pop("resume_probe_mod")
