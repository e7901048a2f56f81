"""The ``prefetch`` ability: the completion that readies a node hands over its planning inputs,
so the kernel reads nothing more before launching it (complete + launch: two store calls)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from support import Harness

from interlock import Limits, RunState
from interlock.records import NewArtifact, NodeFacts, Transition
from interlock.states import NodeState
from interlock_memory import MemoryStore


class PrefetchingMemory(MemoryStore):
    """A test double: complete_task, then the facts read. Not atomic: these tests are
    single-threaded; real stores return the facts from the same atomic step (e.g. one Lua call)."""

    abilities = frozenset({"batched", "prefetch"})

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def get_nodes(self, run_id: str, indices: Sequence[int] | None = None) -> Any:
        self.calls["get_nodes"] += 1
        return super().get_nodes(run_id, indices)

    def get_artifacts(self, run_id: str, node_index: int, generation: int) -> Any:
        self.calls["get_artifacts"] += 1
        return super().get_artifacts(run_id, node_index, generation)

    def launch_node(self, *args: Any, **kwargs: Any) -> Any:
        self.calls["launch_node"] += 1
        return super().launch_node(*args, **kwargs)

    def complete_task_prefetch(
        self, run_id: str, task_id: str, attempt_id: str, outputs: Sequence[NewArtifact],
        children: Sequence[int], parents: Sequence[Sequence[int]], now: float,
    ) -> tuple[Transition, list[NodeFacts]]:
        self.calls["complete_task_prefetch"] += 1
        transition = super().complete_task(run_id, task_id, attempt_id, outputs, children, now)
        wanted: dict[int, None] = {}
        for child, child_parents in zip(children, parents, strict=True):
            if child in transition.ready:
                wanted.update(dict.fromkeys([child, *child_parents]))
        facts = []
        for node in MemoryStore.get_nodes(self, run_id, list(wanted)):
            arts = (MemoryStore.get_artifacts(self, run_id, node.index, node.generation)
                    if node.state is NodeState.COMPLETED else [])
            facts.append(NodeFacts(node, tuple(arts)))
        return transition, facts


PIPELINE = {"name": "p", "nodes": [
    {"slug": "a", "plugin": "x"},
    {"slug": "b", "plugin": "x", "depends_on": ["a"]},
    {"slug": "c", "plugin": "x", "depends_on": ["b"], "fan_mode": "aggregate",
     "bindings": {"ns": {"node": "b", "key": "n"}}},
]}


def test_prefetch_releasing_completion_reads_nothing_more() -> None:
    store = PrefetchingMemory()
    h = Harness(store=store)
    h.kernel.start_run(PIPELINE, run_id="r")
    ref = h.dispatcher.refs.pop()
    claim = h.kernel.claim_task("r", ref.task_id)
    assert claim is not None
    store.calls.clear()
    h.kernel.on_task_complete("r", ref.task_id, claim.attempt_id,
                              [{"id": str(i), "fields": {"n": i}} for i in range(3)])
    assert store.calls == Counter({"complete_task_prefetch": 1, "launch_node": 1})
    h.work(lambda task: [{"fields": {"n": task.inputs["a"][0].fields["n"] * 10}}]
           if task.node == "b" else [])
    (agg,) = store.list_tasks("r", node_index=2)
    assert agg.plan["bindings"] == {"ns": [0, 10, 20]}
    assert store.get_run("r").state is RunState.COMPLETED  # type: ignore[union-attr]


def test_prefetch_and_plain_paths_plan_the_same_tasks() -> None:
    plans = []
    for store in (MemoryStore(), PrefetchingMemory()):
        h = Harness(store=store)
        h.kernel.start_run(PIPELINE, run_id="r")
        h.work(lambda task: [{"id": str(i), "fields": {"n": i}} for i in range(4)]
               if task.node == "a" else [{"fields": {"n": 1}}])
        plans.append([(t.task_id, t.plan, t.origin) for t in store.list_tasks("r")])
    assert plans[0] == plans[1]


def test_a_batch_of_one_takes_the_prefetching_path() -> None:
    store = PrefetchingMemory()
    h = Harness(store=store)
    h.kernel.start_run(PIPELINE, run_id="r")
    ref = h.dispatcher.refs.pop()
    (claim,) = h.kernel.claim_tasks("r", [ref.task_id])
    store.calls.clear()
    (transition,) = h.kernel.on_tasks_complete(
        "r", [(ref.task_id, claim.attempt_id, [{"id": "0", "fields": {"n": 1}}])])
    assert transition.applied and transition.ready == (1,)
    assert store.calls == Counter({"complete_task_prefetch": 1, "launch_node": 1})


def test_a_wide_launch_and_its_sibling_released_together_both_get_every_artifact() -> None:
    """The facts are dropped before a launch wider than one batch (so its artifacts can go
    batch by batch); a sibling released by the same completion then reads the store and
    still plans from every artifact."""
    store = PrefetchingMemory()
    h = Harness(store=store, limits=Limits(launch_batch_size=10))
    pipeline = {"name": "p", "nodes": [
        {"slug": "src", "plugin": "x"},
        {"slug": "each", "plugin": "x", "depends_on": ["src"]},
        {"slug": "all", "plugin": "x", "depends_on": ["src"], "fan_mode": "aggregate"},
    ]}
    seen: dict[str, list[Any]] = {}

    def behaviour(task: Any) -> list[dict[str, Any]]:
        seen.setdefault(task.node, []).append(task)
        return [{"fields": {"i": i}} for i in range(35)] if task.node == "src" else []

    h.kernel.start_run(pipeline, run_id="r")
    h.work(behaviour)
    run = store.get_run("r")
    assert run is not None and run.state is RunState.COMPLETED
    assert [t.inputs["src"][0].fields["i"] for t in seen["each"]] == list(range(35))
    (agg,) = seen["all"]
    assert [a.fields["i"] for a in agg.inputs["src"]] == list(range(35))
