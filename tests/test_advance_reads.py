"""Nodes readied together are planned from one read of their nodes and of each parent's
artifacts (parents are settled, so one read serves every node they readied)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from support import Harness

from interlock import Output, RunState, TaskInput
from interlock_memory import MemoryStore


class Reads(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads: Counter[str] = Counter()

    def get_nodes(self, run_id: str, indices: Any = None) -> Any:
        self.reads["get_nodes"] += 1
        return super().get_nodes(run_id, indices)

    def get_artifacts(self, run_id: str, node_index: int, generation: int) -> Any:
        self.reads[f"get_artifacts {node_index}"] += 1
        return super().get_artifacts(run_id, node_index, generation)


PIPELINE = {"name": "wide", "nodes": [
    {"slug": "a", "plugin": "p"},
    {"slug": "z", "plugin": "p"},
    {"slug": "b", "plugin": "p", "depends_on": ["a", "z"], "fan_mode": "aggregate"},
    {"slug": "c", "plugin": "p", "depends_on": ["a", "z"], "fan_mode": "aggregate"},
    {"slug": "d", "plugin": "p", "depends_on": ["a"]},
]}


def test_nodes_readied_together_share_their_reads() -> None:
    store = Reads()
    h = Harness(store=store)
    h.kernel.start_run(PIPELINE, run_id="r")
    inputs: dict[str, TaskInput] = {}

    def behaviour(task: TaskInput) -> list[Output]:
        inputs[task.task_id.split(".")[0]] = task
        return [Output(fields={"by": task.task_id})]

    h.work(behaviour, max_steps=1)  # a
    store.reads.clear()
    h.work(behaviour, max_steps=1)  # z: readies b, c and nothing else (d was readied by a)
    assert store.reads == Counter({"get_nodes": 1, "get_artifacts 0": 1, "get_artifacts 1": 1})
    h.work(behaviour)
    assert [e.state for e in h.finished] == [RunState.COMPLETED]
    for slug in ("b", "c"):
        assert [a.fields["by"] for a in inputs[slug].inputs["a"]] == ["a.0.0"]
        assert [a.fields["by"] for a in inputs[slug].inputs["z"]] == ["z.0.0"]
