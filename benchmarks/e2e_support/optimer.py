"""Per-operation wall and CPU time of the Interlock hot path, by wrapping its methods.

:func:`install` wraps the kernel API, the store and queue methods on the task path and the
worker loop (a wrapper costs ~2 us per call). Each wrapped call records, per thread, its
*exclusive* time — its own time minus that of the wrapped calls it made — as wall time
(``time.perf_counter``) and CPU time of the calling thread (``time.thread_time``), so the
labels add up to the thread's total without double counting. Waiting for a Redis reply shows
up as wall time without CPU; waiting for work as wall time of ``receive``.

Enabled in a worker process by ``INTERLOCK_E2E_OPTIMER=1`` (see ``plugins.py``); the numbers
travel with the round-trip counts of :mod:`rtt`.
"""

from __future__ import annotations

import functools
import importlib
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["enabled", "install", "reset", "snapshot"]

_lock = threading.Lock()
_stats: dict[str, list[float]] = {}  # label -> [calls, wall, cpu]
_local = threading.local()
_installed = False

# (module, class or None for a module function, attribute, label)
TARGETS: tuple[tuple[str, str | None, str, str], ...] = (
    ("interlock.runtime.worker", "Worker", "run", "worker loop"),
    ("interlock.runtime.worker", "Worker", "execute", "execute (plugin call, bookkeeping)"),
    ("interlock.runtime.worker", "Heartbeats", "hold", "heartbeats.hold"),
    ("interlock.runtime.processes", "ProcessInvoker", "__call__", "plugin: process pool"),
    ("interlock.kernel", "Kernel", "claim_task", "kernel.claim_task"),
    ("interlock.kernel", "Kernel", "_input", "kernel: build TaskInput"),
    ("interlock.kernel", "Kernel", "_context", "kernel: run context"),
    ("interlock.kernel", "Kernel", "on_task_complete", "kernel.on_task_complete"),
    ("interlock.kernel", "Kernel", "claim_tasks", "kernel.claim_tasks"),
    ("interlock.kernel", "Kernel", "on_tasks_complete", "kernel.on_tasks_complete"),
    ("benchmarks.e2e_support.batched", "BatchedWorker", "run", "worker loop"),
    ("benchmarks.e2e_support.batched", "BatchedWorker", "execute",
     "execute (plugin calls, bookkeeping)"),
    ("benchmarks.e2e_support.batched", "PoolInvoke", "__call__", "plugin: process pool"),
    ("interlock.kernel", "Kernel", "_artifacts", "kernel: validate outputs"),
    ("interlock.kernel", "Kernel", "_advance", "kernel._advance (release)"),
    ("interlock.kernel", "Kernel", "_launch", "kernel._launch"),
    ("interlock.kernel", "Kernel", "_dispatch", "kernel._dispatch"),
    ("interlock.kernel", None, "plan_node", "planning.plan_node"),
    ("interlock.kernel", None, "_task_records", "kernel: task records"),
    ("interlock_redis.store", "RedisStore", "claim_task", "store.claim_task"),
    ("interlock_redis.store", "RedisStore", "complete_task", "store.complete_task"),
    ("interlock_redis.store", "RedisStore", "claim_tasks", "store.claim_tasks"),
    ("interlock_redis.store", "RedisStore", "complete_tasks", "store.complete_tasks"),
    ("interlock_redis.store", "RedisStore", "get_nodes", "store.get_nodes"),
    ("interlock_redis.store", "RedisStore", "get_artifacts", "store.get_artifacts"),
    ("interlock_redis.store", "RedisStore", "launch_node", "store.launch_node"),
    ("interlock_redis.store", "RedisStore", "settle_node", "store.settle_node"),
    ("interlock_redis.store", "RedisStore", "get_run", "store.get_run"),
    ("interlock_redis.store", "RedisStore", "get_task", "store.get_task"),
    ("interlock_redis.store", "RedisStore", "heartbeat", "store.heartbeat"),
    ("interlock_redis.store", "RedisStore", "list_expired", "store.list_expired"),
    ("interlock_redis.dispatcher", "RedisStreamsDispatcher", "receive", "queue.receive"),
    ("interlock_redis.dispatcher", "RedisStreamsDispatcher", "_promote_and_autoclaim",
     "queue.receive: promote_delayed + XAUTOCLAIM (when a sweep is due)"),
    ("interlock_redis.dispatcher", "RedisStreamsDispatcher", "_read",
     "queue.receive: buffered XACK + XDEL, XREADGROUP (waits for work)"),
    ("interlock_redis.dispatcher", "RedisStreamsDispatcher", "ack", "queue.ack (buffers)"),
    ("interlock_redis.dispatcher", "RedisStreamsDispatcher", "flush", "queue.flush"),
    ("interlock_redis.dispatcher", "RedisStreamsDispatcher", "dispatch", "queue.dispatch"),
    ("interlock_sqlite.store", "SqliteStore", "claim_task", "store.claim_task"),
    ("interlock_sqlite.store", "SqliteStore", "complete_task", "store.complete_task"),
    ("interlock_sqlite.store", "SqliteStore", "claim_tasks", "store.claim_tasks"),
    ("interlock_sqlite.store", "SqliteStore", "complete_tasks", "store.complete_tasks"),
    ("interlock_sqlite.store", "SqliteStore", "get_nodes", "store.get_nodes"),
    ("interlock_sqlite.store", "SqliteStore", "get_artifacts", "store.get_artifacts"),
    ("interlock_sqlite.store", "SqliteStore", "launch_node", "store.launch_node"),
    ("interlock_sqlite.store", "SqliteStore", "settle_node", "store.settle_node"),
    ("interlock_sqlite.store", "SqliteStore", "get_run", "store.get_run"),
    ("interlock_sqlite.store", "SqliteStore", "get_task", "store.get_task"),
    ("interlock_sqlite.store", "SqliteStore", "heartbeat", "store.heartbeat"),
    ("interlock_sqlite.store", "SqliteStore", "list_expired", "store.list_expired"),
    ("interlock.runtime.queue", "QueueDispatcher", "receive",
     "queue.receive (waits for work)"),
    ("interlock.runtime.queue", "QueueDispatcher", "ack", "queue.ack"),
    ("interlock.runtime.queue", "QueueDispatcher", "dispatch", "queue.dispatch"),
    ("interlock.runtime.local", "_Execution", "_on_outcome", "runner: progress bookkeeping"),
    ("interlock.runtime.local", "_Execution", "_on_idle", "runner: idle check"),
)


def enabled() -> bool:
    return _installed


def _wrap(function: Callable[..., Any], label: str) -> Callable[..., Any]:
    perf, cpu = time.perf_counter, time.thread_time

    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        stack = getattr(_local, "stack", None)
        if stack is None:
            stack = _local.stack = []
        frame = [0.0, 0.0]  # wall, cpu of wrapped calls made inside this one
        stack.append(frame)
        w0, c0 = perf(), cpu()
        try:
            return function(*args, **kwargs)
        finally:
            wall, used = perf() - w0, cpu() - c0
            stack.pop()
            if stack:
                stack[-1][0] += wall
                stack[-1][1] += used
            with _lock:
                entry = _stats.get(label)
                if entry is None:
                    entry = _stats[label] = [0, 0.0, 0.0]
                entry[0] += 1
                entry[1] += wall - frame[0]
                entry[2] += used - frame[1]

    return timed


def install() -> None:
    """Wrap every target whose module imports (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    for module_name, owner_name, attribute, label in TARGETS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        owner: Any = module if owner_name is None else getattr(module, owner_name, None)
        function = getattr(owner, attribute, None) if owner is not None else None
        if function is None:
            continue
        setattr(owner, attribute, _wrap(function, label))


def snapshot() -> dict[str, list[float]]:
    with _lock:
        return {label: list(entry) for label, entry in _stats.items()}


def reset() -> None:
    with _lock:
        _stats.clear()
