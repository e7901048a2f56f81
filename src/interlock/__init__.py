"""Interlock: a protocol-driven DAG orchestration kernel for people who bring their own
infrastructure. See README.md and docs/."""

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
