"""Profile the in-memory 1 -> 10,000 -> 1 run: ``python benchmarks/profile_fanout.py [N]``.

Prints the top 25 functions by cumulative time (cProfile + pstats), then the top 15 by own
time, as pasted into benchmarks/PROFILE.md. A warm-up run first keeps imports and first-call
costs out.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from ilbench import shapes  # noqa: E402
from ilbench.driver import drive  # noqa: E402


def main() -> int:
    from interlock_memory import MemoryStore

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    drive(MemoryStore(), shapes.fan_out(100), "warm-up")
    shape = shapes.fan_out(n)
    profiler = cProfile.Profile()
    store = MemoryStore()
    profiler.enable()
    stats = drive(store, shape, "profiled")
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("cumulative").print_stats(top)
    print(f"fan-out 1 -> {n:,} -> 1 on MemoryStore: {stats.tasks:,} tasks, "
          f"{stats.total_s:.2f}s under the profiler ({stats.cycle_us:.1f} us/task)")
    print(out.getvalue())
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime").print_stats(15)
    print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
