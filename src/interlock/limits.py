"""Documented, configurable limits (docs/concepts.md, "Limits"). Exceeding one names the limit."""

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
    - ``launch_first_batch``: tasks in the first batch of a launch wider than it; each next
      batch doubles, up to ``launch_batch_size``. Each batch is dispatched as soon as it is
      written, so workers start on the first tasks while the launching worker writes the rest
      (a ramp). ``0``, or a value ``>= launch_batch_size``, writes every batch at
      ``launch_batch_size`` (no ramp). The launches that fit the first batch are the ones a
      store with the ``follow`` ability writes with the completion that released them (one
      step), and the ones the ``launch_many`` ability writes together.
    - ``expression``: step and size budget of one expression evaluation.
    """

    max_outputs_per_task: int = 10_000
    max_fields_bytes: int = 64 * 1024
    max_tasks_per_node: int = 1_000_000
    launch_batch_size: int = 1_000
    launch_first_batch: int = 64
    expression: Budget = attrs.field(factory=Budget)

    @property
    def single_launch(self) -> int:
        """The most tasks a launch may have to be written in one step with something else
        (the completion that released it, other launches): its first batch as
        ``launch_batches`` ramps it — ``launch_first_batch``, at most ``launch_batch_size``;
        without a ramp ``launch_batch_size``."""
        size = max(1, self.launch_batch_size)
        return min(self.launch_first_batch, size) if self.launch_first_batch > 0 else size


DEFAULT_LIMITS = Limits()
"""The limits used when none are given."""
