"""Linear-time regular expressions for user-supplied patterns (google-re2).

This is the only module of Interlock that imports ``re2``. User patterns (the ``match`` pipe, the
``matches`` edge-filter operator) go through here so that a pattern such as ``(a+)+b`` cannot
cause catastrophic backtracking: RE2 matches in time linear in the text.

If ``re2`` cannot be imported, every function refuses with :class:`RegexUnavailableError`; there
is deliberately **no** fallback to Python's backtracking ``re`` module.

RE2 syntax differs from Python's in a few places: no backreferences (``\\1``) and no lookaround
(``(?=…)``, ``(?<=…)``); such patterns are rejected with a :class:`RegexError`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import attrs

from interlock.errors import InterlockError

try:  # pragma: no branch - exercised by whichever environment runs the tests
    import re2 as _re2
except ImportError:  # pragma: no cover - google-re2 is a hard dependency
    _re2 = None

__all__ = [
    "Pattern",
    "RegexError",
    "RegexMatch",
    "RegexUnavailableError",
    "available",
    "compile_regex",
    "search",
]

_CACHE_SIZE = 512


class RegexError(InterlockError, ValueError):
    """A pattern is invalid, the text cannot be searched, or regex support is unavailable.

    ``detail`` is the cause without the pattern (e.g. RE2's ``missing ): (``).
    """

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = message if detail is None else detail


class RegexUnavailableError(RegexError):
    """``google-re2`` is not importable; regular expressions are refused (never ``re``)."""


def available() -> bool:
    """True when google-re2 is importable and patterns can be compiled."""
    return _re2 is not None


@attrs.frozen
class RegexMatch:
    """The result of a successful :meth:`Pattern.search`.

    ``groups[0]`` is the whole match; ``groups[i]`` the i-th capture group, ``None`` when the
    group did not take part in the match. ``names`` maps group names to indices.
    """

    groups: tuple[str | None, ...]
    names: Mapping[str, int] = attrs.field(factory=dict, eq=False, hash=False)

    def group(self, which: int | str = 0) -> str | None:
        """The text captured by group ``which`` (index or name); None when it did not take part.

        Raises :class:`RegexError` for an unknown group index or name.
        """
        index = self.names.get(which) if isinstance(which, str) else which
        if index is None or not 0 <= index < len(self.groups):
            raise RegexError(f"no such group: {which!r}")
        return self.groups[index]


@attrs.frozen
class Pattern:
    """A compiled RE2 pattern. Obtain one with :func:`compile_regex`.

    ``groups`` is the number of capture groups, ``group_names`` maps names to indices.
    Equality and hashing use the pattern text only.
    """

    pattern: str
    groups: int = attrs.field(eq=False)
    group_names: Mapping[str, int] = attrs.field(eq=False, hash=False)
    _compiled: Any = attrs.field(eq=False, hash=False, repr=False)

    def search(self, text: str) -> RegexMatch | None:
        """Find the first match anywhere in ``text`` (linear time); None when there is none.

        Raises :class:`RegexError` when ``text`` is not a string or cannot be encoded as UTF-8
        (e.g. it holds an unpaired surrogate).
        """
        if not isinstance(text, str):
            raise RegexError(f"can only search text, not {type(text).__name__}")
        try:
            found = self._compiled.search(text)
        except UnicodeError as exc:
            raise RegexError("text is not valid Unicode (unpaired surrogate)") from exc
        if found is None:
            return None
        groups = tuple(found.group(i) for i in range(self.groups + 1))
        return RegexMatch(groups=groups, names=dict(self.group_names))


def compile_regex(pattern: str) -> Pattern:
    """Compile ``pattern`` with RE2 (UTF-8, case-sensitive, Perl-like syntax).

    Raises :class:`RegexUnavailableError` when google-re2 is not installed and
    :class:`RegexError` with RE2's explanation when the pattern is invalid or unsupported.
    Compiled patterns are cached.
    """
    if not isinstance(pattern, str):
        raise RegexError(f"a pattern must be a string, not {type(pattern).__name__}")
    return _compile_cached(pattern)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _compile_cached(pattern: str) -> Pattern:
    if _re2 is None:
        raise RegexUnavailableError(
            "regular expressions need the google-re2 package (pip install google-re2); "
            "Interlock refuses to fall back to Python's backtracking 're' module"
        )
    options = _re2.Options()
    options.log_errors = False
    try:
        compiled = _re2.compile(pattern, options)
    except UnicodeError as exc:
        detail = "not valid Unicode (unpaired surrogate)"
        raise RegexError(f"invalid pattern {pattern!r}: {detail}", detail) from exc
    except _re2.error as exc:
        detail = _describe(exc)
        raise RegexError(f"invalid pattern {pattern!r}: {detail}", detail) from exc
    return Pattern(
        pattern=pattern,
        groups=int(compiled.groups),
        group_names={str(k): int(v) for k, v in compiled.groupindex.items()},
        compiled=compiled,
    )


def _describe(exc: BaseException) -> str:
    detail = exc.args[0] if exc.args else str(exc)
    if isinstance(detail, bytes):
        return detail.decode("utf-8", "replace")
    return str(detail)


def search(pattern: str | Pattern, text: str) -> RegexMatch | None:
    """Search ``text`` for ``pattern`` (a string, compiled on the fly and cached, or a Pattern).

    Same errors as :func:`compile_regex` and :meth:`Pattern.search`.
    """
    compiled = pattern if isinstance(pattern, Pattern) else compile_regex(pattern)
    return compiled.search(text)
