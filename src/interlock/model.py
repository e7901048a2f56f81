"""The pipeline model: frozen values built from Python or from plain dicts (YAML/JSON).

Nothing here validates the *graph* (see :mod:`interlock.graph`); ``from_dict`` only checks the
shape of each field and rejects unknown keys, naming the node and field at fault.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, TypeAlias

import attrs

from interlock.errors import GraphError
from interlock.filters import EdgeFilter
from interlock.jsonvalues import JSON

__all__ = [
    "Binding",
    "BindingSource",
    "ExpressionSource",
    "FailurePolicy",
    "FanMode",
    "FieldSource",
    "InputSource",
    "LiteralSource",
    "Node",
    "Pipeline",
    "RetryPolicy",
    "TriggerRule",
]

GroupJoin: TypeAlias = Literal["outer", "inner"]
Correlation: TypeAlias = Literal["inherit", "new"]


class FanMode(enum.Enum):
    """How a node turns the artifacts reaching it into tasks."""

    SINGLE = "single"
    AGGREGATE = "aggregate"
    GROUPED = "grouped"


class TriggerRule(enum.Enum):
    """When a node whose upstream has settled runs (see docs/concepts.md)."""

    ALL_SUCCESS = "all_success"
    ALL_DONE = "all_done"
    NONE_FAILED = "none_failed"
    ONE_SUCCESS = "one_success"


class FailurePolicy(enum.Enum):
    """What a failed node does to the run."""

    FAIL_FAST = "fail_fast"
    CONTINUE = "continue"


@attrs.frozen
class RetryPolicy:
    """Attempts per task and exponential backoff between them.

    ``max_attempts`` counts every attempt, the first included (1 = no retry).
    """

    max_attempts: int = 1
    backoff_seconds: float = 0.0
    backoff_multiplier: float = 2.0
    max_backoff_seconds: float = 3600.0

    def delay(self, failed_attempts: int) -> float:
        """Seconds to wait before the next attempt after ``failed_attempts`` failures (>= 1)."""
        raw = self.backoff_seconds * self.backoff_multiplier ** max(0, failed_attempts - 1)
        return float(min(raw, self.max_backoff_seconds))


DEFAULT_RETRY = RetryPolicy()
"""The one default policy instance every Node without ``retry`` shares (validation and the
dict form recognise it by identity, skipping field checks)."""


@attrs.frozen
class FieldSource:
    """A field of the upstream ``node``'s artifacts (``key`` may be a dotted path)."""

    node: str
    key: str


@attrs.frozen
class LiteralSource:
    """A constant JSON value."""

    value: JSON


@attrs.frozen
class InputSource:
    """A key of the run input, with an optional default; ``required`` fails the node if absent.

    ``has_default`` defaults to ``default is not None``; pass it explicitly for a null default.
    """

    key: str
    default: JSON = None
    has_default: bool = attrs.field(
        default=attrs.Factory(lambda self: self.default is not None, takes_self=True)
    )
    required: bool = False


@attrs.frozen
class ExpressionSource:
    """An expression in the placeholder language (docs/expressions.md)."""

    expression: str


BindingSource: TypeAlias = FieldSource | LiteralSource | InputSource | ExpressionSource


@attrs.frozen
class Binding:
    """A named task parameter; set only when ``when`` (an expression) is truthy or absent."""

    name: str
    source: BindingSource
    when: str | None = None


def _dict_copy(value: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(value or {})


def _filters(value: Mapping[str, EdgeFilter] | None) -> dict[str, EdgeFilter]:
    return dict(value or {})


# Typed converters: mypy's attrs plugin cannot infer the element type through a bare ``tuple``.
def _slugs(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _binding_tuple(value: Iterable[Binding]) -> tuple[Binding, ...]:
    return tuple(value)


def _node_tuple(value: Iterable[Node]) -> tuple[Node, ...]:
    return tuple(value)


@attrs.frozen
class Node:
    """One step of a pipeline. Equality covers every semantic field."""

    slug: str
    plugin: str
    depends_on: tuple[str, ...] = attrs.field(default=(), converter=_slugs)
    fan_mode: FanMode = FanMode.SINGLE
    edge_filters: dict[str, EdgeFilter] = attrs.field(factory=dict, converter=_filters)
    bindings: tuple[Binding, ...] = attrs.field(default=(), converter=_binding_tuple)
    config: dict[str, JSON] = attrs.field(factory=dict, converter=_dict_copy)
    retry: RetryPolicy = DEFAULT_RETRY
    timeout_seconds: float | None = None
    trigger_rule: TriggerRule = TriggerRule.ALL_SUCCESS
    group_join: GroupJoin = "outer"
    correlation: Correlation = "inherit"
    passthrough: bool | None = None
    """Routing node; None = ask the plugin registry at validation time (default False)."""

    __hash__ = None  # type: ignore[assignment]  # holds dicts: compare, never hash

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Node:
        """Build a node from its dict form; unknown keys and bad values raise GraphError."""
        from interlock._model_dicts import node_from_dict

        return node_from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """The dict form; ``Node.from_dict(n.to_dict()) == n``."""
        from interlock._model_dicts import node_to_dict

        return node_to_dict(self)


@attrs.frozen
class Pipeline:
    """A named list of nodes plus the run failure policy."""

    name: str
    nodes: tuple[Node, ...] = attrs.field(converter=_node_tuple)
    failure_policy: FailurePolicy = FailurePolicy.FAIL_FAST
    description: str = ""

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Pipeline:
        """Build a pipeline from its dict form (what YAML/JSON give)."""
        from interlock._model_dicts import pipeline_from_dict

        return pipeline_from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """The dict form; ``Pipeline.from_dict(p.to_dict()) == p``."""
        from interlock._model_dicts import pipeline_to_dict

        return pipeline_to_dict(self)

    def node(self, slug: str) -> Node:
        """The node named ``slug``; GraphError if there is none."""
        for node in self.nodes:
            if node.slug == slug:
                return node
        raise GraphError("no such node", node=slug)


def as_sequence(value: Any, *, node: str | None, field: str) -> Sequence[Any]:
    """``value`` as a list, or GraphError naming the field."""
    if isinstance(value, list | tuple):
        return value
    raise GraphError(f"expected a list, got {type(value).__name__}", node=node, field=field)
