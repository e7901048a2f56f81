"""Compiled expressions and their evaluation under step and size budgets.

Evaluation never raises anything but :class:`ExpressionError`: resolver failures, non-JSON
resolver values, pipe errors, budget overruns and unexpected internal failures are all reported
with the expression text and the column of the placeholder, reference or pipe at fault (the
original exception is chained as ``__cause__``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection

import attrs

from interlock.errors import ExpressionError
from interlock.expressions import pipes
from interlock.expressions.parser import (
    ListOf,
    Literal,
    Pipe,
    Placeholder,
    Reference,
    Template,
    parse,
    render,
)
from interlock.expressions.vocabulary import ArgError, prepare_args
from interlock.jsonvalues import JSON, MISSING, render_text

__all__ = ["Budget", "Expression", "Resolver", "compile_expression", "measure"]

Resolver = Callable[[str, str], JSON]
"""``resolve(namespace, path)`` returns the JSON value at ``path`` or ``jsonvalues.MISSING``."""


def _positive(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Budget.{attribute.name} must be a positive integer, got {value!r}")


@attrs.frozen
class Budget:
    """Evaluation limits.

    ``max_steps`` bounds node evaluations plus pipe applications; ``max_size`` bounds the length
    of every intermediate value (characters of a string, approximate length of the JSON text of
    anything else, including values returned by the resolver and the final text).
    """

    max_steps: int = attrs.field(default=10_000, validator=_positive)
    max_size: int = attrs.field(default=1_000_000, validator=_positive)


class _NotJson(ValueError):
    """A value holds something that is not JSON."""


def measure(value: JSON, limit: int) -> int:
    """Approximate size of ``value``: a string's length, else about the length of its JSON text.

    Stops early (returning a number > ``limit``) once ``limit`` is exceeded, so it is cheap on
    huge values and terminates on cyclic ones. Raises ``ValueError`` for non-JSON content.
    """
    if isinstance(value, str):
        return len(value)
    size = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if item is None or isinstance(item, bool):
            size += 5
        elif isinstance(item, int):
            size += item.bit_length() * 30103 // 100000 + 2
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise _NotJson(f"non-finite number {item!r}")
            size += len(repr(item))
        elif isinstance(item, str):
            size += len(item) + 2
        elif isinstance(item, list):
            size += 2 + 2 * len(item)
            if size <= limit:
                stack.extend(item)
        elif isinstance(item, dict):
            size += 2
            for key, child in item.items():
                if not isinstance(key, str):
                    raise _NotJson(f"object key of type {type(key).__name__}")
                size += len(key) + 6
                if size > limit:
                    break
                stack.append(child)
        else:
            raise _NotJson(f"value of type {type(item).__name__}")
        if size > limit:
            return size
    return size


def _describe_exception(exc: BaseException) -> str:
    try:
        detail = str(exc)
    except Exception:  # pragma: no cover - a broken __str__
        detail = ""
    name = type(exc).__name__
    return f"{name}: {detail}" if detail else name


def _head_name(head: Reference | ListOf) -> str:
    return f"{head.namespace}.{head.path}" if isinstance(head, Reference) else "list(...)"


class _Evaluation:
    """One evaluation: counts steps, checks sizes, remembers the column at work."""

    def __init__(self, text: str, resolve: Resolver, budget: Budget) -> None:
        self.text = text
        self.resolve = resolve
        self.budget = budget
        self.ctx = pipes.Context(budget.max_size)
        self.steps = 0
        self.column = 0

    def error(self, reason: str) -> ExpressionError:
        return ExpressionError(reason, self.text, self.column)

    def size_error(self) -> ExpressionError:
        return self.error(f"expression size budget exceeded ({self.budget.max_size})")

    def step(self, column: int) -> None:
        self.column = column
        self.steps += 1
        if self.steps > self.budget.max_steps:
            raise self.error(f"expression step budget exceeded ({self.budget.max_steps})")

    def check_size(self, value: JSON) -> None:
        if measure(value, self.budget.max_size) > self.budget.max_size:
            raise self.size_error()

    def run(self, template: Template) -> JSON:
        parts = template.parts
        if len(parts) == 1 and isinstance(parts[0], Placeholder):
            return self.placeholder(parts[0])
        pieces: list[str] = []
        total = 0
        for part in parts:
            if isinstance(part, Literal):
                self.step(part.column)
                piece = part.text
            else:
                piece = render_text(self.placeholder(part))
            total += len(piece)
            if total > self.budget.max_size:
                raise self.size_error()
            pieces.append(piece)
        return "".join(pieces)

    def placeholder(self, placeholder: Placeholder) -> JSON:
        self.step(placeholder.column)
        value = self.head(placeholder.head)
        missing = _head_name(placeholder.head) if value is MISSING else None
        if value is MISSING:
            value = None
        for pipe in placeholder.pipes:
            value = self.apply(pipe, value, missing)
            if value is not None:
                missing = None
        return value

    def head(self, head: Reference | ListOf) -> JSON:
        self.step(head.column)
        if isinstance(head, ListOf):
            items = []
            for item in head.items:
                value = self.head(item)
                items.append(None if value is MISSING else value)
            self.column = head.column
            self.check_size(items)
            return items
        name = _head_name(head)
        try:
            value = self.resolve(head.namespace, head.path)
        except Exception as exc:
            raise self.error(f"cannot resolve {name}: {_describe_exception(exc)}") from exc
        if value is MISSING:
            return MISSING
        try:
            size = measure(value, self.budget.max_size)
        except _NotJson as exc:
            raise self.error(f"{name} resolved to a non-JSON {exc}") from exc
        if size > self.budget.max_size:
            raise self.size_error()
        return value

    def apply(self, pipe: Pipe, value: JSON, missing: str | None) -> JSON:
        self.step(pipe.column)
        implementation = pipes.PIPES.get(pipe.name)
        if implementation is None:
            raise self.error(f"unknown pipe {pipe.name!r}")
        try:
            args = prepare_args(pipe.name, [(arg.text, arg.value) for arg in pipe.args])
        except ArgError as exc:
            self.column = pipe.args[exc.index].column
            raise self.error(f"pipe {pipe.name!r}: {exc.reason}") from exc
        try:
            result = implementation.fn(self.ctx, value, args)
        except pipes.PipeError as exc:
            note = f" ({missing} is missing)" if missing else ""
            raise self.error(f"pipe {pipe.name!r}: {exc}{note}") from exc
        except pipes.SizeExceeded as exc:
            raise self.size_error() from exc
        except Exception as exc:
            raise self.error(f"pipe {pipe.name!r} failed: {_describe_exception(exc)}") from exc
        self.check_size(result)
        return result


def evaluate_template(
    template: Template, text: str, resolve: Resolver, budget: Budget | None = None
) -> JSON:
    """Evaluate ``template`` (parsed from ``text``); see :meth:`Expression.evaluate`."""
    evaluation = _Evaluation(text, resolve, budget if budget is not None else Budget())
    try:
        return evaluation.run(template)
    except ExpressionError:
        raise
    except Exception as exc:
        reason = f"evaluation failed: {_describe_exception(exc)}"
        raise ExpressionError(reason, text, evaluation.column) from exc


def _references(head: Reference | ListOf, found: set[tuple[str, str]]) -> None:
    if isinstance(head, Reference):
        found.add((head.namespace, head.path))
    else:
        for item in head.items:
            _references(item, found)


@attrs.frozen
class Expression:
    """A parsed, statically validated expression. Build it with :func:`compile_expression`.

    Equality compares the syntax tree only (not the original layout), so
    ``compile_expression(e.render()) == e``.
    """

    text: str = attrs.field(eq=False)
    template: Template = attrs.field(repr=False)

    @property
    def references(self) -> frozenset[tuple[str, str]]:
        """Every ``(namespace, dotted path)`` the expression reads, including inside list()."""
        found: set[tuple[str, str]] = set()
        for part in self.template.parts:
            if isinstance(part, Placeholder):
                _references(part.head, found)
        return frozenset(found)

    @property
    def is_single_placeholder(self) -> bool:
        """True when the whole text is exactly one ``{…}``: the result keeps its JSON type."""
        parts = self.template.parts
        return len(parts) == 1 and isinstance(parts[0], Placeholder)

    @property
    def is_literal(self) -> bool:
        """True when the text has no placeholder: evaluation returns the unescaped text."""
        return not any(isinstance(part, Placeholder) for part in self.template.parts)

    def render(self) -> str:
        """Canonical text: single spaces around ``|``, minimal quoting, escaped braces."""
        return render(self.template)

    def evaluate(self, resolve: Resolver, budget: Budget | None = None) -> JSON:
        """Evaluate with ``resolve(namespace, path) -> JSON | MISSING`` under ``budget``.

        A lone placeholder returns its JSON value (type kept); otherwise the result is text in
        which values are rendered JSON-native (``true``, ``1.5``, ``{"k": "v"}``; strings as
        is). A missing reference is null for every pipe (``default``/``required`` handle it)
        and evaluates to null when no pipe replaced it. Raises only :class:`ExpressionError`.
        """
        return evaluate_template(self.template, self.text, resolve, budget)


def compile_expression(text: str, namespaces: Collection[str] | None = None) -> Expression:
    """Parse and statically validate ``text``.

    Checks syntax, pipe names, arity and arguments (e.g. ``nth`` needs an integer, ``match`` a
    valid RE2 pattern) and, when ``namespaces`` is given, that every reference's namespace is in
    it. Raises :class:`ExpressionError` (reason, expression, 0-based column) on any fault.
    """
    if not isinstance(text, str):
        raise TypeError(f"an expression must be a string, not {type(text).__name__}")
    if isinstance(namespaces, str):
        raise TypeError("namespaces must be a collection of names, not a single string")
    try:
        template = parse(text, namespaces)
    except ExpressionError:
        raise
    except Exception as exc:  # pragma: no cover - defensive: the parser raises ExpressionError
        raise ExpressionError(f"cannot parse: {_describe_exception(exc)}", text, 0) from exc
    return Expression(text, template)
