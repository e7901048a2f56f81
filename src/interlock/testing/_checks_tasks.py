"""Sequential checks of the task-level clauses (claim, lease, complete, fail, wait) and of the
read side (ordering, origins). Each function raises AssertionError naming its clause."""

from __future__ import annotations

from interlock.records import NewArtifact
from interlock.states import NodeState, RunState, TaskState
from interlock.testing._support import (
    Harness,
    Scenario,
    expect,
    expect_eq,
    outputs_for,
    pipeline,
)


def check_claim_cas(h: Harness) -> None:
    """[claim.cas]"""
    c = "claim.cas"
    sc = Scenario(h, "claim", [[], []])
    (tid,) = sc.start(0, 1, claim=False)
    now = h.clock.now()
    outcome, task = sc.claim(tid, "first", lease_until=now + 30)
    expect_eq(outcome, "applied", c, "claim of a QUEUED task")
    stored = sc.task(tid)
    expect_eq(task, stored, c, "the task claim_task returns vs the task stored")
    expect_eq((stored.state, stored.attempt, stored.attempt_id, stored.worker,
               stored.lease_until), (TaskState.RUNNING, 1, "first", "worker", now + 30), c,
              "task (state, attempt, attempt_id, worker, lease_until) after a claim")
    expect_eq(sc.claim(tid, "first", lease_until=now + 30), ("duplicate", stored), c,
              "an exact repeat of a won claim")
    outcome, task = sc.claim(tid, "second")
    expect_eq((outcome, task), ("stale", stored), c, "a claim of a RUNNING task (other attempt)")
    expect_eq(sc.store.claim_task(sc.run_id, "n0.0.99", "x", "w", None, now), ("stale", None), c,
              "a claim of an unknown task")
    # Not before not_before: a retried task is due at retry_at.
    sc.fail(tid, "first", retry_at=now + 50)
    expect_eq(sc.claim(tid, "early")[0], "stale", c, "a claim before the task's not_before")
    h.clock.advance(50)
    outcome, task = sc.claim(tid, "due")
    expect(outcome == "applied" and task is not None and task.attempt == 2, c,
           f"a claim at not_before returned ({outcome!r}, {task!r})")
    (other,) = sc.start(1, 1, claim=False)
    sc.cancel()
    expect_eq(sc.claim(other, "late")[0], "stale", c, "a claim in a cancelled run")
    # Through the kernel: the loser of two deliveries gets None.
    d = h.driver()
    run_id = h.run_id("claim-kernel")
    d.kernel.start_run(pipeline({"slug": "a", "plugin": "work"}), run_id=run_id)
    won = d.kernel.claim_task(run_id, "a.0.0", worker="w1", attempt_id="one")
    expect(won is not None and won.attempt_id == "one", c, f"first kernel claim gave {won!r}")
    expect(d.kernel.claim_task(run_id, "a.0.0", worker="w2", attempt_id="two") is None, c,
           "a second delivery's claim must return None")
    again = d.kernel.claim_task(run_id, "a.0.0", worker="w1", attempt_id="one")
    expect(again is not None and again.attempt_id == "one", c,
           f"repeating the winning claim gave {again!r}")


def check_lease_renew(h: Harness) -> None:
    """[lease.renew]"""
    c = "lease.renew"
    sc = Scenario(h, "lease-renew", [[]])
    tid, other = sc.start(0, 2)
    now = h.clock.now()
    expect(sc.store.heartbeat(sc.run_id, tid, f"{tid}@1", now + 500), c,
           "heartbeat of the current attempt returned False")
    expect_eq(sc.task(tid).lease_until, now + 500, c, "lease_until after a heartbeat")
    expect(not sc.store.heartbeat(sc.run_id, tid, "someone-else", now + 900), c,
           "heartbeat of another attempt returned True")
    expect_eq(sc.task(tid).lease_until, now + 500, c, "lease_until after a stale heartbeat")
    sc.complete(tid, f"{tid}@1")
    expect(not sc.store.heartbeat(sc.run_id, tid, f"{tid}@1", now + 900), c,
           "heartbeat of a COMPLETED task returned True")
    expect(not sc.store.heartbeat(sc.run_id, "n0.0.99", "x", now + 900), c,
           "heartbeat of an unknown task returned True")
    expect(sc.store.heartbeat(sc.run_id, other, f"{other}@1", now + 1), c,
           "heartbeat of the second task's current attempt returned False")


def check_lease_expired(h: Harness) -> None:
    """[lease.expired]"""
    c = "lease.expired"
    now = h.clock.now()
    sc = Scenario(h, "lease-expired", [[]])
    early, late, forever, _queued, done = sc.start(0, 5, claim=False)
    sc.claim(early, "e", lease_until=now + 10)
    sc.claim(late, "l", lease_until=now + 30)
    sc.store.claim_task(sc.run_id, forever, "f", "worker", None, now)
    sc.claim(done, "d", lease_until=now + 5)
    sc.complete(done, "d")
    other = Scenario(h, "lease-expired-2", [[]])
    (elsewhere,) = other.start(0, 1, claim=False)
    other.claim(elsewhere, "x", lease_until=now + 10)
    mine = {sc.run_id, other.run_id}

    def expired(at: float, limit: int = 100) -> set[str]:
        found = h.store.list_expired(at, limit)
        expect(len(found) <= limit, c, f"list_expired(limit={limit}) returned {len(found)}")
        return {t.task_id for t in found if t.run_id in mine}

    expect_eq(expired(now + 10), set(), c, "expired at lease_until (strictly earlier only)")
    expect_eq(expired(now + 11), {early, elsewhere}, c, "expired tasks of two runs")
    expect_eq(expired(now + 1000), {early, late, elsewhere}, c,
              "expired tasks (a task without lease, a QUEUED or a COMPLETED task never expire)")
    expect_eq(len(h.store.list_expired(now + 1000, 1)), 1, c, "list_expired with limit 1")
    # Through the kernel: an expired attempt is crashed and retried (crash_attempts=2).
    d = h.driver(crash_attempts=2)
    run_id = h.run_id("lease-kernel")
    d.kernel.start_run(pipeline({"slug": "a", "plugin": "work"}), run_id=run_id)
    d.kernel.claim_task(run_id, "a.0.0", attempt_id="a@1")
    h.clock.advance(101)
    expect(d.kernel.recover_expired() >= 1, c, "recover_expired found no expired attempt")
    task = h.store.get_task(run_id, "a.0.0")
    expect(task is not None and task.state is TaskState.QUEUED, c,
           f"an expired attempt must be re-queued, got {task!r}")
    expect_eq(d.kernel.on_task_complete(run_id, "a.0.0", "a@1").outcome, "stale", c,
              "completion by the expired attempt")


def check_complete_once(h: Harness) -> None:
    """[complete.once]"""
    c = "complete.once"
    sc = Scenario(h, "complete-once", [[], [0]])
    tid, other = sc.start(0, 2)
    outputs = outputs_for(tid, 2)
    t = sc.complete(tid, f"{tid}@1", outputs)
    expect_eq((t.outcome, t.ready, t.run_state), ("applied", (), None), c,
              "first completion of one of two tasks")
    expect_eq(sc.task(tid).state, TaskState.COMPLETED, c, "task state after completion")
    expect_eq([a.artifact_id for a in sc.artifacts(0)], [o.artifact_id for o in outputs], c,
              "artifacts after completion")
    before = sc.snapshot()
    t = sc.complete(tid, f"{tid}@1", outputs)
    expect_eq((t.outcome, t.ready, t.run_state), ("duplicate", (), None), c,
              "an exact repeat of a completion")
    t = sc.complete(tid, f"{tid}@1", outputs_for(tid, 3, replay=True))
    expect_eq(t.outcome, "duplicate", c, "a repeat of a completion with other outputs")
    sc.unchanged(before, c, "a repeated completion (the first result stands)")
    expect_eq(sc.run().artifact_seq, 2, c, "run.artifact_seq after a repeated completion")
    t = sc.complete(other, f"{other}@1")
    expect_eq(t.ready, (1,), c, "ready after the second task completed")
    expect_eq(sc.complete(other, f"{other}@1").ready, (), c, "ready of a repeated completion")
    # Through the kernel: a duplicate completion launches nothing twice (the repeat
    # re-dispatches what the first launched, which the first call may not have dispatched).
    d = h.driver()
    run_id = h.run_id("complete-once-kernel")
    d.kernel.start_run(pipeline({"slug": "a", "plugin": "work"},
                                {"slug": "b", "plugin": "work", "depends_on": ["a"]}),
                       run_id=run_id)
    d.kernel.claim_task(run_id, "a.0.0", attempt_id="a@1")
    d.dispatcher.take()
    first = d.kernel.on_task_complete(run_id, "a.0.0", "a@1", [{"fields": {"k": 1}}])
    second = d.kernel.on_task_complete(run_id, "a.0.0", "a@1", [{"fields": {"k": 1}}])
    expect_eq((first.outcome, second.outcome), ("applied", "duplicate"), c,
              "outcomes of a completion delivered twice")
    expect_eq(len(h.store.get_artifacts(run_id, 0, 0)), 1, c, "artifacts after two deliveries")
    expect_eq(sorted({r.task_id for r in d.dispatcher.take()}), ["b.0.0"], c,
              "tasks dispatched after a completion delivered twice")
    expect_eq([t.task_id for t in h.store.list_tasks(run_id, node_index=1)], ["b.0.0"], c,
              "tasks launched after a completion delivered twice")


def check_complete_fenced(h: Harness) -> None:
    """[complete.fenced]"""
    c = "complete.fenced"
    sc = Scenario(h, "complete-fenced", [[], []])
    (tid,) = sc.start(0, 1)
    (queued,) = sc.start(1, 1, claim=False)
    sc.fail(tid, f"{tid}@1", retry_at=h.clock.now())
    sc.claim(tid, "second")
    before = sc.snapshot()
    t = sc.complete(tid, f"{tid}@1", outputs_for(tid, 2))
    expect_eq((t.outcome, t.run_state), ("stale", None), c,
              "a completion by the previous attempt")
    expect_eq(sc.fail(tid, f"{tid}@1").outcome, "stale", c, "a failure by the previous attempt")
    expect_eq(sc.complete(queued, "never-claimed").outcome, "stale", c,
              "a completion of a QUEUED task")
    expect_eq(sc.complete("n1.0.99", "x").outcome, "stale", c, "a completion of an unknown task")
    sc.unchanged(before, c, "stale completions")
    expect_eq(sc.complete(tid, "second", outputs_for(tid, 1)).outcome, "applied", c,
              "a completion by the current attempt")
    before = sc.snapshot()
    expect_eq(sc.complete(tid, f"{tid}@1", outputs_for(tid, 2)).outcome, "stale", c,
              "a late completion by the previous attempt after the current one completed")
    sc.unchanged(before, c, "a late completion")


def check_complete_counters(h: Harness) -> None:
    """[complete.counters]"""
    c = "complete.counters"
    sc = Scenario(h, "counters", [[], [], [0], [0, 1]])
    tids = sc.start(0, 5)
    (lone,) = sc.start(1, 1)
    for k, tid in enumerate(tids[:-1]):
        t = sc.complete(tid, f"{tid}@1", outputs_for(tid, 1))
        expect_eq((t.outcome, t.ready), ("applied", ()), c, f"completion {k + 1} of 5")
        expect_eq(sc.node(0).remaining_tasks, 4 - k, c, f"remaining_tasks after {k + 1} of 5")
    t = sc.complete(tids[-1], f"{tids[-1]}@1")
    expect_eq(t.ready, (2,), c, "ready after the last of 5 completions (n3 waits for n1)")
    node = sc.node(0)
    expect_eq((node.state, node.remaining_tasks), (NodeState.COMPLETED, 0), c,
              "node (state, remaining_tasks) after its last completion")
    expect_eq([sc.node(i).remaining_parents for i in (2, 3)], [0, 1], c,
              "children's remaining_parents after their parent completed")
    expect_eq(sc.run().unsettled, 3, c, "run.unsettled after one node completed")
    expect_eq(sc.complete(tids[-1], f"{tids[-1]}@1").ready, (), c,
              "ready of a repeated last completion")
    expect_eq(sc.complete(lone, f"{lone}@1").ready, (3,), c, "ready once both parents completed")
    expect_eq([sc.node(i).remaining_parents for i in (2, 3)], [0, 0], c,
              "remaining_parents after both parents completed (and a repeated completion)")


def check_fail_retry(h: Harness) -> None:
    """[fail.retry]"""
    c = "fail.retry"
    sc = Scenario(h, "fail-retry", [[], []])
    (tid,) = sc.start(0, 1)
    now = h.clock.now()
    t = sc.fail(tid, f"{tid}@1", retry_at=now + 50)
    expect_eq((t.outcome, t.run_state), ("applied", None), c, "a failure with retry_at")
    task = sc.task(tid)
    expect_eq((task.state, task.not_before, task.error, task.attempt, task.attempt_id),
              (TaskState.QUEUED, now + 50, "boom", 1, f"{tid}@1"), c,
              "task (state, not_before, error, attempt, attempt_id) after a retryable failure")
    before = sc.snapshot()
    expect_eq(sc.fail(tid, f"{tid}@1", retry_at=now + 50).outcome, "duplicate", c,
              "an exact repeat of a retryable failure")
    expect_eq(sc.claim(tid, "early")[0], "stale", c, "a claim before retry_at")
    sc.unchanged(before, c, "a repeated failure / an early claim")
    h.clock.advance(50)
    outcome, claimed = sc.claim(tid, "second")
    expect(outcome == "applied" and claimed is not None and claimed.attempt == 2, c,
           f"the claim after retry_at returned ({outcome!r}, {claimed!r})")
    t = sc.fail(tid, "second")
    expect_eq((t.outcome, sc.task(tid).state, sc.node(0).state, sc.run().failed_nodes),
              ("applied", TaskState.FAILED, NodeState.FAILED, 1), c,
              "a final failure (outcome, task, node, run.failed_nodes)")
    # Through the kernel: retry policy with backoff, then the run fails (fail_fast).
    d = h.driver()
    run_id = h.run_id("fail-retry-kernel")
    spec = {"slug": "a", "plugin": "work", "retry": {"max_attempts": 2, "backoff_seconds": 10}}
    d.kernel.start_run(pipeline(spec), run_id=run_id)
    d.kernel.claim_task(run_id, "a.0.0", attempt_id="a@1")
    d.dispatcher.take()
    d.kernel.on_task_failed(run_id, "a.0.0", "a@1", "boom")
    refs = d.dispatcher.take()
    expect(len(refs) == 1 and refs[0].not_before == h.clock.now() + 10, c,
           f"the retry must be dispatched not before now + backoff, got {refs!r}")
    expect(d.kernel.claim_task(run_id, "a.0.0", attempt_id="a@2") is None, c,
           "a claim before the backoff elapsed must return None")
    h.clock.advance(10)
    expect(d.kernel.claim_task(run_id, "a.0.0", attempt_id="a@2") is not None, c,
           "the claim after the backoff returned None")
    d.kernel.on_task_failed(run_id, "a.0.0", "a@2", "boom again")
    expect_eq([f.state for f in d.finished], [RunState.FAILED], c,
              "on_run_finished after the last attempt failed")


def check_fail_fenced(h: Harness) -> None:
    """[fail.fenced]"""
    c = "fail.fenced"
    sc = Scenario(h, "fail-fenced", [[], [0], []], policy="continue")
    first, sibling = sc.start(0, 2)
    sc.start(2, 1)
    before = sc.snapshot()
    expect_eq(sc.fail(first, "someone-else").outcome, "stale", c, "a failure by another attempt")
    sc.unchanged(before, c, "a stale failure")
    t = sc.fail(first, f"{first}@1")
    expect_eq((t.outcome, t.ready, t.run_state), ("applied", (1,), None), c,
              "a final failure (settle procedure, continue policy)")
    expect_eq((sc.task(first).state, sc.task(sibling).state, sc.node(0).state),
              (TaskState.FAILED, TaskState.CANCELLED, NodeState.FAILED), c,
              "(task, sibling, node) after a final failure")
    expect_eq((sc.run().failed_nodes, sc.run().unsettled, sc.node(1).remaining_parents),
              (1, 2, 0), c, "(failed_nodes, unsettled, child remaining_parents)")
    before = sc.snapshot()
    t = sc.fail(first, f"{first}@1")
    expect_eq((t.outcome, t.ready), ("duplicate", ()), c, "an exact repeat of a final failure")
    expect_eq(sc.complete(sibling, f"{sibling}@1").outcome, "stale", c,
              "a completion of a task cancelled by its sibling's failure")
    sc.unchanged(before, c, "a repeated failure / a cancelled task's completion")
    fast = Scenario(h, "fail-fenced-fast", [[], []])
    (doomed,) = fast.start(0, 1)
    (queued,) = fast.start(1, 1, claim=False)
    t = fast.fail(doomed, f"{doomed}@1", final=TaskState.CRASHED, fail_run=RunState.CRASHED)
    expect_eq((t.run_state, fast.task(doomed).state, fast.task(queued).state),
              (RunState.CRASHED, TaskState.CRASHED, TaskState.CANCELLED), c,
              "a final crash with fail_run (run_state, task, other task)")
    t = fast.fail(doomed, f"{doomed}@1", final=TaskState.CRASHED, fail_run=RunState.CRASHED)
    expect(t.outcome == "duplicate" and t.run_state is None, c,
           f"a repeat of the failure that ended the run returned {t!r}")


def check_wait_fenced(h: Harness) -> None:
    """[wait.fenced]"""
    c = "wait.fenced"
    sc = Scenario(h, "wait-fenced", [[]])
    (tid,) = sc.start(0, 1)
    now = h.clock.now()
    expect_eq(sc.store.suspend_task(sc.run_id, tid, "other", "human", now), "stale", c,
              "suspend by another attempt")
    expect_eq(sc.store.suspend_task(sc.run_id, tid, f"{tid}@1", "human", now), "applied", c,
              "suspend by the current attempt")
    task = sc.task(tid)
    expect_eq((task.state, task.attempt_id), (TaskState.WAITING, f"{tid}@1"), c,
              "task (state, attempt_id) after suspend")
    before = sc.snapshot()
    expect_eq(sc.store.suspend_task(sc.run_id, tid, f"{tid}@1", "human", now), "duplicate", c,
              "an exact repeat of suspend")
    expect_eq(sc.complete(tid, f"{tid}@1", outputs_for(tid, 1)).outcome, "stale", c,
              "a completion of a WAITING task")
    expect_eq(sc.fail(tid, f"{tid}@1").outcome, "stale", c, "a failure of a WAITING task")
    expect(not sc.store.heartbeat(sc.run_id, tid, f"{tid}@1", now + 10), c,
           "heartbeat of a WAITING task returned True")
    sc.unchanged(before, c, "callbacks of a suspended attempt")


def check_wait_resume(h: Harness) -> None:
    """[wait.resume]"""
    c = "wait.resume"
    sc = Scenario(h, "wait-resume", [[]])
    tid, running = sc.start(0, 2)
    now = h.clock.now()
    sc.store.suspend_task(sc.run_id, tid, f"{tid}@1", "human", now)
    payload = {"approved": True, "by": "ann", "score": 1.5}
    outcome, task = sc.store.resume_task(sc.run_id, tid, payload, now)
    expect(outcome == "applied" and task is not None, c, f"resume returned {outcome!r}")
    stored = sc.task(tid)
    expect_eq((stored.state, stored.resume), (TaskState.QUEUED, payload), c,
              "task (state, resume) after resume")
    before = sc.snapshot()
    expect_eq(sc.store.resume_task(sc.run_id, tid, {"approved": False}, now)[0], "stale", c,
              "a repeated resume")
    expect_eq(sc.store.resume_task(sc.run_id, running, None, now)[0], "stale", c,
              "resume of a RUNNING task")
    sc.unchanged(before, c, "refused resumes")
    outcome, task = sc.claim(tid, "after")
    expect(outcome == "applied" and task is not None and task.attempt == 2, c,
           f"the claim after resume returned ({outcome!r}, {task!r})")
    expect_eq(sc.complete(tid, f"{tid}@1").outcome, "stale", c,
              "a completion by the attempt that was suspended")
    expect_eq(sc.complete(tid, "after").outcome, "applied", c, "completion by the new attempt")
    # Through the kernel: the payload reaches the next attempt's input.
    d = h.driver()
    run_id = h.run_id("wait-kernel")
    d.kernel.start_run(pipeline({"slug": "a", "plugin": "work"}), run_id=run_id)
    d.kernel.claim_task(run_id, "a.0.0", attempt_id="a@1")
    expect_eq(d.kernel.wait_task(run_id, "a.0.0", "a@1", "approve?"), "applied", c,
              "kernel.wait_task")
    d.dispatcher.take()
    expect_eq(d.kernel.resume_task(run_id, "a.0.0", {"ok": 1}), "applied", c,
              "kernel.resume_task")
    expect_eq([r.task_id for r in d.dispatcher.take()], ["a.0.0"], c, "dispatch after resume")
    claim = d.kernel.claim_task(run_id, "a.0.0", attempt_id="a@2")
    expect(claim is not None and claim.input.resume == {"ok": 1}, c,
           f"the resumed attempt's input must carry the payload, got {claim!r}")


def check_reads_ordering(h: Harness) -> None:
    """[reads.ordering]"""
    c = "reads.ordering"
    sc = Scenario(h, "ordering", [[], [0], []])
    tasks = sc.new_tasks(0, [2, 0, 1])
    sc.launch(0, tasks)
    (root,) = sc.start(2, 1, claim=False)
    expect_eq([t.task_id for t in sc.tasks(0)], ["n0.0.0", "n0.0.1", "n0.0.2"], c,
              "list_tasks(node_index=0) order (tasks written in seq order 2, 0, 1)")
    expect_eq([t.task_id for t in sc.tasks()], ["n0.0.0", "n0.0.1", "n0.0.2", root], c,
              "list_tasks() order: by (node, generation, seq)")
    for tid in ("n0.0.1", "n0.0.2", "n0.0.0"):
        sc.claim(tid, "x")
    expect_eq([t.task_id for t in sc.tasks(states=[TaskState.QUEUED])], [root], c,
              "list_tasks(states=[QUEUED])")
    for tid, count in (("n0.0.1", 2), ("n0.0.2", 1), ("n0.0.0", 2)):
        sc.complete(tid, "x", outputs_for(tid, count))
    arts = sc.artifacts(0)
    expect_eq([(a.artifact_id, a.seq) for a in arts],
              [("n0.0.1/0", 1), ("n0.0.1/1", 2), ("n0.0.2/0", 3), ("n0.0.0/0", 4),
               ("n0.0.0/1", 5)], c, "artifacts (id, seq) in publication order")
    expect_eq(sc.run().artifact_seq, 5, c, "run.artifact_seq after 5 outputs")
    expect_eq(sc.artifacts(0, generation=1), [], c, "artifacts of another generation")
    expect_eq(sc.artifacts(1), [], c, "artifacts of a node without tasks")
    expect_eq([n.index for n in sc.store.get_nodes(sc.run_id, [2, 0])], [0, 2], c,
              "get_nodes(run, [2, 0]) order")
    expect_eq([n.index for n in sc.store.get_nodes(sc.run_id)], [0, 1, 2], c,
              "get_nodes(run) order")


def check_artifacts_origin(h: Harness) -> None:
    """[artifacts.origin]"""
    c = "artifacts.origin"
    sc = Scenario(h, "origin", [[], [], []])
    (inherit,) = sc.start(0, 1, mode="inherit", origin="src/7")
    (own,) = sc.start(1, 1, mode="self")
    (broadcast,) = sc.start(2, 1, mode="broadcast", origin="ignored")
    fields = {"k": 1, "nested": {"list": [1, 2.5, None, True], "text": "ünï ✓"}, "f": -0.25}
    outputs = [NewArtifact(f"{inherit}/a", fields, {"uri": "s3://b/k", "n": [1, {"x": None}]}),
               NewArtifact(f"{inherit}/b", {}, None)]
    sc.complete(inherit, f"{inherit}@1", outputs)
    sc.complete(own, f"{own}@1", outputs_for(own, 2))
    sc.complete(broadcast, f"{broadcast}@1", outputs_for(broadcast, 1))
    got = sc.artifacts(0)
    expect_eq([(a.origin, a.fields, a.data, a.task_id, a.node_index, a.generation)
               for a in got],
              [("src/7", fields, outputs[0].data, inherit, 0, 0),
               ("src/7", {}, None, inherit, 0, 0)], c,
              "artifacts of an 'inherit' task (origin, fields, data, task, node, generation)")
    expect_eq([a.origin for a in sc.artifacts(1)], [f"{own}/0", f"{own}/1"], c,
              "origins of a 'self' task (each output its own origin)")
    expect_eq([a.origin for a in sc.artifacts(2)], [None], c,
              "origin of a 'broadcast' task's output")
    # Through the kernel: roots start groups, single-mode children inherit, grouped joins.
    d = h.driver()
    run_id = h.run_id("origin-kernel")
    d.kernel.start_run(pipeline(
        {"slug": "src", "plugin": "work"},
        {"slug": "each", "plugin": "work", "depends_on": ["src"]},
        {"slug": "merge", "plugin": "work", "depends_on": ["each"], "fan_mode": "grouped"},
    ), run_id=run_id)
    d.kernel.claim_task(run_id, "src.0.0", attempt_id="s")
    d.kernel.on_task_complete(run_id, "src.0.0", "s", [{"id": "x"}, {"id": "y"}])
    for seq in (0, 1):
        tid = f"each.0.{seq}"
        d.kernel.claim_task(run_id, tid, attempt_id=tid)
        d.kernel.on_task_complete(run_id, tid, tid, [{"id": "p"}, {"id": "q"}])
    expect_eq([a.origin for a in h.store.get_artifacts(run_id, 1, 0)],
              ["src.0.0/x", "src.0.0/x", "src.0.0/y", "src.0.0/y"], c,
              "origins of single-mode outputs (inherited from the input artifact)")
    merge = h.store.list_tasks(run_id, node_index=2)
    expect_eq([t.origin for t in merge], ["src.0.0/x", "src.0.0/y"], c,
              "grouped tasks (one per origin)")
