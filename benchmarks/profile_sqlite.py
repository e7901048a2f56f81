"""Where a SQLite task cycle goes, statement by statement:
``python benchmarks/profile_sqlite.py ["fan_out(4000)"]`` (any ``ilbench.shapes`` call).

Runs the benchmark's driver (``ilbench.driver.drive``) on a ``SqliteStore`` in a temporary
directory after a warm-up, with every connection opened through a ``sqlite3.Connection``
subclass that times each ``execute``/``executemany`` by its first words. Prints, per task: the
time, calls and mean cost of each statement kind, then how COMMIT time splits between the
ordinary commits and the slowest ones (the commits that ran a WAL checkpoint). Timing a
statement adds about 1 us to it; the shares are what matters.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from time import perf_counter
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from ilbench import shapes  # noqa: E402
from ilbench.driver import drive  # noqa: E402

SPENT: defaultdict[str, float] = defaultdict(float)
CALLS: Counter[str] = Counter()
COMMITS: list[float] = []


class TimedConnection(sqlite3.Connection):
    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        start = perf_counter()
        try:
            return super().execute(sql, *args)
        finally:
            _count(" ".join(sql.split()[:3]), perf_counter() - start)

    def executemany(self, sql: str, *args: Any) -> sqlite3.Cursor:
        start = perf_counter()
        try:
            return super().executemany(sql, *args)
        finally:
            _count("many: " + " ".join(sql.split()[:3]), perf_counter() - start)


def _count(kind: str, seconds: float) -> None:
    SPENT[kind] += seconds
    CALLS[kind] += 1
    if kind == "COMMIT":
        COMMITS.append(seconds)


def main() -> int:
    connect = sqlite3.connect
    sqlite3.connect = lambda *a, **k: connect(*a, factory=TimedConnection, **k)  # type: ignore
    from interlock_sqlite import SqliteStore

    expr = sys.argv[1] if len(sys.argv) > 1 else "fan_out(4000)"
    name, _, args = expr.rstrip(")").partition("(")
    shape = getattr(shapes, name)(*(int(a) for a in args.split(",") if a.strip()))
    directory = tempfile.mkdtemp()
    drive(SqliteStore(os.path.join(directory, "warm.db")), shapes.fan_out(100), "warm-up")
    SPENT.clear()
    CALLS.clear()
    COMMITS.clear()
    stats = drive(SqliteStore(os.path.join(directory, "run.db")), shape, "profiled")
    n = stats.tasks
    print(f"{shape.name} on SqliteStore: {n:,} tasks; cpu {stats.cpu_us:.1f} us/task, "
          f"on_task_complete {stats.complete_us:.1f} us (median "
          f"{stats.complete_p50_s * 1e6:.1f}), claim_task {stats.claim_us:.1f} us")
    print(f"{'us/task':>8} {'calls/task':>10} {'us/call':>8}  statement")
    for kind, spent in sorted(SPENT.items(), key=lambda item: -item[1])[:14]:
        print(f"{spent / n * 1e6:8.1f} {CALLS[kind] / n:10.2f} "
              f"{spent / CALLS[kind] * 1e6:8.1f}  {kind}")
    if COMMITS:
        ordered = sorted(COMMITS)
        slow = ordered[-max(1, len(ordered) // 100):]  # the slowest 1%: checkpoints
        print(f"COMMIT: median {statistics.median(ordered) * 1e6:.1f} us, mean "
              f"{statistics.mean(ordered) * 1e6:.1f} us; the slowest 1% take "
              f"{sum(slow) / sum(ordered):.0%} of COMMIT time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
