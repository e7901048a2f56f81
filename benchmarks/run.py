"""Interlock benchmarks: ``python benchmarks/run.py [--quick]``.

Drives the kernel single-threaded and in-process (pop a dispatched ref -> claim_task ->
on_task_complete) through a chain, 1 -> N -> 1 fan-outs, a grouped scatter-gather and a
random layered DAG, on every importable adapter (memory, sqlite, redis); prints a table of
per-task costs, each divided by a baseline measured in the same run, the PASS/MISS verdict
of every target (never asserted), and writes everything to benchmarks/results/latest.json.
See docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from ilbench import adapters, batched, interleaved, report, rss  # noqa: E402
from ilbench.runner import Plan, Section, make_plan, run_section  # noqa: E402

RESULTS = HERE / "results" / "latest.json"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _sections(plan: Plan, only: set[str]) -> list[Section]:
    sections: list[Section] = []
    if "memory" in only:
        _log("memory: in-memory store (baseline: graphlib on the same task graph)")
        sections.append(run_section("memory", adapters.memory_backend(), plan.memory, plan,
                                    _log))
    if "sqlite" in only:
        module, why = adapters.try_import("interlock_sqlite", "sqlite")
        if module is None or not hasattr(module, "SqliteStore"):
            note = why or "interlock_sqlite has no SqliteStore yet"
            _log(f"sqlite: skipped: {note}")
            sections.append(Section("sqlite", skipped=note))
        else:
            _log("sqlite: SqliteStore on a temporary file")
            backend = adapters.sqlite_backend(module, plan.sqlite_raw_tx, plan.baseline_reps)
            sections.append(run_section("sqlite", backend, plan.sqlite, plan, _log))
    if "redis" in only:
        module, why = adapters.try_import("interlock_redis", "redis")
        if module is None or not hasattr(module, "RedisStore"):
            note = why or "interlock_redis has no RedisStore yet"
            _log(f"redis: skipped: {note}")
            sections.append(Section("redis", skipped=note))
        else:
            _log("redis: RedisStore")
            backend = adapters.redis_backend(module, plan.redis_calls, plan.baseline_reps)
            sections.append(run_section("redis", backend, plan.redis, plan, _log))
    return sections


def _block(title: str, table: str, legend: str) -> None:
    """A titled table and its legend, unless the table has no rows (its header only)."""
    if len(table.splitlines()) > 2:
        print()
        print(title)
        print(table)
        print()
        print(legend)


def _machine() -> dict[str, Any]:
    load: tuple[float, ...] = ()
    with contextlib.suppress(OSError):
        load = os.getloadavg()
    return {"python": platform.python_version(), "implementation": platform.python_implementation(),
            "platform": platform.platform(), "cpus": os.cpu_count(),
            "loadavg": [round(x, 2) for x in load]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, fewer repetitions, no 1,000,000-task run (CI)")
    parser.add_argument("--only", default="memory,sqlite,redis,rss",
                        help="comma-separated subset of memory,sqlite,redis,rss")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write JSON")
    parser.add_argument("--rss-tasks", type=int, default=None,
                        help="tasks of the peak-RSS run (default 1,000,000)")
    parser.add_argument("--rss-timeout", type=float, default=3 * 3600.0,
                        help="seconds the peak-RSS run may take")
    parser.add_argument("--rss-launch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rss-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.rss_worker:
        print(json.dumps(rss.worker(int(args.rss_worker[0]), args.rss_worker[1])))
        return 0
    if args.rss_launch:
        print(json.dumps(rss.launcher(Path(__file__), args.rss_launch, args.rss_timeout)))
        return 0

    only = {part.strip() for part in args.only.split(",") if part.strip()}
    plan = make_plan(args.quick, args.rss_tasks)
    started = time.perf_counter()
    machine = _machine()
    _log(f"interlock benchmarks ({'quick' if plan.quick else 'full'}) on Python "
         f"{machine['python']}, {machine['cpus']} CPUs, load {machine['loadavg']}")

    rss_result: dict[str, Any] | None = None
    if plan.rss_tasks is not None and "rss" in only:
        # first, while this process has no other child (a private redis-server comes later)
        module, why = adapters.try_import("interlock_sqlite", "sqlite")
        if module is None or not hasattr(module, "SqliteStore"):
            rss_result = {"error": why or "interlock_sqlite has no SqliteStore yet"}
        else:
            _log(f"rss: {plan.rss_tasks:,}-task fan-out on SQLite in a subprocess ...")
            rss_result = rss.measure(Path(__file__), plan.rss_tasks, args.rss_timeout)
        _log(f"  rss: {rss_result}")

    sections = _sections(plan, only)
    verdicts = report.verdicts(sections, plan, rss_result)
    elapsed = time.perf_counter() - started
    machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]

    print(f"Interlock benchmarks ({'--quick' if plan.quick else 'full'}), Python "
          f"{machine['python']}, {machine['cpus']} CPUs, load average "
          f"{machine['loadavg']} -> {machine['loadavg_end']}, {elapsed:.0f}s")
    print()
    print(report.table(sections))
    print()
    print(report.LEGEND)
    _block("Batched completions against raw group commit:",
           batched.table([row for s in sections for row in s.batched]), batched.LEGEND)
    _block("Interleaved runs (many runs at once, each a step at a time):",
           interleaved.table([row for s in sections for row in s.interleaved]),
           interleaved.LEGEND)
    if rss_result is not None:
        print()
        print(f"peak RSS run: {json.dumps(rss_result)}")
    print()
    print("Targets (reported, never asserted):")
    for verdict in verdicts:
        print(f"  {verdict.line()}")
    notes = [n for s in sections for n in s.notes]
    if notes:
        print()
        print("Notes:")
        for note in notes:
            print(f"  - {note}")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "quick": plan.quick, "elapsed_s": elapsed, "machine": machine,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "sections": [{"adapter": s.adapter, "skipped": s.skipped, "notes": s.notes,
                      "baseline_us": s.baseline_us, "baseline": s.baseline,
                      "rows": [r.to_json() for r in s.rows],
                      "batched": [b.to_json() for b in s.batched],
                      "interleaved": [r.to_json() for r in s.interleaved]} for s in sections],
        "rss": rss_result,
        "targets": [{"target": v.target, "status": v.status, "detail": v.detail}
                    for v in verdicts],
    }
    args.output.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
