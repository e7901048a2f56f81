"""Checks of the optional ``batched`` ability: ``claim_tasks`` and ``complete_tasks`` (many
claims or completions of one run in one atomic step, each item as if called alone in order)."""

from __future__ import annotations

import functools
from collections import Counter
from typing import Any, cast

from interlock.protocols import BatchedDagStore, HandoverDagStore
from interlock.records import CompletionItem, Transition
from interlock.states import NodeState, RunState, TaskState
from interlock.testing._races import THREADS, modes, run_concurrently
from interlock.testing._support import (
    Harness,
    Scenario,
    expect_ability,
    expect_eq,
    outputs_for,
    pipeline,
)


def _batched(h: Harness, clause: str) -> Any:
    store = h.store
    expect_ability(store, "batched", clause, "take the batched path")
    return store


def _item(task_id: str, attempt_id: str, count: int, children: tuple[int, ...] = (1,)
          ) -> CompletionItem:
    return CompletionItem(task_id, attempt_id, tuple(outputs_for(task_id, count)), children)


def check_batch_claim(h: Harness) -> None:
    """[batch.claim]"""
    c = "batch.claim"
    store = _batched(h, c)
    sc = Scenario(h, "batch-claim", [[], []])
    t0, t1, t2 = sc.start(0, 3, claim=False)
    (other,) = sc.start(1, 1, claim=False)
    now = h.clock.now()
    results = store.claim_tasks(sc.run_id, [(t0, "a"), (t1, "b"), (t0, "c"), ("n0.0.9", "d")],
                                "w", now + 60, now)
    expect_eq([o for o, _ in results], ["applied", "applied", "stale", "stale"], c,
              "outcomes of one batch (the same task twice, then an unknown task)")
    stored = sc.task(t0)
    expect_eq((stored.state, stored.attempt, stored.attempt_id, stored.worker,
               stored.lease_until), (TaskState.RUNNING, 1, "a", "w", now + 60), c,
              "task (state, attempt, attempt_id, worker, lease_until) after a batch claim")
    expect_eq([r[1] for r in results], [stored, sc.task(t1), stored, None], c,
              "tasks returned by a batch claim (as stored after each item)")
    before = sc.snapshot()
    repeat = store.claim_tasks(sc.run_id, [(t0, "a"), (t1, "b")], "w", now + 60, now)
    expect_eq([o for o, _ in repeat], ["duplicate", "duplicate"], c, "an exact repeat")
    sc.unchanged(before, c, "a repeated batch claim")
    sc.fail(t0, "a", retry_at=now + 50)
    results = store.claim_tasks(sc.run_id, [(t0, "e"), (t2, "f")], "w", now + 60, now)
    expect_eq([o for o, _ in results], ["stale", "applied"], c,
              "a batch with a task not due yet and a QUEUED task")
    expect_eq(store.claim_tasks(h.run_id("no-such-run"), [(t0, "x")], "w", None, now),
              [("stale", None)], c, "a batch claim in an unknown run")
    sc.cancel()
    expect_eq([o for o, _ in store.claim_tasks(sc.run_id, [(other, "g")], "w", None, now)],
              ["stale"], c, "a batch claim in a cancelled run")
    # Through the kernel.
    d = h.driver()
    run_id = h.run_id("batch-claim-kernel")
    d.kernel.start_run(pipeline({"slug": "a", "plugin": "work"},
                                {"slug": "b", "plugin": "work", "depends_on": ["a"]}),
                       run_id=run_id)
    d.kernel.claim_task(run_id, "a.0.0", attempt_id="a")
    d.kernel.on_task_complete(run_id, "a.0.0", "a", [{}, {}, {}])
    claims = d.kernel.claim_tasks(run_id, ["b.0.0", "b.0.1", "b.0.0"], worker="w")
    expect_eq([cl.task_id for cl in claims], ["b.0.0", "b.0.1"], c, "kernel.claim_tasks claims")
    expect_eq([t.state for t in store.list_tasks(run_id, node_index=1)],
              [TaskState.RUNNING, TaskState.RUNNING, TaskState.QUEUED], c,
              "task states after kernel.claim_tasks")


def check_batch_complete(h: Harness) -> None:
    """[batch.complete]"""
    c = "batch.complete"
    store = _batched(h, c)
    sc = Scenario(h, "batch-complete", [[], [0]])
    t0, t1, t2 = sc.start(0, 3)
    now = h.clock.now()
    results = store.complete_tasks(sc.run_id, [
        _item(t0, f"{t0}@1", 2), _item(t1, "not-the-attempt", 1), _item(t0, f"{t0}@1", 3),
        _item(t1, f"{t1}@1", 1)], now)
    expect_eq([(r.outcome, r.ready) for r in results],
              [("applied", ()), ("stale", ()), ("duplicate", ()), ("applied", ())], c,
              "a batch: completion, stale attempt, repeat of the first item, completion")
    expect_eq([(a.artifact_id, a.seq) for a in sc.artifacts(0)],
              [(f"{t0}/0", 1), (f"{t0}/1", 2), (f"{t1}/0", 3)], c,
              "artifacts (id, seq) of a batch: published once, in item order")
    expect_eq(sc.node(0).remaining_tasks, 1, c, "remaining_tasks after a batch")
    last = store.complete_tasks(sc.run_id, [_item(t2, f"{t2}@1", 0), _item(t2, f"{t2}@1", 0)],
                                now)
    expect_eq([(r.outcome, r.ready) for r in last], [("applied", (1,)), ("duplicate", ())], c,
              "a batch holding the node's last completion twice")
    before = sc.snapshot()
    again = store.complete_tasks(sc.run_id, [_item(t0, f"{t0}@1", 2), _item(t2, f"{t2}@1", 0)],
                                 now)
    expect_eq([r.outcome for r in again], ["duplicate", "duplicate"], c, "a repeated batch")
    sc.unchanged(before, c, "a repeated batch")
    expect_eq(store.complete_tasks(h.run_id("no-such-run"), [_item(t0, "x", 1)], now),
              [Transition("stale")], c, "a batch in an unknown run")
    # Through the kernel: the last completions of a node, together.
    d = h.driver()
    run_id = h.run_id("batch-complete-kernel")
    d.kernel.start_run(pipeline({"slug": "a", "plugin": "work"},
                                {"slug": "b", "plugin": "work", "depends_on": ["a"]}),
                       run_id=run_id)
    d.kernel.claim_task(run_id, "a.0.0", attempt_id="a")
    d.kernel.on_task_complete(run_id, "a.0.0", "a", [{}, {}, {}])
    for seq in range(3):
        d.kernel.claim_task(run_id, f"b.0.{seq}", attempt_id=f"b{seq}")
    done = d.kernel.on_tasks_complete(
        run_id, [(f"b.0.{seq}", f"b{seq}", [{"fields": {"k": seq}}]) for seq in range(3)])
    expect_eq([t.outcome for t in done], ["applied"] * 3, c, "kernel.on_tasks_complete")
    expect_eq([t.run_state for t in done], [None, None, RunState.COMPLETED], c,
              "run_state of the batch holding the run's last completion")
    expect_eq([f.state for f in d.finished], [RunState.COMPLETED], c, "on_run_finished calls")


def race_batch_claim(h: Harness) -> None:
    """[batch.claim] N threads claim overlapping batches; every task is won exactly once."""
    c = "batch.claim"
    store = _batched(h, c)
    for m, stores in enumerate(modes(h)):
        for r in range(6):
            sc = Scenario(h, f"race-batch-claim-{m}-{r}", [[]], store=store)
            tids = sc.start(0, 6, claim=False)
            now = h.clock.now()
            orders = [tids[i % 6:] + tids[:i % 6] for i in range(len(stores))]
            calls = [functools.partial(cast(BatchedDagStore, s).claim_tasks, sc.run_id,
                                       [(t, f"{t}#{i}") for t in orders[i]], "w", now + 60, now)
                     for i, s in enumerate(stores)]
            won = Counter(t for order, results in zip(orders, run_concurrently(calls),
                                                      strict=True)
                          for t, (outcome, _) in zip(order, results, strict=True)
                          if outcome == "applied")
            expect_eq(dict(won), {t: 1 for t in tids}, c,
                      "claims won per task by concurrent overlapping batches")


def race_batch_complete(h: Harness) -> None:
    """[batch.complete] threads complete halves of a node (and repeat them) concurrently."""
    c = "batch.complete"
    _batched(h, c)
    for m, stores in enumerate(modes(h)):
        for r in range(6):
            sc = Scenario(h, f"race-batch-complete-{m}-{r}", [[], [0]])
            tids = sc.start(0, THREADS)
            halves = [tids[k::2] for k in range(2)]
            calls = [functools.partial(
                cast(BatchedDagStore, s).complete_tasks, sc.run_id,
                [_item(t, f"{t}@1", 1) for t in halves[i % 2]], h.clock.now())
                for i, s in enumerate(stores)]
            results = [t for batch in run_concurrently(calls) for t in batch]
            applied = sum(1 for t in results if t.applied)
            readies = sum(1 for t in results if 1 in t.ready)
            expect_eq((applied, readies), (THREADS, 1), c,
                      "(completions applied, times the child was reported ready) when "
                      f"{len(stores)} threads complete the {THREADS} tasks in two halves")
            expect_eq((sc.node(0).state, sc.node(1).remaining_parents),
                      (NodeState.COMPLETED, 0), c, "(node state, child remaining_parents)")


def check_complete_prefetch(h: Harness) -> None:
    """[complete.prefetch]"""
    c = "complete.prefetch"
    store = h.store
    expect_ability(store, "prefetch", c, "take the prefetching path")
    # n0 -> n1, n0 -> n2, n1 -> n2 : completing n0's last task readies n1 only
    sc = Scenario(h, "prefetch", [[], [0], [0, 1]])
    t0, t1 = sc.start(0, 2)
    children, parents = (1, 2), [(0,), (0, 1)]
    first, facts = store.complete_task_prefetch(  # type: ignore[attr-defined]
        sc.run_id, t0, f"{t0}@1", outputs_for(t0, 2), children, parents, h.clock.now())
    expect_eq((first.outcome, first.ready, facts), ("applied", (), []), c,
              "a completion that readies nothing returns no facts")
    last, facts = store.complete_task_prefetch(  # type: ignore[attr-defined]
        sc.run_id, t1, f"{t1}@1", outputs_for(t1, 1), children, parents, h.clock.now())
    expect_eq((last.outcome, last.ready), ("applied", (1,)), c,
              "the completion that readies n1 (outcome, ready)")
    got = sorted(facts, key=lambda f: f.node.index)
    expect_eq([f.node for f in got], [sc.node(0), sc.node(1)], c,
              "facts cover the ready node and its parents, each once, as committed")
    expect_eq([list(f.artifacts) for f in got], [sc.artifacts(0), []], c,
              "facts carry the artifacts of COMPLETED nodes only, by seq")
    before = sc.snapshot()
    again, facts = store.complete_task_prefetch(  # type: ignore[attr-defined]
        sc.run_id, t1, f"{t1}@1", outputs_for(t1, 1), children, parents, h.clock.now())
    expect_eq((again.outcome, facts), ("duplicate", []), c, "an exact repeat")
    sc.unchanged(before, c, "a repeated complete_task_prefetch")


def check_launch_claim(h: Harness) -> None:
    """[launch.claim]"""
    c = "launch.claim"
    store = h.store
    expect_ability(store, "handover", c, "take the handing-over path")
    store = cast(HandoverDagStore, store)
    sc = Scenario(h, "handover", [[], [0]])
    tasks = sc.new_tasks(0, range(3))
    now = h.clock.now()
    t1 = tasks[1].task_id
    launched, (claimed, record) = store.launch_and_claim(
        sc.run_id, 0, 0, tasks, 3, now, (t1, "a", "w", now + 60))
    expect_eq((launched, claimed), ("applied", "applied"), c,
              "(launch, claim) outcomes on a WAITING node")
    stored = sc.task(t1)
    expect_eq((stored.state, stored.attempt, stored.attempt_id, stored.worker,
               stored.lease_until), (TaskState.RUNNING, 1, "a", "w", now + 60), c,
              "the claimed task (state, attempt, attempt_id, worker, lease_until)")
    expect_eq(record, stored, c, "the returned task is the task as stored")
    expect_eq([t.state for t in sc.tasks(0)], [TaskState.QUEUED, TaskState.RUNNING,
                                               TaskState.QUEUED], c,
              "the other tasks of the launch are written QUEUED")
    expect_eq(sc.node(0).state, NodeState.LAUNCHED, c, "the node after the launch")
    before = sc.snapshot()
    again = store.launch_and_claim(sc.run_id, 0, 0, tasks, 3, now, (t1, "b", "w", now + 60))
    expect_eq(again, ("duplicate", ("stale", None)), c,
              "a repeated launch: duplicate, and it claims nothing")
    sc.unchanged(before, c, "a repeated launch_and_claim")
    old = store.launch_and_claim(sc.run_id, 1, 7, sc.new_tasks(1, [0], generation=7), 1, now,
                                 ("n1.7.0", "c", "w", now + 60))
    expect_eq(old, ("stale", ("stale", None)), c, "a launch of another generation")
    expect_eq(sc.tasks(1), [], c, "tasks written by a stale launch_and_claim")


def check_artifacts_stream(h: Harness) -> None:
    """[artifacts.stream]"""
    c = "artifacts.stream"
    store = h.store
    expect_ability(store, "stream", c, "read artifacts one at a time")
    sc = Scenario(h, "stream", [[], [0]])
    t0, t1, t2 = sc.start(0, 3)
    sc.complete(t1, f"{t1}@1", outputs_for(t1, 3))
    sc.complete(t0, f"{t0}@1", outputs_for(t0, 2, note="é\u2603"))
    sc.complete(t2, f"{t2}@1", ())

    def stream(node: int, generation: int = 0, run_id: str = sc.run_id) -> list[Any]:
        return list(store.iter_artifacts(run_id, node, generation))  # type: ignore[attr-defined]

    expected = sc.artifacts(0)
    expect_eq(len(expected), 5, c, "artifacts published by the node (get_artifacts)")
    expect_eq(stream(0), expected, c, "iter_artifacts of a node, against get_artifacts")
    expect_eq(stream(1), [], c, "iter_artifacts of a node that published nothing")
    expect_eq(stream(0, 1), [], c, "iter_artifacts of a generation that published nothing")
    expect_eq(stream(0, 0, "no-such-run"), [], c, "iter_artifacts of a run that does not exist")


def check_artifacts_many(h: Harness) -> None:
    """[artifacts.many]"""
    c = "artifacts.many"
    store = h.store
    expect_ability(store, "read_many", c, "read several nodes' artifacts in one call")
    sc = Scenario(h, "many", [[], [0], [0]])
    t0, t1 = sc.start(0, 2)
    sc.complete(t1, f"{t1}@1", outputs_for(t1, 3))
    sc.complete(t0, f"{t0}@1", outputs_for(t0, 2, note="é\u2603"))

    def many(pairs: list[tuple[int, int]], run_id: str = sc.run_id) -> list[list[Any]]:
        read = store.get_artifacts_many(run_id, pairs)  # type: ignore[attr-defined]
        expect_eq(len(read), len(pairs), c, f"one sequence per pair asked ({pairs})")
        return [list(arts) for arts in read]

    published = sc.artifacts(0)
    expect_eq(len(published), 5, c, "artifacts published by the node (get_artifacts)")
    # in the order asked, not sorted; a pair asked twice read twice; nodes and generations
    # without artifacts, and a node the run does not have, read as []
    expect_eq(many([(1, 0), (0, 0), (0, 1), (0, 0), (9, 0)]),
              [[], published, [], published, []], c,
              "get_artifacts_many against get_artifacts, pair by pair, in the order asked")
    expect_eq(many([]), [], c, "get_artifacts_many of no pair")
    expect_eq(many([(0, 0), (1, 0)], "no-such-run"), [[], []], c,
              "get_artifacts_many in a run that does not exist")
