"""The worker loop: receive tasks, claim them, run their plugins, report back, ack.

Generic over any :class:`~interlock.protocols.TaskSource` (the in-process
:class:`~interlock.runtime.QueueDispatcher`, a Redis stream, ...). Every report goes through the
kernel API, fenced by the attempt id of the claim, so duplicate deliveries and late results are
harmless. With ``batch`` > 1 a receive takes several deliveries, and the claims and the
completions of those of one run go through ``kernel.claim_tasks`` / ``kernel.on_tasks_complete``
(one store transaction or script each when the store has the ``batched`` ability).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from typing import Any, Literal

from interlock.errors import LimitExceeded, UsageError
from interlock.kernel import Kernel
from interlock.plugins import PluginRegistry, PluginSpec
from interlock.protocols import Delivery, TaskSource
from interlock.records import TaskRef
from interlock.states import TaskState
from interlock.values import Claim, task_node_slug

from ._worker_parts import (
    AttemptCrashed,
    Heartbeats,
    Invoke,
    Outputs,
    PluginError,
    TaskOutcome,
    WaitForHuman,
    call_plugin,
    near_limits,
    node_timeouts,
    repeat_while_unavailable,
    worker_name,
)

__all__ = [
    "AttemptCrashed",
    "Heartbeats",
    "Invoke",
    "PluginError",
    "TaskOutcome",
    "WaitForHuman",
    "Worker",
    "call_plugin",
    "worker_name",
]

log = logging.getLogger("interlock.runtime.worker")

_Done = tuple[TaskRef, str, Claim, Outputs, float]  # ran, to complete: ref, node, claim, ..


_COMPLETION = "worker %s: completion of task %s of run %s"

class Worker:
    """Runs tasks from ``source`` until ``stop`` is set.

    Per delivery: ``kernel.claim_task`` (compare-and-set; a lost claim is acked and skipped),
    the plugin (through ``invoke``), then ``on_task_complete`` / ``on_task_failed`` /
    ``wait_task``, then ``source.ack``. Every ``recover_interval`` seconds it calls ``recover``
    (default ``kernel.recover_expired``; checked between deliveries and between the steps of
    a chain of continuations), so expired leases are crashed and retried. A completion the
    store could not take (:class:`~interlock.StoreUnavailable`) is repeated with the same
    attempt for about 6 s (:func:`repeat_while_unavailable`: safe whether it applied or not,
    and the repeat dispatches what the first call launched). Any other error while handling
    one task is logged and the loop goes on; a failing ``receive`` is retried with
    exponential backoff (0.5 s doubling to 30 s, cut short by ``stop``).

    With ``batch`` > 1 (see :meth:`execute_batch`) a receive asks for up to ``batch``
    deliveries. The claims of a batch are taken before its plugins run, so only *fast* tasks
    are claimed together: those whose plugin has been seen to take at most ``batch_budget /
    batch`` seconds on average (moving average per plugin, in this worker). The others, and
    the first of each plugin, are claimed one at a time right before they run. The receive
    size starts at 1, doubles after each batch of fast tasks only, and falls back to 1 after
    any other, so slow tasks are not held back from idle workers (``batch_budget=math.inf``:
    every task is batched and the receive size is ``batch`` from the start). A batch in hand
    is finished when ``stop`` is set; deliveries of runs not yet claimed are left unacked.

    With ``continue_chains`` (the default), inside :meth:`run` a one-task completion goes
    through ``kernel.complete_and_continue``: when it launches tasks, the worker claims one of
    them (whose plugin it has) and runs it right after acking the delivery in hand, instead of
    sending it through the queue: a chain step costs no dispatch, receive or ack. The rest of
    what it launched is dispatched as usual. No continuation is taken once ``stop`` is set.

    When the loop ends (``stop``, an error or an abort), and before a run of continuations,
    the source's buffered acks are sent if it has a ``flush()`` method.

    A plugin raising a BaseException that is not an Exception (KeyboardInterrupt, SystemExit)
    ends the loop without reporting or acking the task (nor the rest of its batch): it stays
    RUNNING, as if the process had died. With ``on_abort`` set, the exception is handed to it
    and :meth:`run` returns; without, it propagates.
    """

    def __init__(
        self,
        kernel: Kernel,
        source: TaskSource,
        plugins: PluginRegistry,
        *,
        name: str | None = None,
        invoke: Invoke = call_plugin,
        batch: int = 1,
        batch_budget: float = 0.1,
        receive_timeout: float = 1.0,
        recover_interval: float | None = 30.0,
        recover: Callable[[], int] | None = None,
        heartbeats: Heartbeats | None = None,
        on_outcome: Callable[[TaskOutcome], None] | None = None,
        on_abort: Callable[[BaseException], None] | None = None,
        continue_chains: bool = True,
    ) -> None:
        self.kernel = kernel
        self.source = source
        self.plugins = plugins
        self.name = name
        self.invoke = invoke
        self.batch = max(1, batch)
        self.batch_budget = batch_budget
        self.receive_timeout = receive_timeout
        self.recover_interval = recover_interval
        self.recover = recover or kernel.recover_expired
        self.heartbeats = heartbeats
        self.on_outcome = on_outcome
        self.on_abort = on_abort
        self._means: dict[str, float] = {}  # per plugin: duration, moving average
        self._size = 1  # deliveries asked for by the next receive
        self._timeouts: dict[str, dict[str, Any]] = {}
        self.continue_chains = continue_chains
        self._stop: threading.Event | None = None  # set while run() loops: continuations on
        self._next: Claim | None = None  # a task a completion handed to this worker
        self._next_recover = math.inf  # monotonic time of the next lease sweep (set by run())

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set (checked after each receive and each task)."""
        name = self.name or worker_name()
        interval = self.recover_interval
        self._next_recover = time.monotonic() + interval if interval else math.inf
        failures = 0
        self._stop = stop if self.continue_chains else None
        try:
            while not stop.is_set():
                wait = min(self.receive_timeout,
                           max(0.0, self._next_recover - time.monotonic()))
                try:
                    deliveries = self.source.receive(self._receive_size(), wait)
                    failures = 0
                except Exception:  # the queue is down: back off, keep serving when it is back
                    failures += 1
                    log.exception("worker %s: receive failed (%d in a row)", name, failures)
                    stop.wait(min(30.0, 0.5 * 2 ** min(failures, 6)))
                    continue
                if self.batch > 1:
                    self._serve_batch(deliveries, name, stop)
                else:
                    self._serve_one_by_one(deliveries, name, stop)
                self._sweep(name)
        except Exception:
            log.exception("worker %s stopped by an error", name)
            raise
        except BaseException as exc:
            if self.on_abort is None:
                raise
            self.on_abort(exc)
        finally:
            self._stop = None
            self._flush_acks(name)

    def _sweep(self, name: str) -> None:
        """Call ``recover`` when ``recover_interval`` has passed since the last sweep (inside
        :meth:`run`; between deliveries and between the steps of a chain, so a worker running
        a long chain of continuations still crashes and retries expired leases)."""
        if time.monotonic() < self._next_recover:
            return
        self._next_recover = time.monotonic() + (self.recover_interval or math.inf)
        try:
            self.recover()
        except Exception:
            log.exception("worker %s: recovering expired leases failed", name)

    def _flush_acks(self, name: str) -> None:
        """Send the acks a source buffers (one with a ``flush()`` method, e.g. the Redis
        stream's), so a stopping worker leaves nothing to redeliver. A failure is logged: the
        deliveries are then redelivered and their claims refused (at least once)."""
        flush: Callable[[], None] | None = getattr(self.source, "flush", None)
        if not callable(flush):
            return
        try:
            flush()
        except Exception:
            log.exception("worker %s: sending the buffered acks failed", name)

    def execute(self, ref: TaskRef, worker: str = "") -> TaskOutcome:
        """Claim and run one task; report the result to the kernel."""
        started = time.monotonic()
        node = task_node_slug(ref.task_id)
        try:
            spec = self.plugins.resolve(ref.plugin)
        except UsageError as exc:  # not claimed: a worker that has the plugin may run it
            log.error("worker %s cannot run task %s of run %s: %s", worker, ref.task_id,
                      ref.run_id, exc)
            return self._report(ref, node, "lost", started, str(exc))
        claim = self.kernel.claim_task(ref.run_id, ref.task_id, worker=worker)
        if claim is None:
            log.debug("claim of %s/%s lost", ref.run_id, ref.task_id)
            return self._report(ref, node, "lost", started)
        return self._execute_claim(ref, node, claim, spec, started, worker)

    def _execute_claim(self, ref: TaskRef, node: str, claim: Claim, spec: PluginSpec,
                       started: float, worker: str) -> TaskOutcome:
        if self.heartbeats is not None:
            with self.heartbeats.hold(claim):
                ran = self._run(ref, node, claim, spec, started)
        else:
            ran = self._run(ref, node, claim, spec, started)
        if isinstance(ran, TaskOutcome):
            return ran
        return self._complete(ref, node, claim, ran, started, worker)

    def _continue(self, worker: str) -> None:
        """Run the tasks completions handed to this worker (chain steps), one after another."""
        if self._next is not None:
            self._flush_acks(worker)  # a chain may run long: the acked deliveries must not idle
        while self._next is not None:
            claim, self._next = self._next, None
            ref = TaskRef(claim.run_id, claim.task_id, claim.input.plugin)
            try:
                spec = self.plugins.resolve(ref.plugin)
                self._execute_claim(ref, claim.input.node, claim, spec, time.monotonic(),
                                    worker)
            except Exception:  # as for a delivery: logged, the loop goes on
                log.exception("worker %s: task %s of run %s", worker, claim.task_id,
                              claim.run_id)
            self._sweep(worker)

    def _accepts(self, ref: TaskRef) -> bool:
        return ref.plugin in self.plugins

    def execute_batch(self, refs: Sequence[TaskRef], worker: str = "") -> list[TaskOutcome]:
        """Claim and run several tasks of one run; report the results to the kernel.

        The claims are one ``kernel.claim_tasks`` call and the successful completions one
        ``kernel.on_tasks_complete`` call; the plugins run one after the other in this thread,
        and a failure, a :class:`WaitForHuman` or a crash is reported per task as
        :meth:`execute` does. A task delivered twice runs once (the copy is ``lost``). Tasks of
        nodes with ``timeout_seconds`` (whose lease is the timeout) and outputs close to a
        limit go through the one-task path.
        """
        if not refs:
            return []
        run_id = refs[0].run_id
        if any(ref.run_id != run_id for ref in refs):
            raise UsageError("execute_batch takes the tasks of one run")
        if len(refs) == 1:
            return [self.execute(refs[0], worker)]
        started = time.monotonic()
        outcomes: list[TaskOutcome] = []
        alone: list[TaskRef] = []
        batch: dict[str, tuple[TaskRef, PluginSpec]] = {}
        seen: set[str] = set()
        for ref in refs:
            node = task_node_slug(ref.task_id)
            if ref.task_id in seen:
                log.debug("claim of %s/%s lost", run_id, ref.task_id)
                outcomes.append(self._report(ref, node, "lost", started, "duplicate delivery"))
                continue
            seen.add(ref.task_id)
            try:
                spec = self.plugins.resolve(ref.plugin)
            except UsageError as exc:  # not claimed: a worker that has the plugin may run it
                log.error("worker %s cannot run task %s of run %s: %s", worker, ref.task_id,
                          run_id, exc)
                outcomes.append(self._report(ref, node, "lost", started, str(exc)))
                continue
            if not self._fast(ref.plugin) or self._node_timeout(run_id, node) is not None:
                alone.append(ref)
            else:
                batch[ref.task_id] = (ref, spec)
        if len(batch) == 1:
            alone.extend(ref for ref, _ in batch.values())
            batch.clear()
        if batch:
            outcomes.extend(self._execute_claimed(run_id, batch, worker, started))
        for ref in alone:
            outcomes.append(self.execute(ref, worker))
        return outcomes

    def _execute_claimed(self, run_id: str, batch: Mapping[str, tuple[TaskRef, PluginSpec]],
                         worker: str, started: float) -> list[TaskOutcome]:
        claims = self.kernel.claim_tasks(run_id, list(batch), worker=worker)
        won = {claim.task_id: claim for claim in claims}
        outcomes: list[TaskOutcome] = []
        for task_id, (ref, _) in batch.items():
            if task_id not in won:
                log.debug("claim of %s/%s lost", run_id, task_id)
                outcomes.append(self._report(ref, task_node_slug(task_id), "lost", started))
        done: list[_Done] = []
        errors = False  # once a task failed, each claim is checked before it runs
        with ExitStack() as held:
            if self.heartbeats is not None:
                for claim in claims:  # the claims waiting for their turn keep their lease
                    held.enter_context(self.heartbeats.hold(claim))
            for claim in claims:
                ref, spec = batch[claim.task_id]
                node = task_node_slug(claim.task_id)
                began = time.monotonic()
                if errors and not self._still_ours(claim):
                    # a failure cancelled it (fail-fast run, failed node): the one-task path
                    # would not have won this claim
                    log.debug("claim of %s/%s lost", run_id, claim.task_id)
                    outcomes.append(self._report(ref, node, "lost", began))
                    continue
                try:
                    outputs, error = self._attempt(ref, claim, spec)
                    if error is None and not near_limits(outputs, self.kernel.limits):
                        done.append((ref, node, claim, outputs, began))
                        continue
                    # reported in delivery order, as the one-task path does: the completions
                    # before this task first (a failure may end a fail-fast run)
                    outcomes.extend(self._complete_all(run_id, done, worker))
                    done = []
                    if error is not None:
                        outcomes.append(self._report_error(ref, node, claim, error, began))
                        errors = True
                    else:
                        outcomes.append(self._complete(ref, node, claim, outputs, began,
                                                       worker))
                except Exception:
                    log.exception("worker %s: task %s of run %s", worker, claim.task_id, run_id)
            outcomes.extend(self._complete_all(run_id, done, worker))
        return outcomes

    def _still_ours(self, claim: Claim) -> bool:
        task = self.kernel.store.get_task(claim.run_id, claim.task_id)
        return task is not None and task.attempt_id == claim.attempt_id \
            and task.state is TaskState.RUNNING

    def _complete_all(self, run_id: str, done: Sequence[_Done], worker: str
                      ) -> list[TaskOutcome]:
        if len(done) <= 1:
            return [self._complete(*item, worker) for item in done]
        try:
            completions = [(claim.task_id, claim.attempt_id, outputs)
                           for _, _, claim, outputs, _ in done]
            transitions = repeat_while_unavailable(
                lambda: self.kernel.on_tasks_complete(run_id, completions), self._stop,
                "worker %s: %d completions of run %s", worker, len(done), run_id)
        except UsageError:
            # a malformed output somewhere, and nothing was applied: one by one, so that only
            # the task at fault is failed
            return [self._complete(*item, worker) for item in done]
        outcomes: list[TaskOutcome] = []
        for (ref, node, _, _, began), transition in zip(done, transitions, strict=True):
            if transition.outcome == "stale":
                outcomes.append(self._report(ref, node, "lost", began, "completion was stale"))
            else:
                outcomes.append(self._report(ref, node, "completed", began))
        return outcomes

    def _run(self, ref: TaskRef, node: str, claim: Claim, spec: PluginSpec, started: float
             ) -> Outputs | TaskOutcome:
        """The plugin's outputs, or the outcome of its failure (already reported)."""
        outputs, error = self._attempt(ref, claim, spec)
        if error is not None:
            return self._report_error(ref, node, claim, error, started)
        return outputs

    def _attempt(self, ref: TaskRef, claim: Claim, spec: PluginSpec
                 ) -> tuple[Outputs, Exception | None]:
        """Run the plugin: its outputs, or the Exception it raised."""
        began = time.monotonic()
        try:
            return self.invoke(spec, claim.input), None
        except Exception as exc:
            return [], exc
        finally:
            self._observe(ref.plugin, time.monotonic() - began)

    def _report_error(self, ref: TaskRef, node: str, claim: Claim, error: Exception,
                      started: float) -> TaskOutcome:
        if isinstance(error, AttemptCrashed):
            self.kernel.on_task_crashed(ref.run_id, ref.task_id, claim.attempt_id, error)
            return self._report(ref, node, "failed", started, str(error))
        if isinstance(error, WaitForHuman):
            self.kernel.wait_task(ref.run_id, ref.task_id, claim.attempt_id, error.reason)
            return self._report(ref, node, "waiting", started, error.reason)
        return self._failed(claim, node, error, started, retryable=True)

    def _complete(self, ref: TaskRef, node: str, claim: Claim, outputs: Outputs,
                  started: float, worker: str) -> TaskOutcome:
        following: Claim | None = None
        try:
            if self._stop is not None and self._next is None and not self._stop.is_set():
                transition, following = repeat_while_unavailable(
                    lambda: self.kernel.complete_and_continue(
                        ref.run_id, ref.task_id, claim.attempt_id, outputs, worker=worker,
                        accept=self._accepts), self._stop, _COMPLETION, worker, ref.task_id,
                    ref.run_id)
                self._next = following
            else:
                transition = repeat_while_unavailable(
                    lambda: self.kernel.on_task_complete(ref.run_id, ref.task_id,
                                                         claim.attempt_id, outputs),
                    self._stop, _COMPLETION, worker, ref.task_id, ref.run_id)
        except LimitExceeded as exc:  # the kernel has already failed the task
            return self._report(ref, node, "failed", started, str(exc))
        except UsageError as exc:  # malformed outputs: nothing was written; not retryable
            return self._failed(claim, node, exc, started, retryable=False)
        if transition.outcome == "stale":
            # fenced out (the run was cancelled, or the attempt expired meanwhile): not ours
            return self._report(ref, node, "lost", started, "completion was stale")
        return self._report(ref, node, "completed", started, continues=following is not None)

    def _serve_batch(self, deliveries: Sequence[Delivery], name: str,
                     stop: threading.Event) -> None:
        """Execute ``deliveries`` run by run; ack those handled in one call."""
        by_run: dict[str, list[Delivery]] = {}
        for delivery in deliveries:
            by_run.setdefault(delivery.ref.run_id, []).append(delivery)
        handled: list[Delivery] = []
        for run_id, group in by_run.items():
            if stop.is_set():
                break  # not claimed, not acked: a durable source redelivers them
            try:
                self.execute_batch([d.ref for d in group], name)
            except Exception:
                log.exception("worker %s: %d task(s) of run %s", name, len(group), run_id)
            handled.extend(group)
        if handled:
            self.source.ack(handled)
        self._continue(name)
        fast = all(self._fast(d.ref.plugin) for d in deliveries)
        self._size = min(self.batch, 2 * self._size) if fast and deliveries else 1

    def _serve_one_by_one(self, deliveries: Sequence[Delivery], name: str,
                          stop: threading.Event) -> None:
        for delivery in deliveries:
            if stop.is_set():
                break  # not acked: a durable source redelivers it
            try:
                self.execute(delivery.ref, name)
            except Exception:
                log.exception("worker %s: task %s of run %s", name, delivery.ref.task_id,
                              delivery.ref.run_id)
            self.source.ack([delivery])
            self._continue(name)

    def _receive_size(self) -> int:
        if self.batch == 1 or self.batch_budget == math.inf:
            return self.batch
        return self._size

    def _fast(self, plugin: str) -> bool:
        if self.batch_budget == math.inf:
            return True
        mean = self._means.get(plugin)
        return mean is not None and mean * self.batch <= self.batch_budget

    def _observe(self, plugin: str, seconds: float) -> None:
        mean = self._means.get(plugin)
        if mean is None and len(self._means) >= 1024:
            self._means.clear()
        self._means[plugin] = seconds if mean is None else 0.8 * mean + 0.2 * seconds

    def _node_timeout(self, run_id: str, slug: str) -> Any:
        timeouts = self._timeouts.get(run_id)
        if timeouts is None:
            timeouts = node_timeouts(self.kernel, run_id)
            if len(self._timeouts) >= 256:
                self._timeouts.clear()
            self._timeouts[run_id] = timeouts
        return timeouts.get(slug)

    def _failed(self, claim: Claim, node: str, exc: Exception, started: float, *,
                retryable: bool) -> TaskOutcome:
        task = self.kernel.store.get_task(claim.run_id, claim.task_id)
        error = PluginError(node, claim.task_id, task.attempt if task else None, exc)
        log.warning("%s", error, exc_info=exc)
        self.kernel.on_task_failed(claim.run_id, claim.task_id, claim.attempt_id, error,
                                   retryable=retryable)
        ref = TaskRef(claim.run_id, claim.task_id, claim.input.plugin)
        return self._report(ref, node, "failed", started, str(error))

    def _report(self, ref: TaskRef, node: str,
                status: Literal["completed", "failed", "waiting", "lost"], started: float,
                error: str | None = None, *, continues: bool = False) -> TaskOutcome:
        outcome = TaskOutcome(ref, node, status, started, time.monotonic(), error, continues)
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        return outcome
