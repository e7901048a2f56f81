"""``summarize`` counts each node's current generation: completed tasks from the node
counters, unfinished ones from one read, failed or cancelled ones read only for the nodes that
have some — equal to counting every task record, and a completed run reads no task record."""

from __future__ import annotations

from collections import Counter
from typing import Any

from support import Harness

from interlock import RunState, TaskState
from interlock.runtime.summary import summarize


def _counted_from_every_task(h: Harness, run_id: str) -> dict[str, dict[TaskState, int]]:
    """The summary's counts as a scan of every task record gives them."""
    run = h.store.get_run(run_id)
    assert run is not None
    slugs = [n["slug"] for n in run.pipeline["nodes"]]
    generation = {n.index: n.generation for n in h.store.get_nodes(run_id)}
    counts: dict[str, Counter[TaskState]] = {slug: Counter() for slug in slugs}
    for task in h.store.list_tasks(run_id):
        if task.generation == generation[task.node_index]:
            counts[slugs[task.node_index]][task.state] += 1
    return {slug: dict(c) for slug, c in counts.items()}


READS: list[dict[str, Any]] = []
"""The ``list_tasks`` keyword arguments of the last ``_summary``."""


def _summary(h: Harness, run_id: str) -> dict[str, dict[TaskState, int]]:
    READS.clear()
    real = h.store.list_tasks

    def list_tasks(rid: str, **kwargs: Any) -> Any:
        READS.append(kwargs)
        return real(rid, **kwargs)

    h.store.list_tasks = list_tasks
    try:
        summary = summarize(h.store, run_id)
    finally:
        del h.store.list_tasks
    assert READS and all(r.get("states") is not None and TaskState.COMPLETED not in r["states"]
                         for r in READS), READS
    return {node.slug: node.tasks for node in summary.nodes}


def test_counts_equal_a_scan_of_every_task_without_reading_completed_ones() -> None:
    h = Harness()
    h.kernel.start_run({"name": "p", "nodes": [
        {"slug": "src", "plugin": "e"},
        {"slug": "each", "plugin": "x", "depends_on": ["src"]},
        {"slug": "agg", "plugin": "a", "depends_on": ["each"], "fan_mode": "aggregate"}]},
        run_id="r")
    ref = h.dispatcher.refs.pop()
    claim = h.kernel.claim_task("r", ref.task_id)
    assert claim is not None
    h.kernel.on_task_complete("r", ref.task_id, claim.attempt_id,
                              [{"id": str(i), "fields": {"i": i}} for i in range(7)])
    attempts = {}
    for i in range(5):
        claim = h.kernel.claim_task("r", f"each.0.{i}")
        assert claim is not None
        attempts[i] = claim.attempt_id
    for i in range(3):
        h.kernel.on_task_complete("r", f"each.0.{i}", attempts[i], [])
    h.kernel.wait_task("r", "each.0.3", attempts[3], "ask")
    # mid-run: 3 completed, 1 waiting, 1 running, 2 queued
    assert _summary(h, "r") == _counted_from_every_task(h, "r")
    assert _summary(h, "r")["each"] == {TaskState.COMPLETED: 3, TaskState.WAITING: 1,
                                        TaskState.RUNNING: 1, TaskState.QUEUED: 2}
    h.kernel.on_task_failed("r", "each.0.4", attempts[4], "boom", retryable=False)
    run = h.store.get_run("r")
    assert run is not None and run.state is RunState.FAILED
    assert _summary(h, "r") == _counted_from_every_task(h, "r")  # failed, cancelled
    assert [r.get("node_index") for r in READS] == [None, 1]  # "each" read for its failures
    h.kernel.retry_run("r")  # a new generation of each and agg: the old one is not counted
    h.work(lambda task: [{"fields": {}}])
    assert _summary(h, "r") == _counted_from_every_task(h, "r")
    assert _summary(h, "r") == {"src": {TaskState.COMPLETED: 1},
                                "each": {TaskState.COMPLETED: 7}, "agg": {TaskState.COMPLETED: 1}}
    assert READS == [{"states": (TaskState.QUEUED, TaskState.RUNNING, TaskState.WAITING)}]
