"""How the store's script calls reach the server: straight on a pooled connection (the default,
packed by hiredis when installed, by redis-py's packer otherwise), or through redis-py's command
layer (``direct_calls=False``, and always for a single-connection client). Every way runs a
pipeline to completion, reloads its scripts after SCRIPT FLUSH, and keeps the connection in
step when a pipelined command gets an error reply. Several scripts pipelined in one call
(``launch_nodes``) are one round trip, and a NOSCRIPT sends again only the scripts that got
it."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import redis

from interlock import Kernel, TaskInput
from interlock.records import (
    NewArtifact,
    NodeLaunch,
    NodeRecord,
    RunRecord,
    TaskRecord,
    TaskRef,
)
from interlock.states import NodeState, RunState, TaskState
from interlock_redis import RedisStore, scripts

PIPELINE = {"name": "calls", "nodes": [
    {"slug": "src", "plugin": "emit"},
    {"slug": "each", "plugin": "double", "depends_on": ["src"]},
    {"slug": "sum", "plugin": "sum", "depends_on": ["each"], "fan_mode": "aggregate"},
]}


def behaviour(count: int) -> Callable[[TaskInput], list[dict[str, Any]]]:
    def run(task: TaskInput) -> list[dict[str, Any]]:
        if task.node == "src":
            return [{"fields": {"i": i}, "data": {"n": i}} for i in range(count)]
        if task.node == "each":
            (item,) = task.inputs["src"]
            return [{"data": {"n": item.data["n"] * 2}}]
        return [{"data": {"total": sum(a.data["n"] for a in task.inputs["each"])}}]
    return run

WAYS = ["direct", "direct-python-packer", "command-layer", "single-connection",
        "decoded-replies"]


class SeenCommands(redis.Redis):
    """A client whose command layer is wrapped, as tracing instrumentation wraps it."""

    seen: Counter[str]

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.seen[str(args[0]).upper()] += 1
        return super().execute_command(*args, **options)


@pytest.fixture(params=WAYS)
def way(request: pytest.FixtureRequest, redis_url: str, namespace: str,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, RedisStore, SeenCommands]]:
    name: str = request.param
    options: dict[str, Any] = {}
    if name == "single-connection":
        options["single_connection_client"] = True
    if name == "decoded-replies":
        options["decode_responses"] = True
    if name == "direct-python-packer":
        monkeypatch.setattr(scripts, "_hiredis_pack", None)
    client = SeenCommands.from_url(redis_url, **options)
    client.seen = Counter()
    store = RedisStore(client, namespace, direct_calls=name != "command-layer")
    yield name, store, client
    client.close()


def _drive(store: RedisStore, run_id: str, count: int) -> None:
    """Run PIPELINE on ``store`` in this thread: claim and complete every dispatched task."""
    queue: deque[TaskRef] = deque()

    class Collect:
        def dispatch(self, tasks: Sequence[TaskRef]) -> None:
            queue.extend(tasks)

    kernel = Kernel(store, Collect())
    work = behaviour(count)
    kernel.start_run(PIPELINE, {}, run_id=run_id)
    while queue:
        ref = queue.popleft()
        claim = kernel.claim_task(run_id, ref.task_id, worker="t")
        assert claim is not None, ref
        kernel.on_task_complete(run_id, ref.task_id, claim.attempt_id, work(claim.input))


def test_every_way_runs_a_pipeline_to_completion(
        way: tuple[str, RedisStore, SeenCommands]) -> None:
    name, store, client = way
    _drive(store, "r", 30)
    run = store.get_run("r")
    assert run is not None and run.state is RunState.COMPLETED
    (total,) = store.get_artifacts("r", 2, 0)
    assert total.data == {"total": sum(2 * i for i in range(30))}
    # the direct path skips the client's command layer; the others go through it
    through_layer = name in ("command-layer", "single-connection")
    assert (client.seen["EVALSHA"] > 30) is through_layer, client.seen


def test_scripts_are_reloaded_after_script_flush(
        way: tuple[str, RedisStore, SeenCommands]) -> None:
    _, store, client = way
    store.create_run(RunRecord("r", PIPELINE, {}, RunState.RUNNING, 3, 3),
                     [NodeRecord(0, 0, NodeState.WAITING, 0),
                      NodeRecord(1, 0, NodeState.WAITING, 1),
                      NodeRecord(2, 0, NodeState.WAITING, 1)])
    task = TaskRecord("r", "src.0.0", 0, 0, 0, TaskState.QUEUED,
                      {"inputs": {}, "bindings": {}}, None, "self")
    assert store.launch_node("r", 0, 0, [task], 1, 1.0) == "applied"
    client.script_flush()
    # a script call pipelined with a plain command (SADD of the leased run): both sent again
    outcome, claimed = store.claim_task("r", "src.0.0", "a1", "w", 100.0, 2.0)
    assert outcome == "applied" and claimed is not None and claimed.attempt == 1
    assert client.sismember(store.keys.leased_runs, "r")
    client.script_flush()
    transition = store.complete_task("r", "src.0.0", "a1", [NewArtifact("src.0.0/0", {}, 1)],
                                     [1], 3.0)
    assert transition.applied and transition.ready == (1,)
    assert [a.artifact_id for a in store.get_artifacts("r", 0, 0)] == ["src.0.0/0"]
    # launches sent ahead: the second is written while the first's reply is unread, both
    # after a flush (each gets NOSCRIPT and is sent again when its outcome is read)
    client.script_flush()
    tasks = [TaskRecord("r", f"each.0.{k}", 1, 0, k, TaskState.QUEUED,
                        {"inputs": {}, "bindings": {}}, None, "self") for k in range(4)]
    first = store.launch_node_ahead("r", 1, 0, tasks[:2], 4, 4.0)
    second = store.launch_node_ahead("r", 1, 0, tasks[2:], 4, 4.0)
    assert (first(), second()) == ("applied", "duplicate")
    assert [t.task_id for t in store.list_tasks("r", node_index=1)] == \
        [t.task_id for t in tasks]


def test_an_error_reply_in_a_pipelined_call_raises_and_keeps_the_connection_in_step(
        redis_url: str, namespace: str) -> None:
    pool = redis.ConnectionPool.from_url(redis_url, max_connections=1)
    client = redis.Redis(connection_pool=pool)
    try:
        store = RedisStore(client, namespace)
        store.create_run(RunRecord("r", PIPELINE, {}, RunState.RUNNING, 3, 3),
                         [NodeRecord(0, 0, NodeState.WAITING, 0),
                          NodeRecord(1, 0, NodeState.WAITING, 1),
                          NodeRecord(2, 0, NodeState.WAITING, 1)])
        tasks = [TaskRecord("r", f"src.0.{s}", 0, 0, s, TaskState.QUEUED,
                            {"inputs": {}, "bindings": {}}, None, "self") for s in range(2)]
        assert store.launch_node("r", 0, 0, tasks, 2, 1.0) == "applied"
        keys = store.keys.run_keys_bytes("r")
        args = ["src.0.0", '"a1"', '"w"', "100.0", "2.0"]
        # the script's own error reply comes first: the plain command's reply is still read
        broken: list[str] = []  # no ARGV: the script fails on its first argument
        with pytest.raises(redis.ResponseError):
            store.scripts.call("claim_task", keys, broken, ("SADD", "{other}:set", "x"))
        assert client.smembers("{other}:set") == {b"x"}
        client.delete("{other}:set")
        # the plain command fails after the script ran
        wrong = ("INCR", store.keys.run("r"))  # the run key is a hash: WRONGTYPE
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            store.scripts.call("claim_task", keys, args, wrong)
        # the script before the failed command ran; the next calls read their own replies
        task = store.get_task("r", "src.0.0")
        assert task is not None and task.state is TaskState.RUNNING and task.attempt_id == "a1"
        outcome, claimed = store.claim_task("r", "src.0.1", "a2", "w", 100.0, 3.0)
        assert outcome == "applied" and claimed is not None and claimed.task_id == "src.0.1"
        assert store.get_run("r") is not None
    finally:
        client.close()


def test_a_completion_readying_three_nodes_is_two_round_trips(counting: Any,
                                                              namespace: str) -> None:
    """The completion script (which returns the planning inputs), then the three launches
    pipelined (ability ``launch_many``): two round trips, whatever the number of children."""
    client, log = counting
    store = RedisStore(client, namespace)
    assert "launch_many" in store.abilities
    sent: list[TaskRef] = []

    class Collect:
        def dispatch(self, tasks: Sequence[TaskRef]) -> None:
            sent.extend(tasks)

    kernel = Kernel(store, Collect())
    kernel.start_run({"name": "fork", "nodes": [
        {"slug": "a", "plugin": "x"},
        *({"slug": s, "plugin": "x", "depends_on": ["a"]} for s in ("b", "c", "d")),
    ]}, {}, run_id="f")
    (root,) = sent
    claim = kernel.claim_task("f", root.task_id, worker="w")
    assert claim is not None
    log.reset()
    kernel.on_task_complete("f", root.task_id, claim.attempt_id,
                            [{"fields": {"n": 1}}, {"fields": {"n": 2}}])
    assert (log.round_trips, dict(log.commands)) == (2, {"EVALSHA": 4})
    assert sorted(ref.task_id for ref in sent[1:]) == [
        f"{s}.0.{k}" for s in ("b", "c", "d") for k in (0, 1)]
    assert {n.index: n.state for n in store.get_nodes("f")} == {
        0: NodeState.COMPLETED, 1: NodeState.LAUNCHED, 2: NodeState.LAUNCHED,
        3: NodeState.LAUNCHED}


def test_noscript_sends_again_only_the_scripts_that_got_it(redis_url: str,
                                                          namespace: str) -> None:
    """A pipeline is not atomic: a SCRIPT FLUSH between its commands leaves the first script
    run and the next one refused with NOSCRIPT. Only the refused one is sent again, so the
    launch that ran is reported 'applied', not 'duplicate'."""
    client = redis.Redis.from_url(redis_url)
    try:
        store = RedisStore(client, namespace)
        store.create_run(RunRecord("r", PIPELINE, {}, RunState.RUNNING, 3, 3),
                         [NodeRecord(k, 0, NodeState.WAITING, 0) for k in range(3)])
        store.scripts.load()
        real = store.scripts._send
        flushed: list[int] = []

        def flush_midway(commands: Sequence[Any]) -> list[Any]:
            if flushed:
                return real(commands)
            flushed.append(len(commands))
            first = real(commands[:1])
            client.script_flush()  # between the first and the second command of the pipeline
            return first + real(commands[1:])

        store.scripts._send = flush_midway  # type: ignore[method-assign]
        launches = [NodeLaunch(k, 0, (TaskRecord("r", f"n{k}.0.0", k, 0, 0, TaskState.QUEUED,
                                                 {"inputs": {}, "bindings": {}}, None,
                                                 "self"),), 1) for k in (0, 1)]
        assert store.launch_nodes("r", launches, 1.0) == ["applied", "applied"]
        assert flushed == [2]
        assert [t.task_id for t in store.list_tasks("r")] == ["n0.0.0", "n1.0.0"]
    finally:
        client.close()
