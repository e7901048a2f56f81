"""Test support: a fake clock, a recording dispatcher and a driver for kernel tests."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from interlock import Kernel, RunFinished, TaskInput, TaskRef


class FakeClock:
    def __init__(self, start: float = 1_000.0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t


class RecordingDispatcher:
    def __init__(self) -> None:
        self.refs: list[TaskRef] = []
        self.sent = 0
        self.calls = 0

    def dispatch(self, tasks: Any) -> None:
        self.refs.extend(tasks)
        self.sent += len(tasks)
        self.calls += 1


Behaviour = Callable[[TaskInput], Any]


class Harness:
    """A kernel on a MemoryStore, its dispatcher, clock and a synchronous worker loop."""

    def __init__(self, **kernel_args: Any) -> None:
        from interlock_memory import MemoryStore

        self.store = kernel_args.pop("store", None) or MemoryStore()
        self.clock = FakeClock()
        self.dispatcher = RecordingDispatcher()
        self.finished: list[RunFinished] = []
        self.kernel = Kernel(self.store, self.dispatcher, clock=self.clock,
                             on_run_finished=self.finished.append, **kernel_args)

    def work(self, behaviour: Behaviour, max_steps: int = 100_000) -> int:
        """Run dispatched tasks: behaviour returns outputs, raises to fail, or returns 'wait'."""
        steps = 0
        while self.dispatcher.refs and steps < max_steps:
            ref = self.dispatcher.refs.pop(0)
            if ref.not_before > self.clock.t:
                self.clock.t = ref.not_before
            claim = self.kernel.claim_task(ref.run_id, ref.task_id, worker="w")
            if claim is None:
                continue
            steps += 1
            try:
                result = behaviour(claim.input)
            except Exception as exc:  # the plugin failed
                self.kernel.on_task_failed(ref.run_id, ref.task_id, claim.attempt_id, exc)
                continue
            if result == "wait":
                self.kernel.wait_task(ref.run_id, ref.task_id, claim.attempt_id, "needs a human")
                continue
            self.kernel.on_task_complete(ref.run_id, ref.task_id, claim.attempt_id, result or [])
        return steps


class Calls:
    """Wraps a store and records the names of the mutations called (abilities pass through)."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.abilities = store.abilities
        self.names: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if name.startswith(("launch", "claim", "complete", "settle")):
            def call(*args: Any) -> Any:
                self.names.append(name)
                return attribute(*args)
            return call
        return attribute


@contextmanager
def worker_running(worker: Any, queue: Any, *, daemon: bool = True) -> Iterator[None]:
    """Run ``worker.run(stop)`` in a thread for the block; then stop it, close ``queue`` and
    check that the thread has ended."""
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=daemon)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        queue.close()
        thread.join(30)
    assert not thread.is_alive()
