"""The harness as users meet it: imports, one test per clause, skips, isolation, the runner,
the pytest plugin, reproducible failures."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings

import interlock.testing
from interlock.protocols import DagStore
from interlock.testing import CLAUSES, SUITE_VERSION, DagStoreConformance, check_store
from interlock.testing._registry import CHECKS
from interlock.testing.clauses import parse_version, test_name
from interlock_memory import MemoryStore

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent


def _python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, check=True, timeout=120)
    return done.stdout.strip()


# ---- imports -------------------------------------------------------------------------------


def test_missing_extra_names_it() -> None:
    out = _python("""
        import sys
        sys.modules["hypothesis"] = None  # as if Hypothesis were not installed
        import interlock.testing  # cheap, and fine without the extra
        try:
            from interlock.testing import DagStoreConformance
        except ImportError as exc:
            print(exc)
    """)
    assert out == 'interlock.testing needs hypothesis: pip install "interlock[testing]"'


def test_plugin_imports_nothing_heavy() -> None:
    out = _python("""
        import sys
        import interlock.testing.plugin
        heavy = ["hypothesis", "pytest", "interlock.testing.conformance", "interlock_memory"]
        print([m for m in heavy if m in sys.modules])
    """)
    assert out == "[]"
    tree = ast.parse((ROOT / "src/interlock/testing/plugin.py").read_text(encoding="utf-8"))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"__future__", "typing", "pytest"}  # pytest only under TYPE_CHECKING


def test_plugin_does_not_import_the_kernel() -> None:
    assert _python("import sys, interlock.testing.plugin; "
                   "print('interlock.kernel' in sys.modules)") == "False"


# ---- the clause table and the test class ---------------------------------------------------


def test_clause_table() -> None:
    assert len(CLAUSES) >= 19
    for clause_id, (version, promise) in CLAUSES.items():
        assert re.fullmatch(r"[a-z]+\.[a-z-]+", clause_id)
        assert parse_version(version) <= parse_version(SUITE_VERSION)
        assert promise and "\n" not in promise


def test_one_test_method_per_clause() -> None:
    assert not DagStoreConformance.__name__.startswith("Test")
    for clause_id in CLAUSES:
        method = getattr(DagStoreConformance, test_name(clause_id))
        assert f"[{clause_id}]" in method.__doc__
        (mark,) = [m for m in method.pytestmark if m.name == "interlock_clause"]
        assert mark.kwargs == {"id": clause_id}
    for name in ("claim.cas", "complete.once", "complete.counters", "terminal.once"):
        assert hasattr(DagStoreConformance, test_name(name) + "_race")
    assert DagStoreConformance.test_stateful_runs.__doc__.startswith("[stateful]")


def test_every_clause_has_a_section_in_the_contract_doc() -> None:
    text = (ROOT / "docs/store-contract.md").read_text(encoding="utf-8")
    for clause_id, (version, _) in CLAUSES.items():
        assert f"### `{clause_id}`" in text, clause_id
        section = text.split(f"### `{clause_id}`", 1)[1].split("\n### ", 1)[0]
        assert f"since {version}" in section, clause_id


# ---- check_store ---------------------------------------------------------------------------


def test_report_shape() -> None:
    report = check_store(MemoryStore, only=["claim.cas", "terminal.once"])
    assert report.ok
    assert [r.check for r in report.results] == [
        "claim.cas", "terminal.once", "claim.cas-race", "terminal.once-race"]
    assert report.by_clause() == {"claim.cas": "pass", "terminal.once": "pass"}
    assert "4 passed, 0 failed, 0 skipped" in str(report)
    report.raise_for_failures()
    with pytest.raises(ValueError, match="unknown check or clause"):
        check_store(MemoryStore, only=["claim.cass"])


def test_undeclared_ability_skips_with_the_clause_id() -> None:
    report = check_store(MemoryStore, abilities=(), only=["claim.cas"])
    assert report["claim.cas"].status == "pass"
    skipped = report["claim.cas-race"]
    assert skipped.status == "skip"
    assert "[claim.cas]" in skipped.message and "'threads'" in skipped.message


def test_suite_version_pin_skips_later_clauses() -> None:
    report = check_store(MemoryStore, suite_version="0.0", only=["run.create", "stateful-runs"])
    assert [r.status for r in report.results] == ["skip", "skip"]
    assert "[run.create] introduced in suite version 0.1" in report["run.create"].message
    assert check_store(MemoryStore, suite_version=SUITE_VERSION, only=["run.create"]).ok


class _Proxy:
    """A distinct store object over shared data, as a second process's connection is."""

    def __init__(self, inner: MemoryStore) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_namespaces_cleanup_and_the_processes_ability() -> None:
    shared: dict[str, MemoryStore] = {}
    made: list[tuple[str, DagStore]] = []
    cleaned: list[DagStore] = []

    def factory(namespace: str) -> DagStore:
        store: Any = _Proxy(shared.setdefault(namespace, MemoryStore()))
        made.append((namespace, store))
        return store  # type: ignore[no-any-return]

    quick = settings(max_examples=5, stateful_step_count=20, deadline=None, database=None,
                     suppress_health_check=list(HealthCheck))
    report = check_store(factory, namespaced=True, abilities=("processes",),
                         cleanup=cleaned.append, stateful_settings=quick,
                         only=["claim.cas", "complete.counters", "stateful-runs"])
    assert report.ok, str(report)
    assert sorted(map(id, cleaned)) == sorted(id(s) for _, s in made)
    namespaces = {ns for ns, _ in made}
    assert len(namespaces) == 5 and all(ns.startswith("il") for ns in namespaces)
    assert max(sum(1 for ns, _ in made if ns == n) for n in namespaces) > 8  # racers' stores


def test_declared_ability_that_misbehaves_fails() -> None:
    report = check_store(MemoryStore, abilities=("processes",), only=["claim.cas-race"])
    assert report["claim.cas-race"].status == "fail"
    assert "ability 'processes' is declared" in report["claim.cas-race"].message


def test_a_failure_prints_the_shrunk_program() -> None:
    class CancelTwice(MemoryStore):
        def cancel_run(self, run_id: str, reason: str, now: float) -> Any:
            run = self.get_run(run_id)
            if run is not None and run.state.terminal:
                from interlock.records import Transition
                return Transition("applied", (), run.state)
            return super().cancel_run(run_id, reason, now)

    shrink = settings(max_examples=30, stateful_step_count=12, deadline=None, database=None,
                      derandomize=True, suppress_health_check=list(HealthCheck),
                      phases=[p for p in Phase if p is not Phase.explain])
    result = check_store(CancelTwice, only=["stateful-runs"], stateful_settings=shrink)
    message = result["stateful-runs"].message
    assert message.startswith("[stateful:same-outcome] (terminal.once"), message
    # Hypothesis' heading for the shrunk program changed between releases
    assert "Falsifying example" in message or "Failing test case" in message, message
    assert "state = CheckCancelTwiceMachine()" in message
    assert "state.run_level(action='cancel')" in message
    assert message.count("state.") <= 10, f"not shrunk:\n{message}"


# ---- pytest: the plugin, the marker, the option --------------------------------------------


@pytest.fixture
def user_suite(pytester: pytest.Pytester) -> Iterator[pytest.Pytester]:
    pytester.makepyfile(test_user_store="""
        from interlock.testing import DagStoreConformance
        from interlock_memory import MemoryStore

        class TestUserStore(DagStoreConformance):
            def make_store(self):
                return MemoryStore()
    """)
    yield pytester


def test_pytest_collects_one_test_per_check(user_suite: pytest.Pytester) -> None:
    result = user_suite.runpytest("--collect-only", "-q", "--strict-markers")
    names = [line.split("::")[-1] for line in result.outlines if "::" in line]
    assert names == [c.test_name for c in CHECKS]


def test_pytest_runs_and_selects_by_clause(user_suite: pytest.Pytester) -> None:
    result = user_suite.runpytest("-m", "interlock_clause(id='claim.cas')", "--strict-markers",
                                  "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, deselected=len(CHECKS) - 2)


def test_pytest_suite_version_option(user_suite: pytest.Pytester) -> None:
    result = user_suite.runpytest("--interlock-suite-version=0.0", "-rs", "-k", "run_create",
                                  "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=1, deselected=len(CHECKS) - 1)
    result.stdout.fnmatch_lines(["*[[]run.create[]] introduced in suite version 0.1*"])


def test_lazy_attribute_errors() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        interlock.testing.nope  # noqa: B018
    assert "check_store" in dir(interlock.testing)
