"""Graph validation: turn a :class:`~interlock.model.Pipeline` into a compiled :class:`Topology`.

:func:`validate` is the single gate between a pipeline definition and everything that runs it.
It either returns a fully checked, immutable :class:`Topology` or raises a
:class:`~interlock.errors.GraphError` (or subclass) naming the node, edge and field at fault;
nothing is ever half-accepted. Validation is O(nodes + edges) plus expression compilation (a
pipeline *not* declared in dependency order adds a heap: O(nodes log nodes)), and iterative
throughout (a 100,000-node chain validates without touching the recursion limit).

Decisions worth knowing:

- Slugs are ASCII letters, digits, ``_`` and ``-`` (case-sensitive); ``input``, ``config`` and
  ``run`` are reserved namespaces.
- A cycle is reported in data-flow direction (``a -> b`` means *b depends on a*), starting at
  the cycle's node declared first, first slug repeated last. The same graph always reports the
  same cycle, including a cycle no root can reach.
- ``order`` is the topological order that, among ready nodes, always takes the one declared
  first; a pipeline declared in dependency order keeps its declaration order.
- Binding names are ASCII identifiers; a binding's ``when`` must be non-empty text.
- ``group_join: inner`` needs ``fan_mode: grouped``; ``correlation`` is accepted in every mode.
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NoReturn, Protocol, runtime_checkable

import attrs

from interlock.errors import CycleError, ExpressionError, GraphError
from interlock.expressions import Expression, compile_expression
from interlock.filters import EdgeFilter
from interlock.model import (
    DEFAULT_RETRY,
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

__all__ = [
    "RESERVED_SLUGS",
    "CompiledBinding",
    "ExpressionGraphError",
    "PluginCatalog",
    "SimplePluginCatalog",
    "Topology",
    "validate",
]

RESERVED_SLUGS = frozenset({"input", "config", "run"})
"""Names a node may not take: they are expression namespaces (``run`` is kept for later use)."""

_SLUG = re.compile(r"[A-Za-z0-9_-]+")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BUILTIN_NAMESPACES = frozenset({"input", "config"})


class ExpressionGraphError(GraphError):
    """An expression of the pipeline does not compile.

    ``expression_error`` is the original :class:`~interlock.errors.ExpressionError` (also chained
    as ``__cause__``); ``node`` and ``field`` (``bindings.<name>`` or ``bindings.<name>.when``)
    say where the expression lives. The message quotes the expression and points at the column.
    """

    def __init__(self, error: ExpressionError, text: str, *, node: str, field: str) -> None:
        self.expression_error = error
        shown = error.expression or text
        pointer = " " * error.column + "^"
        super().__init__(
            f"invalid expression: {error.reason} (column {error.column})\n  {shown}\n  {pointer}",
            node=node,
            field=field,
        )


@runtime_checkable
class PluginCatalog(Protocol):
    """What :func:`validate` needs from a plugin registry: membership and the passthrough flag."""

    def __contains__(self, name: object) -> bool: ...

    def is_passthrough(self, name: str) -> bool: ...


class SimplePluginCatalog:
    """A :class:`PluginCatalog` from a mapping ``plugin name -> passthrough flag``.

    ``SimplePluginCatalog({"extract": False, "gate": True})`` knows two plugins, ``gate`` being a
    routing (passthrough) node. ``is_passthrough`` is False for names it does not know.
    """

    __slots__ = ("_plugins",)

    def __init__(self, plugins: Mapping[str, bool] | None = None) -> None:
        self._plugins: Mapping[str, bool] = MappingProxyType(
            {str(name): bool(flag) for name, flag in (plugins or {}).items()}
        )

    def __contains__(self, name: object) -> bool:
        return name in self._plugins

    def __iter__(self) -> Iterator[str]:
        return iter(self._plugins)

    def __len__(self) -> int:
        return len(self._plugins)

    def __repr__(self) -> str:
        return f"SimplePluginCatalog({dict(self._plugins)!r})"

    def is_passthrough(self, name: str) -> bool:
        """True when ``name`` is registered as a passthrough (routing) plugin."""
        return self._plugins.get(name, False)


@attrs.frozen(eq=False)
class CompiledBinding:
    """A binding with its expressions compiled once, at validation time."""

    binding: Binding
    expression: Expression | None
    """The compiled :class:`~interlock.model.ExpressionSource`; None for other sources."""
    when: Expression | None
    """The compiled ``when`` gate; None when the binding is unconditional."""


@attrs.frozen(eq=False)
class Topology:
    """A validated pipeline with its graph precomputed; nodes are addressed by index.

    Index ``i`` is the node's position in ``pipeline.nodes``. ``pipeline`` is the validated
    pipeline with ``Node.passthrough`` resolved to a bool on every node.
    """

    pipeline: Pipeline
    slugs: tuple[str, ...]
    index: Mapping[str, int]
    parents: tuple[tuple[int, ...], ...]
    """Per node, the indices of its ``depends_on`` in declaration order."""
    children: tuple[tuple[int, ...], ...]
    """Per node, the indices of the nodes depending on it, ascending."""
    order: tuple[int, ...]
    """Topological order; among ready nodes the one declared first comes first."""
    roots: tuple[int, ...]
    passthrough: tuple[bool, ...]
    bindings: tuple[tuple[CompiledBinding, ...], ...]

    def node(self, i: int) -> Node:
        """The node at index ``i`` (passthrough resolved)."""
        return self.pipeline.nodes[i]

    def descendants(self, i: int) -> frozenset[int]:
        """Indices of every node downstream of ``i``, ``i`` itself excluded. O(reached edges)."""
        seen: set[int] = set()
        stack = list(self.children[i])
        while stack:
            j = stack.pop()
            if j not in seen:
                seen.add(j)
                stack.extend(self.children[j])
        return frozenset(seen)


def validate(
    pipeline: Pipeline | Mapping[str, Any], plugins: PluginCatalog | None = None
) -> Topology:
    """Check a whole pipeline and compile it into a :class:`Topology`.

    ``pipeline`` is a :class:`~interlock.model.Pipeline` or its dict form (YAML/JSON), which is
    read with :meth:`Pipeline.from_dict` first. With ``plugins``, every node's plugin must be in
    the catalog and an unset ``Node.passthrough`` is taken from it; without, it defaults to False.

    Raises :class:`~interlock.errors.GraphError` (``.node``, ``.field``, ``.edge`` say where) for
    any invalid definition: empty pipeline, bad or duplicate slugs, unknown, repeated or self
    dependencies, edge filters or field bindings naming a non-dependency, invalid filters,
    invalid binding names, sources or options, unknown plugins. A cycle raises
    :class:`~interlock.errors.CycleError` with ``.cycle``; an expression that does not compile
    raises :class:`ExpressionGraphError`. Nothing else escapes for any input.
    """
    fresh = False  # nodes validate() builds itself may be resolved in place
    if not isinstance(pipeline, Pipeline):
        pipeline, fresh = Pipeline.from_dict(pipeline), True
    _check_pipeline(pipeline)
    nodes: Sequence[Node] = pipeline.nodes
    slugs, index = _check_slugs(nodes)
    parents, children = _link(nodes, index)
    order = _topological_order(slugs, parents, children)
    resolved: list[Node] = []
    compiled: list[tuple[CompiledBinding, ...]] = []
    for node in nodes:
        deps = frozenset(node.depends_on)
        _check_options(node)
        if plugins is not None and node.plugin not in plugins:
            _fail(f"unknown plugin {node.plugin!r}", node.slug, "plugin")
        _check_filters(node, deps)
        compiled.append(_compile_bindings(node, deps))
        if node.passthrough is None:
            flag = plugins.is_passthrough(node.plugin) if plugins is not None else False
            node = _with_passthrough(node, bool(flag), fresh)
        resolved.append(node)
    return Topology(
        pipeline=pipeline if fresh else attrs.evolve(pipeline, nodes=resolved),
        slugs=slugs,
        index=MappingProxyType(index),
        parents=parents,
        children=children,
        order=order,
        roots=tuple(i for i, ps in enumerate(parents) if not ps),
        passthrough=tuple(bool(n.passthrough) for n in resolved),
        bindings=tuple(compiled),
    )


def _with_passthrough(node: Node, flag: bool, fresh: bool) -> Node:
    """``attrs.evolve(node, passthrough=flag)``, without evolve's walk over the fields: this
    runs for every node of every validated pipeline (every ``start_run``). A ``fresh`` node —
    just read from the dict form by :func:`validate` itself, so no one else holds it — is
    resolved in place, as its ``__init__`` would have set it; others are rebuilt positionally
    (the converters still run)."""
    if type(node) is not Node:  # a subclass may add fields
        return attrs.evolve(node, passthrough=flag)
    if fresh:
        object.__setattr__(node, "passthrough", flag)
        return node
    return Node(node.slug, node.plugin, node.depends_on, node.fan_mode, node.edge_filters,
                node.bindings, node.config, node.retry, node.timeout_seconds, node.trigger_rule,
                node.group_join, node.correlation, flag)


def _fail(
    message: str, node: str | None, field: str | None, edge: tuple[str, str] | None = None
) -> NoReturn:
    raise GraphError(message, node=node, field=field, edge=edge)


def _check_pipeline(pipeline: Pipeline) -> None:
    if not isinstance(pipeline.name, str) or not pipeline.name:
        _fail(f"expected a non-empty string, got {pipeline.name!r}", None, "name")
    if not isinstance(pipeline.failure_policy, FailurePolicy):
        _fail(f"expected a FailurePolicy, got {pipeline.failure_policy!r}", None, "failure_policy")
    if not isinstance(pipeline.description, str):
        _fail("expected a string", None, "description")
    if not pipeline.nodes:
        _fail(f"pipeline {pipeline.name!r} has no nodes", None, "nodes")


def _check_slugs(nodes: Sequence[Node]) -> tuple[tuple[str, ...], dict[str, int]]:
    index: dict[str, int] = {}
    for i, node in enumerate(nodes):
        if not isinstance(node, Node):
            _fail(f"nodes[{i}] is a {type(node).__name__}, not a Node", None, f"nodes[{i}]")
        slug: object = node.slug
        if not isinstance(slug, str) or not _SLUG.fullmatch(slug):
            _fail(
                f"invalid slug {slug!r} at nodes[{i}]: use only letters, digits, '_' and '-'",
                slug if isinstance(slug, str) else None,
                "slug",
            )
        if slug in RESERVED_SLUGS:
            _fail(f"slug {slug!r} at nodes[{i}] is reserved (input, config, run)", slug, "slug")
        if slug in index:
            _fail(f"duplicate slug {slug!r} at nodes[{index[slug]}] and nodes[{i}]", slug, "slug")
        index[slug] = i
    return tuple(index), index


def _link(
    nodes: Sequence[Node], index: Mapping[str, int]
) -> tuple[tuple[tuple[int, ...], ...], tuple[tuple[int, ...], ...]]:
    """Resolve ``depends_on`` to indices: parents in declaration order, children ascending."""
    parents: list[tuple[int, ...]] = []
    children: list[list[int]] = [[] for _ in nodes]
    for i, node in enumerate(nodes):
        slug = node.slug
        mine: list[int] = []
        seen: set[int] = set()
        for k, dep in enumerate(node.depends_on):
            if not isinstance(dep, str):
                _fail(f"depends_on[{k}] is not a slug: {dep!r}", slug, "depends_on")
            edge = (dep, slug)
            if dep == slug:
                _fail(f"node {slug!r} depends on itself", slug, "depends_on", edge)
            j = index.get(dep)
            if j is None:
                _fail(f"unknown dependency {dep!r} (depends_on[{k}])", slug, "depends_on", edge)
            if j in seen:
                _fail(f"repeated dependency {dep!r} (depends_on[{k}])", slug, "depends_on", edge)
            seen.add(j)
            mine.append(j)
            children[j].append(i)
        parents.append(tuple(mine))
    return tuple(parents), tuple(tuple(c) for c in children)


def _topological_order(
    slugs: Sequence[str],
    parents: Sequence[Sequence[int]],
    children: Sequence[Sequence[int]],
) -> tuple[int, ...]:
    """Kahn's algorithm taking the earliest-declared ready node; CycleError if stuck."""
    if all(p < i for i, ps in enumerate(parents) for p in ps):
        return tuple(range(len(slugs)))  # declared in dependency order: that order wins
    remaining = [len(ps) for ps in parents]
    ready = [i for i, r in enumerate(remaining) if not r]  # ascending, hence a valid heap
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for child in children[i]:
            remaining[child] -= 1
            if not remaining[child]:
                heapq.heappush(ready, child)
    if len(order) < len(slugs):
        raise CycleError(_find_cycle(slugs, parents, remaining))
    return tuple(order)


def _find_cycle(
    slugs: Sequence[str], parents: Sequence[Sequence[int]], remaining: Sequence[int]
) -> list[str]:
    """A cycle among the nodes Kahn could not order (each has an unordered parent).

    Walk from the earliest such node to its first unordered parent until a node repeats; the
    repeat closes a cycle. Reported downstream-wards, starting at its earliest-declared node.
    """
    position: dict[int, int] = {}
    path: list[int] = []
    i = next(j for j, r in enumerate(remaining) if r)
    while i not in position:
        position[i] = len(path)
        path.append(i)
        i = next(p for p in parents[i] if remaining[p])
    loop = path[position[i] :][::-1]
    start = loop.index(min(loop))
    loop = loop[start:] + loop[:start]
    return [slugs[j] for j in loop] + [slugs[loop[0]]]


def _is_number(value: object, minimum: float, *, strict: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and (value > minimum if strict else value >= minimum)


def _check_options(node: Node) -> None:
    """Per-node options; mostly guards Python-built nodes the dict reader would have refused."""
    slug = node.slug
    if not isinstance(node.plugin, str) or not node.plugin:
        _fail(f"expected a non-empty plugin name, got {node.plugin!r}", slug, "plugin")
    if not isinstance(node.fan_mode, FanMode):
        _fail(f"expected a FanMode, got {node.fan_mode!r}", slug, "fan_mode")
    if not isinstance(node.trigger_rule, TriggerRule):
        _fail(f"expected a TriggerRule, got {node.trigger_rule!r}", slug, "trigger_rule")
    if node.group_join not in ("outer", "inner"):
        _fail(f"invalid value {node.group_join!r} (allowed: inner, outer)", slug, "group_join")
    if node.group_join == "inner" and node.fan_mode is not FanMode.GROUPED:
        _fail(
            f"group_join 'inner' needs fan_mode 'grouped' (fan_mode is {node.fan_mode.value!r})",
            slug,
            "group_join",
        )
    if node.correlation not in ("inherit", "new"):
        _fail(f"invalid value {node.correlation!r} (allowed: inherit, new)", slug, "correlation")
    if node.passthrough is not None and not isinstance(node.passthrough, bool):
        _fail(f"expected true, false or unset, got {node.passthrough!r}", slug, "passthrough")
    timeout = node.timeout_seconds
    if timeout is not None and not _is_number(timeout, 0, strict=True):
        _fail(
            f"timeout_seconds must be a finite number > 0, got {timeout!r}", slug, "timeout_seconds"
        )
    if not isinstance(node.config, dict) or not all(isinstance(k, str) for k in node.config):
        _fail("expected a mapping with string keys", slug, "config")
    retry = node.retry
    if retry is DEFAULT_RETRY:
        return  # the shared default: valid by construction, and the fields are checked last
    if not isinstance(retry, RetryPolicy):
        _fail(f"expected a RetryPolicy, got {retry!r}", slug, "retry")
    attempts = retry.max_attempts
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        _fail(f"expected an integer >= 1, got {attempts!r}", slug, "retry.max_attempts")
    for name, minimum in (
        ("backoff_seconds", 0),
        ("backoff_multiplier", 1),
        ("max_backoff_seconds", 0),
    ):
        value = getattr(retry, name)
        if not _is_number(value, minimum):
            _fail(f"expected a finite number >= {minimum}, got {value!r}", slug, f"retry.{name}")


def _check_filters(node: Node, deps: frozenset[str]) -> None:
    slug = node.slug
    for key, edge_filter in node.edge_filters.items():
        where = f"edge_filters.{key}"
        edge = (str(key), slug)
        if key not in deps:
            _fail(
                f"edge filter for {key!r}, which is not a dependency of {slug!r}", slug, where, edge
            )
        if not isinstance(edge_filter, EdgeFilter):
            _fail(f"expected an EdgeFilter, got {type(edge_filter).__name__}", slug, where, edge)
        try:
            edge_filter.validate(where=where)
        except GraphError as exc:
            _locate(exc, slug, where, edge)
            raise


def _locate(exc: GraphError, node: str, field: str, edge: tuple[str, str]) -> None:
    """Fill in the location an error raised below the node level could not know."""
    if exc.node is not None:
        return
    exc.node = node
    exc.field = exc.field or field
    exc.edge = exc.edge or edge
    exc.args = (exc._format(exc.reason),)


def _compile(text: object, namespaces: frozenset[str], node: str, field: str) -> Expression:
    if not isinstance(text, str):
        _fail(f"expected expression text, got {text!r}", node, field)
    try:
        return compile_expression(text, namespaces=namespaces)
    except ExpressionError as exc:
        raise ExpressionGraphError(exc, text, node=node, field=field) from exc


def _compile_bindings(node: Node, deps: frozenset[str]) -> tuple[CompiledBinding, ...]:
    if not node.bindings:
        return ()
    slug = node.slug
    namespaces = deps | _BUILTIN_NAMESPACES
    names: set[str] = set()
    out: list[CompiledBinding] = []
    for binding in node.bindings:
        if not isinstance(binding, Binding):
            _fail(f"expected a Binding, got {type(binding).__name__}", slug, "bindings")
        name: object = binding.name
        if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
            _fail(
                f"binding name {name!r} is not an identifier (letters, digits, '_')",
                slug,
                f"bindings.{name}",
            )
        field = f"bindings.{name}"
        if name in names:
            _fail(f"duplicate binding name {name!r}", slug, field)
        names.add(name)
        source = binding.source
        expression = None
        if isinstance(source, FieldSource):
            if not isinstance(source.node, str) or source.node not in deps:
                _fail(
                    f"binding reads node {source.node!r}, which is not a dependency of {slug!r}",
                    slug,
                    field,
                    (str(source.node), slug),
                )
            if not isinstance(source.key, str) or not source.key:
                _fail(f"expected a non-empty key, got {source.key!r}", slug, f"{field}.key")
        elif isinstance(source, InputSource):
            if not isinstance(source.key, str) or not source.key:
                _fail(f"expected a non-empty input key, got {source.key!r}", slug, f"{field}.input")
            if not isinstance(source.required, bool) or not isinstance(source.has_default, bool):
                _fail("required and has_default must be true or false", slug, field)
        elif isinstance(source, ExpressionSource):
            expression = _compile(source.expression, namespaces, slug, field)
        elif not isinstance(source, LiteralSource):
            _fail(f"unknown binding source {type(source).__name__}", slug, field)
        when = None
        if binding.when is not None:
            if binding.when == "":
                _fail(
                    "empty 'when' expression (omit it for an unconditional binding)",
                    slug,
                    f"{field}.when",
                )
            when = _compile(binding.when, namespaces, slug, f"{field}.when")
        out.append(CompiledBinding(binding, expression, when))
    return tuple(out)
