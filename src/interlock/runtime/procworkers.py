"""Worker processes for ``LocalRunner(mode="processes")`` over a store that can be re-opened.

:class:`WorkerProcesses` starts N children once (``forkserver``, else ``spawn``; never plain
``fork``: the runner runs threads) and reuses them for every execution of its LocalRunner.
Each child has its own Kernel over its own store connection and a batching Worker loop
(:mod:`interlock.runtime.procchild`); the runner process only starts/resumes/retries/cancels
runs, counts the refs in flight and watches the children. Tasks travel on one pipe shared by
the runner's kernel and every child's kernel (:mod:`interlock.runtime.pipes`); the children
report on one shared events pipe, read by a thread of the runner.

:class:`ProcessLink` is one execution's side: the Dispatcher of the runner's kernel, the count
of refs in flight (dispatched or held until due, not yet acked: zero means the queue is
drained, the cross-process counterpart of ``QueueDispatcher.idle``), refs not yet due (held
here until due, whoever dispatched them), and the handling of a dead child: its RUNNING tasks of
the run (the store records the claiming worker's name, which holds its pid) are reported
crashed, the deliveries it held are no longer counted, and a new child takes its place.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import pickle
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

from interlock.kernel import Kernel
from interlock.limits import Limits
from interlock.protocols import Clock
from interlock.records import TaskRef
from interlock.states import TaskState

from .pipes import TaskPipe, encode, encode_refs
from .procchild import ChildConfig, ChildSettings, child_main
from .processes import mp_context
from .queue import QueueDispatcher

__all__ = ["ExecutionHandlers", "ProcessLink", "WorkerProcesses"]

log = logging.getLogger("interlock.runtime.procworkers")

_STOP_READER = ("stop-reader",)


class ExecutionHandlers(Protocol):
    """What the runner's execution hears from its children (called in the reader thread)."""

    def on_outcomes(self, outcomes: Sequence[tuple[str, str, float, float]]) -> None: ...

    def on_drained(self) -> None: ...

    def on_finished(self, run_id: str) -> None: ...

    def on_abort(self, exc: BaseException) -> None: ...


class ProcessLink:
    """One execution's side of :class:`WorkerProcesses` (see the module docstring).

    ``dispatch`` (the runner kernel's Dispatcher) never blocks. ``idle()``: no ref in flight.
    """

    def __init__(self, run_id: str, handlers: ExecutionHandlers, clock: Clock | None,
                 workers: int) -> None:
        self.run_id = run_id
        self.handlers = handlers
        self.clock = clock
        self.workers = workers
        self.epoch = -1  # set by WorkerProcesses.begin
        self.kernel: Kernel | None = None  # the runner's: reports crashes of dead children
        self.references: dict[str, str] = {}
        self.tasks: TaskPipe | None = None  # set by WorkerProcesses.begin
        self._lock = threading.Lock()
        self._in_flight = 0
        self._delayed = QueueDispatcher(clock)
        self._forwarder: threading.Thread | None = None
        self._closed = False

    # ---- Dispatcher (the runner's kernel) --------------------------------------------

    def dispatch(self, tasks: Sequence[TaskRef]) -> None:
        if not tasks or self._closed:
            return
        now = self._now()
        due = [ref for ref in tasks if ref.not_before <= now]
        with self._lock:
            self._in_flight += len(tasks)  # counted before any child can see them
        self._send(due)
        self._hold([ref for ref in tasks if ref.not_before > now])

    def idle(self) -> bool:
        with self._lock:
            return self._in_flight == 0

    def close(self) -> None:
        """Drop later dispatches and the refs held until due (they stay QUEUED)."""
        self._closed = True
        self._delayed.close()
        if self._forwarder is not None and self._forwarder is not threading.current_thread():
            self._forwarder.join()

    # ---- events from the children (reader thread) -----------------------------------

    def on_event(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "dispatched":
            self._count(message[2])
        elif kind == "delay":
            items = message[3]
            self._count(len(items))
            self._hold([TaskRef(*item) for item in items])
        elif kind == "ack":
            if message[3]:
                self.handlers.on_outcomes(message[3])
            if self._count(-message[2]) and message[4]:
                self.handlers.on_drained()
        elif kind == "finished":
            self.handlers.on_finished(message[2])
        elif kind == "abort":
            self.handlers.on_abort(message[2])

    def on_child_died(self, name: str | None, pid: int | None, exitcode: int | None,
                      held: int) -> None:
        """Report the dead child's RUNNING tasks of this run crashed; forget what it held."""
        if name is not None and self.kernel is not None:
            reason = f"worker process {pid} died (exit code {exitcode})"
            for task in self.kernel.store.list_tasks(self.run_id, states=[TaskState.RUNNING]):
                if task.worker == name and task.attempt_id is not None:
                    log.warning("task %s of run %s: %s", task.task_id, self.run_id, reason)
                    self.kernel.on_task_crashed(self.run_id, task.task_id, task.attempt_id,
                                                reason)
        if self._count(-held):  # also with nothing held: the crash report may end progress
            self.handlers.on_drained()

    # ---- internals -------------------------------------------------------------------

    def _now(self) -> float:
        return self.clock.now() if self.clock is not None else time.time()

    def _count(self, delta: int) -> bool:
        """Apply ``delta`` to the refs in flight; True if none is left after a decrease (or
        none changed: a report of a task run without a delivery)."""
        with self._lock:
            self._in_flight += delta
            return delta <= 0 and self._in_flight == 0

    def _send(self, refs: Sequence[TaskRef]) -> None:
        if refs and self.tasks is not None and not self._closed:
            self.tasks.send(encode_refs(self.epoch, refs, self.workers))

    def _hold(self, refs: Sequence[TaskRef]) -> None:
        """Keep refs not yet due (retry backoff) here until due, then send them."""
        if not refs:
            return
        self._delayed.dispatch(refs)
        with self._lock:
            if self._forwarder is None and not self._closed:
                self._forwarder = threading.Thread(target=self._forward, daemon=True,
                                                   name="interlock-delayed-refs")
                self._forwarder.start()

    def _forward(self) -> None:
        while not self._delayed.closed:
            deliveries = self._delayed.receive(64, 3600.0)  # wakes when due or closed
            self._send([delivery.ref for delivery in deliveries])
            self._delayed.ack(deliveries)


class _Slot:
    """One child process and what the runner knows of it."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: Any = None
        self.control: Connection | None = None
        self.pid: int | None = None
        self.name: str | None = None  # its worker name, as recorded on its claims
        self.serving: int | None = None  # the epoch it was told to serve, until it stopped


class WorkerProcesses:
    """``workers`` child processes serving the store at ``url`` (see the module docstring).

    Started at construction (in a background thread: the caller goes on, e.g. with
    ``start_run``); :meth:`begin`/:meth:`end` bracket one execution; :meth:`close` stops
    the children (also at interpreter exit); :meth:`kill` terminates them at once.
    """

    def __init__(self, url: str, workers: int, *, batch: int, limits: Limits,
                 clock: Clock | None, lease_seconds: float, recover_interval: float) -> None:
        self._ctx = mp_context()
        self.workers = workers
        self._settings = ChildSettings(url, workers, batch, limits, clock, lease_seconds,
                                       recover_interval)
        self._tasks_reader, tasks_writer = self._ctx.Pipe(duplex=False)
        self._tasks_writer = tasks_writer
        self._tasks_lock = self._ctx.Lock()
        self._events_reader, self._events_writer = self._ctx.Pipe(duplex=False)
        self._held = self._ctx.RawArray("q", workers)
        self.tasks = TaskPipe(tasks_writer)
        self._epochs = itertools.count(1)
        self._cond = threading.Condition()
        self._slots = [_Slot(i) for i in range(workers)]
        self._link: ProcessLink | None = None
        self._closed = False
        self.failed: BaseException | None = None
        # made here, so that begin() can write to a child not started yet
        controls = [self._new_control(slot) for slot in self._slots]
        self._reader = threading.Thread(target=self._start_then_read, args=(controls,),
                                        daemon=True, name="interlock-process-events")
        self._reader.start()
        atexit.register(self.close)

    # ---- executions ------------------------------------------------------------------

    def begin(self, link: ProcessLink, references: Mapping[str, str]) -> None:
        """Serve ``link``'s run from now on: every child is told its epoch and plugins."""
        with self._cond:
            link.epoch = next(self._epochs)
            link.references = dict(references)
            link.tasks = self.tasks
            self._link = link
            for slot in self._slots:
                self._announce(slot, link)

    def end(self, link: ProcessLink, grace: float) -> None:
        """Stop ``link``'s epoch: children finish the tasks in hand and report them; a child
        still busy after ``grace`` seconds is killed (its tasks stay RUNNING) and replaced."""
        message = ("stop", link.epoch)
        deadline = time.monotonic() + grace
        with self._cond:
            for slot in self._slots:
                if slot.serving == link.epoch:
                    self._control(slot, message)
            while any(s.serving == link.epoch for s in self._slots) and not self._closed:
                if not self._cond.wait(max(0.0, deadline - time.monotonic())):
                    break
            stragglers = [s for s in self._slots if s.serving == link.epoch]
            self._link = None
        for slot in stragglers:
            log.warning("worker process %s did not stop within %.1fs: killing it",
                        slot.pid, grace)
            slot.process.kill()

    # ---- shutdown --------------------------------------------------------------------

    def close(self, timeout: float = 10.0) -> None:
        """Ask every child to exit, wait up to ``timeout`` seconds, terminate the others."""
        self._shut(kill=False, timeout=timeout)

    def kill(self) -> None:
        """Terminate every child now (Ctrl-C: their work would be stale anyway)."""
        self._shut(kill=True, timeout=5.0)

    def _shut(self, *, kill: bool, timeout: float) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        atexit.unregister(self.close)
        self._events_writer.send_bytes(encode(_STOP_READER))  # wakes the reader thread
        self._reader.join()  # it has started every child before it reads
        for slot in self._slots:
            if slot.process is None:
                continue
            if kill:
                slot.process.terminate()
            else:
                self._control(slot, ("exit",))
        deadline = time.monotonic() + timeout
        for slot in self._slots:
            if slot.process is None:
                continue
            slot.process.join(max(0.0, deadline - time.monotonic()))
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join()
        self.tasks.close()
        for conn in (self._tasks_reader, self._tasks_writer, self._events_reader,
                     self._events_writer, *(s.control for s in self._slots)):
            if conn is not None:
                conn.close()

    # ---- children --------------------------------------------------------------------

    def _new_control(self, slot: _Slot) -> Connection:
        reader, slot.control = self._ctx.Pipe(duplex=False)
        return reader

    def _start(self, slot: _Slot, control: Connection) -> None:
        config = ChildConfig(self._settings, slot.index, list(sys.path),
                             tasks_reader=self._tasks_reader, tasks_writer=self._tasks_writer,
                             tasks_lock=self._tasks_lock, events_writer=self._events_writer,
                             control=control, held=self._held)
        self._held[slot.index] = 0
        slot.pid = slot.name = None
        slot.process = self._ctx.Process(target=child_main, args=(config,), daemon=True,
                                         name=f"interlock-worker-{slot.index}")
        slot.process.start()
        control.close()  # the child has its copy; at the runner's death it reads end of file

    def _announce(self, slot: _Slot, link: ProcessLink) -> None:
        slot.serving = link.epoch
        self._control(slot, ("run", link.epoch, link.run_id, link.references))

    def _control(self, slot: _Slot, message: tuple[Any, ...]) -> None:
        try:
            if slot.control is not None:
                slot.control.send(message)
        except OSError:
            pass  # the child is dead: the reader thread replaces it

    def _start_then_read(self, controls: list[Connection]) -> None:
        try:
            for slot, control in zip(self._slots, controls, strict=True):
                self._start(slot, control)  # messages sent meanwhile wait in its control pipe
            self._read()
        except Exception:
            log.exception("the worker processes' event reader stopped")

    def _read(self) -> None:
        """Events of the children and their deaths, until the pool is shut."""
        while True:
            with self._cond:
                sentinels = {s.process.sentinel: s for s in self._slots
                             if s.process is not None}
            ready = wait([self._events_reader, *sentinels])
            dead = [sentinels[r] for r in ready if r in sentinels]
            while self._events_reader.poll(0):  # a dead child's last words come first
                message = pickle.loads(self._events_reader.recv_bytes())
                if message == _STOP_READER:
                    return
                self._on_event(message)
            for slot in dead:
                self._on_death(slot)

    def _on_event(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        with self._cond:
            link = self._link
            if kind == "ready":
                slot = self._slots[message[1]]
                slot.pid, slot.name = message[2], message[3]
                return
            if kind == "stopped":
                slot = self._slots[message[2]]
                if slot.serving == message[1]:
                    slot.serving = None
                    self._cond.notify_all()
                return
        if link is not None and message[1] == link.epoch:
            try:
                link.on_event(message)
            except Exception:
                log.exception("handling %s from a worker process failed", kind)

    def _on_death(self, slot: _Slot) -> None:
        slot.process.join()
        held = int(self._held[slot.index])
        name, pid, code = slot.name, slot.pid, slot.process.exitcode
        with self._cond:
            slot.serving = None
            self._cond.notify_all()
            link, closed = self._link, self._closed
        if closed:
            return
        if name is None:  # died before it was ready: starting another would fail the same way
            log.error("worker process %s exited with code %s before it was ready", pid, code)
            self.failed = RuntimeError(f"a worker process exited with code {code} at start "
                                       "(see its error output above)")
            if link is not None:
                link.handlers.on_abort(self.failed)
            return
        log.warning("worker process %s died (exit code %s); starting another", pid, code)
        self._start(slot, self._new_control(slot))
        if link is not None:
            with self._cond:
                if self._link is link:
                    self._announce(slot, link)
            link.on_child_died(name, pid, code, held)
