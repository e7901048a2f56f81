"""The graph shapes every adapter is driven through, each with its graphlib twin.

A shape is a pipeline (dict form), what each node's tasks return, and the *task graph* the run
unfolds into (one graphlib node per kernel task, edges as the kernel's data flow), so the
graphlib baseline schedules exactly the work the kernel schedules.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs

Outputs = list[dict[str, Any]]
OutputSource = Outputs | Callable[[], Iterable[dict[str, Any]]]
TaskGraph = dict[int, tuple[int, ...]]

_ONE: Outputs = [{"fields": {"k": 1}}]
_NONE: Outputs = []


@attrs.frozen
class Shape:
    """A pipeline to run, the outputs its tasks return (per node slug) and its task graph."""

    name: str
    family: str
    size: int
    """The shape's size parameter (chain length, fan-out N, node count)."""
    pipeline: dict[str, Any]
    outputs: Mapping[str, OutputSource]
    """Per node slug, what every task of that node returns (a list, or a callable making a
    fresh iterable: large fan-outs are generated lazily so the worker side holds nothing);
    absent slugs return one output."""
    tasks: int
    """How many tasks the run creates (and the kernel must complete)."""
    task_graph: Callable[[], TaskGraph]
    """Builds the task graph (lazily: the 100,000-way graphs are large)."""
    max_outputs: int = 10_000
    """The largest ``outputs`` list: the kernel's ``max_outputs_per_task`` must allow it."""

    def outputs_of(self, slug: str) -> Iterable[dict[str, Any]]:
        value = self.outputs.get(slug, _ONE)
        return value() if callable(value) else value


def _source_outputs(n: int) -> Callable[[], Iterator[dict[str, Any]]]:
    def generate() -> Iterator[dict[str, Any]]:
        return ({"fields": {"i": i}, "data": f"mem://item/{i}"} for i in range(n))

    return generate


def chain(n: int) -> Shape:
    """``c0 -> c1 -> ... -> c{n-1}``: every completion releases the next node."""
    nodes: list[dict[str, Any]] = [{"slug": "c0", "plugin": "step"}]
    nodes += [{"slug": f"c{i}", "plugin": "step", "depends_on": [f"c{i - 1}"]}
              for i in range(1, n)]

    def graph() -> TaskGraph:
        return {i: ((i - 1,) if i else ()) for i in range(n)}

    return Shape(f"chain-{n}", "chain", n, {"name": "chain", "nodes": nodes},
                 {f"c{n - 1}": _NONE}, n, graph)


def fan_out(n: int) -> Shape:
    """``src -> each (n tasks) -> agg``: 1 -> N -> 1 (src publishes n artifacts)."""
    pipeline = {"name": "fan", "nodes": [
        {"slug": "src", "plugin": "list"},
        {"slug": "each", "plugin": "work", "depends_on": ["src"]},
        {"slug": "agg", "plugin": "reduce", "depends_on": ["each"], "fan_mode": "aggregate"},
    ]}

    def graph() -> TaskGraph:
        g: TaskGraph = {0: ()}
        for i in range(1, n + 1):
            g[i] = (0,)
        g[n + 1] = tuple(range(1, n + 1))
        return g

    return Shape(f"fanout-{n}", "fanout", n, pipeline,
                 {"src": _source_outputs(n), "agg": _NONE}, n + 2, graph, max(n, 10_000))


def grouped(n: int) -> Shape:
    """``src -> {a, b} -> merge(grouped)``: n origins, two branches each, n merge tasks."""
    pipeline = {"name": "scatter", "nodes": [
        {"slug": "src", "plugin": "list"},
        {"slug": "a", "plugin": "work", "depends_on": ["src"]},
        {"slug": "b", "plugin": "work", "depends_on": ["src"]},
        {"slug": "merge", "plugin": "join", "depends_on": ["a", "b"], "fan_mode": "grouped"},
    ]}

    def graph() -> TaskGraph:
        # 0: src; 1..n: a_i; n+1..2n: b_i; 2n+1..3n: merge_i
        g: TaskGraph = {0: ()}
        for i in range(1, n + 1):
            g[i] = (0,)
            g[n + i] = (0,)
            g[2 * n + i] = (i, n + i)
        return g

    return Shape(f"grouped-{n}x2", "grouped", n, pipeline,
                 {"src": _source_outputs(n), "merge": _NONE}, 3 * n + 1, graph, max(n, 10_000))


def join(n: int) -> Shape:
    """``root -> m0 .. m{n-1} -> join``: n sibling nodes of one task each, joined by one
    aggregate node of n parents (a node-level fan-out and fan-in; every sibling's completion
    decrements the join's counter, the last one releases it)."""
    nodes: list[dict[str, Any]] = [{"slug": "root", "plugin": "step"}]
    nodes += [{"slug": f"m{i}", "plugin": "step", "depends_on": ["root"]} for i in range(n)]
    nodes.append({"slug": "join", "plugin": "step", "fan_mode": "aggregate",
                  "depends_on": [f"m{i}" for i in range(n)]})

    def graph() -> TaskGraph:
        out: TaskGraph = {0: ()}
        out.update({1 + i: (0,) for i in range(n)})
        out[n + 1] = tuple(range(1, n + 1))
        return out

    return Shape(f"join-{n}", "join", n, {"name": "join", "nodes": nodes}, {}, n + 2, graph)


def layered(n: int, width: int = 100, seed: int = 7) -> Shape:
    """A random layered DAG of ``n`` aggregate nodes, ``width`` per layer; each node of a layer
    depends on 1-3 random nodes of the layer before (seeded: the same graph every run)."""
    rng = random.Random(seed)
    parents: list[tuple[int, ...]] = []
    for i in range(n):
        layer = i // width
        if layer == 0:
            parents.append(())
            continue
        start = (layer - 1) * width
        previous = range(start, min(start + width, n))
        parents.append(tuple(sorted(rng.sample(previous, rng.randint(1, 3)))))
    nodes: list[dict[str, Any]] = []
    for i, ps in enumerate(parents):
        node: dict[str, Any] = {"slug": f"n{i}", "plugin": "step"}
        if ps:
            node["depends_on"] = [f"n{p}" for p in ps]
            node["fan_mode"] = "aggregate"
        nodes.append(node)

    def graph() -> TaskGraph:
        return dict(enumerate(parents))

    return Shape(f"dag-{n}", "dag", n, {"name": "dag", "nodes": nodes}, {}, n, graph)


def edges(graph: TaskGraph) -> int:
    return sum(len(ps) for ps in graph.values())


def describe(shapes: Sequence[Shape]) -> str:
    return ", ".join(s.name for s in shapes)
