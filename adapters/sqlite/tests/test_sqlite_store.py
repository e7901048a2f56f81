"""SQLite-specific behaviour: schema versioning, WAL, URLs, races across threads and processes,
an end-to-end run through the Kernel, and the cost of a completion (one transaction).

Every test uses a real database file under ``tmp_path``; races are started with barriers, never
with sleeps.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest

from interlock import (
    FanMode,
    Kernel,
    Node,
    NodeRecord,
    NodeState,
    Pipeline,
    RunFinished,
    RunRecord,
    RunState,
    TaskRef,
    TaskState,
    UsageError,
    open_store,
)
from interlock.values import Claim
from interlock_sqlite import SCHEMA_VERSION, SchemaVersionError, SqliteStore, from_url
from interlock_sqlite.schema import MIGRATIONS, read_version
from interlock_sqlite.url import parse_url

FORK = multiprocessing.get_context("fork")  # children inherit the (importlib-loaded) test module


def fan_pipeline(count: int) -> Pipeline:
    """source emits ``count`` items -> one ``square`` task per item -> one ``total`` task."""
    return Pipeline("fan", [
        Node("source", "emit", config={"count": count}),
        Node("item", "square", depends_on=["source"]),
        Node("total", "sum", depends_on=["item"], fan_mode=FanMode.AGGREGATE),
    ])


def work(claim: Claim) -> list[dict[str, Any]]:
    """Deterministic plugin bodies for :func:`fan_pipeline`."""
    task = claim.input
    if task.node == "source":
        count = task.config["count"]
        assert isinstance(count, int)
        return [{"id": str(i), "fields": {"i": i}} for i in range(count)]
    if task.node == "item":
        (artifact,) = task.inputs["source"]
        i = artifact.fields["i"]
        assert isinstance(i, int)
        return [{"id": "sq", "fields": {"i": i, "sq": i * i}}]
    items = task.inputs["item"]
    return [{"id": "total", "fields": {"count": len(items),
                                       "total": sum(int(a.fields["sq"]) for a in items)}}]


def drain_queued(kernel: Kernel, run_id: str, worker: str = "test") -> int:
    """Run every QUEUED task of the run (and what they release) to the end, in this thread."""
    done = 0
    while queued := kernel.store.list_tasks(run_id, states=[TaskState.QUEUED]):
        for task in queued:
            claim = kernel.claim_task(run_id, task.task_id, worker=worker)
            if claim is not None:
                kernel.on_task_complete(run_id, task.task_id, claim.attempt_id, work(claim))
                done += 1
    return done


class BeginCounter:
    """``on_connect`` hook: counts transactions per thread via the trace callback — their
    ``COMMIT``/``ROLLBACK`` (a contended ``BEGIN IMMEDIATE`` is tried several times)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self.total = 0

    def __call__(self, conn: sqlite3.Connection) -> None:
        conn.set_trace_callback(self._trace)

    def _trace(self, statement: str) -> None:
        if statement.startswith(("COMMIT", "ROLLBACK")):
            self._local.count = self.mine + 1
            with self._lock:
                self.total += 1

    @property
    def mine(self) -> int:
        """Transactions the calling thread has ended so far."""
        return int(getattr(self._local, "count", 0))


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def snapshot(store: SqliteStore, run_id: str) -> tuple[Any, ...]:
    """Everything the store holds about a run, through the public read methods."""
    nodes = store.get_nodes(run_id)
    return (store.get_run(run_id), nodes, store.list_tasks(run_id),
            [store.get_artifacts(run_id, n.index, n.generation) for n in nodes])


# ---- schema --------------------------------------------------------------------------------------


def test_schema_is_created_once_and_versioned(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    first = SqliteStore(path)
    second = SqliteStore(path)
    assert first.schema_version == second.schema_version == SCHEMA_VERSION
    with raw(path) as conn:
        rows = conn.execute("SELECT version FROM schema_version").fetchall()
    assert rows == [(v,) for v in range(1, SCHEMA_VERSION + 1)]


def test_database_from_a_future_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    SqliteStore(path).close()
    with raw(path) as conn:
        conn.execute("INSERT INTO schema_version VALUES (?, 0)", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaVersionError) as info:
        SqliteStore(path)
    message = str(info.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in message
    assert f"up to {SCHEMA_VERSION}" in message and "upgrade interlock-sqlite" in message
    assert isinstance(info.value, UsageError)


def _downgrade_to_v1(path: Path) -> None:
    """Rewrite a version-2 file as version 1 wrote it: the pipeline and input inline in
    ``runs`` (a rowid table), no ``run_static``. Nodes, tasks and artifacts are unchanged."""
    with raw(path) as conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ALTER TABLE runs RENAME TO runs_v2")
        runs_v1 = next(s for s in MIGRATIONS[0] if "CREATE TABLE runs" in s)
        conn.execute(runs_v1)
        conn.execute("INSERT INTO runs SELECT r.*, s.pipeline, s.input FROM runs_v2 AS r "
                     "JOIN run_static AS s USING (run_id)")
        conn.execute("DROP TABLE runs_v2")
        conn.execute("DROP TABLE run_static")
        conn.execute("DELETE FROM schema_version WHERE version > 1")
        conn.execute("COMMIT")


def test_a_version_1_file_is_migrated_and_its_runs_go_on(tmp_path: Path) -> None:
    # Version 2 moved the pipeline and input out of the row every step rewrites.
    path = tmp_path / "old.db"
    store = SqliteStore(path)
    kernel = Kernel(store)
    kernel.start_run(fan_pipeline(3), run_id="old", input={"note": "kept"})
    (source,) = store.list_tasks("old", states=[TaskState.QUEUED])
    claim = kernel.claim_task("old", source.task_id, worker="w")
    assert claim is not None
    kernel.on_task_complete("old", source.task_id, claim.attempt_id, work(claim))
    before = snapshot(store, "old")
    store.close()
    _downgrade_to_v1(path)
    with raw(path) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(runs)")]
        version = read_version(conn)
    assert "pipeline" in columns and version == 1

    reopened = SqliteStore(path)
    assert reopened.schema_version == SCHEMA_VERSION == 2
    assert snapshot(reopened, "old") == before
    with raw(path) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(runs)")]
        static = conn.execute("SELECT run_id FROM run_static").fetchall()
    assert "pipeline" not in columns and static == [("old",)]
    again = Kernel(reopened)
    assert drain_queued(again, "old") == 4  # three items and the total
    run = reopened.get_run("old")
    assert run is not None and run.state is RunState.COMPLETED and run.input == {"note": "kept"}
    (total,) = reopened.get_artifacts("old", 2, 0)
    assert total.fields == {"count": 3, "total": 0 + 1 + 4}


def test_runs_of_one_pipeline_share_its_decoded_snapshot(tmp_path: Path) -> None:
    # Many runs of one pipeline cost the run cache little more than their inputs; a store
    # opened afresh (another worker process) reads each run from the file.
    path = tmp_path / "shared.db"
    kernel = Kernel(SqliteStore(path))
    for i in range(3):
        kernel.start_run(fan_pipeline(2), run_id=f"same-{i}", input={"i": i})
    kernel.start_run(fan_pipeline(5), run_id="other")
    fresh = SqliteStore(path)
    runs = [fresh.get_run(f"same-{i}") for i in range(3)]
    assert all(run is not None for run in runs)
    first = runs[0]
    assert first is not None
    for i, run in enumerate(runs):
        assert run is not None and run.pipeline is first.pipeline and run.input == {"i": i}
    other = fresh.get_run("other")
    assert other is not None and other.pipeline is not first.pipeline
    assert other.pipeline != first.pipeline and other.pipeline["nodes"][0]["config"] == {
        "count": 5}
    fresh.close()


def _open_fresh(path: str, barrier: Any, results: Any) -> None:
    barrier.wait()
    try:
        results.put(SqliteStore(path).schema_version)
    except BaseException as exc:
        results.put(repr(exc))


def test_processes_opening_a_fresh_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    path = str(tmp_path / "fresh.db")
    barrier, results = FORK.Barrier(4), FORK.Queue()
    procs = [FORK.Process(target=_open_fresh, args=(path, barrier, results)) for _ in range(4)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(60)
    assert outcomes == [SCHEMA_VERSION] * 4
    with raw(Path(path)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchall() == [
            (SCHEMA_VERSION,)]


# ---- configuration and URLs ----------------------------------------------------------------------


def test_wal_and_synchronous_levels(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "a.db")
    with raw(tmp_path / "a.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchall() == [("wal",)]
    assert store._conn().execute("PRAGMA synchronous").fetchall() == [(1,)]  # NORMAL
    full = from_url(f"sqlite:///{tmp_path}/b.db?synchronous=FULL")
    assert full.synchronous == "FULL"
    assert full._conn().execute("PRAGMA synchronous").fetchall() == [(2,)]
    assert full._conn().execute("PRAGMA busy_timeout").fetchall() == [(30000,)]


def test_url_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    relative = from_url("sqlite:///data/rel.db")
    assert relative.path == "data/rel.db" and (tmp_path / "data" / "rel.db").exists()
    absolute = from_url(f"sqlite:///{tmp_path}/abs.db?busy_timeout_ms=500")
    assert absolute.path == f"{tmp_path}/abs.db" and absolute.busy_timeout_ms == 500
    assert parse_url("sqlite:////srv/runs.db") == ("/srv/runs.db", {})
    assert parse_url("sqlite:///my%20runs.db?synchronous=full") == (
        "my runs.db", {"synchronous": "full"})
    store = open_store(f"sqlite:///{tmp_path}/entry.db")  # through the entry point
    assert isinstance(store, SqliteStore)


@pytest.mark.parametrize(("url", "needle"), [
    ("postgres:///x.db", "not a SQLite store URL"),
    ("sqlite:/x.db", "not a SQLite store URL"),
    ("sqlite://host/x.db", "names a host"),
    ("sqlite:///", "no database path"),
    ("sqlite:///x.db?foo=1", "unknown option 'foo'"),
    ("sqlite:///x.db?synchronous=FULL&synchronous=NORMAL", "given twice"),
    ("sqlite:///x.db?synchronous=OFF", "synchronous must be one of"),
    ("sqlite:///x.db?busy_timeout_ms=soon", "busy_timeout_ms"),
    ("sqlite:///x.db?synchronous", "bad query string"),
    ("sqlite:///:memory:", "in-memory"),
    ("sqlite:///nowhere/x.db", r"directory '.*nowhere' does not exist; in a sqlite:/// URL"),
])
def test_bad_urls_are_usage_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   url: str, needle: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=needle):
        from_url(url)
    assert not (tmp_path / "x.db").exists()


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "notes.db").write_text("not a database, just notes\n" * 200)
    with pytest.raises(UsageError, match=r"cannot open SQLite store .*notes\.db"):
        SqliteStore(tmp_path / "notes.db")


def _use_inherited(store: SqliteStore, results: Any) -> None:
    try:
        run, nodes = _run_record("child")
        results.put((store.create_run(run, nodes)[1], store.get_run("parent") is not None))
    except BaseException as exc:
        results.put(repr(exc))


def test_a_forked_child_may_use_the_inherited_store_object(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "a.db")
    run, nodes = _run_record("parent")
    store.create_run(run, nodes)  # the parent's connection exists before the fork
    results = FORK.Queue()
    child = FORK.Process(target=_use_inherited, args=(store, results))
    child.start()
    assert results.get(timeout=60) == (True, True)  # the child opened its own connection
    child.join(60)
    assert child.exitcode == 0
    assert store.get_run("child") is not None  # and the parent's connection still works
    with store.transaction("parent") as tx:
        assert tx is not None and tx.run == run


def test_closed_store_refuses_use(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "a.db") as store:
        assert store.get_run("nope") is None
    with pytest.raises(UsageError, match="closed"):
        store.get_run("nope")


# ---- transactions --------------------------------------------------------------------------------


def _run_record(run_id: str, nodes: int = 2) -> tuple[RunRecord, list[NodeRecord]]:
    run = RunRecord(run_id, {"name": "p", "nodes": []}, {"k": [1, 2.5, None]},
                    RunState.RUNNING, nodes, nodes, created_at=1.0, updated_at=1.0)
    return run, [NodeRecord(i, 0, NodeState.WAITING, 0) for i in range(nodes)]


def test_transaction_rolls_back_when_the_block_raises(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "a.db")
    run, nodes = _run_record("r")
    store.create_run(run, nodes)
    with pytest.raises(RuntimeError), store.transaction("r") as tx:
        assert tx is not None
        tx.put_run(attrs.evolve(tx.run, state=RunState.CANCELLED))
        tx.put_node(attrs.evolve(tx.node(0), state=NodeState.CANCELLED))
        raise RuntimeError("boom")
    assert store.get_run("r") == run
    assert store.get_nodes("r") == nodes
    with store.transaction("missing") as nothing:
        assert nothing is None


def test_concurrent_create_run_from_threads_has_one_winner(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "a.db")
    run, nodes = _run_record("race", 3)
    barrier = threading.Barrier(4)
    results: list[tuple[RunRecord, bool]] = []
    lock = threading.Lock()

    def create() -> None:
        barrier.wait()
        result = store.create_run(run, nodes)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(created for _, created in results) == [False, False, False, True]
    assert all(stored == run for stored, _ in results)
    assert store.get_nodes("race") == nodes


def _claim_all(path: str, run_id: str, task_ids: Sequence[str], barrier: Any,
               results: Any) -> None:
    store = SqliteStore(path)
    outcomes = []
    for task_id in task_ids:
        barrier.wait()  # every process fires its claim of this task at the same moment
        outcome, _ = store.claim_task(run_id, task_id, f"attempt-{os.getpid()}-{task_id}",
                                      f"proc-{os.getpid()}", None, time.time())
        outcomes.append(outcome)
    results.put(outcomes)


def test_processes_racing_claim_task_exactly_one_applies(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    kernel = Kernel(SqliteStore(path))
    kernel.start_run(fan_pipeline(8), run_id="race")
    claim = kernel.claim_task("race", "source.0.0")
    assert claim is not None
    kernel.on_task_complete("race", "source.0.0", claim.attempt_id, work(claim))
    task_ids = [t.task_id for t in kernel.store.list_tasks("race", states=[TaskState.QUEUED])]
    assert len(task_ids) == 8
    barrier, results = FORK.Barrier(4), FORK.Queue()
    procs = [FORK.Process(target=_claim_all, args=(str(path), "race", task_ids, barrier, results))
             for _ in range(4)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    for column, task_id in enumerate(task_ids):
        per_task = sorted(row[column] for row in outcomes)
        assert per_task == ["applied", "stale", "stale", "stale"], task_id
        task = kernel.store.get_task("race", task_id)
        assert task is not None and task.state is TaskState.RUNNING and task.attempt == 1


# ---- end to end ----------------------------------------------------------------------------------


class QueueDispatcher:
    """Hands task refs to worker threads through a queue (after commit, as the kernel does)."""

    def __init__(self) -> None:
        self.queue: queue.Queue[TaskRef | None] = queue.Queue()

    def dispatch(self, tasks: Sequence[TaskRef]) -> None:
        for ref in tasks:
            self.queue.put(ref)


def run_with_threads(kernel: Kernel, dispatcher: QueueDispatcher, start: Callable[[], object],
                     threads: int, per_completion: Callable[[int], None]) -> None:
    """Start the run, then let ``threads`` workers claim/complete until it finishes."""
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        while (ref := dispatcher.queue.get()) is not None:
            try:
                claim = kernel.claim_task(ref.run_id, ref.task_id, worker=name)
                if claim is None:
                    continue
                per_completion(-1)
                kernel.on_task_complete(ref.run_id, ref.task_id, claim.attempt_id, work(claim))
                per_completion(+1)
            except BaseException as exc:
                errors.append(exc)
                for _ in range(threads):
                    dispatcher.queue.put(None)
                raise

    pool = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(threads)]
    for thread in pool:
        thread.start()
    start()
    for thread in pool:
        thread.join(300)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in pool)


def test_end_to_end_through_the_kernel_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "e2e.db"
    counter = BeginCounter()
    store = SqliteStore(path, on_connect=counter)
    dispatcher = QueueDispatcher()
    threads = 4
    finished: list[RunFinished] = []

    def on_finished(event: RunFinished) -> None:
        finished.append(event)
        for _ in range(threads):
            dispatcher.queue.put(None)  # the run is over: stop the workers

    kernel = Kernel(store, dispatcher, on_run_finished=on_finished)
    per_call: list[int] = []
    lock = threading.Lock()
    local = threading.local()

    def measure(sign: int) -> None:  # transactions of one on_task_complete, in its thread
        if sign < 0:
            local.before = counter.mine
        else:
            with lock:
                per_call.append(counter.mine - local.before)

    began = time.perf_counter()
    run_with_threads(kernel, dispatcher, lambda: kernel.start_run(fan_pipeline(50), run_id="e2e"),
                     threads, measure)
    elapsed = time.perf_counter() - began

    assert [e.state for e in finished] == [RunState.COMPLETED]
    tasks = store.list_tasks("e2e")
    assert len(tasks) == 52 and {t.state for t in tasks} == {TaskState.COMPLETED}
    (total,) = store.get_artifacts("e2e", 2, 0)
    assert total.fields == {"count": 50, "total": sum(i * i for i in range(50))}
    # every completion is exactly one transaction: one that releases nothing; the source's,
    # whose release of the 50 items is launched in its own transaction (the 'follow' ability:
    # one-task parent); and the last item's, whose release of total is launched in it too (the
    # 50 artifacts of its 50-task parent are read inside the step)
    histogram = collections.Counter(per_call)
    assert histogram == {1: 52}, histogram
    print(f"\nsqlite e2e: {len(tasks)} tasks in {elapsed:.3f}s = {len(tasks) / elapsed:.0f} "
          f"tasks/s with {threads} threads; transactions per on_task_complete: "
          f"{dict(histogram)} (mean {sum(per_call) / len(per_call):.3f}); "
          f"transactions in total {counter.total}")

    reopened = SqliteStore(path)
    assert snapshot(reopened, "e2e") == snapshot(store, "e2e")


def test_hot_queries_use_indexes(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "a.db")
    kernel = Kernel(store)
    kernel.start_run(fan_pipeline(3), run_id="r")
    drain_queued(kernel, "r")
    plans: list[str] = []
    conn = store._conn()
    conn.set_trace_callback(lambda sql: plans.extend(
        row[3] for row in store._pool.connect().execute("EXPLAIN QUERY PLAN " + sql)
    ) if sql.startswith("SELECT") else None)
    store.list_tasks("r", states=[TaskState.QUEUED, TaskState.RUNNING])
    store.list_tasks("r", node_index=1)
    store.list_expired(time.time(), 10)
    store.get_artifacts("r", 1, 0)
    with store.transaction("r") as tx:
        assert tx is not None
        list(tx.unfinished_tasks(1))
    conn.set_trace_callback(None)
    # every access is an index search; a multi-state listing sorts only the rows it matched
    assert plans and all(p.startswith("SEARCH") or p == "USE TEMP B-TREE FOR ORDER BY"
                         for p in plans), plans
    assert {"tasks_by_state", "tasks_by_node", "tasks_lease", "artifacts_by_node"} <= {
        word for p in plans for word in p.split()}
