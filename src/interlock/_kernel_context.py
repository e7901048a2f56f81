"""The kernel's per-run context: the compiled snapshot, input and policy of a run, cached,
and the lookups built on it (task input, lease, node of a task id). Mixed into
:class:`interlock.kernel.Kernel`; kept apart so each module stays small."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

from interlock._kernel_launch import RunContext
from interlock._kernel_support import read_artifacts
from interlock.errors import UsageError
from interlock.graph import Topology, validate
from interlock.model import FailurePolicy
from interlock.protocols import DagStore
from interlock.records import Artifact, RunRecord, TaskRecord
from interlock.values import TaskInput, task_node_slug

__all__ = ["ContextMixin", "fail_fast"]


class ContextMixin:
    """Needs ``store``, ``lease_seconds``, ``_contexts`` (an LRU of 256 runs), ``_lock`` and
    ``_stream`` (the store's declared ability)."""

    store: DagStore
    _stream: bool
    lease_seconds: float
    _contexts: OrderedDict[str, RunContext]
    _lock: threading.Lock

    def _input(self, context: RunContext, task: TaskRecord) -> TaskInput:
        node = context.topology.node(task.node_index)
        if "refs" not in task.plan:
            return TaskInput.from_task(task, node.slug, node.plugin, node.config)
        run_id, store, stream = task.run_id, self.store, self._stream

        def artifacts(index: int, generation: int) -> Sequence[Artifact]:
            return read_artifacts(store, stream, run_id, index, generation)

        return TaskInput.from_task(task, node.slug, node.plugin, node.config, artifacts)

    def _lease(self, topology: Topology, task_id: str) -> float:
        """Seconds an attempt of the task holds its lease: the node's timeout, else the
        kernel's default."""
        node = topology.node(self._node_index(topology, task_id))
        return node.timeout_seconds or self.lease_seconds

    def _node_index(self, topology: Topology, task_id: str) -> int:
        slug = task_node_slug(task_id)
        if slug not in topology.index:
            raise UsageError(f"task id {task_id!r} names no node of this run")
        return topology.index[slug]

    def _run(self, run_id: str) -> RunRecord:
        run = self.store.get_run(run_id)
        if run is None:
            raise UsageError(f"no run {run_id!r} in this store")
        return run

    def _context(self, run_id: str) -> RunContext:
        with self._lock:
            context = self._contexts.get(run_id)
            if context is not None:
                self._contexts.move_to_end(run_id)
                return context
        run = self._run(run_id)
        topology = validate(run.pipeline)  # the snapshot has passthrough resolved
        context = RunContext(topology, dict(run.input), fail_fast(topology))
        self._remember(run_id, context)
        return context

    def _remember(self, run_id: str, context: RunContext) -> None:
        with self._lock:
            self._contexts[run_id] = context
            while len(self._contexts) > 256:
                self._contexts.popitem(last=False)


def fail_fast(topology: Topology) -> bool:
    """Whether the run fails as soon as a node fails (its pipeline's failure policy)."""
    return topology.pipeline.failure_policy is FailurePolicy.FAIL_FAST
