"""The kernel's per-run context: the compiled snapshot, input and policy of a run, cached,
and the lookups built on it (task input, lease, node of a task id). Mixed into
:class:`interlock.kernel.Kernel`; kept apart so each module stays small."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Final

from interlock._kernel_launch import RunContext
from interlock._kernel_support import read_artifacts
from interlock.errors import UsageError
from interlock.graph import Topology, validate
from interlock.model import FailurePolicy
from interlock.protocols import DagStore
from interlock.records import Artifact, RunRecord, TaskRecord
from interlock.values import TaskInput, task_node_slug

__all__ = ["PIPELINES_CACHED", "RUNS_CACHED", "ContextMixin", "fail_fast"]

RUNS_CACHED: Final = 4096
"""Runs whose context a kernel keeps (LRU): the compiled pipeline (shared) and the run's input.
Past it, a run's next event reads the run again (one more round trip on Redis), so a worker
serving a few thousand runs at once still completes each task in one."""
PIPELINES_CACHED: Final = 64
"""Distinct pipeline snapshots whose compiled Topology a kernel keeps (LRU), shared by runs."""
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False).encode


class ContextMixin:
    """Needs ``store``, ``lease_seconds``, ``_contexts`` (an LRU of :data:`RUNS_CACHED` runs),
    ``_topologies`` (an LRU of :data:`PIPELINES_CACHED` snapshots), ``_lock``, and ``_stream``
    and ``_read_many`` (the store's declared abilities)."""

    store: DagStore
    _stream: bool
    _read_many: bool
    lease_seconds: float
    _contexts: OrderedDict[str, RunContext]
    _topologies: OrderedDict[bytes, Topology]
    _lock: threading.Lock

    def _input(self, context: RunContext, task: TaskRecord) -> TaskInput:
        node = context.topology.node(task.node_index)
        if "refs" not in task.plan:
            return TaskInput.from_task(task, node.slug, node.plugin, node.config)
        run_id, store, stream = task.run_id, self.store, self._stream
        read = self._read_all(task) if self._read_many else {}

        def artifacts(index: int, generation: int) -> Sequence[Artifact]:
            got = read.get((index, generation))
            return got if got is not None else read_artifacts(store, stream, run_id, index,
                                                              generation)

        return TaskInput.from_task(task, node.slug, node.plugin, node.config, artifacts)

    def _read_all(self, task: TaskRecord) -> dict[tuple[int, int], Sequence[Artifact]]:
        """With the ``read_many`` ability, the artifacts of every node generation the plan's
        references name, in one call, when they name several (a join of many parents would
        otherwise cost a read, a round trip, per parent); {} otherwise."""
        refs = task.plan["refs"]
        pairs = sorted({(int(source), int(generation))
                        for of_slug in refs.values() for source, generation, *_ in of_slug})
        if len(pairs) < 2:
            return {}
        read = self.store.get_artifacts_many(  # type: ignore[attr-defined]
            task.run_id, pairs)
        return dict(zip(pairs, read, strict=True))

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
        topology = self._compiled(run.pipeline)
        context = RunContext(topology, dict(run.input), fail_fast(topology))
        self._remember(run_id, context)
        return context

    def _remember(self, run_id: str, context: RunContext) -> None:
        with self._lock:
            self._contexts[run_id] = context
            while len(self._contexts) > RUNS_CACHED:
                self._contexts.popitem(last=False)

    def _compiled(self, pipeline: Mapping[str, Any]) -> Topology:
        """The Topology of a stored snapshot (passthrough resolved), shared by every run whose
        snapshot is equal — the common case of many runs of one pipeline. Why: compiling costs
        about seven times the canonical JSON text that keys the cache (80 against 11 us for 20
        nodes), and a kernel serving more runs at once than it keeps contexts for would
        otherwise compile the pipeline again at nearly every event (measured: 45 -> 159 us per
        task of 20-node chains past 256 interleaved runs). The key is a BLAKE2b digest of that
        text, so the cache holds no copy of the pipeline."""
        try:
            text = _CANONICAL(pipeline)
        except (TypeError, ValueError):  # not JSON: nothing to key it by (stores keep JSON)
            return validate(pipeline)
        key = hashlib.blake2b(text.encode(), digest_size=16).digest()
        with self._lock:
            topology = self._topologies.get(key)
            if topology is not None:
                self._topologies.move_to_end(key)
                return topology
        topology = validate(pipeline)
        with self._lock:
            self._topologies[key] = topology
            while len(self._topologies) > PIPELINES_CACHED:
                self._topologies.popitem(last=False)
        return topology


def fail_fast(topology: Topology) -> bool:
    """Whether the run fails as soon as a node fails (its pipeline's failure policy)."""
    return topology.pipeline.failure_policy is FailurePolicy.FAIL_FAST
