"""Sequential checks of the run- and node-level clauses (create, launch, settle, terminal,
retry). Each function takes a :class:`Harness` and raises AssertionError naming its clause."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import attrs

from interlock.errors import UsageError
from interlock.limits import Limits
from interlock.protocols import DagStore, ManyLaunchDagStore
from interlock.records import NodeLaunch, NodeRecord, TaskRef
from interlock.states import NodeState, RunState, TaskState
from interlock.testing._support import (
    Harness,
    Scenario,
    expect,
    expect_ability,
    expect_eq,
    outputs_for,
    pipeline,
)

ONE = pipeline({"slug": "a", "plugin": "work"})


def check_run_create(h: Harness) -> None:
    """[run.create]"""
    c = "run.create"
    sc = Scenario(h, "create", [[], [0]])
    store, run = sc.store, sc.run_record
    expect_eq(store.get_run(sc.run_id), run, c, "get_run after create_run")
    expect_eq(store.get_nodes(sc.run_id), sc.node_records, c, "get_nodes after create_run")
    before = sc.snapshot()
    expect_eq(store.create_run(run, sc.node_records), (run, False), c,
              "an exact repeat of create_run")
    other = attrs.evolve(run, input={"changed": True}, updated_at=run.updated_at + 1)
    expect_eq(store.create_run(other, [attrs.evolve(sc.node_records[0], remaining_parents=9)]),
              (run, False), c, "create_run of an existing run id must return the FIRST run")
    sc.unchanged(before, c, "a repeated create_run")
    expect(store.get_run(h.run_id("never-created")) is None, c,
           "get_run of an unknown run id must return None")
    # Through the kernel: a repeated start_run does not launch the roots twice.
    d = h.driver()
    run_id = h.run_id("create-kernel")
    first = d.kernel.start_run(ONE, {"x": 1}, run_id=run_id)
    again = d.kernel.start_run(ONE, {"x": 1}, run_id=run_id)
    expect_eq(again.created_at, first.created_at, c, "created_at after a repeated start_run")
    expect_eq([t.task_id for t in store.list_tasks(run_id)], ["a.0.0"], c,
              "tasks after start_run twice")


def check_launch_atomic(h: Harness) -> None:
    """[launch.atomic]"""
    c = "launch.atomic"
    sc = Scenario(h, "launch", [[], [0], []])
    tasks = sc.new_tasks(0, [0, 1])
    before = sc.snapshot()
    expect_eq(sc.launch(0, tasks, generation=1), "stale", c, "launch of a wrong generation")
    sc.unchanged(before, c, "a launch of a wrong generation")
    expect_eq(sc.launch(0, tasks), "applied", c, "launch of a WAITING node")
    node = sc.node(0)
    expect_eq((node.state, node.total_tasks, node.remaining_tasks), (NodeState.LAUNCHED, 2, 2),
              c, "node (state, total_tasks, remaining_tasks) after launch")
    expect_eq(sc.tasks(0), tasks, c, "tasks after launch (stored exactly as given)")
    before = sc.snapshot()
    expect_eq(sc.launch(0, tasks), "duplicate", c, "an exact repeat of launch_node")
    sc.unchanged(before, c, "a repeated launch_node")
    # A node that is not WAITING: nothing is written.
    expect_eq(sc.settle(2, NodeState.FILTERED).outcome, "applied", "settle.once",
              "settle of a WAITING node")
    before = sc.snapshot()
    expect_eq(sc.launch(2, sc.new_tasks(2, [0])), "stale", c, "launch of a FILTERED node")
    sc.unchanged(before, c, "a launch of a settled node")
    expect_eq(sc.tasks(2), [], c, "tasks of a node whose launch was refused")
    # A run that is not RUNNING: nothing is written.
    sc2 = Scenario(h, "launch-cancelled", [[]])
    sc2.cancel()
    before = sc2.snapshot()
    expect_eq(sc2.launch(0, sc2.new_tasks(0, [0])), "stale", c, "launch in a cancelled run")
    sc2.unchanged(before, c, "a launch in a cancelled run")
    # Through the kernel: tasks are committed before the dispatcher sees them.
    _dispatch_after_commit(h)


def check_launch_many(h: Harness) -> None:
    """[launch.many]"""
    c = "launch.many"
    expect_ability(h.store, "launch_many", c, "launch several nodes in one call")
    store = cast(ManyLaunchDagStore, h.store)
    sc = Scenario(h, "many", [[], [], [], []])
    now = h.clock.now()
    t0, t1 = sc.new_tasks(0, [0, 1]), sc.new_tasks(1, [0])
    first = [NodeLaunch(0, 0, tuple(t0), 2), NodeLaunch(1, 0, tuple(t1), 1)]
    expect_eq(store.launch_nodes(sc.run_id, first, now), ["applied", "applied"], c,
              "launch_nodes of two WAITING nodes")
    expect_eq([(n.state, n.total_tasks, n.remaining_tasks) for n in (sc.node(0), sc.node(1))],
              [(NodeState.LAUNCHED, 2, 2), (NodeState.LAUNCHED, 1, 1)], c,
              "nodes (state, total_tasks, remaining_tasks) after launch_nodes")
    expect_eq(sc.tasks(0) + sc.tasks(1), t0 + t1, c, "tasks after launch_nodes (as given)")
    before = sc.snapshot()
    expect_eq(store.launch_nodes(sc.run_id, first, now), ["duplicate", "duplicate"], c,
              "an exact repeat of launch_nodes")
    sc.unchanged(before, c, "a repeated launch_nodes")
    expect_eq(store.launch_nodes(sc.run_id, [], now), [], c, "launch_nodes of no launches")
    # in order, each as launch_node alone: a settled node, a wrong generation, a new launch
    # and the same launch again within the call
    expect_eq(sc.settle(2, NodeState.FILTERED).outcome, "applied", "settle.once",
              "settle of a WAITING node")
    t3 = tuple(sc.new_tasks(3, [0]))
    mixed = [NodeLaunch(2, 0, tuple(sc.new_tasks(2, [0])), 1), NodeLaunch(3, 1, t3, 1),
             NodeLaunch(3, 0, t3, 1), NodeLaunch(3, 0, t3, 1)]
    expect_eq(store.launch_nodes(sc.run_id, mixed, now),
              ["stale", "stale", "applied", "duplicate"], c,
              "launch_nodes of (a FILTERED node, a wrong generation, a WAITING node, the same "
              "node again)")
    expect_eq((sc.tasks(2), sc.tasks(3), sc.node(3).state), ([], list(t3), NodeState.LAUNCHED),
              c, "(tasks of the refused node, tasks and state of the launched one)")
    sc2 = Scenario(h, "many-cancelled", [[], []])
    sc2.cancel()
    before = sc2.snapshot()
    refused = [NodeLaunch(k, 0, tuple(sc2.new_tasks(k, [0])), 1) for k in (0, 1)]
    expect_eq(store.launch_nodes(sc2.run_id, refused, now), ["stale", "stale"], c,
              "launch_nodes in a cancelled run")
    sc2.unchanged(before, c, "a launch_nodes in a cancelled run")
    # Through the kernel: a completion readying two nodes launches both, dispatched after
    _launch_many_kernel(h)


def _committed(store: DagStore, clause: str) -> Callable[[Sequence[TaskRef]], None]:
    """A dispatch check: every dispatched task is stored QUEUED (committed before dispatch)."""

    def committed(refs: Sequence[TaskRef]) -> None:
        for ref in refs:
            task = store.get_task(ref.run_id, ref.task_id)
            expect(task is not None and task.state is TaskState.QUEUED, clause,
                   f"task {ref.task_id} was dispatched before it was committed (got {task!r})")

    return committed


def _launch_many_kernel(h: Harness) -> None:
    c = "launch.many"
    store = h.store
    run_id = h.run_id("many-kernel")

    d = h.driver(dispatch_check=_committed(store, c))
    d.kernel.start_run(pipeline({"slug": "a", "plugin": "work"},
                                {"slug": "b", "plugin": "work", "depends_on": ["a"]},
                                {"slug": "c", "plugin": "work", "depends_on": ["a"]},
                                {"slug": "d", "plugin": "work", "depends_on": ["b", "c"],
                                 "fan_mode": "aggregate"}), {}, run_id=run_id)
    d.work(run_id, c, lambda _: [{"fields": {"k": 1}}, {"fields": {"k": 2}}])
    run = h.store.get_run(run_id)
    expect_eq(run.state if run is not None else None, RunState.COMPLETED, c,
              "a diamond run whose first completion readies two nodes")
    expect_eq(sorted((t.node_index, t.state) for t in h.store.list_tasks(run_id)),
              [(0, TaskState.COMPLETED)] + [(1, TaskState.COMPLETED)] * 2
              + [(2, TaskState.COMPLETED)] * 2 + [(3, TaskState.COMPLETED)], c,
              "(node, state) of every task: b and c ran once per artifact of a, d once")


def _dispatch_after_commit(h: Harness) -> None:
    c = "launch.atomic"
    store = h.store
    run_id = h.run_id("launch-kernel")

    d = h.driver(dispatch_check=_committed(store, c))
    d.kernel.start_run(pipeline({"slug": "a", "plugin": "work"},
                                {"slug": "b", "plugin": "work", "depends_on": ["a"]}),
                       run_id=run_id)
    claim = d.kernel.claim_task(run_id, "a.0.0", attempt_id="a@1")
    expect(claim is not None, "claim.cas", "claim of a fresh root task returned None")
    d.kernel.on_task_complete(run_id, "a.0.0", "a@1", [{"fields": {"k": k}} for k in range(3)])
    expect_eq(sorted(t.task_id for t in store.list_tasks(run_id, node_index=1)),
              ["b.0.0", "b.0.1", "b.0.2"], c, "tasks of a node launched by the kernel")
    node = store.get_nodes(run_id, [1])[0]
    expect_eq((node.state, node.total_tasks), (NodeState.LAUNCHED, 3), c,
              "a node launched by the kernel")


def check_launch_batches(h: Harness) -> None:
    """[launch.batches]"""
    c = "launch.batches"
    sc = Scenario(h, "batches", [[], [0]])
    first, second = sc.new_tasks(0, [0, 1]), sc.new_tasks(0, [2, 3])
    expect_eq(sc.launch(0, first, total=4), "applied", c, "first batch of 4 tasks")
    node = sc.node(0)
    expect_eq((node.total_tasks, node.remaining_tasks), (4, 4), c,
              "(total_tasks, remaining_tasks) after the first batch")
    for task in first:
        sc.claim(task.task_id, "x")
        t = sc.complete(task.task_id, "x", outputs_for(task.task_id, 1))
        expect(t.applied and t.ready == () and t.run_state is None, c,
               f"completing {task.task_id} before the last batch was written returned {t!r}")
    node = sc.node(0)
    expect_eq((node.state, node.remaining_tasks), (NodeState.LAUNCHED, 2), c,
              "the barrier fired before total_tasks tasks completed")
    changed = attrs.evolve(first[1], plan={"inputs": {}, "bindings": {"changed": True}})
    expect_eq(sc.launch(0, [changed, *second], total=4), "duplicate", c, "a later batch")
    expect_eq(sc.task(first[1].task_id).state, TaskState.COMPLETED, c,
              "a stored task re-sent in a later batch must be kept, not replaced")
    expect_eq(sc.task(first[1].task_id).plan, first[1].plan, c, "plan of a re-sent task")
    expect_eq([t.task_id for t in sc.tasks(0, [TaskState.QUEUED])], ["n0.0.2", "n0.0.3"], c,
              "QUEUED tasks after the second batch")
    expect_eq((sc.node(0).total_tasks, sc.node(0).remaining_tasks), (4, 2), c,
              "counters after a later batch (a batch must not reset them)")
    sc.claim("n0.0.2", "x")
    expect_eq(sc.complete("n0.0.2", "x").ready, (), c, "ready after 3 of 4 completions")
    sc.claim("n0.0.3", "x")
    last = sc.complete("n0.0.3", "x")
    expect_eq(last.ready, (1,), c, "ready after the last of 4 completions")
    before = sc.snapshot()
    expect_eq(sc.launch(0, second, total=4), "stale", c, "a batch for a COMPLETED node")
    sc.unchanged(before, c, "a batch for a COMPLETED node")
    # Through the kernel: a launch of 5 tasks in batches of 2.
    d = h.driver(limits=Limits(launch_batch_size=2))
    run_id = h.run_id("batches-kernel")
    d.kernel.start_run(pipeline({"slug": "a", "plugin": "work"},
                                {"slug": "b", "plugin": "work", "depends_on": ["a"]}),
                       run_id=run_id)
    d.kernel.claim_task(run_id, "a.0.0", attempt_id="a@1")
    d.dispatcher.take()
    d.kernel.on_task_complete(run_id, "a.0.0", "a@1", [{"fields": {"k": k}} for k in range(5)])
    sizes = [len(b) for b in d.dispatcher.batches]
    expect(sizes == [2, 2, 1], c, f"a launch in batches of 2 dispatched batches of {sizes}")
    expect_eq(len(h.store.list_tasks(run_id, node_index=1)), 5, c, "tasks of a batched launch")


def check_settle_once(h: Harness) -> None:
    """[settle.once]"""
    c = "settle.once"
    sc = Scenario(h, "settle", [[], [], [0, 1], [0]], policy="continue")
    t = sc.settle(0, NodeState.FILTERED, reason="nothing")
    expect_eq((t.outcome, t.ready, t.run_state), ("applied", (3,), None), c,
              "settle of root n0 (children n2 with 2 parents, n3 with 1)")
    expect_eq((sc.node(0).state, sc.node(0).reason), (NodeState.FILTERED, "nothing"), c,
              "node after settle_node")
    expect_eq([sc.node(i).remaining_parents for i in (2, 3)], [1, 0], c,
              "children's remaining_parents after settle_node")
    expect_eq(sc.run().unsettled, 3, c, "run.unsettled after one settle")
    before = sc.snapshot()
    t = sc.settle(0, NodeState.FILTERED, reason="nothing")
    expect_eq((t.outcome, t.ready, t.run_state), ("duplicate", (), None), c,
              "an exact repeat of settle_node")
    expect_eq(sc.settle(0, NodeState.SKIPPED).outcome, "stale", c,
              "settle of a node already settled in another state")
    expect_eq(sc.settle(1, NodeState.FILTERED, generation=1).outcome, "stale", c,
              "settle of a wrong generation")
    sc.unchanged(before, c, "a repeated or stale settle_node")
    expect_eq(sc.settle(1, NodeState.SKIPPED).ready, (2,), c, "ready after the second parent")
    t = sc.settle(2, NodeState.FAILED)
    expect_eq((t.outcome, t.run_state, sc.run().failed_nodes), ("applied", None, 1), c,
              "settle FAILED without fail_run (outcome, run_state, failed_nodes)")
    t = sc.settle(3, NodeState.FILTERED)
    expect_eq((t.run_state, sc.run().state), (RunState.FAILED, RunState.FAILED), c,
              "the last settle of a run with a failed node (reported, stored)")
    t = sc.settle(3, NodeState.FILTERED)
    expect(t.outcome != "applied" and t.run_state is None, c,
           f"a repeat of the run's last settle returned {t!r}")
    single = Scenario(h, "settle-last", [[]])
    t = single.settle(0, NodeState.FILTERED)
    expect_eq(t.run_state, RunState.COMPLETED, c, "run_state of the last settle (no failure)")
    fast = Scenario(h, "settle-fail-fast", [[], []])
    t = fast.settle(0, NodeState.FAILED, fail_run=RunState.FAILED)
    expect_eq((t.run_state, fast.run().state, fast.node(1).state),
              (RunState.FAILED, RunState.FAILED, NodeState.CANCELLED), c,
              "settle FAILED with fail_run (run_state, run state, other node)")


def check_terminal_once(h: Harness) -> None:
    """[terminal.once]"""
    c = "terminal.once"
    sc = Scenario(h, "terminal", [[], []])
    (tid,) = sc.start(0, 1)
    t = sc.cancel()
    expect_eq((t.outcome, t.run_state), ("applied", RunState.CANCELLED), c, "cancel_run")
    expect_eq((sc.run().state, sc.run().reason), (RunState.CANCELLED, "stop"), c,
              "run (state, reason) after cancel_run")
    before = sc.snapshot()
    t = sc.cancel()
    expect_eq((t.outcome, t.run_state), ("duplicate", None), c, "a repeated cancel_run")
    expect_eq(sc.complete(tid, f"{tid}@1", outputs_for(tid, 1)).outcome, "stale", c,
              "completion in a cancelled run")
    expect_eq(sc.fail(tid, f"{tid}@1").outcome, "stale", c, "failure in a cancelled run")
    expect_eq(sc.settle(1, NodeState.FILTERED).outcome, "stale", c, "settle in a cancelled run")
    expect_eq(sc.launch(1, sc.new_tasks(1, [0])), "stale", c, "launch in a cancelled run")
    sc.unchanged(before, c, "calls on a cancelled run")
    done = Scenario(h, "terminal-done", [[]])
    (tid,) = done.start(0, 1)
    t = done.complete(tid, f"{tid}@1")
    expect_eq(t.run_state, RunState.COMPLETED, c, "run_state of the final completion")
    before = done.snapshot()
    t = done.cancel()
    expect(t.outcome == "stale" and t.run_state is None, c,
           f"cancel_run of a COMPLETED run returned {t!r}")
    done.unchanged(before, c, "cancel_run of a COMPLETED run")
    # Through the kernel: one callback per terminal transition.
    d = h.driver()
    run_id = h.run_id("terminal-kernel")
    d.kernel.start_run(ONE, run_id=run_id)
    d.kernel.claim_task(run_id, "a.0.0", attempt_id="a@1")
    d.kernel.on_task_complete(run_id, "a.0.0", "a@1")
    d.kernel.cancel_run(run_id)
    d.kernel.on_task_complete(run_id, "a.0.0", "a@1")
    expect_eq([f.state for f in d.finished], [RunState.COMPLETED], c,
              "on_run_finished calls after completion, cancel and a repeated completion")


def check_terminal_cancels_unfinished(h: Harness) -> None:
    """[terminal.cancels-unfinished]"""
    c = "terminal.cancels-unfinished"
    for how in ("cancel", "fail-fast", "settle-fail-fast"):
        sc = Scenario(h, f"unfinished-{how}", [[], [], [0], [], []])
        done, running, waiting = sc.start(0, 3)
        sc.complete(done, f"{done}@1", outputs_for(done, 2))
        sc.store.suspend_task(sc.run_id, waiting, f"{waiting}@1", "human", h.clock.now())
        (queued,) = sc.start(1, 1, claim=False)
        sc.settle(3, NodeState.FILTERED)
        if how == "cancel":
            t = sc.cancel()
            expected = RunState.CANCELLED
        elif how == "fail-fast":
            (doomed,) = sc.start(4, 1)
            t = sc.fail(doomed, f"{doomed}@1", final=TaskState.CRASHED,
                        fail_run=RunState.CRASHED)
            expected = RunState.CRASHED
        else:
            t = sc.settle(4, NodeState.FAILED, fail_run=RunState.FAILED)
            expected = RunState.FAILED
        expect_eq(t.run_state, expected, c, f"run_state of the terminal transition ({how})")
        states = {task.task_id: task.state for task in sc.tasks()}
        for tid in (running, waiting, queued):
            expect_eq(states[tid], TaskState.CANCELLED, c, f"state of {tid} after {how}")
        expect_eq(states[done], TaskState.COMPLETED, c, f"a completed task after {how}")
        nodes = [n.state for n in sc.store.get_nodes(sc.run_id)]
        expect_eq(nodes[:4], [NodeState.CANCELLED, NodeState.CANCELLED, NodeState.CANCELLED,
                              NodeState.FILTERED], c, f"node states after {how}")
        expect_eq(len(sc.artifacts(0)), 2, c, f"artifacts of a completed task after {how}")
        expect_eq(sc.run().state, expected, c, f"run state after {how}")


def check_retry_fenced(h: Harness) -> None:
    """[retry.fenced]"""
    c = "retry.fenced"
    sc = Scenario(h, "retry", [[], [0]])
    (tid,) = sc.start(0, 1)
    sc.fail(tid, f"{tid}@1", fail_run=RunState.FAILED)
    fresh = [NodeRecord(0, 1, NodeState.WAITING, 0), NodeRecord(1, 1, NodeState.WAITING, 1)]
    now = h.clock.now()
    expect_eq(sc.store.reopen_run(sc.run_id, 0, fresh, now), "applied", c, "reopen_run")
    run = sc.run()
    expect_eq((run.state, run.retries, run.unsettled, run.failed_nodes),
              (RunState.RUNNING, 1, 2, 0), c,
              "run (state, retries, unsettled, failed_nodes) after reopen_run")
    expect_eq(sc.store.get_nodes(sc.run_id), fresh, c, "nodes after reopen_run")
    before = sc.snapshot()
    expect(sc.store.reopen_run(sc.run_id, 0, fresh, now) != "applied", c,
           "a second reopen_run with the same expected_retries applied")
    expect_eq(sc.store.reopen_run(sc.run_id, 1, fresh, now), "stale", c,
              "reopen_run of a RUNNING run")
    expect_eq(sc.launch(0, sc.new_tasks(0, [0])), "stale", c,
              "launch of the old generation after reopen_run")
    sc.unchanged(before, c, "refused reopen_run / old-generation calls")
    expect_eq(sc.launch(0, sc.new_tasks(0, [0], generation=1), generation=1), "applied", c,
              "launch of the new generation")
    # Through the kernel: completed upstream work is kept.
    d = h.driver()
    run_id = h.run_id("retry-kernel")
    d.kernel.start_run(pipeline({"slug": "a", "plugin": "work"},
                                {"slug": "b", "plugin": "work", "depends_on": ["a"]}),
                       run_id=run_id)
    d.kernel.claim_task(run_id, "a.0.0", attempt_id="a@1")
    d.kernel.on_task_complete(run_id, "a.0.0", "a@1", [{"fields": {"k": 1}}])
    d.kernel.claim_task(run_id, "b.0.0", attempt_id="b@1")
    d.kernel.on_task_failed(run_id, "b.0.0", "b@1", "boom", retryable=False)
    run = d.kernel.retry_run(run_id)
    expect_eq(run.state, RunState.RUNNING, c, "run state after retry_run")
    nodes = h.store.get_nodes(run_id)
    expect_eq([(n.state, n.generation) for n in nodes],
              [(NodeState.COMPLETED, 0), (NodeState.LAUNCHED, 1)], c,
              "(state, generation) of nodes after retry_run")
    try:
        d.kernel.retry_run(run_id)
    except UsageError:
        pass
    else:
        raise AssertionError(f"[{c}] retry_run of a RUNNING run did not raise UsageError")
    d.kernel.claim_task(run_id, "b.1.0", attempt_id="b@2")
    late = d.kernel.on_task_complete(run_id, "b.0.0", "b@1")
    expect_eq(late.outcome, "stale", c, "a late completion of the old generation")
    d.kernel.on_task_complete(run_id, "b.1.0", "b@2")
    expect_eq([f.state for f in d.finished], [RunState.FAILED, RunState.COMPLETED], c,
              "on_run_finished calls (one per terminal transition)")
    final = h.store.get_run(run_id)
    expect_eq(None if final is None else final.state, RunState.COMPLETED, c,
              "run state after the new generation completed")
