"""``check_store``: run the conformance suite from plain Python (no pytest runner needed)."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable
from typing import Literal

import attrs
from hypothesis import settings as Settings

from interlock.protocols import DagStore
from interlock.testing._registry import CHECKS, Check
from interlock.testing.clauses import SUITE_VERSION
from interlock.testing.conformance import DagStoreConformance

__all__ = ["CheckResult", "ConformanceReport", "check_store"]

Status = Literal["pass", "fail", "skip"]


@attrs.frozen
class CheckResult:
    """The result of one check: ``check`` id (``claim.cas``, ``claim.cas-race``,
    ``stateful-runs``), the ``clause`` it belongs to, status, message and duration."""

    check: str
    clause: str | None
    status: Status
    message: str = ""
    seconds: float = 0.0


@attrs.frozen
class ConformanceReport:
    """Per-check results of :func:`check_store`."""

    results: tuple[CheckResult, ...]
    suite_version: str = SUITE_VERSION

    @property
    def ok(self) -> bool:
        """True when no check failed (skips are not failures)."""
        return not self.failed

    @property
    def passed(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "pass"]

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "fail"]

    @property
    def skipped(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "skip"]

    def __getitem__(self, check: str) -> CheckResult:
        for result in self.results:
            if result.check == check:
                return result
        raise KeyError(check)

    def by_clause(self) -> dict[str, Status]:
        """Per clause id: ``fail`` if any of its checks failed, else ``pass`` if one ran."""
        out: dict[str, Status] = {}
        rank = {"fail": 2, "pass": 1, "skip": 0}
        for r in self.results:
            key = r.clause or r.check
            if key not in out or rank[r.status] > rank[out[key]]:
                out[key] = r.status
        return out

    def summary(self) -> str:
        lines = [f"interlock store conformance (suite {self.suite_version}): "
                 f"{len(self.passed)} passed, {len(self.failed)} failed, "
                 f"{len(self.skipped)} skipped"]
        for r in self.results:
            lines.append(f"  {r.status.upper():4}  {r.check:32} {r.seconds:6.2f}s")
            if r.status != "pass" and r.message:
                lines.extend(f"        {line}" for line in r.message.splitlines())
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def raise_for_failures(self) -> None:
        """AssertionError listing every failed check, if any failed."""
        if not self.ok:
            raise AssertionError(self.summary())


def _describe(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    if isinstance(exc, AssertionError):
        text = text.removeprefix("AssertionError: ")
    if isinstance(exc, BaseExceptionGroup):
        text += "".join(f"\n{_describe(inner)}" for inner in exc.exceptions)
    if exc.__cause__ is not None:
        text += f"\ncaused by: {_describe(exc.__cause__)}"
    return text


def select(only: Iterable[str] | None) -> list[Check]:
    """The checks named by clause ids or check ids (all of them for None)."""
    if only is None:
        return list(CHECKS)
    wanted = set(only)
    known = {c.id for c in CHECKS} | {c.clause for c in CHECKS if c.clause}
    unknown = sorted(wanted - known)
    if unknown:
        raise ValueError(f"unknown check or clause id(s) {unknown}; known: {sorted(known)}")
    return [c for c in CHECKS if c.id in wanted or c.clause in wanted]


def check_store(
    factory: Callable[..., DagStore],
    *,
    abilities: Iterable[str] = ("threads",),
    suite_version: str | None = None,
    only: Iterable[str] | None = None,
    namespaced: bool = False,
    cleanup: Callable[[DagStore], None] | None = None,
    reference: Callable[[], DagStore] | None = None,
    stateful_settings: Settings | None = None,
) -> ConformanceReport:
    """Run every check (or ``only`` those clause / check ids) against stores from ``factory``.

    ``factory()`` returns a fresh store; with ``namespaced=True`` it is called as
    ``factory(namespace)`` with a fresh namespace per check. ``abilities``, ``suite_version``,
    ``cleanup`` and ``reference`` mean what they mean on :class:`DagStoreConformance`.
    Never raises for a failing store: see :attr:`ConformanceReport.ok` and
    :meth:`ConformanceReport.raise_for_failures`.
    """
    declared = frozenset(abilities)

    class Adhoc(DagStoreConformance):
        def make_store(self) -> DagStore:
            return factory(self.unique_namespace()) if namespaced else factory()

        def cleanup_store(self, store: DagStore) -> None:
            if cleanup is not None:
                cleanup(store)

        def make_reference_store(self) -> DagStore:
            return reference() if reference is not None else super().make_reference_store()

        def stateful_settings(self) -> Settings:
            return stateful_settings or super().stateful_settings()

    Adhoc.abilities = declared
    Adhoc.suite_version = suite_version
    label = "".join(ch for ch in getattr(factory, "__name__", "") if ch.isalnum() or ch == "_")
    Adhoc.__name__ = Adhoc.__qualname__ = f"Check{label or 'Store'}"
    results: list[CheckResult] = []
    for check in select(only):
        instance = Adhoc()
        reason = instance.interlock_skip_reason(check)
        if reason is not None:
            results.append(CheckResult(check.id, check.clause, "skip", reason))
            continue
        started = time.perf_counter()
        try:
            instance.interlock_execute(check)
        except Exception as exc:  # a failing store must not stop the other checks
            results.append(CheckResult(check.id, check.clause, "fail", _describe(exc),
                                       time.perf_counter() - started))
        else:
            results.append(CheckResult(check.id, check.clause, "pass", "",
                                       time.perf_counter() - started))
    return ConformanceReport(tuple(results))
