"""``DagStoreConformance``: the pytest base class a store's own test suite subclasses.

.. code-block:: python

    from interlock.testing import DagStoreConformance

    class TestPgStore(DagStoreConformance):
        def make_store(self):
            return PgStore(DSN, namespace=self.unique_namespace())

One test per contract clause (``test_claim_cas`` checks ``[claim.cas]``), one race per clause
that promises something under concurrency (``test_claim_cas_race``) and the stateful machine
(``test_stateful_runs``). See docs/testing-your-store.md.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import ClassVar

import pytest
from hypothesis import HealthCheck, Phase
from hypothesis import settings as Settings

from interlock.protocols import DagStore
from interlock.testing._machine import MACHINE_ABILITIES, MachineConfig, run_machine
from interlock.testing._registry import CHECKS, Check, skip_reason
from interlock.testing._support import Harness
from interlock.testing.clauses import CLAUSES

__all__ = ["DagStoreConformance"]


class DagStoreConformance:
    """Subclass it (with a name pytest collects, e.g. ``TestMyStore``) and define
    :meth:`make_store`. Everything else is optional:

    - ``abilities``: optional abilities the store declares (see ``interlock.testing.clauses.
      ABILITIES``); a check needing an undeclared one is skipped with its clause id in the
      reason. Default ``{"threads"}``: one store object is safe to share between threads.
    - ``suite_version``: pin the suite; checks introduced after it are skipped (the command
      line option ``--interlock-suite-version`` overrides it).
    - ``stateful_max_examples`` / ``stateful_step_count`` or :meth:`stateful_settings`: the
      Hypothesis budget of ``test_stateful_runs``.
    - :meth:`cleanup_store`: called for every store :meth:`make_store` returned, after each
      test (and after each example of the stateful machine).
    - :meth:`make_reference_store`: the store the stateful machine compares against
      (default: ``interlock_memory.MemoryStore``).
    """

    abilities: ClassVar[frozenset[str]] = frozenset({"threads"})
    suite_version: ClassVar[str | None] = None
    stateful_max_examples: ClassVar[int] = 30
    stateful_step_count: ClassVar[int] = 40

    _interlock_cli_pin: str | None = None
    _interlock_namespace: str | None = None

    def make_store(self) -> DagStore:
        """A store for one test. Use :meth:`unique_namespace` to isolate tests that share a
        database server. May be called several times per test (each store is cleaned up)."""
        raise NotImplementedError(f"{type(self).__name__} must define make_store()")

    def make_reference_store(self) -> DagStore:
        """The reference the stateful machine compares the store under test with."""
        try:
            from interlock_memory import MemoryStore
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ImportError('the reference store needs interlock-memory: pip install '
                              '"interlock[testing]" (or pip install interlock-memory)') from exc
        return MemoryStore()

    def cleanup_store(self, store: DagStore) -> None:
        """Drop what the test created in ``store`` (default: nothing to do)."""

    def unique_namespace(self) -> str:
        """A fresh prefix per test (stable within the test): key prefix, schema or file name."""
        if self._interlock_namespace is None:
            self._interlock_namespace = f"il{uuid.uuid4().hex[:12]}"
        return self._interlock_namespace

    def stateful_settings(self) -> Settings:
        """Hypothesis settings of the stateful machine (the example database stays on)."""
        return Settings(max_examples=self.stateful_max_examples,
                        stateful_step_count=self.stateful_step_count, deadline=None,
                        phases=[p for p in Phase if p is not Phase.explain],
                        suppress_health_check=[HealthCheck.too_slow,
                                               HealthCheck.filter_too_much,
                                               HealthCheck.data_too_large])

    # ---- machinery -----------------------------------------------------------------------

    @pytest.fixture(autouse=True)
    def _interlock_options(self, request: pytest.FixtureRequest) -> Iterator[None]:
        pin = request.config.getoption("interlock_suite_version", None)
        self._interlock_cli_pin = str(pin) if pin else None
        yield

    def interlock_pin(self) -> str | None:
        """The suite version in effect: command line, else ``suite_version``, else none."""
        return self._interlock_cli_pin or self.suite_version

    def interlock_skip_reason(self, check: Check) -> str | None:
        return skip_reason(check, frozenset(self.abilities), self.interlock_pin())

    def interlock_execute(self, check: Check) -> None:
        """Run one check now (no skip logic): AssertionError naming the clause on failure."""
        harness = Harness(self.make_store, self.unique_namespace(), frozenset(self.abilities),
                          self.cleanup_store)
        try:
            if check.run is not None:
                check.run(harness)
            else:
                self._interlock_stateful(harness)
        except AssertionError:
            raise
        except Exception as exc:  # name the clause even when the store raised
            raise AssertionError(f"[{check.clause or check.id}] the check raised "
                                 f"{type(exc).__name__}: {exc}") from exc
        finally:
            harness.close()

    def _interlock_stateful(self, harness: Harness) -> None:
        abilities = frozenset(self.abilities)
        race_mode = ("threads" if "threads" in abilities
                     else "processes" if "processes" in abilities else None)
        config = MachineConfig(self.make_store, self.make_reference_store, self.cleanup_store,
                               harness.namespace, race_mode,
                               abilities=abilities & MACHINE_ABILITIES)
        run_machine(config, self.stateful_settings(), f"{type(self).__name__}Machine")

    def _interlock_test(self, check: Check) -> None:
        reason = self.interlock_skip_reason(check)
        if reason is not None:
            pytest.skip(reason)
        self.interlock_execute(check)


def _make_test(check: Check) -> object:
    def test(self: DagStoreConformance) -> None:
        self._interlock_test(check)

    test.__name__ = check.test_name
    test.__qualname__ = f"DagStoreConformance.{check.test_name}"
    if check.clause is None:
        test.__doc__ = ("[stateful] random pipelines through the kernel against this store and "
                        "the reference; invariants after every step")
    else:
        kind = "race: " if check.needs else ""
        test.__doc__ = f"[{check.clause}] {kind}{CLAUSES[check.clause].promise}"
    marked: object = pytest.mark.interlock_clause(id=check.clause or check.id)(test)
    return marked


for _check in CHECKS:
    setattr(DagStoreConformance, _check.test_name, _make_test(_check))
del _check
