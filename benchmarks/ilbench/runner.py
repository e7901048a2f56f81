"""Benchmark plans (quick and full) and the per-adapter sections that execute them."""

from __future__ import annotations

import contextlib
import gc
import traceback
from collections import Counter
from collections.abc import Callable
from typing import Any

import attrs

from ilbench import batched, interleaved, shapes
from ilbench.adapters import Backend
from ilbench.baselines import graphlib_us_per_node
from ilbench.batched import BatchRow
from ilbench.driver import RunStats, drive
from ilbench.interleaved import RunsRow
from ilbench.shapes import Shape

ShapeSpec = tuple[Callable[[], Shape], int]
"""A shape factory (shapes are built when their turn comes) and how many repetitions."""


@attrs.frozen
class Plan:
    quick: bool
    memory: tuple[ShapeSpec, ...]
    sqlite: tuple[ShapeSpec, ...]
    redis: tuple[ShapeSpec, ...]
    growth: tuple[int, int]
    """Fan-out sizes compared by the growth target (small, large)."""
    chain_growth: tuple[int, int]
    """Chain lengths compared by the pipeline-size growth check (small, large): a step must
    not cost more in a longer pipeline (SQLite rewrote the whole pipeline's JSON per step
    until schema version 2)."""
    join_growth: tuple[int, int]
    """Join widths compared by the fan-in growth check (small, large): a parent's completion
    must not cost more when the join has more parents (Redis sent every parent's index with
    each completion until session 9)."""
    graphlib_reps: int
    baseline_reps: int
    sqlite_raw_tx: int
    redis_calls: int
    rss_tasks: int | None
    batch_sizes: tuple[int, ...] = (1, 10, 100)
    """Tasks per completion call in the batched section (1: one at a time)."""
    batch_tasks: int = 1_000
    """Tasks completed per batch size."""
    interleaved: tuple[int, ...] = (100, 2_000, 8_000)
    """Runs served at once in the interleaved-runs section (the first is the reference; a
    count past the kernel's run-context cache shows what a miss costs)."""
    interleaved_length: int = 5
    """Nodes of the chain each interleaved run follows."""


def _spec(factory: Callable[[int], Shape], n: int, reps: int) -> ShapeSpec:
    return (lambda: factory(n)), reps


def make_plan(quick: bool, rss_tasks: int | None = None) -> Plan:
    if quick:
        return Plan(
            quick=True,
            memory=(_spec(shapes.chain, 200, 1), _spec(shapes.chain, 2_000, 1),
                    _spec(shapes.fan_out, 1_000, 2), _spec(shapes.fan_out, 10_000, 1),
                    _spec(shapes.grouped, 1_000, 1), _spec(shapes.layered, 2_000, 1),
                    _spec(shapes.join, 200, 1), _spec(shapes.join, 1_000, 1)),
            sqlite=(_spec(shapes.chain, 200, 1), _spec(shapes.chain, 2_000, 1),
                    _spec(shapes.fan_out, 1_000, 1), _spec(shapes.fan_out, 4_000, 1),
                    _spec(shapes.grouped, 300, 1), _spec(shapes.layered, 500, 1),
                    _spec(shapes.join, 200, 1), _spec(shapes.join, 1_000, 1)),
            redis=(_spec(shapes.chain, 200, 1), _spec(shapes.chain, 2_000, 1),
                   _spec(shapes.fan_out, 1_000, 1), _spec(shapes.fan_out, 4_000, 1),
                   _spec(shapes.grouped, 200, 1), _spec(shapes.layered, 500, 1),
                   _spec(shapes.join, 200, 1), _spec(shapes.join, 1_000, 1)),
            growth=(1_000, 0),  # 0: the largest fan-out of the section
            chain_growth=(200, 2_000),
            join_growth=(200, 1_000),
            graphlib_reps=3, baseline_reps=2, sqlite_raw_tx=1_000, redis_calls=2_000,
            rss_tasks=None, batch_tasks=200, interleaved=(100, 1_500), interleaved_length=4,
        )
    return Plan(
        quick=False,
        memory=(_spec(shapes.chain, 1_000, 3), _spec(shapes.chain, 10_000, 1),
                _spec(shapes.fan_out, 1_000, 3),
                _spec(shapes.fan_out, 10_000, 3), _spec(shapes.fan_out, 100_000, 1),
                _spec(shapes.grouped, 1_000, 3), _spec(shapes.grouped, 10_000, 1),
                _spec(shapes.layered, 10_000, 2), _spec(shapes.join, 1_000, 2),
                _spec(shapes.join, 5_000, 1)),
        sqlite=(_spec(shapes.chain, 1_000, 2), _spec(shapes.chain, 10_000, 1),
                _spec(shapes.fan_out, 1_000, 2),
                _spec(shapes.fan_out, 10_000, 1), _spec(shapes.fan_out, 100_000, 1),
                _spec(shapes.grouped, 1_000, 1), _spec(shapes.layered, 10_000, 1),
                _spec(shapes.join, 1_000, 1), _spec(shapes.join, 5_000, 1)),
        redis=(_spec(shapes.chain, 1_000, 2), _spec(shapes.chain, 10_000, 1),
               _spec(shapes.fan_out, 1_000, 2),
               _spec(shapes.fan_out, 10_000, 1), _spec(shapes.fan_out, 100_000, 1),
               _spec(shapes.grouped, 1_000, 1), _spec(shapes.layered, 10_000, 1),
               _spec(shapes.join, 1_000, 1), _spec(shapes.join, 5_000, 1)),
        growth=(1_000, 100_000),
        chain_growth=(1_000, 10_000),
        join_growth=(1_000, 5_000),
        graphlib_reps=5, baseline_reps=3, sqlite_raw_tx=5_000, redis_calls=10_000,
        rss_tasks=rss_tasks if rss_tasks is not None else 1_000_000,
    )


WARMUP: tuple[Callable[[], Shape], ...] = (
    lambda: shapes.chain(20), lambda: shapes.fan_out(50), lambda: shapes.grouped(20),
    lambda: shapes.layered(200, width=20),
)


@attrs.define
class Row:
    """One line of the table: the best repetition of one shape on one adapter."""

    adapter: str
    shape: str
    family: str
    size: int
    tasks: int
    reps: int
    cycle_us: float
    cpu_us: float
    complete_us: float
    complete_p50_us: float
    claim_us: float
    start_ms: float
    total_s: float
    baseline_us: float
    baseline: str
    rt_claim: dict[int, int] = attrs.field(factory=dict)
    rt_plain: dict[int, int] = attrs.field(factory=dict)
    rt_release: dict[int, int] = attrs.field(factory=dict)
    rt_release_store: dict[int, int] = attrs.field(factory=dict)
    rt_release_other: dict[int, int] = attrs.field(factory=dict)
    gc_us: float = 0.0
    """Per task: the time CPython's cyclic GC ran during the run (part of ``cycle_us``)."""

    @property
    def cycle_x(self) -> float:
        return self.cycle_us / self.baseline_us

    @property
    def complete_x(self) -> float:
        return self.complete_us / self.baseline_us

    def to_json(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data.update(cycle_x=self.cycle_x, complete_x=self.complete_x)
        for key in ("rt_claim", "rt_plain", "rt_release", "rt_release_store",
                    "rt_release_other"):
            data[key] = {str(k): v for k, v in sorted(getattr(self, key).items())}
        return data


@attrs.define
class Section:
    adapter: str
    rows: list[Row] = attrs.field(factory=list)
    notes: list[str] = attrs.field(factory=list)
    skipped: str | None = None
    baseline_us: float | None = None
    baseline: str = ""
    batched: list[BatchRow] = attrs.field(factory=list)
    interleaved: list[RunsRow] = attrs.field(factory=list)


def run_section(adapter: str, backend_cm: contextlib.AbstractContextManager[Backend],
                specs: tuple[ShapeSpec, ...], plan: Plan,
                log: Callable[[str], None]) -> Section:
    section = Section(adapter)
    try:
        with backend_cm as backend:
            section.notes.extend(backend.notes)
            if adapter != "memory":
                section.baseline_us = backend.baseline_us
                section.baseline = backend.baseline_label
                log(f"  baseline: {backend.baseline_label}: {backend.baseline_us:.1f} us "
                    f"({1e6 / backend.baseline_us:,.0f}/s)")
            for k, factory in enumerate(WARMUP):
                drive(backend.new_store(), factory(), f"warm-{k}", backend.rts)
                _between(backend)
            for factory, reps in specs:
                shape = factory()
                try:
                    section.rows.append(_measure(adapter, backend, shape, reps, plan))
                    row = section.rows[-1]
                    log(f"  {shape.name:<16} {row.cycle_us:9.1f} us/task  "
                        f"({row.total_s:.2f}s)")
                except Exception as exc:
                    section.notes.append(f"{adapter} {shape.name}: error {exc!r}")
                    log(f"  {shape.name}: ERROR {exc!r}\n{traceback.format_exc()}")
                finally:
                    del shape
                    gc.collect()
            if backend.group_baseline is not None and plan.batch_sizes:
                try:
                    section.batched = _batched(adapter, backend, backend.group_baseline,
                                               plan, log)
                except Exception as exc:  # the shapes' rows stand without it
                    section.notes.append(f"{adapter} batched: error {exc!r}")
                    log(f"  batched: ERROR {exc!r}\n{traceback.format_exc()}")
            if plan.interleaved:
                try:
                    section.interleaved = interleaved.measure(
                        adapter, backend.new_store, plan.interleaved, plan.interleaved_length,
                        lambda: _between(backend))
                    for runs_row in section.interleaved:
                        log(f"  interleaved {runs_row.runs:,} runs {runs_row.us_per_task:9.1f}"
                            " us/task")
                except Exception as exc:
                    section.notes.append(f"{adapter} interleaved: error {exc!r}")
                    log(f"  interleaved: ERROR {exc!r}\n{traceback.format_exc()}")
    except Exception as exc:
        section.skipped = f"{adapter}: error {exc!r}"
        log(f"  section failed: {exc!r}\n{traceback.format_exc()}")
    return section


def _batched(adapter: str, backend: Backend, raw_us: Callable[[int], float], plan: Plan,
             log: Callable[[str], None]) -> list[BatchRow]:
    rts = backend.rts
    rows = batched.measure(adapter, backend.new_store, raw_us, plan.batch_sizes,
                           plan.batch_tasks,
                           (lambda: rts.n) if rts is not None else None)
    _between(backend)
    for row in rows:
        log(f"  batched k={row.k:<4} {row.us_per_task:9.1f} us/task  (raw grouped write "
            f"{row.raw_us_per_item:.1f} us/item)")
    return rows


def _between(backend: Backend) -> None:
    if backend.cleanup_between is not None:
        backend.cleanup_between()
    gc.collect()


def _measure(adapter: str, backend: Backend, shape: Shape, reps: int, plan: Plan) -> Row:
    best: RunStats | None = None
    rts: dict[str, Counter[int]] = {k: Counter() for k in
                                    ("claim", "plain", "release", "release_store",
                                     "release_other")}
    for rep in range(reps):
        stats = drive(backend.new_store(), shape, f"{shape.name}-{rep}", backend.rts)
        _between(backend)
        rts["claim"].update(stats.rt_claim)
        rts["plain"].update(stats.rt_plain)
        rts["release"].update(stats.rt_release)
        rts["release_store"].update(stats.rt_release_store)
        rts["release_other"].update(stats.rt_release_other)
        if best is None or stats.total_s < best.total_s:
            best = stats
    assert best is not None
    if adapter == "memory":
        baseline = graphlib_us_per_node(shape.task_graph(), plan.graphlib_reps)
        label = "graphlib/node"
    else:
        baseline, label = backend.baseline_us, backend.baseline_label
    return Row(adapter, shape.name, shape.family, shape.size, best.tasks, reps, best.cycle_us,
               best.cpu_us, best.complete_us, best.complete_p50_s * 1e6, best.claim_us,
               best.start_s * 1e3, best.total_s, baseline, label, dict(rts["claim"]),
               dict(rts["plain"]), dict(rts["release"]), dict(rts["release_store"]),
               dict(rts["release_other"]), best.gc_us)

