"""Cost probes behind the batching estimates of benchmarks/E2E.md (``e2e.py --costs``).

Single-threaded, in this process, one store call at a time, so each figure is the cost of the
call itself (CPU of this thread, wall time, round trips / transactions) without contention:

- **SQLite** (``SqliteStore``): a 1 -> N -> 1 run driven through the kernel API with
  ``claim_task`` + ``on_task_complete`` per task, and with ``claim_tasks`` + ``on_tasks_complete``
  over batches of k (the store's ``batched`` ability: one transaction per batch).
- **Redis** (``RedisStore``, private server): the same per-task path; then the claim and
  completion scripts sent k at a time in one pipeline (one round trip for k scripts: what a
  multi-item script would save on the round-trip side, before the per-script savings), with
  the server's CPU per task; the queue (``RedisStreamsDispatcher``) receiving and acking
  1 or k deliveries per call; and a bare PING, the floor of one round trip.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.e2e_support import plugins, procs, rtt


class Meter:
    """CPU (this thread), wall, and optional counters over a block of work."""

    def __init__(self, counter: Callable[[], int] | None = None,
                 server_pid: int | None = None) -> None:
        self.counter = counter
        self.server_pid = server_pid

    def measure(self, work: Callable[[], int]) -> dict[str, float]:
        c0, w0 = time.thread_time(), time.perf_counter()
        k0 = self.counter() if self.counter else 0
        s0 = procs.cpu_seconds(self.server_pid) if self.server_pid else 0.0
        items = work()
        cpu, wall = time.thread_time() - c0, time.perf_counter() - w0
        k1 = self.counter() if self.counter else 0
        s1 = procs.cpu_seconds(self.server_pid) if self.server_pid else 0.0
        return {"items": items, "cpu_us": cpu / items * 1e6, "wall_us": wall / items * 1e6,
                "count": (k1 - k0) / items, "server_us": (s1 - s0) / items * 1e6}


def _row(label: str, r: dict[str, float], count_name: str) -> str:
    server = f"{r['server_us']:8.1f}" if r.get("server_us") else "       -"
    return (f"  {label:<46} {r['cpu_us']:8.1f} {r['wall_us']:8.1f} {server} "
            f"{r['count']:7.3f} {count_name}")


HEADER = (f"  {'per task':<46} {'CPU us':>8} {'wall us':>8} {'srv CPU':>8} "
          f"{'count':>7}")


def _fan_tasks(kernel: Any, queue: Any, n: int) -> tuple[str, list[str]]:
    """Start a 1 -> n -> 1 run, run its source by hand; the ids of the n middle tasks."""
    run = kernel.start_run(plugins.fan_pipeline(n))
    refs = [d.ref for d in queue.receive(10, 1.0)]
    (src,) = [r for r in refs if r.task_id.startswith("src.")]
    claim = kernel.claim_task(run.run_id, src.task_id)
    kernel.on_task_complete(run.run_id, src.task_id, claim.attempt_id,
                            plugins.source(claim.input))
    ids: list[str] = []
    while len(ids) < n:
        got = queue.receive(n, 1.0)
        if not got:
            raise RuntimeError("the middle tasks were not dispatched")
        ids += [d.ref.task_id for d in got]
        queue.ack(got)
    return run.run_id, ids


def _kernel_path(kernel: Any, run_id: str, ids: Sequence[str], k: int, meter: Meter
                 ) -> tuple[dict[str, float], dict[str, float]]:
    """Claim then complete ``ids`` through the kernel, k per call (k == 1: per-task API)."""
    chunks = [list(ids[i:i + k]) for i in range(0, len(ids), k)]
    claims: list[Any] = []

    def claim_all() -> int:
        for chunk in chunks:
            if k == 1:
                claims.append(kernel.claim_task(run_id, chunk[0]))
            else:
                claims.extend(kernel.claim_tasks(run_id, chunk))
        return len(ids)

    def complete_all() -> int:
        for i in range(0, len(claims), k):
            part = claims[i:i + k]
            if k == 1:
                c = part[0]
                kernel.on_task_complete(run_id, c.task_id, c.attempt_id, plugins.work(c.input))
            else:
                kernel.on_tasks_complete(run_id, [(c.task_id, c.attempt_id,
                                                   plugins.work(c.input)) for c in part])
        return len(ids)

    return meter.measure(claim_all), meter.measure(complete_all)


def sqlite_costs(workdir: Path, n: int, batches: Sequence[int], out: Callable[[str], None]
                 ) -> None:
    from interlock import Kernel
    from interlock.plugins import default_registry
    from interlock.runtime import QueueDispatcher
    from interlock_sqlite import SqliteStore

    begins = [0]

    def on_connect(conn: Any) -> None:
        def trace(sql: str) -> None:
            # transactions by their end: a contended BEGIN IMMEDIATE is tried several times
            if sql.lstrip()[:6].upper() in ("COMMIT", "ROLLBA"):
                begins[0] += 1
        conn.set_trace_callback(trace)

    store = SqliteStore(workdir / "costs.db", on_connect=on_connect)
    queue = QueueDispatcher()
    kernel = Kernel(store, queue, plugins=default_registry)
    meter = Meter(lambda: begins[0])
    abilities = sorted(getattr(store, "abilities", ()))
    out(f"\nSQLite store (abilities {abilities}), {n:,} middle tasks of a 1 -> N -> 1 run per "
        f"variant, kernel API, one thread")
    out(HEADER + "  (count: write transactions per task)")
    for k in batches:
        run_id, ids = _fan_tasks(kernel, queue, n)
        claim, complete = _kernel_path(kernel, run_id, ids, k, meter)
        name = "claim_task" if k == 1 else f"claim_tasks, k={k}"
        out(_row(f"kernel.{name}", claim, "tx"))
        name = "on_task_complete" if k == 1 else f"on_tasks_complete, k={k}"
        out(_row(f"kernel.{name}", complete, "tx"))
    close = getattr(store, "close", None)
    if close:
        close()
    pool_start(out)


def pool_start(out: Callable[[str], None], processes: int = 2) -> None:
    """What LocalRunner(mode="processes") pays per run: a new ProcessInvoker (pool) whose
    processes start on the first calls; wall time of the first round of calls, and the CPU of
    the new processes (fork server children, reaped by the fork server)."""
    import concurrent.futures as cf
    import os

    from interlock.plugins import default_registry
    from interlock.runtime import ProcessInvoker
    from interlock.values import TaskInput

    spec = default_registry.resolve("e2e.step")
    task = TaskInput("r", "c0.0.0", "c0", "e2e.step", None, {}, {}, {})
    warm = ProcessInvoker(processes)  # the fork server itself starts once per process
    warm(spec, task)
    warm.shutdown()
    for _ in range(2):
        before = sum(procs.tree_cpu([os.getpid()]).values()) - procs.cpu_seconds(os.getpid())
        w0 = time.perf_counter()
        invoker = ProcessInvoker(processes)
        with cf.ThreadPoolExecutor(processes) as threads:
            list(threads.map(invoker, [spec] * processes, [task] * processes))
        first = time.perf_counter() - w0
        invoker.shutdown()
        after = sum(procs.tree_cpu([os.getpid()]).values()) - procs.cpu_seconds(os.getpid())
        out(f"  LocalRunner per-run process pool: {processes} processes started and first "
            f"calls done in {first * 1000:,.0f} ms wall, {(after - before) * 1000:,.0f} ms CPU "
            f"in the pool processes")


def redis_costs(n: int, batches: Sequence[int], out: Callable[[str], None]) -> None:
    import redis

    from interlock import Kernel
    from interlock.plugins import default_registry
    from interlock.records import TaskRef
    from interlock_redis import RedisStore, RedisStreamsDispatcher
    from interlock_redis.store import dumps

    rtt.install()

    def round_trips() -> int:
        return sum(rtt.counts().values())

    with procs.RedisServer("costs") as server:
        client = redis.Redis.from_url(server.url)
        store = RedisStore(client)
        queue = RedisStreamsDispatcher(client)
        kernel = Kernel(store, queue, plugins=default_registry)
        meter = Meter(round_trips, server.pid)
        abilities = sorted(getattr(store, "abilities", ()))
        out(f"\nRedis store (abilities {abilities}), private redis-server, {n:,} middle tasks "
            f"per variant, one thread")
        out(HEADER + "  (count: round trips per task)")
        def pings() -> int:
            for _ in range(n):
                client.ping()
            return n

        out(_row("PING", meter.measure(pings), "rt"))
        for k in batches:
            run_id, ids = _fan_tasks(kernel, queue, n)
            claim, complete = _kernel_path(kernel, run_id, ids, k, meter)
            name = "claim_task" if k == 1 else f"claim_tasks, k={k}"
            out(_row(f"kernel.{name}", claim, "rt"))
            name = "on_task_complete" if k == 1 else f"on_tasks_complete, k={k}"
            out(_row(f"kernel.{name}", complete, "rt"))

        # the scripts alone, 1 or k per round trip (pipelined EVALSHA: same scripts, same
        # arguments as RedisStore.claim_task / complete_task build them)
        keys_of = store.keys.run_keys
        for k in batches:
            run_id, ids = _fan_tasks(kernel, queue, n)
            keys = keys_of(run_id)
            attempts = {t: uuid.uuid4().hex for t in ids}
            children = [str(i) for i in kernel._context(run_id).topology.children[1]]

            def claims(ids: Sequence[str] = ids, keys: Any = keys, k: int = k,
                       attempts: dict[str, str] = attempts, run_id: str = run_id) -> int:
                for i in range(0, len(ids), k):
                    chunk = ids[i:i + k]

                    def build(pipe: Any, chunk: Sequence[str] = chunk, run_id: str = run_id
                              ) -> None:
                        now = time.time()
                        for task_id in chunk:
                            store.scripts.queue(pipe, "claim_task", keys, [
                                task_id, dumps(attempts[task_id]), dumps("costs"),
                                dumps(now + 300), dumps(now)])
                        pipe.sadd(store.keys.leased_runs, run_id)

                    store.scripts.pipeline(build)
                return len(ids)

            def completes(ids: Sequence[str] = ids, keys: Any = keys, k: int = k,
                          attempts: dict[str, str] = attempts,
                          children: list[str] = children) -> int:
                for i in range(0, len(ids), k):
                    chunk = ids[i:i + k]

                    def build(pipe: Any, chunk: Sequence[str] = chunk) -> None:
                        now = time.time()
                        for task_id in chunk:
                            body = dumps({"fields": {"v": 1}, "data": None})
                            store.scripts.queue(pipe, "complete_task", keys, [
                                task_id, dumps(attempts[task_id]), dumps(now), 1,
                                dumps(f"{task_id}/0"), body[1:-1], *children])

                    store.scripts.pipeline(build)
                return len(ids)

            out(_row(f"claim_task script, {k} per round trip", meter.measure(claims), "rt"))
            out(_row(f"complete_task script, {k} per round trip", meter.measure(completes),
                     "rt"))

        # the queue: dispatch n refs, then receive + ack them 1 or k at a time
        for k in batches:
            refs = [TaskRef("costs", f"t.0.{i}", "e2e.work") for i in range(n)]
            queue.dispatch(refs[:1])  # the group exists after a first receive
            queue.ack(queue.receive(1, 1.0))
            queue.dispatch(refs)

            def drain(k: int = k) -> int:
                got = 0
                while got < n:
                    deliveries = queue.receive(k, 1.0)
                    queue.ack(deliveries)
                    got += len(deliveries)
                queue.flush()  # the last acks (the others rode on the next receive)
                return got

            out(_row(f"queue.receive + ack, {k} per call", meter.measure(drain), "rt"))
        client.close()
