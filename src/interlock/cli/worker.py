"""``interlock worker``: a long-running worker over a queue from the ``interlock.queues`` group.

The queue object serves as the kernel's Dispatcher (follow-up tasks go back to it) and as the
workers' TaskSource. SIGTERM or Ctrl-C stops it cleanly: each worker thread finishes the task
in hand, reports it, and exits; then the queue's ``close()`` (if it has one) sends the acks it
buffered (the Redis queue sends acks with the next receive). Unacked deliveries are redelivered
by the queue.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from types import FrameType
from typing import Any

from interlock.errors import UsageError
from interlock.kernel import Kernel
from interlock.limits import DEFAULT_LIMITS, Limits
from interlock.plugins import PluginRegistry, default_registry
from interlock.protocols import DagStore, Dispatcher, TaskSource
from interlock.runtime.worker import Heartbeats, Worker, worker_name

from .common import (
    EXIT_OK,
    EXIT_STORE,
    fail,
    import_plugin_modules,
    open_cli_store,
    parse_limits,
)

__all__ = ["DEFAULT_BATCH", "QUEUE_GROUP", "cmd_worker", "open_queue", "serve"]

log = logging.getLogger("interlock.cli.worker")

QUEUE_GROUP = "interlock.queues"
DEFAULT_BATCH = 64
"""Deliveries per receive of each worker thread (``--batch``). Each store call has a fixed
cost (a round trip, a script or a transaction) that a batch shares: on Redis a claim costs
the server ~90 us per task in calls of 10 and ~50 in calls of 100 (``benchmarks/e2e.py
--costs``). Only fast tasks are batched (see :class:`~interlock.runtime.worker.Worker`), so a
larger cap holds back no slow work; what it risks is up to that many claimed tasks left to
their leases when a worker dies."""


def open_queue(url: str) -> Any:
    """The queue for ``url``'s scheme from the ``interlock.queues`` entry points (each names
    ``from_url(url)`` returning an object that is both Dispatcher and TaskSource)."""
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise UsageError(f"not a queue URL: {url!r} (expected scheme://...)")
    found = [ep for ep in entry_points(group=QUEUE_GROUP) if ep.name == scheme]
    if not found:
        known = ", ".join(sorted(ep.name for ep in entry_points(group=QUEUE_GROUP)))
        raise UsageError(f"no queue for scheme {scheme!r} (installed: {known or 'none'}); "
                         f"try: pip install interlock-{scheme}")
    return found[0].load()(url)


def serve(store: DagStore, queue: Any, registry: PluginRegistry, *, concurrency: int,
          stop: threading.Event, receive_timeout: float = 1.0,
          recover_interval: float = 30.0, batch: int = DEFAULT_BATCH,
          limits: Limits = DEFAULT_LIMITS) -> None:
    """Run ``concurrency`` worker threads until ``stop`` is set; then join them and call the
    queue's ``close()`` if it has one (which sends buffered acks). Each thread takes up to
    ``batch`` deliveries per receive (see :class:`~interlock.runtime.worker.Worker`)."""
    if not isinstance(queue, Dispatcher) or not isinstance(queue, TaskSource):
        raise UsageError(f"{queue!r} is not both a Dispatcher and a TaskSource")
    kernel = Kernel(store, queue, plugins=registry, limits=limits)
    heartbeats = Heartbeats(kernel)
    heartbeats.start()
    threads = []
    for number in range(concurrency):
        worker = Worker(kernel, queue, registry, name=worker_name(f"worker-{number}"),
                        receive_timeout=receive_timeout, recover_interval=recover_interval,
                        heartbeats=heartbeats, batch=batch)
        thread = threading.Thread(target=worker.run, args=(stop,), daemon=True,
                                  name=f"interlock-worker-{number}")
        threads.append(thread)
        thread.start()
    try:
        stop.wait()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        heartbeats.stop()
        close: Callable[[], None] | None = getattr(queue, "close", None)
        if callable(close):
            close()


def cmd_worker(args: argparse.Namespace, io: Any) -> int:
    """Serve tasks until SIGTERM/SIGINT; exit 0 after a clean shutdown."""
    if args.concurrency < 1:
        fail("--concurrency must be >= 1")
    batch = getattr(args, "batch", DEFAULT_BATCH)  # --batch, where the parser declares it
    if batch < 1:
        fail("--batch must be >= 1")
    limits = parse_limits(getattr(args, "limit", None) or [])
    import_plugin_modules(args.plugins or [])
    store = open_cli_store(args.store)
    queue_url = args.queue or args.store
    try:
        queue = open_queue(queue_url)
    except UsageError as exc:
        fail(f"queue {queue_url}: {exc}")
    except Exception as exc:
        fail(f"queue {queue_url} unreachable: {type(exc).__name__}: {exc}", EXIT_STORE)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping after the tasks in hand", signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    io.error(f"worker: {args.concurrency} thread(s) on {queue_url}; SIGTERM or Ctrl-C stops")
    try:
        serve(store, queue, default_registry, concurrency=args.concurrency, stop=stop,
              receive_timeout=args.receive_timeout, batch=batch, limits=limits)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    io.error("worker: stopped")
    return EXIT_OK
