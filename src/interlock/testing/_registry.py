"""Every check the harness runs: one per clause, the races, the stateful machine."""

from __future__ import annotations

from collections.abc import Callable

import attrs

from interlock.testing import _checks_ahead as ahead
from interlock.testing import _checks_batch as batch
from interlock.testing import _checks_follow as follow
from interlock.testing import _checks_runs as runs
from interlock.testing import _checks_tasks as tasks
from interlock.testing import _races as races
from interlock.testing._support import Harness
from interlock.testing.clauses import CLAUSES, SUITE_VERSION, parse_version, test_name

__all__ = ["CHECKS", "Check", "skip_reason"]

RACE = frozenset({"threads", "processes"})


@attrs.frozen
class Check:
    """One test of the suite. ``needs``: abilities of which at least one must be declared;
    ``requires``: abilities that must all be declared."""

    id: str
    clause: str | None
    run: Callable[[Harness], None] | None
    needs: frozenset[str] = frozenset()
    requires: frozenset[str] = frozenset()
    version: str = attrs.field(default=attrs.Factory(
        lambda self: CLAUSES[self.clause].version if self.clause else SUITE_VERSION,
        takes_self=True))

    @property
    def test_name(self) -> str:
        return test_name(self.id)


def _clause(clause: str, run: Callable[[Harness], None], *requires: str) -> Check:
    return Check(clause, clause, run, requires=frozenset(requires))


def _race(clause: str, run: Callable[[Harness], None], *requires: str) -> Check:
    return Check(f"{clause}-race", clause, run, RACE, frozenset(requires))


CHECKS: tuple[Check, ...] = (
    _clause("run.create", runs.check_run_create),
    _clause("launch.atomic", runs.check_launch_atomic),
    _clause("launch.batches", runs.check_launch_batches),
    _clause("settle.once", runs.check_settle_once),
    _clause("claim.cas", tasks.check_claim_cas),
    _clause("lease.renew", tasks.check_lease_renew),
    _clause("lease.expired", tasks.check_lease_expired),
    _clause("complete.once", tasks.check_complete_once),
    _clause("complete.fenced", tasks.check_complete_fenced),
    _clause("complete.counters", tasks.check_complete_counters),
    _clause("fail.retry", tasks.check_fail_retry),
    _clause("fail.fenced", tasks.check_fail_fenced),
    _clause("wait.fenced", tasks.check_wait_fenced),
    _clause("wait.resume", tasks.check_wait_resume),
    _clause("terminal.once", runs.check_terminal_once),
    _clause("terminal.cancels-unfinished", runs.check_terminal_cancels_unfinished),
    _clause("retry.fenced", runs.check_retry_fenced),
    _clause("reads.ordering", tasks.check_reads_ordering),
    _clause("artifacts.origin", tasks.check_artifacts_origin),
    _clause("batch.claim", batch.check_batch_claim, "batched"),
    _clause("batch.complete", batch.check_batch_complete, "batched"),
    _clause("complete.prefetch", batch.check_complete_prefetch, "prefetch"),
    _clause("launch.claim", batch.check_launch_claim, "handover"),
    _clause("launch.many", runs.check_launch_many, "launch_many"),
    _clause("launch.ahead", ahead.check_launch_ahead, "launch_ahead"),
    _clause("complete.follow", follow.check_complete_follow, "follow"),
    _clause("artifacts.stream", batch.check_artifacts_stream, "stream"),
    _clause("artifacts.many", batch.check_artifacts_many, "read_many"),
    _race("launch.atomic", races.race_launch_atomic),
    _race("settle.once", races.race_settle_once),
    _race("claim.cas", races.race_claim_cas),
    _race("complete.once", races.race_complete_once),
    _race("complete.counters", races.race_complete_counters),
    _race("terminal.once", races.race_terminal_once),
    _race("retry.fenced", races.race_retry_fenced),
    _race("batch.claim", batch.race_batch_claim, "batched"),
    _race("batch.complete", batch.race_batch_complete, "batched"),
    Check("stateful-runs", None, None),
)
assert {c.clause for c in CHECKS if c.clause} == set(CLAUSES), "a clause without a check"


def skip_reason(check: Check, abilities: frozenset[str], pin: str | None) -> str | None:
    """Why ``check`` is skipped for a store with ``abilities`` and a suite ``pin``, or None."""
    label = check.clause or check.id
    if pin is not None and parse_version(check.version) > parse_version(pin):
        return (f"[{label}] introduced in suite version {check.version}, after the pinned "
                f"suite_version {pin}")
    missing = sorted(check.requires - abilities)
    if missing:
        return (f"[{label}] needs the ability {missing[0]!r}; declare it in abilities to run "
                "it")
    if check.needs and not check.needs & abilities:
        wanted = " or ".join(repr(a) for a in sorted(check.needs))
        return f"[{label}] needs the ability {wanted}; declare it in abilities to run it"
    return None
