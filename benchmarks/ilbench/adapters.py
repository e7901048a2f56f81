"""Adapter set-ups: how to import each store, build a fresh one per measured run, and measure
its baseline. An adapter that is not importable is skipped with a note, never a crash."""

from __future__ import annotations

import contextlib
import importlib
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs

from ilbench.driver import RoundTrips

REPO = Path(__file__).resolve().parents[2]


def try_import(module: str, adapter_dir: str) -> tuple[ModuleType | None, str]:
    """Import ``module``; if it is not installed, try ``adapters/<dir>/src`` of this checkout.

    Returns (module or None, note saying why it is missing)."""
    try:
        return importlib.import_module(module), ""
    except ImportError as first:
        src = REPO / "adapters" / adapter_dir / "src"
        if src.is_dir() and str(src) not in sys.path:
            sys.path.append(str(src))
            try:
                return importlib.import_module(module), ""
            except ImportError as exc:
                return None, f"{module} is not importable ({exc})"
        return None, f"{module} is not importable ({first})"


@attrs.define
class Backend:
    """A store factory for one adapter, live for one benchmark section."""

    name: str
    new_store: Callable[[], Any]
    """A fresh, empty store (each measured run gets its own)."""
    baseline_us: float
    baseline_label: str
    rts: RoundTrips | None = None
    cleanup_between: Callable[[], None] | None = None
    """Called after each measured run (drops its data), outside the timed region."""
    notes: list[str] = attrs.field(factory=list)
    group_baseline: Callable[[int], float] | None = None
    """The raw write's cost per item when ``k`` items share one transaction / round trip
    (the baseline of the batched completion path), or None."""


def close_store(store: Any) -> None:
    """Close ``store`` if it can be closed (errors ignored: a benchmark is ending with it)."""
    close = getattr(store, "close", None)
    if callable(close):
        with contextlib.suppress(Exception):
            close()


@contextlib.contextmanager
def memory_backend() -> Iterator[Backend]:
    from interlock_memory import MemoryStore

    # the baseline is per shape (graphlib on the same task graph): measured by the runner
    yield Backend("memory", MemoryStore, 0.0, "graphlib per node")


@contextlib.contextmanager
def sqlite_backend(module: ModuleType, raw_tx: int, reps: int) -> Iterator[Backend]:
    from ilbench.baselines import sqlite_raw_tx_us

    directory = Path(tempfile.mkdtemp(prefix="ilbench-sqlite-"))
    stores: list[Any] = []
    counter = [0]

    def new_store() -> Any:
        for old in stores:
            close_store(old)
        stores.clear()
        counter[0] += 1
        store = module.SqliteStore(str(directory / f"run{counter[0]}.db"))
        stores.append(store)
        return store

    try:
        baseline = sqlite_raw_tx_us(directory, raw_tx, reps)
        yield Backend("sqlite", new_store, baseline, "raw BEGIN IMMEDIATE..COMMIT tx",
                      group_baseline=lambda k: baseline if k == 1 else sqlite_raw_tx_us(
                          directory, raw_tx, reps, k))
    finally:
        for old in stores:
            close_store(old)
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def redis_backend(module: ModuleType, calls: int, reps: int) -> Iterator[Backend]:
    from ilbench.baselines import redis_evalsha_us
    from ilbench.redisenv import counting_client, delete_matching, new_prefix, redis_url

    with redis_url() as (url, private):
        rts = RoundTrips()
        client = counting_client(url, rts)
        prefix = new_prefix()
        namespaces: list[str] = []

        def new_store() -> Any:
            namespace = f"{prefix}-{len(namespaces)}"
            namespaces.append(namespace)
            return module.RedisStore(client, namespace=namespace)

        def cleanup() -> None:
            for namespace in namespaces:
                delete_matching(client, namespace)
            namespaces.clear()

        try:
            baseline = redis_evalsha_us(client, f"{prefix}-baseline", calls, reps)
            through_py = redis_evalsha_us(client, f"{prefix}-baseline", calls, reps,
                                          direct=False)
            delete_matching(client, f"{prefix}-baseline")
            where = "a private redis-server" if private else "$INTERLOCK_BENCH_REDIS_URL"
            notes = [f"redis: {where}, keys under {prefix}*",
                     f"redis: the baseline EVALSHA is sent as the store sends its scripts "
                     f"(packed, straight on a pooled connection): {baseline:.1f} us; through "
                     f"redis-py's client.evalsha it costs {through_py:.1f} us"]
            def grouped(k: int) -> float:
                if k == 1:
                    return baseline
                cost = redis_evalsha_us(client, f"{prefix}-baseline", calls, reps, group=k)
                delete_matching(client, f"{prefix}-baseline")
                return cost

            yield Backend("redis", new_store, baseline, "raw EVALSHA (3 writes)", rts,
                          cleanup, notes, grouped)
        finally:
            with contextlib.suppress(Exception):
                cleanup()
                delete_matching(client, prefix)
            client.close()
