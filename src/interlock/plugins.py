"""Plugin registry: the names a pipeline's ``plugin:`` fields refer to, and the code they run.

A plugin is a callable ``fn(task: TaskInput) -> Iterable[Output | dict] | None``; ``None`` means
"no outputs". It runs inside a worker (:mod:`interlock.runtime`), which claims the task, calls
the plugin with the planned input and reports the outcome to the kernel:

- returning (an iterable of outputs, or None) completes the task;
- raising an :class:`Exception` fails the attempt (retried per the node's retry policy); the
  error recorded names the node, task and attempt, with the original exception chained;
- raising :class:`interlock.runtime.WaitForHuman` parks the task (``kernel.wait_task``).

A name resolves, in this order, to:

1. a plugin registered on the registry (``@registry.plugin("name")`` or :meth:`register`);
2. an entry point of the ``interlock.plugins`` group with that name (an installed package);
3. ``module:function`` (or ``package.module:Class.method``), imported on first use.

A function decorated with ``@plugin(passthrough=True)`` keeps that flag when it is referred to
as ``module:function`` too. :class:`PluginRegistry` is an :class:`interlock.graph.PluginCatalog`,
so ``validate(pipeline, registry)`` rejects unknown plugins before anything is written.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib.metadata import entry_points
from typing import Any, TypeAlias, TypeVar

import attrs

from interlock.errors import UsageError
from interlock.values import Output, TaskInput

__all__ = [
    "ENTRY_POINT_GROUP",
    "PluginFunction",
    "PluginRegistry",
    "PluginSpec",
    "default_registry",
    "plugin",
]

log = logging.getLogger("interlock.plugins")

ENTRY_POINT_GROUP = "interlock.plugins"

PluginResult: TypeAlias = Iterable[Output | Mapping[str, Any]] | None
PluginFunction: TypeAlias = Callable[[TaskInput], PluginResult]
F = TypeVar("F", bound=Callable[..., Any])

_SPEC_ATTRIBUTE = "__interlock_plugin__"


@attrs.frozen
class PluginSpec:
    """A resolved plugin: its name, the callable, and whether it is a routing (passthrough) node.

    ``reference`` is ``module:qualname`` of the callable when it is importable by name (what a
    worker process needs), else None (lambdas, closures, ``__main__`` in a spawned process).
    """

    name: str
    function: PluginFunction = attrs.field(eq=False)
    passthrough: bool = False

    @property
    def reference(self) -> str | None:
        module = getattr(self.function, "__module__", None)
        qualname = getattr(self.function, "__qualname__", None)
        if not module or not qualname or "<" in qualname:
            return None
        return f"{module}:{qualname}"


class PluginRegistry:
    """Named plugins plus on-demand resolution of entry points and ``module:function`` names.

    Thread-safe. A resolved name is cached (it imports once per registry); a failed one is
    tried again next time.
    """

    def __init__(self, plugins: Mapping[str, PluginFunction] | None = None) -> None:
        self._lock = threading.RLock()
        self._specs: dict[str, PluginSpec] = {}
        for name, function in (plugins or {}).items():
            self.register(name, function)

    # ---- registration ------------------------------------------------------------------

    def register(self, name: str, function: PluginFunction, *, passthrough: bool = False
                 ) -> PluginSpec:
        """Register ``function`` under ``name``; UsageError if the name is taken by another."""
        if not isinstance(name, str) or not name:
            raise UsageError(f"a plugin name must be a non-empty string, got {name!r}")
        if not callable(function):
            raise UsageError(f"plugin {name!r} is not callable: {function!r}")
        spec = PluginSpec(name, function, passthrough)
        with self._lock:
            existing = self._specs.get(name)
            if existing is not None and existing.function is not function:
                raise UsageError(f"plugin {name!r} is already registered "
                                 f"({existing.reference or existing.function!r})")
            self._specs[name] = spec
        return spec

    def plugin(self, name: str | None = None, *, passthrough: bool = False
               ) -> Callable[[F], F]:
        """Decorator: register the function under ``name`` (default: its ``__name__``)."""

        def decorate(function: F) -> F:
            spec = self.register(name or function.__name__, function, passthrough=passthrough)
            setattr(function, _SPEC_ATTRIBUTE, spec)
            return function

        return decorate

    # ---- lookup ------------------------------------------------------------------------

    def resolve(self, name: str) -> PluginSpec:
        """The plugin called ``name``; UsageError saying what was tried if there is none."""
        with self._lock:
            spec = self._specs.get(name)
            if spec is None:
                spec = self._load(name)  # failures are not cached: sys.path may change
                self._specs[name] = spec
            return spec

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self.resolve(name)
        except UsageError:
            return False
        return True

    def is_passthrough(self, name: str) -> bool:
        """True for a plugin registered as passthrough; False for unknown names."""
        try:
            return self.resolve(name).passthrough
        except UsageError:
            return False

    def names(self) -> list[str]:
        """The names resolved or registered so far (entry points not yet used are not listed)."""
        with self._lock:
            return sorted(self._specs)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"PluginRegistry({self.names()!r})"

    def _load(self, name: str) -> PluginSpec:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == name:
                try:
                    function = ep.load()
                except Exception as exc:
                    raise UsageError(f"plugin {name!r}: entry point {ep.value!r} failed to "
                                     f"load: {type(exc).__name__}: {exc}") from exc
                return _spec_for(name, function, f"entry point {ep.value!r}")
        if ":" not in name:
            raise UsageError(f"unknown plugin {name!r}: not registered, no entry point in group "
                             f"{ENTRY_POINT_GROUP!r}, and not a 'module:function' name")
        module_name, _, attribute = name.partition(":")
        if not module_name or not attribute:
            raise UsageError(f"plugin {name!r}: expected 'module:function'")
        try:
            target: Any = importlib.import_module(module_name)
        except ImportError as exc:
            raise UsageError(f"plugin {name!r}: cannot import module {module_name!r}: "
                             f"{exc}") from exc
        except Exception as exc:
            raise UsageError(f"plugin {name!r}: importing module {module_name!r} raised "
                             f"{type(exc).__name__}: {exc}") from exc
        for part in attribute.split("."):
            try:
                target = getattr(target, part)
            except AttributeError:
                raise UsageError(f"plugin {name!r}: module {module_name!r} has no attribute "
                                 f"{attribute!r}") from None
        return _spec_for(name, target, name)


def _spec_for(name: str, function: Any, origin: str) -> PluginSpec:
    if not callable(function):
        raise UsageError(f"plugin {name!r}: {origin} is not callable")
    declared = getattr(function, _SPEC_ATTRIBUTE, None)
    passthrough = declared.passthrough if isinstance(declared, PluginSpec) else False
    return PluginSpec(name, function, passthrough)


default_registry = PluginRegistry()
"""The registry ``@plugin`` registers into; the CLI resolves names against it."""


def plugin(name: str | None = None, *, passthrough: bool = False) -> Callable[[F], F]:
    """Register a function on :data:`default_registry`::

        @plugin("thumbnail")
        def thumbnail(task: TaskInput) -> list[Output]: ...
    """
    return default_registry.plugin(name, passthrough=passthrough)
