"""complete_and_follow hands facts for a ready node with several parents, or whose parent had
several tasks: the parents' artifacts are read inside the completion's step (up to a bound), so
the node is launched in that same step. Run on the memory and the SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import Calls, Harness

from interlock import Output, RunState, TaskInput, _storekit_steps
from interlock_memory import MemoryStore
from interlock_sqlite import SqliteStore


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Calls]:
    if request.param == "memory":
        yield Calls(MemoryStore())
    else:
        with SqliteStore(tmp_path / "s.db") as sqlite:
            yield Calls(sqlite)


DIAMOND = {"name": "diamond", "nodes": [
    {"slug": "a", "plugin": "p"},
    {"slug": "b", "plugin": "p", "depends_on": ["a"]},
    {"slug": "c", "plugin": "p", "depends_on": ["a"]},
    {"slug": "d", "plugin": "p", "depends_on": ["b", "c"], "fan_mode": "aggregate"},
]}

FAN = {"name": "fan", "nodes": [
    {"slug": "src", "plugin": "p"},
    {"slug": "each", "plugin": "p", "depends_on": ["src"]},
    {"slug": "agg", "plugin": "p", "depends_on": ["each"], "fan_mode": "aggregate"},
]}


def _echo(task: TaskInput) -> list[Output]:
    if task.task_id.startswith("src"):
        return [Output(fields={"i": i}) for i in range(5)]
    return [Output(fields={"from": task.task_id})]


def _run(store: Calls, pipeline: dict[str, Any], last: str) -> tuple[list[str], TaskInput]:
    """Run ``pipeline`` to its last node; the store calls of the completion that released it,
    and that node's input."""
    h = Harness(store=store)
    h.kernel.start_run(pipeline, run_id="r")
    released: list[str] = []
    seen: list[TaskInput] = []

    def behaviour(task: TaskInput) -> list[Output]:
        seen.append(task)
        store.names.clear()
        return _echo(task)

    while h.dispatcher.refs:
        before = len(h.dispatcher.refs)
        h.work(behaviour, max_steps=1)
        if any(ref.task_id.startswith(last) for ref in h.dispatcher.refs) and not released:
            released = list(store.names)
        assert len(h.dispatcher.refs) <= before + 5
    assert [e.state for e in h.finished] == [RunState.COMPLETED]
    (final,) = [t for t in seen if t.task_id.startswith(last)]
    return released, final


def test_a_node_with_two_parents_is_launched_in_the_completing_step(store: Calls) -> None:
    released, d = _run(store, DIAMOND, "d")
    assert released == ["complete_and_follow"]  # no separate launch_node
    assert sorted(a.fields["from"] for a in d.inputs["b"] + d.inputs["c"]) == ["b.0.0", "c.0.0"]


def test_an_aggregate_of_a_many_task_parent_is_launched_in_the_completing_step(
        store: Calls) -> None:
    released, agg = _run(store, FAN, "agg")
    assert released == ["complete_and_follow"]
    # every artifact, the one published in that very step included, in publication order
    assert [a.fields["from"] for a in agg.inputs["each"]] == [f"each.0.{i}" for i in range(5)]
    assert [a.seq for a in agg.inputs["each"]] == sorted(a.seq for a in agg.inputs["each"])


def test_past_the_read_bound_the_release_is_launched_after_the_step(
        store: Calls, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_storekit_steps, "_FACTS_LIMIT", 3)
    released, agg = _run(store, FAN, "agg")
    assert released == ["complete_and_follow", "launch_node"]
    assert [a.fields["from"] for a in agg.inputs["each"]] == [f"each.0.{i}" for i in range(5)]


WIDE = {"name": "wide", "nodes": [
    {"slug": "src", "plugin": "p"},
    {"slug": "each", "plugin": "p", "depends_on": ["src"]},
    {"slug": "agg", "plugin": "p", "depends_on": ["each"], "fan_mode": "aggregate"},
]}


def test_a_wide_completion_of_a_many_task_parent_is_not_copied_into_facts(store: Calls) -> None:
    """The last of two tasks publishing PACK_MIN outputs each: its outputs are a lazy view that
    the step never copies to join the other task's, so the aggregate is launched after it."""
    from interlock.packed import PACK_MIN

    h = Harness(store=store)
    h.kernel.start_run(WIDE, run_id="r")
    released: list[list[str]] = []
    seen: dict[str, TaskInput] = {}

    def behaviour(task: TaskInput) -> list[Output]:
        seen[task.task_id] = task
        store.names.clear()
        if task.task_id.startswith("src"):
            return [Output(fields={"i": i}) for i in range(2)]
        return [Output(fields={"by": task.task_id, "k": k}) for k in range(PACK_MIN)]

    while h.dispatcher.refs:
        h.work(behaviour, max_steps=1)
        if any(ref.task_id.startswith("agg") for ref in h.dispatcher.refs) and not released:
            released.append(list(store.names))
    assert released == [["complete_and_follow", "launch_node"]]
    (agg,) = [t for i, t in seen.items() if i.startswith("agg")]
    assert len(agg.inputs["each"]) == 2 * PACK_MIN
    assert [a.fields["by"] for a in agg.inputs["each"]][::PACK_MIN] == ["each.0.0", "each.0.1"]
