"""Pipes shared by the local runner and its worker processes, written without locks.

Every message is at most :data:`MAX_MESSAGE` bytes, so that (with its 4-byte length header, the
framing of :meth:`multiprocessing.connection.Connection.send_bytes`) it is one ``write`` of at
most ``PIPE_BUF`` bytes, which POSIX makes atomic on a pipe. Hence several processes can write
the same pipe *without a lock*, and a process that dies at any instant (a plugin calling
``os._exit``, SIGKILL) can neither leave half a message in the pipe nor hold a lock that would
block every other process — the hazard of :class:`multiprocessing.Queue`, whose writers share
a semaphore.

- :class:`TaskPipe` — the writer side of the task queue: ``O_NONBLOCK`` writes, so a dispatch
  never blocks; what does not fit waits in a per-process backlog that a feeder thread writes
  out in order. Readers (worker processes) take one message at a time under a shared lock,
  held only while a whole message, already in the pipe, is read.
- The events pipe (children -> runner) is written with blocking atomic writes: the runner's
  reader thread always drains it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pickle
import select
import struct
import threading
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from interlock.records import TaskRef

__all__ = ["CHUNK", "MAX_MESSAGE", "TaskPipe", "decode_refs", "encode", "encode_refs"]

log = logging.getLogger("interlock.runtime.pipes")

MAX_MESSAGE = select.PIPE_BUF - 4
"""Largest payload written in one atomic ``write`` (the header takes 4 bytes)."""

CHUNK = 64
"""Most task refs in one message: a large dispatch is spread over many messages, so that every
worker process gets a share of a 10,000-way launch. A worker process receives one message at a
time, so this also bounds its batches (``LocalRunner``'s ``batch``): 64 rather than 16 cut the
SQLite 1 -> 10,000 -> 1 run by 10-15% here (fewer, larger transactions: less contention for
the write lock, whose waiters poll). A message too large for one atomic write is halved."""

_PIPE_SIZE = 1 << 20  # room for a large launch before the backlog thread is needed


def encode(message: Any) -> bytes:
    """Pickle ``message``; ValueError if it does not fit one atomic write."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    if len(data) > MAX_MESSAGE:
        raise ValueError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE}")
    return data


def encode_refs(epoch: int, refs: Sequence[TaskRef], workers: int) -> list[bytes]:
    """``refs`` as messages ``(epoch, run_id, ((task_id, plugin, not_before), ...))``.

    Small dispatches are cut finer (about two messages per worker) so they spread too; a
    chunk too large for one atomic write is halved until it fits.
    """
    size = max(1, min(CHUNK, len(refs) // max(1, 2 * workers)))
    out: list[bytes] = []
    for start in range(0, len(refs), size):
        _encode_chunk(epoch, refs[start:start + size], out)
    return out


def _encode_chunk(epoch: int, refs: Sequence[TaskRef], out: list[bytes]) -> None:
    by_run: dict[str, list[tuple[str, str, float]]] = {}
    for ref in refs:
        by_run.setdefault(ref.run_id, []).append((ref.task_id, ref.plugin, ref.not_before))
    for run_id, items in by_run.items():
        data = pickle.dumps((epoch, run_id, tuple(items)), protocol=pickle.HIGHEST_PROTOCOL)
        if len(data) <= MAX_MESSAGE:
            out.append(data)
        elif len(items) == 1:
            raise ValueError(f"task ref {items[0][0]!r} of run {run_id!r} is too long to send")
        else:
            half = len(items) // 2
            part = [TaskRef(run_id, *item) for item in items]
            _encode_chunk(epoch, part[:half], out)
            _encode_chunk(epoch, part[half:], out)


def decode_refs(data: bytes) -> tuple[int, list[TaskRef]]:
    """The epoch and the refs of a message made by :func:`encode_refs`."""
    epoch, run_id, items = pickle.loads(data)
    return epoch, [TaskRef(run_id, *item) for item in items]


class TaskPipe:
    """The writer side of the shared task pipe in one process.

    ``send`` never blocks: a message is written at once if the pipe has room and nothing of
    this process is waiting before it, else appended to the backlog, which a daemon thread
    writes out (in order) as the pipe drains. ``discard`` drops the backlog.
    """

    def __init__(self, writer: Connection) -> None:
        self._fd = writer.fileno()
        self._writer = writer  # keeps the descriptor open
        os.set_blocking(self._fd, False)  # shared by every process holding this pipe end
        set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
        if set_size is not None:
            # above the system's pipe-max-size it fails: the default size works too
            with contextlib.suppress(OSError):
                fcntl.fcntl(self._fd, set_size, _PIPE_SIZE)
        self._backlog: deque[bytes] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def send(self, messages: Sequence[bytes]) -> None:
        """Write ``messages`` in order (each at most :data:`MAX_MESSAGE` bytes)."""
        with self._cond:
            for data in messages:
                if self._backlog or not self._write(data):
                    self._backlog.append(data)
            if self._backlog:
                self._start_feeder()
                self._cond.notify()

    def discard(self) -> None:
        with self._cond:
            self._backlog.clear()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._backlog.clear()
            self._cond.notify()

    def _write(self, data: bytes) -> bool:
        """One atomic write; False when the pipe has no room for it (nothing was written)."""
        try:
            os.write(self._fd, struct.pack("!i", len(data)) + data)
        except BlockingIOError:
            return False
        return True

    def _start_feeder(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._feed, daemon=True,
                                            name="interlock-task-pipe")
            self._thread.start()

    def _feed(self) -> None:
        while True:
            with self._cond:
                while not self._backlog and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                while self._backlog and self._write(self._backlog[0]):
                    self._backlog.popleft()
                waiting = bool(self._backlog)
            if waiting:  # the pipe is full: block (outside the lock) until readers drain it
                try:
                    select.select([], [self._fd], [], 1.0)
                except (OSError, ValueError):
                    return  # the descriptor was closed
