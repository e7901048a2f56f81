"""Shared CLI plumbing: exit codes, errors, pipeline loading, plugin modules, stores, inputs."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import attrs

from interlock.errors import GraphError, InterlockError, StoreUnavailable, UsageError
from interlock.graph import ExpressionGraphError, Topology, validate
from interlock.jsonvalues import JSON
from interlock.limits import DEFAULT_LIMITS, Limits
from interlock.plugins import PluginRegistry, default_registry
from interlock.protocols import DagStore
from interlock.runtime.files import PipelineFileError, add_plugin_path, load_pipeline_file
from interlock.states import RunState
from interlock.stores import open_store

__all__ = [
    "EXIT_CANCELLED",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_STORE",
    "EXIT_UNFINISHED",
    "EXIT_USAGE",
    "CliError",
    "exit_code_for",
    "graph_error_line",
    "import_plugin_modules",
    "load_and_validate",
    "open_cli_store",
    "parse_inputs",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_STORE = 3
EXIT_CANCELLED = 4
EXIT_UNFINISHED = 5

DEFAULT_STORE = "sqlite:///interlock.db"


class CliError(Exception):
    """An error the CLI prints as ``error: <message>`` (one line) and exits with ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(" ".join(message.split()))
        self.code = code


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    raise CliError(message, code)


def exit_code_for(state: RunState) -> int:
    """0 completed, 1 failed or crashed, 4 cancelled, 5 not finished (pending/running)."""
    if state is RunState.COMPLETED:
        return EXIT_OK
    if state in (RunState.FAILED, RunState.CRASHED):
        return EXIT_FAILED
    if state is RunState.CANCELLED:
        return EXIT_CANCELLED
    return EXIT_UNFINISHED


def graph_error_line(error: GraphError) -> str:
    """``node 'x', field 'y': message`` on one line (expressions quoted, column given)."""
    if isinstance(error, ExpressionGraphError):
        cause = error.expression_error
        text = cause.expression
        message = f"invalid expression: {cause.reason} (column {cause.column})"
        if text:
            message += f" in {text!r}"
    else:
        message = error.reason
    where = []
    if error.node is not None:
        where.append(f"node {error.node!r}")
    if error.field is not None:
        where.append(f"field {error.field!r}")
    line = f"{', '.join(where)}: {message}" if where else message
    return " ".join(line.split())


def import_plugin_modules(modules: Iterable[str]) -> None:
    """Import each ``--plugins`` module (comma-separated lists accepted); CliError if one fails.

    The working directory is importable, as with ``python -m``. A path to a ``.py`` file
    makes its folder importable and imports the module by its name (so a pipeline naming
    ``plugins:fn`` resumes with ``--plugins path/to/plugins.py``).
    """
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    for entry in modules:
        for name in (part.strip() for part in entry.split(",")):
            if not name:
                continue
            if name.endswith(".py"):
                folder, _, filename = os.path.abspath(name).rpartition(os.sep)
                if folder not in sys.path:
                    sys.path.insert(0, folder)
                name = filename[:-3]
            try:
                importlib.import_module(name)
            except Exception as exc:
                fail(f"--plugins {name}: cannot import: {type(exc).__name__}: {exc}")


def check_plugins(topology: Topology, registry: PluginRegistry) -> None:
    """Resolve every node's plugin; GraphError naming the node and why it does not resolve."""
    for node in topology.pipeline.nodes:
        try:
            registry.resolve(node.plugin)
        except UsageError as exc:
            raise GraphError(str(exc), node=node.slug, field="plugin") from exc


def load_and_validate(path: str, *, plugins: Sequence[str] = (), check: bool = True,
                      registry: PluginRegistry | None = None) -> tuple[dict[str, Any], Topology]:
    """Read and fully validate a pipeline file; CliError (exit 2) with one line naming the
    file, node and field. With ``check``, every plugin must resolve (after importing the
    ``plugins`` modules; ``module:function`` names import from the pipeline's directory)."""
    try:
        data = load_pipeline_file(path)
    except PipelineFileError as exc:
        fail(str(exc))
    except UsageError as exc:  # PyYAML missing
        fail(f"{path}: {exc}")
    registry = registry or default_registry
    try:
        topology = validate(data)
        if check:
            import_plugin_modules(plugins)
            # after: the pipeline's folder goes before the working directory, so its
            # ``module:function`` plugins are found there even if the working directory holds
            # a module of the same name
            add_plugin_path(path)
            check_plugins(topology, registry)
            topology = validate(data, registry)
    except GraphError as exc:
        fail(f"{path}: {graph_error_line(exc)}")
    return data, topology


def open_cli_store(url: str) -> DagStore:
    """``open_store`` with CLI errors: exit 3 when no adapter handles the URL or it cannot be
    opened (server unreachable, unreadable file)."""
    try:
        return open_store(url)
    except UsageError as exc:
        hint = ""
        if url.startswith("sqlite:") and importlib.util.find_spec("interlock_sqlite") is None:
            hint = ' (the default store needs the SQLite adapter: pip install "interlock-sqlite")'
        fail(f"store {url}: {exc}{hint}", EXIT_STORE)
    except Exception as exc:
        fail(f"store {url} unreachable: {type(exc).__name__}: {exc}", EXIT_STORE)


def is_store_error(exc: BaseException) -> bool:
    """Errors that mean the store (or its server) failed, not the pipeline or the CLI."""
    if isinstance(exc, StoreUnavailable):
        return True
    if isinstance(exc, InterlockError):
        return False
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    module = type(exc).__module__.split(".")[0]
    return module in ("sqlite3", "redis", "psycopg", "psycopg2")


def _json_value(text: str) -> JSON:
    try:
        value: JSON = json.loads(text)
    except ValueError:
        return text
    return value


def parse_inputs(pairs: Sequence[str], json_file: str | None) -> dict[str, JSON]:
    """The run input: ``--input-json FILE`` (an object; ``-`` = stdin), then each
    ``--input key=value`` on top. A value that parses as JSON is taken as JSON (``20`` is a
    number, ``true`` a boolean, ``[1,2]`` a list), anything else as a string."""
    result: dict[str, JSON] = {}
    if json_file is not None:
        try:
            text = sys.stdin.read() if json_file == "-" else Path(json_file).read_text("utf-8")
            loaded = json.loads(text)
        except OSError as exc:
            fail(f"--input-json {json_file}: {exc.strerror or exc}")
        except ValueError as exc:
            fail(f"--input-json {json_file}: not JSON: {exc}")
        if not isinstance(loaded, dict):
            fail(f"--input-json {json_file}: expected a JSON object, got "
                 f"{type(loaded).__name__}")
        result.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--input {pair!r}: expected key=value")
        result[key] = _json_value(value)
    return result


_LIMIT_NAMES = tuple(f.name for f in attrs.fields(Limits) if f.name != "expression")
"""The integer limits ``--limit`` sets (the expression budget is not one of them)."""


def parse_limits(pairs: Sequence[str]) -> Limits:
    """The kernel's limits with each ``--limit name=N`` applied (``interlock.Limits``: an
    integer >= 1, >= 0 for ``launch_first_batch``); exit 2 naming the bad one."""
    changes: dict[str, int] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if name not in _LIMIT_NAMES or not sep:
            fail(f"--limit {pair!r}: expected name=N with name one of "
                 f"{', '.join(_LIMIT_NAMES)}")
        least = 0 if name == "launch_first_batch" else 1
        try:
            value = int(text)  # 100_000 reads too
        except ValueError:
            fail(f"--limit {pair!r}: {text!r} is not an integer")
        if value < least:
            fail(f"--limit {pair!r}: {name} must be >= {least}")
        changes[name] = value
    # the names were checked against _LIMIT_NAMES (the int fields); mypy sees every field
    limits: Limits = attrs.evolve(DEFAULT_LIMITS, **changes)  # type: ignore[arg-type]
    return limits
