"""The memory store keeps a wide completion's publication packed (a detached PublishedView),
and reads it back exactly as the records it stands for, in seq order with any records."""

from __future__ import annotations

from interlock.packed import PACK_MIN, PackedOutputs, PublishedView
from interlock.records import Artifact, NodeRecord, RunRecord
from interlock.states import NodeState, RunState
from interlock_memory import MemoryStore

N = PACK_MIN + 5


def _view(task: str, first_seq: int) -> PublishedView:
    outputs = PackedOutputs(task, [None] * N, [f'{{"i":{k}}}' for k in range(N)],
                            [f"d{k}" for k in range(N)])
    return PublishedView(outputs, 0, 0, task, first_seq, "self", None)


def test_a_wide_publication_is_stored_packed_and_read_back_as_its_records() -> None:
    store = MemoryStore()
    store.create_run(RunRecord("r", {}, {}, RunState.RUNNING, 1, 1),
                     [NodeRecord(0, 0, NodeState.LAUNCHED, 0)])
    single = Artifact("s.0.0/0", 0, 0, "s.0.0", 1, {"a": 1}, None, None)
    first, second = _view("w.0.1", 2), _view("w.0.2", N + 2)
    expected = [single, *first, *second]
    with store.transaction("r") as tx:
        assert tx is not None
        tx.add_artifacts([single])
        tx.add_artifacts(first)
    with store.transaction("r") as tx:
        assert tx is not None
        tx.add_artifacts(second)
    first.forget(N)  # the kernel's view lets its outputs go: the stored copy is its own
    second.forget(N)
    assert store.get_artifacts("r", 0, 0) == expected
    with store.transaction("r") as tx:
        assert tx is not None
        assert tx.stored_artifacts(0, 0, 2 * N + 1) == expected
        assert tx.stored_artifacts(0, 0, 2 * N) is None
        tx.add_artifacts([Artifact("s.0.3/0", 0, 0, "s.0.3", 2 * N + 2, {}, None, None)])
    assert len(store.get_artifacts("r", 0, 0)) == 2 * N + 2
    with store.transaction("r") as tx:
        assert tx is not None
        assert tx.stored_artifacts(0, 0, 2 * N + 1) is None
    # what is stored for the wide publications: no record per artifact
    held = store._runs["r"].artifacts[(0, 0)]
    assert [type(a) for a in held] == [Artifact, PublishedView, PublishedView, Artifact]
