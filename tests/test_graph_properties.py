"""Hypothesis properties of graph validation against an independent cycle check (graphlib)."""

from __future__ import annotations

import graphlib
import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interlock.errors import CycleError, GraphError
from interlock.graph import SimplePluginCatalog, Topology, validate

MAX_NODES = 12


@st.composite
def graphs(draw: st.DrawFn, self_loops: bool = False) -> tuple[int, list[list[int]]]:
    """``(n, deps)``: node ``j`` depends on each index in ``deps[j]`` (no repeats)."""
    size = draw(st.integers(1, MAX_NODES))
    deps = []
    for j in range(size):
        choices = [i for i in range(size) if self_loops or i != j]
        deps.append(
            draw(st.lists(st.sampled_from(choices), unique=True, max_size=4)) if choices else []
        )
    return size, deps


def document(size: int, deps: list[list[int]]) -> dict[str, Any]:
    return {
        "name": "g",
        "nodes": [
            {"slug": f"n{j}", "plugin": "w", "depends_on": [f"n{i}" for i in deps[j]]}
            for j in range(size)
        ],
    }


def acyclic(size: int, deps: list[list[int]]) -> bool:
    sorter = graphlib.TopologicalSorter({j: deps[j] for j in range(size)})
    try:
        tuple(sorter.static_order())
    except graphlib.CycleError:
        return False
    return True


def check_topology(t: Topology, size: int, deps: list[list[int]]) -> None:
    assert sorted(t.order) == list(range(size))
    position = {node: k for k, node in enumerate(t.order)}
    for j in range(size):
        assert t.parents[j] == tuple(deps[j])
        for i in deps[j]:
            assert position[i] < position[j]
            assert j in t.children[i]
    assert all(list(c) == sorted(c) for c in t.children)
    assert sum(map(len, t.children)) == sum(map(len, deps))
    assert t.roots == tuple(j for j in range(size) if not deps[j])
    # among ready nodes, the earliest declared goes first
    done: set[int] = set()
    for node in t.order:
        ready = [j for j in range(size) if j not in done and set(deps[j]) <= done]
        assert node == min(ready)
        done.add(node)
    for i in range(size):  # descendants against a naive closure
        expected: set[int] = set()
        frontier = [i]
        while frontier:
            for c in t.children[frontier.pop()]:
                if c not in expected:
                    expected.add(c)
                    frontier.append(c)
        assert t.descendants(i) == expected


def check_cycle(err: CycleError, deps: list[list[int]]) -> None:
    cycle = [int(slug[1:]) for slug in err.cycle]
    assert len(cycle) >= 3 and cycle[0] == cycle[-1]
    assert len(set(cycle[:-1])) == len(cycle) - 1  # a simple cycle
    for up, down in itertools.pairwise(cycle):
        assert up in deps[down]  # ``up -> down``: down depends on up
    assert cycle[0] == min(cycle)  # starts at its earliest-declared node


@given(graphs())
@settings(max_examples=400)
def test_accepts_iff_acyclic(graph: tuple[int, list[list[int]]]) -> None:
    size, deps = graph
    expected = acyclic(size, deps)
    try:
        t = validate(document(size, deps))
    except CycleError as err:
        assert not expected
        check_cycle(err, deps)
        try:
            validate(document(size, deps))
        except CycleError as err2:
            assert err2.cycle == err.cycle  # deterministic
        else:  # pragma: no cover
            raise AssertionError("second validation accepted a cyclic graph")
    else:
        assert expected
        check_topology(t, size, deps)


@given(graphs(self_loops=True))
def test_self_loops_are_rejected_before_cycles(graph: tuple[int, list[list[int]]]) -> None:
    size, deps = graph
    looped = [j for j in range(size) if j in deps[j]]
    try:
        validate(document(size, deps))
    except CycleError:
        assert not looped and not acyclic(size, deps)
    except GraphError as err:
        assert looped
        first = f"n{looped[0]}"
        assert (err.node, err.field, err.edge) == (first, "depends_on", (first, first))
    else:
        assert not looped and acyclic(size, deps)


# --- junk input never escapes as anything but GraphError ----------------------------------------

NODE_KEYS = [
    "slug",
    "plugin",
    "depends_on",
    "fan_mode",
    "edge_filters",
    "bindings",
    "config",
    "retry",
    "timeout_seconds",
    "trigger_rule",
    "group_join",
    "correlation",
    "passthrough",
]
BINDING_KEYS = ["node", "key", "value", "input", "default", "required", "expr", "when"]
WORDS = [
    "a",
    "b",
    "n0",
    "input",
    "config",
    "single",
    "grouped",
    "aggregate",
    "inner",
    "outer",
    "new",
    "all_done",
    "eq",
    "in",
    "exists",
    "matches",
    "field",
    "op",
    "value",
    "rules",
    "any_of",
    "{a.x}",
    "{a.x | upper}",
    "{input.k | default(1)}",
    "{",
    "}",
    "(a+)+b",
    "list(a.x)",
    "{list(a.x, b.y) | join(,)}",
    "\\{",
    "{a.x | nth(x)}",
    "",
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(WORDS)
)
junk = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(WORDS + BINDING_KEYS) | st.text(max_size=4) | st.integers(),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)
filters_junk = st.dictionaries(
    st.sampled_from(["rules", "any_of", "field", "op", "value"]),
    junk
    | st.lists(
        st.dictionaries(st.sampled_from(["field", "op", "value", "values"]), junk, max_size=3),
        max_size=3,
    ),
    max_size=3,
)
bindings_junk = st.dictionaries(
    st.sampled_from(["x", "y", "a-b", "1"]) | st.text(max_size=3),
    st.sampled_from(WORDS) | st.dictionaries(st.sampled_from(BINDING_KEYS), junk, max_size=3),
    max_size=3,
)
node_junk = st.dictionaries(
    st.sampled_from([*NODE_KEYS, "bogus"]),
    junk,
    max_size=6,
).map(lambda d: {"slug": "a", "plugin": "w", **d}) | st.fixed_dictionaries(
    {"slug": st.sampled_from(["a", "b", "n0"]), "plugin": st.just("w")},
    optional={
        "depends_on": st.lists(st.sampled_from(["a", "b", "n0"]), max_size=3),
        "edge_filters": st.dictionaries(st.sampled_from(["a", "b"]), filters_junk, max_size=2),
        "bindings": bindings_junk,
        "fan_mode": st.sampled_from(["single", "grouped", "aggregate"]),
        "group_join": st.sampled_from(["inner", "outer"]),
        "timeout_seconds": junk,
        "retry": st.dictionaries(st.sampled_from(["max_attempts", "backoff_seconds"]), junk),
    },
)
pipeline_junk = junk | st.fixed_dictionaries(
    {"nodes": st.lists(node_junk | junk, max_size=4)},
    optional={"name": junk, "failure_policy": junk, "description": junk},
)


@given(pipeline_junk)
@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
def test_junk_raises_only_graph_errors(document: Any) -> None:
    try:
        t = validate(document)
    except GraphError:
        return
    assert isinstance(t, Topology)
    assert len(t.order) == len(t.slugs) > 0


# --- near-valid pipelines reach every check, still only GraphError -----------------------------

SLUGS = ["a", "b", "c"]
EXPR_PARTS = [
    "{",
    "}",
    "a.x",
    "b.y.0",
    "ghost.x",
    "input.k",
    "config.k",
    " | ",
    "upper",
    "nth(1)",
    "nth(x)",
    "join(,)",
    "default(1)",
    "match('(a+)+b')",
    "match('(')",
    "eq(true)",
    "list(",
    ")",
    ",",
    "\\{",
    "'",
    "text ",
    "|",
    "nosuch",
]
expressions = st.lists(st.sampled_from(EXPR_PARTS), max_size=8).map("".join)
binding_specs = st.one_of(
    expressions,
    st.fixed_dictionaries({"expr": expressions}, optional={"when": expressions}),
    st.fixed_dictionaries(
        {"node": st.sampled_from(SLUGS), "key": st.sampled_from(["x", "x.y", ""])},
        optional={"when": expressions},
    ),
    st.fixed_dictionaries({"value": junk}),
    st.fixed_dictionaries(
        {"input": st.sampled_from(["k", ""])},
        optional={"default": junk, "required": st.booleans()},
    ),
)
OPS = ["eq", "neq", "gt", "in", "not_in", "contains", "starts_with", "exists", "matches", "bogus"]
rules = st.fixed_dictionaries(
    {"field": st.sampled_from(["kind", "a.b", "", "a..b"]), "op": st.sampled_from(OPS)},
    optional={"value": st.sampled_from(["pdf", "(a+)+b", "(", 1, [1, "x"], None]) | junk},
)
edge_filters = st.fixed_dictionaries(
    {},
    optional={
        "rules": st.lists(rules, max_size=3),
        "any_of": st.lists(st.lists(rules, max_size=2), max_size=2),
    },
)
plausible_nodes = st.fixed_dictionaries(
    {"slug": st.sampled_from(SLUGS), "plugin": st.sampled_from(["w", "gate", "unknown"])},
    optional={
        "depends_on": st.lists(st.sampled_from(SLUGS), max_size=3),
        "fan_mode": st.sampled_from(["single", "aggregate", "grouped"]),
        "group_join": st.sampled_from(["inner", "outer"]),
        "correlation": st.sampled_from(["inherit", "new"]),
        "trigger_rule": st.sampled_from(["all_success", "all_done", "none_failed"]),
        "timeout_seconds": st.sampled_from([0, 0.5, 30, -1, float("nan")]),
        "passthrough": st.none() | st.booleans(),
        "edge_filters": st.dictionaries(st.sampled_from(SLUGS), edge_filters, max_size=2),
        "bindings": st.dictionaries(st.sampled_from(["x", "y", "a-b"]), binding_specs, max_size=3),
        "retry": st.fixed_dictionaries(
            {}, optional={"max_attempts": st.integers(-1, 3), "backoff_seconds": junk}
        ),
    },
)
near_valid = st.fixed_dictionaries(
    {
        "name": st.just("p"),
        "nodes": st.lists(plausible_nodes, min_size=1, max_size=3, unique_by=lambda d: d["slug"]),
    }
)


@given(near_valid, st.booleans())
@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
def test_near_valid_pipelines_raise_only_graph_errors(document: Any, with_catalog: bool) -> None:
    catalog = SimplePluginCatalog({"w": False, "gate": True}) if with_catalog else None
    try:
        t = validate(document, catalog)
    except GraphError as err:
        assert err.node is not None or err.field is not None  # always says where
        return
    assert len(t.slugs) == len(document["nodes"])
    assert all(isinstance(flag, bool) for flag in t.passthrough)
