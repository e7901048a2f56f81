"""The pipe vocabulary is complete, documented in docs/expressions.md, and its examples are true."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from interlock.expressions import PipeSpec, compile_expression, vocabulary

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "expressions.md"

REQUIRED = [
    "upper", "lower", "trim", "title", "replace", "strip", "lstrip", "rstrip", "default",
    "required", "first", "last", "nth", "join", "basename", "dirname", "stem", "ext",
    "urlencode", "urldecode", "int", "float", "string", "truncate", "prepend", "append", "match",
    "json_get", "flatten", "compact", "pad", "not", "eq", "neq", "gt", "gte", "lt", "lte", "in",
    "length",
]

SPECS = vocabulary()


def test_vocabulary_has_every_pipe_once() -> None:
    names = [spec.name for spec in SPECS]
    assert len(names) == len(set(names))
    assert sorted(names) == sorted(REQUIRED)


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.name)
def test_spec_is_well_formed(spec: PipeSpec) -> None:
    assert spec.description and "\n" not in spec.description
    assert spec.examples
    assert spec.min_args >= 0
    if spec.max_args is None:
        assert spec.arg_names and spec.min_args <= len(spec.arg_names)
    else:
        assert spec.min_args <= spec.max_args == len(spec.arg_names)


def _section(doc: str, name: str) -> str:
    match = re.search(rf"^#+ `{re.escape(name)}`\n(.*?)(?=^#)", doc, re.DOTALL | re.MULTILINE)
    assert match, f"pipe {name!r} has no section in {DOC.name}"
    return match.group(1)


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.name)
def test_every_pipe_is_documented_with_an_example(spec: PipeSpec) -> None:
    section = _section(DOC.read_text(encoding="utf-8"), spec.name)
    assert spec.description in " ".join(section.split())
    assert f"{{a.value | {spec.name}" in section  # at least one example


EXAMPLES = [(spec.name, *example) for spec in SPECS for example in spec.examples]


@pytest.mark.parametrize(
    ("name", "text", "given", "expected"), EXAMPLES, ids=[f"{e[0]}:{e[1]}" for e in EXAMPLES]
)
def test_vocabulary_example_holds(name: str, text: str, given: Any, expected: Any) -> None:
    expr = compile_expression(text, namespaces={"a"})
    assert name in {pipe.split("(")[0].strip() for pipe in text.strip("{}").split("|")[1:]}
    got = expr.evaluate(lambda namespace, path: given if (namespace, path) == ("a", "value") else 0)
    assert json.dumps(got, sort_keys=True) == json.dumps(expected, sort_keys=True)
    assert type(got) is type(expected)
