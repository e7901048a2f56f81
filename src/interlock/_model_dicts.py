"""Dict <-> model conversion, kept apart so :mod:`interlock.model` stays small.

Every error names the node and the field. Unknown keys are errors, never ignored.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, TypeVar

from interlock.errors import GraphError
from interlock.filters import EdgeFilter
from interlock.model import (
    DEFAULT_RETRY,
    Binding,
    BindingSource,
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
    as_sequence,
)

E = TypeVar("E", bound=enum.Enum)

_NODE_KEYS = {
    "slug", "plugin", "depends_on", "fan_mode", "edge_filters", "bindings", "config", "retry",
    "timeout_seconds", "trigger_rule", "group_join", "correlation", "passthrough",
}
_ABSENT: Any = object()
"""``data.get(key, _ABSENT)``: the key is not there (None may be a value, and an error)."""
_PIPELINE_KEYS = {"name", "nodes", "failure_policy", "description"}
_RETRY_KEYS = {"max_attempts", "backoff_seconds", "backoff_multiplier", "max_backoff_seconds"}


def _mapping(value: Any, node: str | None, field: str) -> Mapping[str, Any]:
    # the exact-type test first: the ABC isinstance check costs ~10x more, per node and field
    if type(value) is not dict and not isinstance(value, Mapping):
        raise GraphError(f"expected a mapping, got {type(value).__name__}", node=node, field=field)
    return value


def _unknown(data: Mapping[str, Any], allowed: set[str], node: str | None, field: str) -> None:
    if allowed.issuperset(data):
        return
    extra = sorted(set(data) - allowed, key=str)  # keys may be of mixed types (YAML)
    if extra:
        where = f"{field}.{extra[0]}" if field else str(extra[0])
        raise GraphError(
            f"unknown key {extra[0]!r} (allowed: {', '.join(sorted(allowed))})",
            node=node, field=where,
        )


def _enum(cls: type[E], value: Any, node: str | None, field: str) -> E:
    try:
        return cls._value2member_map_[value]  # type: ignore[return-value]  # Enum's own table
    except (KeyError, TypeError):
        pass
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(str(m.value) for m in cls)
        raise GraphError(
            f"invalid value {value!r} (allowed: {allowed})", node=node, field=field
        ) from None


def _str(value: Any, node: str | None, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise GraphError(f"expected a non-empty string, got {value!r}", node=node, field=field)
    return value


def _number(value: Any, node: str | None, field: str, *, minimum: float = 0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise GraphError(f"expected a number >= {minimum}, got {value!r}", node=node, field=field)
    return float(value)


def _retry(data: Any, node: str) -> RetryPolicy:
    d = _mapping(data, node, "retry")
    _unknown(d, _RETRY_KEYS, node, "retry")
    attempts = d.get("max_attempts", 1)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise GraphError(f"expected an integer >= 1, got {attempts!r}", node=node,
                         field="retry.max_attempts")
    return RetryPolicy(
        max_attempts=attempts,
        backoff_seconds=_number(d.get("backoff_seconds", 0.0), node, "retry.backoff_seconds"),
        backoff_multiplier=_number(d.get("backoff_multiplier", 2.0), node,
                                   "retry.backoff_multiplier", minimum=1),
        max_backoff_seconds=_number(d.get("max_backoff_seconds", 3600.0), node,
                                    "retry.max_backoff_seconds"),
    )


_SOURCE_KEYS = {"node", "key", "value", "input", "default", "required", "expr", "when"}


def _source(spec: Mapping[str, Any], node: str, field: str) -> BindingSource:
    kinds = [k for k in ("node", "value", "input", "expr") if k in spec]
    if len(kinds) != 1:
        raise GraphError(
            "a binding needs exactly one of 'node' (+ 'key'), 'value', 'input', 'expr'",
            node=node, field=field,
        )
    kind = kinds[0]
    allowed = {"node": {"node", "key"}, "value": {"value"}, "expr": {"expr"},
               "input": {"input", "default", "required"}}[kind] | {"when"}
    _unknown(spec, allowed, node, field)
    if kind == "node":
        return FieldSource(_str(spec["node"], node, f"{field}.node"),
                           _str(spec.get("key"), node, f"{field}.key"))
    if kind == "value":
        return LiteralSource(spec["value"])
    if kind == "expr":
        return ExpressionSource(_str(spec["expr"], node, f"{field}.expr"))
    required = spec.get("required", False)
    if not isinstance(required, bool):
        raise GraphError("expected true or false", node=node, field=f"{field}.required")
    return InputSource(_str(spec["input"], node, f"{field}.input"), default=spec.get("default"),
                       has_default="default" in spec, required=required)


def _bindings(data: Any, node: str) -> tuple[Binding, ...]:
    out = []
    for name, spec in _mapping(data, node, "bindings").items():
        field = f"bindings.{name}"
        if isinstance(spec, str):
            out.append(Binding(str(name), ExpressionSource(spec)))
            continue
        spec = _mapping(spec, node, field)
        when = spec.get("when")
        if when is not None:
            when = _str(when, node, f"{field}.when")
        out.append(Binding(str(name), _source(spec, node, field), when))
    return tuple(out)


def _source_to_dict(source: BindingSource) -> dict[str, Any]:
    if isinstance(source, FieldSource):
        return {"node": source.node, "key": source.key}
    if isinstance(source, LiteralSource):
        return {"value": source.value}
    if isinstance(source, ExpressionSource):
        return {"expr": source.expression}
    out: dict[str, Any] = {"input": source.key}
    if source.has_default:
        out["default"] = source.default
    if source.required:
        out["required"] = True
    return out


def _edge_filter(dep: str, spec: Any, node: str) -> EdgeFilter:
    where = f"edge_filters.{dep}"
    try:
        return EdgeFilter.from_dict(spec, where=where)
    except GraphError as exc:  # the filter reader cannot know the node: add it
        raise GraphError(exc.reason, node=node, field=exc.field or where,
                         edge=exc.edge or (dep, node)) from exc


def node_from_dict(data: Mapping[str, Any]) -> Node:
    """See :meth:`Node.from_dict`."""
    # Absent optional keys take their default without going through the readers: a pipeline
    # of N nodes is read on every start_run, and most nodes set few keys. Checks keep their
    # order, so a node with several faults reports the same one.
    data = _mapping(data, None, "nodes[]")
    get = data.get
    slug_value = get("slug")
    node = slug_value if isinstance(slug_value, str) else None
    _unknown(data, _NODE_KEYS, node, "")
    slug = _str(slug_value, node, "slug")
    deps_value = get("depends_on", _ABSENT)
    deps = () if deps_value is _ABSENT else tuple(
        [_str(d, slug, f"depends_on[{i}]")
         for i, d in enumerate(as_sequence(deps_value, node=slug, field="depends_on"))])
    filters_value = get("edge_filters", _ABSENT)
    filters = {} if filters_value is _ABSENT else {
        _str(dep, slug, "edge_filters"): _edge_filter(dep, spec, slug)
        for dep, spec in _mapping(filters_value, slug, "edge_filters").items()
    }
    timeout = get("timeout_seconds")
    passthrough = get("passthrough")
    if passthrough is not None and not isinstance(passthrough, bool):
        raise GraphError("expected true or false", node=slug, field="passthrough")
    group_join = get("group_join", "outer")
    if group_join not in ("outer", "inner"):
        raise GraphError(f"invalid value {group_join!r} (allowed: inner, outer)", node=slug,
                         field="group_join")
    correlation = get("correlation", "inherit")
    if correlation not in ("inherit", "new"):
        raise GraphError(f"invalid value {correlation!r} (allowed: inherit, new)", node=slug,
                         field="correlation")
    plugin = _str(get("plugin"), slug, "plugin")
    fan_mode = get("fan_mode", _ABSENT)
    bindings = get("bindings", _ABSENT)
    config = get("config", _ABSENT)
    retry = get("retry", _ABSENT)
    trigger_rule = get("trigger_rule", _ABSENT)
    return Node(
        slug=slug,
        plugin=plugin,
        depends_on=deps,
        fan_mode=FanMode.SINGLE if fan_mode is _ABSENT else _enum(FanMode, fan_mode, slug,
                                                                  "fan_mode"),
        edge_filters=filters,
        bindings=() if bindings is _ABSENT else _bindings(bindings, slug),
        config={} if config is _ABSENT else _mapping(config, slug, "config"),  # Node copies it
        retry=DEFAULT_RETRY if retry is _ABSENT else _retry(retry, slug),
        timeout_seconds=None if timeout is None else _number(timeout, slug, "timeout_seconds"),
        trigger_rule=(TriggerRule.ALL_SUCCESS if trigger_rule is _ABSENT
                      else _enum(TriggerRule, trigger_rule, slug, "trigger_rule")),
        group_join=group_join,
        correlation=correlation,
        passthrough=passthrough,
    )


def node_to_dict(node: Node) -> dict[str, Any]:
    """See :meth:`Node.to_dict`; defaults are omitted so the dict stays readable."""
    out: dict[str, Any] = {"slug": node.slug, "plugin": node.plugin}
    if node.depends_on:
        out["depends_on"] = list(node.depends_on)
    if node.fan_mode is not FanMode.SINGLE:
        out["fan_mode"] = node.fan_mode.value
    if node.edge_filters:
        out["edge_filters"] = {k: f.to_dict() for k, f in node.edge_filters.items()}
    if node.bindings:
        out["bindings"] = {
            b.name: {**_source_to_dict(b.source), **({"when": b.when} if b.when else {})}
            for b in node.bindings
        }
    if node.config:
        out["config"] = dict(node.config)
    if node.retry is not DEFAULT_RETRY and node.retry != DEFAULT_RETRY:
        out["retry"] = {f: getattr(node.retry, f) for f in sorted(_RETRY_KEYS)}
    if node.timeout_seconds is not None:
        out["timeout_seconds"] = node.timeout_seconds
    if node.trigger_rule is not TriggerRule.ALL_SUCCESS:
        out["trigger_rule"] = node.trigger_rule.value
    if node.group_join != "outer":
        out["group_join"] = node.group_join
    if node.correlation != "inherit":
        out["correlation"] = node.correlation
    if node.passthrough is not None:
        out["passthrough"] = node.passthrough
    return out


def pipeline_from_dict(data: Mapping[str, Any]) -> Pipeline:
    """See :meth:`Pipeline.from_dict`."""
    data = _mapping(data, None, "pipeline")
    _unknown(data, _PIPELINE_KEYS, None, "")
    nodes = [node_from_dict(n) for n in as_sequence(data.get("nodes"), node=None, field="nodes")]
    description = data.get("description", "")
    if not isinstance(description, str):
        raise GraphError("expected a string", field="description")
    return Pipeline(
        name=_str(data.get("name", "pipeline"), None, "name"),
        nodes=tuple(nodes),
        failure_policy=_enum(FailurePolicy, data.get("failure_policy", "fail_fast"), None,
                             "failure_policy"),
        description=description,
    )


def pipeline_to_dict(pipeline: Pipeline) -> dict[str, Any]:
    """See :meth:`Pipeline.to_dict`."""
    out: dict[str, Any] = {"name": pipeline.name,
                           "nodes": [node_to_dict(n) for n in pipeline.nodes]}
    if pipeline.failure_policy is not FailurePolicy.FAIL_FAST:
        out["failure_policy"] = pipeline.failure_policy.value
    if pipeline.description:
        out["description"] = pipeline.description
    return out
