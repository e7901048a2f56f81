"""Operations on one large run, per adapter: ``python benchmarks/large_runs.py [--quick]``.

``benchmarks/run.py`` measures what a task costs; this script measures the calls whose cost
grows with the run rather than with the event — the ones an operator makes on a big run, which
must not stall a store for everyone. On a 1 -> N -> 1 run (N = 100,000; ``--quick``: 5,000)
after its source completed and half the middle tasks were claimed:

- ``launch``: the source's completion, which publishes N artifacts and launches N tasks (in
  ramped batches);
- ``summary``: ``interlock.runtime.summarize`` (the table of ``interlock status``) mid-run;
- ``reconcile``: ``Kernel.reconcile_run`` (every queued task re-dispatched);
- ``reconcile q``: ``reconcile_run(queued_for=60)`` — nothing queued that long, nothing sent;
- ``cancel``: ``Kernel.cancel_run`` — one atomic step cancelling the N unfinished tasks: on
  SQLite one transaction holding the write lock, on Redis one script during which the server
  serves nobody;
- ``recover``: ``Kernel.recover_expired`` of 1,000 expired leases (``--quick``: 100), per
  task (each is a failure-and-retry step).

Seconds per call (``recover``: microseconds per task). One run per adapter, no repetition: the
figures are for finding cliffs (a call that takes seconds or grows faster than N), not for
ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from time import perf_counter
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from ilbench import shapes  # noqa: E402
from ilbench.driver import make_kernel  # noqa: E402

from interlock.runtime.summary import summarize  # noqa: E402

COLUMNS = ("launch", "summary", "reconcile", "reconcile q", "cancel")


@contextlib.contextmanager
def _stores(only: list[str]) -> Iterator[list[tuple[str, Callable[[str], Any]]]]:
    """(adapter, new_store(name)) for each adapter asked for; cleans up after."""
    made: list[tuple[str, Callable[[str], Any]]] = []
    with contextlib.ExitStack() as stack:
        if "memory" in only:
            from interlock_memory import MemoryStore

            made.append(("memory", lambda name: MemoryStore()))
        if "sqlite" in only:
            from interlock_sqlite import SqliteStore

            directory = Path(tempfile.mkdtemp(prefix="illarge-"))
            stack.callback(shutil.rmtree, directory, True)
            made.append(("sqlite", lambda name: SqliteStore(directory / f"{name}.db")))
        if "redis" in only:
            import redis
            from ilbench.redisenv import delete_matching, new_prefix, redis_url

            url, _ = stack.enter_context(redis_url())
            client = redis.Redis.from_url(url)
            prefix = new_prefix()
            stack.callback(client.close)
            stack.callback(delete_matching, client, prefix)
            from interlock_redis import RedisStore

            made.append(("redis", lambda name: RedisStore(client, namespace=f"{prefix}-{name}")))
        yield made


def _timed(call: Callable[[], object]) -> float:
    start = perf_counter()
    call()
    return perf_counter() - start


def _launched(new_store: Callable[[str], Any], name: str, n: int
              ) -> tuple[Any, Any, float]:
    """A 1 -> ``n`` -> 1 run named ``name`` whose source completed: its kernel, its
    dispatcher (holding the ``n`` refs) and the seconds that completion took."""
    shape = shapes.fan_out(n)
    kernel, dispatcher = make_kernel(new_store(name), shape)
    kernel.start_run(shape.pipeline, run_id=name)
    source = dispatcher.queue.popleft()
    claim = kernel.claim_task(name, source.task_id, worker="w")
    if claim is None:
        raise RuntimeError("the source could not be claimed")
    outputs = list(shape.outputs_of("src"))
    spent = _timed(lambda: kernel.on_task_complete(name, source.task_id, claim.attempt_id,
                                                   outputs))
    return kernel, dispatcher, spent


def measure(new_store: Callable[[str], Any], n: int, expired: int) -> dict[str, float]:
    """The figures of one adapter (see the module docstring)."""
    kernel, dispatcher, launch = _launched(new_store, "big", n)
    row = {"launch": launch}
    refs = list(dispatcher.queue)
    dispatcher.queue.clear()
    for ref in refs[:n // 2]:
        kernel.claim_task("big", ref.task_id, worker="w")
    row["summary"] = _timed(lambda: summarize(kernel.store, "big"))
    row["reconcile"] = _timed(lambda: kernel.reconcile_run("big"))
    if len(dispatcher.queue) != n - n // 2:
        raise RuntimeError(f"reconcile sent {len(dispatcher.queue)} refs, not {n - n // 2}")
    dispatcher.queue.clear()
    row["reconcile q"] = _timed(lambda: kernel.reconcile_run("big", queued_for=60))
    if dispatcher.queue:
        raise RuntimeError("reconcile_run(queued_for=60) sent refs queued less than 60 s ago")
    row["cancel"] = _timed(lambda: kernel.cancel_run("big"))
    row["recover"] = _recover_us(new_store, expired)
    return row


def _recover_us(new_store: Callable[[str], Any], count: int) -> float:
    """Microseconds per task of ``recover_expired`` over ``count`` expired leases."""
    kernel, dispatcher, _ = _launched(new_store, "expire", count)
    for ref in list(dispatcher.queue):
        kernel.claim_task("expire", ref.task_id, worker="w")
    kernel.clock.t += 10 * kernel.lease_seconds  # type: ignore[attr-defined]  # a FakeClock
    start = perf_counter()
    recovered = kernel.recover_expired(limit=count)
    spent = perf_counter() - start
    if recovered != count:
        raise RuntimeError(f"recover_expired recovered {recovered} of {count}")
    return spent / count * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 5,000")
    parser.add_argument("--n", type=int, default=None, help="middle tasks (default 100,000)")
    parser.add_argument("--only", default="memory,sqlite,redis")
    args = parser.parse_args(argv)
    n = args.n or (5_000 if args.quick else 100_000)
    expired = 100 if args.quick else 1_000
    print(f"one 1 -> {n:,} -> 1 run per adapter, half its middle tasks claimed; seconds per "
          f"call (recover: us per task, {expired:,} expired leases)")
    print(f"{'adapter':<8}" + "".join(f"{c:>13}" for c in COLUMNS) + f"{'recover':>13}")
    with _stores(args.only.split(",")) as stores:
        for name, new_store in stores:
            row = measure(new_store, n, expired)
            print(f"{name:<8}" + "".join(f"{row[c]:>12.3f}s" for c in COLUMNS)
                  + f"{row['recover']:>11.0f}us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
