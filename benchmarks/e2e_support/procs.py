"""Private redis-server instances and per-process CPU accounting (``/proc``, no psutil).

Never touches a shared Redis: every server here is started on a free port bound to 127.0.0.1,
with persistence off (``--save "" --appendonly no``), answered PING before use, and shut down
(SHUTDOWN NOSAVE, then SIGKILL after a deadline) when the ``with`` block exits.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["RedisServer", "cpu_seconds", "descendants", "free_port", "tree_cpu"]

REDIS_SERVER = "/usr/bin/redis-server"
_TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A private redis-server: ``with RedisServer() as server: server.url``."""

    def __init__(self, name: str = "e2e", timeout: float = 10.0) -> None:
        self.name = name
        self.timeout = timeout
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> RedisServer:
        import redis

        self.port = free_port()
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + self.timeout
        probe = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5,
                            socket_timeout=1.0)
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server ({self.name}) exited with code "
                                       f"{self.proc.returncode}")
                try:
                    if probe.ping():
                        break
                except redis.exceptions.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    self.__exit__(None, None, None)
                    raise RuntimeError(f"redis-server ({self.name}) on port {self.port} did "
                                       f"not answer PING within {self.timeout:.0f}s")
                time.sleep(0.02)
        finally:
            probe.close()
        return self

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port)

    def commandstats(self) -> Counter[str]:
        """Calls per command since the server started (including commands run by scripts)."""
        client = self.client()
        try:
            info = client.info("commandstats")
        finally:
            client.close()
        out: Counter[str] = Counter()
        for key, value in info.items():
            name = key.removeprefix("cmdstat_").upper()
            out[name] = int(value["calls"]) if isinstance(value, dict) else 0
        return out

    def __exit__(self, *exc: object) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            client = self.client()
            client.shutdown(nosave=True)
        except Exception:
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name is in parentheses and may contain spaces
    return raw[raw.rindex(")") + 2:].split()


def cpu_seconds(pid: int, *, reaped_children: bool = True) -> float:
    """User + system CPU of ``pid`` (plus its waited-for dead children), 0 if it is gone."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    # after the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICK


def descendants(root: int) -> list[int]:
    """Living descendants of ``root`` (from the ppid field of every /proc/<pid>/stat)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat(int(entry))
        if fields is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry))
    out: list[int] = []
    todo = [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def tree_cpu(roots: Iterable[int]) -> dict[int, float]:
    """CPU seconds per pid of ``roots`` and their living descendants."""
    out: dict[int, float] = {}
    for root in roots:
        for pid in [root, *descendants(root)]:
            out[pid] = cpu_seconds(pid)
    return out


class ThreadCpu:
    """CPU seconds per Python thread of this process, by thread kind, over a block.

    A sampler thread reads ``/proc/self/task/<tid>/stat`` every ``interval`` seconds and keeps
    the last value seen per thread, so threads that end inside the block (a process pool's
    manager and feeder threads) are counted up to their last sample.
    """

    def __init__(self, interval: float = 0.05) -> None:
        import threading

        self.interval = interval
        self._stop = threading.Event()
        self._seen: dict[int, tuple[str, float]] = {}
        self._start: dict[int, float] = {}
        self._thread = threading.Thread(target=self._loop, name="e2e-thread-cpu", daemon=True)

    @staticmethod
    def _kind(thread: object) -> str:
        name = getattr(thread, "name", "?")
        cls = type(thread).__name__
        if cls == "_ExecutorManagerThread":
            return "process pool: manager thread"
        if name.startswith("QueueFeederThread") or (cls == "Thread" and "feed" in name.lower()):
            return "process pool: queue feeder thread"
        if name.startswith("interlock-worker-"):
            return "runner worker threads (kernel + store)"
        if name.startswith("interlock-"):
            return name
        return f"{name} ({cls})"

    def _read(self) -> None:
        import threading

        for thread in threading.enumerate():
            tid = thread.native_id
            if tid is None or thread is self._thread:
                continue
            fields = _stat_path(f"/proc/self/task/{tid}/stat")
            if fields is None:
                continue
            cpu = (int(fields[11]) + int(fields[12])) / _TICK
            self._start.setdefault(tid, cpu if tid in self._initial else 0.0)
            self._seen[tid] = (self._kind(thread), cpu)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._read()

    def __enter__(self) -> ThreadCpu:
        import threading

        self._initial = {t.native_id for t in threading.enumerate()}
        self._read()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._read()
        self._stop.set()
        self._thread.join()

    def result(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for tid, (kind, cpu) in self._seen.items():
            out[kind] = out.get(kind, 0.0) + cpu - self._start.get(tid, 0.0)
        return out


def _stat_path(path: str) -> list[str] | None:
    try:
        raw = Path(path).read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()
