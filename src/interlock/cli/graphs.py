"""Render a validated pipeline as a Mermaid flowchart or a Graphviz DOT digraph."""

from __future__ import annotations

import json

from interlock.filters import EdgeFilter
from interlock.graph import Topology
from interlock.model import FanMode, Node

__all__ = ["render_dot", "render_mermaid"]


def _filter_label(edge_filter: EdgeFilter | None) -> str:
    if edge_filter is None:
        return ""
    data = edge_filter.to_dict()

    def rules(items: object) -> str:
        out = []
        for rule in items if isinstance(items, list) else []:
            if isinstance(rule, dict):
                value = f" {json.dumps(rule['value'])}" if "value" in rule else ""
                out.append(f"{rule.get('field')} {rule.get('op')}{value}")
        return " and ".join(out)

    parts = [rules(data.get("rules"))]
    groups = data.get("any_of")
    if isinstance(groups, list) and groups:
        parts.append("(" + " or ".join(f"({rules(g)})" for g in groups) + ")")
    return " and ".join(p for p in parts if p)


def _node_label(node: Node) -> str:
    extra = [] if node.fan_mode is FanMode.SINGLE else [node.fan_mode.value]
    if node.passthrough:
        extra.append("passthrough")
    suffix = f" ({', '.join(extra)})" if extra else ""
    return f"{node.slug}{suffix}\n{node.plugin}"


def render_mermaid(topology: Topology) -> str:
    """``flowchart TD``; nodes ``n0..`` labelled slug, fan mode, plugin; filters on edges."""

    def quote(text: str) -> str:
        return '"' + text.replace('"', "#quot;").replace("\n", "<br/>") + '"'

    lines = ["flowchart TD"]
    for i, node in enumerate(topology.pipeline.nodes):
        label = quote(_node_label(node))
        shape = f"[[{label}]]" if node.fan_mode is not FanMode.SINGLE else f"[{label}]"
        lines.append(f"    n{i}{shape}")
    for i, node in enumerate(topology.pipeline.nodes):
        for parent in topology.parents[i]:
            label = _filter_label(node.edge_filters.get(topology.slugs[parent]))
            arrow = f"-->|{quote(label)}|" if label else "-->"
            lines.append(f"    n{parent} {arrow} n{i}")
    return "\n".join(lines)


def render_dot(topology: Topology) -> str:
    """``digraph`` with one box per node; edge filters as edge labels."""

    def quote(text: str) -> str:
        return json.dumps(text)  # a JSON string is a valid DOT quoted string

    lines = [f"digraph {quote(topology.pipeline.name)} {{", "    rankdir=LR;",
             "    node [shape=box];"]
    for node in topology.pipeline.nodes:
        style = ', style="rounded,bold"' if node.fan_mode is not FanMode.SINGLE else ""
        lines.append(f"    {quote(node.slug)} [label={quote(_node_label(node))}{style}];")
    for i, node in enumerate(topology.pipeline.nodes):
        for parent in topology.parents[i]:
            slug = topology.slugs[parent]
            label = _filter_label(node.edge_filters.get(slug))
            attributes = f" [label={quote(label)}]" if label else ""
            lines.append(f"    {quote(slug)} -> {quote(node.slug)}{attributes};")
    lines.append("}")
    return "\n".join(lines)
