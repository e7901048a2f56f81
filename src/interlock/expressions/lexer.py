"""Tokenizer for expression text.

Outside placeholders the text is literal: ``\\{``, ``\\}`` and ``\\\\`` stand for ``{``, ``}``
and ``\\``; any other backslash is kept as is; an unescaped ``}`` is an error. Inside ``{…}`` the
tokens are names (``ns.key.0``), ``|``, ``(``, ``)``, ``,`` and ``}``; whitespace separates
tokens. The parentheses of a pipe (``| name(``) hold *arguments*, lexed differently:

- a quoted string, ``'…'`` or ``"…"``; a backslash escapes the quote, a backslash, ``n``, ``t``
  or ``r``, and is kept as is before any other character (so ``"\\d+"`` is the regex ``\\d+``);
- a JSON list, starting with ``[`` (brackets and strings balanced);
- otherwise a bare token: everything up to ``,`` or ``)``, trimmed; it cannot contain
  ``( { } | ' "`` (quote the argument to pass those).

Every token records its 0-based offset in the text; errors are :class:`ExpressionError` with
that offset as column.
"""

from __future__ import annotations

import enum

import attrs

from interlock.errors import ExpressionError

__all__ = ["BARE_FORBIDDEN", "Kind", "Token", "is_name_char", "tokenize"]

BARE_FORBIDDEN = frozenset("(){},|'\"")
"""Characters a bare (unquoted) pipe argument cannot contain."""

_QUOTE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"'}
_TEXT_ESCAPES = frozenset("{}\\")


class Kind(enum.Enum):
    """Token kinds."""

    TEXT = "text"  # literal text outside placeholders (escapes decoded)
    OPEN = "{"
    CLOSE = "}"
    NAME = "name"  # identifier or dotted path
    PIPE = "|"
    LPAREN = "("
    RPAREN = ")"
    COMMA = ","
    STRING = "string"  # quoted argument (escapes decoded)
    BARE = "bare"  # unquoted argument (trimmed)
    ARRAY = "array"  # JSON list argument (raw text)
    END = "end"


@attrs.frozen
class Token:
    """A token: its kind, its text (decoded for TEXT and STRING) and its 0-based offset."""

    kind: Kind
    text: str
    pos: int


def is_name_char(ch: str) -> bool:
    """Characters of namespaces, path segments and pipe names: letters, digits, ``_``, ``-``."""
    return ch.isalnum() or ch in "_-"


def tokenize(source: str) -> list[Token]:
    """Split ``source`` into tokens ending with an END token; raise ExpressionError on bad input."""
    return _Lexer(source).run()


class _Lexer:
    def __init__(self, source: str) -> None:
        self.src = source
        self.pos = 0
        self.tokens: list[Token] = []

    def fail(self, reason: str, column: int) -> ExpressionError:
        return ExpressionError(reason, self.src, column)

    def emit(self, kind: Kind, text: str, pos: int) -> None:
        self.tokens.append(Token(kind, text, pos))

    def run(self) -> list[Token]:
        src, n = self.src, len(self.src)
        buffer: list[str] = []
        start = 0
        while self.pos < n:
            ch = src[self.pos]
            if ch == "\\" and self.pos + 1 < n and src[self.pos + 1] in _TEXT_ESCAPES:
                buffer.append(src[self.pos + 1])
                self.pos += 2
            elif ch == "{":
                if buffer:
                    self.emit(Kind.TEXT, "".join(buffer), start)
                    buffer = []
                self.placeholder()
                start = self.pos
            elif ch == "}":
                raise self.fail("unmatched '}' (write \\} for a literal brace)", self.pos)
            else:
                buffer.append(ch)
                self.pos += 1
        if buffer:
            self.emit(Kind.TEXT, "".join(buffer), start)
        self.emit(Kind.END, "", n)
        return self.tokens

    def skip_space(self) -> None:
        while self.pos < len(self.src) and self.src[self.pos].isspace():
            self.pos += 1

    def placeholder(self) -> None:
        open_pos = self.pos
        self.emit(Kind.OPEN, "{", open_pos)
        self.pos += 1
        src = self.src
        while True:
            self.skip_space()
            if self.pos >= len(src):
                raise self.fail("unclosed placeholder: missing '}'", open_pos)
            ch, here = src[self.pos], self.pos
            if ch == "}":
                self.emit(Kind.CLOSE, ch, here)
                self.pos += 1
                return
            if ch == "(" and self._opens_arguments():
                self.arguments()
            elif ch in "|(),":
                self.emit(Kind(ch), ch, here)
                self.pos += 1
            elif is_name_char(ch) or ch == ".":
                while self.pos < len(src) and (is_name_char(src[self.pos]) or src[self.pos] == "."):
                    self.pos += 1
                self.emit(Kind.NAME, src[here : self.pos], here)
            elif ch in "'\"":
                raise self.fail("quoted text is only allowed as a pipe argument", here)
            elif ch == "{":
                raise self.fail("unexpected '{' inside a placeholder", here)
            else:
                raise self.fail(f"unexpected character {ch!r} in a placeholder", here)

    def _opens_arguments(self) -> bool:
        """A '(' right after ``| name`` opens pipe arguments (``list(`` at the head does not)."""
        toks = self.tokens
        return len(toks) >= 2 and toks[-1].kind is Kind.NAME and toks[-2].kind is Kind.PIPE

    def arguments(self) -> None:
        src = self.src
        paren = self.pos
        self.emit(Kind.LPAREN, "(", paren)
        self.pos += 1
        while True:
            self.skip_space()
            if self.pos >= len(src):
                raise self.fail("unclosed '(': missing ')'", paren)
            ch, here = src[self.pos], self.pos
            if ch == ")":
                self.emit(Kind.RPAREN, ch, here)
                self.pos += 1
                return
            if ch == ",":
                self.emit(Kind.COMMA, ch, here)
                self.pos += 1
            elif ch in "'\"":
                self.emit(Kind.STRING, self.quoted(ch), here)
            elif ch == "[":
                self.emit(Kind.ARRAY, self.array(), here)
            elif ch == "}":
                raise self.fail("missing ')' before '}'", here)
            else:
                self.emit(Kind.BARE, self.bare(), here)

    def quoted(self, quote: str) -> str:
        src, start = self.src, self.pos
        self.pos += 1
        out: list[str] = []
        while self.pos < len(src):
            ch = src[self.pos]
            if ch == quote:
                self.pos += 1
                return "".join(out)
            if ch == "\\" and self.pos + 1 < len(src):
                nxt = src[self.pos + 1]
                out.append(_QUOTE_ESCAPES.get(nxt, "\\" + nxt))
                self.pos += 2
            else:
                out.append(ch)
                self.pos += 1
        raise self.fail(f"unterminated string: missing closing {quote}", start)

    def array(self) -> str:
        src, start = self.src, self.pos
        depth = 0
        in_string = False
        while self.pos < len(src):
            ch = src[self.pos]
            self.pos += 1
            if in_string:
                if ch == "\\":
                    self.pos += 1
                elif ch == '"':
                    in_string = False
            elif ch == '"':
                in_string = True
            elif ch == "[":
                depth += 1
            elif ch == "]":
                depth -= 1
                if depth == 0:
                    return src[start : self.pos]
        raise self.fail("unclosed '[' in a JSON list argument", start)

    def bare(self) -> str:
        src, start = self.src, self.pos
        while self.pos < len(src) and src[self.pos] not in ",)":
            ch = src[self.pos]
            if ch in BARE_FORBIDDEN:
                if ch == "}":
                    raise self.fail("missing ')' before '}'", self.pos)
                raise self.fail(
                    f"{ch!r} in an unquoted argument: quote the argument", self.pos
                )
            self.pos += 1
        return src[start : self.pos].strip()
