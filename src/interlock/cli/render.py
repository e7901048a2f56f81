"""Terminal output with the standard library only: a progress bar and plain tables."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TextIO

from interlock.runtime.summary import Progress, RunSummary
from interlock.states import NodeState, TaskState

__all__ = ["ProgressBar", "format_duration", "render_summary", "table"]


def format_duration(seconds: float | None) -> str:
    """``0.25s``, ``12.3s``, ``4m05s``, ``1h02m``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def progress_line(event: Progress, width: int = 24) -> str:
    """``[#########-------]  nodes 3/7  tasks 45/120  failures 0  1.2s``."""
    total = event.tasks_total or event.nodes_total
    done = event.tasks_done if event.tasks_total else event.nodes_done
    filled = min(width, int(width * done / total)) if total else 0
    bar = "#" * filled + "-" * (width - filled)
    # a failed node had at least one failed attempt: the larger count, not the sum (one
    # failure showed as 2); failed_nodes alone counts for a run failed before this runner
    failures = max(event.failures, event.failed_nodes)
    return (f"[{bar}]  nodes {event.nodes_done}/{event.nodes_total}  "
            f"tasks {event.tasks_done}/{event.tasks_total}  failures {failures}  "
            f"{format_duration(event.elapsed)}")


class ProgressBar:
    """A progress callback rendering to ``stream`` (stderr).

    On a TTY the line is redrawn in place with ``\\r``; otherwise a plain line is written at
    most every ``plain_interval`` seconds, and always for the final event. Thread-safe.
    """

    def __init__(self, stream: TextIO, *, tty: bool | None = None,
                 plain_interval: float = 5.0) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.plain_interval = plain_interval
        self._lock = threading.Lock()
        self._last = -float("inf")
        self._drawn = 0

    def __call__(self, event: Progress) -> None:
        line = progress_line(event)
        with self._lock:
            if self.tty:
                padding = " " * max(0, self._drawn - len(line))
                self.stream.write("\r" + line + padding)
                self._drawn = len(line)
                if event.final:
                    self.stream.write("\n")
                    self._drawn = 0
            else:
                now = time.monotonic()
                if not event.final and now - self._last < self.plain_interval:
                    return
                self._last = now
                self.stream.write(("done " if event.final else "") + line + "\n")
            self.stream.flush()

    def close(self) -> None:
        """End a TTY line left open (no final event came)."""
        with self._lock:
            if self.tty and self._drawn:
                self.stream.write("\n")
                self.stream.flush()
                self._drawn = 0


def table(headers: Sequence[str], rows: Sequence[Sequence[str]],
          right: Sequence[int] = ()) -> str:
    """Columns padded to their widest cell; columns in ``right`` right-aligned."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = [str(c).rjust(w) if i in right else str(c).ljust(w)
                 for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


def render_summary(summary: RunSummary, elapsed: float | None = None) -> str:
    """The per-node table, the run line and, for a run that did not complete, why."""
    rows = []
    for node in summary.nodes:
        rows.append([
            node.slug, node.plugin, node.state.value, str(node.tasks_total),
            str(node.tasks_completed), str(node.tasks_failed),
            str(node.tasks.get(TaskState.WAITING, 0)), format_duration(node.duration),
        ])
    text = table(["NODE", "PLUGIN", "STATE", "TASKS", "DONE", "FAILED", "WAITING", "DURATION"],
                 rows, right=(3, 4, 5, 6, 7))
    tasks = sum(n.tasks_total for n in summary.nodes)
    took = elapsed if elapsed is not None else max(0.0, summary.updated_at - summary.created_at)
    lines = [text, "",
             f"run {summary.run_id} ({summary.pipeline}) {summary.state.value}: "
             f"{len(summary.nodes)} nodes, {tasks} tasks, {format_duration(took)}"
             + (f", retried {summary.retries}x" if summary.retries else "")]
    for node in summary.nodes:
        if node.state in (NodeState.FAILED, NodeState.SKIPPED) and node.reason:
            lines.append(f"  {node.slug}: {' '.join(node.reason.split())}")
    if summary.reason and summary.state.terminal and summary.state.value != "completed":
        lines.append(f"  reason: {' '.join(summary.reason.split())}")
    return "\n".join(lines)
