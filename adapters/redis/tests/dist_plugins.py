"""Plugins of test_distributed_workers.py, imported by ``interlock worker --plugins dist_plugins``
in each worker process (the test puts this directory on the workers' PYTHONPATH).

Every execution is recorded on the private test server, under the prefix
``$INTERLOCK_DIST_PREFIX`` (``<namespace>:dist``), so the test can prove what ran, where and how
often:

- ``<prefix>:ready``: the pid of each process that imported this module (the CLI imports
  ``--plugins`` modules just before it starts serving);
- ``<prefix>:exec:<run>``: one ``"<task id> <attempt id> <pid>"`` entry per plugin execution
  that ran to its end (pushed just before the plugin returns);
- ``<prefix>:announce:<run>:<node>``: one entry pushed by the first execution of a node whose
  config has ``announce: true`` (for the test to block on);
- ``<prefix>:done:<run>``: the aggregate's verdict (JSON), pushed when it ran;
- ``dist_block``: ``<prefix>:started:<run>`` (record) and ``<prefix>:started-signal:<run>``
  (for BLPOP) when it starts, then it blocks in ``BLPOP <prefix>:release:<run>`` (with a
  timeout), then records its execution and pushes ``<prefix>:ended-signal:<run>``.

Nothing here writes anywhere but ``$INTERLOCK_DIST_REDIS_URL`` (the test's private server).
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import redis

from interlock import TaskInput
from interlock.plugins import plugin
from interlock.records import Artifact

_lock = threading.Lock()
_client: redis.Redis | None = None
_announced: set[tuple[str, str]] = set()


def client() -> redis.Redis:
    global _client
    with _lock:
        if _client is None:
            _client = redis.Redis.from_url(os.environ["INTERLOCK_DIST_REDIS_URL"])
        return _client


def key(*parts: str) -> str:
    return ":".join([os.environ["INTERLOCK_DIST_PREFIX"], *parts])


def record(task: TaskInput) -> None:
    """This execution ran to its end: task id, the attempt id of the claim, this process."""
    client().rpush(key("exec", task.run_id), f"{task.task_id} {task.attempt_id} {os.getpid()}")


def announce(task: TaskInput) -> None:
    """Push ``announce:<run>:<node>`` once per run and node across all processes."""
    if not task.config.get("announce"):
        return
    marker = (task.run_id, task.node)
    with _lock:
        if marker in _announced:
            return
        _announced.add(marker)
    if client().set(key("announced", task.run_id, task.node), 1, nx=True):
        client().rpush(key("announce", task.run_id, task.node), task.task_id)


def only(task: TaskInput) -> Artifact:
    """The one artifact a single-mode task received."""
    artifacts = [a for arts in task.inputs.values() for a in arts]
    if len(artifacts) != 1:
        raise ValueError(f"{task.task_id}: expected one input artifact, got {len(artifacts)}")
    return artifacts[0]


@plugin("dist_src")
def dist_src(task: TaskInput) -> list[dict[str, Any]]:
    """The fan-out root: ``count`` artifacts, item ``i`` carrying ``fields.i = i``, data ``i``."""
    count = int(task.config["count"])
    record(task)
    return [{"id": f"i{i}", "fields": {"i": i}, "data": i} for i in range(count)]


@plugin("dist_scale")
def dist_scale(task: TaskInput) -> list[dict[str, Any]]:
    """Single mode: data times ``factor``, ``fields.i`` kept."""
    announce(task)
    item = only(task)
    factor = int(task.config["factor"])
    record(task)
    return [{"fields": {"i": item.fields["i"]}, "data": factor * int(item.data)}]


@plugin("dist_merge")
def dist_merge(task: TaskInput) -> list[dict[str, Any]]:
    """Grouped over a and b: exactly one artifact of each, of the same item; data a + b."""
    a, b = task.inputs.get("a", []), task.inputs.get("b", [])
    if len(a) != 1 or len(b) != 1 or a[0].fields["i"] != b[0].fields["i"]:
        raise ValueError(f"{task.task_id}: bad group a={[x.fields for x in a]} "
                         f"b={[x.fields for x in b]}")
    record(task)
    return [{"fields": {"i": a[0].fields["i"]},
             "data": int(a[0].data) + int(b[0].data)}]


@plugin("dist_total")
def dist_total(task: TaskInput) -> list[dict[str, Any]]:
    """Aggregate: sums every input artifact's data; pushes the verdict to ``done:<run>``."""
    artifacts = [a for arts in task.inputs.values() for a in arts]
    total = sum(int(a.data) for a in artifacts)
    items = sorted(int(a.fields["i"]) for a in artifacts)
    verdict = {"count": len(artifacts), "total": total, "distinct": len(set(items)),
               "task_id": task.task_id, "attempt_id": task.attempt_id, "pid": os.getpid()}
    record(task)
    client().rpush(key("done", task.run_id), json.dumps(verdict))
    return [{"fields": {"count": len(artifacts)}, "data": total}]


@plugin("dist_block")
def dist_block(task: TaskInput) -> list[dict[str, Any]]:
    """Single mode: announce the start, block until released (or ``block_seconds``), finish."""
    item = only(task)
    entry = f"{task.task_id} {task.attempt_id} {os.getpid()}"
    pipe = client().pipeline(transaction=False)
    pipe.rpush(key("started", task.run_id), entry)
    pipe.rpush(key("started-signal", task.run_id), entry)
    pipe.execute()
    timeout = float(task.config.get("block_seconds", 30))
    client().blpop([key("release", task.run_id)], timeout=timeout)
    record(task)
    client().rpush(key("ended-signal", task.run_id), entry)
    return [{"fields": {"i": item.fields["i"]}, "data": item.data}]


client().rpush(key("ready"), os.getpid())
