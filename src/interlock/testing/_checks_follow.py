"""Checks of the optional ``follow`` ability: ``complete_and_follow`` (a completion and the
launch + claim of the node it released, planned by a callback, in one atomic step)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import attrs

from interlock.protocols import FollowingDagStore
from interlock.records import Artifact, FollowUp, NodeFacts, NodeRecord
from interlock.states import NodeState, TaskState
from interlock.testing._support import (
    Harness,
    Scenario,
    expect,
    expect_ability,
    expect_eq,
    outputs_for,
)

__all__ = ["check_complete_follow"]


class _Boom(Exception):
    """Raised by a follow callback: the whole call must leave nothing behind."""


def _store(h: Harness, clause: str) -> FollowingDagStore:
    expect_ability(h.store, "follow", clause, "take the following path")
    return cast(FollowingDagStore, h.store)


def check_complete_follow(h: Harness) -> None:
    """[complete.follow]"""
    c = "complete.follow"
    store = _store(h, c)
    sc = Scenario(h, "follow", [[], [0]])
    (t0,) = sc.start(0, 1)
    now = h.clock.now()
    seen: list[Sequence[NodeFacts]] = []
    (child,) = sc.new_tasks(1, [0])

    def follow(facts: Sequence[NodeFacts]) -> FollowUp:
        seen.append(list(facts))
        return FollowUp(1, 0, (child,), (child.task_id, "a", "w", now + 60))

    def boom(facts: Sequence[NodeFacts]) -> FollowUp:
        raise _Boom

    readied = attrs.evolve(sc.node(1), remaining_parents=0)
    before = sc.snapshot()
    try:
        store.complete_and_follow(sc.run_id, t0, f"{t0}@1", outputs_for(t0, 2), (1,), [(0,)],
                                  now, boom)
        expect(False, c, "a follow callback that raised did not propagate")
    except _Boom:
        pass
    sc.unchanged(before, c, "a complete_and_follow whose callback raised")
    done = store.complete_and_follow(sc.run_id, t0, f"{t0}@1", outputs_for(t0, 2), (1,),
                                     [(0,)], now, follow)
    expect_eq((done.transition.outcome, done.transition.ready), ("applied", (1,)), c,
              "(outcome, ready) of the completion that releases n1")
    expect_eq(len(seen), 1, c, "times the follow callback was called (n0 had one task and is "
              "n1's only parent: the facts must be offered)")
    expect_eq([(f.node, list(f.artifacts)) for f in seen[0]],
              [(readied, []), (sc.node(0), sc.artifacts(0))], c,
              "the facts: n1 as readied (WAITING), then n0 as completed with its artifacts")
    stored = sc.task(child.task_id)
    expect_eq((stored.state, stored.attempt, stored.attempt_id, stored.worker),
              (TaskState.RUNNING, 1, "a", "w"), c, "the follow-up's claimed task")
    expect_eq((done.claimed, sc.node(1).state), (stored, NodeState.LAUNCHED), c,
              "(returned claimed task, n1 state) after the follow-up")
    before = sc.snapshot()
    again = store.complete_and_follow(sc.run_id, t0, f"{t0}@1", outputs_for(t0, 2), (1,),
                                      [(0,)], now, follow)
    expect_eq((again.transition.outcome, again.follow_up, len(seen)), ("duplicate", None, 1),
              c, "an exact repeat: duplicate, no follow-up, callback not called")
    sc.unchanged(before, c, "a repeated complete_and_follow")
    _check_declined(h, store, c)
    _check_interleaved(h, store, c)


def _check_declined(h: Harness, store: FollowingDagStore, c: str) -> None:
    """A callback returning None: exactly complete_task, the node left for the caller."""
    sc = Scenario(h, "follow-none", [[], [0]])
    (t0,) = sc.start(0, 1)
    done = store.complete_and_follow(sc.run_id, t0, f"{t0}@1", outputs_for(t0, 1), (1,),
                                     [(0,)], h.clock.now(), lambda facts: None)
    expect_eq((done.transition.outcome, done.transition.ready, done.follow_up, done.claimed),
              ("applied", (1,), None, None), c, "a declined follow-up")
    expect_eq((sc.node(1).state, sc.tasks(1)), (NodeState.WAITING, []), c,
              "n1 after a declined follow-up (left for the caller to plan)")


def _check_interleaved(h: Harness, store: FollowingDagStore, c: str) -> None:
    """Another task of the run publishes between the claim and the completion: whatever the
    callback was shown (a store may call it early, on facts it predicts), an applied follow-up
    was planned from the facts as committed — here with the artifacts' seqs after the other
    task's."""
    sc = Scenario(h, "follow-interleaved", [[], [0], []])
    (t0,) = sc.start(0, 1)
    (t2,) = sc.start(2, 1)
    expect_eq(sc.complete(t2, f"{t2}@1", outputs_for(t2, 2)).outcome, "applied",
              "complete.once", "completion of the other root's task")
    (child,) = sc.new_tasks(1, [0])
    seen: list[list[tuple[NodeRecord, list[Artifact]]]] = []

    def follow(facts: Sequence[NodeFacts]) -> FollowUp:
        seen.append([(f.node, list(f.artifacts)) for f in facts])
        return FollowUp(1, 0, (child,))

    done = store.complete_and_follow(sc.run_id, t0, f"{t0}@1", outputs_for(t0, 1), (1,),
                                     [(0,)], h.clock.now(), follow)
    expect_eq((done.transition.outcome, done.transition.ready), ("applied", (1,)), c,
              "(outcome, ready) of the completion after another task published")
    committed = [(attrs.evolve(sc.node(1), state=NodeState.WAITING, total_tasks=0,
                               remaining_tasks=0), []), (sc.node(0), sc.artifacts(0))]
    expect([a.seq for a in sc.artifacts(0)] == [3], c,
           f"seq of the artifact published after the other task's two: "
           f"{[a.seq for a in sc.artifacts(0)]}")
    if done.follow_up is not None:
        expect_eq(seen[-1] if seen else None, committed, c,
                  "the facts the applied follow-up was planned from (as committed: a store "
                  "that predicts facts must apply a follow-up only where they held)")
        expect_eq(sc.node(1).state, NodeState.LAUNCHED, c, "n1 after an applied follow-up")
    else:
        expect_eq([(f.node, list(f.artifacts)) for f in done.facts],
                  [] if not done.facts else committed, c,
                  "the facts returned for the caller's planning (as committed)")
