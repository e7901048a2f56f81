"""Edge filters: which upstream artifacts reach a node (pure, no I/O).

A :class:`FilterRule` tests one field of an artifact's ``fields``; an :class:`EdgeFilter` combines
rules: every rule of ``rules`` must match (AND) and, when ``any_of`` is not empty, every rule of
at least one of its groups must match (OR of ANDs). An empty filter lets everything through.

Semantics:

- ``field`` is a dotted path into the fields (``meta.kind``, ``tags.0``).
- Equality is typed JSON equality: ``true``, ``1`` and ``"true"`` are three different values;
  ``1 == 1.0``.
- A missing field matches only ``neq``, ``not_in``, ``not_contains`` and ``not_exists``. A field
  present with the value ``null`` exists (and equals ``null``).
- Every ``not_…``/``neq`` operator is exactly the negation of its positive counterpart.
- ``contains``: substring for a string field (value must be a string), typed membership for a
  list field; any other field type does not contain anything.
- ``starts_with``/``ends_with``: string fields only; anything else does not match.
- ``gt``/``gte``/``lt``/``lte``: numbers numerically, strings by code point; values that cannot
  be ordered (number vs string, booleans, null…) do not match.
- ``matches``: RE2 search (linear time, see :mod:`interlock.regex`) on string fields only.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from interlock import regex
from interlock.errors import GraphError
from interlock.jsonvalues import JSON, MISSING, get_path, is_number, json_compare, json_equal

__all__ = ["EdgeFilter", "FilterOp", "FilterRule"]


class FilterOp(enum.Enum):
    """Edge filter operators."""

    EQ = "eq"
    NEQ = "neq"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"
    IN = "in"
    NOT_IN = "not_in"
    CONTAINS = "contains"
    NOT_CONTAINS = "not_contains"
    STARTS_WITH = "starts_with"
    ENDS_WITH = "ends_with"
    EXISTS = "exists"
    NOT_EXISTS = "not_exists"
    MATCHES = "matches"


_VALID_OPS = ", ".join(op.value for op in FilterOp)
_NEGATIONS = {
    FilterOp.NEQ: FilterOp.EQ,
    FilterOp.NOT_IN: FilterOp.IN,
    FilterOp.NOT_CONTAINS: FilterOp.CONTAINS,
    FilterOp.NOT_EXISTS: FilterOp.EXISTS,
}
_NO_VALUE = frozenset({FilterOp.EXISTS, FilterOp.NOT_EXISTS})
_ORDERING = {
    FilterOp.GT: lambda order: order > 0,
    FilterOp.GTE: lambda order: order >= 0,
    FilterOp.LT: lambda order: order < 0,
    FilterOp.LTE: lambda order: order <= 0,
}


def _typed_key(value: JSON) -> Any:
    """Comparison key with typed JSON equality (``True``, ``1`` and ``"1"`` all differ)."""
    if value is None:
        return ("null",)
    if isinstance(value, bool):
        return ("bool", value)
    if is_number(value):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, list):
        return ("list", tuple(_typed_key(item) for item in value))
    if isinstance(value, dict):
        return ("object", tuple(sorted((str(k), _typed_key(v)) for k, v in value.items())))
    return ("other", repr(value))


def _json_problem(value: JSON) -> str | None:
    """Why ``value`` is not JSON (None when it is)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if item is None or isinstance(item, bool | int | str):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                return f"non-finite number {item!r}"
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    return f"object key of type {type(key).__name__}"
                stack.append(child)
        else:
            return f"value of type {type(item).__name__}"
    return None


@attrs.frozen
class FilterRule:
    """``field op value``, e.g. ``FilterRule("kind", FilterOp.EQ, "video")``.

    ``value`` is unused (None) for ``exists``/``not_exists``. Equality is typed on ``value``.
    """

    field: str
    op: FilterOp
    value: JSON = attrs.field(default=None, eq=_typed_key, hash=False)

    @classmethod
    def from_dict(cls, data: Any, where: str = "rule") -> FilterRule:
        """Build and validate a rule from ``{"field": …, "op": …, "value": …}``.

        ``value`` must be present except for ``exists``/``not_exists``, where it must be absent.
        Raises :class:`GraphError` whose ``field`` is ``where`` or ``where.<key>`` (e.g.
        ``edge_filters.src.rules[0].op``); an unknown operator's message lists the valid ones.
        """
        if not isinstance(data, Mapping):
            raise GraphError(
                f"a filter rule must be an object with field, op and value; got {_kind(data)}",
                field=where,
            )
        unknown = sorted(str(key) for key in data if key not in ("field", "op", "value"))
        if unknown:
            raise GraphError(
                f"unknown key(s) in filter rule: {', '.join(unknown)} (expected field, op, value)",
                field=where,
            )
        if "field" not in data:
            raise GraphError("a filter rule needs a 'field'", field=f"{where}.field")
        if "op" not in data:
            raise GraphError(
                f"a filter rule needs an 'op'; valid operators: {_VALID_OPS}", field=f"{where}.op"
            )
        op = _parse_op(data["op"], where)
        if op in _NO_VALUE and "value" in data:
            raise GraphError(f"operator {op.value!r} takes no value", field=f"{where}.value")
        if op not in _NO_VALUE and "value" not in data:
            raise GraphError(f"operator {op.value!r} needs a 'value'", field=f"{where}.value")
        rule = cls(data["field"], op, data.get("value"))
        rule.validate(where)
        return rule

    def to_dict(self) -> dict[str, JSON]:
        """``{"field", "op", "value"}``; ``value`` omitted for ``exists``/``not_exists``."""
        out: dict[str, JSON] = {"field": self.field, "op": self.op.value}
        if self.op not in _NO_VALUE:
            out["value"] = self.value
        return out

    def validate(self, where: str = "rule") -> None:
        """Raise :class:`GraphError` (``field`` = ``where.<key>``) when the rule is invalid.

        Checks: ``field`` a non-empty dotted path; ``op`` a FilterOp; ``value`` JSON and of the
        shape the operator needs (a list for in/not_in, a number or string for gt..lte, a
        string for starts_with/ends_with, a valid RE2 pattern for matches, absent for exists).
        """
        if not isinstance(self.field, str) or not self.field or "" in self.field.split("."):
            raise GraphError(
                f"field must be a non-empty dotted path, got {self.field!r}", field=f"{where}.field"
            )
        if not isinstance(self.op, FilterOp):
            raise GraphError(
                f"unknown operator {self.op!r}; valid operators: {_VALID_OPS}",
                field=f"{where}.op",
            )
        problem = _json_problem(self.value) or self._value_problem()
        if problem:
            raise GraphError(problem, field=f"{where}.value")

    def _value_problem(self) -> str | None:
        op, value = self.op, self.value
        name = repr(op.value)
        if op in _NO_VALUE:
            return None if value is None else f"operator {name} takes no value"
        if op in (FilterOp.IN, FilterOp.NOT_IN) and not isinstance(value, list):
            return f"operator {name} needs a list value, got {_kind(value)}"
        if op in _ORDERING and not (is_number(value) or isinstance(value, str)):
            return f"operator {name} needs a number or a string, got {_kind(value)}"
        if op in (FilterOp.STARTS_WITH, FilterOp.ENDS_WITH, FilterOp.MATCHES) and not isinstance(
            value, str
        ):
            return f"operator {name} needs a string, got {_kind(value)}"
        if op is FilterOp.MATCHES:
            try:
                regex.compile_regex(value)
            except regex.RegexError as exc:
                return str(exc)
        return None

    def matches(self, fields: JSON) -> bool:
        """Whether the artifact ``fields`` satisfy this rule (see the module semantics)."""
        actual = get_path(fields, self.field)
        negated = _NEGATIONS.get(self.op)
        if negated is not None:
            return not self._positive(negated, actual)
        return self._positive(self.op, actual)

    def _positive(self, op: FilterOp, actual: JSON) -> bool:
        if actual is MISSING:
            return False
        value = self.value
        if op is FilterOp.EXISTS:
            return True
        if op is FilterOp.EQ:
            return json_equal(actual, value)
        if op is FilterOp.IN:
            return isinstance(value, list) and any(json_equal(actual, item) for item in value)
        if op is FilterOp.CONTAINS:
            if isinstance(actual, str):
                return isinstance(value, str) and value in actual
            return isinstance(actual, list) and any(json_equal(item, value) for item in actual)
        if op in _ORDERING:
            order = json_compare(actual, value)
            return order is not None and bool(_ORDERING[op](order))
        if not (isinstance(actual, str) and isinstance(value, str)):
            return False
        if op is FilterOp.STARTS_WITH:
            return actual.startswith(value)
        if op is FilterOp.ENDS_WITH:
            return actual.endswith(value)
        return self._search(value, actual)

    def _search(self, pattern: str, text: str) -> bool:
        try:
            compiled = regex.compile_regex(pattern)
        except regex.RegexError as exc:
            raise GraphError(str(exc), field="value") from exc
        try:
            return compiled.search(text) is not None
        except regex.RegexError:  # text that cannot be searched (unpaired surrogate)
            return False


def _parse_op(op: Any, where: str) -> FilterOp:
    if isinstance(op, FilterOp):
        return op
    try:
        return FilterOp(op)
    except (ValueError, TypeError):
        raise GraphError(
            f"unknown operator {op!r}; valid operators: {_VALID_OPS}", field=f"{where}.op"
        ) from None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if is_number(value):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _rules(value: Iterable[FilterRule]) -> tuple[FilterRule, ...]:
    return tuple(value)


def _groups(value: Iterable[Iterable[FilterRule]]) -> tuple[tuple[FilterRule, ...], ...]:
    return tuple(tuple(group) for group in value)


@attrs.frozen
class EdgeFilter:
    """All ``rules`` must match and, when ``any_of`` is not empty, one of its groups entirely."""

    rules: tuple[FilterRule, ...] = attrs.field(default=(), converter=_rules)
    any_of: tuple[tuple[FilterRule, ...], ...] = attrs.field(default=(), converter=_groups)

    @classmethod
    def from_dict(cls, data: Any, where: str = "filter") -> EdgeFilter:
        """Build and validate a filter from ``{"rules": [...], "any_of": [[...], ...]}``.

        A bare list of rules is accepted as ``{"rules": [...]}``. Errors are
        :class:`GraphError` whose ``field`` extends ``where`` (``where.rules[0].op``…).
        """
        if isinstance(data, list):
            data = {"rules": data}
        if not isinstance(data, Mapping):
            raise GraphError(
                f"an edge filter must be a list of rules or an object with 'rules' and "
                f"'any_of'; got {_kind(data)}",
                field=where,
            )
        unknown = sorted(str(key) for key in data if key not in ("rules", "any_of"))
        if unknown:
            raise GraphError(
                f"unknown key(s) in edge filter: {', '.join(unknown)} (expected rules, any_of)",
                field=where,
            )
        rules = [
            FilterRule.from_dict(item, f"{where}.rules[{index}]")
            for index, item in enumerate(_list(data.get("rules", []), f"{where}.rules"))
        ]
        groups = []
        for number, group in enumerate(_list(data.get("any_of", []), f"{where}.any_of")):
            here = f"{where}.any_of[{number}]"
            groups.append(
                [
                    FilterRule.from_dict(item, f"{here}[{index}]")
                    for index, item in enumerate(_list(group, here))
                ]
            )
        edge_filter = cls(rules, groups)
        edge_filter.validate(where)
        return edge_filter

    def to_dict(self) -> dict[str, JSON]:
        """``{"rules": [...]}`` plus ``"any_of"`` when it is not empty; round-trips."""
        out: dict[str, JSON] = {"rules": [rule.to_dict() for rule in self.rules]}
        if self.any_of:
            out["any_of"] = [[rule.to_dict() for rule in group] for group in self.any_of]
        return out

    def validate(self, where: str = "filter") -> None:
        """Raise :class:`GraphError` naming ``where.rules[i]…`` for the first invalid rule.

        An ``any_of`` group must not be empty (it would match everything).
        """
        for index, rule in enumerate(self.rules):
            _check_rule(rule, f"{where}.rules[{index}]")
        for number, group in enumerate(self.any_of):
            if not group:
                raise GraphError(
                    "an any_of group must hold at least one rule", field=f"{where}.any_of[{number}]"
                )
            for index, rule in enumerate(group):
                _check_rule(rule, f"{where}.any_of[{number}][{index}]")

    def matches(self, fields: JSON) -> bool:
        """Whether an artifact with these ``fields`` passes the filter."""
        if not all(rule.matches(fields) for rule in self.rules):
            return False
        return not self.any_of or any(
            all(rule.matches(fields) for rule in group) for group in self.any_of
        )


def _check_rule(rule: Any, where: str) -> None:
    if not isinstance(rule, FilterRule):
        raise GraphError(f"expected a FilterRule, got {_kind(rule)}", field=where)
    rule.validate(where)


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise GraphError(f"expected a list, got {_kind(value)}", field=where)
    return list(value)
