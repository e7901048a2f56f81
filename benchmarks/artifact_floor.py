"""The memory floor of an aggregate over N artifacts: ``python benchmarks/artifact_floor.py [N]``.

The 1,000,000-task benchmark run ends with ``agg``, an aggregate task whose ``TaskInput`` holds
every one of the N artifacts its dependency published (that is the aggregate contract: the
plugin receives the list). Whatever the kernel and the store do, the process that builds that
input materialises N :class:`~interlock.records.Artifact` values. This script measures what
that alone costs — N artifacts shaped like the benchmark's (``{"i": i}`` fields, a
``mem://item/i`` data string) built in a fresh process — and the size of their JSON, so the
peak-RSS target can be read against a floor measured on the same machine.
"""

from __future__ import annotations

import json
import resource
import sys


def main() -> int:
    from interlock.records import Artifact

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    artifacts = [Artifact(f"each.0.{i}/0", 1, 0, f"each.0.{i}", i + 1, {"i": i},
                          f"mem://item/{i}", f"each.0.{i}") for i in range(n)]
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    sample = artifacts[:1000]
    per_json = len(json.dumps([a.to_dict() for a in sample])) / len(sample)
    print(f"{n:,} artifacts in memory: {grown:,.0f} MB ({grown * 1024 * 1024 / n:,.0f} bytes "
          f"each); as JSON: {per_json:,.0f} bytes each, {per_json * n / 1e6:,.0f} MB in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
