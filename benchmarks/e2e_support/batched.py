"""A *prototype* batched worker loop, to measure what batching buys end to end.

Not the shipped runtime: ``interlock.runtime.Worker`` takes one delivery at a time (receive ->
claim -> plugin -> complete -> ack). :class:`BatchedWorker` takes up to ``batch`` deliveries per
receive and uses the kernel's batched calls:

    receive(k) -> kernel.claim_tasks(run, ids) -> plugins -> kernel.on_tasks_complete(run, ...)
    -> ack(k)

With a store that has the ``batched`` ability (SqliteStore, via storekit) the claims of a batch
are one transaction and its completions another; with one that has not (RedisStore today) the
kernel falls back to one store call per task, so only receive and ack are batched.

:class:`PoolInvoke` runs a batch's plugins in a process pool, one message per process per batch
(the batch is split into one chunk per process) instead of one per task.

``python -m benchmarks.e2e_support.batched --store redis://... --plugins MOD --batch K`` is a
worker process running it over a Redis stream.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import multiprocessing
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from interlock.kernel import Kernel
from interlock.plugins import PluginRegistry, default_registry
from interlock.protocols import Delivery, TaskSource
from interlock.values import Claim, TaskInput

log = logging.getLogger("benchmarks.e2e.batched")

Outcome = tuple[Claim, Any, BaseException | None]


def _call_here(registry: PluginRegistry, claims: Sequence[Claim]) -> list[Outcome]:
    out: list[Outcome] = []
    for claim in claims:
        try:
            result = registry.resolve(claim.input.plugin).function(claim.input)
            out.append((claim, [] if result is None else list(result), None))
        except Exception as exc:
            out.append((claim, None, exc))
    return out


def _child_chunk(items: list[tuple[str, TaskInput]]) -> list[tuple[Any, str | None]]:
    """In a pool process: run each plugin; (outputs, None) or (None, error text)."""
    out: list[tuple[Any, str | None]] = []
    for plugin, task in items:
        try:
            result = default_registry.resolve(plugin).function(task)
            out.append(([] if result is None else list(result), None))
        except Exception as exc:
            out.append((None, f"{type(exc).__name__}: {exc}"))
    return out


def _child_init(modules: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for module in modules:
        importlib.import_module(module)


class PoolInvoke:
    """Run a batch's plugins in ``processes`` pool processes, one chunk per process."""

    def __init__(self, processes: int, plugin_modules: Sequence[str]) -> None:
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() \
            else "spawn"
        self.processes = processes
        self.pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context(method),
                                        initializer=_child_init,
                                        initargs=(list(plugin_modules),))
        # start the processes now, outside any measured window
        list(self.pool.map(_child_chunk, [[] for _ in range(processes)]))

    def __call__(self, registry: PluginRegistry, claims: Sequence[Claim]) -> list[Outcome]:
        size = -(-len(claims) // self.processes)
        chunks = [list(claims[i:i + size]) for i in range(0, len(claims), size)]
        futures: list[Future[list[tuple[Any, str | None]]]] = [
            self.pool.submit(_child_chunk, [(c.input.plugin, c.input) for c in chunk])
            for chunk in chunks]
        out: list[Outcome] = []
        for chunk, future in zip(chunks, futures, strict=True):
            for claim, (outputs, error) in zip(chunk, future.result(), strict=True):
                out.append((claim, outputs, None if error is None else RuntimeError(error)))
        return out

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class BatchedWorker:
    """receive(k) -> claim_tasks -> plugins -> on_tasks_complete -> ack(k), until ``stop``."""

    def __init__(self, kernel: Kernel, source: TaskSource, registry: PluginRegistry, *,
                 batch: int, name: str = "batched",
                 invoke: Callable[[PluginRegistry, Sequence[Claim]], list[Outcome]] | None = None,
                 receive_timeout: float = 1.0) -> None:
        self.kernel = kernel
        self.source = source
        self.registry = registry
        self.batch = max(1, batch)
        self.name = name
        self.invoke = invoke or _call_here
        self.receive_timeout = receive_timeout

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            deliveries = self.source.receive(self.batch, self.receive_timeout)
            if not deliveries:
                continue
            by_run: dict[str, list[Delivery]] = {}
            for delivery in deliveries:
                by_run.setdefault(delivery.ref.run_id, []).append(delivery)
            for run_id, group in by_run.items():
                try:
                    self.execute(run_id, [d.ref.task_id for d in group])
                except Exception:
                    log.exception("batch of %d task(s) of run %s", len(group), run_id)
            self.source.ack(deliveries)

    def execute(self, run_id: str, task_ids: Sequence[str]) -> None:
        claims = self.kernel.claim_tasks(run_id, task_ids, worker=self.name)
        if not claims:
            return
        outcomes = self.invoke(self.registry, claims)
        done = [(c.task_id, c.attempt_id, outputs) for c, outputs, error in outcomes
                if error is None]
        if done:
            self.kernel.on_tasks_complete(run_id, done)
        for claim, _, error in outcomes:
            if error is not None:
                self.kernel.on_task_failed(run_id, claim.task_id, claim.attempt_id, error)


def main(argv: list[str] | None = None) -> int:
    """A worker process on a Redis store and stream, running :class:`BatchedWorker`."""
    parser = argparse.ArgumentParser(prog="e2e-batched-worker")
    parser.add_argument("--store", required=True)
    parser.add_argument("--plugins", action="append", default=[])
    parser.add_argument("--batch", type=int, default=10)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    for module in args.plugins:
        importlib.import_module(module)

    import redis

    from interlock_redis import RedisStore, RedisStreamsDispatcher
    from interlock_redis.store import split_url

    client_url, namespace = split_url(args.store)
    client = redis.Redis.from_url(client_url)
    queue = RedisStreamsDispatcher(client, namespace=namespace)
    kernel = Kernel(RedisStore(client, namespace=namespace), queue, plugins=default_registry)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    thread = threading.Thread(target=BatchedWorker(kernel, queue, default_registry,
                                                   batch=args.batch).run, args=(stop,),
                              daemon=True, name="interlock-worker-batched")
    thread.start()
    stop.wait()
    thread.join()
    queue.close()  # sends the buffered acks
    client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
