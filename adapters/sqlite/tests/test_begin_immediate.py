"""begin_immediate: the write lock taken in short steps, within the busy timeout, and the
connection's own busy timeout left as configured."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from interlock import StoreUnavailable
from interlock_sqlite import SqliteBusy, SqliteStore
from interlock_sqlite.connections import ConnectionPool, begin_immediate


def _connect(path: Path, busy_timeout_ms: int = 5_000) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
    return conn


def _busy_timeout(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA busy_timeout").fetchall()[0][0])


@pytest.fixture
def path(tmp_path: Path) -> Path:
    SqliteStore(tmp_path / "s.db").close()  # the schema, in WAL mode
    return tmp_path / "s.db"


def test_a_free_lock_is_taken_at_once_and_the_timeout_restored(path: Path) -> None:
    conn = _connect(path, 1234)
    begin_immediate(conn, 1234)
    assert conn.in_transaction and _busy_timeout(conn) == 1234
    conn.execute("COMMIT")


def test_a_waiter_gets_the_lock_once_the_holder_commits(path: Path) -> None:
    holder, waiter = _connect(path), _connect(path)
    holder.execute("BEGIN IMMEDIATE")
    tries: list[str] = []
    retried = threading.Event()

    def trace(sql: str) -> None:
        if sql == "BEGIN IMMEDIATE":
            tries.append(sql)
            if len(tries) >= 3:
                retried.set()

    waiter.set_trace_callback(trace)
    done = threading.Event()
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            begin_immediate(waiter, 30_000)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        done.set()

    thread = threading.Thread(target=wait)
    thread.start()
    assert retried.wait(10)  # it is trying, not sleeping in SQLite's handler
    assert not done.is_set()
    holder.execute("COMMIT")
    assert done.wait(10)
    thread.join()
    assert not errors and waiter.in_transaction and _busy_timeout(waiter) == 30_000
    waiter.execute("COMMIT")


def test_the_timeout_raises_database_is_locked_and_restores_the_setting(path: Path) -> None:
    holder, waiter = _connect(path), _connect(path, 50)
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked") as error:
        begin_immediate(waiter, 50)
    # a StoreUnavailable too: the runtime Worker repeats a report that got it
    assert isinstance(error.value, SqliteBusy) and isinstance(error.value, StoreUnavailable)
    assert "busy_timeout_ms=50" in str(error.value)
    assert not waiter.in_transaction and _busy_timeout(waiter) == 50
    with pytest.raises(SqliteBusy, match="locked"):
        begin_immediate(waiter, 0)  # no waiting at all
    holder.execute("COMMIT")


def test_a_store_step_locked_out_raises_store_unavailable_and_applies_nothing(
        path: Path) -> None:
    from interlock import Kernel

    store = SqliteStore(path, busy_timeout_ms=50)
    kernel = Kernel(store, _Nowhere())
    kernel.start_run({"name": "p", "nodes": [{"slug": "a", "plugin": "x"}]}, run_id="r")
    holder = _connect(path)
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(StoreUnavailable, match="busy_timeout_ms=50"):
        kernel.cancel_run("r", "enough")
    holder.execute("ROLLBACK")
    run = store.get_run("r")
    assert run is not None and run.state.value == "running"
    assert kernel.cancel_run("r", "enough").run_state is not None  # the repeat applies
    store.close()


def test_a_pool_sets_the_timeout_only_between_writes_and_reads(path: Path) -> None:
    # ConnectionPool.begin leaves the timeout at 0 (a write transaction in WAL mode never waits
    # on a lock); get(), the connection for reads, puts it back first
    pool = ConnectionPool(str(path), busy_timeout_ms=4321, synchronous="NORMAL")
    statements: list[str] = []
    conn = pool.get()
    conn.set_trace_callback(statements.append)
    for _ in range(3):
        assert pool.begin() is conn and conn.in_transaction
        conn.execute("COMMIT")
    assert statements == ["PRAGMA busy_timeout = 0", "BEGIN IMMEDIATE", "COMMIT",
                          "BEGIN IMMEDIATE", "COMMIT", "BEGIN IMMEDIATE", "COMMIT"]
    assert pool.get() is conn and _busy_timeout(conn) == 4321
    statements.clear()
    assert pool.get() is conn  # already waiting: nothing to set
    assert statements == []
    pool.close()


def test_a_pool_writer_waits_for_the_lock_and_times_out_as_configured(path: Path) -> None:
    holder = _connect(path)
    holder.execute("BEGIN IMMEDIATE")
    pool = ConnectionPool(str(path), busy_timeout_ms=50, synchronous="NORMAL")
    with pytest.raises(SqliteBusy, match="busy_timeout_ms=50"):
        pool.begin()
    assert not pool.get().in_transaction and _busy_timeout(pool.get()) == 50
    tries: list[str] = []
    retried, done = threading.Event(), threading.Event()

    def trace(sql: str) -> None:
        if sql == "BEGIN IMMEDIATE":
            tries.append(sql)
            if len(tries) >= 3:
                retried.set()

    patient = ConnectionPool(str(path), busy_timeout_ms=30_000, synchronous="NORMAL",
                             on_connect=lambda conn: conn.set_trace_callback(trace))
    thread = threading.Thread(target=lambda: (patient.begin(), done.set()))
    thread.start()
    assert retried.wait(10)  # trying again and again, in short steps
    assert not done.is_set()
    holder.execute("COMMIT")
    assert done.wait(10)
    thread.join()
    pool.close()
    patient.close()


class _Nowhere:
    def dispatch(self, tasks: object) -> None:
        pass
