"""How close to graphlib a task cycle can get in CPython: ``python benchmarks/cycle_floor.py``.

The in-memory target of issue 10 is a task cycle within 10x of graphlib's cost per node. This
script measures, in one process and one run, three things per task of the same shapes the
benchmark drives (``chain-N``, ``fanout-N``, ``dag-N``):

- ``graphlib``: ``TopologicalSorter`` on the task graph (the benchmark's baseline);
- ``floor``: :func:`floor_cycle`, a purpose-built loop doing only the work the DAG contract
  gives every task (see its docstring for what it does and what it leaves out), on plain
  lists and dicts, with no store, no protocol, no records, no limits;
- ``kernel``: the real thing, :class:`~interlock.Kernel` over the in-memory store, driven the
  way ``benchmarks/run.py`` drives it.

The floor is not a proof that nothing cheaper exists, but a measurement of what the contract's
own steps cost in this interpreter before any architecture is added. Where ``floor`` alone is a
large part of the 10x budget, the kernel would have to add almost nothing to it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from ilbench import shapes  # noqa: E402
from ilbench.baselines import graphlib_us_per_node  # noqa: E402
from ilbench.driver import drive  # noqa: E402

QUEUED, RUNNING, COMPLETED = 0, 1, 2
_ENCODE = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
_DECODE = json.JSONDecoder().decode
_SCALARS = (str, int, bool, type(None))


def floor_cycle(pipeline: Mapping[str, Any],
                outputs_of: Callable[[str], Iterable[Mapping[str, Any]]]) -> int:
    """Run ``pipeline`` (single and aggregate fan modes) to completion; returns tasks run.

    Per task it does what the contract requires of any kernel, each step in its cheapest plain
    form: the claim (state compare-and-set, attempt counter, a fresh random attempt id, the
    task's input handed over), the outputs validated and copied (one JSON encode and decode of
    the fields, as the kernel does), the completion fenced by the attempt id, each output
    published as an artifact (id, node, task, seq, origin, fields, data), the node's barrier
    counted down, and on the last task the ready children planned (single: a task per
    artifact; aggregate: one task over all) and dispatched (appended to a queue).

    It leaves out everything else the kernel does: the store boundary (protocol calls,
    transactions, immutable records copied on each change), generations and retries, leases
    and timestamps, the run record, bindings and edge filters, limits, skip cascades, the
    dispatcher's refs and the plan persisted as data.
    """
    nodes = pipeline["nodes"]
    index = {n["slug"]: i for i, n in enumerate(nodes)}
    parents = [[index[p] for p in n.get("depends_on", ())] for n in nodes]
    children: list[list[int]] = [[] for _ in nodes]
    for i, its in enumerate(parents):
        for p in its:
            children[p].append(i)
    aggregate = [n.get("fan_mode") == "aggregate" for n in nodes]
    slugs = [n["slug"] for n in nodes]
    settled = [False] * len(nodes)
    remaining = [0] * len(nodes)
    artifacts: list[list[dict[str, Any]]] = [[] for _ in nodes]
    tasks: dict[str, list[Any]] = {}
    queue: deque[str] = deque()
    seq = 0
    done = 0

    def launch(node: int) -> None:
        inputs = {slugs[p]: artifacts[p] for p in parents[node]}
        if aggregate[node] or not parents[node]:
            plans = [inputs]
        else:
            plans = [{slug: [a]} for slug, arts in inputs.items() for a in arts]
        if not plans:  # nothing reached it: filtered
            settle(node)
            return
        remaining[node] = len(plans)
        slug = slugs[node]
        for k, plan in enumerate(plans):
            task_id = f"{slug}.0.{k}"
            tasks[task_id] = [QUEUED, 0, None, node, plan]
            queue.append(task_id)

    def settle(node: int) -> None:
        settled[node] = True
        for child in children[node]:
            if all(settled[p] for p in parents[child]):
                launch(child)

    for i, its in enumerate(parents):
        if not its:
            launch(i)
    while queue:
        task_id = queue.popleft()
        # claim
        task = tasks[task_id]
        if task[0] != QUEUED:
            continue
        task[0] = RUNNING
        task[1] += 1
        attempt_id = task[2] = os.urandom(16).hex()
        claimed = {"task_id": task_id, "attempt": task[1], "inputs": task[4]}
        # the worker
        outputs = outputs_of(slugs[task[3]])
        if not claimed["task_id"]:
            raise AssertionError("claim without input")
        # complete: validate and copy, fence, publish, count down
        published = []
        for output in outputs:
            fields = _DECODE(_ENCODE(output.get("fields", {})))
            data = output.get("data")
            if type(data) not in _SCALARS:
                data = _DECODE(_ENCODE(data))
            published.append((fields, data))
        if task[0] != RUNNING or task[2] != attempt_id:
            continue
        task[0] = COMPLETED
        node = task[3]
        into = artifacts[node]
        for k, (fields, data) in enumerate(published):
            seq += 1
            artifact_id = f"{task_id}/{k}"
            into.append({"artifact_id": artifact_id, "node_index": node, "generation": 0,
                         "task_id": task_id, "seq": seq, "fields": fields, "data": data,
                         "origin": artifact_id})
        done += 1
        remaining[node] -= 1
        if remaining[node] == 0:
            settle(node)
    if not all(settled):
        raise RuntimeError("the floor loop left nodes unsettled")
    return done


def _floor_us(shape: shapes.Shape, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        gc.collect()
        t0 = time.perf_counter()
        count = floor_cycle(shape.pipeline, shape.outputs_of)
        best = min(best, time.perf_counter() - t0)
        if count != shape.tasks:
            raise RuntimeError(f"{shape.name}: the floor ran {count} of {shape.tasks} tasks")
    return best / shape.tasks * 1e6


def _kernel_us(shape: shapes.Shape, reps: int) -> float:
    from interlock_memory import MemoryStore

    return min(drive(MemoryStore(), shape, f"k{k}").cycle_us for k in range(reps))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="best of this many runs")
    parser.add_argument("--quick", action="store_true", help="small sizes, one run")
    args = parser.parse_args(argv)
    reps = 1 if args.quick else args.reps
    sizes = (100, 1_000) if args.quick else (1_000, 10_000)
    cases = [shapes.chain(sizes[1] // 10), shapes.fan_out(sizes[0]), shapes.fan_out(sizes[1]),
             shapes.layered(sizes[1])]
    warm = shapes.fan_out(10)  # imports and first calls out of the figures
    floor_cycle(warm.pipeline, warm.outputs_of)
    _kernel_us(warm, 1)
    print(f"us per task (best of {reps}); x = ratio to graphlib's cost per node of the same "
          "graph")
    print(f"{'shape':<14} {'tasks':>7} {'graphlib':>9} {'floor':>8} {'x':>6} {'kernel':>8} "
          f"{'x':>6} {'kernel/floor':>12}")
    for shape in cases:
        base = graphlib_us_per_node(shape.task_graph(), reps)
        floor = _floor_us(shape, reps)
        kernel = _kernel_us(shape, reps)
        print(f"{shape.name:<14} {shape.tasks:>7,} {base:>9.2f} {floor:>8.2f} "
              f"{floor / base:>5.1f}x {kernel:>8.2f} {kernel / base:>5.1f}x "
              f"{kernel / floor:>11.1f}x")
    print("\nfloor  = benchmarks/cycle_floor.py:floor_cycle, the contract's steps alone on "
          "plain lists and dicts\nkernel = Kernel + MemoryStore, driven as benchmarks/run.py "
          "drives it (cycle column)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
