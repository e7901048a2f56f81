"""Trivial plugins for the end-to-end benchmark (``--plugins benchmarks.e2e_support.plugins``).

Registered on the default registry under ``e2e.*`` names, so a worker process only has to import
this module. They do nothing but move a number along, so that the final aggregate can be
checked:

- ``e2e.source`` (root): ``config.n`` outputs with fields ``{"i": 0..n-1}``;
- ``e2e.work`` (one task per source artifact): one output ``{"v": i}``;
- ``e2e.aggregate`` (fan_mode aggregate): one output ``{"n": count, "sum": sum of v}``;
- ``e2e.step`` (chain): one output ``{"k": k + 1}`` where ``k`` is the upstream's (0 at the
  root).

With ``INTERLOCK_E2E_STATS=<file>`` in the environment, importing this module also installs the
client-side Redis round-trip counter of :mod:`benchmarks.e2e_support.rtt` in this process (the
benchmark uses it to count what ``interlock worker`` processes send; SIGUSR1 makes the process
write its counts to that file), and with ``INTERLOCK_E2E_OPTIMER=1`` the per-operation timers of
:mod:`benchmarks.e2e_support.optimer`. With ``INTERLOCK_E2E_SQL=<file>``, it counts this
process's SQLite statements into that shared file (:mod:`benchmarks.e2e_support.sqlcount`: the
SQLite runner's worker processes).
"""

from __future__ import annotations

import os
from typing import Any

from interlock.plugins import plugin
from interlock.values import TaskInput

__all__ = ["aggregate", "chain_pipeline", "fan_pipeline", "source", "step", "work"]


@plugin("e2e.source")
def source(task: TaskInput) -> list[dict[str, Any]]:
    n = int(task.config["n"])
    return [{"fields": {"i": i}} for i in range(n)]


@plugin("e2e.work")
def work(task: TaskInput) -> list[dict[str, Any]]:
    (artifact,) = task.inputs["src"]
    return [{"fields": {"v": artifact.fields["i"]}}]


@plugin("e2e.aggregate")
def aggregate(task: TaskInput) -> list[dict[str, Any]]:
    items = task.inputs.get("each", [])
    total = sum(int(a.fields["v"]) for a in items)
    return [{"fields": {"n": len(items), "sum": total}}]


@plugin("e2e.step")
def step(task: TaskInput) -> list[dict[str, Any]]:
    k = 0
    for artifacts in task.inputs.values():
        for artifact in artifacts:
            k = int(artifact.fields["k"])
    return [{"fields": {"k": k + 1}}]


def fan_pipeline(n: int) -> dict[str, Any]:
    """``src -> each (n tasks) -> agg``: 1 -> n -> 1, n + 2 tasks."""
    return {"name": f"e2e-fan-{n}", "nodes": [
        {"slug": "src", "plugin": "e2e.source", "config": {"n": n}},
        {"slug": "each", "plugin": "e2e.work", "depends_on": ["src"]},
        {"slug": "agg", "plugin": "e2e.aggregate", "depends_on": ["each"],
         "fan_mode": "aggregate"},
    ]}


def chain_pipeline(n: int) -> dict[str, Any]:
    """``c0 -> c1 -> ... -> c{n-1}``: n tasks, each released by the previous completion."""
    nodes: list[dict[str, Any]] = [{"slug": "c0", "plugin": "e2e.step"}]
    nodes += [{"slug": f"c{i}", "plugin": "e2e.step", "depends_on": [f"c{i - 1}"]}
              for i in range(1, n)]
    return {"name": f"e2e-chain-{n}", "nodes": nodes}


if os.environ.get("INTERLOCK_E2E_OPTIMER"):
    from benchmarks.e2e_support import optimer

    optimer.install()
if os.environ.get("INTERLOCK_E2E_STATS"):
    from benchmarks.e2e_support import rtt

    rtt.install(os.environ["INTERLOCK_E2E_STATS"])
if os.environ.get("INTERLOCK_E2E_SQL"):
    from benchmarks.e2e_support import sqlcount

    sqlcount.install(os.environ["INTERLOCK_E2E_SQL"])
