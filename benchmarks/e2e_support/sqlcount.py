"""SQLite statement counts of other processes, through a shared file of counters.

``LocalRunner(mode="processes")`` over a store with a URL runs the kernel and the store calls in
its worker processes, which open the store from the URL: no hook of the benchmark reaches their
connections. With ``INTERLOCK_E2E_SQL=<file>`` in their environment, importing the benchmark's
plugin module (which every worker process does, to resolve the plugins) calls :func:`install`:
the process takes a slot of counters in ``<file>`` (a memory-mapped array of 64-bit integers,
created by :func:`create`) and sets a trace callback on every SQLite connection it has and
opens later. :func:`read` sums the slots at any moment, without asking the processes anything
(no signal, no pipe). Counting costs about 1 us per statement in the counted process.

The counter names are those of ``e2e.SqlCounter``: ``BEGIN``, ``COMMIT``, ``ROLLBACK`` and
``<WORD> (in tx)`` / ``<WORD> (autocommit)``.
"""

from __future__ import annotations

import gc
import mmap
import os
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

__all__ = ["ENV", "KINDS", "classify", "create", "install", "read"]

ENV = "INTERLOCK_E2E_SQL"
_ENDS = ("BEGIN", "COMMIT", "ROLLBACK")
_WORDS = ("SELECT", "INSERT", "UPDATE", "DELETE", "PRAGMA", "WITH", "CREATE", "OTHER")
KINDS: tuple[str, ...] = (*_ENDS, *(f"{w} (in tx)" for w in _WORDS),
                          *(f"{w} (autocommit)" for w in _WORDS))
_INDEX = {kind: i for i, kind in enumerate(KINDS)}
SLOTS = 64
_WIDTH = 8  # bytes per counter
_installed: list[Any] = []  # the mapping, kept alive for the life of the process
_lock = threading.Lock()


def create(path: str) -> None:
    """An empty counter file (every slot free)."""
    with open(path, "wb") as fh:
        fh.write(bytes(SLOTS * len(KINDS) * _WIDTH))


def install(path: str) -> None:
    """Count this process's SQLite statements into a free slot of ``path`` (idempotent)."""
    with _lock:
        if _installed:
            return
        slot = _claim_slot(path)
        fd = os.open(path, os.O_RDWR)
        try:
            mapped = mmap.mmap(fd, SLOTS * len(KINDS) * _WIDTH)
        finally:
            os.close(fd)
        counters = memoryview(mapped).cast("q")
        _installed.extend([mapped, counters])
    base = slot * len(KINDS)
    for obj in gc.get_objects():  # the connections opened before this module was imported
        if isinstance(obj, sqlite3.Connection):
            obj.set_trace_callback(_tracer(counters, base))
    connect = sqlite3.connect

    def counted_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(_tracer(counters, base))
        return conn

    sqlite3.connect = counted_connect  # type: ignore[assignment]


def _claim_slot(path: str) -> int:
    for slot in range(SLOTS):
        try:
            os.close(os.open(f"{path}.slot{slot}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        return slot
    raise RuntimeError(f"{path}: all {SLOTS} counter slots are taken")


def classify(sql: str, in_tx: bool) -> tuple[str, bool]:
    """The counter name of a traced statement (one of :data:`KINDS`) and whether the
    connection is in a transaction after it."""
    head = sql.lstrip()[:8].upper().split(None, 1)
    word = head[0] if head else "OTHER"
    if word == "BEGIN":
        return word, True
    if word in ("COMMIT", "ROLLBACK", "END"):
        return ("COMMIT" if word == "END" else word), False
    where = "in tx" if in_tx else "autocommit"
    return f"{word if word in _WORDS else 'OTHER'} ({where})", in_tx


def _tracer(counters: memoryview, base: int) -> Callable[[str], None]:
    """The trace callback of one connection (its own in-transaction flag)."""
    in_tx = [False]
    index = _INDEX

    def trace(sql: str) -> None:
        kind, in_tx[0] = classify(sql, in_tx[0])
        counters[base + index[kind]] += 1

    return trace


def read(path: str) -> Counter[str]:
    """The counts of every process that installed into ``path``, summed."""
    with open(path, "rb") as fh:
        data = memoryview(fh.read()).cast("q")
    out: Counter[str] = Counter()
    width = len(KINDS)
    for slot in range(SLOTS):
        for i, kind in enumerate(KINDS):
            if data[slot * width + i]:
                out[kind] += data[slot * width + i]
    return out
