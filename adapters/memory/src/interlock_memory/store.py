"""A thread-safe in-memory :class:`~interlock.protocols.DagStore`.

One lock per run serialises that run's transactions (different runs never contend); writes are
buffered in the transaction and applied on commit, so an exception leaves nothing half-written.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator, Sequence
from types import TracebackType

from interlock.packed import PublishedView
from interlock.records import Artifact, NodeRecord, RunRecord, TaskRecord
from interlock.states import TaskState
from interlock.storekit import TransactionalDagStore

__all__ = ["MemoryStore", "from_url"]

_UNFINISHED = frozenset({TaskState.QUEUED, TaskState.RUNNING, TaskState.WAITING})


_Stored = Artifact | PublishedView
"""What a node generation's artifacts are stored as, in seq order: records, and the wide
publications of single completions kept packed (a detached :class:`PublishedView`: strings the
cyclic GC does not track, instead of a record per artifact)."""


def _flat(stored: Sequence[_Stored]) -> list[Artifact]:
    out: list[Artifact] = []
    for item in stored:
        if isinstance(item, Artifact):
            out.append(item)
        else:
            out.extend(item)
    return out


class _RunData:
    __slots__ = ("artifacts", "by_node", "lock", "nodes", "run", "tasks", "unfinished", "wide")

    def __init__(self, run: RunRecord, nodes: Sequence[NodeRecord]) -> None:
        self.run = run
        self.nodes = list(nodes)
        self.tasks: dict[str, TaskRecord] = {}
        self.by_node: dict[int, list[str]] = {}
        self.unfinished: dict[int, dict[str, None]] = {}
        self.artifacts: dict[tuple[int, int], list[_Stored]] = {}
        self.wide: dict[tuple[int, int], int] = {}
        """Per node generation holding packed publications: its number of artifacts."""
        self.lock = threading.Lock()

    def read(self, node_index: int, generation: int, limit: int | None) -> list[Artifact] | None:
        """The artifacts of a node generation by seq, or None when more than ``limit``."""
        key = (node_index, generation)
        stored = self.artifacts.get(key, ())
        count = self.wide.get(key)
        if count is None:
            return list(stored) if limit is None or len(stored) <= limit else None  # type: ignore[arg-type]
        return _flat(stored) if limit is None or count <= limit else None


class _Tx:
    """Buffered writes over one run's data; :meth:`commit` applies them."""

    def __init__(self, data: _RunData) -> None:
        self._data = data
        self.run = data.run
        self._nodes: dict[int, NodeRecord] = {}
        self._tasks: dict[str, TaskRecord] = {}
        self._artifacts: list[_Stored] = []

    def node(self, index: int) -> NodeRecord:
        return self._nodes.get(index) or self._data.nodes[index]

    def nodes(self) -> Iterator[NodeRecord]:
        for index in range(len(self._data.nodes)):
            yield self.node(index)

    def put_node(self, node: NodeRecord) -> None:
        self._nodes[node.index] = node

    def task(self, task_id: str) -> TaskRecord | None:
        return self._tasks.get(task_id) or self._data.tasks.get(task_id)

    def put_task(self, task: TaskRecord) -> None:
        self._tasks[task.task_id] = task

    def unfinished_tasks(self, node_index: int | None) -> Iterator[TaskRecord]:
        groups = (self._data.unfinished.values() if node_index is None
                  else [self._data.unfinished.get(node_index, {})])
        seen: set[str] = set()
        for group in groups:
            for task_id in list(group):
                seen.add(task_id)
                task = self.task(task_id)
                if task is not None and task.state in _UNFINISHED:
                    yield task
        for task_id, task in list(self._tasks.items()):
            if (task_id not in seen and task.state in _UNFINISHED
                    and (node_index is None or task.node_index == node_index)):
                yield task

    def stored_artifacts(self, node_index: int, generation: int, limit: int
                         ) -> list[Artifact] | None:
        """The artifacts of ``node_index`` in ``generation`` committed before this step, by
        ``seq``, or None when there are more than ``limit``."""
        return self._data.read(node_index, generation, limit)

    def add_artifacts(self, artifacts: Sequence[Artifact]) -> None:
        if isinstance(artifacts, PublishedView):
            kept = artifacts.detached()
            if kept is not None:
                self._artifacts.append(kept)
                return
        self._artifacts.extend(artifacts)

    def put_run(self, run: RunRecord) -> None:
        self.run = run

    def commit(self) -> None:
        data = self._data
        data.run = self.run
        for index, node in self._nodes.items():
            data.nodes[index] = node
        for task_id, task in self._tasks.items():
            if task_id not in data.tasks:
                data.by_node.setdefault(task.node_index, []).append(task_id)
            data.tasks[task_id] = task
            pending = data.unfinished.setdefault(task.node_index, {})
            if task.state in _UNFINISHED:
                pending[task_id] = None
            else:
                pending.pop(task_id, None)
        for item in self._artifacts:
            key = (item.node_index, item.generation)
            data.artifacts.setdefault(key, []).append(item)
            if isinstance(item, PublishedView):
                data.wide[key] = data.wide.get(key, len(data.artifacts[key]) - 1) + len(item)
            elif key in data.wide:
                data.wide[key] += 1


class _Transaction:
    """The context manager of :meth:`MemoryStore.transaction`: a class rather than a
    ``@contextmanager`` generator, which costs a generator, two ``next`` calls and a wrapper
    object per transaction on the hottest path of the store."""

    __slots__ = ("_data", "_tx")

    def __init__(self, data: _RunData | None) -> None:
        self._data = data
        self._tx: _Tx | None = None

    def __enter__(self) -> _Tx | None:
        data = self._data
        if data is None:
            return None
        data.lock.acquire()
        self._tx = _Tx(data)
        return self._tx

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        data, tx = self._data, self._tx
        if data is None or tx is None:
            return
        try:
            if exc_type is None:
                tx.commit()
        finally:
            self._tx = None
            data.lock.release()


class MemoryStore(TransactionalDagStore):
    """In-memory DagStore. Thread-safe; state is lost when the process exits."""

    def __init__(self) -> None:
        self._runs: dict[str, _RunData] = {}
        self._lock = threading.Lock()

    def transaction(self, run_id: str) -> _Transaction:
        return _Transaction(self._runs.get(run_id))

    def create_run(self, run: RunRecord, nodes: Sequence[NodeRecord]) -> tuple[RunRecord, bool]:
        with self._lock:
            existing = self._runs.get(run.run_id)
            if existing is not None:
                return existing.run, False
            self._runs[run.run_id] = _RunData(run, nodes)
            return run, True

    def get_run(self, run_id: str) -> RunRecord | None:
        data = self._runs.get(run_id)
        return None if data is None else data.run

    def get_nodes(self, run_id: str, indices: Sequence[int] | None = None) -> list[NodeRecord]:
        data = self._runs.get(run_id)
        if data is None:
            return []
        with data.lock:
            if indices is None:
                return list(data.nodes)
            return [data.nodes[i] for i in sorted(set(indices))]

    def get_task(self, run_id: str, task_id: str) -> TaskRecord | None:
        data = self._runs.get(run_id)
        return None if data is None else data.tasks.get(task_id)

    def list_tasks(
        self,
        run_id: str,
        *,
        node_index: int | None = None,
        states: Collection[TaskState] | None = None,
    ) -> list[TaskRecord]:
        data = self._runs.get(run_id)
        if data is None:
            return []
        with data.lock:
            if node_index is None:
                tasks = list(data.tasks.values())
            else:
                tasks = [data.tasks[t] for t in data.by_node.get(node_index, [])]
        if states is not None:
            wanted = frozenset(states)
            tasks = [t for t in tasks if t.state in wanted]
        return sorted(tasks, key=lambda t: (t.node_index, t.generation, t.seq))

    def get_artifacts(self, run_id: str, node_index: int, generation: int) -> list[Artifact]:
        data = self._runs.get(run_id)
        if data is None:
            return []
        with data.lock:
            return data.read(node_index, generation, None) or []

    def list_expired(self, now: float, limit: int) -> list[TaskRecord]:
        out: list[TaskRecord] = []
        for data in list(self._runs.values()):
            with data.lock:
                for pending in data.unfinished.values():
                    for task_id in pending:
                        task = data.tasks[task_id]
                        if (task.state is TaskState.RUNNING and task.lease_until is not None
                                and task.lease_until < now):
                            out.append(task)
                            if len(out) >= limit:
                                return out
        return out


def from_url(url: str) -> MemoryStore:
    """Entry point for ``memory://`` store URLs."""
    if not url.startswith("memory://"):
        raise ValueError(f"not a memory store URL: {url!r}")
    return MemoryStore()
