"""Interlock: a protocol-driven DAG orchestration kernel for people who bring their own
infrastructure. See README.md and docs/.

Public names are imported lazily (PEP 562), so importing a light submodule — e.g. the pytest
plugin ``interlock.testing.plugin`` that pytest loads in every session — does not import the
kernel.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from interlock.errors import (
        ConflictError,
        CycleError,
        ExpressionError,
        GraphError,
        InterlockError,
        LimitExceeded,
        StoreContractError,
        StoreUnavailable,
        UsageError,
    )
    from interlock.graph import PluginCatalog, SimplePluginCatalog, Topology, validate
    from interlock.kernel import Kernel, SystemClock
    from interlock.limits import Limits
    from interlock.model import (
        Binding,
        ExpressionSource,
        FailurePolicy,
        FanMode,
        FieldSource,
        InputSource,
        LiteralSource,
        Node,
        Pipeline,
        RetryPolicy,
        TriggerRule,
    )
    from interlock.protocols import Clock, DagStore, Dispatcher
    from interlock.records import (
        Artifact,
        NewArtifact,
        NodeRecord,
        RunRecord,
        TaskRecord,
        TaskRef,
        Transition,
    )
    from interlock.states import NodeState, RunState, TaskState
    from interlock.stores import open_store
    from interlock.values import Claim, Output, RunFinished, TaskInput

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    'Artifact': 'interlock.records',
    'Binding': 'interlock.model',
    'Claim': 'interlock.values',
    'Clock': 'interlock.protocols',
    'ConflictError': 'interlock.errors',
    'CycleError': 'interlock.errors',
    'DagStore': 'interlock.protocols',
    'Dispatcher': 'interlock.protocols',
    'ExpressionError': 'interlock.errors',
    'ExpressionSource': 'interlock.model',
    'FailurePolicy': 'interlock.model',
    'FanMode': 'interlock.model',
    'FieldSource': 'interlock.model',
    'GraphError': 'interlock.errors',
    'InputSource': 'interlock.model',
    'InterlockError': 'interlock.errors',
    'Kernel': 'interlock.kernel',
    'LimitExceeded': 'interlock.errors',
    'Limits': 'interlock.limits',
    'LiteralSource': 'interlock.model',
    'NewArtifact': 'interlock.records',
    'Node': 'interlock.model',
    'NodeRecord': 'interlock.records',
    'NodeState': 'interlock.states',
    'Output': 'interlock.values',
    'Pipeline': 'interlock.model',
    'PluginCatalog': 'interlock.graph',
    'RetryPolicy': 'interlock.model',
    'RunFinished': 'interlock.values',
    'RunRecord': 'interlock.records',
    'RunState': 'interlock.states',
    'SimplePluginCatalog': 'interlock.graph',
    'StoreContractError': 'interlock.errors',
    'StoreUnavailable': 'interlock.errors',
    'SystemClock': 'interlock.kernel',
    'TaskInput': 'interlock.values',
    'TaskRecord': 'interlock.records',
    'TaskRef': 'interlock.records',
    'TaskState': 'interlock.states',
    'Topology': 'interlock.graph',
    'Transition': 'interlock.records',
    'TriggerRule': 'interlock.model',
    'UsageError': 'interlock.errors',
    'open_store': 'interlock.stores',
    'validate': 'interlock.graph',
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'interlock' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "Artifact",
    "Binding",
    "Claim",
    "Clock",
    "ConflictError",
    "CycleError",
    "DagStore",
    "Dispatcher",
    "ExpressionError",
    "ExpressionSource",
    "FailurePolicy",
    "FanMode",
    "FieldSource",
    "GraphError",
    "InputSource",
    "InterlockError",
    "Kernel",
    "LimitExceeded",
    "Limits",
    "LiteralSource",
    "NewArtifact",
    "Node",
    "NodeRecord",
    "NodeState",
    "Output",
    "Pipeline",
    "PluginCatalog",
    "RetryPolicy",
    "RunFinished",
    "RunRecord",
    "RunState",
    "SimplePluginCatalog",
    "StoreContractError",
    "StoreUnavailable",
    "SystemClock",
    "TaskInput",
    "TaskRecord",
    "TaskRef",
    "TaskState",
    "Topology",
    "Transition",
    "TriggerRule",
    "UsageError",
    "open_store",
    "validate",
]
