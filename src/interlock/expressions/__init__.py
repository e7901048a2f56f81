"""Expressions: text with ``{namespace.key | pipe | pipe(arg)}`` placeholders.

Public API::

    expr = compile_expression("{src.title | default(untitled) | upper}", {"src", "input"})
    expr.evaluate(lambda namespace, path: ...)        # -> JSON value

See ``docs/expressions.md`` for the syntax and every pipe. Pure: no I/O, no clock.
"""

from __future__ import annotations

from interlock.expressions.evaluator import Budget, Expression, Resolver, compile_expression
from interlock.expressions.vocabulary import PipeSpec, vocabulary

__all__ = ["Budget", "Expression", "PipeSpec", "Resolver", "compile_expression", "vocabulary"]
