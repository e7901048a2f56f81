"""A minimal Interlock worker process on Redis, built only from the public API.

``python -m benchmarks.e2e_support.worker --store redis://127.0.0.1:PORT/0 --plugins MODULE``

The fallback of ``benchmarks/e2e.py`` when ``interlock worker`` is not available: a
:class:`~interlock_redis.RedisStore`, a :class:`~interlock_redis.RedisStreamsDispatcher` (its
Dispatcher side for what completions release, its TaskSource side to receive), a
:class:`~interlock.Kernel` and the runtime's :class:`~interlock.runtime.Worker` loop
(receive -> ``kernel.claim_task`` -> plugin -> ``kernel.on_task_complete`` -> ack). SIGTERM or
SIGINT stops it after the task in hand.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import threading
from typing import Any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="e2e-worker")
    parser.add_argument("--store", required=True, help="redis://host:port/db[?namespace=ns]")
    parser.add_argument("--plugins", action="append", default=[], help="module to import")
    parser.add_argument("--batch", type=int, default=1, help="deliveries per receive")
    parser.add_argument("--receive-timeout", type=float, default=1.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    for module in args.plugins:
        importlib.import_module(module)

    import redis

    from interlock import Kernel
    from interlock.plugins import default_registry
    from interlock.runtime import Heartbeats, Worker
    from interlock_redis import RedisStore, RedisStreamsDispatcher
    from interlock_redis.store import split_url

    client_url, namespace = split_url(args.store)
    client = redis.Redis.from_url(client_url)
    store = RedisStore(client, namespace=namespace)
    queue = RedisStreamsDispatcher(client, namespace=namespace)
    kernel = Kernel(store, queue, plugins=default_registry)
    heartbeats = Heartbeats(kernel)
    heartbeats.start()
    worker = Worker(kernel, queue, default_registry, batch=args.batch,
                    receive_timeout=args.receive_timeout, heartbeats=heartbeats)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        worker.run(stop)
    finally:
        heartbeats.stop()
        client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
