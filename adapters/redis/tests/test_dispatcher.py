"""RedisStreamsDispatcher: dispatch / receive / ack, duplicates, takeover, delayed refs."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis

from interlock import Kernel
from interlock.plugins import PluginRegistry
from interlock.protocols import Delivery, Dispatcher, TaskSource
from interlock.records import TaskRef
from interlock.runtime import Worker
from interlock.states import RunState
from interlock_redis import RedisStore, RedisStreamsDispatcher
from interlock_redis.dispatcher import SPREAD


class FakeClock:
    def __init__(self, now: float) -> None:
        self.t = now

    def now(self) -> float:
        return self.t


def _refs(count: int, not_before: float = 0.0) -> list[TaskRef]:
    return [TaskRef("r", f"n.0.{i}", "p", not_before) for i in range(count)]


def _queue(client: redis.Redis, namespace: str, consumer: str, **kw: Any
           ) -> RedisStreamsDispatcher:
    return RedisStreamsDispatcher(client, namespace, consumer=consumer, **kw)


def _wait_blocked_in_xreadgroup(client: redis.Redis) -> None:
    """Until the server lists a client blocked in XREADGROUP (readiness, not a sleep)."""
    deadline = time.monotonic() + 10
    while not any(c.get("cmd") == "xreadgroup" and "b" in c.get("flags", "")
                  for c in client.client_list()):
        assert time.monotonic() < deadline, "receiver never blocked in XREADGROUP"


def _wait_idle(client: redis.Redis, queue: RedisStreamsDispatcher, count: int,
               seconds: float) -> None:
    """Until the server reports ``count`` pending messages idle for ``seconds`` or more (a
    deadline driven by the server's state)."""
    deadline = time.monotonic() + 10
    while len(client.xpending_range(queue.stream_key, queue.group, "-", "+", count,
                                    idle=int(seconds * 1000))) < count:
        assert time.monotonic() < deadline, "the pending messages never became idle"


def _pending(client: redis.Redis, queue: RedisStreamsDispatcher) -> int:
    return int(client.xpending(queue.stream_key, queue.group)["pending"])


def test_implements_both_protocols(client: redis.Redis, namespace: str) -> None:
    queue = _queue(client, namespace, "c")
    assert isinstance(queue, Dispatcher) and isinstance(queue, TaskSource)


def test_dispatch_receive_ack(client: redis.Redis, namespace: str) -> None:
    queue = _queue(client, namespace, "c")
    queue.dispatch(_refs(5))
    first = queue.receive(3, 1.0)
    rest = queue.receive(10, 1.0)
    assert [d.ref for d in first + rest] == _refs(5)
    assert len({d.token for d in first + rest}) == 5
    assert client.xpending(queue.stream_key, "workers")["pending"] == 5
    queue.ack(first + rest)  # buffered: sent with the next receive
    assert queue.receive(10, 0) == []
    assert client.xpending(queue.stream_key, "workers")["pending"] == 0
    assert client.xlen(queue.stream_key) == 0  # acked messages are deleted too


def test_dispatch_is_one_round_trip_per_batch(counting: Any, namespace: str) -> None:
    counted, log = counting
    queue = _queue(counted, namespace, "c", clock=FakeClock(100.0))
    counted.ping()  # the connection handshake (HELLO, CLIENT SETINFO) is not the batch's
    log.reset()
    queue.dispatch(_refs(50) + _refs(50, not_before=200.0))
    assert log.round_trips == 1
    assert dict(log.commands) == {"XADD": 50, "ZADD": 50}


def test_a_large_dispatch_is_one_round_trip_in_order(counting: Any, namespace: str) -> None:
    """Past the first SPREAD due refs (one XADD each) the rest go in one script call."""
    counted, log = counting
    queue = _queue(counted, namespace, "c", clock=FakeClock(100.0))
    counted.ping()
    queue.scripts.load()  # once per instance (else done by the first call that needs it)
    log.reset()
    queue.dispatch(_refs(SPREAD + 200) + _refs(5, not_before=200.0))
    assert log.round_trips == 1
    assert dict(log.commands) == {"XADD": SPREAD, "EVALSHA": 1, "ZADD": 5}
    assert [d.ref for d in queue.receive(1000, 0)] == _refs(SPREAD + 200)


def test_each_waiting_consumer_wakes_with_one_ref_of_a_burst(client: redis.Redis,
                                                            namespace: str) -> None:
    """Consumers blocked in XREADGROUP (asking for up to 50) each get one ref of a large
    dispatch, not the first of them all: the first refs are XADDed one by one, and Redis
    serves the blocked readers after each command."""
    receivers = [_queue(client, namespace, f"r{k}") for k in range(3)]
    receivers[0].ensure_group()
    got: list[list[Delivery]] = [[], [], []]
    threads = [threading.Thread(target=lambda k=k: got[k].extend(receivers[k].receive(50, 30)))
               for k in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while sum(1 for c in client.client_list()
              if c.get("cmd") == "xreadgroup" and "b" in c.get("flags", "")) < 3:
        assert time.monotonic() < deadline, "the receivers never blocked in XREADGROUP"
    _queue(client, namespace, "sender").dispatch(_refs(SPREAD + 100))
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(len(deliveries) for deliveries in got) == [1, 1, 1]


def test_receive_blocks_in_one_xreadgroup_until_a_message_arrives(
        counting: Any, client: redis.Redis, namespace: str) -> None:
    """No fixed-interval polling: while waiting the receiver sits in one blocking
    XREADGROUP; a dispatch from elsewhere wakes it."""
    counted, log = counting
    receiver = _queue(counted, namespace, "c")
    receiver.ensure_group()
    log.reset()
    got: list[Delivery] = []
    thread = threading.Thread(target=lambda: got.extend(receiver.receive(10, 30.0)))
    started = time.monotonic()
    thread.start()
    _wait_blocked_in_xreadgroup(client)
    _queue(client, namespace, "sender").dispatch(_refs(1))
    thread.join(timeout=10)
    assert [d.ref for d in got] == _refs(1)
    assert time.monotonic() - started < 10
    assert log.commands["XREADGROUP"] == 1


def test_duplicate_delivery_is_claimed_once_by_the_kernel(client: redis.Redis,
                                                           namespace: str) -> None:
    queue = _queue(client, namespace, "c")
    kernel = Kernel(RedisStore(client, namespace), queue)
    kernel.start_run({"name": "one", "nodes": [{"slug": "a", "plugin": "p"}]}, run_id="dup")
    (ref,) = [d.ref for d in queue.receive(10, 1.0)]
    queue.dispatch([ref])  # a duplicate dispatch (e.g. by reconcile_run)
    queue.dispatch([ref])
    deliveries = queue.receive(10, 1.0)
    assert [d.ref for d in deliveries] == [ref, ref]
    claims = [kernel.claim_task(ref.run_id, ref.task_id, worker="w") for _ in deliveries]
    won = [c for c in claims if c is not None]
    assert len(won) == 1
    queue.ack(deliveries)
    transition = kernel.on_task_complete("dup", ref.task_id, won[0].attempt_id, [])
    assert transition.run_state is RunState.COMPLETED


def test_xautoclaim_takes_over_the_messages_of_a_dead_consumer(client: redis.Redis,
                                                               namespace: str) -> None:
    dead = _queue(client, namespace, "dead")
    dead.dispatch(_refs(2))
    taken = dead.receive(10, 1.0)
    assert len(taken) == 2  # ... and the consumer dies without acking
    patient = _queue(client, namespace, "patient", claim_idle_seconds=300)
    assert patient.receive(10, 0) == []  # not idle for 300 s yet: left alone
    # a receiver whose idle threshold the pending messages already meet (0 s: any idle time)
    rescuer = _queue(client, namespace, "rescuer", claim_idle_seconds=0)
    rescued = rescuer.receive(10, 0)
    assert [(d.ref, d.token) for d in rescued] == [(d.ref, d.token) for d in taken]
    pending = client.xpending_range(rescuer.stream_key, "workers", "-", "+", 10)
    assert {p["consumer"].decode() for p in pending} == {"rescuer"}
    rescuer.ack(rescued)
    rescuer.flush()
    assert client.xpending(rescuer.stream_key, "workers")["pending"] == 0


def test_a_message_deleted_while_pending_is_not_redelivered(client: redis.Redis,
                                                            namespace: str) -> None:
    dead = _queue(client, namespace, "dead")
    dead.dispatch(_refs(1))
    (delivery,) = dead.receive(1, 1.0)
    client.xdel(dead.stream_key, delivery.token)
    rescuer = _queue(client, namespace, "rescuer", claim_idle_seconds=0)
    assert rescuer.receive(10, 0) == []
    assert client.xpending(dead.stream_key, "workers")["pending"] == 0


def test_delayed_refs_are_not_received_before_due(client: redis.Redis, namespace: str) -> None:
    clock = FakeClock(100.0)
    queue = _queue(client, namespace, "c", clock=clock)
    later, now = TaskRef("r", "n.0.0", "p", 150.0), TaskRef("r", "n.0.1", "p", 100.0)
    queue.dispatch([later, now])
    assert client.zcard(queue.delayed_key) == 1
    assert [d.ref for d in queue.receive(10, 0)] == [now]
    clock.t = 149.999
    assert queue.receive(10, 0) == []
    clock.t = 150.0
    deliveries = queue.receive(10, 0)
    assert [d.ref for d in deliveries] == [later]
    assert client.zcard(queue.delayed_key) == 0
    queue.ack(deliveries)


def test_a_blocked_receive_wakes_when_a_delayed_ref_falls_due(client: redis.Redis,
                                                              namespace: str) -> None:
    queue = _queue(client, namespace, "c")
    due = time.time() + 0.3
    queue.dispatch([TaskRef("r", "n.0.0", "p", due)])
    started = time.monotonic()
    deliveries = queue.receive(10, 20.0)
    assert time.time() >= due  # never early
    assert [d.ref.task_id for d in deliveries] == ["n.0.0"]
    assert time.monotonic() - started < 10  # woke at the due time, not at the timeout


def test_receive_recreates_a_vanished_group(client: redis.Redis, namespace: str) -> None:
    queue = _queue(client, namespace, "c")
    queue.dispatch(_refs(1))
    client.delete(queue.stream_key)  # e.g. a restart without persistence
    assert queue.receive(10, 0) == []
    queue.dispatch(_refs(1))
    assert [d.ref for d in queue.receive(10, 1.0)] == _refs(1)


def test_receive_respects_the_client_socket_timeout(redis_url: str, namespace: str) -> None:
    """A long receive on a client with a short socket timeout blocks in slices shorter than
    the timeout instead of failing with TimeoutError."""
    short = redis.Redis.from_url(redis_url, socket_timeout=1.0)
    try:
        queue = _queue(short, namespace, "c")
        started = time.monotonic()
        assert queue.receive(1, 2.2) == []
        assert 2.1 < time.monotonic() - started < 10
    finally:
        short.close()


@pytest.mark.parametrize("max_tasks", [0, -1])
def test_receive_nothing_when_asked_for_nothing(client: redis.Redis, namespace: str,
                                                max_tasks: int) -> None:
    queue = _queue(client, namespace, "c")
    queue.dispatch(_refs(1))
    assert queue.receive(max_tasks, 0) == []


# ---- sweeps when due; acks ride on the next read ---------------------------------------------


def test_a_delayed_ref_is_delivered_once_due_by_receive_alone(counting: Any,
                                                              namespace: str) -> None:
    """Before its due time a receive does not sweep (one round trip); the first receive at or
    after it promotes and delivers the ref, with no other call."""
    counted, log = counting
    clock = FakeClock(100.0)
    queue = _queue(counted, namespace, "c", clock=clock, sweep_interval=1000.0)
    assert queue.receive(10, 0) == []  # the first receive sweeps
    queue.dispatch([TaskRef("r", "n.0.0", "p", 150.0)])
    log.reset()
    clock.t = 149.9
    assert queue.receive(10, 0) == []
    assert log.round_trips == 1 and dict(log.commands) == {"XREADGROUP": 1}
    clock.t = 150.0
    assert [d.ref.task_id for d in queue.receive(10, 0)] == ["n.0.0"]
    assert log.commands["EVALSHA"] == 1 and log.commands["XAUTOCLAIM"] == 1


def test_a_sweep_learns_the_next_due_time_of_refs_delayed_elsewhere(client: redis.Redis,
                                                                    namespace: str) -> None:
    clock = FakeClock(100.0)
    _queue(client, namespace, "kernel", clock=clock).dispatch(
        [TaskRef("r", "n.0.0", "p", 150.0), TaskRef("r", "n.0.1", "p", 170.0)])
    worker = _queue(client, namespace, "w", clock=clock, sweep_interval=1000.0)
    assert worker.receive(10, 0) == []  # swept: the script reports 150 as the next due time
    clock.t = 150.0
    assert [d.ref.task_id for d in worker.receive(10, 0)] == ["n.0.0"]  # ... then 170
    clock.t = 170.0
    assert [d.ref.task_id for d in worker.receive(10, 0)] == ["n.0.1"]


def test_a_ref_delayed_elsewhere_after_a_sweep_waits_one_sweep_interval_at_most(
        client: redis.Redis, namespace: str) -> None:
    clock = FakeClock(100.0)
    worker = _queue(client, namespace, "w", clock=clock, sweep_interval=10.0)
    assert worker.receive(10, 0) == []  # swept at 100: the next timed sweep is at 110
    _queue(client, namespace, "kernel", clock=clock).dispatch([TaskRef("r", "n.0.0", "p", 105)])
    clock.t = 109.9
    assert worker.receive(10, 0) == []  # due, but unknown to this dispatcher
    clock.t = 110.0
    assert [d.ref.task_id for d in worker.receive(10, 0)] == ["n.0.0"]


def test_a_dead_consumers_deliveries_are_reclaimed_by_a_timed_sweep(
        counting: Any, client: redis.Redis, namespace: str) -> None:
    counted, log = counting
    clock = FakeClock(100.0)
    rescuer = _queue(counted, namespace, "rescuer", clock=clock, claim_idle_seconds=0.05,
                     sweep_interval=10.0)
    assert rescuer.receive(10, 0) == []  # the first receive sweeps: nothing to take over
    dead = _queue(client, namespace, "dead")
    dead.dispatch(_refs(2))
    taken = dead.receive(10, 1.0)
    assert len(taken) == 2  # ... and the consumer dies without acking
    _wait_idle(client, dead, 2, 0.05)
    log.reset()
    assert rescuer.receive(10, 0) == []  # idle long enough, but no sweep is due yet
    assert "XAUTOCLAIM" not in log.commands
    clock.t = 110.0
    rescued = rescuer.receive(10, 0)
    assert [(d.ref, d.token) for d in rescued] == [(d.ref, d.token) for d in taken]
    assert log.commands["XAUTOCLAIM"] == 1
    rescuer.ack(rescued)
    rescuer.close()
    assert _pending(client, rescuer) == 0


def test_a_full_page_of_takeovers_sweeps_again_on_the_next_receive(client: redis.Redis,
                                                                    namespace: str) -> None:
    dead = _queue(client, namespace, "dead")
    dead.dispatch(_refs(3))
    assert len(dead.receive(10, 1.0)) == 3
    rescuer = _queue(client, namespace, "rescuer", clock=FakeClock(100.0),
                     claim_idle_seconds=0, sweep_interval=1000.0)
    assert len(rescuer.receive(2, 0)) == 2  # a full page: there may be more
    assert len(rescuer.receive(2, 0)) == 1  # same clock time, swept again
    assert rescuer.receive(2, 0) == []


def test_buffered_acks_are_sent_by_the_next_receive_by_flush_and_by_close(
        client: redis.Redis, namespace: str) -> None:
    queue = _queue(client, namespace, "c")
    queue.dispatch(_refs(3))
    first, second, third = queue.receive(10, 1.0)
    queue.ack([first])
    assert _pending(client, queue) == 3  # buffered
    assert queue.receive(10, 0) == []
    assert _pending(client, queue) == 2
    queue.ack([second])
    queue.flush()
    assert _pending(client, queue) == 2 - 1
    queue.ack([third])
    queue.close()
    assert _pending(client, queue) == 0
    assert client.xlen(queue.stream_key) == 0


def test_unbuffered_acks_and_a_full_buffer_are_sent_at_once(client: redis.Redis,
                                                            namespace: str) -> None:
    queue = _queue(client, namespace, "c", buffer_acks=False)
    queue.dispatch(_refs(2))
    deliveries = queue.receive(10, 1.0)
    queue.ack(deliveries[:1])
    assert _pending(client, queue) == 1
    small = _queue(client, namespace, "d", max_buffered_acks=1)
    small.dispatch(_refs(1))
    small.ack(small.receive(10, 1.0))
    assert _pending(client, small) == 1  # only the first queue's second delivery
    queue.ack(deliveries[1:])
    assert _pending(client, queue) == 0


def test_acks_are_applied_before_a_receive_blocks(counting: Any, client: redis.Redis,
                                                  namespace: str) -> None:
    counted, log = counting
    queue = _queue(counted, namespace, "c", clock=FakeClock(100.0), sweep_interval=1000.0)
    queue.dispatch(_refs(1))
    queue.ack(queue.receive(1, 1.0))
    log.reset()
    got: list[Delivery] = []
    thread = threading.Thread(target=lambda: got.extend(queue.receive(10, 30.0)))
    thread.start()
    _wait_blocked_in_xreadgroup(client)
    assert _pending(client, queue) == 0  # acked while the receiver blocks
    _queue(client, namespace, "sender").dispatch(_refs(1))
    thread.join(timeout=10)
    assert [d.ref for d in got] == _refs(1)
    assert log.round_trips == 1
    assert dict(log.commands) == {"XACK": 1, "XDEL": 1, "XREADGROUP": 1}


def test_a_receive_and_ack_cycle_is_one_round_trip_in_steady_state(counting: Any,
                                                                   namespace: str) -> None:
    counted, log = counting
    queue = _queue(counted, namespace, "c", clock=FakeClock(100.0))
    queue.dispatch(_refs(11))
    queue.ack(queue.receive(1, 1.0))  # the first receive creates the group and sweeps
    log.reset()
    for _ in range(10):
        queue.ack(queue.receive(1, 1.0))
    assert log.round_trips == 10
    assert dict(log.commands) == {"XACK": 10, "XDEL": 10, "XREADGROUP": 10}
    queue.close()
    assert log.round_trips == 11 and _pending(counted, queue) == 0


def test_a_stopping_worker_sends_its_buffered_acks(client: redis.Redis, namespace: str) -> None:
    queue = _queue(client, namespace, "c")
    registry = PluginRegistry()
    registry.register("p", lambda task: [])
    kernel = Kernel(RedisStore(client, namespace), queue, plugins=registry)
    kernel.start_run({"name": "one", "nodes": [{"slug": "a", "plugin": "p"}]}, run_id="stop")
    stop = threading.Event()
    Worker(kernel, queue, registry, on_outcome=lambda outcome: stop.set()).run(stop)
    assert _pending(client, queue) == 0  # acked after the outcome, flushed when the loop ended
    assert client.xlen(queue.stream_key) == 0
