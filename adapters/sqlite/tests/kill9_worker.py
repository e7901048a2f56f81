"""Worker process of test_kill9.py: drives one run to its end through the public API only.

Usage: ``python kill9_worker.py DB_PATH RUN_ID``. Prints (flushed, so the test can kill at a
chosen phase) ``claimed <task_id>`` once a claim is won, ``completing <task_id>`` just before
``on_task_complete``, ``<outcome> <task_id>`` after it, and ``finished <run state>`` when the run
is over. Exit code 0 when finished, 3 if the run stalls.

Recovery of a killed predecessor (the test runs one worker at a time): at start, every task of
the run RUNNING under a worker id that is not this process's is reported with
``kernel.on_task_crashed`` (its attempt died with the killed process; the kernel re-queues it),
then ``kernel.reconcile_run`` repairs what a kill between two steps left undone (a node made
ready by a completion whose launch never happened). Leases are not used for this: waiting for a
lease to expire would need sleeps or a fake clock shared between processes.
"""

from __future__ import annotations

import hashlib
import os
import sys
from typing import Any

from interlock import Kernel, TaskState
from interlock.values import Claim
from interlock_sqlite import SqliteStore


def work(claim: Claim) -> list[dict[str, Any]]:
    """Deterministic plugin bodies: source emits ``count`` items, item squares, total sums."""
    task = claim.input
    if task.node == "source":
        count = task.config["count"]
        assert isinstance(count, int)
        return [{"id": str(i), "fields": {"i": i}} for i in range(count)]
    if task.node == "item":
        (artifact,) = task.inputs["source"]
        i = artifact.fields["i"]
        assert isinstance(i, int)
        _busy(i % 4)  # some tasks take a few ms, so some kills land while a task is RUNNING
        return [{"id": "sq", "fields": {"i": i, "sq": i * i}}]
    items = task.inputs["item"]
    return [{"id": "total", "fields": {"count": len(items),
                                       "total": sum(int(a.fields["sq"]) for a in items)}}]


def _busy(units: int) -> None:
    digest = b""
    for _ in range(units * 3000):
        digest = hashlib.sha256(digest).digest()


def main(path: str, run_id: str) -> int:
    me = f"kill9-worker-{os.getpid()}"
    store = SqliteStore(path)
    # crash_attempts well above the number of kills: a task killed repeatedly is retried, not
    # CRASHED (that would be a different test).
    kernel = Kernel(store, crash_attempts=100)
    for task in store.list_tasks(run_id, states=[TaskState.RUNNING]):
        if task.worker != me and task.attempt_id is not None:
            kernel.on_task_crashed(run_id, task.task_id, task.attempt_id, "worker was killed")
    kernel.reconcile_run(run_id)
    while True:
        run = store.get_run(run_id)
        assert run is not None
        if run.state.terminal:
            print(f"finished {run.state.value}", flush=True)
            return 0
        kernel.recover_expired()
        queued = store.list_tasks(run_id, states=[TaskState.QUEUED])
        if not queued:
            if kernel.reconcile_run(run_id) == 0 and not store.list_tasks(
                    run_id, states=[TaskState.QUEUED, TaskState.RUNNING]):
                run = store.get_run(run_id)
                if run is not None and not run.state.terminal:
                    print(f"stalled {run}", flush=True)
                    return 3
            continue
        for task in queued:
            claim = kernel.claim_task(run_id, task.task_id, worker=me)
            if claim is None:
                continue
            print(f"claimed {task.task_id}", flush=True)
            outputs = work(claim)
            print(f"completing {task.task_id}", flush=True)
            transition = kernel.on_task_complete(run_id, task.task_id, claim.attempt_id,
                                                 outputs)
            print(f"{transition.outcome} {task.task_id}", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
