"""JSON value helpers shared by expressions, edge filters and planning.

Values stay JSON (None, bool, int, float, str, list, dict) end to end; they are rendered as
JSON-native text only at interpolation. Equality is *typed*: ``true != 1 != "true"``.
"""

from __future__ import annotations

import json
import math
from typing import Any, TypeAlias

JSON: TypeAlias = Any
"""A JSON value: None, bool, int, float, str, list of JSON, dict of str to JSON."""

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()
"""Sentinel for an absent field (distinct from a present ``null``)."""

__all__ = [
    "JSON",
    "MISSING",
    "get_path",
    "is_number",
    "json_compare",
    "json_equal",
    "render_text",
    "truthy",
]


def is_number(value: object) -> bool:
    """True for int/float but not bool (bool is a subclass of int in Python, not in JSON)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def json_equal(a: JSON, b: JSON) -> bool:
    """Typed JSON equality: numbers compare numerically, bools only equal bools, etc."""
    if is_number(a) and is_number(b):
        return bool(a == b)
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def json_compare(a: JSON, b: JSON) -> int | None:
    """Order two values: -1, 0, 1; None when they are not comparable (e.g. str vs number).

    Numbers order numerically and strings lexicographically (by code point); any other
    combination is not ordered.
    """
    if is_number(a) and is_number(b):
        if (isinstance(a, float) and math.isnan(a)) or (isinstance(b, float) and math.isnan(b)):
            return None
        return int(a > b) - int(a < b)
    if isinstance(a, str) and isinstance(b, str):
        return int(a > b) - int(a < b)
    return None


def truthy(value: JSON) -> bool:
    """JSON truthiness: false, null, 0, "", [] and {} are false; the string "false" is true."""
    if value is None or value is MISSING:
        return False
    if isinstance(value, bool):
        return value
    if is_number(value):
        return bool(value != 0)
    if isinstance(value, str | list | dict):
        return len(value) > 0
    return True


def render_text(value: JSON) -> str:
    """Render a value for interpolation into text: strings as-is, everything else as JSON."""
    if isinstance(value, str):
        return value
    if value is MISSING:
        return ""
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), allow_nan=False)


def get_path(obj: JSON, path: str) -> JSON:
    """Follow a dotted path (``a.b.0.c``) into nested dicts/lists; MISSING when absent."""
    current = obj
    for part in path.split("."):
        if isinstance(current, dict):
            if part not in current:
                return MISSING
            current = current[part]
        elif isinstance(current, list) and part.lstrip("-").isdigit():
            index = int(part)
            if not -len(current) <= index < len(current):
                return MISSING
            current = current[index]
        else:
            return MISSING
    return current
