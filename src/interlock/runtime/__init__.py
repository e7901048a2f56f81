"""Running pipelines: an in-process queue, the worker loop and the local runner.

- :class:`QueueDispatcher` — in-process Dispatcher + TaskSource (thread-safe, honours
  ``not_before``, blocks on a condition variable).
- :class:`Worker` — receive -> claim -> plugin -> report -> ack, over any TaskSource.
- :class:`LocalRunner` — start/resume/retry a run and execute it to completion with N threads
  or N processes; progress events; Ctrl-C cancels the run.
- :class:`WaitForHuman` — raised by a plugin to park its task for a human.
"""

from interlock.runtime.files import PipelineFileError, add_plugin_path, load_pipeline_file
from interlock.runtime.local import LocalRunner
from interlock.runtime.processes import ProcessInvoker
from interlock.runtime.queue import QueueDispatcher
from interlock.runtime.summary import (
    NodeSummary,
    Progress,
    RunResult,
    RunSummary,
    progress,
    summarize,
)
from interlock.runtime.worker import (
    AttemptCrashed,
    Heartbeats,
    PluginError,
    TaskOutcome,
    WaitForHuman,
    Worker,
    call_plugin,
)

__all__ = [
    "AttemptCrashed",
    "Heartbeats",
    "LocalRunner",
    "NodeSummary",
    "PipelineFileError",
    "PluginError",
    "ProcessInvoker",
    "Progress",
    "QueueDispatcher",
    "RunResult",
    "RunSummary",
    "TaskOutcome",
    "WaitForHuman",
    "Worker",
    "add_plugin_path",
    "call_plugin",
    "load_pipeline_file",
    "progress",
    "summarize",
]
