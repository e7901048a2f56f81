"""Plugins for the worker-process tests, importable as ``proc_plugins:NAME`` in a child.

Their behaviour is steered by the run input (``mode``, ``dir``, ``runner_pid``), since a
test cannot reach into another process; "once" behaviours leave a marker file in ``dir``.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

from interlock import Output, TaskInput
from interlock.runtime import WaitForHuman


def _first_time(task: TaskInput, name: str) -> bool:
    """True once per ``name`` and run directory (an exclusive create of a marker file)."""
    try:
        fd = os.open(Path(str(task.bindings["dir"])) / name, os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def items(task: TaskInput) -> list[Output]:
    return [Output(fields={"i": i}) for i in range(int(task.bindings["n"]))]  # type: ignore[arg-type]


def square(task: TaskInput) -> list[dict[str, Any]]:
    (artifact,) = task.inputs["items"]
    i = artifact.fields["i"]
    mode = task.bindings.get("mode")
    if mode == "raise" and i == 7:
        raise ValueError("cannot square seven")
    if mode == "exit" and i == 3 and _first_time(task, "exit"):
        os._exit(3)  # the worker process dies in the middle of the attempt
    if mode == "abandon" and i == 4 and _first_time(task, "abandon"):
        raise SystemExit("runner process killed")
    if mode == "human" and i == 1 and task.resume is None:
        raise WaitForHuman("approve one")
    if mode == "sigint" and i == 2:
        os.kill(int(task.bindings["runner_pid"]), signal.SIGINT)  # type: ignore[arg-type]
        threading.Event().wait()  # until the runner kills this process
    return [{"fields": {"v": i * i, "pid": os.getpid()}}]


def pair(task: TaskInput) -> list[Output]:
    (number,) = task.inputs["items"]
    (squared,) = task.inputs["square"]
    return [Output(fields={"i": number.fields["i"], "v": squared.fields["v"]})]


def total(task: TaskInput) -> list[Output]:
    return [Output(fields={"sum": sum(a.fields["v"] for a in task.inputs["pair"])})]  # type: ignore[misc]
