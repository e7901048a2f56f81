"""Records <-> rows: the hand-written column mappings of interlock_sqlite.codec round-trip
every field, and the one-statement read of a claim or completion sees what separate reads see."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from interlock.packed import PACK_MIN, PackedArtifacts
from interlock.records import Artifact, NodeRecord, RunRecord, TaskRecord
from interlock.states import NodeState, RunState, TaskState
from interlock_sqlite import SqliteStore, codec

RUN = RunRecord("r", {"name": "p", "nodes": []}, {"x": 1}, RunState.RUNNING, 3, 2,
                failed_nodes=1, retries=4, artifact_seq=9, created_at=1.5, updated_at=2.5,
                reason="why")
NODE = NodeRecord(2, 3, NodeState.LAUNCHED, 1, total_tasks=7, remaining_tasks=5, reason="r")
TASK = TaskRecord("r", "t.3.0", 2, 3, 4, TaskState.RUNNING, {"inputs": {}, "bindings": {"b": 1}},
                  "o", "self", attempt=2, attempt_id="a", worker="w", lease_until=9.5,
                  not_before=1.0, error="e", resume={"k": [1]}, updated_at=3.5)


def test_params_follow_the_column_lists() -> None:
    # the hand-written tuples against the generic record dicts, column by column
    task = TASK.to_dict()
    assert codec.task_params(TASK) == tuple(
        codec.dumps(task[c]) if c in ("plan", "resume") else task[c] for c in codec.TASK_COLUMNS)
    assert codec.task_state_params(TASK) == (
        *(codec.dumps(task[c]) if c == "resume" else task[c] for c in codec.TASK_MUTABLE),
        "r", "t.3.0")
    run = RUN.to_dict()
    assert codec.run_state_params(RUN) == (*(run[c] for c in codec.RUN_STATE_COLUMNS[1:]), "r")
    assert codec.run_params(RUN) == tuple(run[c] for c in codec.RUN_STATE_COLUMNS)
    assert codec.run_static_params(RUN) == ("r", codec.dumps(RUN.pipeline),
                                            codec.dumps(RUN.input))
    node = NODE.to_dict()
    assert codec.node_params("r", NODE) == ("r", *(node[f] for f in codec.NODE_FIELDS))


def test_rows_decode_to_the_records_they_were_written_from(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    store.create_run(RUN, [NodeRecord(i, 0, NodeState.WAITING, 0) for i in range(2)] + [NODE])
    conn = sqlite3.connect(tmp_path / "s.db")
    conn.execute(codec.UPSERT_TASK, codec.task_params(TASK))
    conn.commit()
    assert store.get_run("r") == RUN
    assert store.get_nodes("r", [2]) == [NODE]
    assert store.get_task("r", "t.3.0") == TASK
    row = conn.execute(codec.SELECT_RUN_TASK_NODE, ("t.3.0", "r")).fetchall()[0]
    assert codec.decode_task(row[codec.TASK_SLICE]) == TASK
    assert codec.decode_node(row[codec.NODE_SLICE]) == NODE
    missing = conn.execute(codec.SELECT_RUN_TASK_NODE, ("nope", "r")).fetchall()[0]
    assert set(missing[codec.TASK_SLICE]) == {None}


def test_task_transaction_reads_run_task_and_node_once(tmp_path: Path) -> None:
    statements: list[str] = []
    store = SqliteStore(tmp_path / "s.db",
                        on_connect=lambda c: c.set_trace_callback(statements.append))
    store.create_run(RUN, [NodeRecord(i, 0, NodeState.WAITING, 0) for i in range(2)] + [NODE])
    with store.transaction("r") as tx:
        assert tx is not None
        tx.put_task(TASK)
    statements.clear()
    with store._task_transaction("r", "t.3.0") as tx:
        assert tx is not None
        assert tx.run == RUN
        assert tx.task("t.3.0") == TASK
        assert tx.node(2) == NODE
    # (the PRAGMAs set the busy timeout to 0 for the BEGIN's tries and back)
    assert [s.split()[0] for s in statements if not s.startswith("PRAGMA")] == [
        "BEGIN", "SELECT", "COMMIT"]
    with store._task_transaction("r", "nope") as tx:
        assert tx is not None and tx.task("nope") is None
    with store._task_transaction("missing", "t.3.0") as tx:
        assert tx is None


def _artifacts(n: int, node: int = 1, first_seq: int = 1) -> list[Artifact]:
    """Artifacts with what JSON text can hold: non-ASCII, escapes, floats, nesting, nulls."""
    return [Artifact(f"t.{node}.{i}/o\u00e9\"{i}", node, 0, f"t.{node}.{i}", first_seq + i,
                     {"i": i, "f": 1.5e-300 * i, "s": "\u2603\\\n\"", "big": 2 ** 70, "n": None,
                      "z": {"l": [1.0, True, None]}},
                     None if i % 3 == 0 else {"uri": f"s3://b/{i}"} if i % 3 == 1 else [i],
                     None if i % 2 else f"o/{i}")
            for i in range(n)]


@pytest.mark.parametrize("json1", [True, False])
def test_artifact_reads_with_and_without_json1_give_the_same_records(
        tmp_path: Path, json1: bool) -> None:
    """SQLite builds each artifact's packed text (JSON1) or Python decodes the columns: the
    same records either way; a wide node is handed over packed, a narrow one as records."""
    store = SqliteStore(tmp_path / "s.db")
    assert store._json1  # this SQLite has JSON1: the fallback is the test's switch
    store._json1 = json1
    store.create_run(RUN, [NodeRecord(i, 0, NodeState.WAITING, 0) for i in range(3)])
    wide, narrow = _artifacts(PACK_MIN + 5), _artifacts(70, node=2, first_seq=PACK_MIN + 6)
    conn = sqlite3.connect(tmp_path / "s.db")
    conn.executemany(codec.INSERT_ARTIFACT, [codec.artifact_params("r", a)
                                             for a in [*wide, *narrow]])
    conn.commit()
    streamed = store.iter_artifacts("r", 1, 0)
    assert isinstance(streamed, PackedArtifacts) is json1
    assert list(streamed) == wide and store.get_artifacts("r", 1, 0) == wide
    assert list(store.iter_artifacts("r", 2, 0)) == narrow
    assert isinstance(store.iter_artifacts("r", 2, 0), list) is json1
    assert list(store.iter_artifacts("r", 0, 0)) == [] and store.get_artifacts("x", 1, 0) == []
    # inside a step: a completion's follow-up facts, packed from _PACK_FACTS on
    with store.transaction("r") as tx:
        assert tx is not None
        facts = tx.stored_artifacts(2, 0, 1000)
        assert facts == narrow and isinstance(facts, PackedArtifacts) is json1
        assert tx.stored_artifacts(2, 0, 69) is None and tx.stored_artifacts(0, 0, 5) == []


@pytest.mark.parametrize("mode", ["self", "inherit", "broadcast"])
def test_a_wide_completion_is_written_from_its_fields_texts(tmp_path: Path, mode: str) -> None:
    """From PACK_MIN outputs a completion's artifacts are written from the fields texts their
    validation produced (no record built): they read back as the records the in-memory store
    keeps, for every origin mode (a root's outputs originate in themselves, a single task's
    inherit its input's origin, an aggregate's have none), with unicode, nested and empty
    fields and every kind of data."""
    from interlock import Kernel
    from interlock.runtime import QueueDispatcher
    from interlock_memory import MemoryStore

    src: dict[str, object] = {"slug": "src", "plugin": "p"}
    if mode != "self":
        src.update(depends_on=["root"], fan_mode="single" if mode == "inherit" else "aggregate")
    nodes = [src] if mode == "self" else [{"slug": "root", "plugin": "p"}, src]
    outputs = [{"fields": {"i": i, "é": "ü" * (i % 3), "nested": {"l": [i, None, 1.5]}}
                if i % 4 else {},
                "data": [None, f"file://{i}", {"k": [i]}, i * 0.5][i % 4]}
               for i in range(PACK_MIN + 7)]
    read = []
    for store in (MemoryStore(), SqliteStore(tmp_path / "s.db")):
        kernel = Kernel(store, QueueDispatcher())
        kernel.start_run({"name": "wide", "nodes": nodes}, run_id="r")
        for slug, outs in (("root", [{"fields": {"o": 1}}]), ("src", outputs)):
            for task in [t for t in store.list_tasks("r") if t.task_id.startswith(slug)]:
                claim = kernel.claim_task("r", task.task_id)
                assert claim is not None
                kernel.on_task_complete("r", task.task_id, claim.attempt_id, outs)
        read.append(store.get_artifacts("r", len(nodes) - 1, 0))
    assert len(read[1]) == PACK_MIN + 7 and list(read[1]) == list(read[0])
    assert read[1][5].fields == {"i": 5, "é": "üü", "nested": {"l": [5, None, 1.5]}}
    origins = {a.origin for a in read[1]}
    assert origins == ({a.artifact_id for a in read[1]} if mode == "self" else
                       {"root.0.0/0"} if mode == "inherit" else {None})
