"""Documented, configurable limits (docs/limits.md). Exceeding one names the limit."""

from __future__ import annotations

import attrs

from interlock.expressions import Budget

__all__ = ["DEFAULT_LIMITS", "Limits"]


@attrs.frozen
class Limits:
    """Bounds the kernel enforces.

    - ``max_outputs_per_task``: artifacts one completion may publish.
    - ``max_fields_bytes``: size of one artifact's ``fields`` as compact JSON (routing metadata).
    - ``max_tasks_per_node``: tasks one node launch may create (a runaway guard, not a design cap).
    - ``launch_batch_size``: tasks written (and dispatched) per store call of a large launch.
    - ``expression``: step and size budget of one expression evaluation.
    """

    max_outputs_per_task: int = 10_000
    max_fields_bytes: int = 64 * 1024
    max_tasks_per_node: int = 1_000_000
    launch_batch_size: int = 1_000
    expression: Budget = attrs.field(factory=Budget)


DEFAULT_LIMITS = Limits()
"""The limits used when none are given."""
