"""The synchronous driver: pop a dispatched ref -> claim_task -> on_task_complete, in-process.

One thread, no queue, no sleeps: what is timed is the kernel plus the store. ``claim_task``
returns the task's built :class:`~interlock.TaskInput` (the code path of ``build_task_input``),
which the loop touches as a worker would, so the cycle is launch -> claim -> input -> complete
-> next ready.
"""

from __future__ import annotations

import gc
import statistics
from collections import Counter, deque
from collections.abc import Callable, Sequence
from time import perf_counter, process_time
from typing import Any

import attrs

from ilbench.shapes import Shape
from interlock import Kernel, Limits, RunState, TaskRef
from interlock.protocols import DagStore
from interlock.values import task_node_slug


class FakeClock:
    """A clock that never moves: no task is ever "not due yet"."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t


class QueueDispatcher:
    """Dispatch = append to an in-process FIFO the driver pops from."""

    def __init__(self) -> None:
        self.queue: deque[TaskRef] = deque()

    def dispatch(self, tasks: Sequence[TaskRef]) -> None:
        self.queue.extend(tasks)


class RoundTrips:
    """A counter the Redis adapter's connections bump once per request written to the socket."""

    def __init__(self) -> None:
        self.n = 0


class Phase:
    """Which kernel call the driver is in (``start``, ``claim``, ``complete``), for a store
    wrapper that attributes what the store does to it (``benchmarks/store_floor.py``)."""

    def __init__(self) -> None:
        self.now = "start"


@attrs.define
class RunStats:
    """The measurements of one driven run."""

    shape: str
    tasks: int
    total_s: float
    cpu_s: float
    """CPU time of this process over the run (the rest of ``total_s`` is waiting: I/O, the
    Redis server, other processes)."""
    start_s: float
    claim_s: float
    complete_s: float
    complete_p50_s: float
    state: str
    rt_claim: Counter[int] = attrs.field(factory=Counter)
    rt_plain: Counter[int] = attrs.field(factory=Counter)
    """Round trips of whole ``on_task_complete`` calls that released nothing downstream."""
    rt_release: Counter[int] = attrs.field(factory=Counter)
    """Round trips of whole ``on_task_complete`` calls that released downstream nodes."""
    rt_release_store: Counter[int] = attrs.field(factory=Counter)
    """Round trips of the store's completion call alone, in releasing completions."""
    rt_release_other: Counter[int] = attrs.field(factory=Counter)
    """Round trips of releasing completions spent neither in the completion call nor in
    ``launch_node`` / ``settle_node`` writes: the reads planning needed."""
    gc_s: float = 0.0
    """Time CPython's cyclic garbage collector ran during the run (all generations): it
    grows with the number of live container objects, i.e. with what a store holds."""

    @property
    def cycle_us(self) -> float:
        return self.total_s / self.tasks * 1e6

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.tasks * 1e6

    @property
    def complete_us(self) -> float:
        return self.complete_s / self.tasks * 1e6

    @property
    def claim_us(self) -> float:
        return self.claim_s / self.tasks * 1e6

    @property
    def gc_us(self) -> float:
        return self.gc_s / self.tasks * 1e6


class GcTimer:
    """Adds up the time of every cyclic GC collection while installed (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.total = 0.0
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = perf_counter()
        else:
            self.total += perf_counter() - self._start


def make_kernel(store: DagStore, shape: Shape) -> tuple[Kernel, QueueDispatcher]:
    dispatcher = QueueDispatcher()
    limits = Limits(max_outputs_per_task=shape.max_outputs)
    return Kernel(store, dispatcher, clock=FakeClock(), limits=limits), dispatcher


def drive(store: DagStore, shape: Shape, run_id: str, rts: RoundTrips | None = None,
          phase: Phase | None = None) -> RunStats:
    """Run ``shape`` to completion on ``store``; raises if the run does not complete.
    ``phase``, if given, names the kernel call in progress."""
    if phase is None:
        phase = Phase()
    kernel, dispatcher = make_kernel(store, shape)
    queue = dispatcher.queue
    outputs_of = shape.outputs_of
    durations: list[float] = []
    claim_s = 0.0
    done = 0
    rt_claim: Counter[int] = Counter()
    rt_plain: Counter[int] = Counter()
    rt_release: Counter[int] = Counter()
    rt_other: Counter[int] = Counter()
    tap = _StoreTap(store, rts) if rts is not None else None
    gc.collect()
    timer = GcTimer()
    try:
        gc.callbacks.append(timer)
        cpu0 = process_time()
        phase.now = "start"
        t0 = perf_counter()
        kernel.start_run(shape.pipeline, run_id=run_id)
        t_started = perf_counter()
        while queue:
            ref = queue.popleft()
            before = rts.n if rts is not None else 0
            phase.now = "claim"
            a = perf_counter()
            claim = kernel.claim_task(run_id, ref.task_id, worker="bench")
            b = perf_counter()
            claim_s += b - a
            if claim is None:
                continue
            if not claim.input.task_id:  # touch the input as a worker would
                raise AssertionError("claim without input")
            outputs = outputs_of(task_node_slug(ref.task_id))
            middle = rts.n if rts is not None else 0
            writes = tap.write_rts if tap is not None else 0
            phase.now = "complete"
            c = perf_counter()
            transition = kernel.on_task_complete(run_id, ref.task_id, claim.attempt_id, outputs)
            d = perf_counter()
            durations.append(d - c)
            done += 1
            if rts is not None and tap is not None:
                rt_claim[middle - before] += 1
                spent = rts.n - middle
                if transition.ready:
                    rt_release[spent] += 1
                    rt_other[spent - tap.last_complete_rts - (tap.write_rts - writes)] += 1
                else:
                    rt_plain[spent] += 1
        total = perf_counter() - t0
        cpu = process_time() - cpu0
    finally:
        gc.callbacks.remove(timer)
        if tap is not None:
            tap.restore()
    run = store.get_run(run_id)
    state = run.state.value if run is not None else "missing"
    if run is None or run.state is not RunState.COMPLETED or done != shape.tasks:
        raise RuntimeError(f"{shape.name}: run ended {state} after {done} of {shape.tasks} "
                           "tasks")
    return RunStats(shape.name, done, total, cpu, t_started - t0, claim_s, sum(durations),
                    statistics.median(durations), state, rt_claim, rt_plain, rt_release,
                    tap.release_complete_rts if tap is not None else Counter(), rt_other,
                    timer.total)


class _StoreTap:
    """Instance-level wrappers on the store that attribute round trips to its calls: the
    completion call (``complete_task``; ``complete_task_prefetch`` for a store with the
    ``prefetch`` ability; ``complete_and_follow``, which may call the former, with ``follow``)
    and the writes that launch or settle released nodes."""

    _COMPLETE = ("complete_task", "complete_task_prefetch", "complete_and_follow")
    _WRITES = ("launch_node", "launch_node_ahead", "launch_nodes", "settle_node")

    def __init__(self, store: Any, rts: RoundTrips) -> None:
        self.store = store
        self.rts = rts
        self.last_complete_rts = 0
        self.write_rts = 0
        self.release_complete_rts: Counter[int] = Counter()
        self._depth = 0
        self._wrapped: list[str] = []
        for name in (*self._COMPLETE, *self._WRITES):
            original = getattr(store, name, None)
            if original is None:
                continue
            wrapper = (self._completion(original) if name in self._COMPLETE
                       else self._write(original))
            try:
                setattr(store, name, wrapper)
            except (AttributeError, TypeError):
                continue
            self._wrapped.append(name)

    def _completion(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            before = self.rts.n
            self._depth += 1
            try:
                result = original(*args, **kwargs)
            finally:
                self._depth -= 1
            if self._depth:  # inside another completion call: that one is counted
                return result
            self.last_complete_rts = self.rts.n - before
            transition = getattr(result, "transition", None) or (
                result[0] if isinstance(result, tuple) else result)
            if transition.ready:
                self.release_complete_rts[self.last_complete_rts] += 1
            return result

        return call

    def _write(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            before = self.rts.n
            try:
                return original(*args, **kwargs)
            finally:
                self.write_rts += self.rts.n - before

        return call

    def restore(self) -> None:
        for name in self._wrapped:
            delattr(self.store, name)
