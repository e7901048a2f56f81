"""RedisStore specifics: record round trips through Lua, equivalence with the reference
semantics (MemoryStore over storekit), the key layout, an end-to-end run with worker threads,
and the round trips a completion costs."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from interlock import Kernel, TaskInput, open_store
from interlock.records import (
    Artifact,
    CompletionItem,
    NewArtifact,
    NodeFacts,
    NodeRecord,
    RunRecord,
    TaskRecord,
    TaskRef,
    Transition,
)
from interlock.states import IllegalTransition, NodeState, RunState, TaskState
from interlock.values import RunFinished
from interlock_memory import MemoryStore
from interlock_redis import RedisStore, RedisStreamsDispatcher, from_url, queue_from_url
from interlock_redis.store import decode_jmap, encode_jmap

# ---- values that trip naive Lua/cjson round trips ------------------------------------------

AWKWARD: dict[str, Any] = {
    "floats": [0.1, 1e-300, 1.7976931348623157e308, -0.0, 1712345678.123456, 2.5e-7, 1e16],
    "big_ints": [2**53 + 1, -(2**63), 2**64, 10**30, 123456789012345678],
    "unicode": ["é", "日本語", "emoji \U0001f600", "\u2028\u2029", "nul\x00byte", "\ud800",
                "quote\" back\\slash /slash", "\t\n\r\x07"],
    "empty_list": [],
    "empty_object": {},
    "nested": {"a": [[], {}, [{}], {"b": [None, True, False, 0, ""]}]},
    "bools": [True, False, None],
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=4)


def random_json(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.randint(0, 9 if depth < 2 else 5)
    if roll == 0:
        return None
    if roll == 1:
        return rng.random() < 0.5
    if roll == 2:
        return rng.choice([0, -1, 2**53 + 1, 10**25, -(2**64)])
    if roll == 3:
        return rng.choice([0.1, -0.0, 1e300, 1712345678.123456, 5e-324])
    if roll in (4, 5):
        return rng.choice(["", "x", "\u00e9\U0001f600", "\ud800", "a\"b\\c/"])
    if roll in (6, 7):
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice("abc"): random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def _run(run_id: str = "r", **kw: Any) -> RunRecord:
    fields: dict[str, Any] = {"pipeline": {"name": "p", "nodes": []}, "input": {}, "node_count": 2,
                              "unsettled": 2, "state": RunState.RUNNING, "created_at": 1.5,
                              "updated_at": 1.5, **kw}
    return RunRecord(run_id=run_id, **fields)


def _nodes(count: int = 2) -> list[NodeRecord]:
    return [NodeRecord(i, 0, NodeState.WAITING, 0 if i == 0 else 1) for i in range(count)]


def _task(task_id: str, plan: dict[str, Any] | None = None, node: int = 0,
          origin_mode: Any = "inherit", origin: str | None = "o", **kw: Any) -> TaskRecord:
    return TaskRecord("r", task_id, node, 0, int(task_id.rsplit(".", 1)[-1]), TaskState.QUEUED,
                      plan if plan is not None else {"inputs": {}, "bindings": {}}, origin,
                      origin_mode, **kw)


def test_jmap_encoding_is_exact() -> None:
    data = {"x": AWKWARD, "f": 0.1, "i": 2**64}
    assert decode_jmap(encode_jmap(data)) == data
    assert encode_jmap(data).isascii()


def test_awkward_values_round_trip_through_every_script(store: RedisStore) -> None:
    run = _run(pipeline={"name": "p", "nodes": [], "extra": AWKWARD}, input=AWKWARD,
               created_at=1712345678.123456, reason=None)
    assert store.create_run(run, _nodes()) == (run, True)
    assert store.create_run(run, _nodes()) == (run, False)  # returned as stored, through Lua
    assert store.get_run("r") == run
    plan = {"inputs": {"up": [AWKWARD]}, "bindings": AWKWARD}
    task = _task("a.0.0", plan, origin="origin \u00e9\U0001f600", not_before=0.25)
    other = _task("a.0.1", {"inputs": {}, "bindings": {}})
    assert store.launch_node("r", 0, 0, [task, other], 2, 2.0) == "applied"
    assert store.get_task("r", "a.0.0") == task
    # the claim re-encodes the task record in Lua: still exact
    outcome, claimed = store.claim_task("r", "a.0.0", "att-\u00e9", "worker \U0001f600",
                                        1712345678.987654321, 3.0)
    assert outcome == "applied" and claimed is not None
    assert claimed == store.get_task("r", "a.0.0")
    assert claimed.plan == plan and claimed.lease_until == 1712345678.987654321
    assert claimed.worker == "worker \U0001f600" and claimed.origin == task.origin
    assert store.suspend_task("r", "a.0.0", "att-\u00e9", "why \ud800", 4.0) == "applied"
    outcome, resumed = store.resume_task("r", "a.0.0", AWKWARD, 5.0)
    assert outcome == "applied" and resumed is not None and resumed.resume == AWKWARD
    assert store.get_task("r", "a.0.0") == resumed
    store.claim_task("r", "a.0.0", "att2", "w", None, 6.0)
    outputs = [NewArtifact("a.0.0/x", AWKWARD, AWKWARD), NewArtifact("a.0.0/y", {}, []),
               NewArtifact("a.0.0/\u00e9", {"k": {}}, None)]
    assert store.complete_task("r", "a.0.0", "att2", outputs, [1], 7.0) == Transition("applied")
    arts = store.get_artifacts("r", 0, 0)
    assert [(a.artifact_id, a.fields, a.data, a.seq, a.origin) for a in arts] == [
        (o.artifact_id, o.fields, o.data, i + 1, task.origin) for i, o in enumerate(outputs)]
    assert store.get_run("r").artifact_seq == 3  # type: ignore[union-attr]
    store.claim_task("r", "a.0.1", "att3", "w", None, 8.0)
    error = "boom \U0001f4a5 \"quoted\" \ud800 " + json.dumps(AWKWARD)
    result = store.fail_task("r", "a.0.1", "att3", error, None, TaskState.FAILED, [1], None,
                             9.0)
    assert result == Transition("applied", (1,), None)
    failed = store.get_task("r", "a.0.1")
    assert failed is not None and failed.error == error
    node = store.get_nodes("r", [0])[0]
    assert node.state is NodeState.FAILED and node.reason == f"task a.0.1 failed: {error}"


@pytest.mark.parametrize("decode", [False, True], ids=["bytes", "str"])
@pytest.mark.parametrize("parser", ["python", "hiredis"])
def test_every_reply_decodes_the_same_with_either_parser_and_decoding(
        redis_url: str, namespace: str, parser: str, decode: bool) -> None:
    """redis-py parses replies in Python, or in C with hiredis when it is installed (the
    ``interlock-redis[hiredis]`` extra), as bytes or as str (``decode_responses``): the
    records, the batched claims (decoded together) and the queue's refs come back exact."""
    from redis._parsers import _HiredisParser, _RESP2Parser  # RESP2: upgraded for RESP3

    if parser == "hiredis" and importlib.util.find_spec("hiredis") is None:
        # an optional extra: a user without it has nothing to check here; CI installs it
        # (the dev extra), so there a missing hiredis is a failure
        reason = "hiredis is not installed (the optional interlock-redis[hiredis] extra)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; in CI it is a failure")
        pytest.skip(reason)
    parser_class = _HiredisParser if parser == "hiredis" else _RESP2Parser
    client = redis.Redis.from_url(redis_url, parser_class=parser_class,
                                  decode_responses=decode)
    try:
        connection = client.connection_pool.get_connection()
        used = type(connection._parser)  # type: ignore[union-attr]
        client.connection_pool.release(connection)
        assert (used is _HiredisParser) == (parser == "hiredis")
        store = RedisStore(client, namespace)
        test_awkward_values_round_trip_through_every_script(store)
        plan = {"inputs": {"up": [AWKWARD]}, "bindings": AWKWARD}
        store.launch_node("r", 1, 0, [_task(f"b.0.{k}", plan, node=1) for k in range(3)], 3,
                          10.0)
        claimed = store.claim_tasks("r", [("b.0.0", "x0"), ("b.0.9", "x9"), ("b.0.2", "x2")],
                                    "w \u00e9", 99.5, 11.0)
        assert [outcome for outcome, _ in claimed] == ["applied", "stale", "applied"]
        assert [task for _, task in claimed] == [store.get_task("r", "b.0.0"), None,
                                                 store.get_task("r", "b.0.2")]
        assert claimed[0][1] is not None and claimed[0][1].plan == plan
        assert store.list_tasks("r", node_index=1) == [
            store.get_task("r", f"b.0.{k}") for k in range(3)]
        queue = RedisStreamsDispatcher(client, namespace)
        refs = [TaskRef("r \u00e9", f"b.0.{k}", "plugin \U0001f600") for k in range(3)]
        queue.dispatch(refs)
        assert [d.ref for d in queue.receive(10, 1.0)] == refs
    finally:
        client.close()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pipeline=json_objects, run_input=json_objects, plan=json_objects, fields=json_objects,
       data=json_values, payload=json_values, when=st.floats(0, 1e12, allow_nan=False))
def test_generated_json_round_trips(store: RedisStore, pipeline: dict[str, Any],
                                    run_input: dict[str, Any], plan: dict[str, Any],
                                    fields: dict[str, Any], data: Any, payload: Any,
                                    when: float) -> None:
    run_id = uuid.uuid4().hex
    run = RunRecord(run_id, pipeline, run_input, RunState.RUNNING, 1, 1, created_at=when)
    store.create_run(run, [NodeRecord(0, 0, NodeState.WAITING, 0)])
    assert store.get_run(run_id) == run
    task = TaskRecord(run_id, "a.0.0", 0, 0, 0, TaskState.QUEUED, plan, None, "self",
                      not_before=when)
    store.launch_node(run_id, 0, 0, [task], 1, when)
    store.claim_task(run_id, "a.0.0", "x", "w", when, when)
    store.suspend_task(run_id, "a.0.0", "x", "", when)
    outcome, resumed = store.resume_task(run_id, "a.0.0", payload, when)
    assert outcome == "applied" and resumed is not None
    assert resumed.plan == plan and resumed.resume == payload
    assert store.get_task(run_id, "a.0.0") == resumed
    store.claim_task(run_id, "a.0.0", "y", "w", when, when)
    store.complete_task(run_id, "a.0.0", "y", [NewArtifact("a.0.0/0", fields, data)], [], when)
    (artifact,) = store.get_artifacts(run_id, 0, 0)
    assert artifact == Artifact("a.0.0/0", 0, 0, "a.0.0", 1, fields, data, "a.0.0/0")
    assert store.get_run(run_id).state is RunState.COMPLETED  # type: ignore[union-attr]


# ---- equivalence with the reference semantics (storekit over MemoryStore) ------------------

# topology: 0 -> 1, 0 -> 2, 1 -> 3, 2 -> 3
CHILDREN = {0: [1, 2], 1: [3], 2: [3], 3: []}
PARENTS = {0: [], 1: [0], 2: [0], 3: [1, 2]}
ATTEMPTS = ["a1", "a2", "a3"]


def _snapshot(store: Any, run_id: str, now: float) -> Any:
    nodes = store.get_nodes(run_id)
    arts = {(n.index, g): store.get_artifacts(run_id, n.index, g)
            for n in nodes for g in range(n.generation + 1)}
    return (store.get_run(run_id), nodes, store.list_tasks(run_id),
            [store.list_tasks(run_id, node_index=i) for i in range(4)],
            store.list_tasks(run_id, states=[TaskState.QUEUED, TaskState.RUNNING]),
            store.list_tasks(run_id, node_index=1, states=[TaskState.QUEUED]),
            store.list_tasks(run_id, states=[TaskState.COMPLETED, TaskState.CANCELLED]),
            arts, sorted(t.task_id for t in store.list_expired(now, 100)))


def _call(store: Any, method: str, args: tuple[Any, ...]) -> Any:
    try:
        return getattr(store, method)(*args)
    except IllegalTransition as exc:
        return ("illegal", str(exc))


def _next_operation(rng: random.Random, memory: MemoryStore, now: float, happy: bool
                    ) -> tuple[str, tuple[Any, ...]]:
    """One operation, biased by the reference store's state towards calls that apply (the
    current generation, existing tasks, their current attempt) while keeping stale, duplicate
    and illegal calls in the mix. ``happy``: no failures or cancellation, so runs complete."""
    nodes = memory.get_nodes("r")
    tasks = memory.list_tasks("r")
    run = memory.get_run("r")
    assert run is not None
    roll = rng.randint(0, 99)
    kind = next(k for bound, k in [(23, "complete"), (27, "complete-batch"), (44, "claim"),
                                   (50, "claim-batch"), (63, "launch"), (71, "settle"),
                                   (79, "fail"), (84, "heartbeat"), (89, "suspend"),
                                   (94, "resume"), (98, "reopen"), (100, "cancel")]
                if roll < bound)
    if run.state.terminal and rng.random() < 0.3:
        kind = "reopen"
    if happy and kind in ("fail", "cancel", "reopen"):
        kind = "complete"
    ready = [n.index for n in nodes
             if n.state is NodeState.WAITING and n.remaining_parents == 0]
    node = rng.choice(ready) if ready and rng.randint(0, 4) else rng.randint(0, 3)
    current = nodes[node].generation
    gen = rng.choice([current, current, current, current + 1, max(0, current - 1)])
    wanted = {"claim": [TaskState.QUEUED], "claim-batch": [TaskState.QUEUED],
              "resume": [TaskState.WAITING]}.get(kind, [TaskState.RUNNING])
    preferred = [t for t in tasks if t.state in wanted] or tasks
    if preferred and rng.randint(0, 5):
        task = rng.choice(preferred)
        task_id, node = task.task_id, task.node_index
        attempt = (task.attempt_id or "a0") if rng.randint(0, 4) else rng.choice(ATTEMPTS)
    else:
        task_id = f"n{node}.{gen}.{rng.randint(0, 2)}"
        attempt = rng.choice(ATTEMPTS)
    if kind == "launch":
        count = rng.randint(1, 3)
        batch = [TaskRecord("r", f"n{node}.{gen}.{s}", node, gen, s, TaskState.QUEUED,
                            {"inputs": {}, "bindings": {"s": s}},
                            rng.choice([None, "o"]), rng.choice(["inherit", "self", "broadcast"]),
                            not_before=rng.choice([0.0, 0.0, now + 5]))
                 for s in range(0 if happy or rng.randint(0, 4) else count - 1, count)]
        total = count + (0 if happy or rng.randint(0, 4) else 1)
        return "launch_node", ("r", node, gen, batch, total, now)
    if kind == "settle":
        state = rng.choice([NodeState.FILTERED, NodeState.SKIPPED] if happy else
                           [NodeState.FILTERED, NodeState.SKIPPED, NodeState.FILTERED,
                            NodeState.FAILED, NodeState.COMPLETED])
        fail_run = rng.choice([None, None, None, RunState.FAILED, RunState.RUNNING])
        return "settle_node", ("r", node, gen, state, "why", CHILDREN[node], fail_run, now)
    if kind == "claim":
        lease = rng.choice([None, now + 3, now + 100])
        fresh = rng.choice([f"c{now}", attempt])
        return "claim_task", ("r", task_id, fresh, "w", lease, now)
    if kind in ("claim-batch", "complete-batch"):
        picked = [rng.choice(preferred) for _ in range(rng.randint(0, 4))] if preferred else []
        pairs = [(t.task_id, (t.attempt_id or "a0") if rng.randint(0, 4) else
                  rng.choice([f"c{now}", *ATTEMPTS])) for t in picked]
        if kind == "claim-batch":
            lease = rng.choice([None, now + 3, now + 100])
            return "claim_tasks", ("r", pairs, "w", lease, now)
        items = [CompletionItem(task_id, attempt,
                                tuple(NewArtifact(f"{task_id}/{k}", {"k": k}, random_json(rng))
                                      for k in range(rng.randint(0, 2))),
                                tuple(CHILDREN[int(task_id[1])]))
                 for task_id, attempt in pairs]
        return "complete_tasks", ("r", items, now)
    if kind == "heartbeat":
        return "heartbeat", ("r", task_id, attempt, now + 50)
    if kind == "complete":
        outputs = [NewArtifact(f"{task_id}/{k}", {"k": k}, random_json(rng))
                   for k in range(rng.randint(0, 2))]
        return "complete_task", ("r", task_id, attempt, outputs, CHILDREN[node], now)
    if kind == "fail":
        retry_at = rng.choice([None, now + 2])
        final = rng.choice([TaskState.FAILED, TaskState.CRASHED, TaskState.RUNNING])
        fail_run = rng.choice([None, None, None, RunState.FAILED, RunState.CRASHED])
        return "fail_task", ("r", task_id, attempt, "err", retry_at, final, CHILDREN[node],
                             fail_run, now)
    if kind == "suspend":
        return "suspend_task", ("r", task_id, attempt, rng.choice(["", "h"]), now)
    if kind == "resume":
        return "resume_task", ("r", task_id, {"ok": [True, 1.5]}, now)
    if kind == "cancel":
        return "cancel_run", ("r", "stop", now)
    reset = [n for n in nodes if n.state not in (NodeState.COMPLETED, NodeState.FILTERED)]
    indices = {n.index for n in reset}
    fresh_nodes = [NodeRecord(n.index, n.generation + 1, NodeState.WAITING,
                              sum(1 for p in PARENTS[n.index] if p in indices)) for n in reset]
    expected = run.retries + rng.choice([0, 0, 0, 0, -1, 1])
    return "reopen_run", ("r", expected, fresh_nodes, now)


@pytest.mark.parametrize("seed", range(60))
def test_same_results_and_state_as_the_reference_store(
        client: redis.Redis, namespace: str, seed: int) -> None:
    """Every operation returns what storekit returns and leaves the same records behind
    (random operation sequences biased towards calls that apply; reproducible per seed)."""
    rng = random.Random(seed)
    redis_store = RedisStore(client, namespace)
    memory = MemoryStore()
    run = _run(node_count=4, unsettled=4)
    nodes = [NodeRecord(i, 0, NodeState.WAITING, len(PARENTS[i])) for i in range(4)]
    for store in (memory, redis_store):
        store.create_run(run, nodes)
    now = 10.0
    for step in range(rng.randint(30, 120)):
        now += rng.choice([0.0, 0.5, 1.0, 7.25])
        method, args = _next_operation(rng, memory, now, happy=seed % 3 == 0)
        expected = _call(memory, method, args)
        actual = _call(redis_store, method, args)
        assert actual == expected, f"seed {seed} step {step}: {method}{args}"
        assert _snapshot(redis_store, "r", now) == _snapshot(memory, "r", now), \
            f"seed {seed}: state differs after step {step}: {method}{args}"
        for result in expected if isinstance(expected, list) else [expected]:
            OUTCOMES[(method, _label(result))] += 1


OUTCOMES: Counter[tuple[str, str]] = Counter()


def _label(result: Any) -> str:
    if isinstance(result, tuple):
        return str(result[0])
    if isinstance(result, Transition):
        extra = "+ready" if result.ready else ""
        return result.outcome + extra + (f"+{result.run_state.value}" if result.run_state else "")
    return str(result)


def test_the_equivalence_check_exercised_every_path() -> None:
    """Guard against a vacuous equivalence test: the generator reached each interesting
    outcome at least once (runs after the test above, in file order)."""
    if not OUTCOMES:
        pytest.skip("the equivalence test did not run in this session")
    seen = set(OUTCOMES)
    for expected in [("claim_task", "applied"), ("claim_task", "duplicate"),
                     ("complete_task", "applied"), ("complete_task", "applied+ready"),
                     ("complete_task", "duplicate"), ("fail_task", "applied"),
                     ("fail_task", "duplicate"), ("suspend_task", "applied"),
                     ("resume_task", "applied"), ("reopen_run", "applied"),
                     ("cancel_run", "applied+cancelled"), ("settle_node", "applied+ready"),
                     ("launch_node", "applied"), ("launch_node", "duplicate"),
                     ("heartbeat", "True"), ("claim_tasks", "applied"),
                     ("claim_tasks", "duplicate"), ("complete_tasks", "applied"),
                     ("complete_tasks", "duplicate"), ("complete_tasks", "applied+ready")]:
        assert expected in seen, f"{expected} never reached: " + "; ".join(
            f"{m} {o}: {c}" for (m, o), c in sorted(OUTCOMES.items()))
    assert any(label.endswith("+completed") for _, label in seen), "no run ever completed"
    assert any(label == "illegal" for _, label in seen)


# ---- layout, URLs, entry points ------------------------------------------------------------


def test_every_key_of_a_run_shares_one_cluster_slot(store: RedisStore,
                                                    client: redis.Redis) -> None:
    for run_id in ("r", "run:with:colons", "brace}d"):
        store.create_run(_run(run_id), _nodes())
        task = TaskRecord(run_id, "a.0.0", 0, 0, 0, TaskState.QUEUED, {}, None, "self")
        store.launch_node(run_id, 0, 0, [task], 1, 1.0)
        store.claim_task(run_id, "a.0.0", "x", "w", 10.0, 1.0)
        store.complete_task(run_id, "a.0.0", "x", [NewArtifact("a.0.0/o", {}, 1)], [1], 2.0)
        prefix = store.keys.prefix(run_id)
        keys = [k.decode() for k in client.scan_iter(match=f"{store.namespace}:*")
                if k.decode().startswith(prefix + ":")]
        assert {k.rsplit(":", 1)[-1] for k in keys} >= {"run", "nodes", "tasks", "plans"}
        assert any(":arts:0:0" in k for k in keys)
        assert len({key_slot(k.encode()) for k in keys}) == 1, keys
    assert store.keys.leased_runs in {k.decode() for k in client.scan_iter(
        match=f"{store.namespace}:*")}


def test_namespace_may_not_contain_braces(client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="namespace"):
        RedisStore(client, "bad{ns}")


def test_store_and_queue_from_url_and_entry_points(redis_url: str, namespace: str) -> None:
    url = f"{redis_url}?namespace={namespace}"
    store = from_url(url)
    assert isinstance(store, RedisStore) and store.namespace == namespace
    assert store.create_run(_run(), _nodes())[1]
    opened = open_store(url)
    assert isinstance(opened, RedisStore) and opened.get_run("r") == _run()
    queue = queue_from_url(url)
    assert isinstance(queue, RedisStreamsDispatcher)
    assert queue.stream_key == f"{namespace}:queue:{{tasks}}"
    direct = RedisStore(url)
    assert direct.namespace == namespace and direct.get_run("r") == _run()
    assert RedisStreamsDispatcher(url).stream_key == queue.stream_key
    (store_ep,) = [ep for ep in entry_points(group="interlock.stores") if ep.name == "redis"]
    (queue_ep,) = [ep for ep in entry_points(group="interlock.queues") if ep.name == "redis"]
    assert store_ep.load() is from_url and queue_ep.load() is queue_from_url
    for c in (store.client, opened.client, queue.client, direct.client):  # type: ignore[attr-defined]
        c.close()


def test_every_lua_script_documents_keys_argv_and_reply() -> None:
    from importlib import resources

    from interlock_redis.scripts import QUEUE_SCRIPTS, STORE_SCRIPTS

    folder = resources.files("interlock_redis") / "lua"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".lua"))
    assert names == sorted(f"{n}.lua" for n in ("_common", *STORE_SCRIPTS, *QUEUE_SCRIPTS))
    for name in (*STORE_SCRIPTS, *QUEUE_SCRIPTS):
        header = (folder / f"{name}.lua").read_text("utf-8").split("\n\n")[0]
        assert header.startswith(f"-- {name}.lua: ")
        for word in ("KEYS", "ARGV", "Returns"):
            assert word in header, (name, word)


def test_lua_transition_table_mirrors_interlock_states() -> None:
    """The scripts check state changes against their own copy of the transition tables (a Lua
    string of |kind:from>to| entries): it must allow exactly what interlock.states allows."""
    from interlock.states import NODE_TRANSITIONS, RUN_TRANSITIONS, TASK_TRANSITIONS
    from interlock_redis.scripts import lua_source

    source = lua_source("_common")
    table = source[source.index("local LEGAL = [[") + len("local LEGAL = [["):]
    table = table[:table.index("]]")]
    entries = {e for e in table.replace("\n", "").split("|") if e}
    expected = {
        f"{kind}:{source_state.value}>{target.value}"
        for kind, transitions in (("run", RUN_TRANSITIONS), ("node", NODE_TRANSITIONS),
                                  ("task", TASK_TRANSITIONS))
        for source_state, targets in transitions.items() for target in targets
    }
    assert entries == expected


def test_illegal_transition_raises_and_writes_nothing(store: RedisStore) -> None:
    store.create_run(_run(), _nodes())
    before = store.get_nodes("r")
    with pytest.raises(IllegalTransition, match="waiting -> completed"):
        store.settle_node("r", 0, 0, NodeState.COMPLETED, None, [1], None, 2.0)
    assert store.get_nodes("r") == before and store.get_run("r") == _run()


# ---- end to end: Kernel + RedisStreamsDispatcher + worker threads ----------------------------

PIPELINE = {"name": "e2e", "nodes": [
    {"slug": "src", "plugin": "emit"},
    {"slug": "each", "plugin": "double", "depends_on": ["src"]},
    {"slug": "sum", "plugin": "sum", "depends_on": ["each"], "fan_mode": "aggregate"},
]}


def behaviour(count: int) -> Callable[[TaskInput], list[dict[str, Any]]]:
    def run(task: TaskInput) -> list[dict[str, Any]]:
        if task.node == "src":
            return [{"id": f"i{i}", "fields": {"i": i}, "data": {"n": i}} for i in range(count)]
        if task.node == "each":
            (item,) = task.inputs["src"]
            return [{"fields": {"i": item.fields["i"]}, "data": {"n": item.data["n"] * 2}}]
        return [{"data": {"total": sum(a.data["n"] for a in task.inputs["each"])}}]
    return run


def test_end_to_end_run_with_stream_dispatcher_and_worker_threads(
        client: redis.Redis, namespace: str, make_workers: Callable[..., Any]) -> None:
    count = 40
    finished: list[RunFinished] = []
    done = threading.Event()

    def on_finished(event: RunFinished) -> None:
        finished.append(event)
        done.set()

    store = RedisStore(client, namespace)
    kernel = Kernel(store, RedisStreamsDispatcher(client, namespace, consumer="kernel"),
                    on_run_finished=on_finished)
    workers = make_workers(
        kernel, lambda i: RedisStreamsDispatcher(client, namespace, consumer=f"w{i}"),
        behaviour(count), 4).start()
    kernel.start_run(PIPELINE, {}, run_id="e2e")
    assert done.wait(60), "run did not finish"
    workers.stop()
    assert not workers.errors, workers.errors
    assert [f.state for f in finished] == [RunState.COMPLETED]
    assert [n.state for n in store.get_nodes("e2e")] == [NodeState.COMPLETED] * 3
    (total,) = store.get_artifacts("e2e", 2, 0)
    assert total.data == {"total": sum(2 * i for i in range(count))}
    assert len(store.get_artifacts("e2e", 1, 0)) == count
    tasks = store.list_tasks("e2e")
    assert len(tasks) == count + 2
    assert all(t.state is TaskState.COMPLETED and t.attempt == 1 for t in tasks)
    assert all(outcomes == ["applied"] for outcomes in workers.completions.values())
    stream = f"{namespace}:queue:{{tasks}}"
    assert client.xlen(stream) == 0
    assert client.xpending(stream, "workers")["pending"] == 0
    assert store.list_expired(math.inf, 10) == []


def test_a_plain_completion_is_one_round_trip(counting: Any, namespace: str) -> None:
    client, log = counting
    store = RedisStore(client, namespace)
    run = RunRecord("r", PIPELINE, {}, RunState.RUNNING, 3, 3)
    nodes = [NodeRecord(0, 0, NodeState.WAITING, 0), NodeRecord(1, 0, NodeState.WAITING, 1),
             NodeRecord(2, 0, NodeState.WAITING, 1)]
    store.create_run(run, nodes)
    tasks = [TaskRecord("r", f"src.0.{s}", 0, 0, s, TaskState.QUEUED,
                        {"inputs": {}, "bindings": {}}, None, "self") for s in range(3)]
    store.launch_node("r", 0, 0, tasks, 3, 1.0)
    for s in range(3):
        store.claim_task("r", f"src.0.{s}", f"a{s}", "w", 100.0, 1.0)

    log.reset()
    transition = store.complete_task("r", "src.0.0", "a0", [], [1], 2.0)
    assert transition == Transition("applied")
    assert (log.round_trips, dict(log.commands)) == (1, {"EVALSHA": 1})

    log.reset()  # with outputs, still releasing nothing
    outputs = [NewArtifact(f"src.0.1/{k}", {"k": k}, {"d": [k]}) for k in range(5)]
    assert store.complete_task("r", "src.0.1", "a1", outputs, [1], 3.0).applied
    assert (log.round_trips, dict(log.commands)) == (1, {"EVALSHA": 1})

    log.reset()  # a repeat: still one round trip, 'duplicate'
    assert store.complete_task("r", "src.0.1", "a1", outputs, [1], 3.0).outcome == "duplicate"
    assert log.round_trips == 1

    log.reset()  # the last one settles the node and releases node 1: still one store call
    assert store.complete_task("r", "src.0.2", "a2", [], [1], 4.0) == Transition("applied", (1,))
    assert log.round_trips == 1


def test_batched_claims_and_completions_are_one_round_trip_each(counting: Any,
                                                               namespace: str) -> None:
    client, log = counting
    store = RedisStore(client, namespace)
    assert "batched" in store.abilities
    store.create_run(RunRecord("r", PIPELINE, {}, RunState.RUNNING, 2, 2),
                     [NodeRecord(0, 0, NodeState.WAITING, 0),
                      NodeRecord(1, 0, NodeState.WAITING, 1)])
    tasks = [TaskRecord("r", f"src.0.{s}", 0, 0, s, TaskState.QUEUED,
                        {"inputs": {}, "bindings": {}}, None, "self") for s in range(20)]
    store.launch_node("r", 0, 0, tasks, 20, 1.0)
    log.reset()
    claims = store.claim_tasks("r", [(t.task_id, f"a{t.seq}") for t in tasks], "w", 99.0, 2.0)
    assert [o for o, _ in claims] == ["applied"] * 20 and log.round_trips == 1
    log.reset()
    items = [CompletionItem(t.task_id, f"a{t.seq}", (NewArtifact(f"{t.task_id}/0", {}, 1),),
                            (1,)) for t in tasks]
    transitions = store.complete_tasks("r", items, 3.0)
    assert (log.round_trips, dict(log.commands)) == (1, {"EVALSHA": 1})
    assert [t.outcome for t in transitions] == ["applied"] * 20
    assert transitions[-1].ready == (1,)
    assert [a.seq for a in store.get_artifacts("r", 0, 0)] == list(range(1, 21))


def test_kernel_completion_is_one_round_trip(counting: Any, namespace: str) -> None:
    """Through the Kernel API: on_task_complete of a task that releases nothing."""
    client, log = counting
    store = RedisStore(client, namespace)
    sent: list[Any] = []
    kernel = Kernel(store, type("D", (), {"dispatch": lambda self, refs: sent.extend(refs)})())
    kernel.start_run(PIPELINE, {}, run_id="k")
    (root,) = sent
    claim = kernel.claim_task("k", root.task_id, worker="w")
    assert claim is not None
    kernel.on_task_complete("k", root.task_id, claim.attempt_id,
                            behaviour(3)(claim.input))
    first = sent[1]
    claim = kernel.claim_task("k", first.task_id, worker="w")
    assert claim is not None
    log.reset()
    kernel.on_task_complete("k", first.task_id, claim.attempt_id, [{"data": 1}])
    assert (log.round_trips, dict(log.commands)) == (1, {"EVALSHA": 1})
    log.reset()
    second = sent[2]
    assert kernel.claim_task("k", second.task_id, worker="w") is not None
    assert log.round_trips == 1  # a claim with a lease: EVALSHA + SADD pipelined
    assert dict(log.commands) == {"EVALSHA": 1, "SADD": 1}


@pytest.mark.parametrize("claimed_here", [True, False])
def test_kernel_releasing_completion_round_trips(counting: Any, redis_url: str, namespace: str,
                                                 claimed_here: bool) -> None:
    """A completion that releases the next node of a chain: with 'follow', one round trip when
    this store claimed the task (the kernel plans the launch from the facts the claim let the
    store predict; the script checks them and launches); two when another process claimed it
    (the completion script returns the planning inputs, then the launch script)."""
    client, log = counting
    store = RedisStore(client, namespace)
    assert {"prefetch", "follow"} <= store.abilities
    sent: list[Any] = []
    kernel = Kernel(store, type("D", (), {"dispatch": lambda self, refs: sent.extend(refs)})())
    kernel.start_run({"name": "chain", "nodes": [
        {"slug": "a", "plugin": "x"},
        {"slug": "b", "plugin": "x", "depends_on": ["a"], "bindings": {"n": "{a.n}"}},
    ]}, {}, run_id="c")
    (root,) = sent
    claimer = kernel if claimed_here else Kernel(RedisStore(redis_url, namespace))
    claim = claimer.claim_task("c", root.task_id, worker="w")
    assert claim is not None
    log.reset()
    kernel.on_task_complete("c", root.task_id, claim.attempt_id, [{"fields": {"n": 7}}])
    rts = 1 if claimed_here else 2
    assert (log.round_trips, dict(log.commands)) == (rts, {"EVALSHA": rts})
    (_, child) = sent
    task = store.get_task("c", child.task_id)
    assert task is not None and task.plan["bindings"] == {"n": 7}
    assert task.plan["inputs"]["a"] == [a.to_dict() for a in store.get_artifacts("c", 0, 0)]


def test_prefetch_facts_equal_separate_reads(store: RedisStore) -> None:
    store.create_run(RunRecord("p", PIPELINE, {}, RunState.RUNNING, 3, 3),
                     [NodeRecord(0, 0, NodeState.WAITING, 0),
                      NodeRecord(1, 0, NodeState.WAITING, 1),
                      NodeRecord(2, 0, NodeState.WAITING, 2)])
    tasks = [TaskRecord("p", f"src.0.{s}", 0, 0, s, TaskState.QUEUED,
                        {"inputs": {}, "bindings": {}}, None, "self") for s in range(2)]
    store.launch_node("p", 0, 0, tasks, 2, 1.0)
    for s in range(2):
        store.claim_task("p", f"src.0.{s}", f"a{s}", "w", None, 1.0)
    first, facts = store.complete_task_prefetch(
        "p", "src.0.0", "a0", [NewArtifact("src.0.0/x", {"k": 1}, None)], [1, 2],
        [[0], [0, 1]], 2.0)
    assert first == Transition("applied") and facts == []
    last, facts = store.complete_task_prefetch(
        "p", "src.0.1", "a1", [NewArtifact("src.0.1/y", {"k": 2}, [1.5])], [1, 2],
        [[0], [0, 1]], 3.0)
    assert last == Transition("applied", (1,))
    expected = [NodeFacts(n, tuple(store.get_artifacts("p", n.index, n.generation)
                                   if n.state is NodeState.COMPLETED else ()))
                for n in store.get_nodes("p", [1, 0])]
    assert sorted(facts, key=lambda f: f.node.index) == expected
    assert [a.artifact_id for a in facts[1].artifacts] == ["src.0.0/x", "src.0.1/y"]
    again, facts = store.complete_task_prefetch(
        "p", "src.0.1", "a1", [NewArtifact("src.0.1/y", {"k": 2}, [1.5])], [1, 2],
        [[0], [0, 1]], 3.0)
    assert again.outcome == "duplicate" and facts == []
