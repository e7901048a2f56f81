"""Hypothesis strategies for the stateful machine: random pipelines and worker outputs."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

__all__ = ["OUTPUTS", "PICK", "pipeline_specs"]

PICK = st.integers(min_value=0, max_value=63)
"""Which of the candidates (tasks, past calls) a rule acts on: ``candidates[pick % len]``."""

OUTPUT = st.fixed_dictionaries(
    {"fields": st.fixed_dictionaries({"k": st.integers(0, 3)},
                                     optional={"tag": st.sampled_from(["x", "y"])})},
    optional={"data": st.sampled_from([None, "blob", [1, 2], {"uri": "s3://b/k"}])},
)
OUTPUTS = st.lists(OUTPUT, max_size=3)
"""What a worker returns: 0-3 outputs with a routing field ``k`` (0..3) and maybe ``tag``."""

_RULES = st.one_of(
    st.builds(lambda op, v: {"field": "k", "op": op, "value": v},
              st.sampled_from(["eq", "neq", "gte", "lt"]), st.integers(0, 3)),
    st.builds(lambda vs: {"field": "k", "op": "in", "value": vs},
              st.lists(st.integers(0, 3), min_size=1, max_size=3, unique=True)),
    st.sampled_from([{"field": "tag", "op": "exists"}, {"field": "tag", "op": "not_exists"}]),
)


def _rarely(draw: st.DrawFn) -> bool:
    """True one time in four; shrinks to False (a minimal example uses no optional feature)."""
    return draw(st.integers(0, 3)) == 3


@st.composite
def pipeline_specs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid pipeline of 1-7 nodes: random DAG, fan modes, edge filters on ``k``/``tag``,
    passthrough nodes, trigger rules, correlation, retry policies, failure policy."""
    count = draw(st.integers(1, 7))
    nodes: list[dict[str, Any]] = []
    for i in range(count):
        node: dict[str, Any] = {"slug": f"n{i}", "plugin": "work"}
        deps = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=min(i, 3))) if i else []
        if deps:
            node["depends_on"] = [f"n{d}" for d in sorted(deps)]
            fan = draw(st.sampled_from(["single", "aggregate", "grouped"]))
            if fan != "single":
                node["fan_mode"] = fan
            if fan == "grouped" and _rarely(draw):
                node["group_join"] = "inner"
            filters = {f"n{d}": {"rules": [draw(_RULES)]} for d in sorted(deps) if _rarely(draw)}
            if filters:
                node["edge_filters"] = filters
            rule = draw(st.sampled_from(["all_success", "all_success", "all_done",
                                         "none_failed", "one_success"]))
            if rule != "all_success":
                node["trigger_rule"] = rule
            if _rarely(draw):
                node["bindings"] = {"kk": {"node": f"n{deps[0]}", "key": "k"}}
        if _rarely(draw):
            node["passthrough"] = True
        if _rarely(draw):
            node["correlation"] = "new"
        attempts = draw(st.integers(1, 3))
        if attempts > 1:
            node["retry"] = {"max_attempts": attempts,
                             "backoff_seconds": draw(st.sampled_from([0, 0, 5]))}
        nodes.append(node)
    policy = draw(st.sampled_from(["fail_fast", "continue"]))
    return {"name": "generated", "nodes": nodes, "failure_policy": policy}
