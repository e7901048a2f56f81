"""Four ``interlock worker`` processes on one Redis (the session's private server).

- ``test_fan_out_grouped_aggregate_runs_every_task_exactly_once``: src (2,000 artifacts) ->
  branches ``a`` and ``b`` (single mode, 4,000 tasks) -> ``merge`` (grouped over a and b, 2,000
  tasks of 2 artifacts) -> ``total`` (aggregate). Every ref of ``a`` is dispatched a second time
  while the run is going. Every one of the 6,001 tasks runs exactly once to completion (plugins
  record each execution with its attempt id and pid), each duplicate delivery loses its claim,
  every node's artifacts are complete and the aggregate's sum is right.
- ``test_cancelled_run_never_runs_a_task_twice_and_workers_keep_serving``: a run whose tasks
  block in flight on every worker thread is cancelled; the released tasks' completions are
  stale, nothing of the run completes after the cancel or runs twice, the queued rest of it is
  delivered and dropped, a later run completes on the same workers, and SIGTERM stops every
  worker with exit code 0.

The workers are real processes started once per module (``python -m interlock worker``), with
``--log-level DEBUG`` so each lost claim is logged (``claim of <run>/<task> lost``); the test
reads their stderr files. Waits block on Redis lists the plugins push (BLPOP with a timeout,
checking between timeouts that every worker is alive) or poll the store with a deadline.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from interlock import (
    Kernel,
    NodeState,
    RunRecord,
    RunState,
    TaskInput,
    TaskRef,
    TaskState,
)
from interlock_redis import RedisStore, RedisStreamsDispatcher

HERE = Path(__file__).resolve().parent
WORKERS = 4
CONCURRENCY = int(os.environ.get("INTERLOCK_DIST_CONCURRENCY", "4"))
ITEMS = int(os.environ.get("INTERLOCK_DIST_ITEMS", "2000"))
RUN_DEADLINE = 120.0  # a bound, not the expectation: the big run takes 11-21 s on 2 busy cores

NODES = ["src", "a", "b", "merge", "total"]


def fan_pipeline(name: str, items: int, *, announce_a: bool = False) -> dict[str, Any]:
    """src -> a (x2), b (x3) -> merge (grouped: a_i + b_i = 5 i) -> total (aggregate)."""
    return {"name": name, "nodes": [
        {"slug": "src", "plugin": "dist_src", "config": {"count": items}},
        {"slug": "a", "plugin": "dist_scale", "depends_on": ["src"],
         "config": {"factor": 2, "announce": announce_a}},
        {"slug": "b", "plugin": "dist_scale", "depends_on": ["src"], "config": {"factor": 3}},
        {"slug": "merge", "plugin": "dist_merge", "depends_on": ["a", "b"],
         "fan_mode": "grouped"},
        {"slug": "total", "plugin": "dist_total", "depends_on": ["merge"],
         "fan_mode": "aggregate"},
    ]}


def expected_total(items: int) -> int:
    return 5 * items * (items - 1) // 2


class Cluster:
    """The worker processes, the test's own store/queue/kernel on the same namespace, and
    helpers that wait on what the plugins push."""

    def __init__(self, redis_url: str, namespace: str, directory: Path) -> None:
        self.namespace = namespace
        self.prefix = f"{namespace}:dist"
        self.directory = directory
        self.url = f"{redis_url}{'&' if '?' in redis_url else '?'}namespace={namespace}"
        self.client = redis.Redis.from_url(redis_url)
        self.store = RedisStore(self.client, namespace)
        self.queue = RedisStreamsDispatcher(self.client, namespace)
        self.kernel = Kernel(self.store, self.queue)
        self.env = dict(os.environ,
                        PYTHONPATH=os.pathsep.join(
                            [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]),
                        INTERLOCK_DIST_REDIS_URL=redis_url,
                        INTERLOCK_DIST_PREFIX=self.prefix)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def key(self, *parts: str) -> str:
        return ":".join([self.prefix, *parts])

    # ---- processes ---------------------------------------------------------------------

    def start(self, deadline_seconds: float = 30.0) -> None:
        """Spawn the workers; ready when each has imported the plugins (it pushes its pid to
        ``<prefix>:ready``; serving starts right after)."""
        self.queue.ensure_group()
        command = [sys.executable, "-m", "interlock", "--log-level", "DEBUG", "worker",
                   "--store", self.url, "--plugins", "dist_plugins",
                   "--concurrency", str(CONCURRENCY), "--receive-timeout", "0.5"]
        for number in range(WORKERS):
            log = self.directory / f"worker-{number}.log"
            with open(log, "wb") as out:
                self.processes.append(subprocess.Popen(
                    command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=self.env, cwd=self.directory))
            self.logs.append(log)
        ready = self.pop(self.key("ready"), WORKERS, time.monotonic() + deadline_seconds)
        assert sorted(int(pid) for pid in ready) == sorted(p.pid for p in self.processes)

    def check_alive(self) -> None:
        dead = [(p.pid, p.returncode) for p in self.processes if p.poll() is not None]
        assert not dead, f"worker process(es) exited: {dead}\n{self.log_tail()}"

    def terminate(self, deadline_seconds: float) -> list[int | None]:
        """SIGTERM every worker; their exit codes (None: still running at the deadline)."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + deadline_seconds
        codes: list[int | None] = []
        for process in self.processes:
            try:
                codes.append(process.wait(timeout=max(0.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                codes.append(None)
        return codes

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)

    def log_text(self) -> str:
        return "".join(log.read_text("utf-8", "replace") for log in self.logs if log.exists())

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def lost_claims(self, run_id: str) -> Counter[str]:
        """Task ids of the run whose claim a worker lost, as logged (DEBUG) by the workers."""
        pattern = re.compile(rf"claim of {re.escape(run_id)}/(\S+) lost")
        return Counter(m.group(1) for m in pattern.finditer(self.log_text()))

    # ---- waiting -----------------------------------------------------------------------

    def pop(self, key: str, count: int, deadline: float,
            check: Callable[[], None] = lambda: None) -> list[bytes]:
        """BLPOP ``count`` entries of ``key``; between timeouts check the workers (and
        ``check``) so a failure surfaces at once instead of at the deadline."""
        got: list[bytes] = []
        while len(got) < count:
            remaining = deadline - time.monotonic()
            assert remaining > 0, (f"{key}: {len(got)} of {count} entries before the deadline"
                                   f"\n{self.log_tail()}")
            reply: Any = self.client.blpop([key], timeout=min(1.0, remaining))
            if reply is None:
                self.check_alive()
                check()
                continue
            got.append(reply[1])
        return got

    def wait_state(self, run_id: str, deadline: float) -> RunRecord:
        """Poll the store until the run is terminal (called once its last task has run)."""
        while True:
            run = self.store.get_run(run_id)
            assert run is not None
            if run.state.terminal:
                return run
            self.check_alive()
            assert time.monotonic() < deadline, f"run {run_id} still {run.state.value}"
            time.sleep(0.005)

    def wait_drained(self, deadline: float) -> None:
        """Every dispatched ref delivered and acked (ack = XACK + XDEL: an empty stream)."""
        while self.client.xlen(self.queue.stream_key):
            self.check_alive()
            assert time.monotonic() < deadline, (
                f"stream not drained: {self.client.xlen(self.queue.stream_key)} left")
            time.sleep(0.01)
        assert self.client.xpending(self.queue.stream_key, self.queue.group)["pending"] == 0

    def check_not_failed(self, run_id: str) -> Callable[[], None]:
        """A check for :meth:`pop`: the run has not ended otherwise than COMPLETED (a run may
        complete between a BLPOP timeout and the check; the next BLPOP then returns)."""

        def check() -> None:
            run = self.store.get_run(run_id)
            assert run is not None and run.state in (RunState.RUNNING, RunState.COMPLETED), (
                f"run {run_id} ended {run and run.state.value}: {run and run.reason}"
                f"\n{self.log_tail()}")

        return check

    def executions(self, run_id: str) -> list[tuple[str, str, int]]:
        """(task id, attempt id, pid) of every plugin execution of the run that finished."""
        out = []
        for raw in self.client.lrange(self.key("exec", run_id), 0, -1):
            task_id, attempt_id, pid = entry(raw)
            out.append((task_id, attempt_id, int(pid)))
        return out

    def entries_added(self) -> int:
        return int(self.client.xinfo_stream(self.queue.stream_key)["entries-added"])


def entry(raw: bytes | str) -> list[str]:
    """The space-separated parts of a list entry the plugins pushed."""
    return (raw.decode() if isinstance(raw, bytes) else raw).split()


def drop_namespace(client: redis.Redis, namespace: str) -> None:
    keys = list(client.scan_iter(match=f"{namespace}*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start:start + 500])


@pytest.fixture(scope="module")
def cluster(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    namespace = f"itest-dist-{uuid.uuid4().hex[:12]}"
    made = Cluster(redis_url, namespace, tmp_path_factory.mktemp("workers"))
    try:
        made.start()
        yield made
    finally:
        made.kill()
        drop_namespace(made.client, namespace)
        made.client.close()


def test_fan_out_grouped_aggregate_runs_every_task_exactly_once(cluster: Cluster) -> None:
    store, kernel, run_id = cluster.store, cluster.kernel, "dist-main"
    tasks_total = 1 + 2 * ITEMS + ITEMS + 1
    added_before = cluster.entries_added()
    started = time.monotonic()
    deadline = started + RUN_DEADLINE
    kernel.start_run(fan_pipeline("dist", ITEMS, announce_a=True), run_id=run_id)
    running = cluster.check_not_failed(run_id)

    # ---- inject a duplicate of every ref of node a, as soon as a's tasks all exist -------
    cluster.pop(cluster.key("announce", run_id, "a"), 1, deadline, running)
    a_index = NODES.index("a")
    while True:  # the first a task runs while a's later launch batches may still be written
        (a_node,) = store.get_nodes(run_id, [a_index])
        a_tasks = store.list_tasks(run_id, node_index=a_index)
        if a_node.state is not NodeState.WAITING and len(a_tasks) == a_node.total_tasks:
            break
        assert time.monotonic() < deadline, "node a never finished launching"
        time.sleep(0.005)
    assert len(a_tasks) == ITEMS
    at_injection = Counter(t.state.value for t in a_tasks)
    cluster.queue.dispatch([TaskRef(run_id, t.task_id, "dist_scale", t.not_before)
                            for t in a_tasks])

    # ---- wait for the aggregate's verdict, then for the run's terminal state -------------
    (raw,) = cluster.pop(cluster.key("done", run_id), 1, deadline, running)
    run = cluster.wait_state(run_id, deadline)
    elapsed = time.monotonic() - started
    verdict = json.loads(raw)
    assert run.state is RunState.COMPLETED, (run.reason, cluster.log_tail())

    # every task ran exactly once, to completion, under the attempt that completed it
    executions = cluster.executions(run_id)
    runs_per_task = Counter(task_id for task_id, _, _ in executions)
    assert len(runs_per_task) == tasks_total
    assert set(runs_per_task.values()) == {1}, runs_per_task.most_common(3)
    tasks = store.list_tasks(run_id)
    assert len(tasks) == tasks_total
    assert {t.state for t in tasks} == {TaskState.COMPLETED}
    assert {t.attempt for t in tasks} == {1}  # one claim won per task, never a retry
    ran = {task_id: attempt_id for task_id, attempt_id, _ in executions}
    assert all(ran[t.task_id] == t.attempt_id for t in tasks)
    per_node = Counter(task_id.split(".")[0] for task_id in runs_per_task)
    assert per_node == {"src": 1, "a": ITEMS, "b": ITEMS, "merge": ITEMS, "total": 1}
    pids = Counter(pid for _, _, pid in executions)
    assert set(pids) == {p.pid for p in cluster.processes}, pids  # all 4 processes served

    # artifacts: complete per node, values right, one merge per item of a and b
    arts = {slug: store.get_artifacts(run_id, i, 0) for i, slug in enumerate(NODES)}
    assert {slug: len(a) for slug, a in arts.items()} == {
        "src": ITEMS, "a": ITEMS, "b": ITEMS, "merge": ITEMS, "total": 1}
    for slug, factor in (("src", 1), ("a", 2), ("b", 3), ("merge", 5)):
        values = {a.fields["i"]: a.data for a in arts[slug]}
        assert values == {i: factor * i for i in range(ITEMS)}, slug
    (total_task,) = store.list_tasks(run_id, node_index=NODES.index("total"))
    # a large aggregate's plan holds its input by reference: read it as a worker does
    aggregate_input = TaskInput.from_task(
        total_task, "total", "total", {},
        lambda index, generation: store.get_artifacts(run_id, index, generation)).inputs
    assert list(aggregate_input) == ["merge"]
    assert len(aggregate_input["merge"]) == ITEMS
    assert aggregate_input["merge"] == arts["merge"]
    assert verdict["count"] == verdict["distinct"] == ITEMS
    assert verdict["total"] == arts["total"][0].data == expected_total(ITEMS)

    # the duplicates were delivered and each lost its claim (nothing else lost one)
    cluster.wait_drained(time.monotonic() + 20)
    # every task went through the stream once, except those a completing worker kept for
    # itself (continuation: claimed in the launch, never dispatched), plus the ITEMS duplicates
    handed_over = tasks_total + ITEMS - (cluster.entries_added() - added_before)
    assert 0 <= handed_over < tasks_total, handed_over
    lost = cluster.lost_claims(run_id)
    assert lost == Counter({t.task_id: 1 for t in a_tasks}), lost.most_common(3)

    print(f"\n[distributed] {WORKERS} worker processes x {CONCURRENCY} threads: "
          f"{tasks_total} tasks (+{ITEMS} duplicate deliveries, all lost their claim) in "
          f"{elapsed:.2f} s = {tasks_total / elapsed:.0f} tasks/s; a's tasks at injection: "
          f"{dict(at_injection)}; executions per process: {sorted(pids.values())}")


def test_cancelled_run_never_runs_a_task_twice_and_workers_keep_serving(
        cluster: Cluster) -> None:
    store, kernel, run_id = cluster.store, cluster.kernel, "dist-cancel"
    threads = WORKERS * CONCURRENCY
    items = threads * 4
    deadline = time.monotonic() + 60  # a bound: the whole test takes 2-4 s
    pipeline = {"name": "cancel", "nodes": [
        {"slug": "src", "plugin": "dist_src", "config": {"count": items}},
        {"slug": "slow", "plugin": "dist_block", "depends_on": ["src"],
         "config": {"block_seconds": 30}},
        {"slug": "sum", "plugin": "dist_total", "depends_on": ["slow"], "fan_mode": "aggregate"},
    ]}
    kernel.start_run(pipeline, run_id=run_id)

    # every worker thread is inside a slow task: cancel the run under them
    started = cluster.pop(cluster.key("started-signal", run_id), threads, deadline,
                          cluster.check_not_failed(run_id))
    in_flight = dict(entry(e)[:2] for e in started)
    assert len(in_flight) == threads
    transition = kernel.cancel_run(run_id, "cancelled by the test")
    assert transition.outcome == "applied" and transition.run_state is RunState.CANCELLED
    at_cancel = {t.task_id: t for t in store.list_tasks(run_id)}
    completed_before = {i for i, t in at_cancel.items() if t.state is TaskState.COMPLETED}
    assert completed_before == {"src.0.0"}
    assert all(at_cancel[i].state is TaskState.CANCELLED for i in in_flight)

    # release them: each finishes its plugin and reports a completion the store fences out
    cluster.client.rpush(cluster.key("release", run_id), *["go"] * threads)
    cluster.pop(cluster.key("ended-signal", run_id), threads, deadline)
    for task_id, attempt_id in in_flight.items():  # the same report, again: stale
        late = kernel.on_task_complete(run_id, task_id, attempt_id, [{"data": 0}])
        assert late.outcome == "stale" and late.ready == ()

    # the workers keep serving: a later run completes
    after = "dist-after"
    kernel.start_run(fan_pipeline("after", 20), run_id=after)
    (raw,) = cluster.pop(cluster.key("done", after), 1, deadline, cluster.check_not_failed(after))
    assert json.loads(raw)["total"] == expected_total(20)
    assert cluster.wait_state(after, deadline).state is RunState.COMPLETED
    cluster.wait_drained(deadline)  # the cancelled run's queued refs were delivered too

    # SIGTERM: every worker finishes what it holds and exits 0
    stopping = time.monotonic()
    codes = cluster.terminate(deadline_seconds=20)
    stop_seconds = time.monotonic() - stopping
    assert codes == [0] * WORKERS, f"exit codes {codes}\n{cluster.log_tail()}"
    print(f"\n[distributed] {WORKERS} workers stopped by SIGTERM in {stop_seconds:.2f} s")

    # nothing of the cancelled run completed after the cancel, nothing ran twice
    run = store.get_run(run_id)
    assert run is not None and run.state is RunState.CANCELLED
    final = {t.task_id: t for t in store.list_tasks(run_id)}
    assert set(final) == set(at_cancel)  # 'sum' was never launched
    assert {i for i, t in final.items() if t.state is TaskState.COMPLETED} == completed_before
    assert {t.state for i, t in final.items() if i not in completed_before} == {
        TaskState.CANCELLED}
    assert all(final[i].attempt_id == a and final[i].attempt == 1 for i, a in in_flight.items())
    assert all(t.attempt == 0 for i, t in final.items()  # queued ones never got a claim
               if i not in in_flight and i not in completed_before)
    assert store.get_artifacts(run_id, 1, 0) == []  # no slow task published anything
    assert not cluster.client.exists(cluster.key("done", run_id))
    runs_per_task = Counter(task_id for task_id, _, _ in cluster.executions(run_id))
    assert runs_per_task == Counter({"src.0.0": 1, **{i: 1 for i in in_flight}})
    starts = [entry(e)[0] for e in cluster.client.lrange(cluster.key("started", run_id), 0, -1)]
    assert sorted(starts) == sorted(in_flight)
    # the refs of the tasks still queued at the cancel were each delivered once, and dropped
    queued = {i for i in final if i not in in_flight and i not in completed_before}
    assert len(queued) == items - threads
    assert cluster.lost_claims(run_id) == Counter({i: 1 for i in queued})
    assert "Traceback" not in cluster.log_text(), cluster.log_tail()
