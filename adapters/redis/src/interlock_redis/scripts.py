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
from redis.exceptions import NoScriptError

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
    "fail_task",
    "suspend_task",
    "resume_task",
    "cancel_run",
    "reopen_run",
)
QUEUE_SCRIPTS = ("promote_delayed", "dispatch")

Arg = str | bytes | int | float


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
    script and repeats the call (safe: nothing ran)."""

    def __init__(self, client: redis.Redis, names: Iterable[str], *, prelude: str = "") -> None:
        self._client = client
        self.sources = {name: prelude + lua_source(name) for name in names}
        self.shas = {name: hashlib.sha1(src.encode("utf-8")).hexdigest()
                     for name, src in self.sources.items()}
        self._sha_bytes = {name: sha.encode() for name, sha in self.shas.items()}
        self._loaded = False
        self._lock = threading.Lock()

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

    def call(self, name: str, keys: Sequence[str | bytes], args: Sequence[Arg]) -> Any:
        """EVALSHA the script: one round trip."""
        if not self._loaded:
            self.load()
        sha = self._sha_bytes[name]
        try:
            return self._client.evalsha(sha, len(keys), *keys, *args)  # type: ignore[arg-type]
        except NoScriptError:
            self.load()
            return self._client.evalsha(sha, len(keys), *keys, *args)  # type: ignore[arg-type]

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
