"""The baselines each figure is divided by, measured in the same process and run.

- :func:`graphlib_us_per_node`: driving the same task graph with ``graphlib.TopologicalSorter``
  (construct, ``prepare``, ``get_ready``/``done`` until inactive): the floor for scheduling in
  CPython.
- :func:`sqlite_raw_tx_us`: one ``BEGIN IMMEDIATE; UPDATE; UPDATE; INSERT; COMMIT`` on a file in
  WAL mode with ``synchronous=NORMAL`` (the tables it writes mirror interlock-sqlite's schema,
  indexes included, so each write maintains the same indexes a completion does).
- :func:`redis_evalsha_us`: one ``EVALSHA`` of a script running three writes (HSET, HINCRBY,
  RPUSH) on the same server, over the same kind of connection; sent, like the store's own
  script calls, straight on a pooled connection (``direct``: packed by hiredis when installed),
  or through redis-py's ``client.evalsha`` (reported beside it).
"""

from __future__ import annotations

import graphlib
import json
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from time import perf_counter
from typing import Any

from ilbench.shapes import TaskGraph


def graphlib_us_per_node(graph: TaskGraph, reps: int) -> float:
    """Best-of-``reps`` cost per node of scheduling ``graph`` with graphlib, in microseconds."""
    best = float("inf")
    for _ in range(reps):
        t0 = perf_counter()
        sorter: graphlib.TopologicalSorter[int] = graphlib.TopologicalSorter(graph)
        sorter.prepare()
        while sorter.is_active():
            for node in sorter.get_ready():
                sorter.done(node)
        best = min(best, perf_counter() - t0)
    return best / len(graph) * 1e6


_DDL = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    """CREATE TABLE nodes (run_id TEXT NOT NULL, idx INTEGER NOT NULL,
        generation INTEGER NOT NULL, state TEXT NOT NULL, remaining_parents INTEGER NOT NULL,
        total_tasks INTEGER NOT NULL, remaining_tasks INTEGER NOT NULL, reason TEXT,
        PRIMARY KEY (run_id, idx)) WITHOUT ROWID""",
    """CREATE TABLE tasks (run_id TEXT NOT NULL, task_id TEXT NOT NULL,
        node_index INTEGER NOT NULL, generation INTEGER NOT NULL, seq INTEGER NOT NULL,
        state TEXT NOT NULL, origin TEXT, origin_mode TEXT NOT NULL, attempt INTEGER NOT NULL,
        attempt_id TEXT, worker TEXT, lease_until REAL, not_before REAL NOT NULL, error TEXT,
        updated_at REAL NOT NULL, plan TEXT NOT NULL, resume TEXT,
        PRIMARY KEY (run_id, task_id))""",
    "CREATE INDEX tasks_by_node ON tasks (run_id, node_index, generation, seq)",
    "CREATE INDEX tasks_by_state ON tasks (run_id, state, node_index, generation, seq)",
    "CREATE INDEX tasks_lease ON tasks (lease_until) WHERE state = 'running'",
    """CREATE TABLE artifacts (run_id TEXT NOT NULL, seq INTEGER NOT NULL,
        node_index INTEGER NOT NULL, generation INTEGER NOT NULL, artifact_id TEXT NOT NULL,
        task_id TEXT NOT NULL, origin TEXT, fields TEXT NOT NULL, data TEXT,
        PRIMARY KEY (run_id, seq))""",
    "CREATE INDEX artifacts_by_node ON artifacts (run_id, node_index, generation, seq)",
)


def sqlite_raw_tx_us(directory: Path, transactions: int, reps: int, group: int = 1) -> float:
    """Best-of-``reps`` microseconds per raw completion-shaped write (UPDATE; UPDATE; INSERT),
    ``group`` of them per transaction (1: one transaction each, the baseline of a completion;
    more: raw group commit, the baseline of a batched completion), on a fresh file."""
    path = directory / f"baseline-{group}.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in _DDL:
            conn.execute(statement)
        total = transactions * reps
        plan = json.dumps({"inputs": {"src": [{"artifact_id": "src.0.0/0", "fields": {"i": 0}}]},
                           "bindings": {}})
        conn.execute("BEGIN")
        conn.execute("INSERT INTO nodes VALUES ('r', 1, 0, 'launched', 0, ?, ?, NULL)",
                     (total, total))
        conn.executemany(
            "INSERT INTO tasks VALUES ('r', ?, 1, 0, ?, 'running', ?, 'inherit', 1, ?, 'w', "
            "1e12, 0, NULL, 0, ?, NULL)",
            ((f"each.0.{i}", i, f"src.0.0/{i}", f"a{i}", plan) for i in range(total)))
        conn.execute("COMMIT")
        fields = json.dumps({"k": 1})
        best = float("inf")
        for rep in range(reps):
            t0 = perf_counter()
            first = rep * transactions
            for i in range(first, first + transactions):
                task_id = f"each.0.{i}"
                if (i - first) % group == 0:
                    conn.execute("BEGIN IMMEDIATE")
                conn.execute("UPDATE tasks SET state = 'completed', lease_until = NULL, "
                             "updated_at = ? WHERE run_id = 'r' AND task_id = ?", (i, task_id))
                conn.execute("UPDATE nodes SET remaining_tasks = remaining_tasks - 1 "
                             "WHERE run_id = 'r' AND idx = 1")
                conn.execute("INSERT INTO artifacts VALUES ('r', ?, 1, 0, ?, ?, ?, ?, NULL)",
                             (i + 1, f"{task_id}/0", task_id, f"src.0.0/{i}", fields))
                if (i - first) % group == group - 1:
                    conn.execute("COMMIT")
            if conn.in_transaction:
                conn.execute("COMMIT")
            best = min(best, perf_counter() - t0)
    finally:
        conn.close()
    return best / transactions * 1e6


_SCRIPT = """
redis.call('HSET', KEYS[1], 'state', 'completed', 'updated_at', ARGV[1])
local left = redis.call('HINCRBY', KEYS[2], 'remaining_tasks', -1)
redis.call('RPUSH', KEYS[3], ARGV[2])
return left
"""


def redis_evalsha_us(client: Any, prefix: str, calls: int, reps: int, *,
                     direct: bool = True, group: int = 1) -> float:
    """Best-of-``reps`` microseconds per EVALSHA of a three-write script (keys under
    ``prefix``); ``direct``: packed and sent on a pooled connection as the store's script calls
    are (no redis-py command machinery), else through ``client.evalsha``. ``group`` > 1:
    that many EVALSHAs per round trip (one pipeline, direct only), the baseline of a batched
    completion."""
    if group > 1 and not direct:
        raise ValueError("grouped EVALSHAs are sent directly only")
    sha = client.script_load(_SCRIPT)
    node, arts = f"{prefix}:node", f"{prefix}:artifacts"
    payload = json.dumps({"artifact_id": "each.0.0/0", "fields": {"k": 1}})
    send = _direct_sender(client)

    def evalshas(kind: str, first: int) -> None:
        """``group`` EVALSHAs, from key ``{prefix}:{kind}:{first}`` on, in one round trip."""
        if not direct:
            client.evalsha(sha, 3, f"{prefix}:{kind}:{first}", node, arts, first, payload)
            return
        send([("EVALSHA", sha, 3, f"{prefix}:{kind}:{i}", node, arts, i, payload)
              for i in range(first, first + group)])

    rounds = max(1, calls // group)
    for r in range(max(1, min(100, calls) // group)):  # warm the connection and script cache
        evalshas("warm", r * group)
    best = float("inf")
    for _ in range(reps):
        t0 = perf_counter()
        for r in range(rounds):
            evalshas("task", r * group)
        best = min(best, perf_counter() - t0)
    return best / (rounds * group) * 1e6


def _direct_sender(client: Any) -> Callable[[Sequence[tuple[Any, ...]]], list[Any]]:
    """Sends commands on a pooled connection in one buffer, packed by the store's own packer
    (``interlock_redis.scripts._packed``: hiredis when installed), and returns their replies."""
    from interlock_redis.scripts import _packed

    pool = client.connection_pool

    def send(commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        conn = pool.get_connection()
        try:
            conn.send_packed_command(_packed(conn, commands))
            return [conn.read_response() for _ in commands]
        finally:
            pool.release(conn)

    return send
