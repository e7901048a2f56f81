"""Client-side Redis round-trip counting for every ``redis-py`` connection of this process.

:func:`install` wraps ``AbstractConnection.send_command`` / ``pack_commands`` (to learn the names
of the commands about to be written) and ``send_packed_command`` (one call = one request written
to the socket = one round trip: a single command, a whole pipeline or a MULTI/EXEC block). Each
round trip is counted under a key naming its commands, e.g. ``EVALSHA:claim_task+SADD`` for the
claim pipeline; EVALSHA digests are mapped back to the Interlock script names.

With a ``path``, a daemon thread rewrites ``path`` (atomically) with the counts whenever they
changed, every 20 ms, so a parent process can read what a worker process sent. Server-side
``INFO commandstats`` also counts the commands Lua scripts run, and cannot tell a pipeline from
separate round trips; this counter is the client's view.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["counts", "install", "paused", "read"]

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


def install(path: str | None = None) -> None:
    """Start counting in this process (idempotent); with ``path``, publish counts there."""
    global _installed
    if _installed:
        return
    _installed = True
    _shas.update(_script_names())
    from redis.connection import AbstractConnection

    send_command = AbstractConnection.send_command
    pack_commands = AbstractConnection.pack_commands
    send_packed = AbstractConnection.send_packed_command

    def counted_send_command(self: Any, *args: Any, **kwargs: Any) -> Any:
        _local.pending = _name(args)
        return send_command(self, *args, **kwargs)

    def counted_pack_commands(self: Any, commands: Any) -> Any:
        commands = list(commands)
        _local.pending = "+".join(_name(tuple(c)) for c in commands)
        return pack_commands(self, commands)

    def counted_send_packed(self: Any, command: Any, check_health: bool = True) -> Any:
        key = getattr(_local, "pending", None) or "?"
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
    def write() -> None:
        data = {"pid": os.getpid(), "counts": dict(counts())}
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            json.dump(data, fh)
        os.replace(tmp, path)

    def loop() -> None:
        last: dict[str, int] | None = None
        while True:
            time.sleep(0.02)
            current = dict(counts())
            if current != last:
                try:
                    write()
                except OSError:
                    pass
                last = current

    write()
    threading.Thread(target=loop, name="e2e-rtt-publisher", daemon=True).start()
    atexit.register(write)


def read(path: str) -> Counter[str]:
    """The counts a process published at ``path`` (empty if none yet)."""
    try:
        with open(path) as fh:
            return Counter(json.load(fh)["counts"])
    except (OSError, ValueError, KeyError):
        return Counter()
