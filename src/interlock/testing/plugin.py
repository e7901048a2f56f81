"""pytest plugin of the conformance harness (entry point ``pytest11: interlock``).

Registers the ``interlock_clause(id)`` marker carried by every conformance test and the
``--interlock-suite-version`` option (pin the suite for this run; overrides a class's
``suite_version``). Imports nothing but the standard library at collection time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

__all__ = ["pytest_addoption", "pytest_configure"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("interlock", "interlock store conformance")
    group.addoption(
        "--interlock-suite-version",
        action="store",
        default=None,
        metavar="VERSION",
        dest="interlock_suite_version",
        help="run only conformance checks introduced in this suite version or earlier "
             "(overrides suite_version on DagStoreConformance subclasses)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "interlock_clause(id): the store-contract clause a conformance test checks "
        "(see docs/store-contract.md); select with -m \"interlock_clause(id='claim.cas')\"",
    )
