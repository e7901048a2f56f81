"""Every pipe, table-driven: normal values, null, missing references, booleans vs numbers,
Unicode, wrong types and the size budget."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from interlock import regex
from interlock.errors import ExpressionError
from interlock.expressions import Budget, compile_expression, vocabulary
from interlock.jsonvalues import MISSING


def run(text: str, value: Any, budget: Budget | None = None) -> Any:
    """Evaluate ``text`` with ``a.value`` resolving to ``value`` (anything else is missing)."""

    def resolve(namespace: str, path: str) -> Any:
        return value if (namespace, path) == ("a", "value") else MISSING

    return compile_expression(text).evaluate(resolve, budget)


def same(got: Any, expected: Any) -> bool:
    """Typed equality: 1 and 1.0 and True are different answers here."""
    return json.dumps(got, sort_keys=True) == json.dumps(expected, sort_keys=True) and type(
        got
    ) is type(expected)


OK: list[tuple[str, Any, Any]] = [
    # upper / lower / title
    ("{a.value | upper}", "abc", "ABC"),
    ("{a.value | upper}", "straße", "STRASSE"),
    ("{a.value | upper}", "", ""),
    ("{a.value | lower}", "ÀÉÎ Ωmega", "àéî ωmega"),
    ("{a.value | title}", "hello wORLD", "Hello World"),
    ("{a.value | title}", "  two\tspaces  here ", "  Two\tSpaces  Here "),
    ("{a.value | title}", "éCOLE ünd", "École Ünd"),
    ("{a.value | title}", "they're", "They're"),
    # trim / strip / lstrip / rstrip
    ("{a.value | trim}", " \t x y \n", "x y"),
    ("{a.value | trim}", "\u3000wide\u3000", "wide"),
    ("{a.value | strip}", "  x  ", "x"),
    ("{a.value | strip(/)}", "//a/b//", "a/b"),
    ('{a.value | strip("-_")}', "-_x_-", "x"),
    ('{a.value | strip("")}', " x ", " x "),
    ("{a.value | lstrip}", "  x  ", "x  "),
    ("{a.value | lstrip(0)}", "0070", "70"),
    ("{a.value | rstrip}", "  x  ", "  x"),
    ("{a.value | rstrip(.0)}", "1.500", "1.5"),
    # replace
    ("{a.value | replace(a, b)}", "banana", "bbnbnb"),
    ('{a.value | replace(", ", ";")}', "a, b, c", "a;b;c"),
    ('{a.value | replace(a, "")}', "banana", "bnn"),
    ("{a.value | replace(1, 2)}", "v1.1", "v2.2"),
    ("{a.value | replace(true, yes)}", "true story", "yes story"),
    ("{a.value | replace(é, e)}", "café é", "cafe e"),
    ("{a.value | replace(x, y)}", "abc", "abc"),
    # truncate
    ("{a.value | truncate(3)}", "abcdef", "abc"),
    ("{a.value | truncate(6)}", "abcdef", "abcdef"),
    ("{a.value | truncate(0)}", "abc", ""),
    ('{a.value | truncate(5, "…")}', "abcdef", "abcd…"),
    ('{a.value | truncate(2, "...")}', "abcdef", ".."),
    ('{a.value | truncate(4, "...")}', "abcd", "abcd"),
    ("{a.value | truncate(2)}", "日本語", "日本"),
    # prepend / append
    ("{a.value | prepend(v)}", "1", "v1"),
    ("{a.value | prepend(1)}", "x", "1x"),
    ('{a.value | prepend("a, ")}', "b", "a, b"),
    ("{a.value | append(.txt)}", "notes", "notes.txt"),
    ("{a.value | append(null)}", "x", "xnull"),
    ("{a.value | append(ü)}", "", "ü"),
    # pad
    ("{a.value | pad(3, 0)}", "7", "007"),
    ("{a.value | pad(3)}", "7", "  7"),
    ("{a.value | pad(4, *, right)}", "ab", "ab**"),
    ("{a.value | pad(5, -, center)}", "ab", "-ab--"),
    ('{a.value | pad(3, " ", right)}', "x", "x  "),
    ("{a.value | pad(2, 0)}", "12345", "12345"),
    ("{a.value | pad(0)}", "", ""),
    ("{a.value | pad(3, é)}", "a", "ééa"),
    # match
    ('{a.value | match("^v[0-9]+$")}', "v12", True),
    ('{a.value | match("^v[0-9]+$")}', "v12b", False),
    ('{a.value | match("v([0-9]+)", 1)}', "release v12", "12"),
    ('{a.value | match("v([0-9]+)", 0)}', "release v12", "v12"),
    ('{a.value | match("(?P<ext>[a-z0-9]+)$", ext)}', "clip.mp4", "mp4"),
    ('{a.value | match("v([0-9]+)", 1)}', "none here", None),
    ('{a.value | match("(a)|(b)", 1)}', "b", None),
    ("{a.value | match(\\d+)}", "abc 42", True),
    ('{a.value | match("\\\\d")}', "7", True),  # regex \d
    (r'{a.value | match("\\\\d")}', "\\d", True),  # regex \\d
    (r'{a.value | match("\\\\d")}', "7", False),
    ('{a.value | match("^\\\\p{L}+$")}', "héllo", True),
    ('{a.value | match("(?i)ÉTÉ")}', "été", True),
    ('{a.value | match("")}', "", True),
    # basename / dirname / stem / ext
    ("{a.value | basename}", "/data/in/clip.mp4", "clip.mp4"),
    ("{a.value | basename}", "s3://bucket/key/x.json", "x.json"),
    ("{a.value | basename}", "/data/dir/", "dir"),
    ("{a.value | basename}", "plain", "plain"),
    ("{a.value | basename}", "/", ""),
    ("{a.value | basename}", "", ""),
    ("{a.value | dirname}", "/data/in/clip.mp4", "/data/in"),
    ("{a.value | dirname}", "/data/dir/", "/data"),
    ("{a.value | dirname}", "/clip.mp4", "/"),
    ("{a.value | dirname}", "clip.mp4", ""),
    ("{a.value | dirname}", "a//b", "a"),
    ("{a.value | dirname}", "/", "/"),
    ("{a.value | stem}", "/x/archive.tar.gz", "archive.tar"),
    ("{a.value | stem}", "/x/.bashrc", ".bashrc"),
    ("{a.value | stem}", "README", "README"),
    ("{a.value | stem}", "été.txt", "été"),
    ("{a.value | ext}", "/x/archive.tar.gz", ".gz"),
    ("{a.value | ext}", "/x/.bashrc", ""),
    ("{a.value | ext}", "dir.d/file", ""),
    ("{a.value | ext}", "CLIP.MP4", ".MP4"),
    # urlencode / urldecode
    ("{a.value | urlencode}", "a b/c?d=é&e", "a%20b%2Fc%3Fd%3D%C3%A9%26e"),
    ("{a.value | urlencode}", "safe-_.~AZaz09", "safe-_.~AZaz09"),
    ("{a.value | urldecode}", "a%20b%2Fc%3Fd%3D%C3%A9", "a b/c?d=é"),
    ("{a.value | urldecode}", "a+b", "a+b"),
    ("{a.value | urldecode}", "%ZZ", "%ZZ"),
    ("{a.value | urlencode | urldecode}", "日本 語/?", "日本 語/?"),
    # int / float
    ("{a.value | int}", "42", 42),
    ("{a.value | int}", " -7 ", -7),
    ("{a.value | int}", "+5", 5),
    ("{a.value | int}", 5, 5),
    ("{a.value | int}", 3.9, 3),
    ("{a.value | int}", -3.9, -3),
    ("{a.value | int}", 2.0, 2),
    ("{a.value | float}", "1.5", 1.5),
    ("{a.value | float}", " 1e3 ", 1000.0),
    ("{a.value | float}", "-.5", -0.5),
    ("{a.value | float}", 2, 2.0),
    ("{a.value | float}", 2.25, 2.25),
    # string
    ("{a.value | string}", True, "true"),
    ("{a.value | string}", False, "false"),
    ("{a.value | string}", None, "null"),
    ("{a.value | string}", MISSING, "null"),
    ("{a.value | string}", 1.5, "1.5"),
    ("{a.value | string}", 10, "10"),
    ("{a.value | string}", "x", "x"),
    ("{a.value | string}", "é", "é"),
    ("{a.value | string}", {"k": "v"}, '{"k": "v"}'),
    ("{a.value | string}", [1, "a", None, {"é": True}], '[1, "a", null, {"é": true}]'),
    # json_get
    ("{a.value | json_get(meta.fps)}", '{"meta": {"fps": 25}}', 25),
    ("{a.value | json_get(items.1)}", {"items": ["x", "y"]}, "y"),
    ("{a.value | json_get(0.k)}", [{"k": False}], False),
    ("{a.value | json_get(items.-1)}", '{"items": [1, 2, 3]}', 3),
    ("{a.value | json_get(nope)}", '{"a": 1}', None),
    ("{a.value | json_get(a.b.c)}", '{"a": 1}', None),
    ('{a.value | json_get("")}', '[1, {"k": null}]', [1, {"k": None}]),
    ('{a.value | json_get("")}', '"text"', "text"),
    ("{a.value | json_get(x)}", None, None),
    ("{a.value | json_get(x)}", MISSING, None),
    ("{a.value | json_get(k)}", '{"k": "é"}', "é"),
    # default
    ("{a.value | default(n/a)}", None, "n/a"),
    ("{a.value | default(n/a)}", MISSING, "n/a"),
    ("{a.value | default(0)}", None, 0),
    ("{a.value | default(1.5)}", None, 1.5),
    ("{a.value | default(true)}", MISSING, True),
    ('{a.value | default("0")}', None, "0"),
    ("{a.value | default(null)}", MISSING, None),
    ("{a.value | default([1, 2])}", MISSING, [1, 2]),
    ('{a.value | default("")}', MISSING, ""),
    ("{a.value | default(x)}", "", ""),
    ("{a.value | default(x)}", False, False),
    ("{a.value | default(x)}", 0, 0),
    ("{a.value | default(x)}", [], []),
    # required
    ("{a.value | required}", "x", "x"),
    ("{a.value | required}", "", ""),
    ("{a.value | required}", False, False),
    ("{a.value | required}", 0, 0),
    ("{a.value | required(oops)}", [], []),
    # first / last / nth
    ("{a.value | first}", [3, 4], 3),
    ("{a.value | first}", [], None),
    ("{a.value | first}", "héllo", "h"),
    ("{a.value | first}", "", None),
    ("{a.value | first}", [None, 1], None),
    ("{a.value | last}", [3, 4], 4),
    ("{a.value | last}", [], None),
    ("{a.value | last}", "héllo", "o"),
    ("{a.value | nth(1)}", ["a", "b", "c"], "b"),
    ("{a.value | nth(-1)}", ["a", "b", "c"], "c"),
    ("{a.value | nth(-3)}", ["a", "b", "c"], "a"),
    ("{a.value | nth(3)}", ["a", "b", "c"], None),
    ("{a.value | nth(-4)}", ["a", "b", "c"], None),
    ("{a.value | nth(1)}", "日本語", "本"),
    ("{a.value | nth(0)}", [[1, 2]], [1, 2]),
    # join
    ("{a.value | join}", ["x", "y"], "x,y"),
    ('{a.value | join(", ")}', ["a", 1, 1.5, True, None], "a, 1, 1.5, true, null"),
    ('{a.value | join(" / ")}', [{"k": "v"}, [1, 2]], '{"k": "v"} / [1, 2]'),
    ("{a.value | join(-)}", [], ""),
    ("{a.value | join(-)}", ["only"], "only"),
    ('{a.value | join("")}', ["é", "t", "é"], "été"),
    # flatten / compact
    ("{a.value | flatten}", [[1, 2], 3, [[4]], []], [1, 2, 3, [4]]),
    ("{a.value | flatten}", [], []),
    ("{a.value | flatten | flatten}", [[[1]], [2]], [1, 2]),
    ("{a.value | compact}", [1, None, "", False, 0, []], [1, "", False, 0, []]),
    ("{a.value | compact}", {"a": None, "b": 0, "c": ""}, {"b": 0, "c": ""}),
    ("{a.value | compact}", [None], []),
    # length
    ("{a.value | length}", "héllo", 5),
    ("{a.value | length}", "", 0),
    ("{a.value | length}", "😀", 1),
    ("{a.value | length}", [1, [2, 3]], 2),
    ("{a.value | length}", {"k": 1, "j": 2}, 2),
    # not (JSON truthiness)
    ("{a.value | not}", False, True),
    ("{a.value | not}", None, True),
    ("{a.value | not}", MISSING, True),
    ("{a.value | not}", 0, True),
    ("{a.value | not}", 0.0, True),
    ("{a.value | not}", "", True),
    ("{a.value | not}", [], True),
    ("{a.value | not}", {}, True),
    ("{a.value | not}", "false", False),
    ("{a.value | not}", "0", False),
    ("{a.value | not}", True, False),
    ("{a.value | not}", 0.1, False),
    ("{a.value | not}", [0], False),
    ("{a.value | not | not}", {"k": None}, True),
    # eq / neq (typed)
    ("{a.value | eq(true)}", True, True),
    ("{a.value | eq(true)}", 1, False),
    ("{a.value | eq(true)}", "true", False),
    ('{a.value | eq("true")}', "true", True),
    ("{a.value | eq('true')}", True, False),
    ("{a.value | eq(1)}", 1, True),
    ("{a.value | eq(1)}", 1.0, True),
    ("{a.value | eq(1)}", True, False),
    ("{a.value | eq(1)}", "1", False),
    ('{a.value | eq("1")}', "1", True),
    ('{a.value | eq("1")}', 1, False),
    ("{a.value | eq(0)}", False, False),
    ("{a.value | eq(null)}", None, True),
    ("{a.value | eq(null)}", MISSING, True),
    ("{a.value | eq(null)}", "null", False),
    ("{a.value | eq(video)}", "video", True),
    ("{a.value | eq(Vidéo)}", "Vidéo", True),
    ("{a.value | eq([1, 2])}", [1, 2], True),
    ("{a.value | eq([1, 2])}", [1, True], False),
    ("{a.value | neq(true)}", 1, True),
    ("{a.value | neq(1)}", 1.0, False),
    ("{a.value | neq(x)}", MISSING, True),
    # gt / gte / lt / lte
    ("{a.value | gt(10)}", 12, True),
    ("{a.value | gt(10)}", 10, False),
    ("{a.value | gt(10)}", "12", False),
    ("{a.value | gt(1.5)}", 2, True),
    ("{a.value | gt(0)}", True, False),
    ("{a.value | gt(0)}", None, False),
    ("{a.value | gt(0)}", MISSING, False),
    ("{a.value | gt(b)}", "c", True),
    ("{a.value | gt(b)}", "B", False),
    ('{a.value | gt("9")}', "10", False),
    ("{a.value | gte(10)}", 10.0, True),
    ("{a.value | gte(10)}", 9, False),
    ("{a.value | gte(a)}", "a", True),
    ("{a.value | lt(10)}", 9, True),
    ("{a.value | lt(10)}", "9", False),
    ("{a.value | lt(é)}", "e", True),
    ("{a.value | lte(0)}", 0, True),
    ("{a.value | lte(0)}", None, False),
    ("{a.value | lte(0)}", [], False),
    # in
    ("{a.value | in(mp4, mov)}", "mov", True),
    ("{a.value | in(mp4, mov)}", "avi", False),
    ("{a.value | in([1, 2])}", 2, True),
    ("{a.value | in([1, 2])}", 2.0, True),
    ("{a.value | in([1, 2])}", "2", False),
    ('{a.value | in("1", "2")}', 1, False),
    ('{a.value | in("1", "2")}', "1", True),
    ("{a.value | in(1, 2)}", True, False),
    ("{a.value | in(true)}", True, True),
    ("{a.value | in(null, x)}", MISSING, True),
    ('{a.value | in("a,b", c)}', "a,b", True),
    ("{a.value | in(x)}", "x", True),
    ("{a.value | in([])}", "x", False),
    ("{a.value | in([1], [2])}", [2], True),
]


@pytest.mark.parametrize(("text", "value", "expected"), OK, ids=[f"{t}<-{v!r}" for t, v, _ in OK])
def test_pipe(text: str, value: Any, expected: Any) -> None:
    got = run(text, value)
    assert same(got, expected), (text, value, got, expected)


def test_every_pipe_is_exercised_by_the_table() -> None:
    used = {name for text, _, _ in OK for name in _pipe_names(text)}
    assert {spec.name for spec in vocabulary()} <= used


def _pipe_names(text: str) -> set[str]:
    return {segment.strip().split("(")[0] for segment in text.strip("{}").split("|")[1:]}


FAIL: list[tuple[str, Any, str]] = [
    # string pipes on non-strings name the pipe and the type
    ("{a.value | upper}", None, "pipe 'upper': expects a string, got null"),
    ("{a.value | upper}", 1, "pipe 'upper': expects a string, got number"),
    ("{a.value | upper}", True, "pipe 'upper': expects a string, got boolean"),
    ("{a.value | lower}", ["a"], "pipe 'lower': expects a string, got list"),
    ("{a.value | title}", {"k": 1}, "pipe 'title': expects a string, got object"),
    ("{a.value | trim}", 0, "pipe 'trim': expects a string, got number"),
    ("{a.value | strip}", False, "pipe 'strip': expects a string"),
    ("{a.value | lstrip}", 1.5, "pipe 'lstrip': expects a string"),
    ("{a.value | rstrip}", [], "pipe 'rstrip': expects a string"),
    ("{a.value | replace(a, b)}", 1, "pipe 'replace': expects a string, got number"),
    ("{a.value | truncate(2)}", 12345, "pipe 'truncate': expects a string"),
    ("{a.value | prepend(x)}", 1, "pipe 'prepend': expects a string, got number"),
    ("{a.value | append(x)}", None, "pipe 'append': expects a string, got null"),
    ("{a.value | pad(3, 0)}", 7, "pipe 'pad': expects a string, got number"),
    ("{a.value | match(x)}", 1, "pipe 'match': expects a string, got number"),
    ("{a.value | basename}", None, "pipe 'basename': expects a string"),
    ("{a.value | dirname}", 3, "pipe 'dirname': expects a string"),
    ("{a.value | stem}", True, "pipe 'stem': expects a string"),
    ("{a.value | ext}", [], "pipe 'ext': expects a string"),
    ("{a.value | urlencode}", 1, "pipe 'urlencode': expects a string"),
    ("{a.value | urldecode}", None, "pipe 'urldecode': expects a string"),
    ("{a.value | urlencode}", "\ud800", "pipe 'urlencode': text is not valid Unicode"),
    ("{a.value | match(x)}", "\ud800", "pipe 'match': text is not valid Unicode"),
    # missing references say so
    ("{a.value | upper}", MISSING, "got null (a.value is missing)"),
    ("{a.value | length}", MISSING, "(a.value is missing)"),
    # conversions
    ("{a.value | int}", True, "pipe 'int': expects a number or a string, got boolean"),
    ("{a.value | int}", None, "pipe 'int': expects a number or a string, got null"),
    ("{a.value | int}", "1.5", "pipe 'int': not an integer: '1.5'"),
    ("{a.value | int}", "", "pipe 'int': not an integer"),
    ("{a.value | int}", "12abc", "not an integer"),
    ("{a.value | int}", "١٢", "not an integer"),
    ("{a.value | int}", "1_000", "not an integer"),
    ("{a.value | int}", "9" * 5000, "integer text too long"),
    ("{a.value | float}", False, "pipe 'float': expects a number or a string, got boolean"),
    ("{a.value | float}", "nan", "pipe 'float': not a number"),
    ("{a.value | float}", "inf", "not a number"),
    ("{a.value | float}", "1e999", "out of range for a float"),
    ("{a.value | float}", "1_0", "not a number"),
    ("{a.value | float}", "", "not a number"),
    ("{a.value | float}", "1.2.3", "not a number"),
    ("{a.value | float}", 10**400, "number too large for a float"),
    ("{a.value | float}", [1], "got list"),
    # json_get
    ("{a.value | json_get(k)}", "{not json", "pipe 'json_get': input is not valid JSON"),
    ("{a.value | json_get(k)}", '{"k": NaN}', "input is not valid JSON"),
    ("{a.value | json_get(k)}", "[1e999]", "input is not valid JSON"),
    ("{a.value | json_get(k)}", 5, "pipe 'json_get': expects JSON text, a list or an object"),
    ("{a.value | json_get(k)}", True, "got boolean"),
    # required
    ("{a.value | required}", None, "pipe 'required': a value is required but got null"),
    ("{a.value | required}", MISSING, "required but got null (a.value is missing)"),
    ('{a.value | required("title is needed")}', None, "pipe 'required': title is needed"),
    # lists
    ("{a.value | first}", 5, "pipe 'first': expects a list or a string, got number"),
    ("{a.value | last}", {"k": 1}, "pipe 'last': expects a list or a string, got object"),
    ("{a.value | nth(0)}", None, "pipe 'nth': expects a list or a string, got null"),
    ("{a.value | join}", "abc", "pipe 'join': expects a list, got string"),
    ("{a.value | join}", {"k": 1}, "pipe 'join': expects a list, got object"),
    ("{a.value | flatten}", "ab", "pipe 'flatten': expects a list, got string"),
    ("{a.value | compact}", 0, "pipe 'compact': expects a list, got number"),
    ("{a.value | length}", 12, "pipe 'length': expects a string, a list or an object, got number"),
    ("{a.value | length}", None, "got null"),
    ("{a.value | length}", True, "got boolean"),
]


@pytest.mark.parametrize(
    ("text", "value", "reason"), FAIL, ids=[f"{t}<-{v!r}"[:80] for t, v, _ in FAIL]
)
def test_pipe_error(text: str, value: Any, reason: str) -> None:
    with pytest.raises(ExpressionError) as info:
        run(text, value)
    assert reason in info.value.reason
    assert info.value.expression == text
    assert info.value.column == text.index("|") + 2  # the first (failing) pipe's name


def test_error_column_points_at_the_failing_pipe_of_a_chain() -> None:
    text = "x={a.value | trim | int | upper}"
    with pytest.raises(ExpressionError) as info:
        run(text, " 7 ")
    assert info.value.column == text.index("upper")
    assert "pipe 'upper': expects a string, got number" in info.value.reason


def test_missing_note_disappears_once_a_pipe_produced_a_value() -> None:
    with pytest.raises(ExpressionError) as info:
        run("{a.value | default(1) | upper}", MISSING)
    assert "missing" not in info.value.reason


def test_missing_reference_alone_is_null() -> None:
    assert run("{a.other}", "x") is None
    assert run("{a.other | default(d)}", "x") == "d"


def test_default_does_not_replace_empty_string() -> None:
    assert run("{a.value | default(x)}", "") == ""


# -- argument validation at compile time --------------------------------------------------------

BAD_ARGS: list[tuple[str, str, str]] = [
    ("{a.x | nth(first)}", "first", "argument 'index' must be an integer"),
    ("{a.x | nth(1.0)}", "1.0", "argument 'index' must be an integer"),
    ("{a.x | nth(true)}", "true", "argument 'index' must be an integer"),
    ('{a.x | nth("1")}', '"1"', "argument 'index' must be an integer"),
    ("{a.x | truncate(-1)}", "-1", "argument 'length' must not be negative"),
    ("{a.x | pad(x)}", "x", "argument 'width' must be an integer"),
    ("{a.x | pad(3, ab)}", "ab", "argument 'char' must be exactly one character"),
    ('{a.x | pad(3, "")}', '""', "argument 'char' must be exactly one character"),
    ("{a.x | pad(3, 0, up)}", "up", "argument 'side' must be one of left, right, center"),
    ('{a.x | replace("", x)}', '""', "argument 'old' must not be empty"),
    ('{a.x | match("(a")}', '"(a"', "argument 'pattern' is not a valid RE2 pattern: missing )"),
    ('{a.x | match("(a)\\\\1")}', '"(a)', "is not a valid RE2 pattern"),
    ('{a.x | match("(?=a)")}', '"(?=a)"', "is not a valid RE2 pattern"),
    ('{a.x | match("(a)", 2)}', "2", "pattern has 1 group(s), no group 2"),
    ('{a.x | match("(a)", -1)}', "-1", "group index must not be negative"),
    ('{a.x | match("(?P<n>a)", m)}', "m", "pattern has no group named 'm'"),
]


@pytest.mark.parametrize(("text", "at", "reason"), BAD_ARGS)
def test_bad_arguments_fail_at_compile_time_with_the_argument_column(
    text: str, at: str, reason: str
) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(text)
    assert reason in info.value.reason
    assert info.value.column == text.index(at, text.index("("))


# -- budgets ------------------------------------------------------------------------------------


def test_huge_resolved_value_hits_the_size_budget() -> None:
    with pytest.raises(ExpressionError) as info:
        run("{a.value | upper}", "a" * 1_000_001)
    assert info.value.reason == "expression size budget exceeded (1000000)"
    assert info.value.column == 1  # the reference


def test_value_at_the_size_limit_is_fine() -> None:
    assert len(run("{a.value | upper}", "a" * 1_000_000)) == 1_000_000


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("{a.value | pad(1000000000)}", "x"),
        ("{a.value | replace(a, aaaaaaaaaaaaaaaaaaaaaaaaa)}", "a" * 100_000),
        ("{a.value | prepend(xx) | prepend(xx) | prepend(xx)}", "a" * 999_998),
        ("{a.value | append(xx)}", "a" * 999_999),
        ('{a.value | join("----------")}', ["a"] * 100_000),
        ("{a.value | string}", ["a" * 1000] * 999),
        ("{list(a.value, a.value)}", "a" * 600_000),
        ("{a.value | upper | upper}", "ß" * 600_000),
        ("{a.value}{a.value}", "a" * 600_000),
        ("{a.value | urlencode}", "é" * 200_000),
    ],
)
def test_growth_hits_the_size_budget(text: str, value: Any) -> None:
    with pytest.raises(ExpressionError) as info:
        run(text, value)
    assert info.value.reason == "expression size budget exceeded (1000000)"


def test_small_size_budget() -> None:
    budget = Budget(max_size=10)
    assert run("{a.value | pad(10)}", "x", budget) == " " * 9 + "x"
    with pytest.raises(ExpressionError, match=r"size budget exceeded \(10\)"):
        run("{a.value | pad(11)}", "x", budget)
    with pytest.raises(ExpressionError, match=r"size budget exceeded \(10\)"):
        run("{a.value}", list(range(10)), budget)


def test_step_budget() -> None:
    text = "{a.value | trim | trim | trim}"
    # steps: placeholder, reference, three pipes
    assert run(text, " x ", Budget(max_steps=5)) == "x"
    with pytest.raises(ExpressionError) as info:
        run(text, " x ", Budget(max_steps=4))
    assert info.value.reason == "expression step budget exceeded (4)"
    assert info.value.column == text.rindex("trim")


def test_step_budget_counts_list_items() -> None:
    text = "{list(" + ", ".join(["a.value"] * 50) + ")}"
    assert run(text, 1, Budget(max_steps=52)) == [1] * 50
    with pytest.raises(ExpressionError, match="step budget exceeded"):
        run(text, 1, Budget(max_steps=51))


# -- without google-re2 -------------------------------------------------------------------------


@pytest.fixture
def no_re2(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Simulate an environment where ``import re2`` failed."""
    regex._compile_cached.cache_clear()
    monkeypatch.setattr(regex, "_re2", None)
    yield
    regex._compile_cached.cache_clear()


def test_match_refuses_without_re2_and_never_falls_back(no_re2: None) -> None:
    assert not regex.available()
    with pytest.raises(regex.RegexUnavailableError, match="google-re2"):
        regex.compile_regex("a+")
    text = '{a.x | match("a+")}'
    with pytest.raises(ExpressionError) as info:
        compile_expression(text)
    assert "pipe 'match': regular expressions need the google-re2 package" in info.value.reason
    assert "refuses to fall back" in info.value.reason
    assert info.value.column == text.index('"a+"')
    assert compile_expression("{a.x | upper}").evaluate(lambda ns, path: "ok") == "OK"


def test_compiled_match_refuses_at_evaluation_without_re2(monkeypatch: pytest.MonkeyPatch) -> None:
    expr = compile_expression('{a.x | match("a+")}')
    regex._compile_cached.cache_clear()
    monkeypatch.setattr(regex, "_re2", None)
    try:
        with pytest.raises(ExpressionError, match="google-re2"):
            expr.evaluate(lambda ns, path: "aaa")
    finally:
        regex._compile_cached.cache_clear()
