"""The kernel API: thin, synchronous, applies the core's decisions through the protocols.

Each method loads what it needs through the :class:`~interlock.protocols.DagStore`, asks the
pure core (:mod:`interlock.planning`, :mod:`interlock.graph`), applies the result with one
atomic store call, then — after that call returned, i.e. after commit — dispatches tasks and
fires run callbacks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from interlock._ids import handover_id, new_id
from interlock._kernel_context import ContextMixin, fail_fast
from interlock._kernel_follow import FollowMixin, accept_any
from interlock._kernel_launch import Hold, RunContext
from interlock._kernel_support import (
    error_text,
    json_object,
    json_value,
    outputs_to_artifacts,
)
from interlock.errors import ConflictError, LimitExceeded, UsageError
from interlock.graph import PluginCatalog, Topology, validate
from interlock.jsonvalues import JSON
from interlock.limits import DEFAULT_LIMITS, Limits
from interlock.model import Pipeline
from interlock.protocols import Clock, DagStore, Dispatcher
from interlock.records import (
    CompletionItem,
    NewArtifact,
    NodeFacts,
    NodeRecord,
    RunRecord,
    TaskRef,
    Transition,
)
from interlock.states import NodeState, RunState, TaskState
from interlock.values import Claim, Output, RunFinished, TaskInput

__all__ = ["Kernel", "SystemClock"]

log = logging.getLogger("interlock")


class SystemClock:
    """Wall-clock time (``time.time``)."""

    def now(self) -> float:
        return time.time()


class _NullDispatcher:
    def dispatch(self, tasks: Sequence[TaskRef]) -> None:
        """Workers poll the store instead."""


class Kernel(ContextMixin, FollowMixin):
    """Drives DAG runs stored in ``store``; hands ready tasks to ``dispatcher``.

    Safe to share between threads and to run in many processes against one store: every state
    change is one atomic, fenced store call.
    """

    def __init__(
        self,
        store: DagStore,
        dispatcher: Dispatcher | None = None,
        *,
        plugins: PluginCatalog | None = None,
        limits: Limits = DEFAULT_LIMITS,
        clock: Clock | None = None,
        on_run_finished: Callable[[RunFinished], None] | None = None,
        lease_seconds: float = 300.0,
        crash_attempts: int = 3,
    ) -> None:
        self.store = store
        self.dispatcher: Dispatcher = dispatcher or _NullDispatcher()
        self.plugins = plugins
        self.limits = limits
        self.clock: Clock = clock or SystemClock()
        self.on_run_finished = on_run_finished
        self.lease_seconds = lease_seconds
        self.crash_attempts = crash_attempts
        # declared, never sniffed: a store opts in with abilities = {"batched", ...}
        abilities: frozenset[str] = getattr(store, "abilities", frozenset())
        self._batched = "batched" in abilities
        self._prefetch = "prefetch" in abilities
        self._handover = "handover" in abilities
        self._follow = "follow" in abilities
        self._stream = "stream" in abilities
        self._launch_many = "launch_many" in abilities
        self._launch_ahead = "launch_ahead" in abilities
        self._read_many = "read_many" in abilities
        self._contexts: OrderedDict[str, RunContext] = OrderedDict()
        self._topologies: OrderedDict[bytes, Topology] = OrderedDict()
        self._lock = threading.Lock()
        self._holds = threading.local()

    # ---- runs ----------------------------------------------------------------------------

    def start_run(
        self,
        pipeline: Pipeline | Mapping[str, Any],
        input: Mapping[str, JSON] | None = None,
        *,
        run_id: str | None = None,
    ) -> RunRecord:
        """Validate, store the run with its pipeline snapshot, launch the roots.

        Idempotent per ``run_id``: a repeat with the same pipeline and input returns the run
        (and repairs an interrupted start); different arguments raise ConflictError.
        """
        topology = validate(pipeline, self.plugins)
        run_input = json_object(input or {}, "input")
        run_id = run_id or new_id()
        now = self.clock.now()
        snapshot = topology.pipeline.to_dict()
        run = RunRecord(run_id, snapshot, run_input, RunState.RUNNING, len(topology.slugs),
                        len(topology.slugs), created_at=now, updated_at=now)
        nodes = [NodeRecord(i, 0, NodeState.WAITING, len(topology.parents[i]))
                 for i in range(len(topology.slugs))]
        stored, created = self.store.create_run(run, nodes)
        if not created:
            if stored.pipeline != snapshot or stored.input != run_input:
                raise ConflictError(f"run {run_id!r} exists with a different pipeline or input")
            self.reconcile_run(run_id)
        else:
            self._remember(run_id, RunContext(topology, run_input, fail_fast(topology)))
            self._advance(run_id, topology.roots)
        return self.store.get_run(run_id) or stored

    def cancel_run(self, run_id: str, reason: str = "cancelled") -> Transition:
        """Cancel the run: terminal state and cancellation of unfinished work, together."""
        transition = self.store.cancel_run(run_id, reason, self.clock.now())
        self._finished(run_id, transition, reason)
        return transition

    def retry_run(self, run_id: str) -> RunRecord:
        """Re-open a failed/crashed/cancelled run from its failure boundary.

        Nodes that did not complete (or get filtered), and their descendants, get a new
        generation; completed upstream work is kept.
        """
        run = self._run(run_id)
        if run.state not in (RunState.FAILED, RunState.CRASHED, RunState.CANCELLED):
            raise UsageError(f"run {run_id!r} is {run.state.value}; only failed, crashed or "
                             "cancelled runs can be retried")
        topology = self._context(run_id).topology
        nodes = self.store.get_nodes(run_id)
        reset: set[int] = set()
        for node in nodes:
            if node.state not in (NodeState.COMPLETED, NodeState.FILTERED):
                reset.add(node.index)
                reset |= topology.descendants(node.index)
        fresh = [
            NodeRecord(i, nodes[i].generation + 1, NodeState.WAITING,
                       sum(1 for p in topology.parents[i] if p in reset))
            for i in sorted(reset)
        ]
        outcome = self.store.reopen_run(run_id, run.retries, fresh, self.clock.now())
        if outcome == "applied":
            self._advance(run_id, [n.index for n in fresh if n.remaining_parents == 0])
        return self._run(run_id)

    def reconcile_run(self, run_id: str, *, queued_for: float | None = None) -> int:
        """Converge the run from persisted state; idempotent, callable any time.

        Plans every WAITING node whose parents have all settled, completes interrupted batched
        launches, and re-dispatches every QUEUED task — or, with ``queued_for``, only those
        due for at least that many seconds (``max(updated_at, not_before) <= now -
        queued_for``: QUEUED since then, so a dispatch was lost or its ref is still waiting in
        a backlog). A periodic sweep passes a bound on the queue's latency, so that each pass
        does not put a second copy of every waiting ref in the queue. Returns the number of
        tasks dispatched.
        """
        if queued_for is not None and (isinstance(queued_for, bool) or not isinstance(
                queued_for, int | float) or not queued_for >= 0):
            raise UsageError(f"reconcile_run: queued_for must be a number of seconds >= 0, "
                             f"got {queued_for!r}")
        run = self._run(run_id)
        if run.state.terminal:
            return 0
        topology = self._context(run_id).topology
        nodes = self.store.get_nodes(run_id)
        ready = [
            n.index for n in nodes
            if n.state is NodeState.WAITING
            and all(nodes[p].state.settled for p in topology.parents[n.index])
        ]
        self._advance(run_id, ready)
        queued = self._queued_after_relaunches(run_id, nodes)
        if queued_for is not None:
            since = self.clock.now() - queued_for
            queued = [t for t in queued if max(t.updated_at, t.not_before) <= since]
        self._dispatch(run_id, topology, queued)
        return len(queued)

    # ---- tasks ---------------------------------------------------------------------------

    def claim_task(
        self, run_id: str, task_id: str, *, worker: str = "", attempt_id: str | None = None
    ) -> Claim | None:
        """Compare-and-set the task to RUNNING under a new attempt; None if another delivery
        won, the run is over, or the task is not due yet. Repeating with the same
        ``attempt_id`` returns the same claim."""
        context = self._context(run_id)
        attempt_id = attempt_id or new_id()
        now = self.clock.now()
        lease_until = now + self._lease(context.topology, task_id)
        outcome, task = self.store.claim_task(run_id, task_id, attempt_id, worker, lease_until,
                                              now)
        if outcome == "stale" or task is None:
            return None
        return Claim(run_id, task_id, attempt_id, self._input(context, task))

    def claim_tasks(
        self, run_id: str, task_ids: Sequence[str], *, worker: str = ""
    ) -> list[Claim]:
        """Claim several tasks of one run at once (one store transaction when the store has
        the ``batched`` ability); returns the claims won, in order."""
        context = self._context(run_id)
        topology = context.topology
        leases = [self._lease(topology, t) for t in task_ids]
        pairs = [(task_id, new_id()) for task_id in task_ids]
        now = self.clock.now()
        lease_until = now + min(leases, default=self.lease_seconds)
        if self._batched:
            results = self.store.claim_tasks(  # type: ignore[attr-defined]
                run_id, pairs, worker, lease_until, now)
        else:
            results = [self.store.claim_task(run_id, t, a, worker, lease_until, now)
                       for t, a in pairs]
        return [
            Claim(run_id, task_id, attempt_id, self._input(context, task))
            for (task_id, attempt_id), (outcome, task) in zip(pairs, results, strict=True)
            if outcome != "stale" and task is not None
        ]

    def build_task_input(self, run_id: str, task_id: str) -> TaskInput:
        """The task's planned input: artifacts per dependency and resolved bindings."""
        context = self._context(run_id)
        task = self.store.get_task(run_id, task_id)
        if task is None:
            raise UsageError(f"run {run_id!r} has no task {task_id!r}")
        return self._input(context, task)

    def heartbeat(self, run_id: str, task_id: str, attempt_id: str) -> bool:
        """Extend the attempt's lease; False if the attempt is no longer current."""
        until = self.clock.now() + self._lease(self._context(run_id).topology, task_id)
        return self.store.heartbeat(run_id, task_id, attempt_id, until)

    def on_task_complete(
        self,
        run_id: str,
        task_id: str,
        attempt_id: str,
        outputs: Iterable[Output | Mapping[str, Any]] = (),
    ) -> Transition:
        """Record the attempt's success and publish its outputs; launch what became ready.

        Malformed outputs raise UsageError and change nothing. Outputs over a limit fail the
        task (no retry) and raise LimitExceeded naming the limit. After an error (e.g.
        StoreUnavailable) repeat the call with the same attempt: it applies once; a repeat of
        an applied call returns 'duplicate' and finishes and re-dispatches what the first
        call released (see ``_advance_children``).
        """
        context = self._context(run_id)
        index = self._node_index(context.topology, task_id)
        try:
            artifacts = outputs_to_artifacts(task_id, outputs, self.limits)
        except LimitExceeded as exc:
            self._fail(run_id, task_id, attempt_id, str(exc), TaskState.FAILED, retryable=False)
            raise
        box: list[Sequence[NewArtifact]] = [artifacts]
        del artifacts  # handed over in a box: planning what it released runs without them
        return self._complete_one(run_id, context, index, task_id, attempt_id, box)

    def _complete_one(self, run_id: str, context: RunContext, index: int, task_id: str,
                      attempt_id: str, box: list[Sequence[NewArtifact]]) -> Transition:
        """Complete one task with the outputs in ``box`` (emptied here: once the store has
        published them, the kernel no longer holds a large output list while it plans)."""
        artifacts = box.pop()
        children = context.topology.children[index]
        facts: Sequence[NodeFacts] = []
        transition: Transition
        if self._follow:
            transition, facts, launched = self._complete_following(
                run_id, context, task_id, attempt_id, artifacts, children)
            if launched:  # the store launched what the completion released, in its step
                self._finished(run_id, transition, None)
                return transition
        elif self._prefetch:
            transition, facts = self.store.complete_task_prefetch(  # type: ignore[attr-defined]
                run_id, task_id, attempt_id, artifacts, children,
                [context.topology.parents[c] for c in children], self.clock.now())
        else:
            transition = self.store.complete_task(run_id, task_id, attempt_id, artifacts,
                                                  children, self.clock.now())
        del artifacts
        if transition.outcome == "duplicate":
            # the first call may have died before launching what it released: re-check
            self._advance_children(run_id, index)
        # handed over as a list that _advance empties once read: a wide launch's artifacts are
        # not kept alive by this frame while they are written batch by batch
        handed = list(facts)
        del facts
        self._after(run_id, transition, facts=handed)
        return transition

    def complete_and_continue(
        self,
        run_id: str,
        task_id: str,
        attempt_id: str,
        outputs: Iterable[Output | Mapping[str, Any]] = (),
        *,
        worker: str = "",
        accept: Callable[[TaskRef], bool] | None = None,
    ) -> tuple[Transition, Claim | None]:
        """``on_task_complete``, and when it launched tasks, one of them (the first that is due
        and that ``accept`` takes) is claimed for the caller instead of being dispatched.

        For a worker that runs the returned claim next: a chain step then skips the queue
        (dispatch, receive, ack). The claim is an ordinary claim: its lease covers a caller
        that dies before reporting it. The window between the launch commit and the claim is
        the same as between any launch and its dispatch: a process dying there leaves the task
        QUEUED until ``reconcile_run``. Should the claim fail or raise, the task is dispatched.
        With a ``handover`` store the launch itself claims the task (one atomic call). The
        claim's attempt id derives from ``attempt_id`` and the task's id, so a repeat of a call
        whose reply was lost returns the claim that call made.
        """
        hold = Hold(run_id, accept or accept_any, worker, attempt_id)
        self._holds.hold = hold
        try:
            transition = self.on_task_complete(run_id, task_id, attempt_id, outputs)
        except BaseException:
            self._holds.hold = None
            self._release(hold)
            raise
        self._holds.hold = None
        if hold.claimed is not None:
            task = hold.claimed
            assert task.attempt_id is not None  # a claimed task has its attempt
            return transition, Claim(run_id, task.task_id, task.attempt_id,
                                     self._input(self._context(run_id), task))
        if hold.ref is None:
            return transition, None
        try:
            claim = self.claim_task(run_id, hold.ref.task_id, worker=worker,
                                    attempt_id=handover_id(attempt_id, hold.ref.task_id))
        except BaseException:
            self._release(hold)
            raise
        if claim is None:
            self._release(hold)  # not ours after all: whoever may run it gets it
        return transition, claim

    def on_tasks_complete(
        self,
        run_id: str,
        completions: Sequence[tuple[str, str, Iterable[Output | Mapping[str, Any]]]],
    ) -> list[Transition]:
        """Apply many completions ``(task_id, attempt_id, outputs)`` of one run together (one
        store transaction when the store has the ``batched`` ability), then launch what they
        released. Malformed outputs raise UsageError before anything is applied; an item over
        a limit fails that task alone (its Transition is the failure's)."""
        context = self._context(run_id)
        topology = context.topology
        items: list[CompletionItem] = []
        failed: dict[int, Transition] = {}
        for position, (task_id, attempt_id, outputs) in enumerate(completions):
            children = topology.children[self._node_index(topology, task_id)]
            try:
                artifacts = tuple(outputs_to_artifacts(task_id, outputs, self.limits))
            except LimitExceeded as exc:
                failed[position] = self._fail(run_id, task_id, attempt_id, str(exc),
                                              TaskState.FAILED, retryable=False)
                continue
            items.append(CompletionItem(task_id, attempt_id, artifacts, children))
        now = self.clock.now()
        if len(items) == 1 and (self._prefetch or self._follow) and not failed:
            # a batch of one (e.g. a chain step): the prefetching or following path saves reads
            (item,) = items
            index = self._node_index(topology, item.task_id)
            return [self._complete_one(run_id, context, index, item.task_id, item.attempt_id,
                                       [item.outputs])]
        if self._batched:
            applied = self.store.complete_tasks(run_id, items, now)  # type: ignore[attr-defined]
        else:
            applied = [self.store.complete_task(run_id, i.task_id, i.attempt_id, i.outputs,
                                                i.children, now) for i in items]
        ready: list[int] = []
        for item, transition in zip(items, applied, strict=True):
            ready.extend(transition.ready)
            if transition.outcome == "duplicate":
                self._advance_children(run_id, self._node_index(topology, item.task_id))
            self._finished(run_id, transition, None)
        self._advance(run_id, ready)
        results = iter(applied)
        return [failed[p] if p in failed else next(results) for p in range(len(completions))]

    def on_task_failed(
        self, run_id: str, task_id: str, attempt_id: str, error: str | BaseException,
        *, retryable: bool = True,
    ) -> Transition:
        """The attempt failed (the plugin raised): retry per the node's policy, or fail."""
        return self._fail(run_id, task_id, attempt_id, error_text(error), TaskState.FAILED,
                          retryable=retryable)

    def on_task_crashed(
        self, run_id: str, task_id: str, attempt_id: str, error: str | BaseException
    ) -> Transition:
        """The attempt died (worker lost, lease expired): retried up to
        ``max(retry.max_attempts, crash_attempts)`` attempts, then the task CRASHED."""
        return self._fail(run_id, task_id, attempt_id, error_text(error), TaskState.CRASHED,
                          retryable=True)

    def wait_task(self, run_id: str, task_id: str, attempt_id: str, reason: str = "") -> str:
        """Park a running task for a human (the worker is released); ``resume_task`` later."""
        return self.store.suspend_task(run_id, task_id, attempt_id, reason, self.clock.now())

    def resume_task(self, run_id: str, task_id: str, payload: JSON = None) -> str:
        """Re-queue a WAITING task with ``payload`` (in its input's ``resume``); dispatch it."""
        outcome, task = self.store.resume_task(run_id, task_id, json_value(payload, "payload"),
                                               self.clock.now())
        if outcome == "applied" and task is not None:
            self._dispatch(run_id, self._context(run_id).topology, [task])
        return outcome

    def recover_expired(self, now: float | None = None, limit: int = 1000) -> int:
        """Treat every RUNNING attempt whose lease ran out as crashed. Returns how many."""
        expired = self.store.list_expired(self.clock.now() if now is None else now, limit)
        for task in expired:
            if task.attempt_id is not None:
                self.on_task_crashed(task.run_id, task.task_id, task.attempt_id,
                                     "attempt lease expired")
        return len(expired)

    # ---- internals -----------------------------------------------------------------------

    def _fail(self, run_id: str, task_id: str, attempt_id: str, error: str,
              final: TaskState, *, retryable: bool) -> Transition:
        context = self._context(run_id)
        index = self._node_index(context.topology, task_id)
        task = self.store.get_task(run_id, task_id)
        if task is None:
            raise UsageError(f"run {run_id!r} has no task {task_id!r}")
        policy = context.topology.node(index).retry
        allowed = policy.max_attempts
        if final is TaskState.CRASHED:
            allowed = max(allowed, self.crash_attempts)
        now = self.clock.now()
        retry_at = now + policy.delay(task.attempt) if retryable and task.attempt < allowed \
            else None
        fail_run = None
        if context.fail_fast:
            fail_run = RunState.CRASHED if final is TaskState.CRASHED else RunState.FAILED
        transition = self.store.fail_task(run_id, task_id, attempt_id, error, retry_at, final,
                                          context.topology.children[index], fail_run, now)
        if transition.applied and retry_at is not None:
            self._dispatch(run_id, context.topology,
                           [attrs.evolve(task, not_before=retry_at)])
        self._after(run_id, transition, error)
        return transition

    def _after(self, run_id: str, transition: Transition, reason: str | None = None,
               facts: Sequence[NodeFacts] = ()) -> None:
        if transition.ready:
            self._advance(run_id, transition.ready, facts)
        self._finished(run_id, transition, reason)

    def _finished(self, run_id: str, transition: Transition, reason: str | None) -> None:
        if transition.run_state is None or self.on_run_finished is None:
            return
        try:
            self.on_run_finished(RunFinished(run_id, transition.run_state, reason))
        except Exception:  # the transition has committed; a callback bug must not undo it
            log.exception("on_run_finished callback failed for run %s", run_id)
