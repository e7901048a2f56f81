"""One SQLite connection per thread (and per process), configured for concurrent use.

Contract:

- :meth:`ConnectionPool.get` returns the calling thread's connection, opening it on first use:
  autocommit mode (``isolation_level=None``, so the store alone issues BEGIN/COMMIT), WAL journal,
  the configured ``synchronous`` level and busy timeout.
- :meth:`ConnectionPool.begin` returns it inside ``BEGIN IMMEDIATE`` (the write lock taken in
  short steps, see :func:`begin_immediate`). Its busy timeout is then 0, and stays 0 until
  :meth:`get` hands the connection out for reads again: a write transaction holding the lock in
  WAL mode never waits on a lock (its commit needs no other lock, and the checkpoint that may
  follow is PASSIVE, which never calls the busy handler), so a worker going from transaction
  to transaction sets the timeout only when it reads between them — two ``PRAGMA`` statements
  less per transaction (~3-5 us per task of the benchmark's SQLite cycle).
- A connection is never used by two threads. SQLite connections must not cross ``fork()``
  either: a child process that inherited the pool opens fresh connections and never touches (not
  even closes) the inherited ones, since closing them could release or corrupt the parent's
  POSIX locks on the database file.
- Connections of threads that have ended are closed when the next connection is opened;
  :meth:`close` closes every connection of this process.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Final

from interlock.errors import StoreUnavailable, UsageError

__all__ = ["SYNCHRONOUS_LEVELS", "ConnectionPool", "begin_immediate"]

SYNCHRONOUS_LEVELS: Final = ("NORMAL", "FULL", "EXTRA")
"""Allowed ``PRAGMA synchronous`` levels; OFF is refused (a crash could corrupt the file)."""

# Connections inherited across fork(): referenced forever so their finalizer never runs in the
# child (see the module docstring).
_INHERITED: list[sqlite3.Connection] = []


class ConnectionPool:
    """Per-thread connections to the database file at ``path``."""

    def __init__(self, path: str, *, busy_timeout_ms: int, synchronous: str,
                 on_connect: Callable[[sqlite3.Connection], None] | None = None) -> None:
        self.path = path
        self.on_connect = on_connect
        self.busy_timeout_ms = busy_timeout_ms
        self.synchronous = synchronous
        self._local = threading.local()
        self._open: list[tuple[threading.Thread, int, sqlite3.Connection]] = []
        self._lock = threading.Lock()
        self._closed = False

    def get(self) -> sqlite3.Connection:
        """The calling thread's connection, outside any transaction, waiting on a locked file
        up to the busy timeout."""
        conn = self._thread_conn()
        local = self._local
        if local.quick:  # left at 0 by begin()
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            local.quick = False
        return conn

    def begin(self) -> sqlite3.Connection:
        """The calling thread's connection inside ``BEGIN IMMEDIATE``, taken in short steps
        within the busy timeout (:func:`begin_immediate`), its busy timeout left at 0 (see the
        module docstring). Raises :class:`SqliteBusy` when the timeout passes."""
        conn = self._thread_conn()
        timeout = self.busy_timeout_ms
        if timeout <= 0:
            _begin_at_once(conn)
            return conn
        local = self._local
        if not local.quick:
            conn.execute("PRAGMA busy_timeout = 0")
            local.quick = True
        _take_write_lock(conn, timeout)
        return conn

    def _thread_conn(self) -> sqlite3.Connection:
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        pid = os.getpid()
        if conn is not None and local.pid == pid:
            return conn
        if self._closed:
            raise UsageError(f"SQLite store {self.path!r} is closed")
        conn = self.connect()
        local.conn, local.pid, local.quick = conn, pid, False
        with self._lock:
            keep: list[tuple[threading.Thread, int, sqlite3.Connection]] = []
            for thread, owner, other in self._open:
                if owner != pid:
                    _INHERITED.append(other)
                elif thread.is_alive():
                    keep.append((thread, owner, other))
                else:
                    other.close()
            keep.append((threading.current_thread(), pid, conn))
            self._open = keep
        return conn

    def connect(self) -> sqlite3.Connection:
        """Open and configure a new connection (the per-thread cache is :meth:`get`)."""
        try:
            # check_same_thread=False only so that close() may close every thread's connection;
            # each connection is still used by its own thread alone.
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000,
                                   isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise UsageError(f"cannot open SQLite store {self.path!r}: {exc}"
                             f"{_missing_directory(self.path)}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            mode = self._enable_wal(conn)
            if mode != "wal":
                raise UsageError(
                    f"SQLite store {self.path!r}: cannot enable WAL mode (got {mode!r}); "
                    "WAL needs a local filesystem with shared memory, not a network share"
                )
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            if self.on_connect is not None:
                self.on_connect(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> str:
        """Switch the file to WAL (readers never block the writer, nor it them); the mode.

        WAL is a property of the file, so only the first open switches it. That switch needs an
        exclusive lock and SQLite reports contention on it as SQLITE_BUSY at once, without
        calling the busy handler; several processes opening a fresh file together would fail
        ("database is locked"). So: read the mode first (the common, lock-free case), and retry
        the switch with a short backoff until the busy timeout.
        """
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        pause = 0.001
        while True:
            try:
                mode = str(conn.execute("PRAGMA journal_mode").fetchall()[0][0]).lower()
                if mode == "wal":
                    return mode
                return str(conn.execute("PRAGMA journal_mode = WAL").fetchall()[0][0]).lower()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)  # a backoff, as SQLite's own busy handler does
            pause = min(pause * 2, 0.05)

    def close(self) -> None:
        """Close every connection this process opened; later use raises UsageError.

        Call it when no other thread is using the store.
        """
        pid = os.getpid()
        with self._lock:
            self._closed = True
            for _, owner, conn in self._open:
                if owner == pid:
                    conn.close()
                else:
                    _INHERITED.append(conn)
            self._open = []
        self._local = threading.local()


class SqliteBusy(StoreUnavailable, sqlite3.OperationalError):
    """The write lock stayed held by another connection past ``busy_timeout_ms`` ("database
    is locked"): nothing of the step was applied, and repeating it later is safe. A
    :class:`~interlock.StoreUnavailable` (so a worker repeats its report, as after a lost
    connection) and still a ``sqlite3.OperationalError`` (what SQLite's own handler raises)."""


_FIRST_PAUSE: Final = 50e-6
_MAX_PAUSE: Final = 1e-3


def _missing_directory(path: str) -> str:
    """The likeliest cause of an open failure, if it is that the file's directory does not
    exist (SQLite creates the file, not its directories): a relative path where an absolute
    one was meant, as ``sqlite:///tmp/x.db`` (relative) for ``sqlite:////tmp/x.db``."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(directory):
        return ""
    return (f" (the directory {directory!r} does not exist; in a sqlite:/// URL the path is "
            f"relative to the working directory, sqlite:////PATH is absolute)")


def begin_immediate(conn: sqlite3.Connection, busy_timeout_ms: int) -> None:
    """``BEGIN IMMEDIATE`` on ``conn``, waiting for the write lock up to ``busy_timeout_ms``.

    The tries come 50 us apart, the pause growing to 1 ms, instead of through SQLite's own
    busy handler, which sleeps 1, 2, 5, 10, 15, 20, 25 ... 100 ms between tries: a writer that
    just missed the lock sleeps through the gaps in which the holder would have let it in,
    while the holder, between two of its own steps, takes it again at once. Measured with two
    worker processes on one file: one of them spent 104 ms of a 170 ms run waiting (35
    transactions) while the other ran 100. The connection's busy timeout is 0 during the tries
    only: its other statements keep waiting as configured. When the timeout passes, raises
    :class:`SqliteBusy` ("database is locked"; an ``sqlite3.OperationalError``, as SQLite's
    handler raises).
    """
    if busy_timeout_ms <= 0:
        _begin_at_once(conn)
        return
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        _take_write_lock(conn, busy_timeout_ms)
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")


def _begin_at_once(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if _is_busy(exc):
            raise SqliteBusy(f"{exc} (the write lock is held; busy_timeout_ms=0)") from exc
        raise


def _take_write_lock(conn: sqlite3.Connection, busy_timeout_ms: int) -> None:
    """The tries of :func:`begin_immediate`, on a connection whose busy timeout is 0."""
    deadline = time.monotonic() + busy_timeout_ms / 1000
    pause = _FIRST_PAUSE
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            left = deadline - time.monotonic()
            if not _is_busy(exc):
                raise
            if left <= 0:
                raise SqliteBusy(f"{exc} (the write lock stayed held for "
                                 f"busy_timeout_ms={busy_timeout_ms})") from exc
        time.sleep(min(pause, left))  # a backoff, as SQLite's handler's, in finer steps
        pause = min(pause * 1.5, _MAX_PAUSE)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return int(code) & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)
