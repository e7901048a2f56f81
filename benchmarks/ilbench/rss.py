"""Peak memory of a 1,000,000-task run on SQLite, measured from outside.

``run.py`` starts a *launcher* process whose only child is the *worker* process that drives
the run; when the worker has exited, the launcher reads
``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` (the peak resident set of its waited-for
children: just the worker) and prints it as JSON. The launcher exists so that no other child
of the benchmark process (the private redis-server) can pollute the figure.

The worker drives ``src -> each (N tasks) -> agg`` single-threaded. The source's N outputs are
generated lazily and the in-process queue keeps only task-id strings, so what is measured is
the kernel, the store and a minimal queue (about 70 MB of task ids at 1,000,000).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ilbench import shapes
from ilbench.driver import FakeClock
from interlock import Kernel, Limits, RunState, TaskRef
from interlock.values import task_node_slug


class _IdQueue:
    def __init__(self) -> None:
        self.ids: deque[str] = deque()

    def dispatch(self, tasks: Sequence[TaskRef]) -> None:
        self.ids.extend(t.task_id for t in tasks)


def worker(tasks: int, db: str) -> dict[str, Any]:
    """Drive a fan-out of ``tasks - 2`` middle tasks on a SqliteStore at ``db``."""
    import interlock_sqlite

    shape = shapes.fan_out(tasks - 2)
    store = interlock_sqlite.SqliteStore(db)
    queue = _IdQueue()
    kernel = Kernel(store, queue, clock=FakeClock(),
                    limits=Limits(max_outputs_per_task=shape.max_outputs))
    t0 = time.perf_counter()
    kernel.start_run(shape.pipeline, run_id="rss")
    done = 0
    ids = queue.ids
    while ids:
        task_id = ids.popleft()
        claim = kernel.claim_task("rss", task_id, worker="bench")
        if claim is None:
            continue
        kernel.on_task_complete("rss", task_id, claim.attempt_id,
                                shape.outputs_of(task_node_slug(task_id)))
        done += 1
    total = time.perf_counter() - t0
    run = store.get_run("rss")
    state = run.state.value if run is not None else "missing"
    if run is None or run.state is not RunState.COMPLETED:
        raise RuntimeError(f"the run ended {state} after {done} tasks")
    return {"tasks": done, "total_s": total, "state": state,
            "self_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def launcher(run_py: Path, tasks: int, timeout: float) -> dict[str, Any]:
    """Run the worker in a child process; return its result plus the children's peak RSS."""
    with tempfile.TemporaryDirectory(prefix="ilbench-rss-") as directory:
        db = str(Path(directory) / "rss.db")
        try:
            proc = subprocess.run([sys.executable, str(run_py), "--rss-worker", str(tasks), db],
                                  capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return {"error": f"the {tasks:,}-task run did not finish in {timeout:.0f}s"}
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        db_mb = sum(p.stat().st_size for p in Path(directory).iterdir()) / 2**20
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"worker exited {proc.returncode}: {' | '.join(tail)}"}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(peak_rss_mb=peak_kb / 1024, db_mb=db_mb)
    return result


def measure(run_py: Path, tasks: int, timeout: float) -> dict[str, Any]:
    """From the benchmark process: start the launcher and read its JSON."""
    try:
        proc = subprocess.run(
            [sys.executable, str(run_py), "--rss-launch", str(tasks), "--rss-timeout",
             str(timeout)],
            capture_output=True, text=True, timeout=timeout + 120, check=False)
    except subprocess.TimeoutExpired:
        return {"error": "the RSS launcher did not return"}
    if proc.returncode != 0 or not proc.stdout.strip():
        return {"error": f"launcher exited {proc.returncode}: {proc.stderr.strip()[-300:]}"}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result
