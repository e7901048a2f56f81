"""The contracts between the kernel and the world: ``DagStore``, ``Dispatcher``, ``Clock``.

Every mutating ``DagStore`` method is **atomic per run** (requirement 1 of
docs/store-contract.md): all of its effects commit together or none do, serialised with every
other mutation of the same run. Each is **fenced** (task attempt id, node generation, run
state) and returns a :class:`~interlock.records.Transition` / outcome telling whether it
``applied``, was an exact ``duplicate`` of an applied call (nothing changes, the first result
stands) or was ``stale`` (fenced out, nothing changes).

The *settle procedure* shared by several methods (stated once here, referenced below) — when a
node reaches a settled state S (COMPLETED, FILTERED, SKIPPED, FAILED) in its generation:

1. ``node.state = S``; ``run.unsettled -= 1``; if S is FAILED, ``run.failed_nodes += 1``;
2. for each index in ``children``: ``remaining_parents -= 1``; a child reaching 0 while WAITING is
   reported in ``Transition.ready``;
3. if ``run.unsettled == 0``: the run becomes COMPLETED (``failed_nodes == 0``) or FAILED, and
   ``Transition.run_state`` reports it.

The *terminate procedure* (fail-fast and cancel) — the run becomes the terminal state given, every
QUEUED/RUNNING/WAITING task becomes CANCELLED and every WAITING/LAUNCHED node CANCELLED, all in
the same atomic step; ``Transition.run_state`` reports it.

:mod:`interlock.storekit` implements every mutating method once, over a small per-run
transaction primitive; most SQL-style stores only need to provide that primitive.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Protocol, runtime_checkable

import attrs

from interlock.records import (
    Artifact,
    CompletionItem,
    Followed,
    FollowUp,
    NewArtifact,
    NodeFacts,
    NodeLaunch,
    NodeRecord,
    Outcome,
    RunRecord,
    TaskRecord,
    TaskRef,
    Transition,
)
from interlock.states import NodeState, RunState, TaskState

__all__ = [
    "BatchedDagStore",
    "ClaimRequest",
    "Clock",
    "DagStore",
    "Delivery",
    "Dispatcher",
    "FollowingDagStore",
    "HandoverDagStore",
    "LaunchAheadDagStore",
    "ManyLaunchDagStore",
    "ManyReadDagStore",
    "PrefetchingDagStore",
    "StreamingDagStore",
    "TaskSource",
]


@runtime_checkable
class Clock(Protocol):
    """Where adapters and the kernel API read time; the pure core never does."""

    def now(self) -> float:
        """Seconds since the epoch (any monotonic-enough float clock shared by all workers)."""
        ...


@runtime_checkable
class Dispatcher(Protocol):
    """Hands tasks to the user's queue/workers. Called only after the tasks are committed."""

    def dispatch(self, tasks: Sequence[TaskRef]) -> None:
        """Deliver each task to some worker, at least once, not before ``task.not_before``.

        May deliver duplicates (workers claim with compare-and-set). Must not block for long:
        enqueue and return. An exception is logged by the kernel; the tasks stay QUEUED and
        ``reconcile_run`` re-dispatches them.
        """
        ...


@attrs.frozen
class Delivery:
    """One delivery of a task to a worker; ``token`` identifies it to :meth:`TaskSource.ack`."""

    ref: TaskRef
    token: str


@runtime_checkable
class TaskSource(Protocol):
    """The worker side of a queue: what ``interlock worker`` and the local runner consume."""

    def receive(self, max_tasks: int, timeout: float) -> list[Delivery]:
        """Block up to ``timeout`` seconds for at most ``max_tasks`` due deliveries.

        Returns as soon as one is available (never polls on a fixed interval). Deliveries not
        acked in time may be redelivered (to this or another worker).
        """
        ...

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Forget the deliveries: the task was run, or its claim was lost (duplicate)."""
        ...


@runtime_checkable
class DagStore(Protocol):
    """Persistence of DAG runs. See docs/store-contract.md for the clause ids."""

    # ---- reads (no atomicity beyond reading committed state) ------------------------------

    def get_run(self, run_id: str) -> RunRecord | None:
        """The run, or None if it does not exist."""
        ...

    def get_nodes(self, run_id: str, indices: Sequence[int] | None = None) -> list[NodeRecord]:
        """The run's node records (all, or those at ``indices``), ordered by index."""
        ...

    def get_task(self, run_id: str, task_id: str) -> TaskRecord | None:
        """One task, or None."""
        ...

    def list_tasks(
        self,
        run_id: str,
        *,
        node_index: int | None = None,
        states: Collection[TaskState] | None = None,
    ) -> list[TaskRecord]:
        """Tasks of the run (optionally of one node / in some states), by (node, gen, seq)."""
        ...

    def get_artifacts(self, run_id: str, node_index: int, generation: int) -> list[Artifact]:
        """Artifacts published by the node's tasks in ``generation``, by ``seq``."""
        ...

    def list_expired(self, now: float, limit: int) -> list[TaskRecord]:
        """Up to ``limit`` RUNNING tasks, of any run, whose ``lease_until`` < ``now``."""
        ...

    # ---- mutations (each atomic per run, fenced, repeat-safe) -----------------------------

    def create_run(self, run: RunRecord, nodes: Sequence[NodeRecord]) -> tuple[RunRecord, bool]:
        """[run.create] Insert the run and its node records unless ``run.run_id`` exists.

        Returns (stored run, created). An exact repeat returns the existing run and False.
        """
        ...

    def launch_node(
        self,
        run_id: str,
        node_index: int,
        generation: int,
        tasks: Sequence[TaskRecord],
        total_tasks: int,
        now: float,
    ) -> Outcome:
        """[launch.atomic] Claim a WAITING node of ``generation`` and write tasks, together.

        If the run is RUNNING and the node is WAITING in ``generation``: the node becomes
        LAUNCHED with ``total_tasks`` and ``remaining_tasks = total_tasks`` and ``tasks`` are
        inserted (QUEUED), all atomically -> ``applied``. If the node is already LAUNCHED in
        ``generation``: tasks whose id is not stored yet are inserted (a later batch of a large
        launch, or a replay) -> ``duplicate``. Otherwise ``stale``, nothing written.
        ``total_tasks`` >= 1 (a node with no task is settled with ``settle_node``).
        """
        ...

    def settle_node(
        self,
        run_id: str,
        node_index: int,
        generation: int,
        state: NodeState,
        reason: str | None,
        children: Sequence[int],
        fail_run: RunState | None,
        now: float,
    ) -> Transition:
        """[settle.once] Settle a WAITING node without tasks (FILTERED, SKIPPED or FAILED).

        If the run is RUNNING and the node WAITING in ``generation``: the settle procedure runs;
        if ``state`` is FAILED and ``fail_run`` is given, the terminate procedure runs with
        ``fail_run`` instead of step 3. Otherwise ``duplicate`` (node already in ``state``) or
        ``stale``.
        """
        ...

    def claim_task(
        self,
        run_id: str,
        task_id: str,
        attempt_id: str,
        worker: str,
        lease_until: float | None,
        now: float,
    ) -> tuple[Outcome, TaskRecord | None]:
        """[claim.cas] Compare-and-set QUEUED -> RUNNING under a new attempt.

        Applies only if the run is RUNNING, the task QUEUED and ``now >= not_before``: sets
        ``attempt += 1``, ``attempt_id``, ``worker``, ``lease_until``. An exact repeat (task
        RUNNING under ``attempt_id``) is ``duplicate``. Returns the task as stored after the call
        (None if it does not exist). Of N concurrent claims of one task exactly one applies.
        """
        ...

    def heartbeat(self, run_id: str, task_id: str, attempt_id: str, lease_until: float) -> bool:
        """[lease.renew] Extend the lease of a RUNNING task under ``attempt_id``; False if stale."""
        ...

    def complete_task(
        self,
        run_id: str,
        task_id: str,
        attempt_id: str,
        outputs: Sequence[NewArtifact],
        children: Sequence[int],
        now: float,
    ) -> Transition:
        """[complete.once] Complete a RUNNING task under ``attempt_id`` and publish its outputs.

        Atomically: task COMPLETED; each output stored as an Artifact of the task's node and
        generation with the next run-wide ``seq`` and ``origin = task.output_origin(id)``;
        the node's ``remaining_tasks -= 1`` and, at 0 while LAUNCHED, the settle procedure with
        COMPLETED (``children`` are the node's children). An exact repeat (task COMPLETED under
        ``attempt_id``) is ``duplicate`` and publishes nothing; anything else is ``stale``.
        """
        ...

    def fail_task(
        self,
        run_id: str,
        task_id: str,
        attempt_id: str,
        error: str,
        retry_at: float | None,
        final_state: TaskState,
        children: Sequence[int],
        fail_run: RunState | None,
        now: float,
    ) -> Transition:
        """[fail.fenced] End the attempt ``attempt_id`` of a RUNNING task in failure.

        With ``retry_at``: the task goes back to QUEUED with ``not_before = retry_at`` and
        ``error`` recorded (``attempt_id`` is kept until the next claim, so a repeat is a
        ``duplicate``). Without: the task becomes ``final_state`` (FAILED or CRASHED), its node
        FAILED, the node's other unfinished tasks CANCELLED, then the settle procedure — or, if
        ``fail_run`` is given, the terminate procedure with ``fail_run``.
        """
        ...

    def suspend_task(
        self, run_id: str, task_id: str, attempt_id: str, reason: str, now: float
    ) -> Outcome:
        """[wait.fenced] RUNNING under ``attempt_id`` -> WAITING (human in the loop)."""
        ...

    def resume_task(
        self, run_id: str, task_id: str, payload: object, now: float
    ) -> tuple[Outcome, TaskRecord | None]:
        """[wait.resume] WAITING -> QUEUED with ``resume = payload`` (the next claim is a new
        attempt). A repeat while the task is no longer WAITING is ``stale``."""
        ...

    def cancel_run(self, run_id: str, reason: str, now: float) -> Transition:
        """[terminal.once] The terminate procedure with CANCELLED, if the run is not terminal.

        On a terminal run: ``duplicate`` if it is CANCELLED, else ``stale``.
        """
        ...

    def reopen_run(
        self, run_id: str, expected_retries: int, nodes: Sequence[NodeRecord], now: float
    ) -> Outcome:
        """[retry.fenced] Re-open a FAILED/CRASHED/CANCELLED run from its failure boundary.

        Applies only if the run is in one of those states and ``run.retries ==
        expected_retries``: each given node record replaces the stored one (new generation,
        WAITING, recomputed ``remaining_parents``); ``run.unsettled`` becomes the number of
        given nodes, ``failed_nodes`` 0, ``retries += 1``, state RUNNING.
        """
        ...


@runtime_checkable
class BatchedDagStore(DagStore, Protocol):
    """The optional ability ``"batched"``: many claims or completions of one run in one atomic
    step (one transaction, one Lua call), for workers that finish small tasks quickly.

    A store declares it with ``abilities = frozenset({"batched", ...})`` (declared, never
    sniffed); the kernel falls back to one call per item otherwise.
    """

    abilities: frozenset[str]

    def claim_tasks(
        self,
        run_id: str,
        claims: Sequence[tuple[str, str]],
        worker: str,
        lease_until: float | None,
        now: float,
    ) -> list[tuple[Outcome, TaskRecord | None]]:
        """[batch.claim] ``claim_task`` for each (task_id, attempt_id), atomically together;
        results in order, each as ``claim_task`` alone would have returned it in that order."""
        ...

    def complete_tasks(
        self, run_id: str, items: Sequence[CompletionItem], now: float
    ) -> list[Transition]:
        """[batch.complete] ``complete_task`` for each item, atomically together; results in
        order, each as ``complete_task`` alone would have returned it in that order."""
        ...


@runtime_checkable
class PrefetchingDagStore(DagStore, Protocol):
    """The optional ability ``"prefetch"``: the completion that makes nodes ready also returns
    what planning them needs, so a completion that releases work costs two round trips
    (complete + launch) instead of four. For stores where a read is a network round trip.
    """

    abilities: frozenset[str]

    def complete_task_prefetch(
        self,
        run_id: str,
        task_id: str,
        attempt_id: str,
        outputs: Sequence[NewArtifact],
        children: Sequence[int],
        parents: Sequence[Sequence[int]],
        now: float,
    ) -> tuple[Transition, list[NodeFacts]]:
        """[complete.prefetch] ``complete_task``, plus, in the same atomic step, the
        :class:`~interlock.records.NodeFacts` (as committed by this call) of every node in
        ``Transition.ready`` and of each of its parents (``parents[i]`` are the parents of
        ``children[i]``), each node once. Empty when nothing became ready."""
        ...


ClaimRequest = tuple[str, str, str, float | None]
"""``(task_id, attempt_id, worker, lease_until)``: the claim ``launch_and_claim`` takes."""


@runtime_checkable
class HandoverDagStore(DagStore, Protocol):
    """The optional ability ``"handover"``: a launch that also claims one of the tasks it
    writes, for the worker whose completion released the node (``Kernel.complete_and_continue``)
    — a chain step then costs two atomic calls (complete, launch + claim) instead of three.
    """

    abilities: frozenset[str]

    def launch_and_claim(
        self,
        run_id: str,
        node_index: int,
        generation: int,
        tasks: Sequence[TaskRecord],
        total_tasks: int,
        now: float,
        claim: ClaimRequest,
    ) -> tuple[Outcome, tuple[Outcome, TaskRecord | None]]:
        """[launch.claim] ``launch_node``, then — only when that is ``applied`` — in the same
        atomic step ``claim_task(run_id, *claim, now)`` (whose ``task_id`` is one of ``tasks``).
        Returns the launch outcome and the claim's result, ``("stale", None)`` when the launch
        was not applied (a duplicate launch claims nothing)."""
        ...


@runtime_checkable
class FollowingDagStore(DagStore, Protocol):
    """The optional ability ``"follow"``: a completion that releases a node can launch it (and
    claim one of its tasks) in the same atomic step, the kernel planning it from facts the store
    hands over inside that step — a chain step is then one transaction instead of two or three.
    For transactional stores, where the planning callback can run inside the transaction."""

    abilities: frozenset[str]

    def complete_and_follow(
        self,
        run_id: str,
        task_id: str,
        attempt_id: str,
        outputs: Sequence[NewArtifact],
        children: Sequence[int],
        parents: Sequence[Sequence[int]],
        now: float,
        follow: Callable[[Sequence[NodeFacts]], FollowUp | None],
    ) -> Followed:
        """[complete.follow] ``complete_task``; then, when it applied and made ready exactly
        one node whose facts the store can give (at least: its only parent is the completed
        node, that node had one task, and the task was claimed through this store object),
        ``follow(facts)`` — the ready node's facts first,
        then its parents' — is called inside the same atomic step, and a FollowUp it returns
        is applied there as ``launch_node`` (all its tasks, ``total_tasks = len(tasks)``) plus,
        if given and the launch applied, ``claim_task``. ``follow`` must not call the store;
        if it raises, nothing of the call is applied. A store that cannot call back inside its
        step may call ``follow`` before it on the facts it predicts, and apply the follow-up
        only when the step confirms those facts exactly (else the completion alone, returning
        the real facts). Returns what was applied."""
        ...


@runtime_checkable
class ManyLaunchDagStore(DagStore, Protocol):
    """The optional ability ``"launch_many"``: the launches of several nodes of one run in one
    call — one transaction, one round trip — for a completion that readies several nodes at
    once (a node with many children, a diamond closing)."""

    abilities: frozenset[str]

    def launch_nodes(self, run_id: str, launches: Sequence[NodeLaunch], now: float
                     ) -> list[Outcome]:
        """[launch.many] ``launch_node(run_id, l.node_index, l.generation, l.tasks,
        l.total_tasks, now)`` for each launch ``l``, in order; the outcomes in order, each as
        that call alone would have returned it there. The launches (of different nodes) may be
        applied in one atomic step or as consecutive steps: a launch that raises (a node the
        run does not have) leaves every later one unapplied, and the earlier ones applied or
        not, as the store's steps go."""
        ...


@runtime_checkable
class LaunchAheadDagStore(DagStore, Protocol):
    """The optional ability ``"launch_ahead"``: a launch sent without waiting for its outcome,
    so the kernel plans a wide launch's next batch while the store writes this one (for a
    store across a network, whose write time is then hidden behind the planning)."""

    abilities: frozenset[str]

    def launch_node_ahead(self, run_id: str, node_index: int, generation: int,
                          tasks: Sequence[TaskRecord], total_tasks: int, now: float
                          ) -> Callable[[], Outcome]:
        """[launch.ahead] ``launch_node`` with the same arguments, begun: the returned function
        waits for it and returns its outcome, or raises what ``launch_node`` would (after a
        StoreUnavailable the launch may or may not have applied); the call itself may raise
        so too (a request that could not be sent, or a store that applies at once and failed
        — then there is no function to call). Call the function exactly
        once, before any other call on this store from this thread except further
        ``launch_node_ahead`` calls; launches begun one after the other apply in that order.
        The kernel keeps at most two begun at once, and only for the batches after the first
        of a launch (the first one's outcome says whether the launch is the caller's)."""
        ...


@runtime_checkable
class StreamingDagStore(DagStore, Protocol):
    """The optional ability ``"stream"``: a node's artifacts read one at a time, so the kernel
    can keep a wide node's artifacts packed (:class:`~interlock.packed.PackedArtifacts`, about
    a fifth of the records' memory) instead of first holding every record at once."""

    abilities: frozenset[str]

    def iter_artifacts(self, run_id: str, node_index: int, generation: int
                       ) -> Iterable[Artifact]:
        """[artifacts.stream] Exactly what ``get_artifacts`` returns, in the same order (by
        ``seq``), one record at a time, read from one committed snapshot: an iterator, or a
        packed sequence (:class:`~interlock.packed.ArtifactTexts`,
        :class:`~interlock.packed.PackedArtifacts`) that the kernel keeps as it is. The caller
        consumes an iterator before making any other call on the store from its thread."""
        ...


@runtime_checkable
class ManyReadDagStore(DagStore, Protocol):
    """The optional ability ``"read_many"``: the artifacts of several node generations of a run
    in one call. The kernel uses it for the input of a task that holds its parents' artifacts
    by reference (an aggregate over many nodes: a join of N parents), which it would otherwise
    read one node at a time — N round trips to a store across a network."""

    abilities: frozenset[str]

    def get_artifacts_many(self, run_id: str, generations: Sequence[tuple[int, int]]
                           ) -> list[Sequence[Artifact]]:
        """[artifacts.many] ``get_artifacts(run_id, index, generation)`` of each pair, in the
        order given (a pair given twice, twice), all read from one committed snapshot: a
        sequence equal to that list of records (a wide one may be packed, as
        ``iter_artifacts`` may give it); ``[]`` for a generation that published nothing, a node
        or a run that does not exist."""
        ...
