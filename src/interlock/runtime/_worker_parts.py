"""The worker's vocabulary: the exceptions a plugin may raise, what became of a delivery, how a
plugin is called, and the heartbeat thread. Re-exported by :mod:`interlock.runtime.worker`."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

import attrs

from interlock.errors import InterlockError, StoreUnavailable
from interlock.kernel import Kernel
from interlock.limits import Limits
from interlock.plugins import PluginSpec
from interlock.records import TaskRef
from interlock.values import Claim, Output, TaskInput

__all__ = [
    "AttemptCrashed",
    "Heartbeats",
    "Invoke",
    "Outputs",
    "PluginError",
    "TaskOutcome",
    "WaitForHuman",
    "call_plugin",
    "near_limits",
    "node_timeouts",
    "repeat_while_unavailable",
    "worker_name",
]

log = logging.getLogger("interlock.runtime.worker")

Outputs = list[Output | Mapping[str, Any]]

T = TypeVar("T")

REPEAT_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
"""The pauses (seconds) before each repeat of a report the store could not take: about 6 s
in all, long enough for a reconnect or a failover, short against a task's lease."""


def repeat_while_unavailable(call: Callable[[], T], stop: threading.Event | None,
                             what: str, *args: object) -> T:
    """``call()``, repeated after each :class:`StoreUnavailable` with the pauses of
    :data:`REPEAT_DELAYS` (ended early by ``stop``), then the last error raised. ``what %
    args`` names the call in the log (formatted only when it is logged: this wraps every
    completion of a worker).

    For reports fenced by the attempt id (``on_task_complete``, ``on_tasks_complete``): a
    repeat is safe whether the failed call applied or not, and the repeat of an applied one
    ('duplicate') dispatches what that call launched but could not dispatch. Without it the
    outputs in hand would be lost and the task run again once its lease expired."""
    pause = stop if stop is not None else threading.Event()
    for delay in REPEAT_DELAYS:
        try:
            return call()
        except StoreUnavailable as exc:
            log.warning(f"{what}: the store is unavailable (%s); repeating in %.2f s", *args,
                        exc, delay)
        if pause.wait(delay):
            break
    return call()


Invoke = Callable[[PluginSpec, TaskInput], Outputs]
"""How a worker calls a plugin: in this thread (:func:`call_plugin`) or in a process pool."""


class WaitForHuman(Exception):
    """Raised by a plugin to park its task until a human answers (``kernel.resume_task``).

    The worker calls ``kernel.wait_task`` with ``reason``; the task is WAITING and the worker is
    free. On resume the plugin runs again (new attempt) with the answer in ``task.resume``.
    """

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


class AttemptCrashed(Exception):
    """Raised by an :data:`Invoke` when the process running the attempt died; the worker then
    reports ``kernel.on_task_crashed`` (retried up to the kernel's ``crash_attempts``)."""


class PluginError(InterlockError):
    """A plugin raised: the message names node, task and attempt; ``__cause__`` is the error."""

    def __init__(self, node: str, task_id: str, attempt: int | None, error: BaseException
                 ) -> None:
        self.node, self.task_id, self.attempt = node, task_id, attempt
        shown = "?" if attempt is None else str(attempt)
        super().__init__(f"node {node!r}, task {task_id!r}, attempt {shown}: "
                         f"{type(error).__name__}: {error}")
        self.__cause__ = error


@attrs.frozen
class TaskOutcome:
    """What became of one delivery. ``status``: ``completed``, ``failed`` (attempt failed, may
    be retried), ``waiting`` (parked for a human) or ``lost`` (claim not won: a duplicate
    delivery, a finished run or a task not due). Times are ``time.monotonic()`` values.
    ``continues``: the completion handed one of the tasks it launched to this worker, which
    runs it next without a delivery (see ``Kernel.complete_and_continue``)."""

    ref: TaskRef
    node: str
    status: Literal["completed", "failed", "waiting", "lost"]
    started: float
    finished: float
    error: str | None = None
    continues: bool = False


def call_plugin(spec: PluginSpec, task: TaskInput) -> Outputs:
    """Run the plugin in this thread; materialise its outputs (None means none)."""
    result = spec.function(task)
    return [] if result is None else list(result)


def worker_name(prefix: str = "worker") -> str:
    """``prefix:host:pid:thread`` — recorded on each claim, shown by ``interlock status``."""
    return f"{prefix}:{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"


class Heartbeats:
    """One daemon thread renewing the leases of attempts in progress every ``interval``.

    Only attempts of nodes without ``timeout_seconds`` are renewed: a node timeout is the
    attempt's lease and must be allowed to expire (``recover_expired`` then crashes it).
    """

    def __init__(self, kernel: Kernel, interval: float | None = None) -> None:
        self.kernel = kernel
        self.interval = interval if interval is not None else max(kernel.lease_seconds / 3, 0.05)
        self._held: dict[tuple[str, str], str] = {}
        self._timeouts: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="interlock-heartbeat",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    @contextmanager
    def hold(self, claim: Claim) -> Iterator[None]:
        """Renew ``claim``'s lease while the block runs (if its node has no timeout)."""
        key = (claim.run_id, claim.task_id)
        renew = self._timeout(claim.run_id, claim.input.node) is None
        if renew:
            with self._lock:
                self._held[key] = claim.attempt_id
        try:
            yield
        finally:
            if renew:
                with self._lock:
                    self._held.pop(key, None)

    def _timeout(self, run_id: str, slug: str) -> Any:
        with self._lock:
            timeouts = self._timeouts.get(run_id)
        if timeouts is None:
            timeouts = node_timeouts(self.kernel, run_id)
            with self._lock:
                self._timeouts[run_id] = timeouts
        return timeouts.get(slug)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                held = list(self._held.items())
            for (run_id, task_id), attempt_id in held:
                try:
                    self.kernel.heartbeat(run_id, task_id, attempt_id)
                except Exception:
                    log.exception("heartbeat of %s/%s failed", run_id, task_id)


def node_timeouts(kernel: Kernel, run_id: str) -> dict[str, Any]:
    """Per node slug of the run, its ``timeout_seconds`` (None when it has none), read from
    the run's pipeline snapshot; empty for an unknown run."""
    run = kernel.store.get_run(run_id)
    nodes = run.pipeline.get("nodes", []) if run is not None else []
    return {str(n.get("slug")): n.get("timeout_seconds") for n in nodes if isinstance(n, dict)}


# json.dumps with options builds an encoder per call; ``encode`` keeps no state, so one shared
# encoder (same options, same text) is safe across threads
_MEASURE = json.JSONEncoder(separators=(",", ":"))


def near_limits(outputs: Outputs, limits: Limits) -> bool:
    """Whether ``outputs`` might exceed a limit (or are malformed): such a completion takes the
    one-task path, whose LimitExceeded names the task. Errs on the side of True."""
    if len(outputs) > limits.max_outputs_per_task // 2:
        return True
    for output in outputs:
        fields = output.fields if isinstance(output, Output) else (
            output.get("fields") if isinstance(output, Mapping) else None)
        if fields is None or fields == {}:
            continue
        if not isinstance(fields, dict):
            return True
        try:
            size = len(_MEASURE.encode(fields))
        except (TypeError, ValueError):
            return True
        if size > limits.max_fields_bytes // 2:
            return True
    return False
