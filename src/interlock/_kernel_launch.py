"""The kernel's launch machinery: plan ready nodes and apply the decisions (launch in bounded
batches, settle, follow what they release), then dispatch after commit. Mixed into
:class:`interlock.kernel.Kernel`; kept apart so each module stays small."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence

import attrs

from interlock._ids import handover_id
from interlock._kernel_support import read_artifacts, task_records
from interlock.graph import Topology
from interlock.jsonvalues import JSON
from interlock.limits import Limits
from interlock.planning import Launch, Upstream, plan_node
from interlock.protocols import Clock, DagStore, Dispatcher
from interlock.records import (
    NodeFacts,
    NodeLaunch,
    NodeRecord,
    Outcome,
    TaskRecord,
    TaskRef,
    Transition,
)
from interlock.states import UNFINISHED_TASK_STATES, NodeState, RunState, TaskState

__all__ = ["Hold", "LaunchMixin", "RunContext", "launch_batches"]

log = logging.getLogger("interlock")


def launch_batches(count: int, limits: Limits, *, ramp: bool = True
                   ) -> Iterator[tuple[int, int]]:
    """The ``(start, end)`` task ranges a launch of ``count`` tasks is written in: with
    ``ramp``, ``launch_first_batch`` tasks first, then doubling up to ``launch_batch_size``
    (a launch that fits one full batch is ramped too); otherwise ``launch_batch_size`` each."""
    size = max(1, limits.launch_batch_size)
    step = limits.single_launch if ramp else size
    if count <= step:
        step = size
    start = 0
    while start < count:
        end = min(start + step, count)
        yield start, end
        start = end
        step = min(step * 2, size)


@attrs.frozen
class RunContext:
    """What the kernel caches per run: the compiled snapshot, the input, the policy."""

    topology: Topology
    input: dict[str, JSON]
    fail_fast: bool


@attrs.define
class Hold:
    """A request, active in one thread during one completion, to keep back (not dispatch) the
    first due task of ``run_id`` that ``accept`` takes: the caller claims and runs it itself."""

    run_id: str
    accept: Callable[[TaskRef], bool]
    worker: str = ""
    attempt_id: str = ""
    """The completing attempt: the task kept back is claimed under ``handover_id(attempt_id,
    task_id)``, which a repeat of the completion recognises (:meth:`LaunchMixin._take_back`)."""
    ref: TaskRef | None = None
    claimed: TaskRecord | None = None
    """The task a ``handover`` store claimed in the launch itself (then ``ref`` is set too)."""

    def takes(self, ref: TaskRef, now: float) -> bool:
        """Whether this hold, still empty, would keep ``ref``: a due task of its run that
        ``accept`` takes."""
        return (self.ref is None and ref.run_id == self.run_id and ref.not_before <= now
                and self.accept(ref))


def _drain(outcome_of: Callable[[], Outcome]) -> None:
    """Read the outcome of a launch sent ahead that the kernel abandons (an earlier batch
    failed or was refused): the store frees what the call holds; its error is not the one
    being raised."""
    try:
        outcome_of()
    except Exception:
        log.debug("abandoned launch batch", exc_info=True)


class LaunchMixin:
    """Needs ``store``, ``dispatcher``, ``limits``, ``clock``, ``_holds`` and the
    context/callback hooks."""

    store: DagStore
    dispatcher: Dispatcher
    limits: Limits
    clock: Clock
    _holds: threading.local
    _handover: bool
    _stream: bool
    _launch_many: bool
    _launch_ahead: bool

    def _lease(self, topology: Topology, task_id: str) -> float:
        raise NotImplementedError

    def _context(self, run_id: str) -> RunContext:
        raise NotImplementedError

    def _finished(self, run_id: str, transition: Transition, reason: str | None) -> None:
        raise NotImplementedError

    def _advance(self, run_id: str, ready: Iterable[int],
                 facts: Sequence[NodeFacts] = ()) -> None:
        """Plan and launch/settle ready nodes, following whatever they release in turn.

        ``facts`` (from the ``prefetch`` ability) stand in for reads of the nodes they cover.
        """
        context = self._context(run_id)
        topology = context.topology
        known = {f.node.index: f for f in facts}
        if isinstance(facts, list):
            facts.clear()  # handed over (see _complete_one): ``known`` holds them from here
        work = list(ready)
        # several nodes readied together: read them and their parents in one call, and each
        # parent's artifacts once (parents are settled: what one of them planned with holds
        # for the others); nodes readied later in this loop are read when planned, as usual
        together = {i for i in work if not all(p in known for p in (i, *topology.parents[i]))}
        read: dict[int, NodeRecord] = {}
        shared: dict[int, Upstream] = {}
        if len(together) > 1:
            read = {n.index: n for n in self.store.get_nodes(
                run_id, sorted({p for i in together for p in (i, *topology.parents[i])}))}
        small: list[tuple[NodeRecord, Launch]] = []  # one-batch launches, written together
        while work:
            index = work.pop(0)
            wanted = [index, *topology.parents[index]]
            if all(i in known for i in wanted):
                nodes = {i: known[i].node for i in wanted}
                memo = {i: Upstream(known[i].node.state, known[i].artifacts) for i in wanted}
            elif index in together and read:
                together.discard(index)
                nodes, memo = {i: read[i] for i in wanted}, shared
            else:
                nodes = {n.index: n for n in self.store.get_nodes(run_id, wanted)}
                memo = {}
            node = nodes[index]
            if node.state is not NodeState.WAITING:
                continue
            decision = plan_node(topology, index, self._lookup(run_id, nodes, memo),
                                 context.input, self.limits)
            if isinstance(decision, Launch):
                if decision.count > self.limits.launch_batch_size:
                    # a wide launch: the planned artifacts stay only in the decision, which
                    # lets them go batch by batch as they are written (later nodes read the
                    # store instead of the facts)
                    known.clear()
                    memo.clear()
                if self._launch_many and 0 < decision.count <= self.limits.single_launch:
                    small.append((node, decision))
                    continue
                self._launch(run_id, context, node, decision)
                continue
            fail_run = RunState.FAILED if (
                decision.state is NodeState.FAILED and context.fail_fast) else None
            transition = self.store.settle_node(
                run_id, index, node.generation, decision.state, decision.reason,
                topology.children[index], fail_run, self.clock.now())
            work.extend(transition.ready)
            self._finished(run_id, transition, decision.reason)
        self._launch_small(run_id, context, small)

    def _launch_small(self, run_id: str, context: RunContext,
                      launches: Sequence[tuple[NodeRecord, Launch]]) -> None:
        """Launches that fit one batch each: with the ``launch_many`` ability several go in
        one ``launch_nodes`` call (one transaction / round trip), then the tasks of the
        applied ones in one dispatch; a single one takes the usual path (which may hand a task
        over)."""
        if len(launches) == 1:
            node, decision = launches[0]
            self._launch(run_id, context, node, decision)
        if len(launches) <= 1:
            return
        topology = context.topology
        now = self.clock.now()
        batches = [NodeLaunch(node.index, node.generation,
                              tuple(task_records(run_id, topology, node,
                                                 decision.plans(0, decision.count), now)),
                              decision.count)
                   for node, decision in launches]
        outcomes = self.store.launch_nodes(  # type: ignore[attr-defined]
            run_id, batches, self.clock.now())
        launched: list[TaskRecord] = []
        for (_, decision), batch, outcome in zip(launches, batches, outcomes, strict=True):
            decision.release(decision.count)
            if outcome == "applied":  # else someone else launched it, or the run ended
                launched.extend(batch.tasks)
        self._dispatch(run_id, topology, launched)

    def _lookup(self, run_id: str, nodes: dict[int, NodeRecord],
                memo: dict[int, Upstream] | None = None) -> Callable[[int], Upstream]:
        memo = {} if memo is None else memo

        def lookup(index: int) -> Upstream:
            if index not in memo:
                if index not in nodes:
                    nodes[index] = self.store.get_nodes(run_id, [index])[0]
                node = nodes[index]
                artifacts = (read_artifacts(self.store, self._stream, run_id, index,
                                            node.generation)
                             if node.state is NodeState.COMPLETED else [])
                memo[index] = Upstream(node.state, artifacts)
            return memo[index]

        return lookup

    def _launch(self, run_id: str, context: RunContext, node: NodeRecord,
                decision: Launch) -> None:
        """Write the tasks in bounded batches, dispatching each batch after it commits.

        The first batch claims the node (with the total task count, so the barrier cannot
        fire early); later batches append. A crash in between is repaired by reconcile_run.
        """
        self._write_batches(run_id, context.topology, node, decision, decision.count,
                            claim=True)

    def _relaunch(self, run_id: str, node: NodeRecord) -> None:
        """Re-plan a LAUNCHED node and write the tasks a crash left unwritten (planning is
        deterministic, so the same task ids come out; stored ones are kept). Not dispatched
        here: reconcile_run re-dispatches every QUEUED task afterwards."""
        context = self._context(run_id)
        topology = context.topology
        nodes = {n.index: n for n in self.store.get_nodes(run_id, topology.parents[node.index])}
        decision = plan_node(topology, node.index, self._lookup(run_id, nodes), context.input,
                             self.limits)
        if isinstance(decision, Launch):
            self._write_batches(run_id, topology, node, decision, node.total_tasks, claim=False)

    def _write_batches(self, run_id: str, topology: Topology, node: NodeRecord,
                       decision: Launch, total: int, *, claim: bool) -> None:
        """``launch_node`` per batch (:func:`launch_batches`). With ``claim`` (a new launch)
        the batches ramp up from ``launch_first_batch``; stop when someone else holds the node
        or the run ended, and dispatch each batch after it commits, so workers start on it
        while the rest is written. Without (a repair, nothing dispatched) append whatever is
        missing in full ``launch_batch_size`` batches.

        With the ``launch_ahead`` ability, a new launch's batches after the first are sent
        ahead: batch k+1 is planned and sent before batch k's outcome is read (then batch k is
        dispatched), so the store writes while the kernel plans."""
        ahead = claim and self._launch_ahead
        begun: tuple[Callable[[], Outcome], list[TaskRecord], int] | None = None
        try:
            for start, end in launch_batches(decision.count, self.limits, ramp=claim):
                # planned here, batch by batch: a wide launch never holds every task at once
                batch = task_records(run_id, topology, node, decision.plans(start, end),
                                     self.clock.now())
                if ahead and start > 0:
                    sent = self.store.launch_node_ahead(  # type: ignore[attr-defined]
                        run_id, node.index, node.generation, batch, total, self.clock.now())
                    earlier, begun = begun, (sent, batch, start)
                    if earlier is not None and not self._landed(run_id, topology, decision,
                                                                *earlier):
                        return
                    continue
                outcome = self._launch_and_claim(run_id, topology, node, batch, total) \
                    if claim and start == 0 else None
                if outcome is None:
                    outcome = self.store.launch_node(run_id, node.index, node.generation,
                                                     batch, total, self.clock.now())
                decision.release(start + len(batch))
                if not claim:
                    continue
                if outcome == "stale" or (start == 0 and outcome == "duplicate"):
                    return  # someone else launched it (or the run ended): theirs to finish
                self._dispatch(run_id, topology, batch)
            if begun is not None:
                last, begun = begun, None
                self._landed(run_id, topology, decision, *last)
        finally:
            if begun is not None:  # not to be applied by us, but its reply must be read
                _drain(begun[0])

    def _landed(self, run_id: str, topology: Topology, decision: Launch,
                outcome_of: Callable[[], Outcome], batch: list[TaskRecord], start: int
                ) -> bool:
        """Wait for a batch sent ahead and dispatch it; False when the launch is no longer
        ours to write (the run ended: the batch was refused)."""
        outcome = outcome_of()
        decision.release(start + len(batch))
        if outcome == "stale":
            return False
        self._dispatch(run_id, topology, batch)
        return True

    def _launch_and_claim(self, run_id: str, topology: Topology, node: NodeRecord,
                          batch: Sequence[TaskRecord], total: int) -> Outcome | None:
        """A launch that also claims a task for the caller, or None: launch plainly (the
        continuation mixin overrides this)."""
        return None

    def _advance_children(self, run_id: str, index: int) -> None:
        """Repair what a completion of node ``index`` released, after a repeated call found
        the completion applied already ('duplicate'): the first call may have stopped anywhere
        after its commit (reply lost, process gone) — before launching a released child,
        between the batches of its launch, or before dispatching it. Plans the children that
        are ready, writes what is missing of launched ones, and re-dispatches their QUEUED
        tasks (at least once: a task already in the queue is delivered twice, and its second
        claim is refused as stale)."""
        topology = self._context(run_id).topology
        children = topology.children[index]
        if not children:
            return
        nodes = self.store.get_nodes(run_id, children)
        ready = [n.index for n in nodes
                 if n.state is NodeState.WAITING and n.remaining_parents == 0]
        self._advance(run_id, ready)
        for node in nodes:
            if node.state is NodeState.LAUNCHED:
                tasks = self._finish_launch(run_id, node)
                self._take_back(run_id, topology, tasks)
                self._dispatch(run_id, topology,
                               [t for t in tasks if t.state is TaskState.QUEUED])

    def _take_back(self, run_id: str, topology: Topology, tasks: Sequence[TaskRecord]) -> None:
        """With an active, empty :class:`Hold`: the task among ``tasks`` that the lost first
        call of this completion claimed for its caller (RUNNING under the hand-over attempt
        id) is handed over again, instead of waiting for its lease to expire."""
        hold: Hold | None = getattr(self._holds, "hold", None)
        if hold is None or hold.run_id != run_id or hold.ref is not None or not hold.attempt_id:
            return
        for task in tasks:
            if task.state is TaskState.RUNNING and \
                    task.attempt_id == handover_id(hold.attempt_id, task.task_id):
                hold.ref = TaskRef(run_id, task.task_id, topology.node(task.node_index).plugin,
                                   task.not_before)
                hold.claimed = task
                return

    def _finish_launch(self, run_id: str, node: NodeRecord) -> list[TaskRecord]:
        """The tasks of LAUNCHED ``node``'s generation, once the tasks a crash left unwritten
        of its launch are written (:meth:`_relaunch`; not dispatched there)."""
        def current() -> list[TaskRecord]:
            return [t for t in self.store.list_tasks(run_id, node_index=node.index)
                    if t.generation == node.generation]  # earlier generations' tasks stay

        tasks = current()
        if len(tasks) < node.total_tasks:
            self._relaunch(run_id, node)
            tasks = current()
        return tasks

    def _queued_after_relaunches(self, run_id: str, nodes: Sequence[NodeRecord]
                                 ) -> list[TaskRecord]:
        """The run's QUEUED tasks, once every launch of ``nodes`` a crash cut short is
        finished (``reconcile_run``). A LAUNCHED node's launch is whole when its unfinished
        tasks of the current generation number its ``remaining_tasks`` (the launch's total
        less the completed ones): one read of the unfinished tasks tells, and only a node
        short of tasks is read whole — not every task of every launched node (which took
        5.6-6.7 s on Redis for a run of 100,000 tasks, half queued). A completion between the
        reads can only make a node look short: then it is read and found whole."""
        unfinished = self.store.list_tasks(run_id, states=UNFINISHED_TASK_STATES)
        held = Counter((t.node_index, t.generation) for t in unfinished)
        short = [node for node in nodes if node.state is NodeState.LAUNCHED
                 and held[node.index, node.generation] < node.remaining_tasks]
        for node in short:
            self._finish_launch(run_id, node)
        if short:
            return self.store.list_tasks(run_id, states=[TaskState.QUEUED])
        return [t for t in unfinished if t.state is TaskState.QUEUED]

    def _dispatch(self, run_id: str, topology: Topology, tasks: Sequence[TaskRecord]) -> None:
        if not tasks:
            return
        refs = [TaskRef(run_id, t.task_id, topology.node(t.node_index).plugin, t.not_before)
                for t in tasks]
        self._send(self._keep_back(run_id, refs))

    def _keep_back(self, run_id: str, refs: list[TaskRef]) -> list[TaskRef]:
        """``refs`` less the one task an active :class:`Hold` of this thread takes."""
        hold: Hold | None = getattr(self._holds, "hold", None)
        if hold is None or hold.run_id != run_id:
            return refs
        if hold.claimed is not None:  # claimed by the launch: never dispatched
            return [ref for ref in refs if ref.task_id != hold.claimed.task_id]
        if hold.ref is not None:
            return refs
        now = self.clock.now()
        for position, ref in enumerate(refs):
            if hold.takes(ref, now):
                hold.ref = ref
                return [*refs[:position], *refs[position + 1:]]
        return refs

    def _send(self, refs: Sequence[TaskRef]) -> None:
        if not refs:
            return
        try:
            self.dispatcher.dispatch(refs)
        except Exception:  # tasks stay QUEUED; reconcile_run re-dispatches them
            log.exception("dispatch of %d task(s) of run %s failed", len(refs),
                          refs[0].run_id)
