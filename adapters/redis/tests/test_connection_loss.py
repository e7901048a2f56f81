"""Connection loss: every operation is one EVALSHA, so it applies once or not at all; when
the client cannot know which (the reply was lost), repeating the call is safe.

- every mutating operation with its request lost, and with its reply lost (injected at the
  socket), then retried: the retry is 'applied' in the first case and a fenced no-op
  ('duplicate', or 'stale' for resume) in the second; effects (artifacts, seq) exist once;
- a run during which the (durable: AOF, appendfsync always) redis-server is SIGKILLed and
  restarted: it completes after reconnection with every artifact exactly once;
- a run during which the server repeatedly kills the workers' connections (CLIENT KILL).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.connection import Connection
from redis.retry import Retry

from interlock import Kernel, StoreUnavailable, TaskInput
from interlock.records import (
    NewArtifact,
    NodeLaunch,
    NodeRecord,
    RunRecord,
    TaskRecord,
    TaskRef,
)
from interlock.states import NodeState, RunState, TaskState
from interlock.values import RunFinished
from interlock_redis import RedisStore, RedisStreamsDispatcher, RedisUnavailable

# ---- injected faults at the socket ---------------------------------------------------------


class Faults:
    """``lose``: 'request' drops the next command before it reaches the server; 'reply' lets
    the server execute it and drops the connection instead of returning the reply."""

    def __init__(self) -> None:
        self.lose: str | None = None


def faulty_client(url: str, faults: Faults) -> redis.Redis:
    class FaultyConnection(Connection):
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            lose, faults.lose = faults.lose, None
            if lose == "request":
                self.disconnect()
                raise redis.ConnectionError("injected: request lost")
            super().send_packed_command(command, check_health)
            if lose == "reply":
                # FIN after the request; the server executes what it read, then closes on the
                # FIN: draining to EOF means it has executed, and its reply is thrown away
                sock = self._sock
                assert sock is not None
                sock.shutdown(socket.SHUT_WR)
                sock.settimeout(10)
                while sock.recv(65536):
                    pass
                self.disconnect()
                raise redis.ConnectionError("injected: reply lost")

    pool = redis.ConnectionPool.from_url(url, connection_class=FaultyConnection,
                                         retry=Retry(NoBackoff(), 0))
    return redis.Redis(connection_pool=pool)


@pytest.fixture
def faults(redis_url: str, namespace: str) -> Iterator[tuple[RedisStore, Faults]]:
    f = Faults()
    client = faulty_client(redis_url, f)
    store = RedisStore(client, namespace)
    store.scripts.load()  # so the injected fault hits the operation, not the first SCRIPT LOAD
    yield store, f
    client.close()


@pytest.mark.parametrize("lose", ["request", "reply"])
def test_every_operation_applies_once_or_not_at_all(faults: tuple[RedisStore, Faults],
                                                    lose: str) -> None:
    store, f = faults
    lost_reply = lose == "reply"

    def twice(call: Callable[[], Any]) -> Any:
        """The call fails with a connection error; the caller repeats it."""
        f.lose = lose
        with pytest.raises(RedisUnavailable) as error:  # also a redis.ConnectionError
            call()
        assert isinstance(error.value, StoreUnavailable)
        assert isinstance(error.value, redis.ConnectionError)
        return call()

    def retried(outcome: Any, applied: Any = "applied", repeat: Any = "duplicate") -> None:
        assert outcome == (repeat if lost_reply else applied)

    run = RunRecord("r", {"name": "p"}, {}, RunState.RUNNING, 2, 2)
    nodes = [NodeRecord(0, 0, NodeState.WAITING, 0), NodeRecord(1, 0, NodeState.WAITING, 1)]
    retried(twice(lambda: store.create_run(run, nodes)), (run, True), (run, False))
    tasks = [TaskRecord("r", f"a.0.{s}", 0, 0, s, TaskState.QUEUED, {"inputs": {}}, None,
                        "self") for s in range(2)]
    retried(twice(lambda: store.launch_node("r", 0, 0, tasks, 2, 1.0)))
    assert len(store.list_tasks("r")) == 2
    # several launches pipelined: each applies once; a repeat after a lost reply is duplicate
    other = RunRecord("m", {"name": "p"}, {}, RunState.RUNNING, 2, 2)
    store.create_run(other, [NodeRecord(0, 0, NodeState.WAITING, 0),
                             NodeRecord(1, 0, NodeState.WAITING, 0)])
    many = [NodeLaunch(k, 0, (TaskRecord("m", f"n{k}.0.0", k, 0, 0, TaskState.QUEUED,
                                         {"inputs": {}}, None, "self"),), 1) for k in (0, 1)]
    outcomes = twice(lambda: store.launch_nodes("m", many, 1.0))
    assert outcomes == (["duplicate"] * 2 if lost_reply else ["applied"] * 2)
    assert [t.task_id for t in store.list_tasks("m")] == ["n0.0.0", "n1.0.0"]

    outcome, task = twice(lambda: store.claim_task("r", "a.0.0", "x0", "w", 50.0, 2.0))
    retried(outcome)
    assert task is not None and task.attempt == 1
    assert twice(lambda: store.heartbeat("r", "a.0.0", "x0", 60.0)) is True
    outputs = [NewArtifact(f"a.0.0/{k}", {"k": k}, [k]) for k in range(3)]
    retried(twice(lambda: store.complete_task("r", "a.0.0", "x0", outputs, [1], 3.0)).outcome)
    assert [a.artifact_id for a in store.get_artifacts("r", 0, 0)] == \
        [o.artifact_id for o in outputs]

    store.claim_task("r", "a.0.1", "x1", "w", 50.0, 4.0)
    retried(twice(lambda: store.fail_task("r", "a.0.1", "x1", "oops", 5.0, TaskState.FAILED,
                                          [1], None, 4.0)).outcome)
    assert store.claim_task("r", "a.0.1", "x2", "w", 50.0, 5.0)[0] == "applied"
    retried(twice(lambda: store.suspend_task("r", "a.0.1", "x2", "human", 6.0)))
    outcome, task = twice(lambda: store.resume_task("r", "a.0.1", {"ok": 1}, 7.0))
    retried(outcome, "applied", "stale")  # resume is fenced by state: the repeat is stale
    assert task is not None and task.state is TaskState.QUEUED and task.resume == {"ok": 1}
    assert store.claim_task("r", "a.0.1", "x3", "w", 50.0, 8.0)[1].attempt == 3  # type: ignore[union-attr]
    retried(twice(lambda: store.fail_task("r", "a.0.1", "x3", "final", None, TaskState.FAILED,
                                          [1], None, 9.0)).outcome)
    # this settle ends the run; an exact repeat is still a 'duplicate' (nothing changes)
    retried(twice(lambda: store.settle_node("r", 1, 0, NodeState.SKIPPED, "upstream failed",
                                            [], None, 10.0)).outcome, "applied", "duplicate")
    failed = store.get_run("r")
    assert failed is not None and failed.state is RunState.FAILED
    assert (failed.unsettled, failed.failed_nodes, failed.artifact_seq) == (0, 1, 3)

    fresh = [NodeRecord(0, 1, NodeState.WAITING, 0), NodeRecord(1, 1, NodeState.WAITING, 1)]
    retried(twice(lambda: store.reopen_run("r", 0, fresh, 11.0)))
    retried(twice(lambda: store.cancel_run("r", "enough", 12.0)).outcome)
    final = store.get_run("r")
    assert final is not None and final.state is RunState.CANCELLED and final.retries == 1
    assert len(store.get_artifacts("r", 0, 0)) == 3


def test_an_unreachable_server_raises_store_unavailable() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = RedisStore(redis.Redis(port=port, socket_connect_timeout=1,
                                   retry=Retry(NoBackoff(), 0)), "ns")
    with pytest.raises(StoreUnavailable, match="get_run"):
        store.get_run("r")
    with pytest.raises(StoreUnavailable, match="cancel_run"):
        store.cancel_run("r", "x", 1.0)


class _StillClock:
    def now(self) -> float:
        return 100.0  # no timed sweep: every receive below is one pipeline (acks + read)


@pytest.mark.parametrize("lose", ["request", "reply"])
def test_buffered_acks_survive_a_lost_round_trip(redis_url: str, client: redis.Redis,
                                                 namespace: str, lose: str) -> None:
    """The acks riding on a receive whose round trip fails stay buffered and are sent again
    (XACK and XDEL of an id already acked change nothing)."""
    faults = Faults()
    faulty = faulty_client(redis_url, faults)
    queue = RedisStreamsDispatcher(faulty, namespace, consumer="c", clock=_StillClock())
    queue.dispatch([TaskRef("r", f"n.0.{i}", "p") for i in range(2)])
    queue.ack(queue.receive(10, 1.0))
    faults.lose = lose
    with pytest.raises(redis.ConnectionError):
        queue.receive(10, 0)
    pending = client.xpending(queue.stream_key, queue.group)["pending"]
    assert pending == (2 if lose == "request" else 0)
    assert queue.receive(10, 0) == []  # sends them again
    assert client.xpending(queue.stream_key, queue.group)["pending"] == 0
    assert client.xlen(queue.stream_key) == 0
    faulty.close()


# ---- whole runs through outages ---------------------------------------------------------------

PIPELINE = {"name": "outage", "nodes": [
    {"slug": "src", "plugin": "emit"},
    {"slug": "each", "plugin": "double", "depends_on": ["src"]},
    {"slug": "sum", "plugin": "sum", "depends_on": ["each"], "fan_mode": "aggregate"},
]}
COUNT = 30


def _behaviour(on_each: Callable[[int], None]) -> Callable[[TaskInput], list[dict[str, Any]]]:
    calls = 0
    lock = threading.Lock()

    def run(task: TaskInput) -> list[dict[str, Any]]:
        nonlocal calls
        if task.node == "src":
            return [{"id": f"i{i}", "fields": {"i": i}, "data": i} for i in range(COUNT)]
        if task.node == "each":
            with lock:
                calls += 1
                number = calls
            on_each(number)
            (item,) = task.inputs["src"]
            return [{"id": "x2", "data": item.data * 2}, {"id": "x3", "data": item.data * 3}]
        return [{"data": sum(a.data for a in task.inputs["each"])}]

    return run


def _drive_to_the_end(kernel: Kernel, store: RedisStore, run_id: str, done: threading.Event,
                      deadline_seconds: float = 90) -> RunRecord:
    """Wait for the run; every second without news, run the documented repair sweep
    (reconcile_run re-dispatches QUEUED tasks whose dispatch was lost in the outage)."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        try:
            run = store.get_run(run_id)
            if run is not None and run.state.terminal:
                return run
            if not done.wait(1.0):
                kernel.reconcile_run(run_id)
        except (redis.ConnectionError, redis.TimeoutError):
            pass  # the server is still coming back
        assert time.monotonic() < deadline, "the run did not finish after the outage"


def _assert_exactly_once(store: RedisStore, run_id: str, completions: dict[str, list[str]],
                         *, transparent_retries: bool) -> None:
    run = store.get_run(run_id)
    assert run is not None and run.state is RunState.COMPLETED
    each = store.get_artifacts(run_id, 1, 0)
    assert len(each) == 2 * COUNT
    assert len({a.artifact_id for a in each}) == 2 * COUNT
    (total,) = store.get_artifacts(run_id, 2, 0)
    assert total.data == sum(5 * i for i in range(COUNT))
    assert run.artifact_seq == COUNT + 2 * COUNT + 1  # no seq consumed twice
    tasks = store.list_tasks(run_id)
    assert len(tasks) == COUNT + 2 and all(t.state is TaskState.COMPLETED for t in tasks)
    for task_id, outcomes in completions.items():
        applied = outcomes.count("applied")
        assert applied <= 1, (task_id, outcomes)
        if applied == 0:  # the applying call's reply was lost; its repeat saw 'duplicate'
            assert "duplicate" in outcomes, (task_id, outcomes)
            assert transparent_retries or "error" in outcomes, (task_id, outcomes)


def test_run_survives_a_redis_server_crash_and_restart(
        server_factory: Callable[..., Any], make_workers: Callable[..., Any]) -> None:
    server = server_factory(durable=True)
    namespace = "outage"
    client = redis.Redis.from_url(server.url)
    done = threading.Event()
    crash = threading.Event()
    restarted = threading.Event()

    def on_each(number: int) -> None:
        if number == 10:
            crash.set()
            restarted.wait(30)  # this task completes only after the restart

    def finished(_: RunFinished) -> None:
        done.set()

    store = RedisStore(client, namespace)
    kernel = Kernel(store, RedisStreamsDispatcher(client, namespace, consumer="kernel"),
                    on_run_finished=finished)
    workers = make_workers(
        kernel, lambda i: RedisStreamsDispatcher(client, namespace, consumer=f"w{i}",
                                                 claim_idle_seconds=1.0),
        _behaviour(on_each), 4, resilient=True).start()
    kernel.start_run(PIPELINE, {}, run_id="crash")
    assert crash.wait(60)
    server.restart()  # SIGKILL, then start again on the same port and data directory
    restarted.set()
    _drive_to_the_end(kernel, store, "crash", done)
    workers.stop()
    assert not workers.errors, workers.errors
    assert workers.transient_errors > 0  # the workers really saw the outage
    _assert_exactly_once(store, "crash", workers.completions, transparent_retries=True)
    client.close()


def test_run_survives_killed_client_connections(
        redis_url: str, namespace: str, make_workers: Callable[..., Any]) -> None:
    name = f"{namespace}-client"
    client = redis.Redis.from_url(redis_url, client_name=name)
    admin = redis.Redis.from_url(redis_url)
    kills = 0

    def on_each(number: int) -> None:
        nonlocal kills
        if number % 4 == 0:  # kill every connection of ours (and only ours)
            for entry in admin.client_list():
                if entry.get("name") == name:
                    try:
                        admin.client_kill_filter(_id=entry["id"])
                        kills += 1
                    except redis.ResponseError:  # that connection closed in the meantime
                        pass

    done = threading.Event()
    store = RedisStore(client, namespace)
    kernel = Kernel(store, RedisStreamsDispatcher(client, namespace, consumer="kernel"),
                    on_run_finished=lambda _: done.set())
    workers = make_workers(
        kernel, lambda i: RedisStreamsDispatcher(client, namespace, consumer=f"w{i}",
                                                 claim_idle_seconds=1.0),
        _behaviour(on_each), 4, resilient=True).start()
    kernel.start_run(PIPELINE, {}, run_id="kill")
    _drive_to_the_end(kernel, store, "kill", done)
    workers.stop()
    assert not workers.errors, workers.errors
    assert kills > 0
    _assert_exactly_once(store, "kill", workers.completions, transparent_retries=True)
    client.close()
    admin.close()


class _Queue:
    def __init__(self) -> None:
        self.refs: list[TaskRef] = []

    def dispatch(self, tasks: Any) -> None:
        self.refs.extend(tasks)


def _chain(store: RedisStore, run_id: str) -> tuple[Kernel, _Queue]:
    """A kernel on ``store`` with an in-process queue, and run ``run_id`` of a -> b -> c
    started (a's task in the queue)."""
    queue = _Queue()
    kernel = Kernel(store, queue)
    kernel.start_run({"name": "chain", "nodes": [
        {"slug": "a", "plugin": "p"}, {"slug": "b", "plugin": "p", "depends_on": ["a"]},
        {"slug": "c", "plugin": "p", "depends_on": ["b"]}]}, run_id=run_id)
    return kernel, queue


@pytest.mark.parametrize("lose", ["request", "reply"])
def test_a_repeated_completion_dispatches_what_its_lost_reply_launched(
        faults: tuple[RedisStore, Faults], lose: str) -> None:
    """A chain step's completion launches the next step in the same script (the ``follow``
    ability); when its reply is lost, the worker's repeat ('duplicate') dispatches that step,
    with no reconcile_run: the run completes through repeats alone."""
    store, f = faults
    kernel, queue = _chain(store, "c")
    outcomes: list[str] = []
    while queue.refs:
        ref = queue.refs.pop(0)
        claim = kernel.claim_task("c", ref.task_id)
        assert claim is not None
        f.lose = lose
        with pytest.raises(RedisUnavailable):
            kernel.on_task_complete("c", ref.task_id, claim.attempt_id, [{"data": 1}])
        outcomes.append(kernel.on_task_complete("c", ref.task_id, claim.attempt_id,
                                                [{"data": 1}]).outcome)
    run = store.get_run("c")
    assert run is not None and run.state is RunState.COMPLETED
    expected = "duplicate" if lose == "reply" else "applied"
    assert outcomes == [expected] * 3


@pytest.mark.parametrize("lose", ["request", "reply"])
def test_a_repeated_continuation_gets_the_claim_its_lost_reply_made(
        faults: tuple[RedisStore, Faults], lose: str) -> None:
    """``complete_and_continue``: the chain's completion launches and claims the next step
    for the caller in one script (``follow`` + ``handover``). With that reply lost, the repeat
    hands the same claim over (its attempt id derives from the completing attempt) rather than
    leaving the step RUNNING under an attempt nobody knows until its lease expires."""
    store, f = faults
    kernel, queue = _chain(store, "k")
    (ref,) = queue.refs
    claim = kernel.claim_task("k", ref.task_id)
    steps = []
    while claim is not None:
        steps.append(claim.task_id)
        f.lose = lose
        with pytest.raises(RedisUnavailable):
            kernel.complete_and_continue("k", claim.task_id, claim.attempt_id, [{"data": 1}])
        _, claim = kernel.complete_and_continue("k", claim.task_id, claim.attempt_id,
                                                [{"data": 1}])
    assert steps == ["a.0.0", "b.0.0", "c.0.0"]
    assert queue.refs == [ref]  # every step after the first was handed over, never queued
    run = store.get_run("k")
    assert run is not None and run.state is RunState.COMPLETED
    assert [t.attempt for t in store.list_tasks("k")] == [1, 1, 1]


@pytest.mark.parametrize("lose", ["request", "reply"])
def test_a_launch_sent_ahead_and_lost_is_finished_by_the_repeat(
        faults: tuple[RedisStore, Faults], lose: str) -> None:
    """A 1 -> 300 launch goes out in batches of 64, 128, 108, the later ones sent ahead
    (``launch_ahead``): the third batch's request or reply is lost while the second's is in
    flight. The completion raises; the batch in flight is read (its connection freed), and
    the repeat ('duplicate') writes what is missing and dispatches every task."""
    store, f = faults
    queue = _Queue()
    kernel = Kernel(store, queue)
    kernel.start_run({"name": "wide", "nodes": [
        {"slug": "src", "plugin": "p"}, {"slug": "each", "plugin": "p", "depends_on": ["src"]},
        {"slug": "sum", "plugin": "p", "depends_on": ["each"], "fan_mode": "aggregate"}]},
        run_id="w")
    (ref,) = queue.refs
    queue.refs.clear()
    claim = kernel.claim_task("w", ref.task_id)
    assert claim is not None
    real = store.launch_node_ahead
    sent = 0

    def ahead(*args: Any, **kwargs: Any) -> Any:
        nonlocal sent
        sent += 1
        if sent == 2:
            f.lose = lose
        return real(*args, **kwargs)

    store.launch_node_ahead = ahead  # type: ignore[method-assign]
    # two connections made beforehand: the fault hits the launch, not a new connection's
    # handshake (the second batch holds one connection while the third is sent)
    pool = store.client.connection_pool
    held = [pool.get_connection(), pool.get_connection()]
    for conn in held:
        pool.release(conn)
    outputs = [{"id": f"a{i}", "data": i} for i in range(300)]
    with pytest.raises(RedisUnavailable):
        kernel.on_task_complete("w", ref.task_id, claim.attempt_id, outputs)
    assert sent == 2
    del store.launch_node_ahead
    written = len(store.list_tasks("w", node_index=1))
    assert written == (300 if lose == "reply" else 64 + 128)
    queue.refs.clear()
    assert kernel.on_task_complete("w", ref.task_id, claim.attempt_id,
                                   outputs).outcome == "duplicate"
    assert sorted(r.task_id for r in queue.refs) == sorted(f"each.0.{i}" for i in range(300))
    while queue.refs:
        task = queue.refs.pop(0)
        step = kernel.claim_task("w", task.task_id)
        assert step is not None
        data = 0 if task.task_id.startswith("sum") else step.input.inputs["src"][0].data * 2
        kernel.on_task_complete("w", task.task_id, step.attempt_id, [{"data": data}])
    run = store.get_run("w")
    assert run is not None and run.state is RunState.COMPLETED
    assert sorted(a.data for a in store.get_artifacts("w", 1, 0)) == [2 * i for i in range(300)]
    assert len(pool._in_use_connections) == 0  # nothing left held
