"""Reading pipeline definitions from YAML or JSON files."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from interlock.errors import UsageError

__all__ = ["PipelineFileError", "add_plugin_path", "load_pipeline_file"]


class PipelineFileError(UsageError):
    """A pipeline file could not be read or parsed. ``path``, ``line`` and ``column`` (1-based,
    None when unknown) say where; ``node`` and ``field`` are a best-effort guess for YAML syntax
    errors (the nearest ``slug:`` above the error and the key on its line); ``reason`` is the
    parser's message on one line."""

    def __init__(self, path: str, reason: str, line: int | None = None,
                 column: int | None = None, *, node: str | None = None,
                 field: str | None = None) -> None:
        self.path, self.reason, self.line, self.column = path, reason, line, column
        self.node, self.field = node, field
        where = f"line {line}, column {column}: " if line is not None else ""
        if node is not None:
            where += f"node {node!r}, "
        if field is not None:
            where += f"field {field!r}, "
        if node is not None or field is not None:
            where = where[:-2] + ": "
        super().__init__(f"{path}: {where}{reason}")


_KEY = re.compile(r"^\s*(?:-\s+)?([A-Za-z_][\w.-]*)\s*:")
_SLUG = re.compile(r"^\s*(?:-\s+)?slug\s*:\s*['\"]?([\w-]+)")


def _locate(text: str, line: int) -> tuple[str | None, str | None]:
    """The node (nearest ``slug:`` at or above ``line``) and field (key on ``line``)."""
    lines = text.splitlines()
    if not 1 <= line <= len(lines):
        return None, None
    key = _KEY.match(lines[line - 1])
    field = key.group(1) if key else None
    node = None
    for above in reversed(lines[:line]):
        slug = _SLUG.match(above)
        if slug:
            node = slug.group(1)
            break
        if above.startswith("nodes:"):
            break
    return node, field


def _yaml_module() -> Any:
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML is installed in development
        raise UsageError('reading YAML pipelines needs PyYAML: pip install "interlock[yaml]" '
                         "(or write the pipeline as JSON)") from None
    return yaml


def load_pipeline_file(path: str | Path) -> dict[str, Any]:
    """The pipeline's dict form from a ``.yaml``/``.yml`` or ``.json`` file.

    YAML needs PyYAML (the ``yaml`` extra), imported only here. Raises
    :class:`PipelineFileError` for an unreadable file, a syntax error (with line and column) or
    a document that is not a mapping. The dict is not validated: see ``interlock.validate``.
    """
    name = str(path)
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise PipelineFileError(name, "expected a .yaml, .yml or .json file")
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise PipelineFileError(name, exc.strerror or str(exc)) from exc
    except UnicodeDecodeError as exc:
        raise PipelineFileError(name, f"not UTF-8 text: {exc.reason}") from exc
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PipelineFileError(name, exc.msg, exc.lineno, exc.colno) from exc
    else:
        yaml = _yaml_module()
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problem = getattr(exc, "problem", None) or str(exc)
            context = getattr(exc, "context", None)
            reason = " ".join(f"{context or ''} {problem}".split())
            if mark is not None:
                node, field = _locate(text, mark.line + 1)
                raise PipelineFileError(name, reason, mark.line + 1, mark.column + 1,
                                        node=node, field=field) from exc
            raise PipelineFileError(name, " ".join(str(exc).split())) from exc
    if not isinstance(data, dict):
        raise PipelineFileError(name, f"the document must be a mapping with 'nodes', got "
                                      f"{type(data).__name__}")
    return data


def add_plugin_path(pipeline_path: str | Path) -> str:
    """Put the pipeline file's directory first on ``sys.path`` (once) so ``module:function``
    plugin names next to the pipeline import, in this process and in spawned workers."""
    directory = str(Path(pipeline_path).resolve().parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    return directory
