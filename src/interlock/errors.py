"""The exception tree: every error says who is at fault.

- :class:`UsageError` — the caller used the API wrongly (unknown run, bad argument).
- :class:`GraphError` — the pipeline definition is invalid; names the node, edge or field.
- :class:`ExpressionError` — an expression failed to parse or evaluate; carries the expression
  text and the 0-based column of the fault.
- :class:`LimitExceeded` — a documented, configurable limit was exceeded; names the limit.
- :class:`StoreContractError` — a Store implementation returned something the contract forbids.
- :class:`ConflictError` — an idempotent call was repeated with *different* arguments.
- :class:`StoreUnavailable` — the store cannot be reached (CLI exit code 3).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ConflictError",
    "CycleError",
    "ExpressionError",
    "GraphError",
    "InterlockError",
    "LimitExceeded",
    "StoreContractError",
    "StoreUnavailable",
    "UsageError",
]


class InterlockError(Exception):
    """Base class of every error raised by Interlock."""


class UsageError(InterlockError, ValueError):
    """The caller used the API wrongly (bad argument, unknown run or task)."""


class ConflictError(UsageError):
    """An idempotent operation was repeated with different arguments than the first time."""


class GraphError(InterlockError, ValueError):
    """The pipeline definition is invalid.

    ``node`` names the offending node (slug) when there is one, ``field`` the offending field
    (e.g. ``depends_on``, ``bindings.title``) and ``edge`` the offending edge as
    ``(upstream, downstream)``.
    """

    def __init__(
        self,
        message: str,
        *,
        node: str | None = None,
        field: str | None = None,
        edge: tuple[str, str] | None = None,
    ) -> None:
        self.node = node
        self.field = field
        self.edge = edge
        self.reason = message
        super().__init__(self._format(message))

    def _format(self, message: str) -> str:
        where = []
        if self.node is not None:
            where.append(f"node {self.node!r}")
        if self.edge is not None:
            where.append(f"edge {self.edge[0]!r} -> {self.edge[1]!r}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        return f"{', '.join(where)}: {message}" if where else message


class CycleError(GraphError):
    """The graph has a cycle; ``cycle`` lists the slugs along it, first slug repeated last."""

    def __init__(self, cycle: Sequence[str]) -> None:
        self.cycle = tuple(cycle)
        super().__init__(
            "dependency cycle: " + " -> ".join(self.cycle),
            node=self.cycle[0] if self.cycle else None,
            field="depends_on",
        )


class ExpressionError(InterlockError, ValueError):
    """An expression could not be parsed or evaluated.

    ``expression`` is the full text, ``column`` the 0-based offset of the fault in it,
    ``reason`` the cause without position information.
    """

    def __init__(self, reason: str, expression: str = "", column: int = 0) -> None:
        self.reason = reason
        self.expression = expression
        self.column = column
        super().__init__(self._format())

    def _format(self) -> str:
        if not self.expression:
            return self.reason
        pointer = " " * self.column + "^"
        return f"{self.reason} (column {self.column})\n  {self.expression}\n  {pointer}"


class LimitExceeded(InterlockError):
    """A documented, configurable limit was exceeded. ``limit`` is the name of the limit."""

    def __init__(self, limit: str, value: int, maximum: int, where: str = "") -> None:
        self.limit = limit
        self.value = value
        self.maximum = maximum
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}limit {limit!r} exceeded: {value} > {maximum}")


class StoreContractError(InterlockError):
    """A Store returned something the store contract forbids. ``clause`` is the contract id."""

    def __init__(self, clause: str, message: str) -> None:
        self.clause = clause
        super().__init__(f"store contract [{clause}] violated: {message}")


class StoreUnavailable(InterlockError):
    """The store cannot be reached or opened (server down, file not writable)."""
