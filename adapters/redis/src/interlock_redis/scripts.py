"""Loading and calling the Lua scripts: SCRIPT LOAD once, EVALSHA always, reload on NOSCRIPT.

Each operation is one file under ``lua/``; the store's scripts get ``lua/_common.lua`` (shared
helpers, no commands of its own) prepended before loading, so every operation is still one
script and one EVALSHA.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from typing import Any

import redis
from redis.exceptions import NoScriptError, ResponseError

_hiredis_pack: Callable[[Any], bytes] | None
try:  # the C packer, present when redis-py's optional hiredis parser is installed
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - depends on the installed extras
    _hiredis_pack = None

__all__ = ["Scripts", "text"]

STORE_SCRIPTS = (
    "create_run",
    "launch_node",
    "launch_and_claim",
    "settle_node",
    "claim_task",
    "claim_tasks",
    "heartbeat",
    "complete_task",
    "complete_tasks",
    "complete_task_prefetch",
    "complete_follow",
    "fail_task",
    "suspend_task",
    "resume_task",
    "cancel_run",
    "reopen_run",
)
QUEUE_SCRIPTS = ("promote_delayed", "dispatch")

Arg = str | bytes | int | float
Command = tuple[Arg, ...]
ScriptCall = tuple[str, Sequence[str | bytes], Sequence[Arg]]
"""A script's name, KEYS and ARGV."""


def lua_source(name: str) -> str:
    """The text of ``lua/<name>.lua`` shipped in this package."""
    return (resources.files("interlock_redis") / "lua" / f"{name}.lua").read_text("utf-8")


def text(value: Any) -> str:
    """A reply value as str (clients may or may not decode responses)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


class Scripts:
    """A set of named scripts for one client: loaded lazily in one round trip, then called
    by SHA. After a server restart or SCRIPT FLUSH the first call gets NOSCRIPT, reloads every
    script and repeats the refused script calls (safe: they did not run). ``direct=False``
    sends every call through redis-py's ``execute_command`` / pipelines (for clients whose
    command layer is wrapped, e.g. by tracing instrumentation)."""

    def __init__(self, client: redis.Redis, names: Iterable[str], *, prelude: str = "",
                 direct: bool = True) -> None:
        self._client = client
        self.sources = {name: prelude + lua_source(name) for name in names}
        self.shas = {name: hashlib.sha1(src.encode("utf-8")).hexdigest()
                     for name, src in self.sources.items()}
        self._sha_bytes = {name: sha.encode() for name, sha in self.shas.items()}
        self._loaded = False
        self._lock = threading.Lock()
        # ``direct``: script calls skip redis-py's command layer (see _send_direct); it needs a
        # pooled client — a single-connection client keeps redis-py's own path
        self._direct = direct and isinstance(client, redis.Redis) and client.connection is None

    def load(self) -> None:
        """SCRIPT LOAD every script (one pipelined round trip)."""
        with self._lock:
            pipe = self._client.pipeline(transaction=False)
            for source in self.sources.values():
                pipe.script_load(source)
            shas = [text(sha) for sha in pipe.execute()]
            if shas != list(self.shas.values()):  # pragma: no cover - server disagrees on SHA1
                raise RuntimeError("redis returned unexpected script SHA1 digests")
            self._loaded = True

    def call(self, name: str, keys: Sequence[str | bytes], args: Sequence[Arg],
             *after: Command) -> Any:
        """EVALSHA the script, then the plain commands ``after``, pipelined: one round trip.
        Returns the script's reply (see :meth:`calls`)."""
        return self.calls([(name, keys, args)], *after)[0]

    def calls(self, scripts: Sequence[ScriptCall], *after: Command) -> list[Any]:
        """EVALSHA each ``(name, keys, args)`` in order, then the plain commands ``after``,
        pipelined: one round trip. Returns the scripts' replies in order; an error reply of
        any command raises, after every reply was read. A script that got NOSCRIPT did not
        run: the scripts are reloaded and those calls (with ``after``, which must be
        repeatable) sent again — only those, since a pipeline is not atomic and the others
        may have run."""
        if not self._loaded:
            self.load()
        commands: list[Command] = [("EVALSHA", self._sha_bytes[name], len(keys), *keys, *args)
                                   for name, keys, args in scripts]
        return self._settled(commands, after, self._send([*commands, *after]))

    def _settled(self, commands: Sequence[Command], after: Sequence[Command],
                 replies: list[Any]) -> list[Any]:
        """The scripts' replies of a round trip of ``commands`` then ``after``: the calls that
        got NOSCRIPT (they did not run) sent again after a reload, with ``after``; raises the
        first error reply."""
        missing = [k for k, reply in enumerate(replies[:len(commands)])
                   if isinstance(reply, NoScriptError)]
        if missing:
            self.load()
            again = self._send([*(commands[k] for k in missing), *after])
            for k, reply in zip(missing, again, strict=False):
                replies[k] = reply
            replies[len(commands):] = again[len(missing):]
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies[:len(commands)]

    def begin(self, scripts: Sequence[ScriptCall], *after: Command) -> Callable[[], list[Any]]:
        """:meth:`calls` in two halves: the commands are written now, on a connection of the
        pool held until the returned function has read their replies (it returns what
        ``calls`` returns, and raises as it does). Call that function exactly once. Not
        retried on a connection error (a repeat is the caller's); without direct calls, the
        whole round trip happens here."""
        if not self._direct:
            done = self.calls(scripts, *after)
            return lambda: done
        if not self._loaded:
            self.load()
        commands: list[Command] = [("EVALSHA", self._sha_bytes[name], len(keys), *keys, *args)
                                   for name, keys, args in scripts]
        every = [*commands, *after]
        pool = self._client.connection_pool
        conn: Any = pool.get_connection()
        try:
            conn.send_packed_command(_packed(conn, every))
        except BaseException:
            conn.disconnect()
            pool.release(conn)
            raise

        def replies() -> list[Any]:
            try:
                got = _read(conn, len(every))
            finally:
                pool.release(conn)
            return self._settled(commands, after, got)

        return replies

    def _send(self, commands: Sequence[Command]) -> list[Any]:
        """The replies of ``commands`` in one round trip, error replies as exceptions in
        place; raises any other error (the connection's)."""
        if self._direct:
            return self._send_direct(commands)
        if len(commands) == 1:
            try:
                return [self._client.execute_command(*commands[0])]  # type: ignore[no-untyped-call]
            except ResponseError as exc:
                return [exc]
        pipe = self._client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)  # type: ignore[no-untyped-call]
        return pipe.execute(raise_on_error=False)

    def _send_direct(self, commands: Sequence[Command]) -> list[Any]:
        """The commands on a pooled connection, without redis-py's per-command machinery
        (argument checks in Python, observability hooks): ~10 us less client CPU per call,
        most of a small script call's client cost. Connection and timeout errors follow the
        connection's retry policy, as redis-py's own calls do: the connection is dropped and
        the commands sent again, or the error raised when the policy says stop."""
        pool = self._client.connection_pool
        conn = pool.get_connection()
        try:
            packed = _packed(conn, commands)
            return conn.retry.call_with_retry(
                lambda: _exchange(conn, packed, len(commands)),
                lambda error: conn.disconnect())  # type: ignore[no-untyped-call]
        finally:
            pool.release(conn)

    def queue(self, pipe: Any, name: str, keys: Sequence[str], args: Sequence[Arg]) -> None:
        """Add an EVALSHA of the script to a pipeline being built."""
        pipe.evalsha(self.shas[name], len(keys), *keys, *args)

    def pipeline(self, build: Callable[[Any], None]) -> list[Any]:
        """Run the commands ``build`` queues on a fresh non-transactional pipeline (one round
        trip); on NOSCRIPT reload and run them again (every queued command must be repeatable,
        which all of ours are). Raises the first error reply."""
        if not self._loaded:
            self.load()
        for attempt in range(2):
            pipe = self._client.pipeline(transaction=False)
            build(pipe)
            results: list[Any] = pipe.execute(raise_on_error=False)
            if attempt == 0 and any(isinstance(r, NoScriptError) for r in results):
                self.load()
                continue
            for result in results:
                if isinstance(result, Exception):
                    raise result
            return results
        raise AssertionError("unreachable")  # pragma: no cover


def _packed(conn: Any, commands: Sequence[Command]) -> list[bytes]:
    """``commands`` packed for ``conn.send_packed_command``: one buffer by hiredis when it is
    installed (the connection writes each item with its own sendall), else redis-py's packer."""
    if _hiredis_pack is not None:
        return [b"".join([_hiredis_pack(command) for command in commands])]
    return conn.pack_commands(commands)  # type: ignore[no-any-return]


def _exchange(conn: Any, packed: Sequence[bytes], count: int) -> list[Any]:
    """Send ``packed`` (``count`` commands) and read every reply (:func:`_read`)."""
    try:
        conn.send_packed_command(packed)
    except BaseException:
        conn.disconnect()
        raise
    return _read(conn, count)


def _read(conn: Any, count: int) -> list[Any]:
    """Read ``count`` replies, error replies as exceptions in place (the connection stays in
    step). Anything else disconnects: a reply may be unread, the connection cannot be reused
    as it is."""
    try:
        replies: list[Any] = []
        for _ in range(count):
            try:
                replies.append(conn.read_response())
            except ResponseError as exc:
                replies.append(exc)
    except BaseException:
        conn.disconnect()
        raise
    return replies
