"""Planning scenarios from dag-semantics.md, pure: no store, a dict stands in for upstream."""

from __future__ import annotations

from typing import Any

from interlock import Artifact, NodeState, validate
from interlock.planning import Launch, Settle, Upstream, plan_node


def _topology(nodes: list[dict[str, Any]], policy: str = "fail_fast") -> Any:
    return validate({"name": "t", "nodes": nodes, "failure_policy": policy})


class Upstreams:
    """Upstream facts by slug; artifacts get run-wide publication order automatically."""

    def __init__(self, topology: Any) -> None:
        self.topology = topology
        self.facts: dict[int, Upstream] = {}
        self.seq = 0

    def set(self, slug: str, state: NodeState, fields: list[dict[str, Any]] = (),  # type: ignore[assignment]
            origins: list[str | None] | None = None) -> list[Artifact]:
        index = self.topology.index[slug]
        artifacts = []
        for k, f in enumerate(fields):
            self.seq += 1
            aid = f"{slug}.0.0/{k}"
            origin = aid if origins is None else origins[k]
            artifacts.append(Artifact(aid, index, 0, f"{slug}.0.0", self.seq, f, None, origin))
        self.facts[index] = Upstream(state, artifacts)
        return artifacts

    def plan(self, slug: str, run_input: dict[str, Any] | None = None) -> Settle | Launch:
        return plan_node(self.topology, self.topology.index[slug], self.facts.__getitem__,
                         run_input or {})


def test_ten_files_two_branches_make_ten_grouped_tasks_of_two() -> None:
    topo = _topology([
        {"slug": "src", "plugin": "p"},
        {"slug": "a", "plugin": "p", "depends_on": ["src"]},
        {"slug": "b", "plugin": "p", "depends_on": ["src"]},
        {"slug": "merge", "plugin": "p", "depends_on": ["a", "b"], "fan_mode": "grouped"},
    ])
    up = Upstreams(topo)
    files = up.set("src", NodeState.COMPLETED, [{"n": i} for i in range(10)])
    groups = [f.artifact_id for f in files]
    # the branches complete in a different order than the files were published
    up.set("b", NodeState.COMPLETED, [{"b": i} for i in reversed(range(10))], groups[::-1])
    up.set("a", NodeState.COMPLETED, [{"a": i} for i in range(10)], groups)
    decision = up.plan("merge")
    assert isinstance(decision, Launch)
    assert len(decision.tasks) == 10
    for task in decision.tasks:
        assert {k: len(v) for k, v in task.inputs.items()} == {"a": 1, "b": 1}
        assert task.inputs["a"][0].origin == task.inputs["b"][0].origin == task.origin
    # groups in order of first appearance (b published first, reversed)
    assert [t.origin for t in decision.tasks] == groups[::-1]


def test_grouped_inner_join_drops_incomplete_groups_outer_keeps_them() -> None:
    nodes = [
        {"slug": "src", "plugin": "p"},
        {"slug": "a", "plugin": "p", "depends_on": ["src"]},
        {"slug": "b", "plugin": "p", "depends_on": ["src"]},
    ]
    for join, expected in (("outer", 3), ("inner", 2)):
        topo = _topology([*nodes, {"slug": "m", "plugin": "p", "depends_on": ["a", "b"],
                                   "fan_mode": "grouped", "group_join": join}])
        up = Upstreams(topo)
        g = [f.artifact_id for f in up.set("src", NodeState.COMPLETED, [{}, {}, {}])]
        up.set("a", NodeState.COMPLETED, [{}, {}, {}], g)
        up.set("b", NodeState.COMPLETED, [{}, {}], g[:2])
        decision = up.plan("m")
        assert isinstance(decision, Launch)
        assert len(decision.tasks) == expected, join


def test_broadcast_artifacts_join_every_group() -> None:
    topo = _topology([
        {"slug": "src", "plugin": "p"},
        {"slug": "cfg", "plugin": "p"},
        {"slug": "a", "plugin": "p", "depends_on": ["src"]},
        {"slug": "settings", "plugin": "p", "depends_on": ["cfg"], "fan_mode": "aggregate"},
        {"slug": "m", "plugin": "p", "depends_on": ["a", "settings"], "fan_mode": "grouped"},
    ])
    up = Upstreams(topo)
    g = [f.artifact_id for f in up.set("src", NodeState.COMPLETED, [{}, {}])]
    up.set("a", NodeState.COMPLETED, [{}, {}], g)
    up.set("settings", NodeState.COMPLETED, [{"mode": "fast"}], [None])
    decision = up.plan("m")
    assert isinstance(decision, Launch)
    assert [len(t.inputs["settings"]) for t in decision.tasks] == [1, 1]
    assert [t.origin for t in decision.tasks] == g


def test_video_subtitle_routing_empty_branch_filtered_and_not_blocking() -> None:
    topo = _topology([
        {"slug": "source", "plugin": "p"},
        {"slug": "video", "plugin": "p", "depends_on": ["source"],
         "edge_filters": {"source": [{"field": "kind", "op": "eq", "value": "video"}]}},
        {"slug": "subtitle", "plugin": "p", "depends_on": ["source"],
         "edge_filters": {"source": [{"field": "kind", "op": "eq", "value": "subtitle"}]}},
        {"slug": "publish", "plugin": "p", "depends_on": ["video", "subtitle"],
         "fan_mode": "aggregate"},
    ])
    up = Upstreams(topo)
    up.set("source", NodeState.COMPLETED, [{"kind": "video"}, {"kind": "video"}])
    video = up.plan("video")
    assert isinstance(video, Launch) and len(video.tasks) == 2
    assert up.plan("subtitle") == Settle(NodeState.FILTERED, "no artifact reached the node")
    up.set("video", NodeState.COMPLETED, [{"v": 1}, {"v": 2}])
    up.set("subtitle", NodeState.FILTERED)
    publish = up.plan("publish")
    assert isinstance(publish, Launch)
    assert {k: len(v) for k, v in publish.tasks[0].inputs.items()} == {"video": 2, "subtitle": 0}


def test_skip_cascades_and_filter_does_not() -> None:
    topo = _topology([
        {"slug": "a", "plugin": "p"},
        {"slug": "b", "plugin": "p", "depends_on": ["a"]},
        {"slug": "c", "plugin": "p", "depends_on": ["b"]},
        {"slug": "cleanup", "plugin": "p", "depends_on": ["c"], "trigger_rule": "all_done",
         "fan_mode": "aggregate"},
    ], policy="continue")
    up = Upstreams(topo)
    up.set("a", NodeState.FAILED)
    assert isinstance(up.plan("b"), Settle) and up.plan("b").state is NodeState.SKIPPED
    up.set("b", NodeState.SKIPPED)
    assert up.plan("c").state is NodeState.SKIPPED  # type: ignore[union-attr]
    up.set("c", NodeState.SKIPPED)
    cleanup = up.plan("cleanup")
    assert isinstance(cleanup, Launch), "all_done runs even when upstream was skipped"
    assert cleanup.tasks[0].inputs == {"c": []}, "its lists are empty, never null"


def test_aggregate_edge_filter_rejecting_everything_skips() -> None:
    topo = _topology([
        {"slug": "a", "plugin": "p"},
        {"slug": "agg", "plugin": "p", "depends_on": ["a"], "fan_mode": "aggregate",
         "edge_filters": {"a": [{"field": "ok", "op": "eq", "value": True}]}},
    ])
    up = Upstreams(topo)
    up.set("a", NodeState.COMPLETED, [{"ok": False}, {"ok": 1}])
    decision = up.plan("agg")
    assert isinstance(decision, Settle) and decision.state is NodeState.SKIPPED
    assert "'a'" in (decision.reason or "")


def test_none_failed_tolerates_skipped_but_not_failed() -> None:
    topo = _topology([
        {"slug": "a", "plugin": "p"},
        {"slug": "b", "plugin": "p"},
        {"slug": "c", "plugin": "p", "depends_on": ["a", "b"], "trigger_rule": "none_failed"},
    ], policy="continue")
    up = Upstreams(topo)
    up.set("a", NodeState.SKIPPED)
    up.set("b", NodeState.COMPLETED, [{}])
    assert isinstance(up.plan("c"), Launch)
    up.set("a", NodeState.FAILED)
    assert up.plan("c").state is NodeState.SKIPPED  # type: ignore[union-attr]


def test_one_success() -> None:
    topo = _topology([
        {"slug": "a", "plugin": "p"},
        {"slug": "b", "plugin": "p"},
        {"slug": "c", "plugin": "p", "depends_on": ["a", "b"], "trigger_rule": "one_success"},
    ], policy="continue")
    up = Upstreams(topo)
    up.set("a", NodeState.FAILED)
    up.set("b", NodeState.COMPLETED, [{"x": 1}])
    decision = up.plan("c")
    assert isinstance(decision, Launch) and len(decision.tasks) == 1
    up.set("b", NodeState.SKIPPED)
    assert up.plan("c").state is NodeState.SKIPPED  # type: ignore[union-attr]


def test_passthrough_walk_two_levels_and_stopped_by_processing_node() -> None:
    topo = _topology([
        {"slug": "src", "plugin": "p"},
        {"slug": "gate1", "plugin": "gate", "depends_on": ["src"], "passthrough": True},
        {"slug": "gate2", "plugin": "gate", "depends_on": ["gate1"], "passthrough": True},
        {"slug": "consumer", "plugin": "p", "depends_on": ["gate2"]},
        {"slug": "proc", "plugin": "p", "depends_on": ["src"]},
        {"slug": "gate3", "plugin": "gate", "depends_on": ["proc"], "passthrough": True},
        {"slug": "blocked", "plugin": "p", "depends_on": ["gate3"]},
    ])
    up = Upstreams(topo)
    files = up.set("src", NodeState.COMPLETED, [{"n": 1}, {"n": 2}])
    up.set("gate1", NodeState.COMPLETED)
    up.set("gate2", NodeState.COMPLETED)
    consumer = up.plan("consumer")
    assert isinstance(consumer, Launch)
    assert [t.inputs["gate2"][0].artifact_id for t in consumer.tasks] == [
        f.artifact_id for f in files]
    up.set("proc", NodeState.COMPLETED)  # a processing node that produced nothing
    up.set("gate3", NodeState.COMPLETED)
    blocked = up.plan("blocked")
    assert isinstance(blocked, Settle) and blocked.state is NodeState.FILTERED


def test_passthrough_walk_respects_the_gates_own_filter() -> None:
    topo = _topology([
        {"slug": "src", "plugin": "p"},
        {"slug": "gate", "plugin": "gate", "depends_on": ["src"], "passthrough": True,
         "edge_filters": {"src": [{"field": "kind", "op": "eq", "value": "video"}]}},
        {"slug": "consumer", "plugin": "p", "depends_on": ["gate"]},
    ])
    up = Upstreams(topo)
    up.set("src", NodeState.COMPLETED, [{"kind": "video"}, {"kind": "text"}])
    up.set("gate", NodeState.COMPLETED)
    decision = up.plan("consumer")
    assert isinstance(decision, Launch)
    assert [t.inputs["gate"][0].fields for t in decision.tasks] == [{"kind": "video"}]


def test_single_mode_order_and_broadcast_starts_new_group() -> None:
    topo = _topology([
        {"slug": "a", "plugin": "p"},
        {"slug": "b", "plugin": "p"},
        {"slug": "c", "plugin": "p", "depends_on": ["a", "b"]},
    ])
    up = Upstreams(topo)
    up.set("b", NodeState.COMPLETED, [{"k": "b0"}], [None])
    up.set("a", NodeState.COMPLETED, [{"k": "a0"}, {"k": "a1"}], ["g1", "g2"])
    decision = up.plan("c")
    assert isinstance(decision, Launch)
    assert next(t.inputs for t in decision.tasks).keys() == {"b"}  # published first
    assert [t.origin for t in decision.tasks] == ["b.0.0/0", "g1", "g2"]
    assert [t.origin_mode for t in decision.tasks] == ["inherit"] * 3


def test_correlation_new_and_aggregate_broadcast() -> None:
    topo = _topology([
        {"slug": "a", "plugin": "p"},
        {"slug": "fresh", "plugin": "p", "depends_on": ["a"], "correlation": "new"},
        {"slug": "agg", "plugin": "p", "depends_on": ["a"], "fan_mode": "aggregate"},
    ])
    up = Upstreams(topo)
    up.set("a", NodeState.COMPLETED, [{}])
    assert plan_mode(up, "fresh") == ["self"]
    assert plan_mode(up, "agg") == ["broadcast"]
    root = plan_node(topo, topo.index["a"], up.facts.__getitem__, {})
    assert isinstance(root, Launch) and root.tasks[0].origin_mode == "self"


def plan_mode(up: Upstreams, slug: str) -> list[str]:
    decision = up.plan(slug)
    assert isinstance(decision, Launch)
    return [t.origin_mode for t in decision.tasks]


def test_bindings_from_every_source_with_when() -> None:
    topo = _topology([
        {"slug": "a", "plugin": "p"},
        {"slug": "b", "plugin": "p", "depends_on": ["a"], "config": {"size": 3},
         "bindings": {
             "path": {"node": "a", "key": "meta.path"},
             "lit": {"value": [1, 2]},
             "title": {"input": "title", "default": "untitled"},
             "label": "{a.meta.path | basename}-{config.size}",
             "flag": {"expr": "{a.hd}", "when": "{a.hd}"},
             "never": {"value": 1, "when": "{a.missing}"},
         }},
    ])
    up = Upstreams(topo)
    up.set("a", NodeState.COMPLETED, [{"meta": {"path": "/x/y.mp4"}, "hd": True}])
    decision = up.plan("b")
    assert isinstance(decision, Launch)
    assert decision.tasks[0].bindings == {
        "path": "/x/y.mp4", "lit": [1, 2], "title": "untitled", "label": "y.mp4-3",
        "flag": True,
    }


def test_aggregate_bindings_are_lists_and_binding_errors_fail_the_node() -> None:
    topo = _topology([
        {"slug": "a", "plugin": "p"},
        {"slug": "agg", "plugin": "p", "depends_on": ["a"], "fan_mode": "aggregate",
         "bindings": {"ns": {"node": "a", "key": "n"}}},
        {"slug": "strict", "plugin": "p", "depends_on": ["a"],
         "bindings": {"who": {"input": "user", "required": True}}},
    ])
    up = Upstreams(topo)
    up.set("a", NodeState.COMPLETED, [{"n": 1}, {"n": 2}, {}])
    agg = up.plan("agg")
    assert isinstance(agg, Launch) and agg.tasks[0].bindings == {"ns": [1, 2, None]}
    strict = up.plan("strict")
    assert isinstance(strict, Settle) and strict.state is NodeState.FAILED
    assert "'who'" in (strict.reason or "") and "'user'" in (strict.reason or "")


def test_planning_is_deterministic_under_repeat() -> None:
    topo = _topology([
        {"slug": "a", "plugin": "p"},
        {"slug": "b", "plugin": "p", "depends_on": ["a"]},
    ])
    up = Upstreams(topo)
    up.set("a", NodeState.COMPLETED, [{"i": i} for i in range(50)])
    assert up.plan("b") == up.plan("b")
