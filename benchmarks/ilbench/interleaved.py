"""Many runs at once: the cost per task of N interleaved runs of one small chain.

A service whose pipelines are a feature of its product runs many small runs at once, each
advancing a step at a time between steps of the others. The driver starts ``runs`` runs of a
chain of ``length`` nodes, then serves the dispatched tasks first in, first out (claim ->
complete, as :mod:`ilbench.driver` does for one run), so every run advances one step per round:
past the kernel's run-context cache (``interlock._kernel_context.RUNS_CACHED``) each event of a
run finds its context evicted and reads the run again. The starts are not timed. Compared with
100 runs, the cost per task must stay flat (the same rule as the growth target, along this
axis): it did not while every such event compiled the pipeline again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from time import perf_counter, process_time
from typing import Any

import attrs

from ilbench import shapes
from ilbench.driver import FakeClock, QueueDispatcher
from interlock import Kernel

__all__ = ["LEGEND", "RunsRow", "measure", "table"]


@attrs.frozen
class RunsRow:
    adapter: str
    runs: int
    length: int
    tasks: int
    us_per_task: float
    cpu_us_per_task: float

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


def drive_runs(store: Any, runs: int, length: int, prefix: str) -> RunsRow:
    """Start ``runs`` chains, then run every task first in, first out; raises unless every run
    completed."""
    dispatcher = QueueDispatcher()
    kernel = Kernel(store, dispatcher, clock=FakeClock())
    pipeline = shapes.chain(length).pipeline
    run_ids = [f"{prefix}-{i}" for i in range(runs)]
    for run_id in run_ids:
        kernel.start_run(pipeline, run_id=run_id)
    queue: deque[Any] = dispatcher.queue
    outputs = [{"id": "out", "fields": {"k": 1}}]
    done = 0
    cpu0, t0 = process_time(), perf_counter()
    while queue:
        ref = queue.popleft()
        claim = kernel.claim_task(ref.run_id, ref.task_id, worker="bench")
        if claim is None:
            continue
        kernel.on_task_complete(ref.run_id, ref.task_id, claim.attempt_id, outputs)
        done += 1
    wall, cpu = perf_counter() - t0, process_time() - cpu0
    unfinished = [r for r in run_ids
                  if (run := store.get_run(r)) is None or run.state.value != "completed"]
    if done != runs * length or unfinished:
        raise RuntimeError(f"interleaved {runs} x chain-{length}: {done} tasks run, "
                           f"{len(unfinished)} runs not completed")
    return RunsRow("", runs, length, done, wall / done * 1e6, cpu / done * 1e6)


def measure(adapter: str, new_store: Callable[[], Any], counts: Sequence[int], length: int,
            between: Callable[[], None]) -> list[RunsRow]:
    drive_runs(new_store(), counts[0], length, "interleaved-warm-up")  # not recorded
    between()
    rows = []
    for runs in counts:
        row = drive_runs(new_store(), runs, length, f"interleaved-{runs}")
        rows.append(attrs.evolve(row, adapter=adapter))
        between()
    return rows


def table(rows: Sequence[RunsRow]) -> str:
    head = f"{'adapter':<8} {'runs':>6} {'length':>6} {'tasks':>7} {'us/task':>9} " \
           f"{'cpu us':>8} {'x fewest':>9}"
    lines = [head, "-" * len(head)]
    first: dict[str, float] = {}
    for row in rows:
        base = first.setdefault(row.adapter, row.us_per_task)
        lines.append(f"{row.adapter:<8} {row.runs:>6,} {row.length:>6} {row.tasks:>7,} "
                     f"{row.us_per_task:>9.1f} {row.cpu_us_per_task:>8.1f} "
                     f"{row.us_per_task / base:>8.2f}x")
    return "\n".join(lines)


LEGEND = """\
runs     = runs of one chain of `length` nodes started first, then served first in, first out
           (each run advances one step per round); the starts are not timed
us/task  = wall time of the claims and completions / tasks; cpu us = this process's CPU time
x fewest = us/task against the fewest runs of the same adapter"""
