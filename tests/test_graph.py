"""Graph validation (interlock.graph) and the model's dict round trips."""

from __future__ import annotations

import math
from typing import Any

import attrs
import pytest

from interlock.errors import CycleError, ExpressionError, GraphError
from interlock.filters import EdgeFilter, FilterOp, FilterRule
from interlock.graph import (
    CompiledBinding,
    ExpressionGraphError,
    PluginCatalog,
    SimplePluginCatalog,
    Topology,
    validate,
)
from interlock.model import (
    Binding,
    ExpressionSource,
    FailurePolicy,
    FanMode,
    FieldSource,
    InputSource,
    LiteralSource,
    Node,
    Pipeline,
    RetryPolicy,
    TriggerRule,
)

# --- helpers -----------------------------------------------------------------------------------


def n(slug: str, *deps: str, plugin: str = "work", **options: Any) -> dict[str, Any]:
    """A node in dict form."""
    out: dict[str, Any] = {"slug": slug, "plugin": plugin, **options}
    if deps:
        out["depends_on"] = list(deps)
    return out


def p(*nodes: dict[str, Any], **options: Any) -> dict[str, Any]:
    """A pipeline in dict form."""
    return {"name": "p", "nodes": list(nodes), **options}


def py(*nodes: Node) -> Pipeline:
    return Pipeline("p", nodes)


def data(t: Topology) -> tuple[Any, ...]:
    """Everything a Topology says, in comparable form."""
    return (
        t.pipeline,
        t.slugs,
        dict(t.index),
        t.parents,
        t.children,
        t.order,
        t.roots,
        t.passthrough,
        tuple(tuple(cb.binding for cb in per_node) for per_node in t.bindings),
        tuple(
            tuple((cb.expression is None, cb.when is None) for cb in per_node)
            for per_node in t.bindings
        ),
    )


def reject(pipeline: Any, kind: type[GraphError] = GraphError, **kw: Any) -> GraphError:
    with pytest.raises(kind) as info:
        validate(pipeline, **kw)
    return info.value


EQ_FILTER = {"rules": [{"field": "kind", "op": "eq", "value": "pdf"}]}
"""A valid edge filter in dict form."""


# --- accepted pipelines ------------------------------------------------------------------------


def test_diamond_topology() -> None:
    t = validate(p(n("src"), n("left", "src"), n("right", "src"), n("merge", "left", "right")))
    assert t.slugs == ("src", "left", "right", "merge")
    assert dict(t.index) == {"src": 0, "left": 1, "right": 2, "merge": 3}
    assert t.parents == ((), (0,), (0,), (1, 2))
    assert t.children == ((1, 2), (3,), (3,), ())
    assert t.order == (0, 1, 2, 3)
    assert t.roots == (0,)
    assert t.passthrough == (False,) * 4
    assert t.bindings == ((), (), (), ())
    assert t.node(3).slug == "merge"
    assert t.descendants(0) == {1, 2, 3}
    assert t.descendants(1) == {3}
    assert t.descendants(3) == frozenset()


def test_parents_keep_declaration_order_and_children_ascend() -> None:
    t = validate(p(n("a"), n("b"), n("c", "b", "a"), n("d", "b")))
    assert t.parents[2] == (1, 0)
    assert t.children[1] == (2, 3)


def test_order_takes_earliest_declared_ready_node() -> None:
    # declared out of dependency order: x needs y, which is declared last
    t = validate(p(n("x", "y"), n("z"), n("y")))
    assert [t.slugs[i] for i in t.order] == ["z", "y", "x"]
    assert t.roots == (1, 2)


def test_order_is_declaration_order_when_that_is_topological() -> None:
    t = validate(p(n("a"), n("b", "a"), n("c"), n("d", "c", "b")))
    assert t.order == (0, 1, 2, 3)


def test_several_roots_and_single_node() -> None:
    assert validate(p(n("only"))).roots == (0,)
    assert validate(p(n("a"), n("b"), n("c", "a"))).roots == (0, 1)


def test_slugs_may_use_digits_underscore_dash() -> None:
    t = validate(p(n("A-1_b"), n("9"), n("x-y", "A-1_b", "9")))
    assert t.parents[2] == (0, 1)


def test_topology_is_immutable() -> None:
    t = validate(p(n("a"), n("b", "a")))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        t.order = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        t.index["c"] = 2  # type: ignore[index]


def test_dict_and_python_forms_give_equal_topologies() -> None:
    as_dict = p(
        n("src", plugin="list", config={"glob": "*.pdf"}, retry={"max_attempts": 3}),
        n("gate", "src", plugin="gate", passthrough=True),
        n(
            "proc",
            "gate",
            "src",
            fan_mode="grouped",
            group_join="inner",
            correlation="new",
            edge_filters={"src": EQ_FILTER},
            trigger_rule="all_done",
            timeout_seconds=30,
            bindings={
                "path": {"node": "src", "key": "file.path"},
                "n": {"value": [1, 2]},
                "who": {"input": "user", "default": "anon", "when": "{input.flag}"},
                "title": "{src.name | upper}",
            },
        ),
        failure_policy="continue",
        description="demo",
    )
    as_python = Pipeline(
        "p",
        [
            Node("src", "list", config={"glob": "*.pdf"}, retry=RetryPolicy(max_attempts=3)),
            Node("gate", "gate", ["src"], passthrough=True),
            Node(
                "proc",
                "work",
                ("gate", "src"),
                fan_mode=FanMode.GROUPED,
                group_join="inner",
                correlation="new",
                edge_filters={"src": EdgeFilter.from_dict(EQ_FILTER)},
                trigger_rule=TriggerRule.ALL_DONE,
                timeout_seconds=30.0,
                bindings=[
                    Binding("path", FieldSource("src", "file.path")),
                    Binding("n", LiteralSource([1, 2])),
                    Binding("who", InputSource("user", "anon", has_default=True), "{input.flag}"),
                    Binding("title", ExpressionSource("{src.name | upper}")),
                ],
            ),
        ],
        failure_policy=FailurePolicy.CONTINUE,
        description="demo",
    )
    from_dict, from_python = validate(as_dict), validate(as_python)
    assert data(from_dict) == data(from_python)
    assert from_dict.passthrough == (False, True, False)
    assert [cb.binding.name for cb in from_dict.bindings[2]] == ["path", "n", "who", "title"]
    compiled = from_dict.bindings[2]
    assert all(isinstance(cb, CompiledBinding) for cb in compiled)
    assert compiled[0].expression is None and compiled[0].when is None
    assert compiled[2].when is not None
    assert compiled[3].expression is not None
    assert ("src", "name") in {(ns, str(path)) for ns, path in compiled[3].expression.references}


def test_validating_a_topology_pipeline_again_changes_nothing() -> None:
    catalog = SimplePluginCatalog({"w": False, "gate": True})
    t = validate(p(n("a", plugin="gate"), n("b", "a", plugin="w")), catalog)
    assert data(validate(t.pipeline)) == data(t)  # passthrough already resolved


def test_validate_does_not_alter_its_input() -> None:
    pipeline = py(Node("a", "gate"))
    t = validate(pipeline, SimplePluginCatalog({"gate": True}))
    assert pipeline.nodes[0].passthrough is None
    assert t.node(0).passthrough is True


# --- passthrough and plugins -------------------------------------------------------------------


def test_passthrough_resolution() -> None:
    catalog = SimplePluginCatalog({"gate": True, "work": False})
    pipeline = p(
        n("a", plugin="gate"),  # from the catalog: True
        n("b", "a", plugin="gate", passthrough=False),  # explicit wins
        n("c", "b", plugin="work", passthrough=True),  # explicit wins
        n("d", "c", plugin="work"),  # from the catalog: False
    )
    t = validate(pipeline, catalog)
    assert t.passthrough == (True, False, True, False)
    assert [t.node(i).passthrough for i in range(4)] == [True, False, True, False]
    # without a catalog an unset flag is False
    assert validate(pipeline).passthrough == (False, False, True, False)


def test_unknown_plugin_with_catalog() -> None:
    err = reject(
        p(n("a", plugin="work"), n("b", "a", plugin="nope")),
        plugins=SimplePluginCatalog({"work": False}),
    )
    assert (err.node, err.field) == ("b", "plugin")
    assert "nope" in str(err)


def test_simple_catalog_satisfies_protocol() -> None:
    catalog = SimplePluginCatalog({"a": True, "b": False})
    assert isinstance(catalog, PluginCatalog)
    assert "a" in catalog and "c" not in catalog and 3 not in catalog
    assert catalog.is_passthrough("a") and not catalog.is_passthrough("b")
    assert not catalog.is_passthrough("c")
    assert sorted(catalog) == ["a", "b"] and len(catalog) == 2
    assert "SimplePluginCatalog" in repr(catalog)


def test_any_catalog_object_works() -> None:
    class Registry:
        def __contains__(self, name: object) -> bool:
            return name in ("w", "g")

        def is_passthrough(self, name: str) -> bool:
            return name == "g"

    assert isinstance(Registry(), PluginCatalog)
    assert validate(p(n("a", plugin="g"), n("b", "a", plugin="w")), Registry()).passthrough == (
        True,
        False,
    )


# --- rejections: pipeline and slugs ------------------------------------------------------------


def test_empty_pipeline() -> None:
    err = reject(p())
    assert (err.node, err.field) == (None, "nodes")
    err = reject(Pipeline("empty", ()))
    assert err.field == "nodes" and "empty" in str(err)


@pytest.mark.parametrize("slug", ["a b", "a.b", "é", "a/b", "a\n", "{a}", "a|b"])
def test_invalid_slug(slug: str) -> None:
    for pipeline in (p(n("ok"), n(slug)), py(Node("ok", "w"), Node(slug, "w"))):
        err = reject(pipeline)
        assert (err.node, err.field) == (slug, "slug")
        assert "nodes[1]" in str(err)


@pytest.mark.parametrize("slug", ["input", "config", "run"])
def test_reserved_slug(slug: str) -> None:
    err = reject(p(n(slug)))
    assert (err.node, err.field) == (slug, "slug")
    assert "reserved" in str(err)


def test_empty_or_non_string_slug_in_python_form() -> None:
    err = reject(py(Node("", "w")))
    assert err.field == "slug"
    err = reject(py(Node(7, "w")))  # type: ignore[arg-type]
    assert (err.node, err.field) == (None, "slug")


def test_duplicate_slugs_name_both_positions() -> None:
    err = reject(p(n("a"), n("b"), n("a", "b")))
    assert (err.node, err.field) == ("a", "slug")
    assert "nodes[0]" in str(err) and "nodes[2]" in str(err)


def test_non_node_in_python_form() -> None:
    err = reject(Pipeline("p", [Node("a", "w"), {"slug": "b"}]))  # type: ignore[list-item]
    assert err.field == "nodes[1]"


# --- rejections: dependencies and cycles -------------------------------------------------------


def test_unknown_dependency() -> None:
    err = reject(p(n("a"), n("b", "a", "ghost")))
    assert (err.node, err.field, err.edge) == ("b", "depends_on", ("ghost", "b"))
    assert "ghost" in str(err)


def test_repeated_dependency() -> None:
    err = reject(p(n("a"), n("b", "a", "a")))
    assert (err.node, err.field, err.edge) == ("b", "depends_on", ("a", "b"))
    assert "repeated" in str(err)


def test_self_dependency() -> None:
    err = reject(p(n("a", "a")))
    assert (err.node, err.field, err.edge) == ("a", "depends_on", ("a", "a"))
    assert not isinstance(err, CycleError)


def test_non_string_dependency_in_python_form() -> None:
    err = reject(py(Node("a", "w"), Node("b", "w", [["a"]])))  # type: ignore[list-item]
    assert (err.node, err.field) == ("b", "depends_on")


def test_cycle_reports_path() -> None:
    err = reject(p(n("a", "c"), n("b", "a"), n("c", "b")), CycleError)
    assert isinstance(err, CycleError)
    assert err.cycle == ("a", "b", "c", "a")  # data flow: b depends on a, c on b, a on c
    assert (err.node, err.field) == ("a", "depends_on")
    assert "a -> b -> c -> a" in str(err)


def test_two_node_cycle() -> None:
    err = reject(p(n("x", "y"), n("y", "x")), CycleError)
    assert isinstance(err, CycleError)
    assert err.cycle == ("x", "y", "x")


def test_disconnected_cycle_behind_valid_root() -> None:
    err = reject(
        p(n("root"), n("child", "root"), n("p", "q"), n("q", "p"), n("after", "child")),
        CycleError,
    )
    assert isinstance(err, CycleError)
    assert err.cycle == ("p", "q", "p")


def test_cycle_reachable_from_root_and_node_downstream_of_cycle_declared_first() -> None:
    pipeline = p(
        n("tail", "c"),  # declared first, downstream of the cycle, not on it
        n("root"),
        n("a", "root", "c"),
        n("b", "a"),
        n("c", "b"),
    )
    err = reject(pipeline, CycleError)
    assert isinstance(err, CycleError)
    assert err.cycle == ("a", "b", "c", "a")
    again = reject(pipeline, CycleError)
    assert isinstance(again, CycleError) and again.cycle == err.cycle  # deterministic


def test_cycle_of_two_disjoint_cycles_reports_the_first_declared() -> None:
    pipeline = p(n("r"), n("d", "e"), n("e", "d"), n("a", "b"), n("b", "a"))
    err = reject(pipeline, CycleError)
    assert isinstance(err, CycleError) and err.cycle == ("d", "e", "d")


# --- rejections: options -----------------------------------------------------------------------


def test_group_join_inner_needs_grouped() -> None:
    for mode in ("single", "aggregate"):
        err = reject(p(n("a"), n("b", "a", fan_mode=mode, group_join="inner")))
        assert (err.node, err.field) == ("b", "group_join")
    t = validate(p(n("a"), n("b", "a", fan_mode="grouped", group_join="inner")))
    assert t.node(1).group_join == "inner"
    # outer is fine anywhere, correlation is accepted in every mode
    for mode in ("single", "aggregate", "grouped"):
        validate(p(n("a"), n("b", "a", fan_mode=mode, group_join="outer", correlation="new")))


@pytest.mark.parametrize("timeout", [0, 0.0, -1, math.inf, math.nan])
def test_timeout_must_be_positive(timeout: float) -> None:
    if timeout >= 0 or math.isnan(timeout):  # the dict reader refuses negatives itself
        err = reject(p(n("a", timeout_seconds=timeout)))
        assert (err.node, err.field) == ("a", "timeout_seconds")
    err = reject(py(Node("a", "w", timeout_seconds=timeout)))
    assert (err.node, err.field) == ("a", "timeout_seconds")


def test_positive_timeout_accepted() -> None:
    assert validate(p(n("a", timeout_seconds=0.25))).node(0).timeout_seconds == 0.25


@pytest.mark.parametrize(
    ("node", "field"),
    [
        (Node("a", ""), "plugin"),
        (Node("a", "w", fan_mode="single"), "fan_mode"),  # type: ignore[arg-type]
        (Node("a", "w", trigger_rule="all_done"), "trigger_rule"),  # type: ignore[arg-type]
        (Node("a", "w", group_join="left"), "group_join"),  # type: ignore[arg-type]
        (Node("a", "w", correlation="old"), "correlation"),  # type: ignore[arg-type]
        (Node("a", "w", passthrough=1), "passthrough"),  # type: ignore[arg-type]
        (Node("a", "w", timeout_seconds=True), "timeout_seconds"),  # type: ignore[arg-type]
        (Node("a", "w", config={1: 2}), "config"),  # type: ignore[dict-item]
        (Node("a", "w", retry=3), "retry"),  # type: ignore[arg-type]
        (Node("a", "w", retry=RetryPolicy(max_attempts=0)), "retry.max_attempts"),
        (Node("a", "w", retry=RetryPolicy(max_attempts=1.5)), "retry.max_attempts"),  # type: ignore[arg-type]
        (Node("a", "w", retry=RetryPolicy(backoff_seconds=-1)), "retry.backoff_seconds"),
        (Node("a", "w", retry=RetryPolicy(backoff_multiplier=0.5)), "retry.backoff_multiplier"),
        (
            Node("a", "w", retry=RetryPolicy(max_backoff_seconds=math.nan)),
            "retry.max_backoff_seconds",
        ),
    ],
)
def test_python_form_options_are_checked(node: Node, field: str) -> None:
    err = reject(py(node))
    assert (err.node, err.field) == ("a", field)


def test_python_form_pipeline_fields_are_checked() -> None:
    assert reject(Pipeline("", [Node("a", "w")])).field == "name"
    bad_policy = Pipeline("p", [Node("a", "w")], failure_policy="continue")  # type: ignore[arg-type]
    assert reject(bad_policy).field == "failure_policy"
    assert reject(Pipeline("p", [Node("a", "w")], description=3)).field == "description"  # type: ignore[arg-type]


# --- rejections: edge filters ------------------------------------------------------------------


def test_edge_filter_on_non_dependency() -> None:
    err = reject(p(n("a"), n("b"), n("c", "a", edge_filters={"b": EQ_FILTER})))
    assert (err.node, err.field, err.edge) == ("c", "edge_filters.b", ("b", "c"))
    err = reject(p(n("a"), n("c", "a", edge_filters={"ghost": EQ_FILTER})))
    assert (err.node, err.field, err.edge) == ("c", "edge_filters.ghost", ("ghost", "c"))


def test_edge_filter_value_must_be_edge_filter_in_python_form() -> None:
    node = Node("b", "w", ["a"], edge_filters={"a": {"rules": []}})  # type: ignore[dict-item]
    err = reject(py(Node("a", "w"), node))
    assert (err.node, err.field) == ("b", "edge_filters.a")


def test_invalid_edge_filter_names_the_node() -> None:
    bad = invalid_filter()
    err = reject(py(Node("a", "w"), Node("b", "w", ["a"], edge_filters={"a": bad})))
    assert err.node == "b"
    assert err.field is not None and err.field.startswith("edge_filters.a")
    assert "node 'b'" in str(err)


def invalid_filter() -> EdgeFilter:
    """An EdgeFilter built in Python whose ``validate`` refuses it (``in`` needs a list)."""
    return EdgeFilter([FilterRule("kind", FilterOp.IN, "pdf")])


# --- rejections: bindings ----------------------------------------------------------------------


def test_field_binding_must_read_a_dependency() -> None:
    pipeline = p(n("a"), n("b"), n("c", "a", bindings={"x": {"node": "b", "key": "k"}}))
    err = reject(pipeline)
    assert (err.node, err.field, err.edge) == ("c", "bindings.x", ("b", "c"))
    err = reject(p(n("a", bindings={"x": {"node": "a", "key": "k"}})))
    assert (err.node, err.field) == ("a", "bindings.x")


def test_duplicate_binding_names_in_python_form() -> None:
    node = Node("a", "w", bindings=[Binding("x", LiteralSource(1)), Binding("x", LiteralSource(2))])
    err = reject(py(node))
    assert (err.node, err.field) == ("a", "bindings.x")
    assert "duplicate" in str(err)


@pytest.mark.parametrize("name", ["1x", "a-b", "a.b", "a b", "é", "x\n"])
def test_binding_name_must_be_identifier(name: str) -> None:
    err = reject(p(n("a", bindings={name: {"value": 1}})))
    assert (err.node, err.field) == ("a", f"bindings.{name}")


def test_empty_binding_name_in_python_form() -> None:
    err = reject(py(Node("a", "w", bindings=[Binding("", LiteralSource(1))])))
    assert (err.node, err.field) == ("a", "bindings.")


def test_binding_names_accept_identifiers() -> None:
    t = validate(p(n("a", bindings={"_x1": {"value": 1}, "Title": {"value": 2}})))
    assert [cb.binding.name for cb in t.bindings[0]] == ["_x1", "Title"]


@pytest.mark.parametrize(
    ("binding", "field"),
    [
        (Binding("x", FieldSource("a", "")), "bindings.x.key"),
        (Binding("x", InputSource("")), "bindings.x.input"),
        (Binding("x", InputSource("k", required="yes")), "bindings.x"),  # type: ignore[arg-type]
        (Binding("x", "{a.b}"), "bindings.x"),  # type: ignore[arg-type]
        (Binding("x", ExpressionSource(3)), "bindings.x"),  # type: ignore[arg-type]
        (Binding("x", LiteralSource(1), ""), "bindings.x.when"),
        ("x", "bindings"),
    ],
)
def test_python_form_binding_sources_are_checked(binding: Any, field: str) -> None:
    err = reject(py(Node("a", "w"), Node("b", "w", ["a"], bindings=[binding])))
    assert (err.node, err.field) == ("b", field)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ("{a.x | nosuchpipe}", "bindings.x"),
        ("{ghost.x}", "bindings.x"),  # namespace that is not a dependency
        ("{a.x", "bindings.x"),
        ({"expr": "{a.x | upper(1, 2, 3)}"}, "bindings.x"),
        ({"value": 1, "when": "{a.x | }"}, "bindings.x.when"),
        ({"node": "a", "key": "k", "when": "{run.id}"}, "bindings.x.when"),
    ],
)
def test_expression_errors(spec: Any, field: str) -> None:
    err = reject(p(n("a"), n("b", "a", bindings={"x": spec})), ExpressionGraphError)
    assert isinstance(err, ExpressionGraphError)
    assert (err.node, err.field) == ("b", field)
    cause = err.expression_error
    assert isinstance(cause, ExpressionError)
    assert err.__cause__ is cause
    assert f"column {cause.column}" in str(err)
    text = spec if isinstance(spec, str) else spec.get("when") or spec["expr"]
    assert text in str(err)


def test_expressions_see_dependencies_input_and_config() -> None:
    t = validate(
        p(
            n("a"),
            n(
                "b",
                "a",
                bindings={
                    "x": "{a.k} {input.k} {config.k}",
                    "y": {"value": 1, "when": "{a.flag}"},
                },
            ),
        )
    )
    assert {ns for ns, _ in t.bindings[1][0].expression.references} == {"a", "input", "config"}  # type: ignore[union-attr]


# --- model dict forms --------------------------------------------------------------------------


FULL = p(
    n(
        "src",
        plugin="list",
        config={"glob": "*.pdf", "deep": {"k": [1, None]}},
        retry={
            "max_attempts": 3,
            "backoff_seconds": 1.5,
            "backoff_multiplier": 3.0,
            "max_backoff_seconds": 60.0,
        },
        timeout_seconds=12.5,
        trigger_rule="one_success",
        passthrough=False,
    ),
    n("gate", "src", plugin="gate", passthrough=True, trigger_rule="none_failed"),
    n(
        "proc",
        "gate",
        "src",
        fan_mode="grouped",
        group_join="inner",
        correlation="new",
        edge_filters={"src": EQ_FILTER},
        trigger_rule="all_done",
        bindings={
            "path": {"node": "src", "key": "file.path"},
            "lit": {"value": {"a": [1, 2.5, None, True]}},
            "who": {"input": "user", "default": None, "when": "{input.flag}"},
            "need": {"input": "token", "required": True},
            "title": {"expr": "{src.name | upper}"},
        },
    ),
    n("agg", "proc", fan_mode="aggregate"),
    failure_policy="continue",
    description="all the options",
)


def test_full_round_trip() -> None:
    pipeline = Pipeline.from_dict(FULL)
    assert Pipeline.from_dict(pipeline.to_dict()) == pipeline
    assert pipeline.to_dict() == FULL
    for node in pipeline.nodes:
        assert Node.from_dict(node.to_dict()) == node


def test_round_trip_keeps_every_semantic_field() -> None:
    base = Pipeline.from_dict(FULL)
    variants = [
        attrs.evolve(base, failure_policy=FailurePolicy.FAIL_FAST),
        attrs.evolve(base, description=""),
        attrs.evolve(base, name="other"),
    ]
    proc = base.nodes[2]
    for change in (
        {"group_join": "outer"},
        {"correlation": "inherit"},
        {"passthrough": True},
        {"trigger_rule": TriggerRule.ALL_SUCCESS},
        {"timeout_seconds": 1.0},
        {"retry": RetryPolicy(max_attempts=2)},
        {"config": {"k": 1}},
        {"fan_mode": FanMode.AGGREGATE},
        {"edge_filters": {}},
        {"bindings": proc.bindings[:1]},
    ):
        nodes = list(base.nodes)
        nodes[2] = attrs.evolve(proc, **change)
        variants.append(attrs.evolve(base, nodes=nodes))
    for variant in variants:
        assert variant != base
        assert Pipeline.from_dict(variant.to_dict()) == variant


def test_python_input_source_default_round_trips() -> None:
    node = Node(
        "a",
        "w",
        bindings=[
            Binding("x", InputSource("k", default=5)),
            Binding("y", InputSource("k", default=None, has_default=True)),
            Binding("z", InputSource("k")),
        ],
    )
    assert [b.source.has_default for b in node.bindings] == [True, True, False]  # type: ignore[union-attr]
    assert Node.from_dict(node.to_dict()) == node


def test_string_binding_shorthand_is_an_expression() -> None:
    node = Node.from_dict(n("a", bindings={"x": "{input.k}"}))
    assert node.bindings == (Binding("x", ExpressionSource("{input.k}")),)


@pytest.mark.parametrize(
    ("document", "node", "field"),
    [
        (p(n("a", colour="red")), "a", "colour"),
        (p(n("a", retry={"attempts": 2})), "a", "retry.attempts"),
        (p(n("a", bindings={"x": {"value": 1, "extra": 2}})), "a", "bindings.x.extra"),
        (p(n("a", bindings={"x": {"node": "b", "key": "k", "value": 1}})), "a", "bindings.x"),
        (p(n("a", bindings={"x": {"input": "k", "key": "k"}})), "a", "bindings.x.key"),
        (p(n("a"), extra=True), None, "extra"),
        ({"name": "p", "nodes": [{"plugin": "w", 1: 2, "b": 3}]}, None, "1"),
        (p(n("a", fan_mode="fanout")), "a", "fan_mode"),
        (p(n("a", trigger_rule="sometimes")), "a", "trigger_rule"),
        (p(n("a", group_join="left")), "a", "group_join"),
        (p(n("a", correlation="old")), "a", "correlation"),
        (p(n("a", passthrough="yes")), "a", "passthrough"),
        (p(n("a", timeout_seconds=-1)), "a", "timeout_seconds"),
        (p(n("a", depends_on="b")), "a", "depends_on"),
        (p(n("a", depends_on=[""])), "a", "depends_on[0]"),
        (p(n("a", plugin="")), "a", "plugin"),
        (p(n("a", edge_filters=[])), "a", "edge_filters"),
        (p(n("a", "b", edge_filters={"b": {"bogus": 1}})), "a", None),
        ({"name": "p", "nodes": {}}, None, "nodes"),
        ({"name": "p", "nodes": [5]}, None, "nodes[]"),
    ],
)
def test_from_dict_rejects_names_node_and_field(
    document: dict[str, Any], node: str | None, field: str | None
) -> None:
    with pytest.raises(GraphError) as info:
        Pipeline.from_dict(document)
    err = info.value
    assert err.node == node
    if field is None:
        assert err.field is not None and err.field.startswith("edge_filters.b")
    else:
        assert err.field == field
    with pytest.raises(GraphError):  # validate reads the dict form the same way
        validate(document)


@pytest.mark.parametrize("junk", [None, [], "pipeline", 3, [{"slug": "a"}]])
def test_non_mapping_input(junk: Any) -> None:
    reject(junk)


# --- scale -------------------------------------------------------------------------------------

CHAIN = 100_000


def test_long_chain_validates() -> None:
    nodes = [n("s0")] + [n(f"s{i}", f"s{i - 1}") for i in range(1, CHAIN)]
    t = validate(p(*nodes))
    assert t.order == tuple(range(CHAIN))
    assert t.roots == (0,)
    assert len(t.descendants(0)) == CHAIN - 1


def test_long_chain_declared_backwards_validates() -> None:
    nodes = [n(f"s{i}", f"s{i - 1}") for i in range(CHAIN - 1, 0, -1)] + [n("s0")]
    t = validate(p(*nodes))
    assert [t.slugs[i] for i in t.order[:3]] == ["s0", "s1", "s2"]
    assert t.roots == (CHAIN - 1,)


def test_long_cycle_is_reported() -> None:
    nodes = [n("s0", f"s{CHAIN - 1}")] + [n(f"s{i}", f"s{i - 1}") for i in range(1, CHAIN)]
    err = reject(p(*nodes), CycleError)
    assert isinstance(err, CycleError)
    assert len(err.cycle) == CHAIN + 1
    assert err.cycle[:3] == ("s0", "s1", "s2") and err.cycle[-1] == "s0"
