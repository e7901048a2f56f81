"""Summaries of py-spy raw (collapsed) profiles of Interlock worker processes.

Each sample is a stack ``frame;frame;...`` with a count; a frame is ``function (file:line)``.
Two views are printed per profile:

- **by operation** — the innermost *marker* frame of the stack names what the worker was doing
  (receive, claim, plugin, store.complete_task, planning a released node, ...);
- **by code (self time)** — the leaf frame's file, grouped by component (redis-py, the Redis
  adapter, kernel, storekit, SQLite adapter, json, attrs records, ...). Time spent in C (socket
  calls, sqlite3) is charged to the Python line that called it.

Profiles recorded without ``--idle`` hold on-CPU samples only (CPU per task); with ``--idle``
they hold every sample of every thread (wall time, waits included).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["classify_leaf", "classify_op", "load", "render"]

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# (function, file fragment, label): the innermost matching frame names the operation
MARKERS: Sequence[tuple[str, str, str]] = (
    ("start_run", "interlock/kernel.py", "start_run"),
    ("receive", "interlock_redis/dispatcher.py", "receive: other"),
    ("_promote_and_autoclaim", "interlock_redis/dispatcher.py",
     "receive: promote_delayed + XAUTOCLAIM"),
    ("_read", "interlock_redis/dispatcher.py", "receive: XREADGROUP"),
    ("receive", "runtime/queue.py", "receive (in-process queue)"),
    ("ack", "interlock_redis/dispatcher.py", "ack: XACK + XDEL"),
    ("ack", "runtime/queue.py", "ack (in-process queue)"),
    ("claim_task", "interlock/kernel.py", "claim: kernel"),
    ("claim_task", "interlock_redis/store.py", "claim: store.claim_task"),
    ("claim_task", "interlock/storekit.py", "claim: store.claim_task"),
    ("_input", "interlock/kernel.py", "claim: build TaskInput"),
    ("resolve", "interlock/plugins.py", "plugin: resolve"),
    ("call_plugin", "runtime/worker.py", "plugin: call"),
    ("__call__", "runtime/processes.py", "plugin: process pool round trip"),
    ("hold", "runtime/worker.py", "heartbeats: hold"),
    ("on_task_complete", "interlock/kernel.py", "complete: kernel"),
    ("_artifacts", "interlock/kernel.py", "complete: validate outputs"),
    ("complete_task", "interlock_redis/store.py", "complete: store.complete_task"),
    ("complete_task", "interlock/storekit.py", "complete: store.complete_task"),
    ("_advance", "interlock/kernel.py", "release: kernel._advance"),
    ("get_nodes", "", "release: store.get_nodes"),
    ("get_artifacts", "", "release: store.get_artifacts"),
    ("plan_node", "interlock/planning.py", "release: plan_node"),
    ("_task_records", "interlock/kernel.py", "release: task records"),
    ("launch_node", "interlock_redis/store.py", "release: store.launch_node"),
    ("launch_node", "interlock/storekit.py", "release: store.launch_node"),
    ("_dispatch", "interlock/kernel.py", "release: dispatch"),
    ("settle_node", "", "release: store.settle_node"),
    ("_report", "runtime/worker.py", "runner bookkeeping"),
    ("_on_outcome", "runtime/local.py", "runner bookkeeping"),
    ("_on_idle", "runtime/local.py", "runner bookkeeping"),
    ("_loop", "runtime/worker.py", "heartbeat thread"),
    ("_recover", "", "lease sweep"),
    ("recover_expired", "", "lease sweep"),
    ("loop", "e2e_support/rtt.py", "benchmark: round-trip counter"),
    ("trace", "benchmarks/e2e.py", "benchmark: SQL statement counter"),
    ("_process_worker", "concurrent/futures/process.py", "plugin process: worker loop"),
    ("run", "concurrent/futures/process.py", "process pool: manager thread"),
    ("_feed", "multiprocessing/queues.py", "process pool: queue feeder thread"),
)

# leaf file fragments -> component (first match wins)
COMPONENTS: Sequence[tuple[str, str]] = (
    ("e2e_support/plugins.py", "plugin code"),
    ("e2e_support/", "benchmark instrumentation"),
    ("benchmarks/e2e.py", "benchmark instrumentation"),
    ("e2e.py", "benchmark instrumentation"),
    ("redis/", "redis-py (commands, RESP, socket)"),
    ("interlock_redis/", "interlock_redis (arguments, replies, JSON)"),
    ("interlock_sqlite/", "interlock_sqlite (SQL incl. sqlite3 C)"),
    ("interlock/kernel.py", "kernel"),
    ("interlock/storekit.py", "storekit"),
    ("interlock/planning.py", "planning"),
    ("interlock/graph.py", "planning"),
    ("interlock/filters.py", "planning"),
    ("interlock/records.py", "records (attrs, to/from dict)"),
    ("interlock/values.py", "records (attrs, to/from dict)"),
    ("interlock/states.py", "records (attrs, to/from dict)"),
    ("<attrs generated", "records (attrs, to/from dict)"),
    ("attr/", "records (attrs, to/from dict)"),
    ("attrs/", "records (attrs, to/from dict)"),
    ("interlock/runtime/", "runtime (worker loop, queue, runner)"),
    ("interlock/plugins.py", "runtime (worker loop, queue, runner)"),
    ("interlock/jsonvalues.py", "kernel"),
    ("json/", "json (stdlib)"),
    ("uuid.py", "uuid"),
    ("threading.py", "threading (locks, conditions)"),
    ("queue.py", "threading (locks, conditions)"),
    ("concurrent/futures/", "process pool + pickling"),
    ("multiprocessing/", "process pool + pickling"),
    ("socket.py", "socket"),
    ("selectors.py", "socket"),
    ("logging/", "logging"),
)


def _frames(stack: str) -> list[tuple[str, str]]:
    out = []
    for raw in stack.split(";"):
        match = _FRAME.match(raw.strip())
        if match:
            out.append((match["func"], match["file"]))
        else:
            out.append((raw.strip(), ""))
    return out


def load(paths: Iterable[Path]) -> Counter[str]:
    """All samples of the given raw files (stack -> count)."""
    samples: Counter[str] = Counter()
    for path in paths:
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                samples[stack] += int(count)
    return samples


def classify_op(frames: list[tuple[str, str]]) -> str:
    label = "other"
    for func, file in frames:
        short = func.rsplit(".", 1)[-1]
        for name, fragment, marker in MARKERS:
            if short == name and fragment in file:
                label = marker
    return label


def classify_leaf(frames: list[tuple[str, str]]) -> str:
    if not frames:
        return "?"
    func, file = frames[-1]
    func = func.rsplit(".", 1)[-1]
    if file.startswith("redis/") and func in ("_read_from_socket", "read_response", "_readline",
                                      "readline", "read", "can_read_destructive"):
        return "redis-py: waiting for / reading a reply"
    if file.endswith("threading.py") and func in ("wait", "_wait_for_tstate_lock"):
        return "threading: waiting (condition, future, join)"
    if file.endswith("selectors.py") or func in ("select", "poll"):
        return "waiting (select)"
    for fragment, component in COMPONENTS:
        if file.startswith(fragment) or file == fragment.rstrip("/") or (
                fragment.startswith("<") and fragment in file):
            return component
    return f"other ({Path(file).name or func})"


def _table(counts: Counter[str], total: int, tasks: int, rate: int, title: str,
           limit: int = 30) -> list[str]:
    out = [f"  {title:<48} {'share':>7} {'us/task':>9}"]
    for key, n in counts.most_common(limit):
        out.append(f"  {key:<48} {n / total:7.1%} {n / rate / tasks * 1e6:9.1f}")
    return out


def render(title: str, paths: Sequence[Path], tasks: int, rate: int) -> str:
    """Both views of the samples in ``paths`` (summed over processes), per task."""
    samples = load(paths)
    total = sum(samples.values())
    if not total:
        return f"{title}: no samples (is py-spy allowed to read the process?)"
    ops: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    for stack, n in samples.items():
        frames = _frames(stack)
        frames = [f for f in frames if not f[0].startswith("thread (")
                  and not f[0].startswith("process ")]
        ops[classify_op(frames)] += n
        leaves[classify_leaf(frames)] += n
        if frames:
            func, file = frames[-1]
            functions[f"{func} ({'/'.join(Path(file).parts[-2:])})"] += n
    lines = [f"\n{title}",
             f"{total:,} samples at {rate}/s over {len(paths)} process(es) = "
             f"{total / rate:.2f}s, {total / rate / tasks * 1e6:,.0f} us per task"]
    lines += _table(ops, total, tasks, rate, "by operation (innermost marker)")
    lines += _table(leaves, total, tasks, rate, "by code (leaf frame's component)")
    lines += _table(functions, total, tasks, rate, "top leaf functions", 15)
    return "\n".join(lines)
