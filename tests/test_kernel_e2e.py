"""End to end through the public Kernel API on the in-memory adapter."""

from __future__ import annotations

from typing import Any

import pytest
from support import Harness

from interlock import (
    ConflictError,
    LimitExceeded,
    Limits,
    NodeState,
    RunState,
    TaskInput,
    TaskState,
    UsageError,
)


def _states(h: Harness, run_id: str) -> dict[str, str]:
    run = h.store.get_run(run_id)
    assert run is not None
    slugs = [n["slug"] for n in run.pipeline["nodes"]]
    return {slugs[n.index]: n.state.value for n in h.store.get_nodes(run_id)}


def emit(count: int, **fields: Any) -> list[dict[str, Any]]:
    return [{"id": f"f{i}", "fields": {"i": i, **fields}} for i in range(count)]


MEDIA = {
    "name": "media",
    "nodes": [
        {"slug": "source", "plugin": "emit"},
        {"slug": "video", "plugin": "v", "depends_on": ["source"],
         "edge_filters": {"source": [{"field": "kind", "op": "eq", "value": "video"}]}},
        {"slug": "subtitle", "plugin": "s", "depends_on": ["source"],
         "edge_filters": {"source": [{"field": "kind", "op": "eq", "value": "subtitle"}]}},
        {"slug": "thumbs", "plugin": "t", "depends_on": ["video"]},
        {"slug": "merge", "plugin": "m", "depends_on": ["video", "thumbs"],
         "fan_mode": "grouped"},
        {"slug": "export", "plugin": "x", "depends_on": ["merge", "subtitle"],
         "fan_mode": "aggregate", "bindings": {"title": "{input.title | upper}"}},
    ],
}


def test_media_pipeline_all_fan_modes_filters_and_bindings(harness: Harness) -> None:
    seen: dict[str, list[TaskInput]] = {}

    def behaviour(task: TaskInput) -> list[dict[str, Any]]:
        seen.setdefault(task.node, []).append(task)
        if task.node == "source":
            return [{"id": f"v{i}", "fields": {"kind": "video", "n": i}} for i in range(5)]
        return [{"fields": {"from": task.node}}]

    harness.kernel.start_run(MEDIA, {"title": "demo"}, run_id="r")
    harness.work(behaviour)
    assert _states(harness, "r") == {
        "source": "completed", "video": "completed", "subtitle": "filtered",
        "thumbs": "completed", "merge": "completed", "export": "completed",
    }
    assert len(seen["video"]) == 5 and len(seen["thumbs"]) == 5
    assert len(seen["merge"]) == 5
    assert all({k: len(v) for k, v in t.inputs.items()} == {"video": 1, "thumbs": 1}
               for t in seen["merge"])
    (export,) = seen["export"]
    assert export.bindings == {"title": "DEMO"}
    assert len(export.inputs["merge"]) == 5 and export.inputs["subtitle"] == []
    assert [f.state for f in harness.finished] == [RunState.COMPLETED]


def test_several_consumers_of_one_fan_out_each_get_every_item(harness: Harness) -> None:
    pipeline = {"name": "p", "nodes": [
        {"slug": "src", "plugin": "e"},
        {"slug": "c1", "plugin": "c", "depends_on": ["src"], "fan_mode": "aggregate"},
        {"slug": "c2", "plugin": "c", "depends_on": ["src"], "fan_mode": "aggregate"},
        {"slug": "c3", "plugin": "c", "depends_on": ["src"]},
    ]}
    got: dict[str, int] = {}

    def behaviour(task: TaskInput) -> list[dict[str, Any]]:
        if task.node == "src":
            return emit(7)
        got[task.node] = got.get(task.node, 0) + len(task.inputs["src"])
        return []

    harness.kernel.start_run(pipeline, run_id="r")
    harness.work(behaviour)
    assert got == {"c1": 7, "c2": 7, "c3": 7}
    assert harness.store.get_run("r").state is RunState.COMPLETED  # type: ignore[union-attr]


def test_empty_fan_out_settles_immediately_and_all_done_cleanup_runs(harness: Harness) -> None:
    pipeline = {"name": "p", "nodes": [
        {"slug": "src", "plugin": "e"},
        {"slug": "each", "plugin": "c", "depends_on": ["src"]},
        {"slug": "reduce", "plugin": "r", "depends_on": ["each"], "fan_mode": "aggregate"},
        {"slug": "cleanup", "plugin": "c", "depends_on": ["reduce"], "trigger_rule": "all_done",
         "fan_mode": "aggregate"},
    ]}
    inputs: list[TaskInput] = []

    def behaviour(task: TaskInput) -> list[Any]:
        inputs.append(task)
        return []

    harness.kernel.start_run(pipeline, run_id="r")
    harness.work(behaviour)
    assert _states(harness, "r") == {"src": "completed", "each": "filtered",
                                     "reduce": "filtered", "cleanup": "completed"}
    assert inputs[-1].node == "cleanup" and inputs[-1].inputs == {"reduce": []}
    assert harness.store.get_run("r").state is RunState.COMPLETED  # type: ignore[union-attr]


def test_continue_policy_skip_cascade_three_levels_independent_branch_finishes() -> None:
    h = Harness()
    pipeline = {"name": "p", "failure_policy": "continue", "nodes": [
        {"slug": "bad", "plugin": "x"},
        {"slug": "l1", "plugin": "x", "depends_on": ["bad"]},
        {"slug": "l2", "plugin": "x", "depends_on": ["l1"]},
        {"slug": "l3", "plugin": "x", "depends_on": ["l2"]},
        {"slug": "good", "plugin": "x"},
        {"slug": "after_good", "plugin": "x", "depends_on": ["good"]},
    ]}

    def behaviour(task: TaskInput) -> list[Any]:
        if task.node == "bad":
            raise RuntimeError("boom")
        return [{"fields": {}}]

    h.kernel.start_run(pipeline, run_id="r")
    h.work(behaviour)
    assert _states(h, "r") == {"bad": "failed", "l1": "skipped", "l2": "skipped",
                               "l3": "skipped", "good": "completed", "after_good": "completed"}
    run = h.store.get_run("r")
    assert run is not None and run.state is RunState.FAILED
    assert [f.state for f in h.finished] == [RunState.FAILED]
    (task,) = h.store.list_tasks("r", node_index=0)
    assert task.state is TaskState.FAILED and "RuntimeError: boom" in (task.error or "")


def test_fail_fast_cancels_unfinished_work() -> None:
    h = Harness()
    pipeline = {"name": "p", "nodes": [
        {"slug": "src", "plugin": "e"},
        {"slug": "each", "plugin": "c", "depends_on": ["src"]},
        {"slug": "after", "plugin": "c", "depends_on": ["each"]},
    ]}

    def behaviour(task: TaskInput) -> list[Any]:
        if task.node == "src":
            return emit(5)
        raise ValueError("bad item")

    h.kernel.start_run(pipeline, run_id="r")
    h.work(behaviour)
    run = h.store.get_run("r")
    assert run is not None and run.state is RunState.FAILED
    states = [t.state for t in h.store.list_tasks("r", node_index=1)]
    assert states.count(TaskState.FAILED) == 1 and states.count(TaskState.CANCELLED) == 4
    assert _states(h, "r")["after"] == "cancelled"
    assert len(h.finished) == 1


def test_retries_with_backoff_then_success_and_late_callback_ignored() -> None:
    h = Harness()
    pipeline = {"name": "p", "nodes": [
        {"slug": "flaky", "plugin": "f",
         "retry": {"max_attempts": 3, "backoff_seconds": 10, "backoff_multiplier": 2}},
    ]}
    h.kernel.start_run(pipeline, run_id="r")
    ref = h.dispatcher.refs.pop()
    first = h.kernel.claim_task("r", ref.task_id)
    assert first is not None
    h.kernel.on_task_failed("r", ref.task_id, first.attempt_id, "transient")
    retry_ref = h.dispatcher.refs.pop()
    assert retry_ref.not_before == h.clock.t + 10
    assert h.kernel.claim_task("r", ref.task_id) is None, "not due before backoff"
    h.clock.t += 10
    second = h.kernel.claim_task("r", ref.task_id)
    assert second is not None and second.attempt_id != first.attempt_id
    # the first attempt's late callback is fenced out
    assert h.kernel.on_task_complete("r", ref.task_id, first.attempt_id, []).outcome == "stale"
    h.kernel.on_task_failed("r", ref.task_id, second.attempt_id, "transient again")
    assert h.dispatcher.refs.pop().not_before == h.clock.t + 20
    h.clock.t += 20
    third = h.kernel.claim_task("r", ref.task_id)
    assert third is not None
    assert h.kernel.on_task_complete("r", ref.task_id, third.attempt_id, []).applied
    task = h.store.get_task("r", ref.task_id)
    assert task is not None and task.attempt == 3 and task.state is TaskState.COMPLETED
    assert h.store.get_run("r").state is RunState.COMPLETED  # type: ignore[union-attr]


def test_duplicate_completion_publishes_once(harness: Harness) -> None:
    harness.kernel.start_run({"name": "p", "nodes": [
        {"slug": "a", "plugin": "x"},
        {"slug": "b", "plugin": "x", "depends_on": ["a"], "fan_mode": "aggregate"}]},
        run_id="r")
    ref = harness.dispatcher.refs.pop()
    claim = harness.kernel.claim_task("r", ref.task_id)
    assert claim is not None
    assert harness.kernel.claim_task("r", ref.task_id) is None, "a second delivery loses"
    again = harness.kernel.claim_task("r", ref.task_id, attempt_id=claim.attempt_id)
    assert again is not None, "an exact repeat of the winning claim returns the claim"
    outs = emit(3)
    assert harness.kernel.on_task_complete("r", ref.task_id, claim.attempt_id, outs).applied
    dup = harness.kernel.on_task_complete("r", ref.task_id, claim.attempt_id, outs)
    assert dup.outcome == "duplicate"
    assert len(harness.store.get_artifacts("r", 0, 0)) == 3
    assert len(harness.store.list_tasks("r", node_index=1)) == 1


def test_wait_and_resume_human_in_the_loop(harness: Harness) -> None:
    harness.kernel.start_run({"name": "p", "nodes": [{"slug": "approve", "plugin": "h"}]},
                             run_id="r")
    harness.work(lambda task: "wait" if task.resume is None else [])
    (task,) = harness.store.list_tasks("r")
    assert task.state is TaskState.WAITING
    assert harness.kernel.resume_task("r", task.task_id, {"approved": True}) == "applied"
    assert harness.kernel.resume_task("r", task.task_id, {"approved": True}) == "stale"
    resumed: list[Any] = []
    harness.work(lambda t: resumed.append(t.resume) or [])
    assert resumed == [{"approved": True}]
    assert harness.store.get_run("r").state is RunState.COMPLETED  # type: ignore[union-attr]


def test_cancel_is_terminal_once_and_final(harness: Harness) -> None:
    harness.kernel.start_run({"name": "p", "nodes": [{"slug": "a", "plugin": "x"}]}, run_id="r")
    ref = harness.dispatcher.refs.pop()
    claim = harness.kernel.claim_task("r", ref.task_id)
    assert claim is not None
    assert harness.kernel.cancel_run("r").run_state is RunState.CANCELLED
    assert harness.kernel.cancel_run("r").outcome == "duplicate"
    late = harness.kernel.on_task_complete("r", ref.task_id, claim.attempt_id, [])
    assert late.outcome == "stale"
    assert harness.store.get_run("r").state is RunState.CANCELLED  # type: ignore[union-attr]
    assert [f.state for f in harness.finished] == [RunState.CANCELLED]


def test_retry_run_from_failure_boundary_keeps_completed_work() -> None:
    h = Harness()
    pipeline = {"name": "p", "nodes": [
        {"slug": "src", "plugin": "e"},
        {"slug": "mid", "plugin": "m", "depends_on": ["src"]},
        {"slug": "end", "plugin": "m", "depends_on": ["mid"], "fan_mode": "aggregate"},
    ]}
    broken = {"on": True}
    runs: dict[str, int] = {}

    def behaviour(task: TaskInput) -> list[Any]:
        runs[task.node] = runs.get(task.node, 0) + 1
        if task.node == "src":
            return emit(3)
        if task.node == "mid" and broken["on"]:
            raise RuntimeError("down")
        return [{"fields": {}}]

    h.kernel.start_run(pipeline, run_id="r")
    h.work(behaviour)
    assert h.store.get_run("r").state is RunState.FAILED  # type: ignore[union-attr]
    with pytest.raises(UsageError):
        h.kernel.retry_run("missing")
    broken["on"] = False
    run = h.kernel.retry_run("r")
    assert run.state is RunState.RUNNING and run.retries == 1
    h.work(behaviour)
    assert h.store.get_run("r").state is RunState.COMPLETED  # type: ignore[union-attr]
    assert runs["src"] == 1, "completed upstream work is kept"
    nodes = h.store.get_nodes("r")
    assert [n.generation for n in nodes] == [0, 1, 1]
    with pytest.raises(UsageError, match="completed"):
        h.kernel.retry_run("r")


def test_recover_expired_retries_crashed_attempts() -> None:
    h = Harness(lease_seconds=30)
    h.kernel.start_run({"name": "p", "nodes": [{"slug": "a", "plugin": "x"}]}, run_id="r")
    ref = h.dispatcher.refs.pop()
    assert h.kernel.claim_task("r", ref.task_id) is not None
    assert h.kernel.recover_expired() == 0
    h.clock.t += 31
    assert h.kernel.recover_expired() == 1
    task = h.store.get_task("r", ref.task_id)
    assert task is not None and task.state is TaskState.QUEUED and task.attempt == 1
    assert h.dispatcher.refs, "the retried task is dispatched again"


def test_reconcile_repairs_a_crash_between_commit_and_launch() -> None:
    h = Harness()
    h.kernel.start_run({"name": "p", "nodes": [
        {"slug": "a", "plugin": "x"}, {"slug": "b", "plugin": "x", "depends_on": ["a"]}]},
        run_id="r")
    ref = h.dispatcher.refs.pop()
    claim = h.kernel.claim_task("r", ref.task_id)
    assert claim is not None
    # simulate the process dying right after complete_task committed: call the store directly
    h.store.complete_task("r", ref.task_id, claim.attempt_id, [], [1], h.clock.t)
    assert h.store.get_nodes("r", [1])[0].state is NodeState.WAITING
    h.kernel.reconcile_run("r")
    h.kernel.reconcile_run("r")
    assert h.store.get_nodes("r", [1])[0].state is NodeState.FILTERED
    assert h.store.get_run("r").state is RunState.COMPLETED  # type: ignore[union-attr]


def test_reconcile_with_queued_for_redispatches_only_what_waited_that_long() -> None:
    """A periodic sweep: refs queued less than ``queued_for`` ago (or due later) stay as they
    are; older ones are sent again; None sends every QUEUED task, as before."""
    h = Harness()
    h.kernel.start_run({"name": "p", "nodes": [
        {"slug": "src", "plugin": "e"},
        {"slug": "each", "plugin": "x", "depends_on": ["src"],
         "retry": {"max_attempts": 2, "backoff_seconds": 100}}]}, run_id="r")
    ref = h.dispatcher.refs.pop()
    claim = h.kernel.claim_task("r", ref.task_id)
    assert claim is not None
    h.kernel.on_task_complete("r", ref.task_id, claim.attempt_id, emit(4))  # 4 QUEUED at t0
    t0 = h.clock.t
    h.dispatcher.refs.clear()
    h.clock.t += 50
    retried = h.kernel.claim_task("r", "each.0.3")  # fails: QUEUED again, due at t0 + 150
    assert retried is not None
    h.kernel.on_task_failed("r", "each.0.3", retried.attempt_id, "boom")
    h.dispatcher.refs.clear()
    assert h.kernel.reconcile_run("r", queued_for=60) == 0  # queued 50 s ago: in the queue
    assert h.dispatcher.refs == []
    h.clock.t = t0 + 60
    assert h.kernel.reconcile_run("r", queued_for=60) == 3
    assert sorted(r.task_id for r in h.dispatcher.refs) == ["each.0.0", "each.0.1", "each.0.2"]
    h.dispatcher.refs.clear()
    h.clock.t = t0 + 150 + 60  # the retry has been due for 60 s
    assert h.kernel.reconcile_run("r", queued_for=60) == 4
    h.dispatcher.refs.clear()
    assert h.kernel.reconcile_run("r") == 4  # None: every QUEUED task
    for bad in (-1, float("nan"), "60", True):
        with pytest.raises(UsageError, match="queued_for"):
            h.kernel.reconcile_run("r", queued_for=bad)  # type: ignore[arg-type]


def test_start_run_is_idempotent_and_refuses_conflicts(harness: Harness) -> None:
    pipeline = {"name": "p", "nodes": [{"slug": "a", "plugin": "x"}]}
    first = harness.kernel.start_run(pipeline, {"k": 1}, run_id="r")
    again = harness.kernel.start_run(pipeline, {"k": 1}, run_id="r")
    assert first.run_id == again.run_id
    assert len(harness.store.list_tasks("r")) == 1
    with pytest.raises(ConflictError):
        harness.kernel.start_run(pipeline, {"k": 2}, run_id="r")


def test_bad_outputs_are_refused_with_nothing_lost(harness: Harness) -> None:
    harness.kernel.start_run({"name": "p", "nodes": [{"slug": "a", "plugin": "x"}]}, run_id="r")
    ref = harness.dispatcher.refs.pop()
    claim = harness.kernel.claim_task("r", ref.task_id)
    assert claim is not None
    with pytest.raises(UsageError, match="not JSON"):
        harness.kernel.on_task_complete("r", ref.task_id, claim.attempt_id,
                                         [{"fields": {"x": object()}}])
    with pytest.raises(UsageError, match="repeated id"):
        harness.kernel.on_task_complete("r", ref.task_id, claim.attempt_id,
                                        [{"id": "a"}, {"id": "a"}])
    task = harness.store.get_task("r", ref.task_id)
    assert task is not None and task.state is TaskState.RUNNING, "nothing changed"
    assert harness.kernel.on_task_complete("r", ref.task_id, claim.attempt_id, emit(1)).applied


def test_output_limit_fails_the_task_naming_the_limit() -> None:
    h = Harness(limits=Limits(max_outputs_per_task=2))
    h.kernel.start_run({"name": "p", "nodes": [{"slug": "a", "plugin": "x"}]}, run_id="r")
    ref = h.dispatcher.refs.pop()
    claim = h.kernel.claim_task("r", ref.task_id)
    assert claim is not None
    with pytest.raises(LimitExceeded, match="max_outputs_per_task"):
        h.kernel.on_task_complete("r", ref.task_id, claim.attempt_id, emit(3))
    task = h.store.get_task("r", ref.task_id)
    assert task is not None and task.state is TaskState.FAILED
    assert "max_outputs_per_task" in (task.error or "")
    assert h.store.get_run("r").state is RunState.FAILED  # type: ignore[union-attr]


def test_large_launch_is_written_in_bounded_batches() -> None:
    h = Harness(limits=Limits(launch_batch_size=100, launch_first_batch=10))
    calls: list[int] = []
    original = h.store.launch_node

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(len(args[3]))
        return original(*args, **kwargs)

    h.store.launch_node = counting  # type: ignore[method-assign]
    h.kernel.start_run({"name": "p", "nodes": [
        {"slug": "src", "plugin": "e"}, {"slug": "each", "plugin": "x", "depends_on": ["src"]},
        {"slug": "agg", "plugin": "x", "depends_on": ["each"], "fan_mode": "aggregate"}]},
        run_id="r")
    h.work(lambda t: emit(1050) if t.node == "src" else [])
    # src: 1 task; each: 1,050 tasks in batches ramping up from 10 by doubling to at most
    # 100; agg: filtered (no launch)
    assert calls == [1, 10, 20, 40, 80, *([100] * 9)]
    assert h.store.get_run("r").state is RunState.COMPLETED  # type: ignore[union-attr]


def test_retry_run_restarts_a_completed_all_done_descendant_of_a_failed_node() -> None:
    """Regression (found by the stateful harness): the cleanup node had COMPLETED under
    all_done; as a descendant of the failed node it starts over in a new generation."""
    h = Harness()
    pipeline = {"name": "p", "failure_policy": "continue", "nodes": [
        {"slug": "work", "plugin": "w"},
        {"slug": "cleanup", "plugin": "c", "depends_on": ["work"], "trigger_rule": "all_done"},
    ]}
    broken = {"on": True}
    cleanups: list[dict[str, Any]] = []

    def behaviour(task: TaskInput) -> list[Any]:
        if task.node == "work":
            if broken["on"]:
                raise RuntimeError("down")
            return [{"fields": {"ok": True}}]
        cleanups.append({k: len(v) for k, v in task.inputs.items()})
        return []

    h.kernel.start_run(pipeline, run_id="r")
    h.work(behaviour)
    assert _states(h, "r") == {"work": "failed", "cleanup": "completed"}
    broken["on"] = False
    h.kernel.retry_run("r")
    h.work(behaviour)
    assert _states(h, "r") == {"work": "completed", "cleanup": "completed"}
    assert cleanups == [{"work": 0}, {"work": 1}]
    assert [n.generation for n in h.store.get_nodes("r")] == [1, 1]
    assert h.store.get_run("r").state is RunState.COMPLETED  # type: ignore[union-attr]
