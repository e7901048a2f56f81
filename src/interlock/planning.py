"""Planning: decide, purely, what a node whose upstream has settled does.

Given the compiled topology, the node, a lookup of upstream node states/artifacts and the run
input, :func:`plan_node` returns a :class:`Settle` (FILTERED, SKIPPED or FAILED with a reason) or
a :class:`Launch` with one :class:`TaskPlan` per task, in a deterministic order. No I/O: the
``lookup`` callable is the only source of upstream facts (the kernel backs it with the store,
tests with dicts).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import attrs

from interlock.errors import ExpressionError
from interlock.filters import EdgeFilter
from interlock.graph import CompiledBinding, Topology
from interlock.jsonvalues import JSON, MISSING, get_path, truthy
from interlock.limits import DEFAULT_LIMITS, Limits
from interlock.model import (
    ExpressionSource,
    FanMode,
    FieldSource,
    InputSource,
    LiteralSource,
    Node,
    TriggerRule,
)
from interlock.packed import ArtifactTexts, PackedArtifacts, PublishedView, _Lazy
from interlock.records import Artifact, OriginMode
from interlock.states import NodeState

__all__ = ["REF_MIN_ARTIFACTS", "Launch", "PlanError", "Settle", "TaskPlan", "Upstream",
           "plan_node", "resolve_refs"]

REF_MIN_ARTIFACTS = 1000
"""An aggregate task whose input holds at least this many artifacts is persisted with its
input by reference (:attr:`TaskPlan.refs`) instead of one copy of every artifact."""

ArtifactRef = list[int | list[list[int]]]
"""``[node_index, generation, count, [[start, stop], ...]]``: the artifacts at positions
``start:stop`` of that node generation's artifacts (``count`` of them when planned), in order."""


@attrs.frozen
class Upstream:
    """What planning needs to know about one upstream node (current generation)."""

    state: NodeState
    artifacts: Sequence[Artifact] = ()


@attrs.frozen
class TaskPlan:
    """One task to create: its inputs per dependency slug, resolved bindings and correlation."""

    seq: int
    inputs: Mapping[str, Sequence[Artifact]]
    bindings: Mapping[str, JSON]
    origin: str | None
    origin_mode: OriginMode
    refs: dict[str, list[ArtifactRef]] | None = None
    """Set for a large aggregate: ``inputs`` as references into the stored artifacts of the
    nodes they came from, per dependency slug (see :func:`resolve_refs`). The task's persisted
    plan then holds these instead of the artifacts; ``inputs`` still holds them in memory."""


@attrs.frozen
class Settle:
    """The node settles without tasks."""

    state: NodeState
    reason: str | None = None


@attrs.frozen
class Launch:
    """The node launches ``count`` tasks (at least one), planned on demand: ``plans(start,
    stop)`` gives those of seq ``start`` to ``stop - 1``, so a wide launch is planned batch by
    batch, never held whole (every check that could fail the node has run already)."""

    count: int
    plans: Callable[[int, int], Sequence[TaskPlan]] = attrs.field(eq=False, repr=False)
    release: Callable[[int], None] = attrs.field(default=lambda stop: None, eq=False,
                                                 repr=False)
    """``release(stop)``: the plans before ``stop`` are written and will not be asked for
    again; planning drops what it held for them (a wide fan-out's artifacts)."""

    @property
    def tasks(self) -> tuple[TaskPlan, ...]:
        """Every task plan, in seq order (the whole launch at once)."""
        return tuple(self.plans(0, self.count))


class PlanError(Exception):
    """Internal: a binding failed; becomes ``Settle(FAILED, reason)``."""


Lookup = Callable[[int], Upstream]


def plan_node(
    topology: Topology,
    index: int,
    lookup: Lookup,
    run_input: Mapping[str, JSON],
    limits: Limits = DEFAULT_LIMITS,
) -> Settle | Launch:
    """Decide the node's fate once every parent has settled (see docs/concepts.md)."""
    node = topology.node(index)
    parents = topology.parents[index]
    states = {p: lookup(p).state for p in parents}
    blocked = _trigger_blocks(topology, node, states)
    if blocked is not None:
        return Settle(NodeState.SKIPPED, blocked)
    inputs: dict[str, Sequence[Artifact]] = {}
    for parent in parents:
        slug = topology.slugs[parent]
        reaching = _collect(topology, parent, lookup)
        edge_filter = node.edge_filters.get(slug)
        passed = reaching if edge_filter is None else _filtered(reaching, edge_filter)
        if (reaching and not passed and node.fan_mode is FanMode.AGGREGATE
                and node.trigger_rule is TriggerRule.ALL_SUCCESS):
            # the merged input would be incomplete: the aggregate is dead, and that cascades
            return Settle(NodeState.SKIPPED, f"edge filter on {slug!r} rejected every artifact")
        inputs[slug] = passed
    shapes = _shape(node, inputs, bool(parents))
    if not shapes:
        return Settle(NodeState.FILTERED, "no artifact reached the node")
    if len(shapes) > limits.max_tasks_per_node:
        return Settle(NodeState.FAILED, f"limit 'max_tasks_per_node' exceeded: {len(shapes)} > "
                                        f"{limits.max_tasks_per_node}")
    # only an aggregate's plans read the lookup again (for refs): other launches do not keep
    # the upstream artifacts alive beyond the shapes that hold them
    ref_lookup = lookup if node.fan_mode is FanMode.AGGREGATE else None

    def plans(start: int, stop: int) -> list[TaskPlan]:
        out = []
        for seq in range(start, stop):
            task_inputs, origin, mode = shapes[seq]
            out.append(TaskPlan(seq, task_inputs, _bindings(topology, index, node, task_inputs,
                                                            run_input, limits), origin, mode,
                                None if ref_lookup is None else _refs(task_inputs, ref_lookup)))
        return out

    if topology.bindings[index]:
        # a binding may fail the node: resolve them all now, before anything is written
        try:
            planned = tuple(plans(0, len(shapes)))
        except PlanError as exc:
            return Settle(NodeState.FAILED, str(exc))
        return Launch(len(planned), lambda start, stop: planned[start:stop])
    if isinstance(shapes, _SingleShapes):
        return Launch(len(shapes), plans, shapes.release)
    return Launch(len(shapes), plans)


def _refs(inputs: Mapping[str, Sequence[Artifact]], lookup: Lookup
          ) -> dict[str, list[ArtifactRef]] | None:
    """``inputs`` as references (None below :data:`REF_MIN_ARTIFACTS`): per slug, per node the
    artifacts came from (in order of first appearance), the runs of positions they hold in
    that node's artifact list. Every input list is a seq-ordered subsequence of its nodes'
    lists (planning filters, never reorders), so a two-pointer walk finds the runs."""
    if sum(len(arts) for arts in inputs.values()) < REF_MIN_ARTIFACTS:
        return None
    out: dict[str, list[ArtifactRef]] = {}
    for slug, arts in inputs.items():
        if arts and isinstance(arts, _Lazy):
            first = arts[0]
            if lookup(first.node_index).artifacts is arts:
                # every artifact of one node, kept as read (packed): one run, nothing to walk
                out[slug] = [[first.node_index, first.generation, len(arts), [[0, len(arts)]]]]
                continue
        refs: list[ArtifactRef] = []
        for source in dict.fromkeys(a.node_index for a in arts):
            stored = lookup(source).artifacts
            generation = stored[0].generation if stored else 0
            runs: list[list[int]] = []
            position = 0
            for artifact in arts:
                if artifact.node_index != source:
                    continue
                while stored[position].seq != artifact.seq:  # IndexError: not a subsequence
                    position += 1
                if runs and runs[-1][1] == position:
                    runs[-1][1] = position + 1
                else:
                    runs.append([position, position + 1])
                position += 1
            refs.append([source, generation, len(stored), runs])
        out[slug] = refs
    return out


def resolve_refs(refs: Mapping[str, Sequence[ArtifactRef]],
                 artifacts: Callable[[int, int], Sequence[Artifact]]
                 ) -> dict[str, Sequence[Artifact]]:
    """The inputs :attr:`TaskPlan.refs` stand for, read back with ``artifacts(node_index,
    generation)`` (the store's ``get_artifacts``): what planning saw, in the same order.
    ValueError if a referenced node no longer has the artifacts it had when planned. A node
    read packed (:class:`~interlock.packed.PackedArtifacts`) gives a packed input."""
    out: dict[str, Sequence[Artifact]] = {}
    for slug, refs_of_slug in refs.items():
        parts: list[Iterator[Artifact]] = []
        packed = False
        for source, generation, count, runs in refs_of_slug:
            assert isinstance(source, int) and isinstance(generation, int)
            assert isinstance(runs, list)
            stored = artifacts(source, generation)
            if len(stored) != count:
                raise ValueError(f"node {source} generation {generation} has {len(stored)} "
                                 f"artifacts, {count} when the task was planned")
            if len(refs_of_slug) == 1 and runs == [[0, count]] and \
                    isinstance(stored, (list, PackedArtifacts, ArtifactTexts)):
                out[slug] = stored  # the common case: every artifact of one node, no copy
                break
            packed = packed or isinstance(stored, _Lazy)
            parts.append(_positions(stored, runs))
        else:
            # each part is in seq order (positions ascend in a seq-ordered list): merging them
            # gives the seq order planning saw, without holding every record to sort them
            merged = parts[0] if len(parts) == 1 else heapq.merge(*parts, key=_by_seq)
            out[slug] = PackedArtifacts(merged) if packed else list(merged)
    return out


def _positions(stored: Sequence[Artifact], runs: list[list[int]]) -> Iterator[Artifact]:
    for start, stop in runs:
        for position in range(start, stop):
            yield stored[position]


def _by_seq(artifact: Artifact) -> int:
    return artifact.seq


def _trigger_blocks(
    topology: Topology, node: Node, states: Mapping[int, NodeState]
) -> str | None:
    """The reason the trigger rule skips the node, or None if it may run."""
    completed = NodeState.COMPLETED
    for state in states.values():
        if state is not completed:
            break
    else:
        return None  # every parent completed (or none): no rule skips; the common case
    rule = node.trigger_rule
    failed = [topology.slugs[p] for p, s in states.items() if s is NodeState.FAILED]
    skipped = [topology.slugs[p] for p, s in states.items() if s is NodeState.SKIPPED]
    if rule is TriggerRule.ALL_DONE:
        return None
    if rule is TriggerRule.ONE_SUCCESS:
        if states and not any(s is NodeState.COMPLETED for s in states.values()):
            return "no upstream completed (trigger rule one_success)"
        return None
    if failed:
        return f"upstream {failed[0]!r} failed (trigger rule {rule.value})"
    if rule is TriggerRule.ALL_SUCCESS and skipped:
        return f"upstream {skipped[0]!r} was skipped (trigger rule all_success)"
    return None


def _collect(topology: Topology, parent: int, lookup: Lookup) -> Sequence[Artifact]:
    """Artifacts a dependency supplies, walking up through empty passthrough nodes."""
    upstream = lookup(parent)
    if upstream.state is not NodeState.COMPLETED:
        return []
    if upstream.artifacts or not topology.passthrough[parent]:
        arts = upstream.artifacts
        # a lazy sequence is read-only and compact: kept as it is, not copied into records
        return arts if isinstance(arts, _Lazy) else list(arts)
    # Passthrough walk: a routing node that completed empty hands over what reached it: its
    # own parents' artifacts, through its own edge filters; the first level with any wins.
    frontier = [parent]
    seen = {parent}
    while frontier:
        found: list[Artifact] = []
        walk_on: list[int] = []
        for gate in frontier:
            gate_node = topology.node(gate)
            for grand in topology.parents[gate]:
                up = lookup(grand)
                if up.state is not NodeState.COMPLETED:
                    continue
                edge = gate_node.edge_filters.get(topology.slugs[grand])
                found.extend(_passing(up.artifacts, edge))
                if not up.artifacts and topology.passthrough[grand] and grand not in seen:
                    seen.add(grand)
                    walk_on.append(grand)
        if found:
            return sorted(found, key=lambda a: a.seq)
        frontier = walk_on
    return []


def _filtered(reaching: Sequence[Artifact], edge_filter: EdgeFilter) -> Sequence[Artifact]:
    """The artifacts ``edge_filter`` passes; packed again when they came packed."""
    passed = (a for a in reaching if edge_filter.matches(a.fields))
    return PackedArtifacts(passed) if isinstance(reaching, _Lazy) else list(passed)


def _passing(artifacts: Sequence[Artifact], edge: EdgeFilter | None) -> list[Artifact]:
    return list(artifacts) if edge is None else [a for a in artifacts if edge.matches(a.fields)]


Shape = tuple[dict[str, Sequence[Artifact]], str | None, OriginMode]


def _shape(node: Node, inputs: dict[str, Sequence[Artifact]], has_parents: bool
           ) -> Sequence[Shape]:
    """Split the inputs into tasks per fan mode: (inputs, origin, origin mode) each."""
    new = node.correlation == "new"
    if not has_parents:
        return [({}, None, "self")]
    any_input = any(inputs.values())
    if not any_input:
        if node.trigger_rule is TriggerRule.ALL_DONE:
            # all_done runs even when nothing reached it; lists are empty, never null
            return [({slug: [] for slug in inputs}, None, "self" if new else "broadcast")]
        return []
    if node.fan_mode is FanMode.AGGREGATE:
        return [(inputs, None, "self" if new else "broadcast")]
    if node.fan_mode is FanMode.SINGLE:
        return _SingleShapes(inputs, "self" if new else "inherit")
    return _groups(node, inputs, new)


class _SingleShapes(Sequence[Shape]):
    """The tasks of a single-mode node, one per artifact in seq order, each shape built when
    asked for (a wide fan-out holds its artifacts, not a task per artifact)."""

    def __init__(self, inputs: dict[str, Sequence[Artifact]], mode: OriginMode) -> None:
        self._mode = mode
        self._slug: str | None = None
        self._pairs: list[tuple[Artifact, str]] | None = None
        self._arts: Sequence[Artifact] = []
        self._released = 0
        if len(inputs) == 1:  # one dependency: no filtering of empty lists to do
            filled = list(inputs.items())
        else:
            filled = [(slug, arts) for slug, arts in inputs.items() if arts]
        if len(filled) == 1 and (len(filled[0][1]) < 2 or _ordered(filled[0][1])):
            self._slug, self._arts = filled[0]  # the common case: one dependency, in order
        else:
            self._pairs = sorted(((a, slug) for slug, arts in filled for a in arts),
                                 key=lambda pair: pair[0].seq)

    def __len__(self) -> int:
        return len(self._arts) if self._pairs is None else len(self._pairs)

    def release(self, stop: int) -> None:
        """Forget the artifacts of the shapes before ``stop`` (they are not asked for again)."""
        held: Sequence[Any] = self._arts if self._pairs is None else self._pairs
        if isinstance(held, PublishedView):
            # a completion's outputs, which the kernel made and owns: let them go as written
            held.forget(stop)
            return
        if not isinstance(held, list):
            return  # another lazy sequence (read-only): compact already, nothing to drop
        for k in range(self._released, min(stop, len(held))):
            held[k] = None
        self._released = max(self._released, stop)

    def __getitem__(self, k: int) -> Shape:  # type: ignore[override]
        if self._pairs is None:
            a, slug = self._arts[k], self._slug
            assert slug is not None
        else:
            a, slug = self._pairs[k]
        return {slug: [a]}, a.origin if a.origin is not None else a.artifact_id, self._mode


def _ordered(arts: Sequence[Artifact]) -> bool:
    if isinstance(arts, (PublishedView, ArtifactTexts, PackedArtifacts)):
        # one completion's outputs, or a node generation's as a store read them (packed: by
        # the kernel from a store's read, or by the store): seq ascending by construction,
        # and checking would build every record twice
        return True
    return all(arts[i].seq < arts[i + 1].seq for i in range(len(arts) - 1))


def _groups(node: Node, inputs: dict[str, Sequence[Artifact]], new: bool) -> list[Shape]:
    """Grouped scatter-gather: one task per origin, broadcasts joined to every group.

    One pass buckets each dependency's artifacts by origin, so N groups over N artifacts cost
    O(N), not O(N^2); within a bucket artifacts keep their order.
    """
    order: dict[str, None] = {}
    for artifact in sorted((a for arts in inputs.values() for a in arts), key=lambda a: a.seq):
        if artifact.origin is not None:
            order.setdefault(artifact.origin, None)
    broadcast: dict[str, list[Artifact]] = {}
    buckets: dict[str, dict[str, list[Artifact]]] = {}
    for slug, arts in inputs.items():
        broadcast[slug] = []
        by_origin: dict[str, list[Artifact]] = {}
        for artifact in arts:
            if artifact.origin is None:
                broadcast[slug].append(artifact)
            else:
                by_origin.setdefault(artifact.origin, []).append(artifact)
        buckets[slug] = by_origin
    if not order:
        return [({**broadcast}, None, "self" if new else "broadcast")]
    shapes: list[Shape] = []
    for group in order:
        per_dep: dict[str, Sequence[Artifact]] = {
            slug: buckets[slug].get(group, []) + broadcast[slug] for slug in inputs}
        if node.group_join == "inner" and not all(per_dep.values()):
            continue
        shapes.append((per_dep, group, "self" if new else "inherit"))
    return shapes


def _bindings(
    topology: Topology,
    index: int,
    node: Node,
    inputs: Mapping[str, Sequence[Artifact]],
    run_input: Mapping[str, JSON],
    limits: Limits,
) -> dict[str, JSON]:
    """Resolve every binding of one task; a failure raises PlanError naming the binding."""
    compiled_bindings = topology.bindings[index]
    if not compiled_bindings:
        return {}  # called once per task: skip building the resolver closure
    single = node.fan_mode is FanMode.SINGLE

    def resolve(namespace: str, path: str) -> JSON:
        if namespace == "input":
            return get_path(dict(run_input), path)
        if namespace == "config":
            return get_path(node.config, path)
        values = [get_path(a.fields, path) for a in inputs.get(namespace, ())]
        if single:
            return values[0] if values else MISSING
        return [None if v is MISSING else v for v in values]

    out: dict[str, JSON] = {}
    for compiled in compiled_bindings:
        name = compiled.binding.name
        try:
            if compiled.when is not None and not truthy(
                compiled.when.evaluate(resolve, limits.expression)
            ):
                continue
            out[name] = _binding_value(compiled, resolve, run_input, limits)
        except ExpressionError as exc:
            raise PlanError(f"binding {name!r}: {exc}") from exc
    return out


def _binding_value(
    compiled: CompiledBinding,
    resolve: Callable[[str, str], Any],
    run_input: Mapping[str, JSON],
    limits: Limits,
) -> JSON:
    source = compiled.binding.source
    if isinstance(source, LiteralSource):
        return source.value
    if isinstance(source, ExpressionSource):
        assert compiled.expression is not None
        return compiled.expression.evaluate(resolve, limits.expression)
    if isinstance(source, FieldSource):
        value = resolve(source.node, source.key)
        return None if value is MISSING else value
    assert isinstance(source, InputSource)
    value = get_path(dict(run_input), source.key)
    if value is not MISSING:
        return value
    if source.required:
        raise PlanError(f"binding {compiled.binding.name!r}: required run input "
                        f"{source.key!r} is missing")
    return source.default if source.has_default else None
