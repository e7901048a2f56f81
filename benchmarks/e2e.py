"""End-to-end throughput with real worker processes, side by side with Celery (issue 12).

    python benchmarks/e2e.py                 # A, B, B10, C on SQLite and Redis
    python benchmarks/e2e.py --peers         # ... and Celery on the same shapes, with ratios
    python benchmarks/e2e.py --quick --peers # A, C and a reduced B (1 -> 500 -> 1): for CI
    python benchmarks/e2e.py --batched 10    # + what-if rows: the prototype batched worker loop
    python benchmarks/e2e.py --profile DIR   # where the time goes: timed operations + py-spy
    python benchmarks/e2e.py --costs         # store calls alone, per task and batched

Findings and the latest figures: benchmarks/E2E.md.

Shapes (tasks that do nothing but move a number, so the final result can be checked):

- A: 1 -> 100 -> 1, B: 1 -> 1,000 -> 1, B10: 1 -> 10,000 -> 1 (source -> one task per source
  artifact -> aggregate; the aggregate must see N items whose sum is N(N-1)/2);
- C: a chain of 200 tasks (each adds 1 to its upstream's number; the last must say 200).

Backends, each with 2 worker processes:

- ``sqlite``: :class:`interlock.runtime.LocalRunner` on a :class:`interlock_sqlite.SqliteStore`
  file, ``mode="processes", workers=2``: the store has a ``url``, so two worker processes each
  run their own kernel, store connection and batching Worker; this process starts the run and
  watches it. The SQLite statement counts cover this process's connections and the worker
  processes' (which open theirs from the URL: they count into a shared file,
  ``e2e_support/sqlcount.py``); CPU covers every process;
- ``redis``: :class:`interlock_redis.RedisStore` + :class:`interlock_redis.RedisStreamsDispatcher`
  on a private redis-server; this process calls ``start_run`` and two worker processes
  (``interlock worker`` if the CLI offers it, else ``benchmarks/e2e_support/worker.py``) run every
  task: receive -> claim -> plugin -> complete (launching what that releases) -> ack;
- ``celery`` (``--peers``): Celery with Redis broker and result backend on another private
  redis-server, one ``celery worker -c 2 -P prefork``; chord for the fan-outs, chain for C.

Measured per run: wall time from ``start_run`` (Celery: ``apply_async``) to the run's completion
(Interlock: the run record's ``updated_at`` at its terminal transition; Celery: ``get()``
returning), tasks/s, round trips per task (Redis: counted client-side in every process,
pipelines counted once; plus the server's ``INFO commandstats`` delta, which includes the
commands Lua scripts run), SQLite statements and write transactions per task, and CPU per task
per component (``/proc/<pid>/stat`` of each process and its descendants: the plugin pool's
processes are children of the multiprocessing fork server and the workers live across runs, so
``RUSAGE_CHILDREN`` alone would miss them). CPU used by *other* processes on the machine during
the run is printed too: the absolute figures are only comparable when it is near zero; CPU per
task and the ratio to Celery in the same run are the robust ones.

Figures are printed, never asserted (a missing Celery, Redis adapter or redis-server prints a
note); the exit status is 1 only when a backend crashed or a run's result was wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.e2e_support import optimer, plugins, procs, rtt, sqlcount  # noqa: E402

WORKERS = 2
PLUGINS_MODULE = "benchmarks.e2e_support.plugins"
CELERY_MODULE = "benchmarks.e2e_support.celery_app"
_TICK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- shapes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    key: str
    kind: str  # "fan" or "chain"
    n: int

    @property
    def tasks(self) -> int:
        return self.n + 2 if self.kind == "fan" else self.n

    @property
    def label(self) -> str:
        if self.kind == "fan":
            return f"1 -> {self.n:,} -> 1"
        return f"chain of {self.n}"

    def pipeline(self) -> dict[str, Any]:
        if self.kind == "fan":
            return plugins.fan_pipeline(self.n)
        return plugins.chain_pipeline(self.n)

    def expected(self) -> dict[str, int]:
        if self.kind == "fan":
            return {"n": self.n, "sum": self.n * (self.n - 1) // 2}
        return {"k": self.n}


SHAPES = {
    "A": Shape("A", "fan", 100),
    "B": Shape("B", "fan", 1_000),
    "B10": Shape("B10", "fan", 10_000),
    "C": Shape("C", "chain", 200),
    "Bq": Shape("Bq", "fan", 500),
}
FULL = ("A", "B", "B10", "C")
QUICK = ("A", "Bq", "C")
WARMUP = Shape("warm-up", "fan", 20)

# Celery as the peers measured it on this machine (2 cores, 2 workers, Redis broker + results)
PEER_NOTES = {"A": "~390-460 ms", "B": "~4.0 s (250 tasks/s)", "B10": "~44 s",
              "C": "~1.25 s (160 tasks/s)"}


# ---- measurements ---------------------------------------------------------------------------


@dataclass
class Measurement:
    backend: str
    shape: str
    tasks: int
    wall_s: float
    ok: bool
    check: str
    round_trips: dict[str, int] = field(default_factory=dict)
    """Client round trips by request (Redis); SQLite statements by kind."""
    server_commands: dict[str, int] = field(default_factory=dict)
    """Redis INFO commandstats delta (includes commands run inside Lua scripts)."""
    transactions: int = 0
    """SQLite write transactions (their COMMIT or ROLLBACK: a contended BEGIN IMMEDIATE is
    tried several times)."""
    cpu_s: dict[str, float] = field(default_factory=dict)
    """CPU seconds per component."""
    other_cpu_s: float = 0.0
    """CPU used by processes outside the benchmark during the run (machine noise)."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.tasks / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def rt_total(self) -> int:
        return sum(self.round_trips.values())

    @property
    def cpu_total(self) -> float:
        return sum(self.cpu_s.values())


class Machine:
    """Busy CPU time of the whole machine (``/proc/stat``) minus ours = other load."""

    @staticmethod
    def busy() -> float:
        with open("/proc/stat") as fh:
            parts = [int(x) for x in fh.readline().split()[1:]]
        idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
        return (sum(parts[:8]) - idle) / _TICK


def _self_cpu() -> tuple[float, float]:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def _ops_delta(after: dict[str, list[float]], before: dict[str, list[float]]
               ) -> dict[str, list[float]]:
    out = {}
    for label, (calls, wall, cpu) in after.items():
        c0, w0, u0 = before.get(label, [0, 0.0, 0.0])
        if calls - c0:
            out[label] = [calls - c0, wall - w0, cpu - u0]
    return out


def _ops_sum(parts: Sequence[dict[str, list[float]]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for part in parts:
        for label, values in part.items():
            entry = out.setdefault(label, [0, 0.0, 0.0])
            for k in range(3):
                entry[k] += values[k]
    return out


def _descendants_cpu() -> float:
    """CPU of this process's living descendants, with the dead ones they reaped: the plugin
    pool's processes are children of the multiprocessing fork server, not of this process."""
    return sum(procs.tree_cpu([os.getpid()]).values()) - procs.cpu_seconds(os.getpid())


def _check(shape: Shape, fields: dict[str, Any] | None) -> tuple[bool, str]:
    want = shape.expected()
    got = {k: (fields or {}).get(k) for k in want}
    ok = got == want
    shown = ", ".join(f"{k}={v}" for k, v in got.items())
    return ok, shown if ok else f"WRONG: {shown} (want {want})"


# ---- backend: SQLite + LocalRunner (processes) ------------------------------------------------


class SqlCounter:
    """Counts the statements each SQLite connection of this process runs
    (``set_trace_callback``; :func:`sqlcount.classify` names them)."""

    def __init__(self) -> None:
        self._per_conn: list[Counter[str]] = []
        self._lock = threading.Lock()

    def on_connect(self, conn: Any) -> None:
        counts: Counter[str] = Counter()
        state = {"tx": False}
        with self._lock:
            self._per_conn.append(counts)

        def trace(sql: str) -> None:  # named as the worker processes' counts are
            kind, state["tx"] = sqlcount.classify(sql, state["tx"])
            counts[kind] += 1

        conn.set_trace_callback(trace)

    @staticmethod
    def transactions(counts: Counter[str]) -> int:
        """Write transactions in ``counts``, by their end: a contended ``BEGIN IMMEDIATE`` is
        tried several times (interlock_sqlite.connections.begin_immediate)."""
        return counts.get("COMMIT", 0) + counts.get("ROLLBACK", 0)

    def snapshot(self) -> Counter[str]:
        out: Counter[str] = Counter()
        with self._lock:
            for counts in self._per_conn:
                out.update(counts)
        return out


TIMELINE = False
"""``--timeline``: print when each phase of a fan-out run ended (see :func:`timeline`)."""


def timeline(store: Any, run_id: str, t0: float, shape: Shape) -> None:
    """The serial and parallel phases of a fan-out run, from its tasks' ``updated_at`` (their
    completion times): the source's completion (taken before it publishes and launches), the
    first / 10th / 50th / 90th percentile / last of the N work tasks, and the aggregate's."""
    if not TIMELINE or shape.kind != "fan":
        return
    done = sorted((t.node_index, t.updated_at - t0) for t in store.list_tasks(run_id))
    work = [at for node, at in done if node == 1]
    source, agg = done[0][1], done[-1][1]

    def at(q: float) -> str:
        return f"{work[round(q * (len(work) - 1))] * 1e3:,.0f}"

    log(f"  timeline {shape.key} (ms after start_run): source completes {source * 1e3:,.0f}; "
        f"work completions first {at(0)}, p10 {at(.1)}, p50 {at(.5)}, p90 {at(.9)}, last "
        f"{at(1)}; aggregate {agg * 1e3:,.0f}")


class SqliteBackend:
    name = "sqlite"
    title = "SQLite store, LocalRunner(mode='processes', workers=2)"

    def __init__(self, workdir: Path) -> None:
        from interlock.plugins import default_registry
        from interlock.runtime import LocalRunner
        from interlock_sqlite import SqliteStore

        self.counter = SqlCounter()
        self.store = SqliteStore(workdir / "e2e.db", on_connect=self.counter.on_connect)
        # the worker processes (forked from a fork server that inherits this environment)
        # count their statements into this file when they import the plugins
        self.sql_file = str(workdir / "sqlite-workers.counts")
        sqlcount.create(self.sql_file)
        os.environ[sqlcount.ENV] = self.sql_file
        self.runner = LocalRunner(self.store, default_registry, workers=WORKERS,
                                  mode="processes")

    def _sql(self) -> Counter[str]:
        counts = self.counter.snapshot()
        counts.update(sqlcount.read(self.sql_file))
        return counts

    def close(self) -> None:
        # the worker processes first: left alive, they would share the machine with the
        # backends measured after this one
        self.runner.close()
        close = getattr(self.store, "close", None)
        if close is not None:
            close()

    def run(self, shape: Shape) -> Measurement:
        pipeline = shape.pipeline()
        run_id = uuid.uuid4().hex
        sql0 = self._sql()
        ops0 = optimer.snapshot()
        busy0, (me0, kids0), desc0 = Machine.busy(), _self_cpu(), _descendants_cpu()
        t0 = time.time()
        with procs.ThreadCpu() as threads:
            result = self.runner.run(pipeline, run_id=run_id)
        runner_wall = time.time() - t0
        me1, kids1 = _self_cpu()
        desc1 = _descendants_cpu()
        busy1 = Machine.busy()
        sql = self._sql()
        sql.subtract(sql0)
        ops = _ops_delta(optimer.snapshot(), ops0)
        run = self.store.get_run(run_id)
        assert run is not None
        window = run.updated_at - run.created_at
        last = 2 if shape.kind == "fan" else shape.n - 1
        arts = self.store.get_artifacts(run_id, last, 0)
        ok, check = _check(shape, arts[-1].fields if arts else None)
        ok = ok and result.state.value == "completed"
        timeline(self.store, run_id, run.created_at, shape)
        cpu = {"runner process (start_run, relaying)": me1 - me0,
               "worker processes (kernel+store+plugins)": kids1 - kids0 + desc1 - desc0}
        return Measurement(
            self.name, shape.key, shape.tasks, window, ok, check,
            round_trips={k: v for k, v in sql.items() if v},
            transactions=SqlCounter.transactions(sql), cpu_s=cpu,
            other_cpu_s=max(0.0, busy1 - busy0 - sum(cpu.values())),
            extra={"runner_wall_s": runner_wall, "state": result.state.value, "ops": ops,
                   "threads": threads.result()})


class SqliteBatchedBackend:
    """What-if: the batched prototype loop (e2e_support/batched.py) on SQLite, 2 threads, a
    2-process pool started once, k tasks per receive/claim/complete/ack."""

    def __init__(self, workdir: Path, batch: int) -> None:
        from benchmarks.e2e_support.batched import BatchedWorker, PoolInvoke
        from interlock import Kernel
        from interlock.plugins import default_registry
        from interlock.runtime import QueueDispatcher
        from interlock_sqlite import SqliteStore

        self.name = f"sqlite-b{batch}"
        self.title = (f"prototype: SQLite store, batched loop k={batch} (claim_tasks / "
                      f"on_tasks_complete), {WORKERS} threads, {WORKERS}-process pool started "
                      f"once, one pool message per process per batch")
        self.counter = SqlCounter()
        self.store = SqliteStore(workdir / f"e2e-b{batch}.db",
                                 on_connect=self.counter.on_connect)
        self.queue = QueueDispatcher()
        self.finished: dict[str, threading.Event] = {}
        self.kernel = Kernel(self.store, self.queue, plugins=default_registry,
                             on_run_finished=self._finished)
        self.pool = PoolInvoke(WORKERS, [PLUGINS_MODULE])
        self.stop = threading.Event()
        self.threads = [threading.Thread(
            target=BatchedWorker(self.kernel, self.queue, default_registry, batch=batch,
                                 name=f"b{i}", invoke=self.pool).run,
            args=(self.stop,), daemon=True, name=f"interlock-worker-b{i}")
            for i in range(WORKERS)]
        for thread in self.threads:
            thread.start()

    def _finished(self, event: Any) -> None:
        done = self.finished.get(event.run_id)
        if done is not None:
            done.set()

    def close(self) -> None:
        self.stop.set()
        self.queue.close()
        for thread in self.threads:
            thread.join(10)
        self.pool.shutdown()

    def run(self, shape: Shape) -> Measurement:
        pipeline = shape.pipeline()
        run_id = uuid.uuid4().hex
        done = self.finished[run_id] = threading.Event()
        sql0 = self.counter.snapshot()
        ops0 = optimer.snapshot()
        busy0, me0, desc0 = Machine.busy(), _self_cpu()[0], _descendants_cpu()
        with procs.ThreadCpu() as threads:
            self.kernel.start_run(pipeline, run_id=run_id)
            if not done.wait(600):
                raise RuntimeError(f"{shape.key} on {self.name} did not finish")
        me1, desc1, busy1 = _self_cpu()[0], _descendants_cpu(), Machine.busy()
        sql = self.counter.snapshot()
        sql.subtract(sql0)
        run = self.store.get_run(run_id)
        assert run is not None
        last = 2 if shape.kind == "fan" else shape.n - 1
        arts = self.store.get_artifacts(run_id, last, 0)
        ok, check = _check(shape, arts[-1].fields if arts else None)
        ok = ok and run.state.value == "completed"
        cpu = {"runner process (kernel+store+threads)": me1 - me0,
               "plugin processes": desc1 - desc0}
        return Measurement(
            self.name, shape.key, shape.tasks, run.updated_at - run.created_at, ok, check,
            round_trips={k: v for k, v in sql.items() if v},
            transactions=SqlCounter.transactions(sql), cpu_s=cpu,
            other_cpu_s=max(0.0, busy1 - busy0 - sum(cpu.values())),
            extra={"state": run.state.value, "ops": _ops_delta(optimer.snapshot(), ops0),
                   "threads": threads.result()})


# ---- backend: Redis store + Redis Streams dispatcher + worker processes ----------------------


def worker_command(url: str, mode: str, concurrency: int = 1) -> tuple[list[str], str]:
    """The worker process command line: ``interlock worker`` (with ``concurrency`` threads) if
    available, else the fallback (``mode`` "batched:K": the prototype batched loop of
    e2e_support/batched.py)."""
    plugins_args = ["--plugins", PLUGINS_MODULE]
    if mode.startswith("batched:"):
        k = int(mode.partition(":")[2])
        return ([sys.executable, "-m", "benchmarks.e2e_support.batched", "--store", url,
                 "--batch", str(k), *plugins_args],
                f"prototype batched worker loop (e2e_support/batched.py), k={k}")
    if mode in ("auto", "cli"):
        probe = subprocess.run([sys.executable, "-m", "interlock", "worker", "--help"],
                               capture_output=True, text=True, cwd=ROOT, timeout=60,
                               env=_child_env())
        if probe.returncode == 0 and "--store" in probe.stdout:
            threads = ["--concurrency", str(concurrency)] if concurrency != 1 else []
            return ([sys.executable, "-m", "interlock", "worker", "--store", url,
                     *threads, *plugins_args],
                    f"interlock worker (CLI), {concurrency} thread(s) each")
        if mode == "cli":
            raise SystemExit("`python -m interlock worker --help` failed: "
                             + (probe.stderr.strip().splitlines() or ["?"])[-1])
    return ([sys.executable, "-m", "benchmarks.e2e_support.worker", "--store", url,
             *plugins_args], "benchmarks/e2e_support/worker.py (fallback)")


def _child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop(sqlcount.ENV, None)  # the SQLite runner's workers count their statements, not these
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.update(extra)
    return env


class RedisBackend:
    name = "redis"

    def __init__(self, stack: ExitStack, workdir: Path, worker_mode: str,
                 timed_ops: bool = False, concurrency: int = 1) -> None:
        import redis

        if worker_mode.startswith("batched:"):
            self.name = f"redis-b{worker_mode.partition(':')[2]}"

        from interlock import Kernel
        from interlock.plugins import default_registry
        from interlock_redis import RedisStore, RedisStreamsDispatcher

        self.server = stack.enter_context(procs.RedisServer("interlock"))
        rtt.install()
        self.client = redis.Redis.from_url(self.server.url)
        self.store = RedisStore(self.client)
        self.queue = RedisStreamsDispatcher(self.client)
        self.kernel = Kernel(self.store, self.queue, plugins=default_registry)
        command, self.worker_kind = worker_command(self.server.url, worker_mode, concurrency)
        # every thread of every worker process waits in XREADGROUP on its own connection
        self.waiters = WORKERS * (concurrency if "CLI" in self.worker_kind else 1)
        self.title = (f"RedisStore + RedisStreamsDispatcher, {WORKERS} x {self.worker_kind}")
        self.stats_files = [str(workdir / f"worker-{i}.json") for i in range(WORKERS)]
        self.workers: list[subprocess.Popen[bytes]] = []
        self.client_lists = 0
        extra = {"INTERLOCK_E2E_OPTIMER": "1"} if timed_ops else {}
        for path in self.stats_files:
            proc = subprocess.Popen(command, cwd=ROOT,
                                    env=_child_env(INTERLOCK_E2E_STATS=path, **extra))
            self.workers.append(proc)
        stack.callback(self._stop_workers)
        self._wait_ready()

    def _stop_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.workers:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        """A warm-up run went through, then both workers wait in XREADGROUP."""
        self.run(WARMUP, timeout=timeout)
        self._wait_idle(timeout)

    def _wait_idle(self, timeout: float = 30.0) -> None:
        """Until every worker process is blocked in XREADGROUP (nothing in hand)."""
        deadline = time.monotonic() + timeout
        while True:
            for proc in self.workers:
                if proc.poll() is not None:
                    raise RuntimeError(f"a worker process exited with code {proc.returncode}")
            with rtt.paused():
                clients = self.client.client_list()
            self.client_lists += 1
            blocked = sum(1 for c in clients
                          if c.get("cmd") == "xreadgroup" and "b" in c.get("flags", ""))
            if blocked >= self.waiters:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {blocked} of {self.waiters} worker threads are waiting "
                                   f"in XREADGROUP after {timeout:.0f}s")
            time.sleep(0.01)

    def close(self) -> None:
        self.client.close()

    def worker_pids(self) -> list[int]:
        return [p.pid for p in self.workers]

    def _snapshot(self) -> tuple[Counter[str], Counter[str], dict[int, float], float,
                                 dict[str, list[float]]]:
        client: Counter[str] = rtt.counts()
        ops = []
        for proc, path in zip(self.workers, self.stats_files, strict=True):
            data = rtt.request(proc.pid, path)
            client.update(Counter(data.get("counts", {})))
            ops.append(data.get("ops", {}))
        cpu = procs.tree_cpu([*self.worker_pids(), self.server.pid])
        return client, self.server.commandstats(), cpu, _self_cpu()[0], _ops_sum(ops)

    def run(self, shape: Shape, timeout: float = 600.0) -> Measurement:
        pipeline = shape.pipeline()
        run_id = uuid.uuid4().hex
        self._wait_idle()
        rt0, cmd0, cpu0, me0, ops0 = self._snapshot()
        busy0 = Machine.busy()
        polls = 0
        lists0 = self.client_lists
        t0 = time.time()
        c0 = time.thread_time()
        self.kernel.start_run(pipeline, run_id=run_id)
        start_cpu = time.thread_time() - c0
        deadline = time.monotonic() + timeout
        with rtt.paused():
            while True:
                run = self.store.get_run(run_id)
                polls += 1
                if run is not None and run.state.terminal:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{shape.key} on redis did not finish in {timeout}s")
                # the run's end time is its record's updated_at: the poll period only
                # delays noticing it, and a slow poll leaves the CPU to the workers
                time.sleep(0.02)
        wall = run.updated_at - t0
        busy1 = Machine.busy()
        self._wait_idle()
        rt1, cmd1, cpu1, me1, ops1 = self._snapshot()
        rt1.subtract(rt0)
        cmd1.subtract(cmd0)
        cmd1["HGETALL"] -= polls  # the benchmark's own completion polls ...
        cmd1["CLIENT|LIST"] -= self.client_lists - lists0  # ... and idle checks
        cmd1["INFO"] -= 1
        last = 2 if shape.kind == "fan" else shape.n - 1
        with rtt.paused():
            arts = self.store.get_artifacts(run_id, last, 0)
        ok, check = _check(shape, arts[-1].fields if arts else None)
        ok = ok and run.state.value == "completed"
        with rtt.paused():
            timeline(self.store, run_id, t0, shape)
        workers = sum(cpu1.get(p, 0.0) - cpu0.get(p, 0.0) for p in self.worker_pids())
        cpu = {"start_run (this process)": start_cpu,
               "worker processes": workers,
               "redis-server": cpu1.get(self.server.pid, 0.0) - cpu0.get(self.server.pid, 0.0)}
        return Measurement(
            self.name, shape.key, shape.tasks, wall, ok, check,
            round_trips={k: v for k, v in rt1.items() if v},
            server_commands={k: v for k, v in cmd1.items() if v}, cpu_s=cpu,
            other_cpu_s=max(0.0, busy1 - busy0 - sum(cpu.values())),
            extra={"polls": polls, "state": run.state.value, "ops": _ops_delta(ops1, ops0),
                   "this_process_cpu_s": me1 - me0})


# ---- backend: Celery --------------------------------------------------------------------------


def celery_available() -> str | None:
    """None if Celery with its Redis transport can be used, else why not."""
    try:
        import celery  # type: ignore[import-untyped]  # noqa: F401
        import kombu.transport.redis  # noqa: F401
        import redis  # noqa: F401
    except ImportError as exc:
        return f'Celery is not installed ({exc}); pip install "celery[redis]"'
    return None


class CeleryBackend:
    name = "celery"

    def __init__(self, stack: ExitStack, workdir: Path) -> None:
        self.server = stack.enter_context(procs.RedisServer("celery"))
        os.environ["INTERLOCK_E2E_CELERY_URL"] = self.server.url
        import importlib

        self.app_module = importlib.import_module(CELERY_MODULE)
        import celery

        self.title = (f"Celery {celery.__version__}, Redis broker + result backend, one worker "
                      f"-c {WORKERS} -P prefork")
        self.logfile = workdir / "celery-worker.log"
        self.log = open(self.logfile, "wb")  # noqa: SIM115 - closed by the stack
        stack.callback(self.log.close)
        self.proc = subprocess.Popen(
            # this interpreter's Celery (`python -m celery`): a venv need not be on PATH
            [sys.executable, "-m", "celery", "-A", CELERY_MODULE, "worker",
             "-c", str(WORKERS), "-P", "prefork", "--loglevel", "WARNING",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=ROOT, env=_child_env(), stdout=self.log, stderr=subprocess.STDOUT)
        stack.callback(self._stop)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery worker exited with code {self.proc.returncode}; "
                                   f"see {self.logfile}")
            if self.app_module.app.control.ping(timeout=0.5):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"celery worker did not answer ping within {timeout:.0f}s")
        self.run(WARMUP)
        self.run(Shape("warm-up", "chain", 5))

    def _stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def close(self) -> None:
        pass

    def run(self, shape: Shape, timeout: float = 600.0) -> Measurement:
        from celery import chain

        m = self.app_module
        if shape.kind == "chain":
            signature = chain(m.step.s(0), *[m.step.s() for _ in range(shape.n - 1)])
        else:
            signature = m.source.s(shape.n)
        time.sleep(0.15)
        cmd0 = self.server.commandstats()
        cpu0 = procs.tree_cpu([self.proc.pid, self.server.pid])
        me0 = _self_cpu()[0]
        busy0 = Machine.busy()
        t0 = time.time()
        value = signature.apply_async().get(timeout=timeout)
        wall = time.time() - t0
        busy1 = Machine.busy()
        me1 = _self_cpu()[0]
        cpu1 = procs.tree_cpu([self.proc.pid, self.server.pid])
        cmd1 = self.server.commandstats()
        cmd1.subtract(cmd0)
        cmd1["INFO"] -= 1
        fields = value if isinstance(value, dict) else {"k": value}
        ok, check = _check(shape, fields)
        worker = sum(v - cpu0.get(p, 0.0) for p, v in cpu1.items() if p != self.server.pid)
        cpu = {"client (this process)": me1 - me0, "celery worker + pool": worker,
               "redis-server": cpu1.get(self.server.pid, 0.0) - cpu0.get(self.server.pid, 0.0)}
        return Measurement(
            self.name, shape.key, shape.tasks, wall, ok, check,
            server_commands={k: v for k, v in cmd1.items() if v}, cpu_s=cpu,
            other_cpu_s=max(0.0, busy1 - busy0 - sum(cpu.values())))


# ---- profiling ------------------------------------------------------------------------------


@contextmanager
def spy(pids: Sequence[int], out: Path, label: str, rate: int) -> Iterator[list[Path]]:
    """py-spy record (raw collapsed stacks, on-CPU samples) of ``pids`` during the block.

    Blocking mode (py-spy pauses the process for each sample): slower, but it tells reliably
    whether a thread is on CPU; ``--nonblocking`` counted threads waiting in recv() as busy.
    """
    binary = shutil.which("py-spy")
    if binary is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    files = [out / f"{label}-{pid}.txt" for pid in pids]
    spies = [subprocess.Popen([binary, "record", "--pid", str(pid), "--rate", str(rate),
                               "--format", "raw", "--output", str(path), "--duration", "600"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for pid, path in zip(pids, files, strict=True)]
    time.sleep(1.5)  # py-spy attaches
    try:
        yield files
    finally:
        for proc in spies:
            proc.send_signal(2)  # SIGINT: py-spy writes its output and exits
        for proc in spies:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


def render_ops(m: Measurement, who: str) -> str:
    """Exclusive wall and CPU time per operation, per task (summed over worker threads)."""
    ops: dict[str, list[float]] = m.extra.get("ops", {})
    if not ops:
        return f"{m.backend} {m.shape}: no operation timings"
    wall = sum(v[1] for v in ops.values())
    cpu = sum(v[2] for v in ops.values())
    lines = [f"\n{m.backend} {m.shape} ({SHAPES[m.shape].label if m.shape in SHAPES else ''}): "
             f"{m.tasks:,} tasks in {m.wall_s:.2f}s ({m.rate:,.0f} tasks/s), other load "
             f"{m.other_cpu_s / m.wall_s:.2f} cores; exclusive time per task in {who}: "
             f"wall {wall / m.tasks * 1e6:,.0f} us, CPU {cpu / m.tasks * 1e6:,.0f} us",
             "CPU per task from /proc: " + ", ".join(
                 f"{k} {v / m.tasks * 1e6:,.0f} us" for k, v in m.cpu_s.items()),
             f"  {'operation (exclusive of the wrapped calls it makes)':<52} {'calls/task':>10} "
             f"{'wall us/task':>12} {'CPU us/task':>11}"]
    for label, (calls, w, c) in sorted(ops.items(), key=lambda kv: -kv[1][1]):
        lines.append(f"  {label:<52} {calls / m.tasks:10.3f} {w / m.tasks * 1e6:12.1f} "
                     f"{c / m.tasks * 1e6:11.1f}")
    return "\n".join(lines)


def profile(args: argparse.Namespace, workdir: Path) -> int:
    """Per-operation timings (one run per shape), then py-spy CPU profiles (another run)."""
    from benchmarks.e2e_support import spyreport

    out = Path(args.profile)
    out.mkdir(parents=True, exist_ok=True)
    shapes = [SHAPES[k.strip()] for k in args.profile_shape.split(",")]

    def spied(name: str, m: Measurement, files: list[Path], who: str) -> None:
        print(spyreport.render(
            f"{name} {m.shape}: py-spy on-CPU samples of {who}; {m.tasks:,} tasks in "
            f"{m.wall_s:.2f}s ({m.rate:,.0f} tasks/s) under the profiler", files, m.tasks,
            args.rate))

    if "sqlite" in args.backends:
        optimer.install()  # wraps classes in this process: the runner's worker threads
        backend: Any = (SqliteBatchedBackend(workdir, args.batched) if args.batched
                        else SqliteBackend(workdir))
        backend.run(WARMUP)
        for shape in shapes:
            log(f"sqlite {shape.key}: operation timings ...")
            m = backend.run(shape)
            print(render_ops(m, "the runner's 2 worker threads (kernel + store calls), "
                                "plugins in 2 processes"))
            print("sqlite statements per task: " + ", ".join(
                f"{k} {v / m.tasks:.2f}" for k, v in sorted(m.round_trips.items())))
            print("runner process CPU per task by thread: " + ", ".join(
                f"{k} {v / m.tasks * 1e6:,.0f} us" for k, v in sorted(
                    m.extra.get("threads", {}).items(), key=lambda kv: -kv[1]) if v > 0))
            log(f"sqlite {shape.key}: py-spy ...")
            with spy([os.getpid()], out, f"sqlite-{shape.key}", args.rate) as files:
                m = backend.run(shape)
            spied("sqlite", m, files, "the runner process")
        backend.close()
    if "redis" in args.backends:
        with ExitStack() as stack:
            mode = f"batched:{args.batched}" if args.batched else args.worker
            backend2 = RedisBackend(stack, workdir, mode, timed_ops=True,
                                    concurrency=args.concurrency)
            for shape in shapes:
                log(f"redis {shape.key}: operation timings ...")
                m = backend2.run(shape)
                print(render_ops(m, f"the {WORKERS} worker processes"))
                print(render_rt([m]))
                log(f"redis {shape.key}: py-spy ...")
                with spy(backend2.worker_pids(), out, f"redis-{shape.key}", args.rate) as files:
                    m = backend2.run(shape)
                spied("redis", m, files, f"the {WORKERS} worker processes")
            backend2.close()
    return 0


# ---- report ---------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds < 10 else f"{seconds:,.2f} s"


def pick(ms: list[Measurement]) -> Measurement:
    """The run with the median wall time (the lower median for an even count)."""
    ordered = sorted(ms, key=lambda m: m.wall_s)
    return ordered[(len(ordered) - 1) // 2]


def render_table(results: dict[tuple[str, str], list[Measurement]], shapes: Sequence[str],
                 backends: Sequence[str]) -> str:
    head = ("| shape | backend | tasks | wall (median) | range | tasks/s | round trips/task "
            "| server cmds/task | CPU/task | CPU split | other load | check |")
    lines = [head, "|" + "---|" * 12]
    for key in shapes:
        shape = SHAPES[key]
        for backend in backends:
            ms = results.get((backend, key))
            if not ms:
                continue
            m = pick(ms)
            walls = [x.wall_s for x in ms]
            spread = (f"{_ms(min(walls))} - {_ms(max(walls))}" if len(walls) > 1 else "")
            if backend.startswith("sqlite"):
                rt = (f"{m.transactions / m.tasks:.2f} tx, "
                      f"{m.rt_total / m.tasks:.1f} stmts")
            elif backend.startswith("redis"):
                rt = f"{m.rt_total / m.tasks:.2f}"
            else:
                rt = "n/a"
            server = (f"{sum(m.server_commands.values()) / m.tasks:.1f}"
                      if m.server_commands else "n/a")
            split = ", ".join(f"{name.split(' (')[0]} {v / m.tasks * 1e6:,.0f}"
                              for name, v in m.cpu_s.items())
            other = m.other_cpu_s / m.wall_s if m.wall_s else 0.0
            lines.append(
                f"| {key} ({shape.label}) | {backend} | {m.tasks:,} | {_ms(m.wall_s)} | "
                f"{spread} | {m.rate:,.0f} | {rt} | {server} | "
                f"{m.cpu_total / m.tasks * 1e6:,.0f} us | {split} us | {other:.2f} cores | "
                f"{'ok' if m.ok else 'FAILED'}: {m.check} |")
    return "\n".join(lines)


def render_ratios(results: dict[tuple[str, str], list[Measurement]],
                  shapes: Sequence[str], backends: Sequence[str]) -> str:
    mine = [b for b in backends if b != "celery"]
    lines = ["| shape | Celery tasks/s | " + " | ".join(f"{b} / Celery" for b in mine) + " |",
             "|---|---|" + "---|" * len(mine)]
    for key in shapes:
        peer = results.get(("celery", key))
        if not peer:
            continue
        base = pick(peer).rate
        cells = []
        for backend in mine:
            ms = results.get((backend, key))
            cells.append(f"{pick(ms).rate / base:.1f}x" if ms else "n/a")
        lines.append(f"| {key} | {base:,.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_rt(ms: Sequence[Measurement]) -> str:
    """Round trips (client) and server commands per task, by request, for Redis runs."""
    out = []
    for m in ms:
        out.append(f"\n{m.backend} {m.shape}: client round trips per task "
                   f"({m.rt_total / m.tasks:.2f} total)")
        for key, n in sorted(m.round_trips.items(), key=lambda kv: -kv[1]):
            out.append(f"  {n / m.tasks:7.3f}  {key}")
        if m.server_commands:
            out.append(f"{m.backend} {m.shape}: server commands per task, incl. inside scripts "
                       f"({sum(m.server_commands.values()) / m.tasks:.2f} total)")
            for key, n in sorted(m.server_commands.items(), key=lambda kv: -kv[1]):
                if n / m.tasks >= 0.005:
                    out.append(f"  {n / m.tasks:7.3f}  {key}")
    return "\n".join(out)


def verdicts(results: dict[tuple[str, str], list[Measurement]], quick: bool) -> list[str]:
    def rate(backend: str, key: str) -> float | None:
        ms = results.get((backend, key))
        return pick(ms).rate if ms else None

    def wall(backend: str, key: str) -> float | None:
        ms = results.get((backend, key))
        return pick(ms).wall_s if ms else None

    def line(ok: bool | None, text: str) -> str:
        tag = "n/a " if ok is None else ("PASS" if ok else "MISS")
        return f"{tag}  {text}"

    b = "Bq" if quick else "B"
    out = []
    r, c = rate("redis", b), rate("celery", b)
    if r is None:
        out.append(line(None, f"Redis store + dispatcher >= 2,500 tasks/s and >= 10x Celery on "
                              f"{b}: not measured"))
    else:
        ratio = f", {r / c:.1f}x Celery ({c:,.0f} tasks/s)" if c else ", Celery not measured"
        ok = r >= 2500 and (c is None or r >= 10 * c)
        out.append(line(ok, f"Redis store + dispatcher on {b}: {r:,.0f} tasks/s{ratio} "
                            f"(target >= 2,500 tasks/s and >= 10x Celery)"))
    for backend in ("redis", "sqlite"):
        w = wall(backend, "B10")
        if w is not None:
            out.append(line(w < 10, f"{backend}: B10 (1 -> 10,000 -> 1) in {w:.2f}s "
                                    f"(target < 10 s)"))
    s = rate("sqlite", b)
    if s is not None:
        out.append(line(s >= 3000, f"SQLite runner, 2 worker processes, on {b}: {s:,.0f} "
                                   f"tasks/s (target >= 3,000)"))
    for backend in ("sqlite", "redis"):
        x = rate(backend, "C")
        if x is not None:
            out.append(line(x >= 1000, f"{backend}: chain C {x:,.0f} tasks/s "
                                       f"(target >= 1,000)"))
    return out


# ---- main -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="A, C and a reduced B (1 -> 500 -> 1), one repeat: for CI")
    parser.add_argument("--peers", action="store_true", help="also run Celery")
    parser.add_argument("--shapes", default=None,
                        help=f"comma-separated subset of {', '.join(SHAPES)}")
    parser.add_argument("--backends", default="sqlite,redis",
                        help="comma-separated subset of sqlite, redis (celery: --peers)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="runs per shape and backend (default 3, B10 1; --quick 1)")
    parser.add_argument("--worker", default="auto",
                        help="Redis worker processes: auto, cli (`interlock worker`), fallback "
                             "(e2e_support/worker.py) or batched:K (e2e_support/batched.py)")
    parser.add_argument("--concurrency", type=int, default=2, metavar="N",
                        help="threads per `interlock worker` process (its --concurrency; "
                             "default 2: one thread computes while the other waits for Redis)")
    parser.add_argument("--batched", type=int, default=None, metavar="K",
                        help="also run the prototype batched worker loop with K tasks per "
                             "batch on both stores (what-if rows sqlite-bK, redis-bK)")
    parser.add_argument("--batched-only", action="store_true",
                        help="with --batched: skip the shipped sqlite/redis rows")
    parser.add_argument("--json", default=None, help="write every measurement to this file")
    parser.add_argument("--profile", default=None, metavar="DIR",
                        help="instead of the table: per-operation wall/CPU timings and py-spy "
                             "profiles of both Interlock paths (with --batched K: of the "
                             "prototype loop)")
    parser.add_argument("--profile-shape", default="B,C",
                        help="comma-separated shapes to profile (default B,C)")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--costs", action="store_true",
                        help="instead of the table: single-threaded cost probes of the store "
                             "calls, per task and batched (see e2e_support/costs.py)")
    parser.add_argument("--timeline", action="store_true",
                        help="also print when each phase of a fan-out run ended (source, "
                             "work percentiles, aggregate): its serial parts")
    args = parser.parse_args(argv)
    global TIMELINE
    TIMELINE = args.timeline
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    shapes = [s.strip() for s in args.shapes.split(",")] if args.shapes else list(
        QUICK if args.quick else FULL)
    for key in shapes:
        if key not in SHAPES:
            parser.error(f"unknown shape {key!r}")

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="interlock-e2e-") as tmp:
        workdir = Path(tmp)
        if args.profile:
            return profile(args, workdir)
        if args.costs:
            from benchmarks.e2e_support import costs

            batches = (1, 10, 100)
            if "sqlite" in args.backends:
                costs.sqlite_costs(workdir, 1000, batches, print)
            if "redis" in args.backends:
                costs.redis_costs(1000, batches, print)
            return 0
        return measure(args, shapes, workdir, started)


def measure(args: argparse.Namespace, shapes: list[str], workdir: Path, started: float) -> int:
    def repeats(key: str) -> int:
        if args.repeat is not None:
            return max(1, int(args.repeat))
        return 1 if args.quick or key == "B10" else 3

    results: dict[tuple[str, str], list[Measurement]] = {}
    titles: dict[str, str] = {}
    notes: list[str] = []
    load = os.getloadavg()
    log(f"load average before the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
        f"({os.cpu_count()} CPUs)")

    def drive(backend: Any) -> None:
        titles[backend.name] = backend.title
        for key in shapes:
            for i in range(repeats(key)):
                m = backend.run(SHAPES[key])
                results.setdefault((backend.name, key), []).append(m)
                log(f"  {backend.name:6} {key:4} #{i + 1}: {_ms(m.wall_s):>9}  "
                    f"{m.rate:8,.0f} tasks/s  other load {m.other_cpu_s / m.wall_s:.2f} cores  "
                    f"{'ok' if m.ok else m.check}")

    failures: list[str] = []

    def section(name: str, needs: Sequence[str], body: Callable[[], None]) -> None:
        """Run one backend; a missing package or server is a note, a crash a failure."""
        for module in needs:
            try:
                __import__(module)
            except ImportError as exc:
                notes.append(f"{name}: skipped: {exc}")
                return
        if "redis" in needs and not os.path.exists(procs.REDIS_SERVER):
            notes.append(f"{name}: skipped: no {procs.REDIS_SERVER}")
            return
        try:
            body()
        except Exception as exc:
            traceback.print_exc()
            failures.append(f"{name}: {type(exc).__name__}: {exc}")

    def local(factory: Callable[[], Any]) -> Callable[[], None]:
        def body() -> None:
            backend = factory()
            try:
                backend.run(WARMUP)
                drive(backend)
            finally:
                backend.close()
        return body

    def remote(factory: Callable[[ExitStack], Any]) -> Callable[[], None]:
        def body() -> None:
            with ExitStack() as stack:
                backend = factory(stack)
                try:
                    drive(backend)
                finally:
                    backend.close()
        return body

    shipped = not (args.batched and args.batched_only)
    if "sqlite" in args.backends and shipped:
        log("sqlite: LocalRunner, 2 worker processes ...")
        section("sqlite", ["interlock_sqlite"], local(lambda: SqliteBackend(workdir)))
    if "redis" in args.backends and shipped:
        log("redis: starting a private redis-server and 2 worker processes ...")
        section("redis", ["interlock_redis", "redis"],
                remote(lambda stack: RedisBackend(stack, workdir, args.worker,
                                                  concurrency=args.concurrency)))
    if args.batched:
        k = args.batched
        if "sqlite" in args.backends:
            log(f"sqlite-b{k}: prototype batched loop ...")
            section(f"sqlite-b{k}", ["interlock_sqlite"],
                    local(lambda: SqliteBatchedBackend(workdir, k)))
        if "redis" in args.backends:
            log(f"redis-b{k}: prototype batched worker processes ...")
            section(f"redis-b{k}", ["interlock_redis", "redis"],
                    remote(lambda stack: RedisBackend(stack, workdir, f"batched:{k}")))
    if args.peers:
        why = celery_available()
        if why is not None:
            notes.append(f"celery: skipped: {why}")
        else:
            log("celery: starting a private redis-server and a worker (-c 2, prefork) ...")
            section("celery", ["redis"], remote(lambda stack: CeleryBackend(stack, workdir)))

    backends = [b for b in ("sqlite", f"sqlite-b{args.batched}", "redis",
                            f"redis-b{args.batched}", "celery") if b in titles]
    print(f"\nEnd to end, {WORKERS} worker processes, trivial tasks "
          f"({platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, load average before: {load[0]:.2f})")
    print(f"command: python benchmarks/e2e.py {' '.join(sys.argv[1:])}".rstrip())
    for name in backends:
        print(f"- {name}: {titles[name]}")
    print()
    print(render_table(results, shapes, backends))
    if "celery" in titles:
        print()
        print(render_ratios(results, shapes, backends))
    elif args.peers is False:
        print("\n(Celery not run: add --peers)")
    everything = [m for ms in results.values() for m in ms]
    busy = [m.other_cpu_s / m.wall_s for m in everything if m.wall_s > 0]
    if busy and max(busy) > 0.3:
        print(f"\nWARNING: other processes used {min(busy):.2f}-{max(busy):.2f} of the "
              f"{os.cpu_count()} cores during the runs: absolute figures, and ratios between "
              f"backends run at different moments, are unreliable; CPU/task is the steadier "
              f"figure")
    print()
    for text in verdicts(results, args.quick):
        print(text)
    redis_runs = [pick(results[(b, k)]) for b in backends if b.startswith("redis")
                  for k in shapes if (b, k) in results]
    if redis_runs:
        print(render_rt(redis_runs))
    sqlite_runs = [pick(results[(b, k)]) for b in backends if b.startswith("sqlite")
                   for k in shapes if (b, k) in results]
    for m in sqlite_runs:
        parts = ", ".join(f"{k} {v / m.tasks:.2f}" for k, v in sorted(m.round_trips.items()))
        print(f"\n{m.backend} {m.shape}: statements per task: {parts}")
    for note in notes:
        print(f"note: {note}")
    bad = [m for ms in results.values() for m in ms if not m.ok]
    if bad:
        failures.append(f"{len(bad)} run(s) ended wrong: "
                        + "; ".join(f"{m.backend} {m.shape}: {m.check}" for m in bad))
    for failure in failures:
        print(f"FAILED: {failure}")
    print(f"\n(total {time.monotonic() - started:.0f}s)")
    if args.json:
        data = {"shapes": {k: asdict(SHAPES[k]) for k in shapes}, "titles": titles,
                "load_average": load, "notes": notes,
                "measurements": [asdict(m) for ms in results.values() for m in ms]}
        Path(args.json).write_text(json.dumps(data, indent=1))
    # slow figures never fail; a crash or a wrong aggregate is a bug
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
