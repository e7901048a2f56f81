"""Expression AST (frozen attrs classes), the parser building it, and canonical rendering.

Grammar (tokens from :mod:`interlock.expressions.lexer`)::

    template    := (TEXT | placeholder)*
    placeholder := "{" head ("|" pipe)* "}"
    head        := "list" "(" [head ("," head)*] ")" | reference
    reference   := NAME            (namespace "." key ("." key)*)
    pipe        := NAME ["(" [arg ("," arg)*] ")"]
    arg         := STRING | BARE | ARRAY

Node positions (``column``) are excluded from equality, so two texts that differ only in layout
parse to equal trees and ``parse(render(t)) == t``.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Collection
from typing import TypeAlias

import attrs

from interlock.errors import ExpressionError
from interlock.expressions import pipes
from interlock.expressions.lexer import BARE_FORBIDDEN, Kind, Token, tokenize
from interlock.expressions.vocabulary import ArgError, get_spec, prepare_args, vocabulary
from interlock.jsonvalues import JSON

__all__ = [
    "MAX_LIST_DEPTH",
    "Arg",
    "Head",
    "ListOf",
    "Literal",
    "Part",
    "Pipe",
    "Placeholder",
    "Reference",
    "Template",
    "parse",
    "parse_bare",
    "render",
]

MAX_LIST_DEPTH = 32
"""How deeply list() may nest."""

_NUMBER_CHARS = frozenset("0123456789+-.eE")
_LITERALS: dict[str, JSON] = {"true": True, "false": False, "null": None}


def parse_bare(text: str) -> JSON:
    """Interpret an unquoted argument: a JSON scalar or list when it is one, else the text."""
    if text in _LITERALS:
        return _LITERALS[text]
    if text.startswith("[") or (text[:1] in "-0123456789" and set(text) <= _NUMBER_CHARS):
        try:
            return pipes.parse_json_text(text)
        except (ValueError, RecursionError):
            return text
    return text


def _bare_ok(text: str) -> bool:
    """True when ``text`` is canonically written unquoted: it reads back as the same string and
    holds no whitespace but inner plain spaces and no unprintable characters."""
    return (
        bool(text)
        and text[0] != " "
        and text[-1] != " "
        and all(ch == " " or ch.isprintable() for ch in text)
        and not text.startswith("[")
        and BARE_FORBIDDEN.isdisjoint(text)
        and isinstance(parse_bare(text), str)
        and not _looks_numeric(text)
    )


@attrs.frozen
class Arg:
    """A pipe argument. ``quoted`` is True only when the text cannot be written bare.

    Build with :meth:`Arg.of` to get the canonical form. ``value`` is its JSON interpretation.
    """

    text: str
    quoted: bool = False
    column: int = attrs.field(default=0, eq=False, hash=False, repr=False)

    @classmethod
    def of(cls, text: str, *, quoted: bool, column: int = 0) -> Arg:
        """Canonical argument for ``text`` written quoted or bare.

        A quoted string that reads the same unquoted becomes bare; a bare string that is not
        canonically bare (e.g. it holds a tab) becomes quoted. The value never changes.
        """
        if quoted:
            return cls(text, not _bare_ok(text), column)
        value = parse_bare(text)
        return cls(text, isinstance(value, str) and not _bare_ok(text), column)

    @property
    def value(self) -> JSON:
        """The argument as JSON: a quoted argument is a string, a bare one is parsed."""
        return self.text if self.quoted else parse_bare(self.text)


@attrs.frozen
class Pipe:
    """``| name(args)`` at ``column`` (the offset of the name)."""

    name: str
    args: tuple[Arg, ...] = ()
    column: int = attrs.field(default=0, eq=False, hash=False, repr=False)


@attrs.frozen
class Reference:
    """``namespace.path``; ``path`` is dotted (``key.sub.0``)."""

    namespace: str
    path: str
    column: int = attrs.field(default=0, eq=False, hash=False, repr=False)


@attrs.frozen
class ListOf:
    """``list(item, item, …)``: a list built from references (or nested lists)."""

    items: tuple[Head, ...] = ()
    column: int = attrs.field(default=0, eq=False, hash=False, repr=False)


Head: TypeAlias = "Reference | ListOf"


@attrs.frozen
class Placeholder:
    """``{head | pipe | …}``; ``column`` is the offset of the ``{``."""

    head: Head
    pipes: tuple[Pipe, ...] = ()
    column: int = attrs.field(default=0, eq=False, hash=False, repr=False)


@attrs.frozen
class Literal:
    """Literal text (escapes already decoded)."""

    text: str
    column: int = attrs.field(default=0, eq=False, hash=False, repr=False)


Part: TypeAlias = "Literal | Placeholder"


@attrs.frozen
class Template:
    """A whole expression: literal text and placeholders (never two adjacent literals)."""

    parts: tuple[Part, ...] = ()


# -- parsing ------------------------------------------------------------------------------------


def parse(text: str, namespaces: Collection[str] | None = None) -> Template:
    """Parse and statically validate ``text`` (syntax, pipe names, arity, arguments, namespaces).

    Raises :class:`ExpressionError` with the column of the fault.
    """
    return _Parser(text, tokenize(text), namespaces).template()


class _Parser:
    def __init__(self, text: str, tokens: list[Token], namespaces: Collection[str] | None):
        self.text = text
        self.tokens = tokens
        self.index = 0
        self.namespaces = None if namespaces is None else frozenset(namespaces)

    def fail(self, reason: str, column: int) -> ExpressionError:
        return ExpressionError(reason, self.text, column)

    @property
    def tok(self) -> Token:
        return self.tokens[self.index]

    def at(self, kind: Kind) -> bool:
        return self.tokens[self.index].kind is kind

    def advance(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def expect(self, kind: Kind, what: str) -> Token:
        if self.tok.kind is not kind:
            raise self.fail(f"expected {what}, found {_describe(self.tok)}", self.tok.pos)
        return self.advance()

    def template(self) -> Template:
        parts: list[Part] = []
        while not self.at(Kind.END):
            if self.at(Kind.TEXT):
                token = self.advance()
                parts.append(Literal(token.text, token.pos))
            else:
                parts.append(self.placeholder())
        return Template(tuple(parts))

    def placeholder(self) -> Placeholder:
        start = self.expect(Kind.OPEN, "'{'")
        if self.at(Kind.CLOSE):
            raise self.fail("empty placeholder", start.pos)
        head = self.head()
        pipes_: list[Pipe] = []
        while self.at(Kind.PIPE):
            self.advance()
            pipes_.append(self.pipe())
        self.expect(Kind.CLOSE, "'|' or '}'")
        return Placeholder(head, tuple(pipes_), start.pos)

    def head(self, depth: int = 0) -> Head:
        token = self.expect(Kind.NAME, "a reference (namespace.key) or list(...)")
        if token.text == "list" and self.at(Kind.LPAREN):
            if depth >= MAX_LIST_DEPTH:
                raise self.fail(f"list() nested deeper than {MAX_LIST_DEPTH} levels", token.pos)
            self.advance()
            items: list[Head] = []
            if not self.at(Kind.RPAREN):
                items.append(self.head(depth + 1))
                while self.at(Kind.COMMA):
                    self.advance()
                    items.append(self.head(depth + 1))
            self.expect(Kind.RPAREN, "',' or ')'")
            return ListOf(tuple(items), token.pos)
        return self.reference(token)

    def reference(self, token: Token) -> Reference:
        namespace, dot, path = token.text.partition(".")
        if not namespace or not dot:
            raise self.fail(
                f"invalid reference {token.text!r}: expected namespace.key", token.pos
            )
        if not path or "" in path.split("."):
            raise self.fail(f"invalid reference {token.text!r}: empty key segment", token.pos)
        if self.namespaces is not None and namespace not in self.namespaces:
            known = ", ".join(sorted(self.namespaces)) or "none"
            raise self.fail(f"unknown namespace {namespace!r} (known: {known})", token.pos)
        return Reference(namespace, path, token.pos)

    def pipe(self) -> Pipe:
        token = self.expect(Kind.NAME, "a pipe name")
        spec = get_spec(token.text)
        if spec is None:
            raise self.fail(_unknown_pipe(token.text), token.pos)
        args: list[Arg] = []
        if self.at(Kind.LPAREN):
            self.advance()
            if not self.at(Kind.RPAREN):
                args.append(self.argument())
                while self.at(Kind.COMMA):
                    comma = self.advance()
                    if self.at(Kind.COMMA) or self.at(Kind.RPAREN):
                        raise self.fail("missing argument after ','", comma.pos)
                    args.append(self.argument())
            self.expect(Kind.RPAREN, "',' or ')'")
        count = len(args)
        if count < spec.min_args or (spec.max_args is not None and count > spec.max_args):
            arity = _arity(spec.min_args, spec.max_args, spec.arg_names)
            raise self.fail(f"pipe {spec.name!r} {arity}, got {count}", token.pos)
        try:
            prepare_args(spec.name, [(arg.text, arg.value) for arg in args])
        except ArgError as exc:
            raise self.fail(f"pipe {spec.name!r}: {exc.reason}", args[exc.index].column) from exc
        return Pipe(spec.name, tuple(args), token.pos)

    def argument(self) -> Arg:
        token = self.advance()
        if token.kind is Kind.STRING:
            return Arg.of(token.text, quoted=True, column=token.pos)
        if token.kind is Kind.ARRAY:
            try:
                value = pipes.parse_json_text(token.text)
            except (ValueError, RecursionError) as exc:
                raise self.fail(
                    f"invalid JSON list argument ({exc}); quote the argument to pass text",
                    token.pos,
                ) from exc
            return Arg(_dump(value), False, token.pos)
        if token.kind is Kind.BARE:
            value = parse_bare(token.text)
            if isinstance(value, str) and _looks_numeric(token.text):
                raise self.fail(f"number out of range: {token.text[:40]}", token.pos)
            return Arg.of(token.text, quoted=False, column=token.pos)
        raise self.fail(f"expected an argument, found {_describe(token)}", token.pos)


def _looks_numeric(text: str) -> bool:
    """A bare token that is a JSON number by syntax but not a finite float (e.g. ``1e999``)."""
    if not set(text) <= _NUMBER_CHARS or text[:1] not in "-0123456789":
        return False
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _arity(low: int, high: int | None, names: tuple[str, ...]) -> str:
    listed = f" ({', '.join(names)})" if names else ""
    if high is None:
        return f"takes at least {low} argument{'s' * (low != 1)}{listed}"
    if low == high:
        return f"takes {low} argument{'s' * (low != 1)}{listed}"
    return f"takes {low} to {high} arguments{listed}"


def _unknown_pipe(name: str) -> str:
    names = [spec.name for spec in vocabulary()]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown pipe {name!r}{hint}"


def _describe(token: Token) -> str:
    if token.kind is Kind.END:
        return "end of text"
    if token.kind in (Kind.NAME, Kind.BARE, Kind.STRING, Kind.ARRAY):
        return f"{token.text!r}"
    return f"'{token.kind.value}'"


def _dump(value: JSON) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


# -- rendering ----------------------------------------------------------------------------------


def render(template: Template) -> str:
    """Canonical text of ``template``: ``parse(render(t)) == t`` for every valid template."""
    return "".join(
        _escape_text(part.text) if isinstance(part, Literal) else _render_placeholder(part)
        for part in template.parts
    )


def _escape_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace("{", "\\{").replace("}", "\\}")


def _render_placeholder(placeholder: Placeholder) -> str:
    pieces = [_render_head(placeholder.head)]
    pieces.extend(_render_pipe(pipe) for pipe in placeholder.pipes)
    return "{" + " | ".join(pieces) + "}"


def _render_head(head: Head) -> str:
    if isinstance(head, Reference):
        return f"{head.namespace}.{head.path}"
    return "list(" + ", ".join(_render_head(item) for item in head.items) + ")"


def _render_pipe(pipe: Pipe) -> str:
    if not pipe.args:
        return pipe.name
    return pipe.name + "(" + ", ".join(_render_arg(arg) for arg in pipe.args) + ")"


def _render_arg(arg: Arg) -> str:
    if not arg.quoted:
        return arg.text
    escaped = (
        arg.text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\t", "\\t")
        .replace("\r", "\\r")
    )
    return f'"{escaped}"'
