"""The batched completion path against raw group commit (issue 10's batched target).

One 1 -> N -> 1 run per adapter: its source completed, so N middle tasks are queued. Disjoint
slices of them are claimed (not timed) and completed ``k`` at a time: ``k = 1`` through
``kernel.on_task_complete`` (the one-at-a-time path), larger ``k`` through
``kernel.on_tasks_complete`` (one store transaction or script for the ``k``, the ``batched``
ability). The baseline is the adapter's raw write at the same grouping, measured in the same
run: SQLite ``k`` x (UPDATE; UPDATE; INSERT) in one ``BEGIN IMMEDIATE .. COMMIT``; Redis ``k``
raw three-write EVALSHAs in one pipeline (one round trip). So each row says what batching
gains over one at a time, and how close that comes to what the same grouping gains raw.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from time import perf_counter
from typing import Any

import attrs

from ilbench import shapes
from ilbench.driver import make_kernel

_OUTPUTS = [{"fields": {"k": 1}}]


@attrs.frozen
class BatchRow:
    adapter: str
    k: int
    tasks: int
    us_per_task: float
    raw_us_per_item: float
    round_trips_per_task: float | None = None

    @property
    def raw_x(self) -> float:
        """The batched path's cost per task / the raw grouped write's cost per item."""
        return self.us_per_task / self.raw_us_per_item

    def to_json(self) -> dict[str, Any]:
        return {**attrs.asdict(self), "raw_x": self.raw_x}


def measure(adapter: str, new_store: Callable[[], Any], raw_us: Callable[[int], float],
            sizes: Sequence[int], per_size: int, round_trips: Callable[[], int] | None = None
            ) -> list[BatchRow]:
    """One row per ``k`` in ``sizes``: ``per_size`` tasks completed ``k`` at a time."""
    shape = shapes.fan_out(per_size * len(sizes) + 1)  # one more: the aggregate never runs
    kernel, dispatcher = make_kernel(new_store(), shape)
    run_id = "batched"
    kernel.start_run(shape.pipeline, run_id=run_id)
    source = dispatcher.queue.popleft()
    claim = kernel.claim_task(run_id, source.task_id, worker="bench")
    if claim is None:
        raise RuntimeError("the source task could not be claimed")
    kernel.on_task_complete(run_id, source.task_id, claim.attempt_id, shape.outputs_of("src"))
    task_ids = [ref.task_id for ref in dispatcher.queue]
    if len(task_ids) != per_size * len(sizes) + 1:
        raise RuntimeError(f"{adapter}: {len(task_ids)} middle tasks dispatched")
    rows = []
    for i, k in enumerate(sizes):
        ids = task_ids[i * per_size:(i + 1) * per_size]
        claims = [c for start in range(0, len(ids), k)
                  for c in kernel.claim_tasks(run_id, ids[start:start + k], worker="bench")]
        if len(claims) != len(ids):
            raise RuntimeError(f"{adapter}: {len(ids) - len(claims)} claims lost")
        groups = [claims[start:start + k] for start in range(0, len(claims), k)]
        rts = round_trips() if round_trips is not None else 0
        t0 = perf_counter()
        for group in groups:
            if k == 1:
                kernel.on_task_complete(run_id, group[0].task_id, group[0].attempt_id,
                                        _OUTPUTS)
            else:
                kernel.on_tasks_complete(run_id, [(c.task_id, c.attempt_id, _OUTPUTS)
                                                  for c in group])
        elapsed = perf_counter() - t0
        spent = (round_trips() - rts) / len(claims) if round_trips is not None else None
        rows.append(BatchRow(adapter, k, len(claims), elapsed / len(claims) * 1e6, raw_us(k),
                             spent))
    return rows


def table(rows: Sequence[BatchRow]) -> str:
    head = (f"{'adapter':<7} {'k':>5} {'tasks':>6} {'us/task':>8} {'gain':>6} "
            f"{'raw us':>8} {'raw gain':>8} {'x raw':>6} {'RT/task':>8}")
    lines = [head, "-" * len(head)]
    ones = {r.adapter: r for r in rows if r.k == 1}
    for r in rows:
        one = ones.get(r.adapter)
        gain = f"{one.us_per_task / r.us_per_task:.1f}x" if one else "-"
        raw_gain = f"{one.raw_us_per_item / r.raw_us_per_item:.1f}x" if one else "-"
        rt = "-" if r.round_trips_per_task is None else f"{r.round_trips_per_task:.3f}"
        lines.append(f"{r.adapter:<7} {r.k:>5} {r.tasks:>6} {r.us_per_task:>8.1f} {gain:>6} "
                     f"{r.raw_us_per_item:>8.1f} {raw_gain:>8} {r.raw_x:>5.1f}x {rt:>8}")
    return "\n".join(lines)


LEGEND = """\
k        = tasks completed per call: 1 = on_task_complete one at a time; more =
           on_tasks_complete of k tasks of one run (one transaction / one script)
us/task  = wall time of the completion calls / tasks (claims not timed); gain = vs k = 1
raw us   = the adapter's raw write per item at the same grouping (sqlite: k x UPDATE;
           UPDATE; INSERT in one BEGIN IMMEDIATE..COMMIT; redis: k raw EVALSHAs in one
           pipeline); raw gain = vs k = 1; x raw = us/task / raw us"""
