"""Task queue on Redis Streams: a :class:`~interlock.protocols.Dispatcher` for the kernel and a
:class:`~interlock.protocols.TaskSource` for workers, on one stream and one consumer group.

- ``dispatch``: due refs are XADDed to the stream, refs with ``not_before`` in the future go to a
  delayed ZSET scored by ``not_before``; one pipelined round trip per batch. The first
  ``SPREAD`` due refs are one XADD each: Redis serves the consumers blocked in XREADGROUP after
  every command, so each waiting consumer wakes with one ref of a burst (a slow task is not
  left waiting in the hands of a consumer busy with another); the rest of a large batch is
  appended by one script call (``dispatch.lua``), far cheaper than one XADD per ref.
- ``receive``: in steady state one round trip: the buffered acknowledgements (XACK + XDEL) and
  XREADGROUP in one pipeline. XREADGROUP blocks (never a fixed-interval poll) until a message
  arrives, the timeout passes, the next sweep is due or the earliest delayed ref this
  dispatcher knows of falls due.
- the *sweep* (moving due delayed refs to the stream with a Lua script, and taking over messages
  other consumers left pending longer than ``claim_idle_seconds`` with XAUTOCLAIM) is one more
  round trip, run only when due: on the first receive, every ``sweep_interval`` seconds, when
  the earliest known ``not_before`` has passed (due times this dispatcher stored, and the next
  due time the script reports), and again at once after a sweep that took over a full page
  and has more of the pending list to scan (it goes on from XAUTOCLAIM's cursor).
- ``ack``: buffered; sent with the next ``receive`` of any thread, by :meth:`flush` /
  :meth:`close`, or at once when ``buffer_acks`` is False or ``max_buffered_acks`` are waiting.

Delivery is at least once: a worker that dies before ``ack`` — or after it, with the
acknowledgement still buffered — leaves its messages pending; another consumer takes them over
after ``claim_idle_seconds`` and the kernel's compare-and-set claim makes the duplicates
harmless (the task is already RUNNING or finished: the claim is refused and the copy acked).
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import redis
from redis.exceptions import ResponseError

from interlock.protocols import Clock, Delivery
from interlock.records import TaskRef
from interlock_redis.codec import dumps
from interlock_redis.keys import Keys
from interlock_redis.reach import split_url
from interlock_redis.scripts import QUEUE_SCRIPTS, Scripts, text

__all__ = ["RedisStreamsDispatcher", "queue_from_url"]


class _WallClock:
    def now(self) -> float:
        return time.time()


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


SPREAD = 64
"""Due refs of a dispatch sent as one XADD each before the rest go in one script call."""

SWEEP_INTERVAL_MIN = 0.05
SWEEP_INTERVAL_MAX = 5.0


def _encode(ref: TaskRef) -> str:
    """The ref's JSON object (the text ``json.dumps(..., separators=(",", ":"))`` gives)."""
    return (f'{{"run_id":{dumps(ref.run_id)},"task_id":{dumps(ref.task_id)},'
            f'"plugin":{dumps(ref.plugin)},"not_before":{dumps(ref.not_before)}}}')


class RedisStreamsDispatcher:
    """Dispatcher and TaskSource on a Redis stream with a consumer group (thread-safe: the
    threads of one worker process may share one instance, i.e. one consumer).

    ``client``: a ``redis.Redis`` or a URL (``?namespace=`` in it replaces ``namespace``; the
    dispatcher then owns the client and :meth:`close` closes it). ``consumer`` names this
    receiver inside ``group`` (unique per worker process; a default is derived from host, pid
    and a random suffix). ``claim_idle_seconds``: a message delivered to some consumer and not
    acked for that long is taken over by a later sweep (keep it above the time a worker spends
    on one receive's tasks plus the next receive's, since acknowledgements are buffered until
    then; duplicates are harmless but wasteful). ``clock``: where "now" comes from for
    ``not_before`` and the sweep timer (inject one in tests). ``promote_batch``: at most this
    many delayed refs are moved to the stream per sweep. ``sweep_interval``: seconds between
    timed sweeps (default ``claim_idle_seconds / 10`` bounded to [0.05, 5]; 0 sweeps on every
    receive); it also bounds how late a delayed ref dispatched by *another* process is promoted.
    ``buffer_acks``: keep acknowledgements until the next receive (False: send each at once).
    ``max_buffered_acks``: an ``ack`` that brings the buffer to this size sends it at once.
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
        sweep_interval: float | None = None,
        buffer_acks: bool = True,
        max_buffered_acks: int = 1000,
    ) -> None:
        self._owns_client = isinstance(client, str)
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
        self.sweep_interval = max(0.0, _default_sweep_interval(claim_idle_seconds)
                                  if sweep_interval is None else sweep_interval)
        self.buffer_acks = buffer_acks
        self.max_buffered_acks = max(1, max_buffered_acks)
        self.scripts = Scripts(self.client, QUEUE_SCRIPTS)
        self._group_ready = False
        self._lock = threading.Lock()
        self._acks: list[str] = []  # message ids acked, not sent yet
        self._sweeping = False  # a thread is running a sweep
        self._claim_from = "0-0"  # XAUTOCLAIM cursor: where the next sweep goes on scanning
        self._swept_at = -math.inf  # clock time of the last sweep
        self._next_sweep = -math.inf  # clock time the timer makes the next sweep due
        self._known_due = math.inf  # earliest not_before known to wait in the delayed set
        self._new_due = math.inf  # earliest not_before stored since the running sweep began

    def __repr__(self) -> str:
        return (f"RedisStreamsDispatcher(stream={self.stream_key!r}, group={self.group!r}, "
                f"consumer={self.consumer!r})")

    def __enter__(self) -> RedisStreamsDispatcher:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    # ---- Dispatcher ----------------------------------------------------------------------

    def dispatch(self, tasks: Sequence[TaskRef]) -> None:
        """XADD due refs, ZADD future ones to the delayed set: one round trip per batch. The
        earliest future ``not_before`` becomes a wake-up time of this instance's receives."""
        if not tasks:
            return
        now = self.clock.now()
        due = [_encode(ref) for ref in tasks if ref.not_before <= now]
        delayed = [(_encode(ref), ref.not_before) for ref in tasks if ref.not_before > now]
        later = min((when for _, when in delayed), default=math.inf)
        first, rest = due[:SPREAD], due[SPREAD:]

        def build(pipe: Any) -> None:
            for raw in first:
                pipe.xadd(self.stream_key, {"ref": raw})
            if rest:
                self.scripts.queue(pipe, "dispatch", [self.stream_key], rest)
            for raw, when in delayed:
                pipe.zadd(self.delayed_key, {raw: when})

        if rest:
            # after a SCRIPT FLUSH or a restart of Redis (NOSCRIPT) the whole pipeline is sent
            # again: the first refs are then in the stream twice (harmless: claims are CAS)
            self.scripts.pipeline(build)
        else:
            pipe = self.client.pipeline(transaction=False)
            build(pipe)
            pipe.execute()
        if later < math.inf:
            with self._lock:
                self._known_due = min(self._known_due, later)
                self._new_due = min(self._new_due, later)

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
        """Up to ``max_tasks`` deliveries; blocks up to ``timeout`` seconds for the first.

        Sends the buffered acknowledgements first, in the same pipeline as the read (they are
        applied before the read blocks). Sweeps first when a sweep is due (see the class)."""
        if max_tasks <= 0:
            return []
        if not self._group_ready:
            self.ensure_group()
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            try:
                out = self._sweep(max_tasks)
                out += self._read(max_tasks - len(out), None if out else self._block(deadline))
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self.ensure_group()  # the stream or group vanished (e.g. a non-durable restart)
                continue
            if out or time.monotonic() >= deadline:
                return out

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge the deliveries (XACK + XDEL of their messages), normally buffered.

        The acknowledgement is sent with the next ``receive`` of this instance (any thread),
        by :meth:`flush` or :meth:`close`; at once (one round trip) when ``buffer_acks`` is
        False or the buffer reaches ``max_buffered_acks``. Acknowledgements still buffered
        when the process dies are lost: their messages are redelivered after
        ``claim_idle_seconds`` and refused by the kernel's claim (at least once, never twice
        run)."""
        if not deliveries:
            return
        with self._lock:
            self._acks.extend(d.token for d in deliveries)
            full = len(self._acks) >= self.max_buffered_acks
        if full or not self.buffer_acks:
            self.flush()

    def flush(self) -> None:
        """Send the buffered acknowledgements now: one round trip, none when nothing is
        buffered. If sending fails they stay buffered (resending is harmless) and the error
        propagates."""
        with self._sending() as acks:
            if acks:
                pipe = self.client.pipeline(transaction=False)
                self._queue_acks(pipe, acks)
                pipe.execute()

    def close(self) -> None:
        """:meth:`flush`, then close the client if this dispatcher opened it (from a URL).
        Call it when a worker stops; ``interlock worker`` and :class:`~interlock.runtime.Worker`
        do."""
        self.flush()
        if self._owns_client:
            self.client.close()

    # ---- internals: acknowledgements -----------------------------------------------------

    @contextmanager
    def _sending(self) -> Iterator[list[str]]:
        """Take the buffered acks for a request; put them back if the request fails."""
        with self._lock:
            acks, self._acks = self._acks, []
        try:
            yield acks
        except BaseException:
            with self._lock:
                self._acks[:0] = acks
            raise

    def _queue_acks(self, pipe: Any, acks: Sequence[str]) -> None:
        if acks:
            pipe.xack(self.stream_key, self.group, *acks)
            pipe.xdel(self.stream_key, *acks)

    # ---- internals: sweep ----------------------------------------------------------------

    def _sweep(self, count: int) -> list[Delivery]:
        """If a sweep is due and no other thread runs one: promote due delayed refs and take
        over idle messages (one round trip, with the buffered acks); else nothing."""
        now = self._begin_sweep()
        if now is None:
            return []
        try:
            claimed, next_due, cursor = self._promote_and_autoclaim(now, count)
        except BaseException:
            self._claim_from = "0-0"
            self._end_sweep(now, None, again=True)
            raise
        self._claim_from = cursor
        self._end_sweep(now, next_due, again=cursor != "0-0" and len(claimed) >= count)
        return claimed

    def _begin_sweep(self) -> float | None:
        """The clock time, after marking a sweep as running, if one is due; else None."""
        now = self.clock.now()
        with self._lock:
            due = (now >= self._next_sweep or now >= self._known_due
                   or now < self._swept_at)  # the clock went back: do not wait for it
            if self._sweeping or not due:
                return None
            self._sweeping, self._new_due = True, math.inf
        return now

    def _end_sweep(self, now: float, next_due: float | None, *, again: bool) -> None:
        """Record a sweep: the earliest due time left (None: unknown, the sweep failed), and
        whether the next receive sweeps again (more to take over, or a failure)."""
        with self._lock:
            self._sweeping = False
            self._swept_at = now
            known = self._known_due if next_due is None else next_due
            self._known_due = min(known, self._new_due)  # refs stored while it ran count
            self._next_sweep = -math.inf if again else now + self.sweep_interval

    def _promote_and_autoclaim(self, now: float, count: int
                               ) -> tuple[list[Delivery], float, str]:
        """Deliveries taken over, the earliest due time still delayed (inf: none) and the
        XAUTOCLAIM cursor ("0-0": the scan of the pending list is complete)."""
        idle_ms = max(0, int(self.claim_idle_seconds * 1000))
        with self._sending() as acks:

            def build(pipe: Any) -> None:
                self._queue_acks(pipe, acks)
                self.scripts.queue(pipe, "promote_delayed", [self.stream_key, self.delayed_key],
                                   [json.dumps(float(now)), self.promote_batch])
                pipe.xautoclaim(self.stream_key, self.group, self.consumer, idle_ms,
                                start_id=self._claim_from, count=count)

            *_, promoted, claimed = self.scripts.pipeline(build)
        next_due = float(text(promoted[1])) if text(promoted[1]) else math.inf
        return self._deliveries(claimed[1]), next_due, text(claimed[0])

    # ---- internals: reading --------------------------------------------------------------

    def _block(self, deadline: float) -> float | None:
        """Seconds the read may block (None: not at all): until the deadline, the next sweep
        or the earliest known due time, and shorter than the socket timeout. A wake-up time
        already passed is a sweep another thread is running: its XADDs wake the read."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        with self._lock:
            wake = min(self._next_sweep, self._known_due)
        until = wake - self.clock.now()
        if until > 0:
            remaining = min(remaining, until)
        return min(remaining, self._max_block())

    def _read(self, count: int, block: float | None) -> list[Delivery]:
        """XREADGROUP (new messages), after the buffered acks in the same round trip."""
        if count <= 0:
            return []
        block_ms = None if block is None or block <= 0 else max(1, int(block * 1000))
        with self._sending() as acks:
            if acks:
                pipe = self.client.pipeline(transaction=False)
                self._queue_acks(pipe, acks)
                pipe.xreadgroup(self.group, self.consumer, {self.stream_key: ">"},
                                count=count, block=block_ms)
                reply: Any = pipe.execute()[-1]
            else:
                reply = self.client.xreadgroup(self.group, self.consumer,
                                               {self.stream_key: ">"}, count=count,
                                               block=block_ms)
        return self._parse_read(reply)

    def _parse_read(self, reply: Any) -> list[Delivery]:
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
        tokens: list[str] = []
        raws: list[str] = []
        orphans: list[str] = []
        for message_id, fields in messages or []:
            token = text(message_id)
            raw = None if not fields else (fields.get(b"ref") or fields.get("ref"))
            if raw is None:
                orphans.append(token)  # deleted while pending: nothing to deliver
                continue
            tokens.append(token)
            raws.append(text(raw))
        if orphans:
            self.client.xack(self.stream_key, self.group, *orphans)
        if not raws:
            return []
        refs = json.loads("[" + ",".join(raws) + "]")  # one parse for the batch
        return [Delivery(TaskRef(data["run_id"], data["task_id"], data["plugin"],
                                 data["not_before"]), token)
                for data, token in zip(refs, tokens, strict=True)]

    def _max_block(self) -> float:
        """A block must end before the client's socket timeout fires."""
        kwargs = self.client.connection_pool.connection_kwargs
        socket_timeout = kwargs.get("socket_timeout")
        if socket_timeout is None:
            return 3600.0
        limit = float(socket_timeout)
        # leave the reply time to arrive: 1 s for usual timeouts, half of a very short one
        return max(0.01, limit - 1.0 if limit > 2.0 else limit / 2)


def _default_sweep_interval(claim_idle_seconds: float) -> float:
    """A tenth of the idle time after which messages are taken over, within [0.05, 5] s."""
    return min(SWEEP_INTERVAL_MAX, max(SWEEP_INTERVAL_MIN, claim_idle_seconds / 10))


def queue_from_url(url: str) -> RedisStreamsDispatcher:
    """Entry point for ``redis://host:port/db[?namespace=ns]`` queue URLs (group ``workers``,
    stream ``tasks``, a unique consumer name)."""
    return RedisStreamsDispatcher(url)
