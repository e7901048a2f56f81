"""The conformance harness for :class:`~interlock.protocols.DagStore` implementations.

Install with ``pip install "interlock[testing]"`` (pytest, Hypothesis and the reference store).
Subclass :class:`DagStoreConformance` in your store's test suite, or call :func:`check_store`
from plain Python; see docs/testing-your-store.md. ``CLAUSES`` maps each contract clause id to
``(version introduced, promise)``; ``SUITE_VERSION`` is this suite's version.

Importing this package is cheap: pytest and Hypothesis are imported on first use of
``DagStoreConformance`` / ``check_store`` (an ImportError names the extra when they are missing).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from interlock.testing.clauses import ABILITIES, CLAUSES, SUITE_VERSION, Clause

if TYPE_CHECKING:
    from interlock.testing.conformance import DagStoreConformance
    from interlock.testing.runner import CheckResult, ConformanceReport, check_store

__all__ = [
    "ABILITIES",
    "CLAUSES",
    "SUITE_VERSION",
    "CheckResult",
    "Clause",
    "ConformanceReport",
    "DagStoreConformance",
    "check_store",
]

_LAZY = {
    "DagStoreConformance": "interlock.testing.conformance",
    "CheckResult": "interlock.testing.runner",
    "ConformanceReport": "interlock.testing.runner",
    "check_store": "interlock.testing.runner",
}


def _require_extra() -> None:
    missing = []
    for name in ("pytest", "hypothesis"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ImportError(f"interlock.testing needs {' and '.join(missing)}: "
                          'pip install "interlock[testing]"', name=missing[0])


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'interlock.testing' has no attribute {name!r}")
    _require_extra()
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
