"""A join of many parents: each parent's completion costs O(1), not O(parents).

The prefetching completion scripts read, for a node the completion readies, that node's parents
and their artifacts. They used to receive every child's parent list with every completion, so a
join of N parents cost O(N) per completion and O(N^2) in all (a 4,000-way join took 5.3 s,
1,327 us per task, against 432 us per task at 1,000 and now at 4,000). A child of more than
``WIDE_PARENTS`` parents now has its list sent once by each store object (with the first
completion that names the child), stored in the run, and named by the later completions; a
list the run has lost is asked for before any write.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import redis
from redis.connection import Connection

from interlock import Kernel
from interlock.records import TaskRef
from interlock.states import RunState
from interlock_redis import RedisStore
from interlock_redis.keys import Keys
from interlock_redis.replies import WIDE_PARENTS


class _Sent:
    """Round trips and bytes a client's connections wrote since the last reset."""

    def __init__(self) -> None:
        self.round_trips = 0
        self.bytes = 0


@pytest.fixture
def sizing(redis_url: str) -> Iterator[tuple[redis.Redis, _Sent]]:
    sent = _Sent()

    class Sizing(Connection):
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            chunks = [command] if isinstance(command, bytes | bytearray | memoryview) \
                else command
            sent.round_trips += 1
            sent.bytes += sum(len(bytes(chunk)) for chunk in chunks)
            super().send_packed_command(command, check_health)

    client = redis.Redis(connection_pool=redis.ConnectionPool.from_url(
        redis_url, connection_class=Sizing))
    yield client, sent
    client.close()


def _join(width: int) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [{"slug": "root", "plugin": "x"}]
    nodes += [{"slug": f"m{i}", "plugin": "x", "depends_on": ["root"]} for i in range(width)]
    nodes.append({"slug": "join", "plugin": "x", "fan_mode": "aggregate",
                  "depends_on": [f"m{i}" for i in range(width)]})
    return {"name": f"join-{width}", "nodes": nodes}


class _Collect:
    def __init__(self) -> None:
        self.refs: list[TaskRef] = []

    def dispatch(self, tasks: Sequence[TaskRef]) -> None:
        self.refs.extend(tasks)


def _run(store: RedisStore, sent: _Sent, run_id: str, width: int,
         before_each: Any = None) -> list[tuple[str, int, int]]:
    """Drive the join to its end; per completion (task, round trips, bytes sent). The join
    sums the parents' numbers, checked at the end."""
    queue = _Collect()
    kernel = Kernel(store, queue)
    kernel.start_run(_join(width), run_id=run_id)
    costs = []
    while queue.refs:
        ref = queue.refs.pop(0)
        claim = kernel.claim_task(run_id, ref.task_id, worker="w")
        assert claim is not None
        task = claim.input
        if task.node == "join":
            outputs = [{"fields": {"sum": sum(int(a.fields["n"]) for arts in task.inputs.values()
                                              for a in arts), "parents": len(task.inputs)}}]
        else:
            outputs = [{"fields": {"n": int(task.node[1:]) if task.node != "root" else 0}}]
        if before_each is not None:
            before_each(task.node)
        sent.round_trips = sent.bytes = 0
        kernel.on_task_complete(run_id, ref.task_id, claim.attempt_id, outputs)
        costs.append((task.node, sent.round_trips, sent.bytes))
    run = store.get_run(run_id)
    assert run is not None and run.state is RunState.COMPLETED
    (total,) = store.get_artifacts(run_id, width + 1, 0)
    assert total.fields == {"sum": width * (width - 1) // 2, "parents": width}
    return costs


def test_a_wide_join_names_its_parents_once_stored(sizing: tuple[redis.Redis, _Sent],
                                                  namespace: str) -> None:
    client, sent = sizing
    store = RedisStore(client, namespace)
    narrow, wide = WIDE_PARENTS + 8, 10 * (WIDE_PARENTS + 8)
    per_width = {}
    for width in (narrow, wide):
        costs = _run(store, sent, f"join-{width}", width)
        middles = [c for c in costs if c[0] not in ("root", "join")]
        first, *rest = middles
        # one round trip each, the first one sending the list (the last one also launches the
        # join: the completion, then its launch)
        assert [c[1] for c in middles[:-1]] == [1] * (width - 1) and rest[-1][1] == 2
        per_width[width] = sum(c[2] for c in rest[:-1]) / len(rest[:-1])
        assert first[2] > per_width[width] + 4 * width  # the list: 2+ digits, a header each
    # what a later parent's completion sends does not grow with the parents (the list of the
    # wide join's 400 parents alone is ~1,900 bytes)
    assert abs(per_width[wide] - per_width[narrow]) < 64, per_width
    assert client.get(Keys(namespace).parents(f"join-{wide}", wide + 1)) == ",".join(
        str(i) for i in range(1, wide + 1)).encode()


def test_a_lost_parents_list_is_asked_for_again(sizing: tuple[redis.Redis, _Sent],
                                                namespace: str) -> None:
    # the list is derived data: deleted (a cleanup, a partial restore), the next completion
    # that needs it is asked for it again, before anything of the completion is written
    client, sent = sizing
    store = RedisStore(client, namespace)
    width = WIDE_PARENTS + 1
    key = Keys(namespace).parents("lost", width + 1)

    def drop_at_m10(node: str) -> None:
        if node == "m10":
            assert client.delete(key) == 1

    costs = _run(store, sent, "lost", width, drop_at_m10)
    trips = {node: trips for node, trips, _ in costs}
    assert trips["m0"] == 1 and trips["m10"] == 2 and trips["m11"] == 1
    assert client.exists(key) == 1


def test_each_store_object_sends_a_wide_list_once(sizing: tuple[redis.Redis, _Sent],
                                                  namespace: str) -> None:
    # another worker process (another store object) does not know the list is stored: its
    # first completion naming the child sends it too (SET NX: nothing changes), in one trip
    client, sent = sizing
    first, second = RedisStore(client, namespace), RedisStore(client, namespace)
    width = WIDE_PARENTS + 1
    queue = _Collect()
    kernel = Kernel(first, queue)
    kernel.start_run(_join(width), run_id="two")
    others = Kernel(second, _Collect())
    sizes: list[tuple[str, int, int]] = []
    while queue.refs:
        ref = queue.refs.pop(0)
        driver = others if ref.task_id.startswith(("m1.", "m2.")) else kernel
        claim = driver.claim_task("two", ref.task_id, worker="w")
        assert claim is not None
        sent.round_trips = sent.bytes = 0
        driver.on_task_complete("two", ref.task_id, claim.attempt_id, [{"fields": {"n": 1}}])
        sizes.append((claim.input.node, sent.round_trips, sent.bytes))
    by_node = {node: (trips, size) for node, trips, size in sizes}
    assert by_node["m0"][0] == by_node["m1"][0] == by_node["m2"][0] == 1
    assert by_node["m1"][1] > by_node["m2"][1] + 4 * width  # the second object's first send
    assert abs(by_node["m0"][1] - by_node["m1"][1]) < 16
    run = first.get_run("two")
    assert run is not None and run.state is RunState.COMPLETED


def test_a_narrow_join_sends_its_parents_with_each_completion(
        sizing: tuple[redis.Redis, _Sent], namespace: str) -> None:
    client, sent = sizing
    costs = _run(RedisStore(client, namespace), sent, "narrow", WIDE_PARENTS)
    assert all(trips == 1 for node, trips, _ in costs[1:-2])  # never asked: nothing stored
    assert client.exists(Keys(namespace).parents("narrow", WIDE_PARENTS + 1)) == 0


def test_a_join_holding_its_input_by_reference_reads_it_in_one_round_trip(
        sizing: tuple[redis.Redis, _Sent], namespace: str) -> None:
    # ability read_many: 40 parents of 25 artifacts each (1,000: the join's plan holds them
    # by reference) are read in one round trip when its task is claimed, not one per parent
    client, sent = sizing
    store = RedisStore(client, namespace)
    assert "read_many" in store.abilities
    width, each = 40, 25
    queue = _Collect()
    kernel = Kernel(store, queue)
    kernel.start_run(_join(width), run_id="refs")
    seen: dict[str, list[int]] = {}
    while queue.refs:
        ref = queue.refs.pop(0)
        sent.round_trips = 0
        claim = kernel.claim_task("refs", ref.task_id, worker="w")
        assert claim is not None
        if claim.input.node == "join":
            assert sent.round_trips == 2  # the claim, then every parent's artifacts at once
            stored = store.get_task("refs", ref.task_id)
            assert stored is not None and "refs" in stored.plan
            seen = {slug: [int(a.fields["k"]) for a in arts]
                    for slug, arts in claim.input.inputs.items()}
        count = 1 if claim.input.node == "root" else each
        kernel.on_task_complete("refs", ref.task_id, claim.attempt_id,
                                [{"fields": {"k": k}} for k in range(count)])
    assert seen == {f"m{i}": list(range(each)) for i in range(width)}
    run = store.get_run("refs")
    assert run is not None and run.state is RunState.COMPLETED
