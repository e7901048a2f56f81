"""The batched paths: many claims / completions of one run in one store transaction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from support import Harness

from interlock import Limits, RunState, TaskState
from interlock_memory import MemoryStore

PIPELINE = {"name": "p", "nodes": [
    {"slug": "src", "plugin": "e"},
    {"slug": "each", "plugin": "x", "depends_on": ["src"]},
    {"slug": "sum", "plugin": "x", "depends_on": ["each"], "fan_mode": "aggregate"},
]}


class CountingTransactions(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.transactions = 0

    @contextmanager
    def transaction(self, run_id: str) -> Iterator[Any]:
        self.transactions += 1
        with super().transaction(run_id) as tx:
            yield tx


class Unbatched(MemoryStore):
    abilities = frozenset()  # declares no optional ability: the kernel must fall back


def _run_batched(h: Harness, batch: int) -> int:
    h.kernel.start_run(PIPELINE, run_id="r")
    total = 0
    while h.dispatcher.refs:
        refs, h.dispatcher.refs = h.dispatcher.refs[:batch], h.dispatcher.refs[batch:]
        claims = h.kernel.claim_tasks("r", [r.task_id for r in refs], worker="w")
        results = []
        for claim in claims:
            if claim.input.node == "src":
                outputs = [{"id": str(i), "fields": {"n": i}} for i in range(100)]
            elif claim.input.node == "each":
                outputs = [{"fields": {"n2": claim.input.inputs["src"][0].fields["n"] * 2}}]
            else:
                total = sum(a.fields["n2"] for a in claim.input.inputs["each"])
                outputs = []
            results.append((claim.task_id, claim.attempt_id, outputs))
        h.kernel.on_tasks_complete("r", results)
    assert h.store.get_run("r").state is RunState.COMPLETED  # type: ignore[union-attr]
    return total


@pytest.mark.parametrize("store_class", [MemoryStore, Unbatched])
def test_batched_run_gives_the_same_result(store_class: type[MemoryStore]) -> None:
    assert _run_batched(Harness(store=store_class()), batch=16) == 2 * sum(range(100))


def test_one_transaction_per_batch() -> None:
    store = CountingTransactions()
    h = Harness(store=store)
    h.kernel.start_run(PIPELINE, run_id="r")
    ref = h.dispatcher.refs.pop()
    (claim,) = h.kernel.claim_tasks("r", [ref.task_id])
    h.kernel.on_tasks_complete("r", [(claim.task_id, claim.attempt_id,
                                      [{"id": str(i)} for i in range(50)])])
    refs = h.dispatcher.refs[:20]
    store.transactions = 0
    claims = h.kernel.claim_tasks("r", [r.task_id for r in refs])
    assert store.transactions == 1 and len(claims) == 20
    store.transactions = 0
    transitions = h.kernel.on_tasks_complete("r", [(c.task_id, c.attempt_id, []) for c in claims])
    assert store.transactions == 1
    assert [t.outcome for t in transitions] == ["applied"] * 20


def test_batch_with_duplicates_and_a_limit_failure() -> None:
    h = Harness(limits=Limits(max_outputs_per_task=1), store=MemoryStore())
    h.kernel.start_run({"name": "p", "failure_policy": "continue", "nodes": [
        {"slug": "a", "plugin": "x"}, {"slug": "b", "plugin": "x"}]}, run_id="r")
    refs = sorted(h.dispatcher.refs, key=lambda r: r.task_id)
    claims = h.kernel.claim_tasks("r", [r.task_id for r in refs])
    assert h.kernel.claim_tasks("r", [r.task_id for r in refs]) == [], "claims are CAS"
    a, b = claims
    results = h.kernel.on_tasks_complete("r", [
        (a.task_id, a.attempt_id, [{"fields": {}}]),
        (a.task_id, a.attempt_id, [{"fields": {}}]),  # exact repeat inside the batch
        (b.task_id, b.attempt_id, [{}, {}]),  # over the limit: fails alone
    ])
    assert [t.outcome for t in results] == ["applied", "duplicate", "applied"]
    assert h.store.get_task("r", a.task_id).state is TaskState.COMPLETED  # type: ignore[union-attr]
    assert h.store.get_task("r", b.task_id).state is TaskState.FAILED  # type: ignore[union-attr]
    assert len(h.store.get_artifacts("r", 0, 0)) == 1
    assert h.store.get_run("r").state is RunState.FAILED  # type: ignore[union-attr]
