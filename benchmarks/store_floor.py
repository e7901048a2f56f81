"""What a completion's store requests cost alone: ``python benchmarks/store_floor.py [--quick]``.

Issue 10 asks SQLite completions to reach 50% of the rate of a raw three-write transaction
(``BEGIN IMMEDIATE; UPDATE; UPDATE; INSERT; COMMIT``) and Redis completions 50% of the rate of a
raw three-write ``EVALSHA``: a mean ``on_task_complete`` within 2x the raw request. This script
splits a completion's cost into the store's requests and everything on the client's side.

For each adapter and shape it drives the shape once (the benchmark's own driver) with every
request the store makes recorded and attributed to the kernel call in progress (start, claim,
complete): on SQLite each ``execute``/``executemany`` with its parameters, on Redis each
request written to the socket (the packed bytes) and the number of replies read for it. Then it
replays those requests in the same order, raw, on an empty database file / with the run's keys
deleted, one after the other (a launch batch the Redis store sends ahead, overlapping another
request, is replayed after it; each Redis request on a pooled connection, as the store sends
it): no kernel, no store code, no records —
the same statements with the same parameters, the same bytes (best of ``--reps`` replays,
each checked to leave exactly the state the recorded run left). The completion calls' share
of the replay, per completion, is the *store floor*: what this store's requests for a
completion cost with nothing around them. The kernel's own figure (mean ``on_task_complete``,
best of ``--reps`` unrecorded runs) is measured in the same process, and the raw baseline as
``benchmarks/run.py`` measures it.

Where ``floor x raw`` is at or above 2.0, the target is out of reach for that shape with these
requests, whatever the client does; below it, ``2 x raw - floor`` is what the client side
(kernel and store code in Python) may spend per completion. The ``bound`` column adds to the
floor the same shape's mean completion on the in-memory store, i.e. the kernel's own Python
with a store that does almost nothing (the SQLite and Redis stores build the same records and
more on top): where ``bound x raw`` is above 2.0, no client-side tuning reaches the target.
The floor is this store's requests, not the fewest any store could make: it says what a
completion asks of the database, not what every possible design would.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import shutil
import sqlite3
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from time import perf_counter
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from ilbench import shapes  # noqa: E402
from ilbench.adapters import close_store  # noqa: E402
from ilbench.baselines import redis_evalsha_us, sqlite_raw_tx_us  # noqa: E402
from ilbench.driver import Phase, drive  # noqa: E402

Request = tuple[str, Any, Any]
"""(phase, what to send, how): SQLite (phase, sql, params or rows); Redis (phase, packed, replies
read)."""


def _shapes(quick: bool) -> list[shapes.Shape]:
    if quick:
        return [shapes.fan_out(300), shapes.chain(200), shapes.layered(500), shapes.join(200)]
    return [shapes.fan_out(5_000), shapes.chain(1_000), shapes.layered(5_000),
            shapes.join(1_000)]


# ---- SQLite ------------------------------------------------------------------------------------

@contextlib.contextmanager
def _sqlite_recording(phase: Phase, log: list[Request]) -> Iterator[None]:
    """Every connection opened in the block records what it executes into ``log``."""

    class Recording(sqlite3.Connection):
        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            log.append((phase.now, sql, args[0] if args else None))
            return super().execute(sql, *args)

        def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
            rows = list(rows)
            log.append((phase.now, sql, [rows]))
            return super().executemany(sql, rows)

    connect = sqlite3.connect
    sqlite3.connect = lambda *a, **k: connect(*a, factory=Recording, **k)  # type: ignore
    try:
        yield
    finally:
        sqlite3.connect = connect  # type: ignore[assignment]


def _sqlite_replay(log: list[Request], path: Path) -> Counter[str]:
    """Seconds per phase of ``log`` run on a fresh file (one connection, as recorded)."""
    spent: Counter[str] = Counter()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        gc.collect()
        for phase, sql, params in log:
            t0 = perf_counter()
            if isinstance(params, list):
                conn.executemany(sql, params[0])
            elif params is None:
                conn.execute(sql).fetchall()
            else:
                conn.execute(sql, params).fetchall()
            spent[phase] += perf_counter() - t0
    finally:
        conn.close()
    return spent


def _sqlite_contents(path: Path) -> dict[str, list[Any]]:
    """Every table's rows, sorted: what the replay must have rebuilt exactly."""
    conn = sqlite3.connect(path)
    try:
        tables = [name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {name: sorted(conn.execute(f'SELECT * FROM "{name}"').fetchall(), key=repr)
                for name in tables}
    finally:
        conn.close()


def sqlite_rows(cases: list[shapes.Shape], reps: int) -> list[dict[str, Any]]:
    from interlock_sqlite import SqliteStore

    directory = Path(tempfile.mkdtemp(prefix="ilfloor-"))
    rows = []
    try:
        raw = sqlite_raw_tx_us(directory, 2_000, reps)
        for k, shape in enumerate(cases):
            kernel = min(_complete_us(SqliteStore(str(directory / f"k{k}-{r}.db")), shape)
                         for r in range(reps))
            phase, log = Phase(), []
            with _sqlite_recording(phase, log):
                store = SqliteStore(str(directory / f"rec{k}.db"))
                drive(store, shape, "floor", phase=phase)
                store.close()
            recorded = _sqlite_contents(directory / f"rec{k}.db")
            floor_s = float("inf")
            for r in range(reps):  # each replay on a fresh file; the fastest counts
                path = directory / f"replay{k}-{r}.db"
                floor_s = min(floor_s, _sqlite_replay(log, path)["complete"])
                _same("sqlite", shape, recorded, _sqlite_contents(path))
            count = sum(1 for p, _, _ in log if p == "complete")
            rows.append(_row("sqlite", shape, raw, kernel, floor_s, count))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return rows


# ---- Redis -------------------------------------------------------------------------------------

def _redis_recording_client(url: str, phase: Phase, log: list[list[Any]]) -> Any:
    """A client whose connections record each request (phase, packed bytes, replies read)."""
    import redis
    from redis.connection import Connection, parse_url

    options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
    base: type[Any] = options.get("connection_class", Connection)

    class Recording(base):  # type: ignore[misc]
        entry: list[Any] | None = None

        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            packed = list(command) if isinstance(command, list) else [command]
            head = bytes(packed[0][:32]) if packed else b""
            if b"\r\nHELLO\r\n" in head or b"\r\nCLIENT\r\n" in head:
                self.entry = None  # the connection's handshake, not a store request
            else:
                self.entry = [phase.now, packed, 0]
                log.append(self.entry)
            super().send_packed_command(command, check_health)

        def read_response(self, *args: Any, **kwargs: Any) -> Any:
            if self.entry is not None:
                self.entry[2] += 1
            return super().read_response(*args, **kwargs)

    pool = redis.ConnectionPool.from_url(url, connection_class=Recording)
    return redis.Redis(connection_pool=pool)


def _redis_replay(client: Any, log: list[list[Any]]) -> Counter[str]:
    """Seconds per phase of ``log`` sent again, each reply read. Each request takes a pooled
    connection and gives it back, as the store's calls and the raw baseline's EVALSHAs do
    (redis-py's pool bookkeeping is ~12 us per request here: left out, the floor would be
    cheaper than the baseline it is compared with)."""
    from redis.exceptions import ResponseError

    spent: Counter[str] = Counter()
    pool = client.connection_pool
    gc.collect()
    for phase, packed, replies in log:
        t0 = perf_counter()
        conn = pool.get_connection()
        try:
            conn.send_packed_command(packed)
            for _ in range(replies):
                with contextlib.suppress(ResponseError):
                    conn.read_response()
        finally:
            pool.release(conn)
        spent[phase] += perf_counter() - t0
    return spent


def _redis_contents(client: Any, namespace: str) -> dict[bytes, Any]:
    """Every key of ``namespace`` with its value, read by type."""
    contents: dict[bytes, Any] = {}
    for key in client.scan_iter(match=f"*{namespace}*", count=10_000):
        kind = client.type(key)
        if kind == b"hash":
            value: Any = sorted(client.hgetall(key).items())
        elif kind == b"list":
            value = client.lrange(key, 0, -1)
        elif kind == b"set":
            value = sorted(client.smembers(key))
        elif kind == b"zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"string":
            value = client.get(key)
        else:
            value = client.dump(key)
        contents[key] = (kind, value)
    return contents


def redis_rows(cases: list[shapes.Shape], reps: int) -> list[dict[str, Any]]:
    import redis
    from ilbench.redisenv import delete_matching, new_prefix, redis_url

    from interlock_redis import RedisStore

    rows = []
    with redis_url() as (url, _private):
        client = redis.Redis.from_url(url)
        prefix = new_prefix()
        try:
            raw = redis_evalsha_us(client, f"{prefix}-raw", 2_000, reps)
            for k, shape in enumerate(cases):
                runs = []
                for r in range(reps):
                    runs.append(_complete_us(RedisStore(client, namespace=f"{prefix}-k{k}-{r}"),
                                             shape))
                    delete_matching(client, f"{prefix}-k{k}-{r}")
                phase, log = Phase(), []
                recording = _redis_recording_client(url, phase, log)
                namespace = f"{prefix}-rec{k}"
                drive(RedisStore(recording, namespace=namespace), shape, "floor", phase=phase)
                recording.close()
                recorded = _redis_contents(client, namespace)
                floor_s = float("inf")
                for _ in range(reps):  # each replay from no keys, as the run; the fastest counts
                    delete_matching(client, namespace)
                    floor_s = min(floor_s, _redis_replay(client, log)["complete"])
                    _same("redis", shape, recorded, _redis_contents(client, namespace))
                delete_matching(client, namespace)
                count = sum(1 for p, _, _ in log if p == "complete")
                rows.append(_row("redis", shape, raw, min(runs), floor_s, count))
        finally:
            delete_matching(client, prefix)
            client.close()
    return rows


# ---- both --------------------------------------------------------------------------------------

def _same(adapter: str, shape: shapes.Shape, recorded: dict[Any, Any],
          replayed: dict[Any, Any]) -> None:
    """The replay must leave exactly what the recorded run left, or its timing means nothing."""
    if recorded != replayed:
        differ = sorted({k for k in recorded.keys() | replayed.keys()
                         if recorded.get(k) != replayed.get(k)}, key=repr)
        raise RuntimeError(f"{adapter} {shape.name}: the replay did not rebuild the recorded "
                           f"state ({len(differ)} of {len(recorded)} tables/keys differ, e.g. "
                           f"{differ[:3]!r})")


def _complete_us(store: Any, shape: shapes.Shape) -> float:
    try:
        return drive(store, shape, "kernel").complete_us
    finally:
        close_store(store)


def _row(adapter: str, shape: shapes.Shape, raw: float, kernel: float, floor_s: float,
         requests: int) -> dict[str, Any]:
    floor = floor_s / shape.tasks * 1e6
    return {"adapter": adapter, "shape": shape.name, "tasks": shape.tasks, "raw_us": raw,
            "kernel_us": kernel, "floor_us": floor, "requests": requests / shape.tasks}


def memory_us(cases: list[shapes.Shape], reps: int) -> dict[str, float]:
    """Per shape, the mean ``on_task_complete`` on the in-memory store (best of ``reps``):
    the kernel's own Python per completion, with a store that does almost nothing."""
    from interlock_memory import MemoryStore

    return {shape.name: min(_complete_us(MemoryStore(), shape) for _ in range(reps))
            for shape in cases}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, one run each")
    parser.add_argument("--reps", type=int, default=3,
                        help="kernel runs and replays per shape (the fastest counts)")
    parser.add_argument("--only", default="sqlite,redis", help="sqlite, redis or both")
    args = parser.parse_args(argv)
    reps = 1 if args.quick else args.reps
    cases = _shapes(args.quick)
    warm = [shapes.fan_out(20)]
    memory_us(warm, 1)
    memory = memory_us(cases, reps)
    rows: list[dict[str, Any]] = []
    for name, measure in (("sqlite", sqlite_rows), ("redis", redis_rows)):
        if name in args.only.split(","):
            measure(warm, 1)  # imports, script loads and first calls out of the figures
            rows += measure(cases, reps)
    print("us per completion (mean on_task_complete); floor = the store's requests of the "
          "completions replayed raw")
    print(f"{'adapter':<7} {'shape':<14} {'tasks':>7} {'raw':>6} {'kernel':>7} {'floor':>7} "
          f"{'memory':>7} {'client':>7} {'req/c':>6} {'kernel':>7} {'floor':>7} {'bound':>7}")
    print(f"{'':<7} {'':<14} {'':>7} {'us':>6} {'us':>7} {'us':>7} {'us':>7} {'us':>7} "
          f"{'':>6} {'x raw':>7} {'x raw':>7} {'x raw':>7}")
    for row in rows:
        raw, floor, mem = row["raw_us"], row["floor_us"], memory[row["shape"]]
        print(f"{row['adapter']:<7} {row['shape']:<14} {row['tasks']:>7,} {raw:>6.1f} "
              f"{row['kernel_us']:>7.1f} {floor:>7.1f} {mem:>7.1f} "
              f"{row['kernel_us'] - floor:>7.1f} {row['requests']:>6.2f} "
              f"{row['kernel_us'] / raw:>6.2f}x {floor / raw:>6.2f}x {(floor + mem) / raw:>6.2f}x")
    print("\nraw       = the benchmark's baseline: one raw 3-write transaction (SQLite) / "
          "EVALSHA (Redis)\nkernel    = mean on_task_complete of the shape, best of the runs\n"
          "floor     = the same completions' store requests replayed raw, per completion\n"
          "memory    = mean on_task_complete of the shape on the in-memory store (the kernel's "
          "own Python)\nclient    = kernel - floor: the kernel's and the store's Python\n"
          "req/c     = statements (SQLite, BEGIN and COMMIT included) / round trips (Redis) per "
          "completion\nbound     = floor + memory: the store's requests plus the kernel's own "
          "work, the least a completion costs\n50% of the raw rate is 'kernel x raw' <= 2.00; "
          "'bound x raw' above 2.00 puts it out of reach for these requests and this kernel")
    return 0


if __name__ == "__main__":
    sys.exit(main())
