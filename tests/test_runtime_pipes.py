"""The task pipe's messages: every one fits one atomic write, whatever the refs look like."""

from __future__ import annotations

import pytest

from interlock.records import TaskRef
from interlock.runtime.pipes import CHUNK, MAX_MESSAGE, decode_refs, encode_refs


def _refs(n: int, run_id: str = "r", slug: str = "each", plugin: str = "work",
          runs: int = 1) -> list[TaskRef]:
    return [TaskRef(f"{run_id}{k % runs}", f"{slug}.0.{k}", plugin, float(k % 3))
            for k in range(n)]


def _decoded(messages: list[bytes]) -> tuple[set[int], list[TaskRef]]:
    epochs, refs = set(), []
    for message in messages:
        epoch, part = decode_refs(message)
        epochs.add(epoch)
        refs.extend(part)
    return epochs, refs


def test_a_large_dispatch_is_spread_over_messages_of_at_most_chunk_refs() -> None:
    refs = _refs(10 * CHUNK + 3)
    messages = encode_refs(7, refs, workers=2)
    epochs, decoded = _decoded(messages)
    assert epochs == {7} and decoded == refs
    assert len(messages) == 11 and all(len(decode_refs(m)[1]) <= CHUNK for m in messages)


def test_a_small_dispatch_is_cut_finer_so_every_worker_gets_some() -> None:
    refs = _refs(40)
    messages = encode_refs(1, refs, workers=4)  # 40 // (2 * 4) = 5 refs per message
    assert [len(decode_refs(m)[1]) for m in messages] == [5] * 8
    assert _decoded(messages)[1] == refs


def test_long_ids_halve_a_chunk_until_each_message_fits_one_atomic_write() -> None:
    # CHUNK refs of ~200-character ids do not fit PIPE_BUF: the chunk is halved, in order
    refs = _refs(CHUNK * 3, run_id="run-" + "x" * 60, slug="node_" + "y" * 120,
                 plugin="plugins." + "z" * 40)
    messages = encode_refs(2, refs, workers=2)
    assert all(len(m) <= MAX_MESSAGE for m in messages)
    assert len(messages) > 3 and _decoded(messages)[1] == refs


def test_refs_of_several_runs_go_in_messages_of_one_run_each() -> None:
    refs = _refs(CHUNK, runs=3)
    messages = encode_refs(3, refs, workers=1)
    for message in messages:
        assert len({ref.run_id for ref in decode_refs(message)[1]}) == 1
    assert sorted(_decoded(messages)[1], key=lambda r: r.task_id) == \
        sorted(refs, key=lambda r: r.task_id)


def test_a_ref_too_long_for_any_message_is_refused_by_name() -> None:
    ref = TaskRef("r", "t" * MAX_MESSAGE, "p")
    with pytest.raises(ValueError, match="too long to send"):
        encode_refs(0, [ref], workers=1)
