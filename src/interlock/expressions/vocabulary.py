"""The pipe vocabulary: names, arities, argument names and kinds, descriptions and examples.

This is the editor-facing description of every pipe (see :func:`vocabulary`) and the static
checking of pipe arguments (:func:`prepare_args`). The implementations live in
:mod:`interlock.expressions.pipes`, which checks at import time that both agree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs

from interlock import regex
from interlock.jsonvalues import JSON

__all__ = ["ArgError", "PipeSpec", "get_spec", "prepare_args", "vocabulary"]


@attrs.frozen
class PipeSpec:
    """One pipe as an editor or a linter sees it.

    ``min_args``/``max_args`` bound the number of arguments; ``max_args`` is None for a variadic
    pipe (``in``), whose last entry of ``arg_names`` then repeats. ``description`` is one line.
    Each example is ``(expression, input, output)``: evaluating ``expression`` while the
    reference ``a.value`` resolves to ``input`` gives ``output``.
    """

    name: str
    min_args: int
    max_args: int | None
    arg_names: tuple[str, ...]
    description: str
    examples: tuple[tuple[str, JSON, JSON], ...] = attrs.field(hash=False)


def _spec(
    name: str,
    arity: tuple[int, int | None],
    arg_names: tuple[str, ...],
    description: str,
    *examples: tuple[str, JSON, JSON],
) -> PipeSpec:
    return PipeSpec(name, arity[0], arity[1], arg_names, description, tuple(examples))


_NONE: tuple[str, ...] = ()

_SPECS: tuple[PipeSpec, ...] = (
    # -- text ---------------------------------------------------------------------------------
    _spec("upper", (0, 0), _NONE, "Upper-case a string (Unicode-aware).",
          ("{a.value | upper}", "straße", "STRASSE")),
    _spec("lower", (0, 0), _NONE, "Lower-case a string (Unicode-aware).",
          ("{a.value | lower}", "ÉTÉ", "été")),
    _spec("title", (0, 0), _NONE,
          "Capitalize the first letter of each whitespace-separated word, lower-case the rest.",
          ("{a.value | title}", "hello wORLD", "Hello World"),
          ("{a.value | title}", "élan vital", "Élan Vital")),
    _spec("trim", (0, 0), _NONE, "Remove leading and trailing whitespace.",
          ("{a.value | trim}", "  hi\n", "hi")),
    _spec("strip", (0, 1), ("chars",),
          "Remove leading and trailing characters found in `chars` (default: whitespace).",
          ("{a.value | strip(/)}", "/a/b/", "a/b"), ("{a.value | strip}", " x ", "x")),
    _spec("lstrip", (0, 1), ("chars",),
          "Remove leading characters found in `chars` (default: whitespace).",
          ("{a.value | lstrip(0)}", "007", "7")),
    _spec("rstrip", (0, 1), ("chars",),
          "Remove trailing characters found in `chars` (default: whitespace).",
          ("{a.value | rstrip(/)}", "dir//", "dir")),
    _spec("replace", (2, 2), ("old", "new"),
          "Replace every occurrence of the text `old` with `new` (literal text, not a pattern).",
          ('{a.value | replace("-", "_")}', "a-b-c", "a_b_c")),
    _spec("truncate", (1, 2), ("length", "suffix"),
          "Cut a string to at most `length` characters, the last ones being `suffix` if cut.",
          ("{a.value | truncate(5)}", "abcdefgh", "abcde"),
          ('{a.value | truncate(6, "...")}', "abcdefgh", "abc..."),
          ("{a.value | truncate(10)}", "short", "short")),
    _spec("prepend", (1, 1), ("text",), "Put `text` before a string.",
          ("{a.value | prepend(v)}", "1.2", "v1.2")),
    _spec("append", (1, 1), ("text",), "Put `text` after a string.",
          ("{a.value | append(.mp4)}", "clip", "clip.mp4")),
    _spec("pad", (1, 3), ("width", "char", "side"),
          "Pad a string to `width` with `char` (default space) on `side`: left, right or center.",
          ("{a.value | pad(3, 0)}", "7", "007"),
          ("{a.value | pad(5, *, right)}", "ab", "ab***"),
          ("{a.value | pad(6, -, center)}", "ab", "--ab--")),
    _spec("match", (1, 2), ("pattern", "group"),
          "RE2 search: true/false, or with `group` (index or name) the captured text or null.",
          ('{a.value | match("^v[0-9]+")}', "v12", True),
          ('{a.value | match("v([0-9]+)", 1)}', "release v12", "12"),
          ('{a.value | match("(?P<ext>[a-z0-9]+)$", ext)}', "clip.mp4", "mp4"),
          ('{a.value | match("x(y)", 1)}', "abc", None)),
    # -- paths and URLs -----------------------------------------------------------------------
    _spec("basename", (0, 0), _NONE,
          "Last component of a /-separated path or URL (trailing slashes ignored).",
          ("{a.value | basename}", "s3://bucket/in/clip.mp4", "clip.mp4"),
          ("{a.value | basename}", "/data/dir/", "dir")),
    _spec("dirname", (0, 0), _NONE,
          "Everything before the last component of a path ('' when there is none).",
          ("{a.value | dirname}", "/data/in/clip.mp4", "/data/in"),
          ("{a.value | dirname}", "clip.mp4", "")),
    _spec("stem", (0, 0), _NONE, "Basename without its last extension.",
          ("{a.value | stem}", "/data/archive.tar.gz", "archive.tar"),
          ("{a.value | stem}", "/home/.bashrc", ".bashrc")),
    _spec("ext", (0, 0), _NONE,
          "Last extension of the basename including its dot ('' when there is none).",
          ("{a.value | ext}", "/data/archive.tar.gz", ".gz"),
          ("{a.value | ext}", "README", "")),
    _spec("urlencode", (0, 0), _NONE,
          "Percent-encode UTF-8 for a URL component (all but A-Z a-z 0-9 - _ . ~).",
          ("{a.value | urlencode}", "a b/é", "a%20b%2F%C3%A9")),
    _spec("urldecode", (0, 0), _NONE,
          "Decode %XX escapes as UTF-8 ('+' stays '+').",
          ("{a.value | urldecode}", "a%20b%2F%C3%A9", "a b/é")),
    # -- conversion ---------------------------------------------------------------------------
    _spec("int", (0, 0), _NONE,
          "Integer from a number (truncated toward zero) or from integer text; else an error.",
          ("{a.value | int}", " 42 ", 42), ("{a.value | int}", -2.7, -2)),
    _spec("float", (0, 0), _NONE,
          "Float from a number or numeric text (no NaN or infinity); else an error.",
          ("{a.value | float}", "1.5e3", 1500.0), ("{a.value | float}", 2, 2.0)),
    _spec("string", (0, 0), _NONE,
          "Render any value as JSON-native text; strings are unchanged.",
          ("{a.value | string}", True, "true"), ("{a.value | string}", {"k": "v"}, '{"k": "v"}'),
          ("{a.value | string}", None, "null")),
    _spec("json_get", (1, 1), ("path",),
          "Parse JSON text (objects and lists are used as is), then follow a dotted path.",
          ('{a.value | json_get(meta.fps)}', '{"meta": {"fps": 25}}', 25),
          ("{a.value | json_get(items.1)}", {"items": ["x", "y"]}, "y"),
          ('{a.value | json_get("")}', "[1, 2]", [1, 2]),
          ("{a.value | json_get(nope)}", "{}", None)),
    # -- null handling ------------------------------------------------------------------------
    _spec("default", (1, 1), ("value",),
          "Replace null or a missing value with `value` (typed); anything else passes through.",
          ("{a.value | default(n/a)}", None, "n/a"), ("{a.value | default(0)}", None, 0),
          ("{a.value | default(0)}", "", "")),
    _spec("required", (0, 1), ("message",),
          "Fail with `message` when the value is null or missing; pass it through otherwise.",
          ("{a.value | required}", "x", "x"),
          ('{a.value | required("title is needed")}', False, False)),
    # -- lists --------------------------------------------------------------------------------
    _spec("first", (0, 0), _NONE, "First item of a list (or character of a string); null if empty.",
          ("{a.value | first}", [3, 4], 3), ("{a.value | first}", [], None)),
    _spec("last", (0, 0), _NONE, "Last item of a list (or character of a string); null if empty.",
          ("{a.value | last}", [3, 4], 4), ("{a.value | last}", "abc", "c")),
    _spec("nth", (1, 1), ("index",),
          "Item (or character) at a 0-based index, negative from the end; null if out of range.",
          ("{a.value | nth(1)}", ["a", "b", "c"], "b"), ("{a.value | nth(-1)}", [1, 2], 2),
          ("{a.value | nth(5)}", [1, 2], None)),
    _spec("join", (0, 1), ("separator",),
          "Join a list into text (default separator ','); non-strings render as JSON.",
          ('{a.value | join(", ")}', ["a", 1, True, None], "a, 1, true, null"),
          ("{a.value | join}", ["x", "y"], "x,y")),
    _spec("flatten", (0, 0), _NONE, "Flatten one level of nested lists.",
          ("{a.value | flatten}", [[1, 2], 3, [[4]]], [1, 2, 3, [4]])),
    _spec("compact", (0, 0), _NONE,
          "Drop null items from a list (or null-valued keys from an object).",
          ("{a.value | compact}", [1, None, "", False], [1, "", False]),
          ("{a.value | compact}", {"a": None, "b": 0}, {"b": 0})),
    _spec("length", (0, 0), _NONE,
          "Number of characters of a string, items of a list or keys of an object.",
          ("{a.value | length}", "héllo", 5), ("{a.value | length}", [1, [2, 3]], 2),
          ("{a.value | length}", {"k": 1}, 1)),
    # -- logic and comparison -----------------------------------------------------------------
    _spec("not", (0, 0), _NONE,
          "Boolean negation by JSON truthiness (false, null, 0, '', [], {} are false).",
          ("{a.value | not}", "", True), ("{a.value | not}", "false", False)),
    _spec("eq", (1, 1), ("value",),
          "Typed equality: true only for an equal value of the same type.",
          ("{a.value | eq(true)}", True, True), ("{a.value | eq(1)}", True, False),
          ('{a.value | eq("1")}', 1, False), ("{a.value | eq(1)}", 1.0, True)),
    _spec("neq", (1, 1), ("value",), "Negation of eq.",
          ("{a.value | neq(video)}", "audio", True)),
    _spec("gt", (1, 1), ("value",),
          "Greater than: numbers numerically, strings by code point; else false.",
          ("{a.value | gt(10)}", 12, True), ("{a.value | gt(10)}", "12", False)),
    _spec("gte", (1, 1), ("value",), "Greater than or equal (same typing rules as gt).",
          ("{a.value | gte(2.5)}", 2.5, True)),
    _spec("lt", (1, 1), ("value",), "Less than (same typing rules as gt).",
          ("{a.value | lt(b)}", "a", True)),
    _spec("lte", (1, 1), ("value",), "Less than or equal (same typing rules as gt).",
          ("{a.value | lte(0)}", None, False)),
    _spec("in", (1, None), ("values",),
          "Typed membership in the arguments, or in a single JSON list argument.",
          ("{a.value | in(mp4, mov)}", "mov", True), ("{a.value | in([1, 2])}", 2, True),
          ('{a.value | in("1", "2")}', 1, False)),
)

_BY_NAME: dict[str, PipeSpec] = {spec.name: spec for spec in _SPECS}


def vocabulary() -> tuple[PipeSpec, ...]:
    """Every pipe, in documentation order, with arity, argument names, description, examples."""
    return _SPECS


def get_spec(name: str) -> PipeSpec | None:
    """The spec of the pipe called ``name``, or None when there is no such pipe."""
    return _BY_NAME.get(name)


class ArgError(Exception):
    """Argument ``index`` of a pipe is invalid; ``reason`` says why."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(reason)
        self.index = index
        self.reason = reason

# -- argument preparation ---------------------------------------------------------------------
# An argument arrives as (text, value): ``text`` is what was written (quotes removed), ``value``
# its JSON interpretation (a bare ``1`` is the number 1, a quoted "1" the string "1").

ArgPrep = Callable[[str, JSON], Any]


def _text(text: str, value: JSON) -> str:
    return text


def _json(text: str, value: JSON) -> JSON:
    return value


def _int(text: str, value: JSON) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(f"must be an integer, got {text!r}")


def _count(text: str, value: JSON) -> int:
    number = _int(text, value)
    if number < 0:
        raise ValueError(f"must not be negative, got {number}")
    return number


def _char(text: str, value: JSON) -> str:
    if len(text) != 1:
        raise ValueError(f"must be exactly one character, got {text!r}")
    return text


_SIDES = ("left", "right", "center")


def _side(text: str, value: JSON) -> str:
    if text not in _SIDES:
        raise ValueError(f"must be one of {', '.join(_SIDES)}; got {text!r}")
    return text


def _pattern(text: str, value: JSON) -> regex.Pattern:
    try:
        return regex.compile_regex(text)
    except regex.RegexUnavailableError:
        raise
    except regex.RegexError as exc:
        raise ValueError(f"is not a valid RE2 pattern: {exc.detail}") from exc


def _group(text: str, value: JSON) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"group index must not be negative, got {value}")
        return value
    return text


def _nonempty(text: str, value: JSON) -> str:
    if not text:
        raise ValueError("must not be empty")
    return text


_ARG_KINDS: dict[str, tuple[ArgPrep, ...]] = {
    "strip": (_text,),
    "lstrip": (_text,),
    "rstrip": (_text,),
    "replace": (_nonempty, _text),
    "truncate": (_count, _text),
    "prepend": (_text,),
    "append": (_text,),
    "pad": (_count, _char, _side),
    "match": (_pattern, _group),
    "json_get": (_text,),
    "default": (_json,),
    "required": (_text,),
    "nth": (_int,),
    "join": (_text,),
    "eq": (_json,),
    "neq": (_json,),
    "gt": (_json,),
    "gte": (_json,),
    "lt": (_json,),
    "lte": (_json,),
    "in": (_json,),
}
"""How each argument is read: as written (text), as JSON, as an integer, a pattern..."""


def prepare_args(name: str, args: Sequence[tuple[str, JSON]]) -> tuple[Any, ...]:
    """Convert and check the arguments of pipe ``name``; raise :class:`ArgError` when invalid.

    Each argument arrives as ``(text, value)``: the text as written (quotes removed) and its
    JSON interpretation. The arity must already be checked (the parser does); each argument is
    converted to what the pipe function expects (text, JSON value, int, compiled pattern...).
    """
    spec = _BY_NAME[name]
    kinds = _ARG_KINDS.get(name, ())
    prepared: list[Any] = []
    for index, (text, value) in enumerate(args):
        if not kinds:
            raise ArgError(index, f"takes no arguments, got {len(args)}")
        convert = kinds[min(index, len(kinds) - 1)]
        try:
            prepared.append(convert(text, value))
        except regex.RegexUnavailableError as exc:
            raise ArgError(index, str(exc)) from exc
        except ValueError as exc:
            arg_name = spec.arg_names[min(index, len(spec.arg_names) - 1)]
            raise ArgError(index, f"argument {arg_name!r} {exc}") from exc
    if name == "match" and len(prepared) == 2:
        _check_group(prepared[0], prepared[1])
    return tuple(prepared)


def _check_group(pattern: regex.Pattern, group: int | str) -> None:
    if isinstance(group, int):
        if group > pattern.groups:
            raise ArgError(1, f"pattern has {pattern.groups} group(s), no group {group}")
    elif group not in pattern.group_names:
        raise ArgError(1, f"pattern has no group named {group!r}")
