"""The worker-process side of ``LocalRunner(mode="processes")`` over a re-openable store.

A child opens the store again from its URL, and for each execution ("epoch") the runner
announces builds a :class:`~interlock.kernel.Kernel` over it and runs a batching
:class:`~interlock.runtime.worker.Worker` loop whose source and dispatcher are the shared task
pipe (:mod:`interlock.runtime.pipes`). It reports to the runner on the shared events pipe:

- ``("ready", slot, pid, worker_name)`` once at start;
- ``("dispatched", epoch, n)`` *before* writing ``n`` due refs to the task pipe, and
  ``("delay", epoch, 0, items, last)`` for refs not yet due (the runner holds those until due);
- ``("ack", epoch, n, outcomes, last)`` when ``n`` deliveries were dealt with (the runner
  counts refs in flight with these: dispatched + delayed - acked; zero after a ``last`` one
  means the queue is drained); ``n`` may be 0 after a task run without a delivery;
- ``("finished", epoch, run_id)`` from the kernel's ``on_run_finished``;
- ``("abort", epoch, exception)`` when a plugin raised a BaseException (KeyboardInterrupt,
  SystemExit): the task is left RUNNING, as a dying process leaves it;
- ``("stopped", epoch, slot)`` when the epoch's Worker loop has returned.

The runner's control messages (on a pipe of this child's own): ``("run", epoch, run_id,
references)``, ``("stop", epoch)``, ``("exit",)``; end of file (the runner died) is ``exit``.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

import attrs

from interlock.kernel import Kernel
from interlock.limits import Limits
from interlock.plugins import PluginRegistry, default_registry
from interlock.protocols import Clock, Delivery
from interlock.records import TaskRef
from interlock.stores import open_store
from interlock.values import RunFinished

from .pipes import MAX_MESSAGE, TaskPipe, decode_refs, encode, encode_refs
from .worker import Heartbeats, TaskOutcome, Worker, worker_name

__all__ = ["ChildConfig", "ChildSettings", "child_main", "recover_run"]

log = logging.getLogger("interlock.runtime.procchild")

_EXIT = ("exit",)


@attrs.frozen
class ChildSettings:
    """The runner's settings every worker process shares."""

    url: str
    workers: int
    batch: int
    limits: Limits
    clock: Clock | None
    lease_seconds: float
    recover_interval: float


@attrs.frozen
class ChildConfig:
    """Everything a worker process needs; pickled to it at start."""

    settings: ChildSettings
    slot: int
    sys_path: list[str]
    tasks_reader: Connection
    tasks_writer: Connection
    tasks_lock: Any  # multiprocessing Lock: one reader at a time takes a whole message
    events_writer: Connection
    control: Connection
    held: Any  # multiprocessing RawArray('q'): deliveries each child holds, unacked


def child_main(config: ChildConfig) -> None:
    """Entry point of a worker process: serve epochs until told to exit."""
    # Ctrl-C goes to the whole process group: the runner cancels the run and ends the children
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for entry in reversed(config.sys_path):  # the fork server's sys.path may be older
        if entry not in sys.path:
            sys.path.insert(0, entry)
    channel = _Channel(config)
    store = open_store(config.settings.url)
    channel.event(("ready", config.slot, os.getpid(), channel.name))
    message = channel.control_message()
    while message[0] != "exit":
        if message[0] == "run":
            message = _serve_epoch(config, store, channel, message) or channel.control_message()
        else:
            message = channel.control_message()  # a stop for an epoch already over


def _serve_epoch(config: ChildConfig, store: Any, channel: _Channel,
                 message: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """Run the Worker loop of one epoch; the control message that ended it, if any."""
    _, epoch, run_id, references = message
    channel.begin(epoch)
    registry = _registry(references)
    settings = config.settings
    dispatcher = _ChildDispatcher(channel, settings.clock)
    kernel = Kernel(store, dispatcher, plugins=registry, limits=settings.limits,
                    clock=settings.clock, lease_seconds=settings.lease_seconds,
                    on_run_finished=lambda event: channel.finished(epoch, event))
    heartbeats = Heartbeats(kernel)
    heartbeats.start()
    worker = Worker(kernel, channel, registry, name=channel.name, batch=settings.batch,
                    receive_timeout=settings.recover_interval,
                    recover_interval=settings.recover_interval,
                    recover=lambda: recover_run(kernel, run_id), heartbeats=heartbeats,
                    on_outcome=channel.outcome,
                    on_abort=lambda exc: channel.event(("abort", epoch, _picklable(exc))))
    try:
        worker.run(channel.stop)
    finally:
        heartbeats.stop()
        config.held[config.slot] = 0  # deliveries left unacked belong to an ended epoch
        channel.tasks.discard()  # refs of that epoch not yet written: they stay QUEUED
        channel.event(("stopped", epoch, config.slot))
    return channel.pending


def recover_run(kernel: Kernel, run_id: str) -> int:
    """The lease sweep, limited to one run (other runs' tasks are not this runner's)."""
    count = 0
    for task in kernel.store.list_expired(kernel.clock.now(), 1000):
        if task.run_id == run_id and task.attempt_id is not None:
            kernel.on_task_crashed(task.run_id, task.task_id, task.attempt_id,
                                   "attempt lease expired")
            count += 1
    return count


def _registry(references: dict[str, str]) -> PluginRegistry:
    """A registry where each pipeline plugin name resolves to its importable function."""
    registry = PluginRegistry()
    for name, reference in references.items():
        spec = default_registry.resolve(reference)
        registry.register(name, spec.function, passthrough=spec.passthrough)
    return registry


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.dumps(exc)
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


class _Channel:
    """This child's pipes: the TaskSource side of the task pipe, events, control."""

    def __init__(self, config: ChildConfig) -> None:
        self.config = config
        self.name = worker_name(f"local-{config.slot}")
        self.tasks = TaskPipe(config.tasks_writer)
        self.stop = threading.Event()
        self.pending: tuple[Any, ...] | None = None
        self.epoch = -1
        self._outcomes: list[tuple[str, str, float, float]] = []
        self._lock = threading.Lock()  # events are sent from the worker and heartbeat threads

    # ---- events ----------------------------------------------------------------------

    def event(self, message: tuple[Any, ...]) -> None:
        """One atomic blocking write to the events pipe (the runner drains it)."""
        data = encode(message)
        with self._lock:
            self.config.events_writer.send_bytes(data)

    def finished(self, epoch: int, event: RunFinished) -> None:
        self.event(("finished", epoch, event.run_id))

    def outcome(self, outcome: TaskOutcome) -> None:
        self._outcomes.append((outcome.node, outcome.status, outcome.started, outcome.finished))
        if not outcome.continues and self.config.held[self.config.slot] == 0:
            # a task run without a delivery (the end of a Worker continuation): no ack will
            # follow, so report it now and let the runner check whether the run can progress
            self.ack([])

    def send_refs(self, refs: Sequence[TaskRef], now: float) -> None:
        """Dispatch: count due refs with the runner, then write them; delayed ones to it."""
        due = [ref for ref in refs if ref.not_before <= now]
        delayed = [(r.run_id, r.task_id, r.plugin, r.not_before) for r in refs
                   if r.not_before > now]
        if delayed:
            self._events("delay", 0, delayed)
        if due:
            self.event(("dispatched", self.epoch, len(due)))
            self.tasks.send(encode_refs(self.epoch, due, self.config.settings.workers))

    # ---- control ---------------------------------------------------------------------

    def begin(self, epoch: int) -> None:
        self.epoch = epoch
        self.config.held[self.config.slot] = 0
        self.pending = None
        self.stop.clear()

    def control_message(self) -> tuple[Any, ...]:
        """The next control message (blocking); ``exit`` at end of file."""
        try:
            message: tuple[Any, ...] = self.config.control.recv()
        except (EOFError, OSError):
            return _EXIT
        return message

    def _on_control(self) -> None:
        message = self.control_message()
        if message[0] == "stop" and message[1] != self.epoch:
            return  # about an earlier epoch
        self.pending = None if message[0] == "stop" else message
        self.stop.set()

    # ---- TaskSource ------------------------------------------------------------------

    def receive(self, max_tasks: int, timeout: float) -> list[Delivery]:
        """Up to ``max_tasks`` refs of this epoch (more taken from one message go back to the
        pipe); [] once stopped or after ``timeout``. A control message wakes it."""
        deadline = time.monotonic() + timeout
        config = self.config
        while not self.stop.is_set():
            remaining = deadline - time.monotonic()
            ready = wait([config.control, config.tasks_reader], max(0.0, remaining))
            if config.control in ready:
                self._on_control()
                continue
            if not ready:
                return []
            data = self._take(max(0.0, remaining))
            if data is None:
                continue
            epoch, refs = decode_refs(data)
            if epoch != self.epoch:
                continue  # left over from an execution that has ended
            if len(refs) > max_tasks:
                self.tasks.send(encode_refs(epoch, refs[max_tasks:], config.settings.workers))
                refs = refs[:max_tasks]
            config.held[config.slot] += len(refs)
            return [Delivery(ref, "") for ref in refs]
        return []

    def _take(self, timeout: float) -> bytes | None:
        """One whole message, or None if another reader took it first."""
        lock = self.config.tasks_lock
        if not lock.acquire(timeout=timeout):
            return None
        try:
            if not self.config.tasks_reader.poll(0):
                return None
            data: bytes = self.config.tasks_reader.recv_bytes(MAX_MESSAGE)
            return data
        finally:
            lock.release()

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Report the deliveries dealt with, with the outcomes seen since the last ack."""
        self.config.held[self.config.slot] -= len(deliveries)
        outcomes, self._outcomes = self._outcomes, []
        self._events("ack", len(deliveries), outcomes)

    def _events(self, kind: str, count: int, items: Sequence[Any]) -> None:
        """``(kind, epoch, count, items, last)`` messages, as many as needed for every
        message to fit one atomic write; ``count`` goes with the last one."""
        start = 0
        while True:
            size = max(1, min(32, len(items) - start))
            while True:
                last = start + size >= len(items)
                part = tuple(items[start:start + size])
                try:
                    data = encode((kind, self.epoch, count if last else 0, part, last))
                    break
                except ValueError:
                    if size == 1:
                        raise
                    size //= 2
            with self._lock:
                self.config.events_writer.send_bytes(data)
            start += size
            if last:
                return


class _ChildDispatcher:
    """The child kernel's Dispatcher: the shared task pipe, counted with the runner."""

    def __init__(self, channel: _Channel, clock: Clock | None) -> None:
        self.channel = channel
        self.clock = clock

    def dispatch(self, tasks: Sequence[TaskRef]) -> None:
        if tasks:
            now = self.clock.now() if self.clock is not None else time.time()
            self.channel.send_refs(tasks, now)
