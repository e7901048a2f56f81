"""Bugs in Interlock itself that the conformance machine found (``[stateful:kernel-error]``),
kept as minimal regression tests. While a bug is open, mark its test xfail(strict=True) so the
suite turns red the moment it is fixed (then drop the mark)."""

from __future__ import annotations

import pytest

from interlock import Kernel, NodeState, RunState
from interlock_memory import MemoryStore


@pytest.mark.parametrize("rule", ["all_done", "one_success"])
def test_retry_of_a_run_whose_failed_node_has_a_completed_descendant(rule: str) -> None:
    """retry_run resets COMPLETED descendants of the failed node to WAITING in a new generation
    (found as ``IllegalTransition: completed -> waiting``; fixed in the node table)."""
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
    retried = kernel.retry_run("r")
    assert retried.state is RunState.RUNNING
    assert [(n.state, n.generation) for n in store.get_nodes("r")] == [
        (NodeState.LAUNCHED, 1), (NodeState.COMPLETED, 0), (NodeState.WAITING, 1)]
