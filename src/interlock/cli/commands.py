"""The subcommands that run or inspect runs: run, validate, status, resume, retry, cancel,
graph. Each takes the parsed arguments and the output streams, returns an exit code."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import uuid
from collections.abc import Callable
from typing import Any, TextIO

from interlock.errors import GraphError, UsageError
from interlock.graph import validate
from interlock.kernel import Kernel
from interlock.limits import Limits
from interlock.plugins import default_registry
from interlock.protocols import DagStore
from interlock.runtime.local import LocalRunner
from interlock.runtime.summary import RunResult, summarize

from .common import (
    EXIT_CANCELLED,
    EXIT_OK,
    EXIT_USAGE,
    check_plugins,
    exit_code_for,
    fail,
    graph_error_line,
    import_plugin_modules,
    load_and_validate,
    open_cli_store,
    parse_inputs,
    parse_limits,
)
from .graphs import render_dot, render_mermaid
from .render import ProgressBar, render_summary

__all__ = ["cmd_cancel", "cmd_graph", "cmd_resume", "cmd_retry", "cmd_run", "cmd_status",
           "cmd_validate"]


class Streams:
    """Where the CLI writes: results on ``out`` (stdout), progress and errors on ``err``."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def print(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def error(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()


def _execute(args: argparse.Namespace, io: Streams, store: DagStore,
             action: Callable[[LocalRunner], RunResult], run_id: str, limits: Limits) -> int:
    """Run ``action`` on a LocalRunner with a progress bar; print the table; the exit code.

    Ctrl-C: the runner cancels the run; the table of the cancelled run is printed (exit 4).
    SIGTERM: the runner stops gracefully (tasks in hand are finished and reported); the run
    stays resumable (exit 5).
    """
    bar = None if args.quiet else ProgressBar(io.err)
    runner = LocalRunner(store, default_registry, workers=args.workers,
                         mode="processes" if args.processes else "threads", on_progress=bar,
                         limits=limits)
    previous: Any = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: runner.stop())
    try:
        result = action(runner)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        try:
            summary = summarize(store, run_id)
        except UsageError:
            io.error("interrupted before the run was created")
            return EXIT_CANCELLED
        io.error(f"interrupted: run {run_id} {summary.state.value}")
        if args.quiet:
            io.print(run_id)
        else:
            io.print(render_summary(summary))
        return exit_code_for(summary.state)
    finally:
        runner.close()  # worker processes, if any: this runner executes no other run
        if bar is not None:
            bar.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if args.quiet:
        io.print(result.run_id)
    else:
        io.print(render_summary(result.summary, result.elapsed))
        if result.waiting:
            io.print(f"waiting for a human: {', '.join(result.waiting)}")
        if result.interrupted or not result.state.terminal:
            io.print(f"resume with: interlock resume {result.run_id} --store {args.store}")
        elif exit_code_for(result.state):
            io.print(f"retry with: interlock retry {result.run_id} --store {args.store}")
    return exit_code_for(result.state)


def cmd_run(args: argparse.Namespace, io: Streams) -> int:
    """Validate (exit 2, nothing written), open the store, start and execute the run."""
    inputs = parse_inputs(args.input or [], args.input_json)
    limits = parse_limits(args.limit or [])
    if args.workers < 1:
        fail("--workers must be >= 1")
    data, _ = load_and_validate(args.pipeline, plugins=args.plugins or [])
    store = open_cli_store(args.store)
    run_id = args.run_id or uuid.uuid4().hex
    return _execute(args, io, store, lambda r: r.run(data, inputs, run_id=run_id), run_id,
                    limits)


def _prepare_existing(args: argparse.Namespace) -> DagStore:
    """Open the store, import ``--plugins``, check the run's plugins resolve."""
    store = open_cli_store(args.store)
    run = store.get_run(args.run_id)
    if run is None:
        fail(f"no run {args.run_id!r} in {args.store}")
    import_plugin_modules(args.plugins or [])
    try:
        check_plugins(validate(run.pipeline), default_registry)
    except GraphError as exc:
        fail(f"run {args.run_id}: {graph_error_line(exc)}")
    return store


def cmd_resume(args: argparse.Namespace, io: Streams) -> int:
    """Continue an interrupted run (RUNNING tasks of a dead runner count as crashed)."""
    limits = parse_limits(args.limit or [])
    store = _prepare_existing(args)
    return _execute(args, io, store, lambda r: r.resume(args.run_id), args.run_id, limits)


def cmd_retry(args: argparse.Namespace, io: Streams) -> int:
    """``retry_run`` a failed/crashed/cancelled run, then execute it."""
    limits = parse_limits(args.limit or [])
    store = _prepare_existing(args)
    run = store.get_run(args.run_id)
    if run is not None and not run.state.terminal:
        fail(f"run {args.run_id} is {run.state.value}; use 'interlock resume' to continue it")
    if run is not None and run.state.value == "completed":
        fail(f"run {args.run_id} completed; nothing to retry")
    return _execute(args, io, store, lambda r: r.retry(args.run_id), args.run_id, limits)


def cmd_validate(args: argparse.Namespace, io: Streams) -> int:
    """Validate a pipeline file (and, unless ``--skip-plugins``, that its plugins resolve)."""
    _, topology = load_and_validate(args.pipeline, plugins=args.plugins or [],
                                    check=not args.skip_plugins)
    edges = sum(len(p) for p in topology.parents)
    io.print(f"ok: {args.pipeline}: pipeline {topology.pipeline.name!r}, "
             f"{len(topology.slugs)} nodes, {edges} edges")
    return EXIT_OK


def cmd_status(args: argparse.Namespace, io: Streams) -> int:
    """Print the run's table (or JSON); the exit code reflects the run's state."""
    store = open_cli_store(args.store)
    try:
        summary = summarize(store, args.run_id)
    except UsageError:
        fail(f"no run {args.run_id!r} in {args.store}")
    if args.json:
        io.print(json.dumps({
            "run_id": summary.run_id, "pipeline": summary.pipeline,
            "state": summary.state.value, "reason": summary.reason,
            "retries": summary.retries,
            "nodes": [{"slug": n.slug, "plugin": n.plugin, "state": n.state.value,
                       "generation": n.generation, "tasks_total": n.tasks_total,
                       "tasks": {s.value: c for s, c in n.tasks.items()},
                       "reason": n.reason} for n in summary.nodes],
        }, indent=2))
    else:
        io.print(render_summary(summary))
    return exit_code_for(summary.state)


def cmd_cancel(args: argparse.Namespace, io: Streams) -> int:
    """Cancel a run (0 if it is cancelled now or was already; 2 if it had already ended
    otherwise or does not exist)."""
    store = open_cli_store(args.store)
    run = store.get_run(args.run_id)
    if run is None:
        fail(f"no run {args.run_id!r} in {args.store}")
    transition = Kernel(store).cancel_run(args.run_id, args.reason)
    if transition.outcome == "stale":
        io.error(f"run {args.run_id} already {run.state.value}; nothing to cancel")
        return EXIT_USAGE
    io.print(f"run {args.run_id} cancelled"
             + (" (already)" if transition.outcome == "duplicate" else ""))
    return EXIT_OK


def cmd_graph(args: argparse.Namespace, io: Streams) -> int:
    """Print the pipeline as Mermaid (default) or DOT."""
    _, topology = load_and_validate(args.pipeline, check=False)
    io.print(render_dot(topology) if args.format == "dot" else render_mermaid(topology))
    return EXIT_OK
