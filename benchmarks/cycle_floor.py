"""How close to graphlib a task cycle can get in CPython: ``python benchmarks/cycle_floor.py``.

The in-memory target of issue 10 is a task cycle within 10x of graphlib's cost per node. This
script measures, in one process and one run, four things per task of the same shapes the
benchmark drives (``chain-N``, ``fanout-N``, ``dag-N``):

- ``graphlib``: ``TopologicalSorter`` on the task graph (the benchmark's baseline);
- ``floor``: :func:`floor_cycle`, a purpose-built loop doing only the work the DAG contract
  gives every task (see its docstring for what it does and what it leaves out), on plain
  lists and dicts, with no store, no protocol, no records, no limits;
- ``records``: :func:`records_cycle`, the same loop with every change a store persists made a
  new frozen record of :mod:`interlock.records` and the worker's side given the library's
  values (``Claim``, ``TaskInput``, ``TaskRef``, ``NewArtifact``), each store step under a
  lock: the floor of any kernel that keeps the brief's architecture (frozen attrs values, a
  thread-safe store behind a protocol);
- ``kernel``: the real thing, :class:`~interlock.Kernel` over the in-memory store, driven the
  way ``benchmarks/run.py`` drives it.

The floor is not a proof that nothing cheaper exists, but a measurement of what the contract's
own steps cost in this interpreter before any architecture is added, and ``records`` what the
values alone add. Where ``records`` reaches the 10x budget, no kernel built on those values
can meet it, whatever it adds on top.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import threading
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

from interlock.records import (  # noqa: E402
    Artifact,
    NewArtifact,
    NodeRecord,
    RunRecord,
    TaskRecord,
    TaskRef,
)
from interlock.states import NodeState, RunState, TaskState  # noqa: E402
from interlock.values import Claim, TaskInput  # noqa: E402

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
    slugs, _, parents, children, aggregate = _graph(pipeline)
    settled = [False] * len(slugs)
    remaining = [0] * len(slugs)
    artifacts: list[list[dict[str, Any]]] = [[] for _ in slugs]
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


def _graph(pipeline: Mapping[str, Any]
           ) -> tuple[list[str], list[str], list[list[int]], list[list[int]], list[bool]]:
    """Slugs, plugins, parents and children (by index) and aggregate flags of ``pipeline``."""
    nodes = pipeline["nodes"]
    index = {n["slug"]: i for i, n in enumerate(nodes)}
    parents = [[index[p] for p in n.get("depends_on", ())] for n in nodes]
    children: list[list[int]] = [[] for _ in nodes]
    for i, its in enumerate(parents):
        for p in its:
            children[p].append(i)
    aggregate = [n.get("fan_mode") == "aggregate" for n in nodes]
    return ([n["slug"] for n in nodes], [n["plugin"] for n in nodes], parents, children,
            aggregate)


class _Transaction:
    """The least a thread-safe store's transaction can be: its run's lock held."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def records_cycle(pipeline: Mapping[str, Any],
                  outputs_of: Callable[[str], Iterable[Mapping[str, Any]]]) -> int:
    """:func:`floor_cycle` through the values the store protocol exchanges; returns tasks run.

    The same steps and the same plain planning, but each change a store would persist is a new
    frozen record of :mod:`interlock.records`, built with positional arguments (the cheapest
    way): a ``TaskRecord`` at launch, at claim and at completion, a ``NodeRecord`` per
    completion and per launch or settle, a ``RunRecord`` per settled node, an ``Artifact`` per
    output; the worker gets a ``Claim`` holding a ``TaskInput``, the queue ``TaskRef`` values,
    a completion hands ``NewArtifact`` values over; the claim and the completion each run
    under a lock (a thread-safe store's transaction). It still leaves out what
    :func:`floor_cycle` leaves out but the records: no protocol method calls, no storekit steps,
    no events, no limits, bindings, filters, generations or retries, and the run-wide
    artifact counter is a plain int rather than a record. So it is a floor for any kernel
    built on this library's values, not a design: what a kernel adds goes on top of it.
    """
    slugs, plugins, parents, children, aggregate = _graph(pipeline)
    run_id, now = "r", 1_000_000.0
    lock = _Transaction()
    run = RunRecord(run_id, dict(pipeline), {}, RunState.RUNNING, len(slugs), len(slugs))
    nodes = [NodeRecord(i, 0, NodeState.WAITING, len(parents[i])) for i in range(len(slugs))]
    artifacts: list[list[Artifact]] = [[] for _ in slugs]
    tasks: dict[str, TaskRecord] = {}
    queue: deque[TaskRef] = deque()
    seq = done = 0

    def launch(index: int) -> None:
        inputs = {slugs[p]: [a.to_dict() for a in artifacts[p]] for p in parents[index]}
        if aggregate[index] or not parents[index]:
            plans = [inputs]
        else:
            plans = [{slug: [a]} for slug, arts in inputs.items() for a in arts]
        if not plans:
            settle(index)
            return
        nodes[index] = NodeRecord(index, 0, NodeState.LAUNCHED, 0, len(plans), len(plans))
        slug, plugin = slugs[index], plugins[index]
        for k, plan in enumerate(plans):
            task_id = f"{slug}.0.{k}"
            tasks[task_id] = TaskRecord(run_id, task_id, index, 0, k, TaskState.QUEUED,
                                        {"inputs": plan, "bindings": {}}, None, "inherit",
                                        updated_at=now)
            queue.append(TaskRef(run_id, task_id, plugin))

    def settle(index: int) -> None:
        nonlocal run
        node = nodes[index]
        nodes[index] = NodeRecord(index, 0, NodeState.COMPLETED, 0, node.total_tasks, 0)
        run = RunRecord(run_id, run.pipeline, run.input, run.state, run.node_count,
                        run.unsettled - 1, updated_at=now)
        for child in children[index]:
            node = nodes[child]
            node = nodes[child] = NodeRecord(child, 0, node.state, node.remaining_parents - 1)
            if node.remaining_parents == 0:
                launch(child)

    for i, its in enumerate(parents):
        if not its:
            launch(i)
    while queue:
        ref = queue.popleft()
        with lock:  # claim
            task = tasks[ref.task_id]
            if task.state is not TaskState.QUEUED:
                continue
            attempt_id = os.urandom(16).hex()
            task = tasks[ref.task_id] = TaskRecord(
                run_id, task.task_id, task.node_index, 0, task.seq, TaskState.RUNNING,
                task.plan, task.origin, task.origin_mode, task.attempt + 1, attempt_id, "w",
                now + 60.0, task.not_before, None, None, now)
        index = task.node_index
        claim = Claim(run_id, task.task_id, attempt_id, TaskInput(
            run_id, task.task_id, slugs[index], ref.plugin, attempt_id, task.plan["inputs"],
            task.plan["bindings"], {}))
        outputs = outputs_of(slugs[index])  # the worker
        if not claim.input.task_id:
            raise AssertionError("claim without input")
        new = []
        for k, output in enumerate(outputs):
            fields = _DECODE(_ENCODE(output.get("fields", {})))
            data = output.get("data")
            if type(data) not in _SCALARS:
                data = _DECODE(_ENCODE(data))
            new.append(NewArtifact(f"{ref.task_id}/{k}", fields, data))
        with lock:  # complete
            task = tasks[ref.task_id]
            if task.state is not TaskState.RUNNING or task.attempt_id != claim.attempt_id:
                continue
            tasks[ref.task_id] = TaskRecord(
                run_id, task.task_id, index, 0, task.seq, TaskState.COMPLETED, task.plan,
                task.origin, task.origin_mode, task.attempt, task.attempt_id, task.worker,
                None, task.not_before, None, None, now)
            into = artifacts[index]
            for item in new:
                seq += 1
                into.append(Artifact(item.artifact_id, index, 0, task.task_id, seq,
                                     item.fields, item.data, item.artifact_id))
            node = nodes[index]
            node = nodes[index] = NodeRecord(index, 0, node.state, 0, node.total_tasks,
                                             node.remaining_tasks - 1)
            done += 1
            if node.remaining_tasks == 0:
                settle(index)
    if run.unsettled:
        raise RuntimeError("the records loop left nodes unsettled")
    return done


def _best_us(shape: shapes.Shape, reps: int,
             cycle: Callable[[Mapping[str, Any], Callable[[str], Iterable[Mapping[str, Any]]]],
                             int]) -> float:
    best = float("inf")
    for _ in range(reps):
        gc.collect()
        t0 = time.perf_counter()
        count = cycle(shape.pipeline, shape.outputs_of)
        best = min(best, time.perf_counter() - t0)
        if count != shape.tasks:
            raise RuntimeError(f"{shape.name}: {cycle.__name__} ran {count} of {shape.tasks} "
                               "tasks")
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
    records_cycle(warm.pipeline, warm.outputs_of)
    _kernel_us(warm, 1)
    print(f"us per task (best of {reps}); x = ratio to graphlib's cost per node of the same "
          "graph")
    print(f"{'shape':<14} {'tasks':>7} {'graphlib':>9} {'floor':>7} {'x':>6} {'records':>8} "
          f"{'x':>6} {'kernel':>7} {'x':>6} {'kernel/records':>14}")
    for shape in cases:
        base = graphlib_us_per_node(shape.task_graph(), reps)
        floor = _best_us(shape, reps, floor_cycle)
        records = _best_us(shape, reps, records_cycle)
        kernel = _kernel_us(shape, reps)
        print(f"{shape.name:<14} {shape.tasks:>7,} {base:>9.2f} {floor:>7.2f} "
              f"{floor / base:>5.1f}x {records:>8.2f} {records / base:>5.1f}x {kernel:>7.2f} "
              f"{kernel / base:>5.1f}x {kernel / records:>13.1f}x")
    print("\nfloor   = benchmarks/cycle_floor.py:floor_cycle, the contract's steps alone on "
          "plain lists and dicts\nrecords = records_cycle, the same steps through the "
          "protocol's frozen records and values, a lock per store transaction\nkernel  = "
          "Kernel + MemoryStore, driven as benchmarks/run.py drives it (cycle column)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
