"""A kernel serving more runs at once than it keeps run contexts for.

Past :data:`~interlock._kernel_context.RUNS_CACHED` interleaved runs, a run's next event finds
its context gone and reads the run again; the compiled pipeline (its Topology) is shared by the
runs whose snapshots are equal, so it is not compiled again at each of those events (it was:
a 20-node chain cost 45 -> 159 us per task past 256 runs). Runs of different pipelines never
share one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import interlock._kernel_context as kernel_context
from interlock import Kernel, RunState, TaskRef
from interlock.graph import Topology
from interlock_memory import MemoryStore


class _Queue:
    def __init__(self) -> None:
        self.refs: list[TaskRef] = []

    def dispatch(self, tasks: Any) -> None:
        self.refs.extend(tasks)


def _chain(plugin: str, length: int = 3) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [{"slug": "n0", "plugin": plugin, "config": {"tag": plugin}}]
    nodes += [{"slug": f"n{i}", "plugin": plugin, "config": {"tag": plugin},
               "depends_on": [f"n{i - 1}"]} for i in range(1, length)]
    return {"name": "same-name", "nodes": nodes}


@pytest.fixture
def compilations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the pipelines the kernel compiled from stored snapshots."""
    seen: list[str] = []
    original: Callable[..., Topology] = kernel_context.validate

    def counted(pipeline: Any, *args: Any) -> Topology:
        seen.append(pipeline["nodes"][0]["plugin"])
        return original(pipeline, *args)

    monkeypatch.setattr(kernel_context, "validate", counted)
    return seen


def test_interleaved_runs_past_the_context_cache_compile_each_pipeline_once(
        compilations: list[str]) -> None:
    store, queue = MemoryStore(), _Queue()
    kernel = Kernel(store, queue)
    runs = kernel_context.RUNS_CACHED + 60
    plugins = {f"r{i}": ("alpha" if i % 3 else "beta") for i in range(runs)}
    for run_id, plugin in plugins.items():
        kernel.start_run(_chain(plugin), run_id=run_id)
    done = 0
    while queue.refs:  # first in, first out: every run advances one step per round
        ref = queue.refs.pop(0)
        claim = kernel.claim_task(ref.run_id, ref.task_id, worker="w")
        assert claim is not None
        task = claim.input
        upstream = [a.fields["trail"] for arts in task.inputs.values() for a in arts]
        trail = f"{upstream[0] if upstream else ''}{task.plugin}:{task.config['tag']}/"
        kernel.on_task_complete(ref.run_id, ref.task_id, claim.attempt_id,
                                [{"id": "out", "fields": {"trail": trail}}])
        done += 1
    assert done == 3 * runs
    for run_id, plugin in plugins.items():
        run = store.get_run(run_id)
        assert run is not None and run.state is RunState.COMPLETED
        (last,) = store.get_artifacts(run_id, 2, 0)
        assert last.fields["trail"] == f"{plugin}:{plugin}/" * 3  # its own pipeline's nodes
    # The first runs' contexts were evicted while later runs started, so their events read
    # the runs again: once compiled per distinct pipeline, not once per event (~2,500 here).
    assert sorted(compilations) == ["alpha", "beta"]


def test_an_evicted_run_is_read_again_and_goes_on(compilations: list[str]) -> None:
    store, queue = MemoryStore(), _Queue()
    kernel = Kernel(store, queue)
    kernel.start_run(_chain("alpha"), run_id="first")
    for i in range(kernel_context.RUNS_CACHED):  # push "first" out of the context cache
        kernel.start_run(_chain("beta", 1), run_id=f"other-{i}")
    (ref,) = [r for r in queue.refs if r.run_id == "first"]
    claim = kernel.claim_task("first", ref.task_id, worker="w")
    assert claim is not None and claim.input.config == {"tag": "alpha"}
    assert compilations == ["alpha"]
