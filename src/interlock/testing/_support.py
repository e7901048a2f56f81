"""What every check builds on: a fake clock, a recording dispatcher, the per-check harness and
small scenarios that drive a store directly (store calls) or through a Kernel."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from interlock.kernel import Kernel
from interlock.limits import Limits
from interlock.protocols import DagStore
from interlock.records import (
    Artifact,
    NewArtifact,
    NodeRecord,
    OriginMode,
    Outcome,
    RunRecord,
    TaskRecord,
    TaskRef,
    Transition,
)
from interlock.states import NodeState, RunState, TaskState
from interlock.values import RunFinished

__all__ = [
    "Driver",
    "FakeClock",
    "Harness",
    "RecordingDispatcher",
    "Scenario",
    "expect",
    "expect_ability",
    "expect_eq",
    "first_difference",
    "observe",
    "outputs_for",
    "pipeline",
]


def expect(ok: bool, clause: str, message: str) -> None:
    """Fail with the clause id in the message (works under ``python -O`` too)."""
    if not ok:
        raise AssertionError(f"[{clause}] {message}")


def expect_ability(store: object, ability: str, clause: str, path: str) -> None:
    """Fail unless ``store`` declares ``ability`` (the test class declared it, so the checks of
    its clauses run; a store that does not say so would never be used that way)."""
    expect(ability in getattr(store, "abilities", frozenset()), clause,
           f"the test class declares the ability {ability!r} but the store's abilities "
           f"attribute does not, so the kernel would never {path}")


def expect_eq(actual: object, expected: object, clause: str, what: str) -> None:
    if actual != expected:
        raise AssertionError(f"[{clause}] {what}: expected {expected!r}, got {actual!r}")


class FakeClock:
    """A settable clock shared by the kernels of one check (no sleeping, ever)."""

    def __init__(self, start: float = 1_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._now += seconds
            return self._now


class RecordingDispatcher:
    """Records every dispatch call (thread-safe). ``check`` runs on each batch, e.g. to prove
    that dispatched tasks were committed before the dispatcher was called."""

    def __init__(self, check: Callable[[Sequence[TaskRef]], None] | None = None) -> None:
        self.batches: list[list[TaskRef]] = []
        self._check = check
        self._lock = threading.Lock()

    def dispatch(self, tasks: Sequence[TaskRef]) -> None:
        if self._check is not None:
            self._check(tasks)
        with self._lock:
            self.batches.append(list(tasks))

    def take(self) -> list[TaskRef]:
        """Every ref dispatched since the last take, in order."""
        with self._lock:
            refs = [ref for batch in self.batches for ref in batch]
            self.batches.clear()
            return refs


@attrs.define
class Driver:
    """A Kernel over one store with a recording dispatcher and a record of run callbacks."""

    kernel: Kernel
    store: DagStore
    dispatcher: RecordingDispatcher
    finished: list[RunFinished]

    def work(self, run_id: str, clause: str,
             outputs: Callable[[str], Sequence[Mapping[str, Any]]]) -> None:
        """Claim and complete every dispatched task of ``run_id``, and what those release,
        until nothing is dispatched; ``outputs(task_id)`` is what each task publishes."""
        queue = self.dispatcher.take()
        while queue:
            ref = queue.pop(0)
            claim = self.kernel.claim_task(run_id, ref.task_id, worker="w")
            expect(claim is not None, clause, f"claim of the dispatched task {ref.task_id}")
            assert claim is not None
            self.kernel.on_task_complete(run_id, ref.task_id, claim.attempt_id,
                                         outputs(ref.task_id))
            queue += self.dispatcher.take()


class Harness:
    """Context of one check: the store(s) under test, a fake clock and a namespace."""

    def __init__(
        self,
        make_store: Callable[[], DagStore],
        namespace: str,
        abilities: frozenset[str],
        cleanup: Callable[[DagStore], None],
    ) -> None:
        self._make_store = make_store
        self._cleanup = cleanup
        self.namespace = namespace
        self.abilities = abilities
        self.clock = FakeClock()
        self._stores: list[DagStore] = []
        self._primary: DagStore | None = None

    @property
    def store(self) -> DagStore:
        """The store under test (made on first use)."""
        if self._primary is None:
            self._primary = self.new_store()
        return self._primary

    def new_store(self) -> DagStore:
        """Another store object from ``make_store()`` (cleaned up after the check)."""
        store = self._make_store()
        self._stores.append(store)
        return store

    def run_id(self, label: str) -> str:
        return f"{self.namespace}-{label}"

    def driver(
        self,
        store: DagStore | None = None,
        *,
        limits: Limits | None = None,
        dispatch_check: Callable[[Sequence[TaskRef]], None] | None = None,
        crash_attempts: int = 1,
    ) -> Driver:
        store = self.store if store is None else store
        dispatcher = RecordingDispatcher(dispatch_check)
        finished: list[RunFinished] = []
        kernel = Kernel(store, dispatcher, limits=limits or Limits(), clock=self.clock,
                        on_run_finished=finished.append, lease_seconds=100.0,
                        crash_attempts=crash_attempts)
        return Driver(kernel, store, dispatcher, finished)

    def close(self) -> None:
        """Run the cleanup hook on every store this check made (last made, first cleaned)."""
        errors: list[BaseException] = []
        while self._stores:
            store = self._stores.pop()
            try:
                self._cleanup(store)
            except Exception as exc:  # clean the others, then report the first
                errors.append(exc)
        if errors:
            raise errors[0]


def outputs_for(task_id: str, count: int, **extra: Any) -> list[NewArtifact]:
    """``count`` outputs as the kernel would qualify them (``{task_id}/{k}``)."""
    return [NewArtifact(f"{task_id}/{k}", {"k": k, **extra}, {"blob": [k, task_id]})
            for k in range(count)]


def _pipeline(label: str, parents: Sequence[Sequence[int]], policy: str) -> dict[str, Any]:
    """A valid pipeline snapshot for ``parents`` (so a Kernel can also drive the run)."""
    nodes: list[dict[str, Any]] = []
    for i, ps in enumerate(parents):
        node: dict[str, Any] = {"slug": f"n{i}", "plugin": "work"}
        if ps:
            node["depends_on"] = [f"n{p}" for p in ps]
        nodes.append(node)
    return {"name": label, "nodes": nodes, "failure_policy": policy}


def observe(store: DagStore, run_id: str) -> dict[str, Any]:
    """Everything a reader can see of one run: run, nodes, tasks, artifacts of every
    generation up to each node's current one."""
    run = store.get_run(run_id)
    nodes = store.get_nodes(run_id)
    artifacts: dict[str, list[dict[str, Any]]] = {}
    for node in nodes:
        for generation in range(node.generation + 1):
            found = store.get_artifacts(run_id, node.index, generation)
            if found:
                artifacts[f"{node.index}.{generation}"] = [a.to_dict() for a in found]
    return {
        "run": None if run is None else run.to_dict(),
        "nodes": [n.to_dict() for n in nodes],
        "tasks": [t.to_dict() for t in store.list_tasks(run_id)],
        "artifacts": artifacts,
    }


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """Where two observed states differ (a readable path), or None."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                side = "first" if key not in a else "second"
                return f"{path}.{key}: missing in the {side}"
            found = first_difference(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            found = first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        if len(a) != len(b):
            return f"{path}: {len(a)} items vs {len(b)}"
        return None
    if a != b or type(a) is not type(b):
        return f"{path}: {a!r} vs {b!r}"
    return None


class Scenario:
    """One run created directly in a store, with helpers that call the store methods."""

    def __init__(
        self,
        h: Harness,
        label: str,
        parents: Sequence[Sequence[int]],
        *,
        policy: str = "fail_fast",
        store: DagStore | None = None,
    ) -> None:
        self.h = h
        self.store = h.store if store is None else store
        self.run_id = h.run_id(label)
        self.parents = [tuple(p) for p in parents]
        self.children = [tuple(c for c, ps in enumerate(self.parents) if i in ps)
                         for i in range(len(self.parents))]
        now = h.clock.now()
        count = len(self.parents)
        self.run_record = RunRecord(self.run_id, _pipeline(label, self.parents, policy), {},
                                    RunState.RUNNING, count, count, created_at=now,
                                    updated_at=now)
        self.node_records = [NodeRecord(i, 0, NodeState.WAITING, len(ps))
                             for i, ps in enumerate(self.parents)]
        stored, created = self.store.create_run(self.run_record, self.node_records)
        expect(created and stored == self.run_record, "run.create",
               f"create_run of a new run returned ({stored!r}, {created!r})")

    # ---- reads ---------------------------------------------------------------------------

    def run(self) -> RunRecord:
        run = self.store.get_run(self.run_id)
        expect(run is not None, "run.create", f"get_run({self.run_id!r}) returned None")
        assert run is not None
        return run

    def node(self, index: int) -> NodeRecord:
        found = self.store.get_nodes(self.run_id, [index])
        expect(len(found) == 1 and found[0].index == index, "reads.ordering",
               f"get_nodes(run, [{index}]) returned {found!r}")
        return found[0]

    def task(self, task_id: str) -> TaskRecord:
        task = self.store.get_task(self.run_id, task_id)
        expect(task is not None, "launch.atomic", f"task {task_id!r} is not stored")
        assert task is not None
        return task

    def tasks(self, node: int | None = None,
              states: Iterable[TaskState] | None = None) -> list[TaskRecord]:
        return self.store.list_tasks(self.run_id, node_index=node,
                                     states=None if states is None else list(states))

    def artifacts(self, node: int, generation: int = 0) -> list[Artifact]:
        return self.store.get_artifacts(self.run_id, node, generation)

    def snapshot(self) -> dict[str, Any]:
        return observe(self.store, self.run_id)

    def unchanged(self, before: dict[str, Any], clause: str, what: str) -> None:
        after = self.snapshot()
        diff = first_difference(before, after)
        expect(diff is None, clause, f"{what} changed the store: {diff}")

    # ---- writes --------------------------------------------------------------------------

    def new_tasks(self, node: int, seqs: Iterable[int], *, generation: int = 0,
                  mode: OriginMode = "self", origin: str | None = None) -> list[TaskRecord]:
        now = self.h.clock.now()
        return [
            TaskRecord(self.run_id, f"n{node}.{generation}.{seq}", node, generation, seq,
                       TaskState.QUEUED, {"inputs": {}, "bindings": {"seq": seq}}, origin, mode,
                       updated_at=now)
            for seq in seqs
        ]

    def launch(self, node: int, tasks: Sequence[TaskRecord], total: int | None = None,
               generation: int = 0) -> Outcome:
        return self.store.launch_node(self.run_id, node, generation, tasks,
                                      len(tasks) if total is None else total, self.h.clock.now())

    def start(self, node: int, count: int, *, claim: bool = True,
              mode: OriginMode = "self", origin: str | None = None) -> list[str]:
        """Launch ``count`` tasks on ``node`` (and claim each under ``{task_id}@1``)."""
        tasks = self.new_tasks(node, range(count), mode=mode, origin=origin)
        expect_eq(self.launch(node, tasks), "applied", "launch.atomic",
                  f"launch_node of WAITING node {node}")
        if claim:
            for task in tasks:
                outcome, _ = self.claim(task.task_id, f"{task.task_id}@1")
                expect_eq(outcome, "applied", "claim.cas", f"first claim of {task.task_id}")
        return [t.task_id for t in tasks]

    def claim(self, task_id: str, attempt_id: str,
              lease_until: float | None = None) -> tuple[Outcome, TaskRecord | None]:
        now = self.h.clock.now()
        return self.store.claim_task(self.run_id, task_id, attempt_id, "worker",
                                     now + 100.0 if lease_until is None else lease_until, now)

    def complete(self, task_id: str, attempt_id: str,
                 outputs: Sequence[NewArtifact] = ()) -> Transition:
        node = int(task_id.split(".")[0][1:])
        return self.store.complete_task(self.run_id, task_id, attempt_id, outputs,
                                        self.children[node], self.h.clock.now())

    def fail(self, task_id: str, attempt_id: str, *, retry_at: float | None = None,
             final: TaskState = TaskState.FAILED,
             fail_run: RunState | None = None) -> Transition:
        node = int(task_id.split(".")[0][1:])
        return self.store.fail_task(self.run_id, task_id, attempt_id, "boom", retry_at, final,
                                    self.children[node], fail_run, self.h.clock.now())

    def settle(self, node: int, state: NodeState, *, generation: int = 0,
               fail_run: RunState | None = None, reason: str | None = "why") -> Transition:
        return self.store.settle_node(self.run_id, node, generation, state, reason,
                                      self.children[node], fail_run, self.h.clock.now())

    def cancel(self) -> Transition:
        return self.store.cancel_run(self.run_id, "stop", self.h.clock.now())


def pipeline(*nodes: Mapping[str, Any], policy: str = "fail_fast") -> dict[str, Any]:
    """A pipeline dict for Kernel-driven checks."""
    return {"name": "conformance", "nodes": [dict(n) for n in nodes], "failure_policy": policy}
