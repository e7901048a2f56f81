"""Open a store from a URL (``memory://``, ``sqlite:///path.db``, ``redis://host:6379/0``).

Schemes resolve through the ``interlock.stores`` entry-point group, so a third-party store
plugs into the CLI and runner by installing its package (as SQLAlchemy dialects do). Each entry
point names a callable ``from_url(url: str) -> DagStore``.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from interlock.errors import UsageError
from interlock.protocols import DagStore

__all__ = ["available_schemes", "open_store"]

GROUP = "interlock.stores"


def available_schemes() -> list[str]:
    """The URL schemes of every installed store package."""
    return sorted(ep.name for ep in entry_points(group=GROUP))


def open_store(url: str) -> DagStore:
    """The store for ``url``; UsageError naming the installable package if none handles it."""
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        raise UsageError(f"not a store URL: {url!r} (expected scheme://...)")
    matches = [ep for ep in entry_points(group=GROUP) if ep.name == scheme]
    if not matches:
        known = ", ".join(available_schemes()) or "none installed"
        raise UsageError(f"no store for scheme {scheme!r} (installed: {known}); "
                         f"try: pip install interlock-{scheme}")
    factory = matches[0].load()
    store: DagStore = factory(url)
    return store
