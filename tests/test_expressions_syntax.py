"""Tokenizer and parser: escapes, list(), quoted arguments, typed arguments, canonical rendering,
errors with exact columns, and JSON-native rendering of values in text."""

from __future__ import annotations

from typing import Any

import pytest

from interlock.errors import ExpressionError
from interlock.expressions import Budget, Expression, compile_expression
from interlock.jsonvalues import MISSING


def values(mapping: dict[str, Any]) -> Any:
    def resolve(namespace: str, path: str) -> Any:
        return mapping.get(f"{namespace}.{path}", MISSING)

    return resolve


def ev(text: str, **refs: Any) -> Any:
    """Evaluate with references given as keyword ``a__x=1`` for ``a.x``."""
    return compile_expression(text).evaluate(
        values({key.replace("__", "."): value for key, value in refs.items()})
    )


# -- literal text and escapes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ""),
        ("plain text", "plain text"),
        ("\\{a.x\\}", "{a.x}"),
        ("\\\\", "\\"),
        ("a\\\\{a.x}", "a\\1"),
        ("C:\\data\\file", "C:\\data\\file"),  # other backslashes are kept
        ("trailing\\", "trailing\\"),
        ("é {a.x} ü", "é 1 ü"),
        ("{a.x}{a.x}", "11"),
    ],
)
def test_literal_text_and_escapes(text: str, expected: str) -> None:
    assert ev(text, a__x=1) == expected


def test_literal_and_single_placeholder_flags() -> None:
    assert compile_expression("just text").is_literal
    assert compile_expression("").is_literal
    assert compile_expression("\\{not.a.ref\\}").is_literal
    assert not compile_expression("{a.x}").is_literal
    assert compile_expression("{a.x}").is_single_placeholder
    assert compile_expression("{ a.x | upper }").is_single_placeholder
    assert not compile_expression(" {a.x}").is_single_placeholder
    assert not compile_expression("{a.x}{a.y}").is_single_placeholder
    assert not compile_expression("text").is_single_placeholder


def test_literal_expression_evaluates_to_its_unescaped_text() -> None:
    expr = compile_expression("a \\{b\\}")
    assert expr.evaluate(values({})) == "a {b}"


# -- JSON-native rendering in text, lone placeholders keep their type ----------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (True, "n=true"),
        (False, "n=false"),
        (None, "n=null"),
        (MISSING, "n=null"),
        (1, "n=1"),
        (1.5, "n=1.5"),
        ("s", "n=s"),
        ("é", "n=é"),
        ({"k": "v"}, 'n={"k": "v"}'),
        ([1, "a", None], 'n=[1, "a", null]'),
        ({"é": [True]}, 'n={"é": [true]}'),
    ],
)
def test_values_render_json_native_in_text(value: Any, text: str) -> None:
    assert ev("n={a.x}", a__x=value) == text


@pytest.mark.parametrize("value", [True, 0, 1.5, None, "x", [1, {"k": None}], {"a": [True]}])
def test_lone_placeholder_keeps_the_json_type(value: Any) -> None:
    got = ev("{a.x}", a__x=value)
    assert got == value
    assert type(got) is type(value)


def test_missing_lone_placeholder_is_null() -> None:
    assert ev("{a.nothing}") is None


# -- references and list() ----------------------------------------------------------------------


def test_references_include_list_items() -> None:
    expr = compile_expression("{a.x.0 | upper} {list(b.y, list(c-1.z_2))} {a.x.0}")
    assert expr.references == frozenset({("a", "x.0"), ("b", "y"), ("c-1", "z_2")})


def test_list_builds_an_array_and_missing_items_are_null() -> None:
    assert ev("{list(a.x, b.y, c.z)}", a__x=1, b__y="s") == [1, "s", None]
    assert ev("{list()}") == []
    assert ev("{list(a.x, list(a.x))}", a__x=True) == [True, [True]]
    assert ev('{list(a.x, b.y) | join(", ")}', a__x="p", b__y=2) == "p, 2"


def test_list_as_a_namespace_name_is_a_reference() -> None:
    assert ev("{list.x}", list__x=5) == 5


def test_dotted_paths_are_passed_whole_to_the_resolver() -> None:
    seen: list[tuple[str, str]] = []

    def resolve(namespace: str, path: str) -> Any:
        seen.append((namespace, path))
        return 1

    compile_expression("{src.meta.items.0}").evaluate(resolve)
    assert seen == [("src", "meta.items.0")]


def test_namespaces_are_checked_when_given() -> None:
    compile_expression("{a.x} {input.k}", namespaces={"a", "input"})
    with pytest.raises(ExpressionError) as info:
        compile_expression("{a.x} {b.y}", namespaces=["a", "input"])
    assert info.value.reason == "unknown namespace 'b' (known: a, input)"
    assert info.value.column == 7
    with pytest.raises(ExpressionError) as info:
        compile_expression("{list(a.x, zz.y)}", namespaces={"a"})
    assert info.value.column == 11


# -- arguments ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value", "expected"),
    [
        ('{a.x | replace(",", ";")}', "a,b", "a;b"),
        ("{a.x | replace('(', '[')}", "f(x", "f[x"),
        ('{a.x | replace("}", ")")}', "}", ")"),
        ('{a.x | replace("{", "|")}', "{", "|"),
        ('{a.x | append("\\"q\\"")}', "", '"q"'),
        ("{a.x | append('it\\'s')}", "", "it's"),
        ('{a.x | append("a\\nb\\tc")}', "", "a\nb\tc"),
        ('{a.x | append("\\\\")}', "", "\\"),
        ('{a.x | append("\\d")}', "", "\\d"),  # unknown escapes keep the backslash
        ('{a.x | append(  "  spaced  "  )}', "", "  spaced  "),
        ("{a.x | append(  two words  )}", "", "two words"),
        ("{a.x | append(a\\b)}", "", "a\\b"),
        ("{a.x | default( 7 )}", None, 7),
        ("{a.x | in( [1,  2] )}", 2, True),
        ('{a.x | in(["a,b", "c)"])}', "c)", True),
        ('{a.x | in(["]", "}"])}', "}", True),
        ("{a.x | upper()}", "a", "A"),
    ],
)
def test_argument_lexing(text: str, value: Any, expected: Any) -> None:
    assert ev(text, a__x=value) == expected


@pytest.mark.parametrize(
    ("arg", "value", "expected"),
    [
        ("true", True, True),
        ("true", "true", False),
        ('"true"', "true", True),
        ("'true'", "true", True),
        ('"true"', True, False),
        ("1", 1, True),
        ("1", "1", False),
        ('"1"', "1", True),
        ("'1'", 1, False),
        ("1.5", 1.5, True),
        ("-2", -2, True),
        ("1e3", 1000, True),
        ("null", None, True),
        ("null", "null", False),
        ('"null"', "null", True),
        ("01", "01", True),  # not a JSON number: text
        ("NaN", "NaN", True),
        ("Infinity", "Infinity", True),
        ("[1, true]", [1, True], True),
        ("[1, true]", [1, 1], False),
    ],
)
def test_arguments_are_json_when_they_are_json(arg: str, value: Any, expected: bool) -> None:
    assert ev(f"{{a.x | eq({arg})}}", a__x=value) is expected


# -- canonical rendering ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("{ a.x|upper }", "{a.x | upper}"),
        ("{a.x | upper()}", "{a.x | upper}"),
        ("{a.x|default( 'abc' )}", "{a.x | default(abc)}"),
        ('{a.x | default("a, b")}', '{a.x | default("a, b")}'),
        ("{a.x | default('true')}", '{a.x | default("true")}'),
        ("{a.x | default(true)}", "{a.x | default(true)}"),
        ("{a.x | default(' x')}", '{a.x | default(" x")}'),
        ("{a.x | default('it\\'s')}", '{a.x | default("it\'s")}'),
        ("{a.x | default('a\\nb')}", '{a.x | default("a\\nb")}'),
        ("{a.x | default(a\tb)}", '{a.x | default("a\\tb")}'),
        ("{a.x | default(a  b)}", "{a.x | default(a  b)}"),
        ("{a.x | default('[x')}", '{a.x | default("[x")}'),
        ("{a.x | in([1,2,  \"a\"])}", '{a.x | in([1, 2, "a"])}'),
        ("{ list( a.x ,b.y ) | join(',') }", "{list(a.x, b.y) | join(\",\")}"),
        ("a\\{b\\}c\\\\", "a\\{b\\}c\\\\"),
        ("C:\\dir", "C:\\\\dir"),
    ],
)
def test_render_is_canonical_and_round_trips(text: str, canonical: str) -> None:
    expr = compile_expression(text)
    assert expr.render() == canonical
    again = compile_expression(canonical)
    assert again == expr
    assert again.render() == canonical
    assert expr.text == text


def test_equality_is_the_syntax_tree_not_the_layout() -> None:
    assert compile_expression("{a.x|upper}") == compile_expression("{  a.x  |  upper  }")
    assert compile_expression("{a.x | eq(1)}") != compile_expression("{a.x | eq(true)}")
    assert compile_expression("{a.x | eq(1)}") != compile_expression('{a.x | eq("1")}')
    assert compile_expression("{a.x | eq('1')}") == compile_expression('{a.x | eq("1")}')
    assert hash(compile_expression("{a.x|upper}")) == hash(compile_expression("{a.x | upper}"))
    assert isinstance(compile_expression("x"), Expression)


# -- errors with exact columns ------------------------------------------------------------------

ERRORS: list[tuple[str, str, int]] = [
    ("{a.x", "unclosed placeholder: missing '}'", 0),
    ("ab {a.x | upper", "unclosed placeholder: missing '}'", 3),
    ("ab}", "unmatched '}'", 2),
    ("x {}", "empty placeholder", 2),
    ("{ }", "empty placeholder", 0),
    ("{a.x | nope}", "unknown pipe 'nope'", 7),
    ("{a.x | uper}", "unknown pipe 'uper' (did you mean 'upper'?)", 7),
    ("{a.x | upper(1)}", "pipe 'upper' takes 0 arguments, got 1", 7),
    ("{a.x | replace(a)}", "pipe 'replace' takes 2 arguments (old, new), got 1", 7),
    ("{a.x | pad}", "pipe 'pad' takes 1 to 3 arguments (width, char, side), got 0", 7),
    ("{a.x | in}", "pipe 'in' takes at least 1 argument (values), got 0", 7),
    ("{a.x | in()}", "pipe 'in' takes at least 1 argument (values), got 0", 7),
    ("{a}", "invalid reference 'a': expected namespace.key", 1),
    ("{ a. }", "invalid reference 'a.': empty key segment", 2),
    ("{a..b}", "invalid reference 'a..b': empty key segment", 1),
    ("{.a}", "invalid reference '.a': expected namespace.key", 1),
    ("{list}", "invalid reference 'list'", 1),
    ('{a.x | default("abc}', "unterminated string: missing closing \"", 15),
    ("{a.x | default('abc", "unterminated string: missing closing '", 15),
    ("{a.x | default(a b}", "missing ')' before '}'", 18),
    ('{a.x | default("a" }', "missing ')' before '}'", 19),
    ("{a.x | default(a", "unclosed '(': missing ')'", 14),
    ("{a.x | default(a, )}", "missing argument after ','", 16),
    ("{a.x | default(, a)}", "expected an argument, found ','", 15),
    ('{a.x | default("a" b)}', "expected ',' or ')', found 'b'", 19),
    ("{a.x upper}", "expected '|' or '}', found 'upper'", 5),
    ("{a.x |}", "expected a pipe name, found '}'", 6),
    ("{a.x | | upper}", "expected a pipe name, found '|'", 7),
    ("{| upper}", "expected a reference (namespace.key) or list(...), found '|'", 1),
    ("{a.x | 'q'}", "quoted text is only allowed as a pipe argument", 7),
    ("{a.x $}", "unexpected character '$' in a placeholder", 5),
    ("{a.x {b.y}}", "unexpected '{' inside a placeholder", 5),
    ("{a.x | default(a|b)}", "'|' in an unquoted argument: quote the argument", 16),
    ("{a.x | default(f(x))}", "'(' in an unquoted argument: quote the argument", 16),
    ("{a.x | default(it's)}", "\"'\" in an unquoted argument: quote the argument", 17),
    ("{a.x | eq([1,)}", "unclosed '[' in a JSON list argument", 10),
    ("{a.x | eq([1,])}", "invalid JSON list argument", 10),
    ("{a.x | eq([1, NaN])}", "invalid JSON list argument", 10),
    ("{a.x | eq([1}", "unclosed '[' in a JSON list argument", 10),
    ("{a.x | eq(1e999)}", "number out of range: 1e999", 10),
    ("{list(a.x | upper)}", "expected ',' or ')', found '|'", 10),
    ("{list(a.x,)}", "expected a reference (namespace.key) or list(...), found ')'", 10),
    ("{list(a.x}", "expected ',' or ')', found '}'", 9),
    ("{list(\"s\")}", "quoted text is only allowed as a pipe argument", 6),
    ("{a.x | nth(x)}", "pipe 'nth': argument 'index' must be an integer, got 'x'", 11),
    ('{a.x | match("(a")}', "pipe 'match': argument 'pattern' is not a valid RE2 pattern", 13),
    ('{a.x | match("(a)", 2)}', "pipe 'match': pattern has 1 group(s), no group 2", 20),
    ("{a.x.}", "invalid reference 'a.x.': empty key segment", 1),
    ("ok {a.x} then }", "unmatched '}'", 14),
]


@pytest.mark.parametrize(("text", "reason", "column"), ERRORS, ids=[e[0] for e in ERRORS])
def test_syntax_errors_carry_the_exact_column(text: str, reason: str, column: int) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(text)
    assert info.value.reason.startswith(reason), info.value.reason
    assert info.value.column == column
    assert info.value.expression == text
    assert f"(column {column})" in str(info.value)


def test_list_nesting_is_bounded() -> None:
    deep = "{" + "list(" * 40 + "a.x" + ")" * 40 + "}"
    with pytest.raises(ExpressionError, match="nested deeper than 32") as info:
        compile_expression(deep)
    assert info.value.column == 1 + 32 * len("list(")


def test_non_string_text_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        compile_expression(123)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        compile_expression("{a.x}", namespaces="a")


# -- evaluation errors carry the column of the failing node -------------------------------------


def test_resolver_exceptions_are_wrapped_with_the_reference_column() -> None:
    def resolve(namespace: str, path: str) -> Any:
        raise KeyError(path)

    text = "x={a.x} {b.y}"
    with pytest.raises(ExpressionError) as info:
        compile_expression(text).evaluate(resolve)
    assert info.value.reason == "cannot resolve a.x: KeyError: 'x'"
    assert info.value.column == 3
    assert isinstance(info.value.__cause__, KeyError)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (object(), "a.x resolved to a non-JSON value of type object"),
        (float("nan"), "a.x resolved to a non-JSON non-finite number nan"),
        ((1, 2), "a.x resolved to a non-JSON value of type tuple"),
        ({1: "x"}, "a.x resolved to a non-JSON object key of type int"),
        ([MISSING], "a.x resolved to a non-JSON value of type Missing"),
    ],
)
def test_non_json_resolver_values_are_rejected(value: Any, reason: str) -> None:
    with pytest.raises(ExpressionError) as info:
        ev("- {a.x}", a__x=value)
    assert info.value.reason == reason
    assert info.value.column == 3


def test_cyclic_resolver_value_hits_the_size_budget() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(ExpressionError, match="size budget"):
        ev("{a.x}", a__x=cyclic)


def test_budget_is_validated() -> None:
    with pytest.raises(ValueError):
        Budget(max_steps=0)
    with pytest.raises(ValueError):
        Budget(max_size=-1)
    assert Budget() == Budget(max_steps=10_000, max_size=1_000_000)
