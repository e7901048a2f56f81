"""The Celery peer of the end-to-end benchmark (``celery -A benchmarks.e2e_support.celery_app
worker -c 2 -P prefork``).

Broker and result backend: the Redis at ``$INTERLOCK_E2E_CELERY_URL`` (a private redis-server
started by ``benchmarks/e2e.py``). The shapes mirror the Interlock ones task for task:

- 1 -> N -> 1: ``source(n)`` runs on a worker and replaces itself with
  ``chord([work(i) for i in range(n)], aggregate())`` — one source task, N header tasks, one
  body task (N + 2 tasks); the body's result (``{"n": N, "sum": ...}``) is the source's result.
- chain of N: ``chain(step(0), step(), ..., step())`` — N tasks, each result feeding the next.

Settings are Celery's defaults except those needed to run reliably without a broker-side
surprise: JSON serialisation, results kept (a chord needs them), no rate limits.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, chord  # type: ignore[import-untyped]

URL = os.environ.get("INTERLOCK_E2E_CELERY_URL", "redis://127.0.0.1:1/0")

app = Celery("e2e", broker=URL, backend=URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    result_expires=600,
)


@app.task(name="e2e.work")  # type: ignore[untyped-decorator]
def work(i: int) -> int:
    return i


@app.task(name="e2e.aggregate")  # type: ignore[untyped-decorator]
def aggregate(values: list[int]) -> dict[str, Any]:
    return {"n": len(values), "sum": sum(values)}


@app.task(name="e2e.source", bind=True)  # type: ignore[untyped-decorator]
def source(self: Any, n: int) -> Any:
    return self.replace(chord([work.s(i) for i in range(n)], aggregate.s()))


@app.task(name="e2e.step")  # type: ignore[untyped-decorator]
def step(k: int) -> int:
    return k + 1
