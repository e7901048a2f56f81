"""A completion costs O(outputs + out-degree) store operations, independent of the run size.

A counting wrapper counts every DagStore call and every RunTransaction primitive a completion
makes; the counts for a member of a 1,000-way and a 10,000-way fan-out must be equal.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from support import Harness

from interlock_memory import MemoryStore


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __getattribute__(self, name: str) -> Any:
        attr = super().__getattribute__(name)
        if callable(attr) and not name.startswith("_") and name != "transaction":
            counts = super().__getattribute__("counts")

            def counted(*args: Any, **kwargs: Any) -> Any:
                counts[f"store.{name}"] += 1
                return attr(*args, **kwargs)

            return counted
        return attr

    @contextmanager
    def transaction(self, run_id: str) -> Iterator[Any]:
        with super().transaction(run_id) as tx:
            if tx is None:
                yield None
                return
            yield _CountingTx(tx, self.counts)


class _CountingTx:
    def __init__(self, tx: Any, counts: Counter[str]) -> None:
        self.__dict__["_tx"] = tx
        self.__dict__["_counts"] = counts

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._tx, name)
        if callable(attr):
            def counted(*args: Any, **kwargs: Any) -> Any:
                self._counts[f"tx.{name}"] += 1
                result = attr(*args, **kwargs)
                return list(result) if name in ("nodes", "unfinished_tasks") else result
            return counted
        return attr

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._tx, name, value)


def _cost_of_one_middle_completion(n: int) -> Counter[str]:
    store = CountingStore()
    h = Harness(store=store)
    h.kernel.start_run({"name": "p", "nodes": [
        {"slug": "src", "plugin": "e"},
        {"slug": "each", "plugin": "x", "depends_on": ["src"]},
        {"slug": "agg", "plugin": "x", "depends_on": ["each"], "fan_mode": "aggregate"},
    ]}, run_id="r")
    ref = h.dispatcher.refs.pop(0)
    claim = h.kernel.claim_task("r", ref.task_id)
    assert claim is not None
    h.kernel.on_task_complete("r", ref.task_id, claim.attempt_id,
                              [{"id": str(i), "fields": {"i": i}} for i in range(n)])
    refs = h.dispatcher.refs
    assert len(refs) == n
    # complete half of the fan-out, then measure one more (neither first nor last)
    for ref in refs[: n // 2]:
        c = h.kernel.claim_task("r", ref.task_id)
        assert c is not None
        h.kernel.on_task_complete("r", ref.task_id, c.attempt_id, [{"fields": {"k": 1}}])
    ref = refs[n // 2]
    c = h.kernel.claim_task("r", ref.task_id)
    assert c is not None
    store.counts.clear()
    h.kernel.on_task_complete("r", ref.task_id, c.attempt_id, [{"fields": {"k": 1}}])
    return Counter(store.counts)


def test_completion_cost_does_not_grow_with_fan_out() -> None:
    small = _cost_of_one_middle_completion(1_000)
    large = _cost_of_one_middle_completion(10_000)
    assert small == large, (small, large)
    # one store call: complete_and_follow (the memory store declares 'follow')
    assert small["store.complete_and_follow"] == 1
    assert sum(v for k, v in small.items() if k.startswith("store.")) == 1, small
    assert sum(small.values()) <= 10, small
