"""Run and attempt ids: fresh, 32 lowercase hex digits (the shape of ``uuid4().hex``)."""

from __future__ import annotations

import re

from support import Harness

from interlock._ids import new_id


def test_ids_are_32_hex_digits_and_fresh() -> None:
    ids = {new_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


def test_claims_and_runs_get_such_ids() -> None:
    h = Harness()
    h.kernel.start_run({"name": "one", "nodes": [{"slug": "a", "plugin": "p"}]})
    ref = h.dispatcher.refs.pop(0)
    claim = h.kernel.claim_task(ref.run_id, ref.task_id, worker="w")
    assert claim is not None
    assert re.fullmatch(r"[0-9a-f]{32}", claim.attempt_id)
    assert re.fullmatch(r"[0-9a-f]{32}", ref.run_id)
