"""``sqlite:///...`` store URLs (the ``interlock.stores`` entry point).

Forms (as SQLAlchemy spells them): ``sqlite:///relative/path.db`` (relative to the working
directory), ``sqlite:////absolute/path.db``. Query options: ``synchronous`` (``NORMAL``,
``FULL``, ``EXTRA``) and ``busy_timeout_ms`` (integer). Anything else is a UsageError that shows
the expected form.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote

from interlock.errors import UsageError
from interlock_sqlite.store import SqliteStore

__all__ = ["from_url", "parse_url"]

_FORM = "sqlite:///relative/path.db or sqlite:////absolute/path.db[?synchronous=FULL]"
_OPTIONS = ("busy_timeout_ms", "synchronous")


def parse_url(url: str) -> tuple[str, dict[str, str]]:
    """Split a store URL into (database path, options); UsageError if it is malformed."""
    scheme, sep, rest = url.partition("://")
    if scheme != "sqlite" or not sep:
        raise UsageError(f"not a SQLite store URL: {url!r} (expected {_FORM})")
    if not rest.startswith("/"):
        raise UsageError(f"SQLite store URL {url!r} names a host; SQLite opens local files "
                         f"only (expected {_FORM})")
    location, _, query = rest[1:].partition("?")
    path = unquote(location)
    if not path:
        raise UsageError(f"SQLite store URL {url!r} has no database path (expected {_FORM})")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise UsageError(f"SQLite store URL {url!r}: bad query string: {exc}") from exc
    options: dict[str, str] = {}
    for key, value in pairs:
        if key not in _OPTIONS:
            raise UsageError(f"SQLite store URL {url!r}: unknown option {key!r} "
                             f"(allowed: {', '.join(_OPTIONS)})")
        if key in options:
            raise UsageError(f"SQLite store URL {url!r}: option {key!r} given twice")
        options[key] = value
    return path, options


def from_url(url: str) -> SqliteStore:
    """Open the SQLite store a ``sqlite:///`` URL names (entry point ``interlock.stores``)."""
    path, options = parse_url(url)
    timeout = options.get("busy_timeout_ms", "30000")
    if not timeout.isdigit():
        raise UsageError(f"SQLite store URL {url!r}: busy_timeout_ms must be a non-negative "
                         f"integer, got {timeout!r}")
    return SqliteStore(path, busy_timeout_ms=int(timeout),
                       synchronous=options.get("synchronous", "NORMAL"))
