"""A wide completion (its outputs packed by the kernel) and a wide aggregate on Redis: the
store publishes the packed outputs exactly, and the aggregate's input is the list of them."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

from interlock import Kernel, Limits, RunState, TaskInput, TaskRef, TaskState
from interlock.packed import PACK_MIN, ArtifactTexts
from interlock_redis import RedisStore

N = PACK_MIN + 300


def test_wide_fan_out_and_aggregate(store: RedisStore) -> None:
    queue: deque[str] = deque()

    class Queue:
        def dispatch(self, tasks: Sequence[TaskRef]) -> None:
            queue.extend(t.task_id for t in tasks)

    kernel = Kernel(store, Queue(), limits=Limits(max_outputs_per_task=N))
    kernel.start_run({"name": "p", "nodes": [
        {"slug": "src", "plugin": "list"},
        {"slug": "each", "plugin": "work", "depends_on": ["src"]},
        {"slug": "agg", "plugin": "reduce", "depends_on": ["each"], "fan_mode": "aggregate"},
    ]}, run_id="r")
    seen: dict[str, TaskInput] = {}
    while queue:
        claim = kernel.claim_task("r", queue.popleft())
        assert claim is not None
        task = claim.input
        seen[task.node] = task
        outputs: Any = []
        if task.node == "src":  # a generator: the kernel reads and packs it as it goes
            outputs = ({"fields": {"i": i, "s": "é"}, "data": {"n": [i]}} for i in range(N))
        elif task.node == "each":
            (art,) = task.inputs["src"]
            outputs = [{"fields": {"i": art.fields["i"]}, "data": art.origin}]
        kernel.on_task_complete("r", claim.task_id, claim.attempt_id, outputs)
    run = store.get_run("r")
    assert run is not None and run.state is RunState.COMPLETED
    src = store.get_artifacts("r", 0, 0)
    assert [(a.artifact_id, a.seq, a.fields, a.data, a.origin) for a in src] == [
        (f"src.0.0/{i}", i + 1, {"i": i, "s": "é"}, {"n": [i]}, f"src.0.0/{i}")
        for i in range(N)]
    each = store.get_artifacts("r", 1, 0)
    assert [a.data for a in each] == [f"src.0.0/{i}" for i in range(N)]
    # the wide input came as the stored texts ('stream'), records built as the plugin reads
    assert isinstance(seen["agg"].inputs["each"], ArtifactTexts)
    assert seen["agg"].inputs["each"] == each
    assert isinstance(store.iter_artifacts("r", 1, 0), ArtifactTexts)
    assert store.iter_artifacts("r", 2, 0) == store.get_artifacts("r", 2, 0)  # narrow: a list


def test_prefetched_facts_of_a_wide_node_are_its_stored_texts(store: RedisStore) -> None:
    """complete_task_prefetch hands over a wide node's artifacts as the texts it read: equal
    to get_artifacts, each record built when read."""
    from interlock.records import NewArtifact

    kernel = Kernel(store, None, limits=Limits(max_outputs_per_task=N))
    kernel.start_run({"name": "p", "nodes": [
        {"slug": "src", "plugin": "list"},
        {"slug": "each", "plugin": "work", "depends_on": ["src"]},
    ]}, run_id="r")
    (task,) = store.list_tasks("r")
    claim = kernel.claim_task("r", task.task_id)
    assert claim is not None
    outputs = [NewArtifact(f"{task.task_id}/{i}", {"i": i}, None) for i in range(N)]
    transition, facts = store.complete_task_prefetch(
        "r", task.task_id, claim.attempt_id, outputs, [1], [[0]], 1.0)
    assert transition.ready == (1,)
    by_node = {f.node.index: f.artifacts for f in facts}
    assert isinstance(by_node[0], ArtifactTexts) and by_node[0] == store.get_artifacts("r", 0, 0)
    assert by_node[1] == ()


def test_packed_output_args_are_the_texts_of_the_decoded_outputs() -> None:
    """output_args writes a PackedOutputs' fields texts as they are: the same arguments as
    encoding each decoded output, and a forgotten output is refused."""
    import pytest

    from interlock._kernel_support import outputs_to_artifacts
    from interlock.packed import PackedOutputs
    from interlock_redis.codec import dumps
    from interlock_redis.replies import output_args

    outputs = [{"id": None if i % 3 else f"o{i}",
                "fields": {"i": i, "é": "ü\n\"", "f": 1.5e-300, "n": None, "z": {"b": [2.0]}},
                "data": {"p": [i]} if i % 2 else f"x/{i}"} for i in range(N)]
    packed = outputs_to_artifacts("src.0.0", outputs, Limits(max_outputs_per_task=N))
    assert isinstance(packed, PackedOutputs)
    expected: list[object] = []
    for output in packed:
        body = dumps({"fields": output.fields, "data": output.data})
        expected += [dumps(output.artifact_id), body[1:-1]]
    assert output_args(packed) == expected
    packed.forget(1)
    with pytest.raises(LookupError):
        packed.fields_text(0)
    with pytest.raises(LookupError):
        packed.data(0)


def test_large_task_reads_are_chunked(counting: Any, namespace: str) -> None:
    """Listing a run of 2,500 tasks: no command carries the whole task hash (no HGETALL, no
    HMGET of every id) — one such command holds the server for every client — and the
    listings agree with each other."""
    client, log = counting
    store = RedisStore(client, namespace=namespace)
    queue: deque[str] = deque()

    class Queue:
        def dispatch(self, tasks: Sequence[TaskRef]) -> None:
            queue.extend(t.task_id for t in tasks)

    kernel = Kernel(store, Queue(), limits=Limits(max_outputs_per_task=2_500))
    kernel.start_run({"name": "p", "nodes": [
        {"slug": "src", "plugin": "list"},
        {"slug": "each", "plugin": "work", "depends_on": ["src"]}]}, run_id="r")
    claim = kernel.claim_task("r", queue.popleft())
    assert claim is not None
    kernel.on_task_complete("r", claim.task_id, claim.attempt_id,
                            [{"fields": {"i": i}} for i in range(2_500)])
    log.reset()
    everything = store.list_tasks("r")
    assert log.commands["HGETALL"] == 0 and log.commands["HSCAN"] >= 3
    assert [t.task_id for t in everything] == ["src.0.0", *(f"each.0.{i}" for i in range(2_500))]
    log.reset()
    queued = store.list_tasks("r", states=[TaskState.QUEUED])
    of_node = store.list_tasks("r", node_index=1)
    assert log.commands["HMGET"] >= 2 * 3  # the jmaps and the plans, 1,000 fields a command
    assert queued == of_node == everything[1:]
