"""Client-side Redis round-trip counting for every ``redis-py`` connection of this process.

:func:`install` wraps ``AbstractConnection.send_command`` / ``pack_commands`` (to learn the
names of the commands about to be written; a request packed elsewhere is read off its bytes)
and ``send_packed_command`` (one call = one request written to the socket = one round trip: a
single command, a whole pipeline or a MULTI/EXEC block). Each round trip is counted under a key
naming its commands, e.g. ``EVALSHA:claim_task+SADD`` for the claim pipeline; EVALSHA digests
are mapped back to the Interlock script names.

With a ``path``, the counts (and the operation timings of :mod:`optimer`, if enabled) are
written to ``path`` (atomically) when the process receives SIGUSR1 — :func:`request` sends it
and waits for the new file — so a parent process can read what a worker process did. Server-side
``INFO commandstats`` also counts the commands Lua scripts run, and cannot tell a pipeline from
separate round trips; this counter is the client's view.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from benchmarks.e2e_support import optimer

__all__ = ["counts", "install", "paused", "read", "request"]

_lock = threading.Lock()
_counts: Counter[str] = Counter()
_local = threading.local()
_installed = False
_shas: dict[str, str] = {}


def _script_names() -> dict[str, str]:
    try:
        from interlock_redis.scripts import QUEUE_SCRIPTS, STORE_SCRIPTS, lua_source
    except ImportError:
        return {}
    prelude = lua_source("_common")
    out = {}
    for name in STORE_SCRIPTS:
        out[hashlib.sha1((prelude + lua_source(name)).encode()).hexdigest()] = name
    for name in QUEUE_SCRIPTS:
        out[hashlib.sha1(lua_source(name).encode()).hexdigest()] = name
    return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


def _name(args: tuple[Any, ...]) -> str:
    if not args:
        return "?"
    name = _text(args[0]).upper()
    if name == "EVALSHA" and len(args) > 1:
        return f"EVALSHA:{_shas.get(_text(args[1]), _text(args[1])[:8])}"
    if " " in name:  # redis-py packs e.g. "CLIENT SETINFO" as one argument
        name = name.split()[0]
    return name


def _joined(names: list[str]) -> str:
    """``A+B`` for a pipeline; runs of one command are shown as ``XADD*k`` (k > 1)."""
    parts: list[str] = []
    k = 0
    while k < len(names):
        j = k
        while j < len(names) and names[j] == names[k]:
            j += 1
        parts.append(names[k] if j - k == 1 else f"{names[k]}*{j - k}")
        k = j
    return "+".join(parts)


def _packed_names(packed: Any) -> str:
    """The key of a request packed without redis-py's packers (interlock-redis sends its
    script calls itself): the commands read off the RESP arrays being written."""
    chunks = [packed] if isinstance(packed, bytes | bytearray | memoryview) else packed
    data = b"".join(bytes(chunk) for chunk in chunks)
    names: list[str] = []
    pos = 0
    while pos < len(data) and data[pos:pos + 1] == b"*":
        end = data.index(b"\r\n", pos)
        count, pos = int(data[pos + 1:end]), end + 2
        args: list[bytes] = []
        for k in range(count):
            end = data.index(b"\r\n", pos)
            size = int(data[pos + 1:end])
            if k < 2:
                args.append(data[end + 2:end + 2 + size])
            pos = end + 2 + size + 2
        names.append(_name(tuple(args)))
    return _joined(names) if names else "?"


def install(path: str | None = None) -> None:
    """Start counting in this process (idempotent); with ``path``, publish counts there."""
    global _installed
    if _installed:
        return
    _installed = True
    _shas.update(_script_names())
    from redis.connection import AbstractConnection

    send_command: Any = AbstractConnection.send_command
    pack_commands: Any = AbstractConnection.pack_commands
    send_packed: Any = AbstractConnection.send_packed_command

    def counted_send_command(self: Any, *args: Any, **kwargs: Any) -> Any:
        _local.pending = _name(args)
        return send_command(self, *args, **kwargs)

    def counted_pack_commands(self: Any, commands: Any) -> Any:
        commands = list(commands)
        _local.pending = _joined([_name(tuple(c)) for c in commands])
        return pack_commands(self, commands)

    def counted_send_packed(self: Any, command: Any, check_health: bool = True) -> Any:
        key = getattr(_local, "pending", None) or _packed_names(command)
        _local.pending = None
        if not getattr(_local, "paused", False):
            with _lock:
                _counts[key] += 1
        return send_packed(self, command, check_health)

    AbstractConnection.send_command = counted_send_command  # type: ignore[method-assign]
    AbstractConnection.pack_commands = counted_pack_commands  # type: ignore[method-assign]
    AbstractConnection.send_packed_command = counted_send_packed  # type: ignore[method-assign]
    if path:
        _start_publisher(path)


@contextmanager
def paused() -> Iterator[None]:
    """Round trips of this thread inside the block are not counted (the benchmark's polls)."""
    _local.paused = True
    try:
        yield
    finally:
        _local.paused = False


def counts() -> Counter[str]:
    """A copy of this process's counts."""
    with _lock:
        return Counter(_counts)


def _start_publisher(path: str) -> None:
    """Write the counts to ``path`` now, at exit, and whenever SIGUSR1 arrives.

    A Python signal handler only runs in the main thread, between bytecodes: a main thread
    blocked in a wait that a signal does not interrupt, or one holding ``_lock`` when the
    signal comes (a worker loop in the main thread), would never answer or would deadlock.
    So SIGUSR1 is blocked here (threads started later inherit the mask) and a daemon thread
    takes it with ``sigwait``: it sleeps in the kernel between requests and never holds a lock
    when one arrives, however many worker threads the process runs. The Python handler stays
    installed for threads started before, which have SIGUSR1 unblocked (its default action
    would end the process)."""
    sequence = [0]
    writing = threading.Lock()

    def write(*_: object) -> None:
        with writing:
            sequence[0] += 1
            data = {"pid": os.getpid(), "seq": sequence[0], "counts": dict(counts()),
                    "ops": optimer.snapshot() if optimer.enabled() else {}}
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as fh:
                json.dump(data, fh)
            os.replace(tmp, path)

    def answer() -> None:
        while True:
            signal.sigwait({signal.SIGUSR1})
            write()

    write()
    atexit.register(write)
    if threading.current_thread() is not threading.main_thread():
        return  # signal.signal() would raise: the counts are written at exit only
    # (the handler hands the write to a thread: the main thread may hold ``_lock``)
    signal.signal(signal.SIGUSR1, lambda *_: threading.Thread(target=write).start())
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    threading.Thread(target=answer, daemon=True, name="rtt-publisher").start()


def request(pid: int, path: str, timeout: float = 10.0) -> dict[str, Any]:
    """Ask the process ``pid`` to publish its counts at ``path`` (SIGUSR1); wait for them."""
    before = _load(path).get("seq", -1)
    deadline = time.monotonic() + timeout
    resend = 0.0
    while True:
        now = time.monotonic()
        if now >= resend:  # again every 0.5 s: a tracer (py-spy) may swallow a signal
            os.kill(pid, signal.SIGUSR1)
            resend = now + 0.5
        data = _load(path)
        if data.get("seq", -1) != before:
            return data
        if now > deadline:
            raise RuntimeError(f"process {pid} did not publish its counts within {timeout}s")
        time.sleep(0.002)


def _load(path: str) -> dict[str, Any]:
    try:
        with open(path) as fh:
            data: dict[str, Any] = json.load(fh)
            return data
    except (OSError, ValueError):
        return {}


def read(path: str) -> Counter[str]:
    """The counts a process last published at ``path`` (empty if none yet)."""
    return Counter(_load(path).get("counts", {}))
