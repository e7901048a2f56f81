"""Wide nodes held packed: interlock.packed's sequences behave exactly like lists of records,
and the kernel uses them for a wide completion's outputs and a wide aggregate's input."""

from __future__ import annotations

import json
import pickle
import tracemalloc
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from support import Harness

from interlock import Kernel, Limits, RunState, TaskInput, TaskRef
from interlock.errors import LimitExceeded, UsageError
from interlock.packed import (
    PACK_MIN,
    ArtifactTexts,
    PackedArtifacts,
    PackedOutputs,
    PublishedView,
    pack_if_wide,
)
from interlock.planning import resolve_refs
from interlock.records import Artifact, NewArtifact

N = 2 * PACK_MIN + 200  # the odd half is wide too


def _artifact(i: int, **fields: Any) -> Artifact:
    return Artifact(f"t.0.{i}/0", 1, 0, f"t.0.{i}", i + 1,
                    {"i": i, "x": 0.1 * i, "s": "é\u2603\"\\", "n": None, **fields},
                    {"uri": f"s3://b/{i}", "tags": [i, True, {"k": None}]} if i % 2 else None,
                    None if i % 3 == 0 else f"o{i}")


def test_packed_artifacts_behave_like_the_list_of_their_records() -> None:
    records = [_artifact(i) for i in range(50)]
    packed = PackedArtifacts(iter(records))
    assert len(packed) == 50 and bool(packed) and not PackedArtifacts()
    assert packed[0] == records[0] and packed[-1] == records[-1] and packed[7] == records[7]
    assert type(packed[3]) is Artifact and type(packed[3].fields) is dict
    with pytest.raises(IndexError):
        packed[50]
    with pytest.raises(IndexError):
        packed[-51]
    assert list(packed) == records and list(reversed(packed)) == records[::-1]
    # equality both ways, with lists, tuples and other packed sequences; order matters
    assert packed == records and records == packed and packed == tuple(records)
    assert packed == PackedArtifacts(records) and (packed != records) is False
    assert packed != records[::-1] and packed != records[:-1] and packed != "not a list"
    reordered = _artifact(1, z=1)  # same record with its fields in another key order
    assert PackedArtifacts([Artifact(**{**reordered.to_dict(),
                                        "fields": dict(reversed(reordered.fields.items()))})]
                           ) == PackedArtifacts([reordered])
    # slicing gives a list, as slicing a list does
    for window in (slice(2, 9), slice(None, None, -3), slice(-5, None), slice(40, 99)):
        assert packed[window] == records[window] and type(packed[window]) is list
    assert records[4] in packed and _artifact(99) not in packed
    assert packed.index(records[9]) == 9 and packed.count(records[9]) == 1
    with pytest.raises(TypeError):
        hash(packed)
    # each read builds a new record: changing it changes nothing in the sequence
    packed[0].fields["i"] = -1
    assert packed[0] == records[0]
    assert pickle.loads(pickle.dumps(packed)) == records
    assert repr(PackedArtifacts(records[:2])) == f"PackedArtifacts({records[:2]!r})"


def _texts(records: Sequence[Artifact], as_bytes: bool) -> list[Any]:
    """The JSON object texts a store (Redis) keeps for each record."""
    texts = [json.dumps(a.to_dict(), separators=(",", ":")) for a in records]
    return [t.encode() for t in texts] if as_bytes else texts


@pytest.mark.parametrize("as_bytes", [False, True])
def test_artifact_texts_behave_like_the_list_of_their_records(as_bytes: bool) -> None:
    records = [_artifact(i) for i in range(600)]  # iteration parses chunks of 256 texts
    texts = ArtifactTexts(_texts(records, as_bytes))
    assert len(texts) == 600 and not ArtifactTexts([])
    assert texts[0] == records[0] and texts[-1] == records[-1] and texts[300] == records[300]
    assert type(texts[3]) is Artifact and type(texts[3].fields) is dict
    with pytest.raises(IndexError):
        texts[600]
    assert list(texts) == records and list(reversed(texts)) == records[::-1]
    assert list(ArtifactTexts(_texts(records[:256], as_bytes))) == records[:256]
    assert list(ArtifactTexts(_texts(records[:257], as_bytes))) == records[:257]
    assert texts == records and records == texts and texts == PackedArtifacts(records)
    assert texts != records[::-1] and texts != records[:-1]
    assert texts[2:9] == records[2:9] and type(texts[2:9]) is list
    texts[0].fields["i"] = -1  # a new record per read
    assert texts[0] == records[0]
    assert pickle.loads(pickle.dumps(texts)) == records
    assert type(pickle.loads(pickle.dumps(texts))) is ArtifactTexts
    # already packed: the kernel keeps it as it is (no decode, no re-encode)
    assert pack_if_wide(texts) is texts


def test_packed_artifacts_from_texts_and_plus() -> None:
    records = [_artifact(i) for i in range(20)]
    rows = [json.dumps([a.artifact_id, a.node_index, a.generation, a.task_id, a.seq, a.fields,
                        a.data, a.origin], separators=(",", ":")) for a in records]
    packed = PackedArtifacts.from_texts(rows[:15])
    assert packed == records[:15] and pack_if_wide(packed) is packed
    more = packed.plus(iter(records[15:]))
    assert more == records and packed == records[:15]  # a new sequence; this one unchanged
    assert PackedArtifacts().plus([]) == []


def test_packed_outputs_and_published_view_build_records_on_access() -> None:
    outputs = PackedOutputs("t.0.0", [None, "b", None], ['{"i":0}', '{"i":1}', "{}"],
                            [None, "d", [1]])
    assert list(outputs) == [NewArtifact("t.0.0/0", {"i": 0}, None),
                             NewArtifact("t.0.0/b", {"i": 1}, "d"), NewArtifact("t.0.0/2", {}, [1])]
    assert pickle.loads(pickle.dumps(outputs)) == list(outputs)
    with pytest.raises(ValueError):
        PackedOutputs("t", [None], [], [])
    for mode, origins in (("self", ["t.0.0/0", "t.0.0/b", "t.0.0/2"]),
                          ("inherit", ["o", "o", "o"]), ("broadcast", [None, None, None])):
        view = PublishedView(outputs, 4, 2, "t.0.0", 10, mode, "o")  # type: ignore[arg-type]
        assert view == [Artifact(o.artifact_id, 4, 2, "t.0.0", 10 + k, o.fields, o.data,
                                 origins[k]) for k, o in enumerate(outputs)]
        assert pickle.loads(pickle.dumps(view)) == view
    # a store writing fields as text reads them without a decode; plain records: no texts
    for mode in ("self", "inherit", "broadcast"):
        view = PublishedView(outputs, 4, 2, "t.0.0", 10, mode, "o")  # type: ignore[arg-type]
        texts = view.texts()
        assert texts is not None and view.task_id == "t.0.0"
        assert [(seq, aid, origin, json.loads(fields), data)
                for seq, aid, origin, fields, data in texts] == [
            (a.seq, a.artifact_id, a.origin, a.fields, a.data) for a in view]
    assert PublishedView(list(outputs), 4, 2, "t.0.0", 10, "self", None).texts() is None
    # the owner (the kernel, writing a fan-out batch by batch) lets written items go
    view.forget(2)
    assert len(view) == len(outputs) == 3 and view[2].artifact_id == "t.0.0/2"
    for k in (0, 1, -3):
        with pytest.raises(LookupError):
            view[k]


def test_resolve_refs_merges_packed_nodes_in_seq_order() -> None:
    a = [Artifact(f"a/{i}", 0, 0, "a", 2 * i + 1, {"i": i}, None, None) for i in range(1500)]
    b = [Artifact(f"b/{i}", 1, 0, "b", 2 * i + 2, {"i": i}, None, None) for i in range(1500)]
    stored = {0: PackedArtifacts(a), 1: PackedArtifacts(b)}
    refs = {"x": [[0, 0, 1500, [[0, 1500]]]],
            "y": [[0, 0, 1500, [[10, 20], [30, 1500]]], [1, 0, 1500, [[0, 5]]]]}
    inputs = resolve_refs(refs, lambda node, generation: stored[node])
    assert inputs["x"] is stored[0]  # one whole node: the sequence as read, no copy
    assert isinstance(inputs["y"], PackedArtifacts)
    assert inputs["y"] == sorted(a[10:20] + a[30:] + b[:5], key=lambda r: r.seq)


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "memory":
        from interlock_memory import MemoryStore

        return MemoryStore()
    from interlock_sqlite import SqliteStore

    return SqliteStore(tmp_path / "runs.db")


def test_wide_aggregate_input_is_packed_and_equal_to_the_list(store: Any) -> None:
    h = Harness(store=store, limits=Limits(max_outputs_per_task=N))
    h.kernel.start_run({"name": "p", "nodes": [
        {"slug": "src", "plugin": "list"},
        {"slug": "each", "plugin": "work", "depends_on": ["src"]},
        {"slug": "agg", "plugin": "reduce", "depends_on": ["each"], "fan_mode": "aggregate"},
        {"slug": "odd", "plugin": "reduce", "depends_on": ["src"], "fan_mode": "aggregate",
         "edge_filters": {"src": [{"field": "even", "op": "eq", "value": False}]}},
    ]}, run_id="r")
    seen: dict[str, TaskInput] = {}

    def behaviour(task: TaskInput) -> Any:
        seen[task.node] = task
        if task.node == "src":  # a generator: read one output at a time
            return ({"fields": {"i": i, "even": i % 2 == 0}, "data": {"n": [i]}}
                    for i in range(N))
        if task.node == "each":
            (art,) = task.inputs["src"]
            return [{"fields": {"i": art.fields["i"]}, "data": art.data}]
        return []

    h.work(behaviour)
    run = h.store.get_run("r")
    assert run is not None and run.state is RunState.COMPLETED
    src = h.store.get_artifacts("r", 0, 0)
    assert [(a.artifact_id, a.seq, a.fields, a.data, a.origin) for a in src] == [
        (f"src.0.0/{i}", i + 1, {"i": i, "even": i % 2 == 0}, {"n": [i]}, f"src.0.0/{i}")
        for i in range(N)]
    agg, odd = seen["agg"].inputs["each"], seen["odd"].inputs["src"]
    # a store with the 'stream' ability gives the wide input packed; any store, the same value
    assert isinstance(agg, PackedArtifacts) is ("stream" in h.store.abilities)
    assert isinstance(odd, PackedArtifacts) is ("stream" in h.store.abilities)
    each = h.store.get_artifacts("r", 1, 0)
    assert agg == each and list(agg) == each and agg[5:9] == each[5:9]
    assert odd == [a for a in src if a.fields["i"] % 2]
    again = pickle.loads(pickle.dumps(seen["agg"]))  # as a process worker receives it
    assert again == seen["agg"] and again.inputs["each"] == each
    (agg_task,) = h.store.list_tasks("r", node_index=2)
    assert agg_task.plan["refs"] == {"each": [[1, 0, N, [[0, N]]]]}
    assert h.kernel.build_task_input("r", agg_task.task_id) == seen["agg"]
    (odd_task,) = h.store.list_tasks("r", node_index=3)
    assert odd_task.plan["refs"] == {"src": [[0, 0, N, [[k, k + 1] for k in range(1, N, 2)]]]}


def test_a_wide_completion_holds_its_outputs_packed(tmp_path: Path) -> None:
    """The source of a 20,000-way fan-out, its outputs from a generator: the completion,
    planning and writing the fan-out included, peaks well under the records' size."""
    from interlock_sqlite import SqliteStore

    n = 20_000
    dispatched: list[int] = []

    class Counting:
        def dispatch(self, tasks: Sequence[TaskRef]) -> None:
            dispatched.append(len(tasks))

    kernel = Kernel(SqliteStore(tmp_path / "runs.db"), Counting(),
                    limits=Limits(max_outputs_per_task=n))
    kernel.start_run({"name": "p", "nodes": [
        {"slug": "src", "plugin": "list"},
        {"slug": "each", "plugin": "work", "depends_on": ["src"]}]}, run_id="r")
    claim = kernel.claim_task("r", "src.0.0")
    assert claim is not None

    def outputs() -> Iterator[dict[str, Any]]:
        return ({"fields": {"i": i}, "data": f"mem://item/{i}"} for i in range(n))

    tracemalloc.start()
    try:
        kernel.on_task_complete("r", claim.task_id, claim.attempt_id, outputs())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sum(dispatched) == 1 + n
    # held as records (NewArtifact, Artifact, fields dicts) it peaked at about 610 bytes an
    # output; packed, about 330 (of which about 100 are one launch batch, whatever n is)
    assert peak / n < 420, f"{peak / n:.0f} bytes an output"


def test_a_wide_list_of_outputs_is_packed_from_its_first_output() -> None:
    outputs = [{"id": None if i % 7 else f"o{i}", "fields": {"i": i, "s": "\u00e9"},
                "data": [i] if i % 2 else None} for i in range(PACK_MIN + 3)]
    from interlock._kernel_support import outputs_to_artifacts

    packed = outputs_to_artifacts("t", outputs, Limits(max_outputs_per_task=PACK_MIN + 3))
    assert isinstance(packed, PackedOutputs)
    assert packed == outputs_to_artifacts("t", iter(outputs),
                                          Limits(max_outputs_per_task=PACK_MIN + 3))
    assert packed[7] == NewArtifact("t/o7", {"i": 7, "s": "\u00e9"}, [7])
    assert isinstance(outputs_to_artifacts("t", outputs[:PACK_MIN - 1], Limits()), list)


def test_outputs_are_counted_and_checked_as_they_are_read() -> None:
    h = Harness(limits=Limits(max_outputs_per_task=3))
    h.kernel.start_run({"name": "p", "nodes": [{"slug": "src", "plugin": "list"}]}, run_id="r")
    claim = h.kernel.claim_task("r", h.dispatcher.refs.pop(0).task_id)
    assert claim is not None
    with pytest.raises(UsageError):  # a malformed output fails first, even past the limit
        h.kernel.on_task_complete("r", claim.task_id, claim.attempt_id,
                                  iter([{"fields": {}}] * 4 + [42]))  # type: ignore[list-item]
    with pytest.raises(LimitExceeded) as info:
        h.kernel.on_task_complete("r", claim.task_id, claim.attempt_id,
                                  ({"fields": {"i": i}} for i in range(5)))
    assert (info.value.limit, info.value.value) == ("max_outputs_per_task", 5)


@pytest.mark.parametrize(("outputs", "repeated"), [
    ([{"id": "1"}, {}], 1),  # the default id of output 1 is "1"
    ([{}, {"id": "0"}], 1),  # a given id naming an earlier default one
    ([{"id": "a"}, {"id": "a"}], 1),
    ([{}, {}, {"id": "x"}, {"id": "2"}], None),  # "2" is output 3's own: output 2 is "x"
    ([{"id": "01"}, {}], None),  # "t/01" is not "t/1"
    ([{"id": "5"}, {}], None),
    # the same rules once a wide completion is packed (from PACK_MIN outputs on)
    ([{}] * PACK_MIN + [{"id": "5"}], PACK_MIN),
    ([{"id": "x"}] + [{}] * PACK_MIN + [{"id": "x"}], PACK_MIN + 1),
    ([{"id": str(PACK_MIN + 5)}] + [{}] * (PACK_MIN + 5), PACK_MIN + 5),
    ([{}, {"id": "1"}] + [{}] * PACK_MIN + [{"id": "1"}], PACK_MIN + 2),
    ([{}] * PACK_MIN + [{"id": str(PACK_MIN)}, {"id": "07"}, {}], None),
])
@pytest.mark.parametrize("feed", [list, iter], ids=["list", "generator"])
def test_output_ids_repeat_as_qualified_ids(outputs: list[dict[str, Any]],
                                            repeated: int | None, feed: Any) -> None:
    # a wide list is packed from its first output, a generator once PACK_MIN were read
    h = Harness()
    h.kernel.start_run({"name": "p", "nodes": [{"slug": "src", "plugin": "list"}]}, run_id="r")
    claim = h.kernel.claim_task("r", h.dispatcher.refs.pop(0).task_id)
    assert claim is not None
    if repeated is None:
        h.kernel.on_task_complete("r", claim.task_id, claim.attempt_id, feed(outputs))
        ids = [a.artifact_id for a in h.store.get_artifacts("r", 0, 0)]
        assert ids == [f"src.0.0/{o.get('id', k)}" for k, o in enumerate(outputs)]
        assert len(set(ids)) == len(outputs)
    else:
        with pytest.raises(UsageError, match=f"output {repeated} has an empty or repeated id"):
            h.kernel.on_task_complete("r", claim.task_id, claim.attempt_id, feed(outputs))
