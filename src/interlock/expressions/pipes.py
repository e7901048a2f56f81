"""Pipe implementations.

Every pipe is a small function ``fn(ctx, value, args) -> JSON``. ``value`` is the current JSON
value (a missing reference arrives as ``None``); ``args`` are the pipe's arguments already
prepared by :func:`interlock.expressions.vocabulary.prepare_args` (converted and checked at
compile time, and again at evaluation). Pipes report problems with :class:`PipeError` (the
evaluator adds the pipe name, expression and column) and keep allocations under
``ctx.max_size`` via :meth:`Context.ensure`.
"""

from __future__ import annotations

import json
import math
import posixpath
import urllib.parse
from collections.abc import Callable
from typing import Any

import attrs

from interlock import regex
from interlock.expressions.vocabulary import PipeSpec, get_spec, vocabulary
from interlock.jsonvalues import (
    JSON,
    MISSING,
    get_path,
    is_number,
    json_compare,
    json_equal,
    render_text,
    truthy,
)

__all__ = [
    "PIPES",
    "Context",
    "PipeError",
    "PipeImpl",
    "SizeExceeded",
    "json_type",
    "parse_json_text",
]


class PipeError(Exception):
    """A pipe cannot handle its input; the message says why (without the pipe name)."""


class SizeExceeded(Exception):
    """A pipe would build a value larger than the size budget."""


@attrs.frozen
class Context:
    """What a pipe may know about its evaluation: the size budget."""

    max_size: int

    def ensure(self, size: int) -> None:
        """Raise :class:`SizeExceeded` when a value of ``size`` would exceed the budget."""
        if size > self.max_size:
            raise SizeExceeded(size)


PipeFn = Callable[[Context, JSON, tuple[Any, ...]], JSON]


def json_type(value: JSON) -> str:
    """The JSON type name of ``value`` for messages: null, boolean, number, string, list..."""
    if value is None or value is MISSING:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if is_number(value):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _str(value: JSON) -> str:
    if isinstance(value, str):
        return value
    raise PipeError(f"expects a string, got {json_type(value)}")


def _list(value: JSON) -> list[JSON]:
    if isinstance(value, list):
        return value
    raise PipeError(f"expects a list, got {json_type(value)}")


# -- text ---------------------------------------------------------------------------------------


def _text_pipe(transform: Callable[..., JSON]) -> PipeFn:
    """A pipe applying ``transform(text, *args)`` to a string input (other types are errors)."""

    def pipe(ctx: Context, value: JSON, args: tuple[Any, ...]) -> JSON:
        return transform(_str(value), *args)

    return pipe


def _title(ctx: Context, value: JSON, args: tuple[Any, ...]) -> JSON:
    out: list[str] = []
    at_start = True
    for ch in _str(value):
        out.append(ch if ch.isspace() else ch.title() if at_start else ch.lower())
        at_start = ch.isspace()
    return "".join(out)


def _replace(ctx: Context, value: JSON, args: tuple[Any, ...]) -> JSON:
    text = _str(value)
    old, new = args
    ctx.ensure(len(text) + text.count(old) * max(0, len(new) - len(old)))
    return text.replace(old, new)


def _truncate(ctx: Context, value: JSON, args: tuple[Any, ...]) -> JSON:
    text = _str(value)
    length: int = args[0]
    suffix: str = args[1] if len(args) > 1 else ""
    if len(text) <= length:
        return text
    if len(suffix) >= length:
        return suffix[:length]
    return text[: length - len(suffix)] + suffix


def _prepend(ctx: Context, value: JSON, args: tuple[Any, ...]) -> JSON:
    text = _str(value)
    ctx.ensure(len(text) + len(args[0]))
    return args[0] + text


def _append(ctx: Context, value: JSON, args: tuple[Any, ...]) -> JSON:
    text = _str(value)
    ctx.ensure(len(text) + len(args[0]))
    return text + args[0]


def _pad(ctx: Context, value: JSON, args: tuple[Any, ...]) -> JSON:
    text = _str(value)
    width: int = args[0]
    char: str = args[1] if len(args) > 1 else " "
    side: str = args[2] if len(args) > 2 else "left"
    missing = width - len(text)
    if missing <= 0:
        return text
    ctx.ensure(width)
    if side == "left":
        return char * missing + text
    if side == "right":
        return text + char * missing
    before = missing // 2
    return char * before + text + char * (missing - before)


def _match(ctx: Context, value: JSON, args: tuple[Any, ...]) -> JSON:
    text = _str(value)
    try:
        found = args[0].search(text)
    except regex.RegexError as exc:
        raise PipeError(str(exc)) from exc
    if len(args) == 1:
        return found is not None
    return None if found is None else found.group(args[1])


# -- paths and URLs -----------------------------------------------------------------------------


def _split_path(path: str) -> tuple[str, str]:
    """(directory, last component) of a /-separated path, ignoring trailing slashes."""
    trimmed = path.rstrip("/")
    if not trimmed:  # "" or only slashes
        return ("/" if path else ""), ""
    head, sep, tail = trimmed.rpartition("/")
    if not sep:
        return "", tail
    head = head.rstrip("/") or "/"
    return head, tail


def _urlencode(ctx: Context, value: JSON, args: tuple[Any, ...]) -> JSON:
    text = _str(value)
    try:
        return urllib.parse.quote(text, safe="")
    except UnicodeError as exc:
        raise PipeError("text is not valid Unicode (unpaired surrogate)") from exc



# -- conversion ---------------------------------------------------------------------------------

_DIGITS = frozenset("0123456789")
_FLOAT_CHARS = frozenset("0123456789+-.eE")


def _to_int(ctx: Context, value: JSON, args: tuple[Any, ...]) -> JSON:
    if is_number(value):
        if isinstance(value, int):
            return value
        if not math.isfinite(value):
            raise PipeError(f"cannot convert {value!r} to an integer")
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text[:1] in ("+", "-") else text
        if not digits or not set(digits) <= _DIGITS:
            raise PipeError(f"not an integer: {_excerpt(value)}")
        try:
            return int(text)
        except ValueError as exc:  # more digits than Python converts
            raise PipeError(f"integer text too long ({len(text)} characters)") from exc
    raise PipeError(f"expects a number or a string, got {json_type(value)}")


def _to_float(ctx: Context, value: JSON, args: tuple[Any, ...]) -> JSON:
    if is_number(value):
        try:
            result = float(value)
        except OverflowError as exc:
            raise PipeError("number too large for a float") from exc
    elif isinstance(value, str):
        text = value.strip()
        if not text or not set(text) <= _FLOAT_CHARS:
            raise PipeError(f"not a number: {_excerpt(value)}")
        try:
            result = float(text)
        except ValueError as exc:
            raise PipeError(f"not a number: {_excerpt(value)}") from exc
    else:
        raise PipeError(f"expects a number or a string, got {json_type(value)}")
    if not math.isfinite(result):
        raise PipeError(f"out of range for a float: {_excerpt(render_text(value))}")
    return result


def _excerpt(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _string(ctx: Context, value: JSON, args: tuple[Any, ...]) -> JSON:
    return render_text(None if value is MISSING else value)


def _reject_constant(name: str) -> JSON:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"number out of range: {text[:40]}")
    return number


def parse_json_text(text: str) -> JSON:
    """Parse strict JSON (no NaN/Infinity, finite numbers); ValueError when invalid."""
    return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)


def _json_get(ctx: Context, value: JSON, args: tuple[Any, ...]) -> JSON:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            document = parse_json_text(value)
        except ValueError as exc:
            raise PipeError(f"input is not valid JSON: {exc}") from exc
    elif isinstance(value, list | dict):
        document = value
    else:
        raise PipeError(f"expects JSON text, a list or an object, got {json_type(value)}")
    path: str = args[0]
    if path == "":
        return document
    found = get_path(document, path)
    return None if found is MISSING else found


# -- null handling ------------------------------------------------------------------------------


def _default(ctx: Context, value: JSON, args: tuple[Any, ...]) -> JSON:
    return args[0] if value is None or value is MISSING else value


def _required(ctx: Context, value: JSON, args: tuple[Any, ...]) -> JSON:
    if value is None or value is MISSING:
        raise PipeError(args[0] if args and args[0] else "a value is required but got null")
    return value


# -- lists --------------------------------------------------------------------------------------


def _sequence(value: JSON) -> list[JSON] | str:
    if isinstance(value, list | str):
        return value
    raise PipeError(f"expects a list or a string, got {json_type(value)}")


def _first(ctx: Context, value: JSON, args: tuple[Any, ...]) -> JSON:
    items = _sequence(value)
    return items[0] if items else None


def _last(ctx: Context, value: JSON, args: tuple[Any, ...]) -> JSON:
    items = _sequence(value)
    return items[-1] if items else None


def _nth(ctx: Context, value: JSON, args: tuple[Any, ...]) -> JSON:
    items = _sequence(value)
    index: int = args[0]
    return items[index] if -len(items) <= index < len(items) else None


def _join(ctx: Context, value: JSON, args: tuple[Any, ...]) -> JSON:
    items = _list(value)
    separator: str = args[0] if args else ","
    parts: list[str] = []
    size = max(0, len(items) - 1) * len(separator)
    ctx.ensure(size)
    for item in items:
        part = render_text(item)
        size += len(part)
        ctx.ensure(size)
        parts.append(part)
    return separator.join(parts)


def _flatten(ctx: Context, value: JSON, args: tuple[Any, ...]) -> JSON:
    flat: list[JSON] = []
    for item in _list(value):
        if isinstance(item, list):
            flat.extend(item)
        else:
            flat.append(item)
    return flat


def _compact(ctx: Context, value: JSON, args: tuple[Any, ...]) -> JSON:
    if isinstance(value, dict):
        return {key: item for key, item in value.items() if item is not None}
    return [item for item in _list(value) if item is not None]


def _length(ctx: Context, value: JSON, args: tuple[Any, ...]) -> JSON:
    if isinstance(value, str | list | dict):
        return len(value)
    raise PipeError(f"expects a string, a list or an object, got {json_type(value)}")


# -- logic and comparison -----------------------------------------------------------------------


def _not(ctx: Context, value: JSON, args: tuple[Any, ...]) -> JSON:
    return not truthy(value)


def _eq(ctx: Context, value: JSON, args: tuple[Any, ...]) -> JSON:
    return json_equal(value, args[0])


def _neq(ctx: Context, value: JSON, args: tuple[Any, ...]) -> JSON:
    return not json_equal(value, args[0])


def _comparison(accept: Callable[[int], bool]) -> PipeFn:
    def compare(ctx: Context, value: JSON, args: tuple[Any, ...]) -> JSON:
        order = json_compare(value, args[0])
        return order is not None and accept(order)

    return compare


def _in(ctx: Context, value: JSON, args: tuple[Any, ...]) -> JSON:
    candidates = args[0] if len(args) == 1 and isinstance(args[0], list) else args
    return any(json_equal(value, candidate) for candidate in candidates)


# -- registry -----------------------------------------------------------------------------------


@attrs.frozen
class PipeImpl:
    """A pipe implementation: its spec and its function."""

    spec: PipeSpec
    fn: PipeFn


_IMPLEMENTATIONS: dict[str, PipeFn] = {
    "upper": _text_pipe(str.upper),
    "lower": _text_pipe(str.lower),
    "title": _title,
    "trim": _text_pipe(str.strip),
    "strip": _text_pipe(str.strip),
    "lstrip": _text_pipe(str.lstrip),
    "rstrip": _text_pipe(str.rstrip),
    "replace": _replace,
    "truncate": _truncate,
    "prepend": _prepend,
    "append": _append,
    "pad": _pad,
    "match": _match,
    "basename": _text_pipe(lambda path: _split_path(path)[1]),
    "dirname": _text_pipe(lambda path: _split_path(path)[0]),
    "stem": _text_pipe(lambda path: posixpath.splitext(_split_path(path)[1])[0]),
    "ext": _text_pipe(lambda path: posixpath.splitext(_split_path(path)[1])[1]),
    "urlencode": _urlencode,
    "urldecode": _text_pipe(urllib.parse.unquote),
    "int": _to_int,
    "float": _to_float,
    "string": _string,
    "json_get": _json_get,
    "default": _default,
    "required": _required,
    "first": _first,
    "last": _last,
    "nth": _nth,
    "join": _join,
    "flatten": _flatten,
    "compact": _compact,
    "length": _length,
    "not": _not,
    "eq": _eq,
    "neq": _neq,
    "gt": _comparison(lambda order: order > 0),
    "gte": _comparison(lambda order: order >= 0),
    "lt": _comparison(lambda order: order < 0),
    "lte": _comparison(lambda order: order <= 0),
    "in": _in,
}


def _build_registry() -> dict[str, PipeImpl]:
    names = [spec.name for spec in vocabulary()]
    if sorted(names) != sorted(_IMPLEMENTATIONS):
        raise RuntimeError("pipe vocabulary and implementations disagree")  # pragma: no cover
    registry: dict[str, PipeImpl] = {}
    for name in names:
        spec = get_spec(name)
        assert spec is not None
        registry[name] = PipeImpl(spec=spec, fn=_IMPLEMENTATIONS[name])
    return registry


PIPES: dict[str, PipeImpl] = _build_registry()
"""Every pipe by name, in vocabulary order."""
