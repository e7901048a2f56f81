"""Bugs in Interlock itself that the conformance machine found (``[stateful:kernel-error]``),
kept as minimal reproducers. An xfail(strict) turns red once the bug is fixed: drop the mark."""

from __future__ import annotations

import pytest

from interlock import Kernel, NodeState, RunState
from interlock.states import IllegalTransition
from interlock_memory import MemoryStore


@pytest.mark.xfail(strict=True, raises=IllegalTransition, reason=(
    "retry_run resets COMPLETED/FILTERED descendants of a failed node to WAITING (new "
    "generation), but NODE_TRANSITIONS has no COMPLETED -> WAITING / FILTERED -> WAITING, so "
    "storekit.reopen_run raises IllegalTransition and the run can never be retried"))
@pytest.mark.parametrize("rule", ["all_done", "one_success"])
def test_retry_of_a_run_whose_failed_node_has_a_completed_descendant(rule: str) -> None:
    store = MemoryStore()
    kernel = Kernel(store)
    kernel.start_run({"name": "p", "failure_policy": "continue", "nodes": [
        {"slug": "a", "plugin": "work"},
        {"slug": "ok", "plugin": "work"},
        {"slug": "b", "plugin": "work", "depends_on": ["a", "ok"], "trigger_rule": rule},
    ]}, run_id="r")
    kernel.claim_task("r", "ok.0.0", attempt_id="o")
    kernel.on_task_complete("r", "ok.0.0", "o", [{"fields": {"k": 1}}])
    kernel.claim_task("r", "a.0.0", attempt_id="x")
    kernel.on_task_failed("r", "a.0.0", "x", "boom", retryable=False)
    kernel.claim_task("r", "b.0.0", attempt_id="y")
    kernel.on_task_complete("r", "b.0.0", "y")
    run = store.get_run("r")
    assert run is not None and run.state is RunState.FAILED
    assert [n.state for n in store.get_nodes("r")] == [
        NodeState.FAILED, NodeState.COMPLETED, NodeState.COMPLETED]
    retried = kernel.retry_run("r")  # raises IllegalTransition: completed -> waiting
    assert retried.state is RunState.RUNNING
    assert [(n.state, n.generation) for n in store.get_nodes("r")] == [
        (NodeState.LAUNCHED, 1), (NodeState.COMPLETED, 0), (NodeState.WAITING, 1)]
