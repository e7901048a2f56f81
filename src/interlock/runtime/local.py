"""Run a pipeline to completion on this machine: N worker threads, or N worker processes.

The runner is ordinary kernel-API client code: an in-process :class:`QueueDispatcher`, a
:class:`~interlock.kernel.Kernel` over the given store, and :class:`Worker` loops. It waits for
the end of the run through the kernel's ``on_run_finished`` callback and a
:class:`threading.Event` — never a sleep loop.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from interlock.errors import UsageError
from interlock.graph import validate
from interlock.jsonvalues import JSON
from interlock.kernel import Kernel
from interlock.limits import Limits
from interlock.model import Pipeline
from interlock.plugins import PluginRegistry, default_registry
from interlock.protocols import Clock, DagStore, Dispatcher
from interlock.records import RunRecord
from interlock.states import TaskState
from interlock.stores import open_store
from interlock.values import RunFinished

from .procchild import recover_run
from .processes import ProcessInvoker, process_reference
from .procworkers import ProcessLink, WorkerProcesses
from .queue import QueueDispatcher
from .summary import Progress, RunResult, progress, summarize
from .worker import Heartbeats, Invoke, TaskOutcome, Worker, call_plugin, worker_name

__all__ = ["LocalRunner"]

log = logging.getLogger("interlock.runtime.local")

Mode = Literal["threads", "processes"]

PROCESS_BATCH = 64
"""Default ``batch`` of worker processes that have their own store connection."""


class LocalRunner:
    """Executes runs stored in ``store`` with ``workers`` workers on this machine.

    - ``mode="threads"``: plugins run in worker threads of this process.
    - ``mode="processes"``: ``workers`` child processes; plugins must be importable as
      ``module:function`` and their outputs picklable. When the store can be opened again
      elsewhere (it has a ``url`` that :func:`~interlock.stores.open_store` opens, as
      ``SqliteStore`` has, or ``store`` was given as such a URL), each child has its own
      kernel, store connection and batching Worker loop, and this process only starts,
      watches and ends runs (:mod:`interlock.runtime.procworkers`); the children start once,
      with the first run, and serve every later run of this runner until :meth:`close` (or
      interpreter exit). Otherwise (e.g. a MemoryStore) the kernel and the store stay in this
      process with ``workers`` threads, and only the plugin calls go to a process pool.

    :meth:`run` starts a run, :meth:`resume` continues an interrupted one, :meth:`retry`
    re-opens a failed/crashed/cancelled one; each returns when the run has ended (or cannot
    progress without a human, or :meth:`stop` was called) with a :class:`RunResult`.

    Ctrl-C (a KeyboardInterrupt in the calling thread, or raised by a plugin) cancels the run —
    one atomic store call: the run is CANCELLED with its unfinished tasks — and re-raises the
    KeyboardInterrupt; worker processes are killed (and started again by the next run). Any
    other BaseException raised by a plugin (e.g. SystemExit) abandons the execution as a dying
    process would: nothing more is written, the run stays RUNNING and :meth:`resume`
    continues it; the exception is re-raised. A worker process that dies (a plugin calling
    ``os._exit``, the OOM killer) is replaced; the attempts it held are reported crashed and
    retried per the crash policy.

    ``on_progress`` receives :class:`Progress` events from worker threads (processes mode:
    from the thread that reads the children's reports), at most one per
    ``progress_interval`` seconds, plus a first and a ``final`` one.

    ``batch``: deliveries each worker takes per receive; their claims and completions are
    batched kernel calls (see :class:`~interlock.runtime.worker.Worker`, which batches only
    plugins it has seen to be fast). Default: 64 (one message of the task pipe,
    :data:`~interlock.runtime.pipes.CHUNK`) for worker threads and for worker processes with
    their own store connection, 1 for plugin calls sent to a process pool. A dying worker (or
    runner) abandons the tasks it claimed — up to ``batch`` — which are reported crashed and
    retried.
    """

    def __init__(
        self,
        store: DagStore | str,
        plugins: PluginRegistry | None = None,
        *,
        workers: int = 4,
        mode: Mode = "threads",
        on_progress: Callable[[Progress], None] | None = None,
        progress_interval: float = 0.2,
        limits: Limits | None = None,
        clock: Clock | None = None,
        lease_seconds: float = 300.0,
        recover_interval: float = 30.0,
        shutdown_grace: float = 10.0,
        batch: int | None = None,
    ) -> None:
        if mode not in ("threads", "processes"):
            raise UsageError(f"mode must be 'threads' or 'processes', got {mode!r}")
        if workers < 1:
            raise UsageError(f"workers must be >= 1, got {workers}")
        self.store: DagStore = open_store(store) if isinstance(store, str) else store
        self.plugins = plugins if plugins is not None else default_registry
        self.workers = workers
        self.mode: Mode = mode
        self.on_progress = on_progress
        self.progress_interval = progress_interval
        self.limits = limits or Limits()
        self.clock = clock
        self.lease_seconds = lease_seconds
        self.recover_interval = recover_interval
        self.shutdown_grace = shutdown_grace
        url = getattr(self.store, "url", None) if mode == "processes" else None
        self.url: str | None = url if isinstance(url, str) else None
        """Set when worker processes open the store themselves (see the class docstring)."""
        # threads batch too (fast plugins only, see Worker): 50,000 one-output tasks on SQLite
        # with 2 workers took 24.4 s one at a time, 6.2 s in batches; the process pool of a
        # store that cannot be re-opened runs each plugin call alone
        default_batch = PROCESS_BATCH if self.url is not None or mode == "threads" else 1
        self.batch = max(1, batch if batch is not None else default_batch)
        self._lock = threading.Lock()
        self._current: _Execution | None = None
        self._processes: WorkerProcesses | None = None

    def __enter__(self) -> LocalRunner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker processes (if any were started); a later run starts new ones."""
        with self._lock:
            processes, self._processes = self._processes, None
        if processes is not None:
            processes.close()

    # ---- public API ----------------------------------------------------------------------

    def run(self, pipeline: Pipeline | Mapping[str, Any],
            input: Mapping[str, JSON] | None = None, *, run_id: str | None = None) -> RunResult:
        """Validate (GraphError before anything is written), start the run, execute it.

        With the ``run_id`` of an existing run of the same pipeline and input, continues it.
        """
        topology = validate(pipeline, self.plugins)
        run_id = run_id or uuid.uuid4().hex
        execution = _Execution(self, run_id)
        execution.check_plugins(topology.pipeline)
        return self._drive(execution,
                           lambda: execution.kernel.start_run(pipeline, input, run_id=run_id))

    def resume(self, run_id: str) -> RunResult:
        """Continue a run whose runner died or was stopped.

        RUNNING tasks of the run are attempts of a dead runner: each is reported crashed (and
        retried per the crash policy). Then ``reconcile_run`` re-plans what is ready and
        re-dispatches every queued task. Assumes no other runner is executing this run.
        A run already ended is returned as it is.
        """
        run = self._get_run(run_id)
        execution = _Execution(self, run_id)
        if run.state.terminal:
            return execution.result(0.0)
        execution.check_plugins(validate(run.pipeline, self.plugins).pipeline)

        def begin() -> None:
            for task in self.store.list_tasks(run_id, states=[TaskState.RUNNING]):
                if task.attempt_id is not None:
                    execution.kernel.on_task_crashed(
                        run_id, task.task_id, task.attempt_id,
                        f"attempt abandoned by a stopped runner ({task.worker or 'unknown'})")
            execution.kernel.reconcile_run(run_id)

        return self._drive(execution, begin)

    def retry(self, run_id: str) -> RunResult:
        """``kernel.retry_run`` (failed, crashed or cancelled runs), then execute it."""
        run = self._get_run(run_id)
        execution = _Execution(self, run_id)
        execution.check_plugins(validate(run.pipeline, self.plugins).pipeline)
        return self._drive(execution, lambda: execution.kernel.retry_run(run_id))

    def stop(self) -> None:
        """Ask the current execution to stop: workers finish the task in hand and report it;
        :meth:`run`/:meth:`resume` then returns with ``interrupted=True`` (run still RUNNING)."""
        with self._lock:
            execution = self._current
        if execution is not None:
            execution.interrupt()

    # ---- internals -----------------------------------------------------------------------

    def _worker_processes(self) -> WorkerProcesses:
        """The children of this runner, started now if there are none (or they were killed)."""
        assert self.url is not None
        with self._lock:
            if self._processes is None:
                self._processes = WorkerProcesses(
                    self.url, self.workers, batch=self.batch, limits=self.limits,
                    clock=self.clock, lease_seconds=self.lease_seconds,
                    recover_interval=self.recover_interval)
            return self._processes

    def _kill_processes(self) -> None:
        with self._lock:
            processes, self._processes = self._processes, None
        if processes is not None:
            processes.kill()

    def _get_run(self, run_id: str) -> RunRecord:
        run = self.store.get_run(run_id)
        if run is None:
            raise UsageError(f"no run {run_id!r} in this store")
        return run

    def _drive(self, execution: _Execution, begin: Callable[[], object]) -> RunResult:
        with self._lock:
            if self._current is not None:
                raise UsageError("this LocalRunner is already executing a run")
            self._current = execution
        started = time.monotonic()
        try:
            execution.start()
            try:
                begin()
                execution.begun()
                execution.done.wait()
            except KeyboardInterrupt as exc:
                execution.aborted(exc)
            if execution.abort is not None:
                execution.shutdown(cancel=isinstance(execution.abort, KeyboardInterrupt))
                raise execution.abort
        finally:
            execution.shutdown(cancel=False)
            with self._lock:
                self._current = None
        return execution.result(time.monotonic() - started)


class _Execution:
    """One run being driven by a LocalRunner: queue, kernel, workers, progress.

    With worker processes that open the store themselves (``runner.url``), the queue is a
    :class:`ProcessLink` to them and this process runs no worker; the children's reports
    arrive through the ``on_*`` methods (:class:`~.procworkers.ExecutionHandlers`).
    """

    def __init__(self, runner: LocalRunner, run_id: str) -> None:
        self.runner = runner
        self.run_id = run_id
        self.store = runner.store
        self.done = threading.Event()
        self.stop = threading.Event()
        self.abort: BaseException | None = None
        self.interrupted = False
        self.waiting: tuple[str, ...] = ()
        self.dispatcher = QueueDispatcher(runner.clock, on_idle=self._on_idle)
        self.link: ProcessLink | None = None
        self.processes: WorkerProcesses | None = None
        self.references: dict[str, str] = {}
        dispatcher: Dispatcher = self.dispatcher
        if runner.url is not None:
            self.link = dispatcher = ProcessLink(run_id, self, runner.clock, runner.workers)
        self.kernel = Kernel(runner.store, dispatcher, plugins=runner.plugins,
                             limits=runner.limits, clock=runner.clock,
                             on_run_finished=self._on_finished,
                             lease_seconds=runner.lease_seconds)
        if self.link is not None:
            self.link.kernel = self.kernel
        self.invoker: ProcessInvoker | None = None
        self.heartbeats = Heartbeats(self.kernel)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._begun = False
        self._idle_checks = 0
        self._failures = 0
        self._spans: dict[str, list[float]] = {}
        self._started = time.monotonic()
        self._last_progress = 0.0
        self._emitting = threading.Lock()
        self._closed = False

    def check_plugins(self, pipeline: Pipeline) -> None:
        if self.runner.mode != "processes":
            return
        if self.link is not None:
            for node in pipeline.nodes:
                spec = self.runner.plugins.resolve(node.plugin)
                self.references[node.plugin] = process_reference(spec)
            return
        self.invoker = ProcessInvoker(self.runner.workers)
        for node in pipeline.nodes:
            self.invoker.check(self.runner.plugins.resolve(node.plugin))

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        if self.link is not None:
            self.processes = self.runner._worker_processes()
            self.processes.begin(self.link, self.references)
            return
        invoke: Invoke = self.invoker if self.invoker is not None else call_plugin
        self.heartbeats.start()
        for number in range(self.runner.workers):
            worker = Worker(
                self.kernel, self.dispatcher, self.runner.plugins, invoke=invoke,
                name=worker_name(f"local-{number}"),
                receive_timeout=self.runner.recover_interval,
                recover_interval=self.runner.recover_interval, recover=self._recover,
                heartbeats=self.heartbeats, on_outcome=self._on_outcome,
                on_abort=self.aborted, batch=self.runner.batch,
            )
            thread = threading.Thread(target=worker.run, args=(self.stop,), daemon=True,
                                      name=f"interlock-worker-{number}")
            self._threads.append(thread)
            thread.start()

    def begun(self) -> None:
        """The start/resume/retry call returned: idle checks may now conclude."""
        with self._lock:
            self._begun = True
        self._emit(force=True)
        if self._queue_idle():
            self._on_idle()

    def interrupt(self) -> None:
        self.interrupted = True
        self.stop.set()  # at once: workers take nothing more (not when shutdown gets to it)
        self.done.set()

    def aborted(self, exc: BaseException) -> None:
        with self._lock:
            if self.abort is None:
                self.abort = exc
        self.done.set()

    def shutdown(self, *, cancel: bool) -> None:
        """Stop the workers; with ``cancel``, cancel the run first (Ctrl-C). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.stop.set()
        self.dispatcher.close()
        if cancel:
            try:
                self.kernel.cancel_run(self.run_id, "interrupted (KeyboardInterrupt)")
            except Exception:
                log.exception("cancelling run %s failed", self.run_id)
        if self.invoker is not None:
            self.invoker.shutdown(kill=cancel or self.abort is not None)
        if self.link is not None:
            if cancel or self.abort is not None:
                self.runner._kill_processes()
            elif self.processes is not None:
                self.processes.end(self.link, self.runner.shutdown_grace)
            self.link.close()
        deadline = time.monotonic() + self.runner.shutdown_grace
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        self.heartbeats.stop()
        self._emit(force=True, final=True)

    def result(self, elapsed: float) -> RunResult:
        spans = {slug: end - start for slug, (start, end) in self._spans.items()}
        return RunResult(summarize(self.store, self.run_id, spans), elapsed,
                         self.interrupted, self.waiting)

    # ---- callbacks -----------------------------------------------------------------------

    def _on_finished(self, event: RunFinished) -> None:
        if event.run_id == self.run_id:
            self.done.set()

    def _on_outcome(self, outcome: TaskOutcome) -> None:
        self._record(outcome.node, outcome.status, outcome.started, outcome.finished)
        self._emit()
        if not outcome.continues and self.dispatcher.idle():
            # the end of a worker's continuation (a task run without a delivery): no ack will
            # tell the queue, so decide here whether the run can still progress
            self._on_idle()

    def _record(self, node: str, status: str, started: float, finished: float) -> None:
        with self._lock:
            if status != "lost":
                span = self._spans.setdefault(node, [started, finished])
                span[0] = min(span[0], started)
                span[1] = max(span[1], finished)
            if status == "failed":
                self._failures += 1
            if status == "completed":
                self._idle_checks = 0

    def _recover(self) -> int:
        """The lease sweep, limited to this run (other runs' tasks are not ours to run)."""
        return recover_run(self.kernel, self.run_id)

    # ---- reports of worker processes (ExecutionHandlers) -----------------------------

    def on_outcomes(self, outcomes: Sequence[tuple[str, str, float, float]]) -> None:
        for node, status, started, finished in outcomes:
            self._record(node, status, started, finished)
        self._emit()

    def on_drained(self) -> None:
        self._on_idle()

    def on_finished(self, run_id: str) -> None:
        if run_id == self.run_id:
            self.done.set()

    def on_abort(self, exc: BaseException) -> None:
        self.aborted(exc)

    def _queue_idle(self) -> bool:
        return self.link.idle() if self.link is not None else self.dispatcher.idle()

    def _on_idle(self) -> None:
        """Every task handed out was dealt with: decide whether the run can still progress."""
        with self._lock:
            if not self._begun or self.done.is_set() or self.stop.is_set():
                return
            self._idle_checks += 1
            checks = self._idle_checks
        run = self.store.get_run(self.run_id)
        if run is None or run.state.terminal:
            self.done.set()
            return
        if not self._queue_idle():
            return
        queued = self.store.list_tasks(self.run_id, states=[TaskState.QUEUED])
        if queued and checks <= 3:
            self.kernel.reconcile_run(self.run_id)  # dispatches were lost: send them again
            return
        if self.store.list_tasks(self.run_id, states=[TaskState.RUNNING]):
            return  # held elsewhere: the lease sweep recovers them if their holder is gone
        waiting = self.store.list_tasks(self.run_id, states=[TaskState.WAITING])
        run = self.store.get_run(self.run_id)
        if run is None or run.state.terminal:
            # it ended while the lists were read: its last task ran as a continuation (which
            # holds no delivery, so the queue was idle) and completed the run in between
            self.done.set()
            return
        self.waiting = tuple(t.task_id for t in waiting)
        log.warning("run %s cannot progress: %d task(s) waiting for a human, %d queued",
                    self.run_id, len(waiting), len(queued))
        self.done.set()

    def _emit(self, *, force: bool = False, final: bool = False) -> None:
        callback = self.runner.on_progress
        if callback is None:
            return
        now = time.monotonic()
        if not force and now - self._last_progress < self.runner.progress_interval:
            return
        if not self._emitting.acquire(blocking=force):
            return  # another thread is emitting right now
        try:
            self._last_progress = now
            try:
                event = progress(self.store, self.run_id, failures=self._failures,
                                 elapsed=now - self._started, final=final)
            except UsageError:
                return  # the run was never created
            callback(event)
        except Exception:
            log.exception("progress callback failed")
        finally:
            self._emitting.release()
