"""``interlock run`` / ``validate`` / ``graph``: exit codes, one-line definition errors, no run
row for an invalid pipeline, progress and table output, and real ``python -m interlock``
subprocesses (success and Ctrl-C)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from interlock.cli import main
from interlock.states import RunState
from interlock_sqlite import SqliteStore

ROOT = Path(__file__).resolve().parent.parent
MEDIA_YAML = ROOT / "examples" / "media" / "pipeline.yaml"
MEDIA_JSON = ROOT / "examples" / "media" / "pipeline.json"


@pytest.fixture(autouse=True)
def _isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # the CLI adds pipeline dirs
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("INTERLOCK_STORE", raising=False)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _runs(db: Path) -> list[str]:
    """Run ids stored in the SQLite file (read with plain sqlite3)."""
    with sqlite3.connect(db) as connection:
        return [r[0] for r in connection.execute("SELECT run_id FROM runs")]


def test_run_media_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "runs.db"
    code = main(["run", str(MEDIA_YAML), "--input", "count=8", "--input",
                 f"workdir={tmp_path / 'out'}", "--store", f"sqlite:///{db}", "--workers", "3",
                 "--run-id", "media-1"])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["NODE", "PLUGIN", "STATE", "TASKS", "DONE", "FAILED",
                                "WAITING", "DURATION"]
    hash_row = next(line.split() for line in lines if line.startswith("hash "))
    assert hash_row[:6] == ["hash", "plugins:sha256", "completed", "8", "8", "0"]
    assert "run media-1 (media) completed: 7 nodes, 26 tasks" in out
    assert err.splitlines()[-1].startswith("done [########################]  nodes 7/7  "
                                           "tasks 26/26  failures 0")
    report = json.loads((tmp_path / "out" / "media-1" / "report.json").read_text())
    assert report["totals"]["files"] == 8 and report["title"] == "MEDIA REPORT"
    assert _runs(db) == ["media-1"]


def test_run_json_twin_quiet_with_input_json(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    inputs = _write(tmp_path / "in.json", json.dumps({"count": 4, "title": "from json",
                                                      "workdir": str(tmp_path / "o")}))
    code = main(["run", str(MEDIA_JSON), "--input-json", str(inputs), "--input", "count=5",
                 "--quiet", "--store", f"sqlite:///{tmp_path / 'q.db'}"])
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    run_id = out.strip()
    report = json.loads((tmp_path / "o" / run_id / "report.json").read_text())
    assert report["totals"]["files"] == 5 and report["title"] == "FROM JSON"


def test_default_store_is_sqlite_in_the_working_directory(tmp_path: Path) -> None:
    assert main(["run", str(MEDIA_YAML), "--input", "count=2", "--quiet"]) == 0
    assert len(_runs(tmp_path / "interlock.db")) == 1


def test_a_store_path_in_a_missing_directory_says_so(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The cause (a relative path meant absolute), not an install hint for an adapter that is
    installed; exit 3 (the store), nothing written."""
    code = main(["run", str(MEDIA_YAML), "--store", "sqlite:///tmp/nowhere/runs.db"])
    err = capsys.readouterr().err
    assert code == 3
    assert "directory" in err and "does not exist" in err and "sqlite:////PATH" in err
    assert "pip install" not in err
    assert not (tmp_path / "tmp").exists()


def test_limits_are_set_from_the_command_line(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """--limit NAME=N reaches the kernel (8 outputs against a limit of 5 fail the run); a bad
    one exits 2 before anything is written."""
    db = tmp_path / "limits.db"
    code = main(["run", str(MEDIA_YAML), "--input", "count=8", "--store", f"sqlite:///{db}",
                 "--limit", "max_outputs_per_task=5", "--workers", "2"])
    out, err = capsys.readouterr()
    assert code == 1 and "'max_outputs_per_task' exceeded: 8 > 5" in out
    assert "failures 1  " in err.splitlines()[-1]  # one failed task: not its node again
    for bad, needle in (("nope=3", "name one of max_outputs_per_task"),
                        ("launch_batch_size=0", "launch_batch_size must be >= 1"),
                        ("max_fields_bytes=big", "'big' is not an integer"),
                        ("expression=1", "name one of")):
        fresh = tmp_path / "bad.db"
        assert main(["run", str(MEDIA_YAML), "--store", f"sqlite:///{fresh}",
                     "--limit", bad]) == 2
        assert needle in capsys.readouterr().err
        assert not fresh.exists()
    assert main(["run", str(MEDIA_YAML), "--input", "count=8", "--store", f"sqlite:///{db}",
                 "--limit", "max_outputs_per_task=8", "--quiet"]) == 0


def test_the_pipelines_folder_wins_over_a_same_named_module_in_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``module:function`` plugins import from the pipeline's folder, as documented — not
    from a module of the same name in the working directory (it shadowed them)."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    name = f"shadowed_plugins_{os.getpid()}"
    monkeypatch.delitem(sys.modules, name, raising=False)
    here, there = tmp_path / "cwd", tmp_path / "pipeline"
    here.mkdir()
    there.mkdir()
    (here / f"{name}.py").write_text("# not the pipeline's plugins\n")
    (there / f"{name}.py").write_text("def one(task):\n    return [{'fields': {'ok': True}}]\n")
    pipeline = there / "p.yaml"
    pipeline.write_text(f"name: p\nnodes:\n  - {{slug: a, plugin: '{name}:one'}}\n")
    monkeypatch.chdir(here)
    assert main(["run", str(pipeline), "--store", f"sqlite:///{tmp_path / 'p.db'}", "-q"]) == 0


BAD_DEFINITIONS = {
    "yaml-syntax": ("name: p\nnodes:\n  - slug: a\n    plugin: p\n  - slug: b\n    plugin: p\n"
                    "     depends_on: [a]\n",
                    "line 7, column 16: node 'b', field 'depends_on': mapping values are not "
                    "allowed here"),
    "unknown-key": ("name: p\nnodes:\n  - slug: a\n    plugin: json:dumps\n    colour: red\n",
                    "node 'a', field 'colour': unknown key 'colour'"),
    "cycle": ("name: p\nnodes:\n  - {slug: a, plugin: 'json:dumps', depends_on: [b]}\n"
              "  - {slug: b, plugin: 'json:dumps', depends_on: [a]}\n",
              "node 'a', field 'depends_on': dependency cycle: a -> b -> a"),
    "unknown-pipe": ("name: p\nnodes:\n  - slug: a\n    plugin: json:dumps\n    bindings:\n"
                     "      t: '{input.title | shout}'\n",
                     "node 'a', field 'bindings.t': invalid expression: "),
    "unknown-plugin-module": ("name: p\nnodes:\n  - {slug: a, plugin: 'no_such_mod_q:f'}\n",
                              "node 'a', field 'plugin': plugin 'no_such_mod_q:f': cannot "
                              "import module"),
}


@pytest.mark.parametrize("case", sorted(BAD_DEFINITIONS))
def test_invalid_pipeline_exits_2_with_one_line_and_writes_nothing(
        case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text, expected = BAD_DEFINITIONS[case]
    pipeline = _write(tmp_path / f"{case}.yaml", text)
    db = tmp_path / "runs.db"
    code = main(["run", str(pipeline), "--store", f"sqlite:///{db}"])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {pipeline}: ")
    assert expected in err
    assert not db.exists()  # validated before the store was even opened
    assert main(["validate", str(pipeline)]) == 2


def test_unknown_pipe_error_points_at_the_column(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    pipeline = _write(tmp_path / "p.yaml", BAD_DEFINITIONS["unknown-pipe"][0])
    assert main(["validate", str(pipeline)]) == 2
    err = capsys.readouterr().err
    assert "shout" in err and "(column " in err and "'{input.title | shout}'" in err


def test_json_syntax_error_names_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pipeline = _write(tmp_path / "p.json", '{"name": "p",\n "nodes": [}\n')
    assert main(["validate", str(pipeline)]) == 2
    assert f"error: {pipeline}: line 2, column " in capsys.readouterr().err


def test_validate_and_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(MEDIA_YAML)]) == 0
    assert "ok: " in capsys.readouterr().out
    assert main(["validate", str(tmp_path / "missing.yaml")]) == 2
    assert "No such file" in capsys.readouterr().err
    assert main(["run", str(MEDIA_YAML), "--input", "no-equals-sign"]) == 2
    assert "expected key=value" in capsys.readouterr().err
    assert main(["run"]) == 2  # argparse usage error
    assert main(["frobnicate"]) == 2
    assert main(["run", str(MEDIA_YAML), "--plugins", "no_such_module_zz"]) == 2
    assert "--plugins no_such_module_zz: cannot import" in capsys.readouterr().err
    assert not (tmp_path / "interlock.db").exists()


def test_store_unreachable_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(MEDIA_YAML), "--store", "nosuchscheme://x"]) == 3
    assert "no store for scheme 'nosuchscheme'" in capsys.readouterr().err
    assert main(["status", "r", "--store", "sqlite:////nonexistent-dir/x/y.db"]) == 3


def test_graph_mermaid_and_dot(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", str(MEDIA_YAML)]) == 0
    mermaid = capsys.readouterr().out
    assert mermaid.startswith("flowchart TD\n")
    assert 'n0 -->|"kind eq #quot;video#quot;"| n4' in mermaid
    assert 'n5[["merge (grouped)<br/>plugins:merge"]]' in mermaid
    assert mermaid.count("-->") == 9
    assert main(["graph", str(MEDIA_YAML), "--format", "dot"]) == 0
    dot = capsys.readouterr().out
    assert dot.startswith('digraph "media" {')
    assert '"source" -> "thumbnail" [label="kind eq \\"video\\""];' in dot
    assert dot.count("->") == 9 and dot.rstrip().endswith("}")


def test_python_m_interlock_subprocess(tmp_path: Path) -> None:
    db = tmp_path / "sub.db"
    proc = subprocess.run(
        [sys.executable, "-m", "interlock", "run", str(MEDIA_YAML), "--input", "count=6",
         "--store", f"sqlite:///{db}", "--workers", "2", "--processes", "--run-id", "sub"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "run sub (media) completed" in proc.stdout
    assert (tmp_path / "media-out" / "sub" / "report.json").exists()
    store = SqliteStore(str(db))
    run = store.get_run("sub")
    assert run is not None and run.state is RunState.COMPLETED


INTERRUPTING_PLUGINS = '''
import os, signal

def items(task):
    return [{"fields": {"i": i}} for i in range(int(task.bindings["n"]))]

def work(task):
    (artifact,) = task.inputs["items"]
    if artifact.fields["i"] == 0:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, delivered to the main thread
    return [{"fields": {"i": artifact.fields["i"]}}]
'''


def test_ctrl_c_cancels_the_run_and_exits_4(tmp_path: Path) -> None:
    module = f"ctrlc_{uuid.uuid4().hex[:8]}"
    _write(tmp_path / f"{module}.py", INTERRUPTING_PLUGINS)
    pipeline = _write(tmp_path / "p.yaml", f"""
name: interruptible
nodes:
  - slug: items
    plugin: "{module}:items"
    bindings: {{n: {{input: n}}}}
  - {{slug: work, plugin: "{module}:work", depends_on: [items]}}
""")
    db = tmp_path / "c.db"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "interlock", "run", str(pipeline), "--input", "n=400",
         "--workers", "1", "--store", f"sqlite:///{db}", "--run-id", "c"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False, env=env)
    assert proc.returncode == 4, proc.stderr
    assert "interrupted: run c cancelled" in proc.stderr
    assert "run c (interruptible) cancelled" in proc.stdout
    run = SqliteStore(str(db)).get_run("c")
    assert run is not None and run.state is RunState.CANCELLED
    assert main(["status", "c", "--store", f"sqlite:///{db}"]) == 4
