"""Conformance check of the ``launch_ahead`` ability: a launch sent before the previous
one's outcome is read applies exactly as ``launch_node`` would, in the order begun."""

from __future__ import annotations

from typing import cast

from interlock.limits import Limits
from interlock.protocols import LaunchAheadDagStore
from interlock.states import NodeState, RunState, TaskState
from interlock.testing._checks_runs import _committed
from interlock.testing._support import (
    Harness,
    Scenario,
    expect_ability,
    expect_eq,
    pipeline,
)

__all__ = ["check_launch_ahead"]


def check_launch_ahead(h: Harness) -> None:
    """[launch.ahead]"""
    c = "launch.ahead"
    expect_ability(h.store, "launch_ahead", c, "send launches ahead of their outcome")
    store = cast(LaunchAheadDagStore, h.store)
    sc = Scenario(h, "ahead", [[], []])
    now = h.clock.now()
    tasks = sc.new_tasks(0, range(6))
    expect_eq(sc.launch(0, tasks[:2], 6), "applied", "launch.atomic", "the first batch")
    # two begun before either outcome is read: the later batches of a launched node
    second = store.launch_node_ahead(sc.run_id, 0, 0, tasks[2:4], 6, now)
    third = store.launch_node_ahead(sc.run_id, 0, 0, tasks[4:], 6, now)
    expect_eq((second(), third()), ("duplicate", "duplicate"), c,
              "outcomes of two later batches sent ahead, read in order")
    expect_eq(sc.tasks(0), tasks, c, "tasks after the batches sent ahead (as given, in order)")
    node = sc.node(0)
    expect_eq((node.state, node.total_tasks, node.remaining_tasks),
              (NodeState.LAUNCHED, 6, 6), c, "node (state, total_tasks, remaining_tasks)")
    other = sc.new_tasks(1, [0])
    expect_eq(store.launch_node_ahead(sc.run_id, 1, 0, other, 1, now)(), "applied", c,
              "a launch of a WAITING node sent ahead")
    before = sc.snapshot()
    expect_eq(store.launch_node_ahead(sc.run_id, 1, 0, other, 1, now)(), "duplicate", c,
              "the same launch sent ahead again")
    sc.unchanged(before, c, "a repeated launch sent ahead")
    cancelled = Scenario(h, "ahead-cancelled", [[]])
    cancelled.cancel()
    before = cancelled.snapshot()
    expect_eq(store.launch_node_ahead(cancelled.run_id, 0, 0, cancelled.new_tasks(0, [0]), 1,
                                      now)(), "stale", c, "a launch sent ahead in a cancelled run")
    cancelled.unchanged(before, c, "a launch sent ahead in a cancelled run")
    _through_the_kernel(h)


def _through_the_kernel(h: Harness) -> None:
    """A fan-out launched in ramped batches (2, 4, 4 ...): every batch is committed before it
    is dispatched, and the run completes with each task once."""
    c = "launch.ahead"
    run_id = h.run_id("ahead-kernel")
    d = h.driver(limits=Limits(launch_first_batch=2, launch_batch_size=4),
                 dispatch_check=_committed(h.store, c))
    d.kernel.start_run(pipeline({"slug": "a", "plugin": "work"},
                                {"slug": "b", "plugin": "work", "depends_on": ["a"]},
                                {"slug": "c", "plugin": "work", "depends_on": ["b"],
                                 "fan_mode": "aggregate"}), {}, run_id=run_id)
    d.work(run_id, c, lambda task_id: [
        {"fields": {"k": k}} for k in range(13 if task_id.startswith("a.") else 1)])
    run = h.store.get_run(run_id)
    expect_eq(run.state if run is not None else None, RunState.COMPLETED, c,
              "a 1 -> 13 -> 1 run launched in batches of 2, 4, 4, 3")
    expect_eq(sorted((t.task_id, t.state) for t in h.store.list_tasks(run_id, node_index=1)),
              sorted((f"b.0.{k}", TaskState.COMPLETED) for k in range(13)), c,
              "the fan-out's tasks: each written once and completed")
