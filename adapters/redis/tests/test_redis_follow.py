"""The Redis ``follow`` path: a chain step (completion + launch + claim of the next step) in
one round trip when the prediction made from the task's claim holds, and a correct fallback (the
real facts, a second round trip) when it does not."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from interlock import Claim, Kernel, Output, RunState
from interlock.records import TaskRef
from interlock_redis import RedisStore


class Collect:
    def __init__(self) -> None:
        self.refs: list[TaskRef] = []

    def dispatch(self, tasks: Sequence[TaskRef]) -> None:
        self.refs.extend(tasks)


def chain(n: int, *, extra_root: bool = False) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [{"slug": "c0", "plugin": "step"}]
    nodes += [{"slug": f"c{i}", "plugin": "step", "depends_on": [f"c{i - 1}"],
               "bindings": {"k": f"{{c{i - 1}.k}}"}} for i in range(1, n)]
    if extra_root:
        nodes.append({"slug": "side", "plugin": "step"})
    return {"name": "chain", "nodes": nodes}


def _started(client: Any, namespace: str, steps: int
             ) -> tuple[Collect, Kernel, TaskRef, Claim]:
    """A kernel on a RedisStore with run "r" of a chain of ``steps`` started and its root
    task claimed by worker "w": (queue, kernel, root ref, claim)."""
    store = RedisStore(client, namespace)
    queue = Collect()
    kernel = Kernel(store, queue)
    kernel.start_run(chain(steps), {}, run_id="r")
    (root,) = queue.refs
    claim = kernel.claim_task("r", root.task_id, worker="w")
    assert claim is not None
    return queue, kernel, root, claim


def test_a_continued_chain_step_is_one_round_trip(counting: Any, namespace: str) -> None:
    client, log = counting
    queue, kernel, root, claim = _started(client, namespace, 6)
    trips = []
    for step in range(5):
        log.reset()
        done, claim = kernel.complete_and_continue(
            "r", claim.task_id, claim.attempt_id, [Output(fields={"k": step})], worker="w")
        trips.append(log.round_trips)
        assert done.applied and claim is not None and claim.task_id == f"c{step + 1}.0.0"
        assert claim.input.bindings == {"k": step}
        (art,) = claim.input.inputs[f"c{step}"]
        assert art.seq == step + 1 and art.fields == {"k": step}
    assert trips == [1] * 5  # completion + launch + claim of the next step, one script each
    done, nothing = kernel.complete_and_continue("r", claim.task_id, claim.attempt_id, [])
    assert nothing is None and done.run_state is RunState.COMPLETED
    assert queue.refs == [root]  # every later step was handed over, none went to the queue


def test_a_wrong_prediction_falls_back_to_the_facts(counting: Any, namespace: str) -> None:
    """Another task of the run publishes between the claim and the completion: the seq the
    claim returned is stale, the script refuses the planned follow-up and returns the facts;
    the kernel launches from those (a second round trip) with the artifacts' real seqs."""
    client, log = counting
    store = RedisStore(client, namespace)
    queue = Collect()
    kernel = Kernel(store, queue)
    kernel.start_run(chain(2, extra_root=True), {}, run_id="r")
    first, side = sorted(queue.refs, key=lambda ref: ref.task_id)
    claim = kernel.claim_task("r", first.task_id, worker="w")
    other = kernel.claim_task("r", side.task_id, worker="w")
    assert claim is not None and other is not None
    kernel.on_task_complete("r", side.task_id, other.attempt_id, [{"fields": {"s": 1}}] * 2)
    log.reset()
    done = kernel.on_task_complete("r", claim.task_id, claim.attempt_id, [{"fields": {"k": 7}}])
    assert done.applied and done.ready == (1,)
    assert log.round_trips == 2
    child = store.get_task("r", "c1.0.0")
    assert child is not None
    (art,) = child.plan["inputs"]["c0"]
    assert art["seq"] == 3 and art["fields"] == {"k": 7}  # after the side task's two
    assert child.plan["bindings"] == {"k": 7}


def test_a_task_claimed_elsewhere_completes_without_prediction(
        counting: Any, redis_url: str, namespace: str) -> None:
    client, log = counting
    queue = Collect()
    kernel = Kernel(RedisStore(client, namespace), queue)
    kernel.start_run(chain(2), {}, run_id="r")
    (root,) = queue.refs
    elsewhere = redis.Redis.from_url(redis_url)
    try:
        claim = Kernel(RedisStore(elsewhere, namespace)).claim_task("r", root.task_id,
                                                                   worker="x")
    finally:
        elsewhere.close()
    assert claim is not None
    log.reset()
    done = kernel.on_task_complete("r", root.task_id, claim.attempt_id, [{"fields": {"k": 1}}])
    assert done.ready == (1,) and log.round_trips == 2
    assert [ref.task_id for ref in queue.refs] == [root.task_id, "c1.0.0"]


def test_a_stale_callback_keeps_the_prediction_of_the_current_attempt(counting: Any,
                                                                      namespace: str) -> None:
    """A completion by an older attempt is refused and must not cost the current attempt its
    one-round-trip step."""
    client, log = counting
    _, kernel, root, claim = _started(client, namespace, 2)
    stale = kernel.on_task_complete("r", root.task_id, "not-the-attempt", [{"fields": {"k": 0}}])
    assert stale.outcome == "stale"
    log.reset()
    done, nxt = kernel.complete_and_continue("r", root.task_id, claim.attempt_id,
                                             [Output(fields={"k": 1})], worker="w")
    assert done.applied and nxt is not None and nxt.task_id == "c1.0.0"
    assert log.round_trips == 1
