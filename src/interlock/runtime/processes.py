"""Running plugins in worker processes while the kernel and the store stay in the parent.

The parent's worker threads claim tasks and report results; only the plugin call crosses to a
:class:`concurrent.futures.ProcessPoolExecutor` (``forkserver`` start method, else ``spawn``:
children start clean, whatever threads or connections the parent holds; like any
multiprocessing program, a script that runs processes mode needs the
``if __name__ == "__main__":`` guard). A plugin therefore has to be importable by
name in the child — ``module:function`` — and its outputs picklable.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import signal
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from interlock.errors import UsageError
from interlock.plugins import PluginSpec, default_registry
from interlock.runtime._worker_parts import AttemptCrashed, Outputs, call_plugin
from interlock.values import TaskInput

__all__ = ["AttemptCrashed", "ProcessInvoker", "process_reference"]

log = logging.getLogger("interlock.runtime.processes")


def process_reference(spec: PluginSpec) -> str:
    """The ``module:qualname`` a child process imports to find the plugin.

    UsageError when the plugin is not importable by that name (a lambda, a closure, a function
    of a module the child cannot import under the same name).
    """
    reference = spec.name if ":" in spec.name else spec.reference
    if reference is None:
        raise UsageError(f"plugin {spec.name!r} is not importable by name "
                         f"({spec.function!r}); worker processes need a module-level function "
                         "named as 'module:function'")
    module_name, _, attribute = reference.partition(":")
    try:
        target: object = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"plugin {spec.name!r}: {reference!r} is not importable in a worker "
                         f"process: {exc}") from exc
    if target is not spec.function:
        raise UsageError(f"plugin {spec.name!r}: {reference!r} names another object than the "
                         "registered function; register a module-level function")
    return reference


def _child_init(parent_path: list[str]) -> None:
    # Ctrl-C goes to the whole process group: the parent cancels the run, children must not
    # die mid-task with a traceback (their results are then ignored as stale).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # the fork server was started with the sys.path of its time: add what came since
    # (e.g. the directory of a pipeline loaded later)
    for entry in reversed(parent_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)


def _child_call(reference: str, task: TaskInput) -> Outputs:
    return call_plugin(default_registry.resolve(reference), task)


def mp_context() -> (multiprocessing.context.ForkServerContext
                     | multiprocessing.context.SpawnContext):
    """``forkserver`` where available (children fork from a clean server that has imported
    Interlock once: fast and thread-safe), else ``spawn``. Never plain ``fork``: the parent
    runs threads, and forking a threaded process can deadlock the child."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        # the children of both process designs import these: once, in the server
        context.set_forkserver_preload([__name__, "interlock.runtime.procchild"])
        return context
    return multiprocessing.get_context("spawn")


class ProcessInvoker:
    """An :data:`~interlock.runtime.worker.Invoke` that runs plugins in ``processes`` children.

    ``__call__`` blocks the calling (worker) thread until the child returns; an exception
    raised by the plugin is re-raised here (it must be picklable; ``WaitForHuman`` is). A child
    that dies raises :class:`AttemptCrashed` and the pool is replaced.
    """

    def __init__(self, processes: int) -> None:
        self.processes = max(1, processes)
        self._lock = threading.Lock()
        self._references: dict[str, str] = {}
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=self.processes, mp_context=mp_context(),
                                   initializer=_child_init, initargs=(list(sys.path),))

    def check(self, spec: PluginSpec) -> str:
        """Validate (once per name) that ``spec`` can run in a child; its reference."""
        with self._lock:
            reference = self._references.get(spec.name)
        if reference is None:
            reference = process_reference(spec)
            with self._lock:
                self._references[spec.name] = reference
        return reference

    def __call__(self, spec: PluginSpec, task: TaskInput) -> Outputs:
        reference = self.check(spec)
        with self._lock:
            pool = self._pool
        try:
            return pool.submit(_child_call, reference, task).result()
        except BrokenProcessPool as exc:
            with self._lock:
                if self._pool is pool:
                    log.warning("a worker process died; starting a new pool")
                    self._pool = self._new_pool()
            raise AttemptCrashed(f"worker process died: {exc}") from exc

    def shutdown(self, *, kill: bool = False) -> None:
        """Stop the pool; ``kill`` terminates children still running a plugin (after a cancel,
        their results would be stale anyway)."""
        with self._lock:
            pool = self._pool
        if kill:
            processes = getattr(pool, "_processes", None) or {}
            for process in list(processes.values()):
                process.terminate()
        pool.shutdown(wait=not kill, cancel_futures=True)
