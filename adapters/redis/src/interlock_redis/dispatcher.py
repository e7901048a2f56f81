"""Task queue on Redis Streams: a :class:`~interlock.protocols.Dispatcher` for the kernel and a
:class:`~interlock.protocols.TaskSource` for workers, on one stream and one consumer group.

- ``dispatch``: due refs are XADDed to the stream, refs with ``not_before`` in the future go to a
  delayed ZSET scored by ``not_before``; one pipelined round trip per batch.
- ``receive``: moves due delayed refs to the stream (Lua, atomic), takes over messages other
  consumers left pending longer than ``claim_idle_seconds`` (XAUTOCLAIM), then blocks in
  XREADGROUP (never a fixed-interval poll) until a message arrives, the timeout passes or the
  earliest delayed ref falls due.
- ``ack``: XACK + XDEL in one round trip.

Delivery is at least once: a worker that dies before ``ack`` leaves its messages pending and
another consumer takes them over after ``claim_idle_seconds``; the kernel's compare-and-set claim
makes duplicates harmless.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Sequence
from typing import Any

import redis
from redis.exceptions import ResponseError

from interlock.protocols import Clock, Delivery
from interlock.records import TaskRef
from interlock_redis.keys import Keys
from interlock_redis.scripts import QUEUE_SCRIPTS, Scripts, text
from interlock_redis.store import split_url

__all__ = ["RedisStreamsDispatcher", "queue_from_url"]


class _WallClock:
    def now(self) -> float:
        return time.time()


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _encode(ref: TaskRef) -> str:
    return json.dumps({"run_id": ref.run_id, "task_id": ref.task_id, "plugin": ref.plugin,
                       "not_before": ref.not_before}, ensure_ascii=True, separators=(",", ":"))


def _decode(raw: Any) -> TaskRef:
    data = json.loads(raw)
    return TaskRef(data["run_id"], data["task_id"], data["plugin"], data["not_before"])


class RedisStreamsDispatcher:
    """Dispatcher and TaskSource on a Redis stream with a consumer group.

    ``client``: a ``redis.Redis`` or a URL (``?namespace=`` in it replaces ``namespace``).
    ``consumer`` names this receiver inside ``group`` (unique per worker process; a default
    is derived from host, pid and a random suffix). ``claim_idle_seconds``: a message delivered
    to some consumer and not acked for that long is taken over by the next ``receive``
    (keep it above the longest task runtime; duplicates are harmless but wasteful).
    ``clock``: where "now" comes from for ``not_before`` (inject one in tests).
    ``promote_batch``: at most this many delayed refs are moved to the stream per ``receive``.
    """

    def __init__(
        self,
        client: redis.Redis | str,
        namespace: str = "interlock",
        *,
        stream: str = "tasks",
        group: str = "workers",
        consumer: str | None = None,
        claim_idle_seconds: float = 300.0,
        clock: Clock | None = None,
        promote_batch: int = 1000,
    ) -> None:
        if isinstance(client, str):
            url, namespace = split_url(client, namespace)
            client = redis.Redis.from_url(url)
        self.client: redis.Redis = client
        keys = Keys(namespace)
        self.stream_key = keys.stream(stream)
        self.delayed_key = keys.delayed(stream)
        self.group = group
        self.consumer = consumer or _default_consumer()
        self.claim_idle_seconds = claim_idle_seconds
        self.clock: Clock = clock or _WallClock()
        self.promote_batch = promote_batch
        self.scripts = Scripts(self.client, QUEUE_SCRIPTS)
        self._group_ready = False

    def __repr__(self) -> str:
        return (f"RedisStreamsDispatcher(stream={self.stream_key!r}, group={self.group!r}, "
                f"consumer={self.consumer!r})")

    # ---- Dispatcher ----------------------------------------------------------------------

    def dispatch(self, tasks: Sequence[TaskRef]) -> None:
        """XADD due refs, ZADD future ones to the delayed set: one round trip per batch."""
        if not tasks:
            return
        now = self.clock.now()
        pipe = self.client.pipeline(transaction=False)
        for ref in tasks:
            if ref.not_before > now:
                pipe.zadd(self.delayed_key, {_encode(ref): ref.not_before})
            else:
                pipe.xadd(self.stream_key, {"ref": _encode(ref)})
        pipe.execute()

    # ---- TaskSource ----------------------------------------------------------------------

    def ensure_group(self) -> None:
        """Create the stream and the consumer group if missing (idempotent)."""
        try:
            self.client.xgroup_create(self.stream_key, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def receive(self, max_tasks: int, timeout: float) -> list[Delivery]:
        """Up to ``max_tasks`` deliveries; blocks up to ``timeout`` seconds for the first."""
        if max_tasks <= 0:
            return []
        if not self._group_ready:
            self.ensure_group()
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            try:
                out, next_due = self._promote_and_autoclaim(max_tasks)
                remaining = deadline - time.monotonic()
                block = None
                if not out and remaining > 0:
                    block = remaining
                    if next_due is not None:  # wake when the earliest delayed ref falls due
                        block = min(block, max(0.0, next_due - self.clock.now()))
                    block = min(block, self._max_block())
                out += self._read(max_tasks - len(out), block)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self.ensure_group()  # the stream or group vanished (e.g. a non-durable restart)
                continue
            if out or time.monotonic() >= deadline:
                return out

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """XACK and XDEL the deliveries' messages (one round trip)."""
        if not deliveries:
            return
        ids = [d.token for d in deliveries]
        pipe = self.client.pipeline(transaction=False)
        pipe.xack(self.stream_key, self.group, *ids)
        pipe.xdel(self.stream_key, *ids)
        pipe.execute()

    # ---- internals -----------------------------------------------------------------------

    def _promote_and_autoclaim(self, count: int) -> tuple[list[Delivery], float | None]:
        idle_ms = max(0, int(self.claim_idle_seconds * 1000))
        now = json.dumps(float(self.clock.now()))

        def build(pipe: Any) -> None:
            self.scripts.queue(pipe, "promote_delayed", [self.stream_key, self.delayed_key],
                               [now, self.promote_batch])
            pipe.xautoclaim(self.stream_key, self.group, self.consumer, idle_ms,
                            start_id="0-0", count=count)

        promoted, claimed = self.scripts.pipeline(build)
        next_due = float(text(promoted[1])) if text(promoted[1]) else None
        return self._deliveries(claimed[1]), next_due

    def _read(self, count: int, block: float | None) -> list[Delivery]:
        if count <= 0:
            return []
        block_ms = None if block is None else max(1, int(block * 1000))
        if block is not None and block <= 0:
            block_ms = None
        reply: Any = self.client.xreadgroup(self.group, self.consumer, {self.stream_key: ">"},
                                            count=count, block=block_ms)
        if isinstance(reply, dict):  # RESP3 clients: {stream: [messages]} (or {stream: [[..]]})
            batches = list(reply.values())
        else:
            batches = [messages for _stream, messages in reply or []]
        out: list[Delivery] = []
        for messages in batches:
            if messages and isinstance(messages[0], list) and messages[0] \
                    and isinstance(messages[0][0], list):
                messages = messages[0]
            out += self._deliveries(messages)
        return out

    def _deliveries(self, messages: Any) -> list[Delivery]:
        out: list[Delivery] = []
        orphans: list[str] = []
        for message_id, fields in messages or []:
            token = text(message_id)
            raw = None if not fields else (fields.get(b"ref") or fields.get("ref"))
            if raw is None:
                orphans.append(token)  # deleted while pending: nothing to deliver
                continue
            out.append(Delivery(_decode(raw), token))
        if orphans:
            self.client.xack(self.stream_key, self.group, *orphans)
        return out

    def _max_block(self) -> float:
        """A block must end before the client's socket timeout fires."""
        kwargs = self.client.connection_pool.connection_kwargs
        socket_timeout = kwargs.get("socket_timeout")
        if socket_timeout is None:
            return 3600.0
        limit = float(socket_timeout)
        # leave the reply time to arrive: 1 s for usual timeouts, half of a very short one
        return max(0.01, limit - 1.0 if limit > 2.0 else limit / 2)


def queue_from_url(url: str) -> RedisStreamsDispatcher:
    """Entry point for ``redis://host:port/db[?namespace=ns]`` queue URLs (group ``workers``,
    stream ``tasks``, a unique consumer name)."""
    client_url, namespace = split_url(url)
    return RedisStreamsDispatcher(redis.Redis.from_url(client_url), namespace=namespace)
