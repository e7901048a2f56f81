"""The memory floor of an aggregate over N artifacts: ``python benchmarks/artifact_floor.py [N]``.

The 1,000,000-task benchmark run ends with ``agg``, an aggregate task whose ``TaskInput`` holds
every one of the N artifacts its dependency published (that is the aggregate contract: the
plugin receives the list). Whatever the kernel and the store do, the process that builds that
input materialises N :class:`~interlock.records.Artifact` values. This script measures what
that alone costs — N artifacts shaped like the benchmark's (``{"i": i}`` fields, a
``mem://item/i`` data string) built in a fresh process — and the size of their JSON, so the
peak-RSS target can be read against a floor measured on the same machine. Then the same
artifacts packed (:class:`~interlock.packed.PackedArtifacts`, what a wide aggregate's input
holds when its store can stream artifacts), built from a stream in another fresh process.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from collections.abc import Iterator

from interlock.records import Artifact


def _artifacts(n: int) -> Iterator[Artifact]:
    return (Artifact(f"each.0.{i}/0", 1, 0, f"each.0.{i}", i + 1, {"i": i}, f"mem://item/{i}",
                     f"each.0.{i}") for i in range(n))


def _resident_kb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 1024


def _packed(n: int) -> None:
    from interlock.packed import PackedArtifacts

    # the resident size now, not the peak: a child's ru_maxrss starts at its parent's (Linux)
    before = _resident_kb()
    packed = PackedArtifacts(_artifacts(n))
    grown = (_resident_kb() - before) / 1024
    print(f"{len(packed):,} artifacts packed: {grown:,.0f} MB "
          f"({grown * 1024 * 1024 / n:,.0f} bytes each)")


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[2] == "--packed":
        _packed(int(sys.argv[1]))
        return 0
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    artifacts = list(_artifacts(n))
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    sample = artifacts[:1000]
    per_json = len(json.dumps([a.to_dict() for a in sample])) / len(sample)
    print(f"{n:,} artifacts in memory: {grown:,.0f} MB ({grown * 1024 * 1024 / n:,.0f} bytes "
          f"each); as JSON: {per_json:,.0f} bytes each, {per_json * n / 1e6:,.0f} MB in all")
    del artifacts, sample
    sys.stdout.flush()
    subprocess.run([sys.executable, __file__, str(n), "--packed"], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
