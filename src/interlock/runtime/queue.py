"""An in-process task queue: both the kernel's Dispatcher and the workers' TaskSource."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from interlock.protocols import Clock, Delivery
from interlock.records import TaskRef

__all__ = ["QueueDispatcher"]

log = logging.getLogger("interlock.runtime.queue")


class QueueDispatcher:
    """A thread-safe in-memory queue implementing :class:`~interlock.protocols.Dispatcher`
    (``dispatch``) and :class:`~interlock.protocols.TaskSource` (``receive``/``ack``).

    Contracts:

    - ``dispatch`` never blocks: tasks due now go to a FIFO, tasks with a future
      ``not_before`` (retry backoff) to a heap keyed by that time (read from ``clock``, the
      kernel's clock, so a delivered task is always claimable).
    - ``receive`` blocks on a condition variable until a task is due, the timeout passes or the
      queue is closed; it never polls on a fixed interval.
    - Deliveries are in-process: there is no redelivery of unacked deliveries (a worker that
      dies takes its task with it; the kernel's lease sweep, ``recover_expired``, recovers it).
    - ``on_idle`` (if given) is called, outside the lock, by the ``ack`` that leaves the queue
      with nothing due, nothing delayed and nothing unacked: every task handed out has been
      dealt with and every dispatch it caused has been made. The local runner uses it to notice
      a run that can make no more progress without outside help.
    """

    def __init__(self, clock: Clock | None = None,
                 on_idle: Callable[[], None] | None = None) -> None:
        self._clock = clock
        self.on_idle = on_idle
        self._cond = threading.Condition()
        self._ready: deque[TaskRef] = deque()
        self._delayed: list[tuple[float, int, TaskRef]] = []
        self._unacked: dict[str, TaskRef] = {}
        self._tokens = itertools.count()
        self._closed = False

    def _now(self) -> float:
        return self._clock.now() if self._clock is not None else time.time()

    # ---- Dispatcher ----------------------------------------------------------------------

    def dispatch(self, tasks: Sequence[TaskRef]) -> None:
        """Enqueue ``tasks`` (due ones FIFO, delayed ones by ``not_before``)."""
        if not tasks:
            return
        now = self._now()
        with self._cond:
            if self._closed:
                log.debug("queue closed: dropping %d dispatched task(s)", len(tasks))
                return
            for ref in tasks:
                if ref.not_before > now:
                    heapq.heappush(self._delayed, (ref.not_before, next(self._tokens), ref))
                else:
                    self._ready.append(ref)
            self._cond.notify(len(tasks))

    # ---- TaskSource ----------------------------------------------------------------------

    def receive(self, max_tasks: int, timeout: float) -> list[Delivery]:
        """Up to ``max_tasks`` due deliveries; [] after ``timeout`` seconds or once closed."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while True:
                if self._closed:
                    return []
                now = self._now()
                while self._delayed and self._delayed[0][0] <= now:
                    self._ready.append(heapq.heappop(self._delayed)[2])
                if self._ready:
                    out: list[Delivery] = []
                    while self._ready and len(out) < max(1, max_tasks):
                        ref = self._ready.popleft()
                        token = str(next(self._tokens))
                        self._unacked[token] = ref
                        out.append(Delivery(ref, token))
                    if self._ready:
                        self._cond.notify()
                    return out
                wait = deadline - time.monotonic()
                if wait <= 0:
                    return []
                if self._delayed:  # the head is not due yet (due ones were promoted above)
                    wait = min(wait, self._delayed[0][0] - now)
                self._cond.wait(wait)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Forget the deliveries; may call ``on_idle`` (see the class contract)."""
        with self._cond:
            for delivery in deliveries:
                self._unacked.pop(delivery.token, None)
            idle = self._idle_locked()
        if idle and self.on_idle is not None:
            self.on_idle()

    # ---- control -------------------------------------------------------------------------

    def close(self) -> None:
        """Wake every receiver with []; later dispatches are dropped (tasks stay QUEUED in
        the store, where ``reconcile_run`` finds them)."""
        with self._cond:
            self._closed = True
            self._ready.clear()
            self._delayed.clear()
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def idle(self) -> bool:
        """Nothing due, nothing delayed, nothing handed out and not yet acked."""
        with self._cond:
            return self._idle_locked()

    def _idle_locked(self) -> bool:
        return not (self._ready or self._delayed or self._unacked)

    def pending(self) -> int:
        """Tasks waiting in the queue (due or delayed), not counting unacked deliveries.

        (Deliberately not ``__len__``: an empty queue must stay truthy for ``dispatcher or
        default`` idioms.)"""
        with self._cond:
            return len(self._ready) + len(self._delayed)
