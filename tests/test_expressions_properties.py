"""Properties: render/parse round trips, evaluation raises only ExpressionError, lone placeholders
keep their type, and RE2 keeps ``match`` linear on catastrophic-backtracking patterns."""

from __future__ import annotations

import json
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interlock.errors import ExpressionError
from interlock.expressions import Budget, compile_expression, vocabulary
from interlock.expressions.parser import (
    Arg,
    ListOf,
    Literal,
    Pipe,
    Placeholder,
    Reference,
    Template,
    render,
)
from interlock.jsonvalues import MISSING, render_text

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)
resolved_values = json_values | st.just(MISSING)


def canonical_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def same(got: Any, expected: Any) -> bool:
    return json.dumps(got, sort_keys=True) == json.dumps(expected, sort_keys=True) and type(
        got
    ) is type(expected)


# -- generated syntax trees ---------------------------------------------------------------------

name_chars = st.sampled_from("abcxyzABC019_-é")
identifiers = st.text(name_chars, min_size=1, max_size=6)
references = st.builds(
    lambda ns, segments: Reference(ns, ".".join(segments)),
    identifiers,
    st.lists(identifiers, min_size=1, max_size=3),
)


def heads(depth: int = 2) -> st.SearchStrategy[Reference | ListOf]:
    if depth == 0:
        return references
    return references | st.builds(
        lambda items: ListOf(tuple(items)), st.lists(heads(depth - 1), max_size=3)
    )


# text biased towards the characters the syntax cares about
tricky_text = st.text(st.sampled_from("\\\"'{}|(),[] .-1ax\n\t") | st.characters(), max_size=8)
text_args = tricky_text.map(lambda text: Arg.of(text, quoted=True))
json_args = (
    st.sampled_from(["true", "false", "null"]).map(lambda t: Arg(t, False))
    | st.integers().map(lambda i: Arg(str(i), False))
    | st.floats(allow_nan=False, allow_infinity=False).map(lambda f: Arg(repr(f), False))
    | st.lists(json_scalars, max_size=3).map(lambda v: Arg(canonical_json(v), False))
    | text_args
)
int_args = st.integers(-50, 50).map(lambda i: Arg(str(i), False))
count_args = st.integers(0, 50).map(lambda i: Arg(str(i), False))


def pipe(name: str, *args: st.SearchStrategy[Arg]) -> st.SearchStrategy[Pipe]:
    return st.tuples(*args).map(lambda values: Pipe(name, tuple(values)))


NO_ARG_PIPES = [spec.name for spec in vocabulary() if spec.max_args == 0]
pipes = st.one_of(
    st.sampled_from(NO_ARG_PIPES).map(Pipe),
    pipe("prepend", text_args),
    pipe("append", text_args),
    pipe("default", json_args),
    pipe("eq", json_args),
    pipe("lte", json_args),
    pipe("required", text_args),
    pipe("join", text_args),
    pipe("strip", text_args),
    pipe("replace", text_args.filter(lambda a: a.text != ""), text_args),
    pipe("nth", int_args),
    pipe("truncate", count_args, text_args),
    pipe("pad", count_args, st.characters().map(lambda c: Arg.of(c, quoted=True))),
    st.lists(json_args, min_size=1, max_size=3).map(lambda args: Pipe("in", tuple(args))),
)
placeholders = st.builds(
    lambda head, chain: Placeholder(head, tuple(chain)), heads(), st.lists(pipes, max_size=3)
)


@st.composite
def templates(draw: st.DrawFn) -> Template:
    parts: list[Literal | Placeholder] = []
    for _ in range(draw(st.integers(0, 4))):
        if (parts and isinstance(parts[-1], Literal)) or draw(st.booleans()):
            parts.append(draw(placeholders))
        else:
            parts.append(Literal(draw(tricky_text.filter(bool))))
    return Template(tuple(parts))


@SETTINGS
@given(templates())
def test_parse_of_render_is_the_same_tree(template: Template) -> None:
    text = render(template)
    expr = compile_expression(text)
    assert expr.template == template
    assert expr.render() == text


# -- generated texts ----------------------------------------------------------------------------

SYNTAX_WORDS = ["a.x", "b.y.0", "list(", "upper", "default(", "eq(", "in(", "join(", "nth("]
syntax_text = st.lists(
    st.sampled_from(list("{}|()[],.\\'\" \tax1_-é")) | st.sampled_from(SYNTAX_WORDS),
    max_size=25,
).map("".join)


@SETTINGS
@given(syntax_text)
def test_render_round_trips_for_every_text_that_compiles(text: str) -> None:
    try:
        expr = compile_expression(text)
    except ExpressionError as exc:
        assert exc.expression == text
        assert 0 <= exc.column <= len(text)
        return
    canonical = expr.render()
    again = compile_expression(canonical)
    assert again == expr
    assert again.render() == canonical


@SETTINGS
@given(st.text(max_size=60) | syntax_text, resolved_values)
def test_arbitrary_text_and_values_raise_only_expression_error(text: str, value: Any) -> None:
    try:
        expr = compile_expression(text, namespaces={"a", "b"})
        result = expr.evaluate(lambda namespace, path: value, Budget(max_steps=50, max_size=500))
    except ExpressionError as exc:
        assert exc.expression == text
        return
    json.dumps(result, allow_nan=False)  # the result is JSON


PIPE_SEGMENTS = sorted(
    {
        example.split("|", 1)[1].rstrip("}").strip()
        for spec in vocabulary()
        for example, _, _ in spec.examples
    }
)


@SETTINGS
@given(
    st.lists(st.sampled_from(PIPE_SEGMENTS), max_size=4),
    resolved_values,
    st.booleans(),
    st.sampled_from([None, Budget(max_steps=3, max_size=30)]),
)
def test_pipe_chains_on_arbitrary_values_raise_only_expression_error(
    chain: list[str], value: Any, in_text: bool, budget: Budget | None
) -> None:
    placeholder = "{" + " | ".join(["a.value", *chain]) + "}"
    text = f"<{placeholder}>" if in_text else placeholder
    expr = compile_expression(text)
    try:
        result = expr.evaluate(lambda namespace, path: value, budget)
    except ExpressionError as exc:
        assert exc.expression == text
        assert 0 <= exc.column < len(text)
        return
    json.dumps(result, allow_nan=False)
    if in_text:
        assert isinstance(result, str)


@SETTINGS
@given(st.lists(st.sampled_from(PIPE_SEGMENTS), min_size=1, max_size=3), json_values)
def test_resolver_exceptions_become_expression_errors(chain: list[str], value: Any) -> None:
    def resolve(namespace: str, path: str) -> Any:
        raise RuntimeError("store is down")

    text = "{" + " | ".join(["a.value", *chain]) + "}"
    try:
        compile_expression(text).evaluate(resolve)
    except ExpressionError as exc:
        assert isinstance(exc.__cause__, RuntimeError)
    else:
        raise AssertionError("expected an ExpressionError")


# -- types --------------------------------------------------------------------------------------


@SETTINGS
@given(json_values)
def test_lone_placeholder_keeps_type_and_text_renders_json_native(value: Any) -> None:
    def resolve(namespace: str, path: str) -> Any:
        return value

    assert same(compile_expression("{a.x}").evaluate(resolve), value)
    assert compile_expression("<{a.x}>").evaluate(resolve) == f"<{render_text(value)}>"
    assert compile_expression("{a.x | string}").evaluate(resolve) == render_text(value)


# -- RE2: linear time ---------------------------------------------------------------------------


def test_catastrophic_pattern_is_linear_with_re2() -> None:
    expr = compile_expression('{a.x | match("(a+)+b")}')
    text = "a" * 100_000
    start = time.perf_counter()
    result = expr.evaluate(lambda namespace, path: text)
    elapsed = time.perf_counter() - start
    assert result is False
    assert elapsed < 1.0, f"match took {elapsed:.3f}s"
