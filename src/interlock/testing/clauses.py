"""The store contract's clauses: stable ids, the version that introduced each, the promise.

Pure data (no pytest, no Hypothesis, no kernel), so tools can list the contract cheaply. The
full text of every clause is in ``docs/store-contract.md``; the conformance harness has one test
per clause named ``test_<id with . and - replaced by _>``.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["ABILITIES", "CLAUSES", "SUITE_VERSION", "Clause", "parse_version", "test_name"]

SUITE_VERSION = "0.4"
"""The version of the conformance suite (the Interlock minor version that shipped it)."""


class Clause(NamedTuple):
    """``(version introduced, one-line promise)``."""

    version: str
    promise: str


CLAUSES: dict[str, Clause] = {
    "run.create": Clause(
        "0.1", "create_run inserts a run and its nodes once; a repeat returns the stored run "
               "with created=False and changes nothing"),
    "launch.atomic": Clause(
        "0.1", "launch_node claims a WAITING node and inserts its tasks in one atomic step; a "
               "launch of a node not WAITING in that generation, or of a run not RUNNING, "
               "writes nothing"),
    "launch.batches": Clause(
        "0.1", "later batches of a LAUNCHED node append only tasks not stored yet; the node "
               "cannot complete before total_tasks tasks have completed"),
    "settle.once": Clause(
        "0.1", "settle_node settles a WAITING node once: counters, readiness and the run's end "
               "move exactly once; a repeat is a duplicate"),
    "claim.cas": Clause(
        "0.1", "claim_task is a compare-and-set QUEUED -> RUNNING under a new attempt: of N "
               "concurrent claims exactly one applies; the same attempt again is a duplicate"),
    "lease.renew": Clause(
        "0.1", "heartbeat extends the lease of the current attempt only"),
    "lease.expired": Clause(
        "0.1", "list_expired returns RUNNING tasks whose lease_until < now, at most limit"),
    "complete.once": Clause(
        "0.1", "a completion publishes the task's outputs once; an exact repeat is a duplicate "
               "and publishes nothing, also under concurrent repeats"),
    "complete.fenced": Clause(
        "0.1", "only the current attempt of a RUNNING task may complete it; an older attempt "
               "is stale and changes nothing"),
    "complete.counters": Clause(
        "0.1", "remaining_tasks / remaining_parents move once per winning completion: the last "
               "of N completions settles the node and reports each newly ready child exactly "
               "once, also under concurrency"),
    "fail.retry": Clause(
        "0.1", "a failure with retry_at re-queues the task (not before retry_at), keeps the "
               "attempt id until the next claim; a repeat is a duplicate"),
    "fail.fenced": Clause(
        "0.1", "only the current attempt may fail a task; a final failure fails the node, "
               "cancels its unfinished tasks and settles it (or terminates the run) once"),
    "wait.fenced": Clause(
        "0.1", "suspend_task moves the current attempt's RUNNING task to WAITING; callbacks of "
               "that attempt are stale afterwards"),
    "wait.resume": Clause(
        "0.1", "resume_task re-queues a WAITING task with its payload once; the next claim is "
               "a new attempt"),
    "terminal.once": Clause(
        "0.1", "a run reaches a terminal state once: exactly one call reports run_state, also "
               "under racing cancel / final completion / fail-fast; terminal states are final"),
    "terminal.cancels-unfinished": Clause(
        "0.1", "the terminal transition cancels every QUEUED/RUNNING/WAITING task and every "
               "WAITING/LAUNCHED node in the same step, and nothing else"),
    "retry.fenced": Clause(
        "0.1", "reopen_run applies once per expected_retries; replaced nodes get their new "
               "generation, completed work is kept"),
    "reads.ordering": Clause(
        "0.1", "artifacts carry a run-wide seq 1, 2, 3... in publication order and are read "
               "by seq; tasks by (node, generation, seq); nodes by index"),
    "batch.claim": Clause(
        "0.1", "claim_tasks (ability 'batched') applies its claims in one atomic step, each as "
               "claim_task alone would in that order; every task is won once across batches"),
    "batch.complete": Clause(
        "0.1", "complete_tasks (ability 'batched') applies its completions in one atomic step, "
               "each as complete_task alone would in that order; outputs and counters once"),
    "complete.prefetch": Clause(
        "0.1", "complete_task_prefetch (ability 'prefetch') is complete_task plus, in the same "
               "atomic step, the facts of every node it readied and of their parents"),
    "launch.claim": Clause(
        "0.2", "launch_and_claim (ability 'handover') is launch_node plus, only when that "
               "applied, claim_task of one written task, in the same atomic step"),
    "launch.many": Clause(
        "0.2", "launch_nodes (ability 'launch_many') applies its launches in order, each as "
               "launch_node alone would have there; a run not RUNNING launches none"),
    "launch.ahead": Clause(
        "0.3", "launch_node_ahead (ability 'launch_ahead') applies as launch_node would, in "
               "the order begun, its outcome read later; begun ones may overlap"),
    "complete.follow": Clause(
        "0.2", "complete_and_follow (ability 'follow') is complete_task plus, in the same "
               "atomic step, the launch and claim its callback plans from the facts offered"),
    "artifacts.stream": Clause(
        "0.2", "iter_artifacts (ability 'stream') yields exactly what get_artifacts returns, "
               "in the same order, from one committed snapshot"),
    "artifacts.many": Clause(
        "0.4", "get_artifacts_many (ability 'read_many') returns get_artifacts of each pair, "
               "in the order asked, from one committed snapshot"),
    "artifacts.origin": Clause(
        "0.1", "the store derives each artifact's origin from the task's origin_mode and keeps "
               "fields and data exactly"),
}

ABILITIES: dict[str, str] = {
    "batched": "the store implements claim_tasks / complete_tasks (BatchedDagStore) and lists "
               "'batched' in its abilities attribute (the kernel then uses them)",
    "prefetch": "the store implements complete_task_prefetch (PrefetchingDagStore) and lists "
                "'prefetch' in its abilities attribute (the kernel then uses it)",
    "follow": "the store implements complete_and_follow (FollowingDagStore) and lists "
              "'follow' in its abilities attribute (the kernel then uses it)",
    "handover": "the store implements launch_and_claim (HandoverDagStore) and lists "
                "'handover' in its abilities attribute (the kernel then uses it)",
    "launch_many": "the store implements launch_nodes (ManyLaunchDagStore) and lists "
                   "'launch_many' in its abilities attribute (the kernel then launches the "
                   "nodes one step readies together)",
    "launch_ahead": "the store implements launch_node_ahead (LaunchAheadDagStore) and lists "
                    "'launch_ahead' in its abilities attribute (the kernel then sends a wide "
                    "launch's later batches ahead of their outcome)",
    "stream": "the store implements iter_artifacts (StreamingDagStore) and lists 'stream' "
              "in its abilities attribute (the kernel then reads wide nodes packed)",
    "read_many": "the store implements get_artifacts_many (ManyReadDagStore) and lists "
                 "'read_many' in its abilities attribute (the kernel then reads the input of "
                 "a task holding several nodes' artifacts by reference in one call)",
    "threads": "one store object may be called from several threads at once (races run with "
               "threads sharing it)",
    "processes": "several store objects made by make_store() in one test share their data, as "
                 "workers in separate processes do (races run with one store object per thread)",
}
"""Optional abilities a store class declares (never sniffed) in ``abilities``."""


def parse_version(text: str) -> tuple[int, ...]:
    """``"0.1"`` -> ``(0, 1, 0)``; compares versions of different lengths correctly."""
    parts = [int(p) for p in str(text).strip().split(".") if p != ""]
    if not parts:
        raise ValueError(f"not a version: {text!r}")
    return tuple(parts + [0] * (3 - len(parts)))


def test_name(check_id: str) -> str:
    """The test method name of a check: ``claim.cas`` -> ``test_claim_cas``."""
    return "test_" + check_id.replace(".", "_").replace("-", "_").replace("/", "_")


test_name.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
