"""Edge filters: every operator (missing field, null, typed equality, dotted paths), any_of,
dict round trips and validation errors that name the field."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interlock.errors import GraphError
from interlock.filters import EdgeFilter, FilterOp, FilterRule

FIELDS: dict[str, Any] = {
    "kind": "video",
    "n": 5,
    "ratio": 0.5,
    "flag": True,
    "zero": 0,
    "none": None,
    "empty": "",
    "name": "Clip_01.MP4",
    "title": "Été à Paris",
    "tags": ["a", 1, True, None, {"k": "v"}],
    "meta": {"fps": 25, "codec": {"name": "h264"}, "list": [10, 20]},
}

# (op, field, value, expected)
CASES: list[tuple[str, str, Any, bool]] = [
    # eq: typed JSON equality
    ("eq", "kind", "video", True),
    ("eq", "kind", "Video", False),
    ("eq", "n", 5, True),
    ("eq", "n", 5.0, True),
    ("eq", "n", "5", False),
    ("eq", "flag", True, True),
    ("eq", "flag", 1, False),
    ("eq", "flag", "true", False),
    ("eq", "zero", False, False),
    ("eq", "none", None, True),
    ("eq", "missing", None, False),
    ("eq", "meta.fps", 25, True),
    ("eq", "meta.codec.name", "h264", True),
    ("eq", "meta.list.1", 20, True),
    ("eq", "tags", ["a", 1, True, None, {"k": "v"}], True),
    ("eq", "meta.codec", {"name": "h264"}, True),
    ("eq", "title", "Été à Paris", True),
    # neq is the negation of eq; a missing field matches
    ("neq", "kind", "audio", True),
    ("neq", "kind", "video", False),
    ("neq", "flag", 1, True),
    ("neq", "none", None, False),
    ("neq", "missing", "x", True),
    ("neq", "missing", None, True),
    # ordering: numbers numerically, strings by code point, anything else does not match
    ("gt", "n", 4, True),
    ("gt", "n", 5, False),
    ("gt", "n", 4.5, True),
    ("gt", "n", "4", False),
    ("gt", "kind", "audio", True),
    ("gt", "flag", 0, False),
    ("gt", "none", 0, False),
    ("gt", "missing", 0, False),
    ("gte", "n", 5, True),
    ("gte", "n", 6, False),
    ("gte", "ratio", 0.5, True),
    ("lt", "n", 6, True),
    ("lt", "n", 5, False),
    ("lt", "kind", "w", True),
    ("lt", "tags", 10, False),
    ("lt", "missing", 10, False),
    ("lte", "n", 5, True),
    ("lte", "meta.fps", 24, False),
    ("lte", "zero", 0, True),
    # in / not_in: typed membership
    ("in", "kind", ["video", "audio"], True),
    ("in", "kind", ["audio"], False),
    ("in", "n", [1, 5], True),
    ("in", "n", ["5"], False),
    ("in", "flag", [1], False),
    ("in", "flag", [True], True),
    ("in", "none", [None], True),
    ("in", "missing", [None], False),
    ("in", "kind", [], False),
    ("not_in", "kind", ["audio"], True),
    ("not_in", "kind", ["video"], False),
    ("not_in", "flag", [1], True),
    ("not_in", "missing", ["x"], True),
    # contains / not_contains: substring of strings, typed membership of lists
    ("contains", "title", "à", True),
    ("contains", "title", "x", False),
    ("contains", "kind", "", True),
    ("contains", "tags", "a", True),
    ("contains", "tags", 1, True),
    ("contains", "tags", "1", False),
    ("contains", "tags", True, True),
    ("contains", "tags", None, True),
    ("contains", "tags", {"k": "v"}, True),
    ("contains", "n", 5, False),
    ("contains", "meta", "fps", False),
    ("contains", "kind", 1, False),
    ("contains", "missing", "x", False),
    ("not_contains", "title", "x", True),
    ("not_contains", "tags", "a", False),
    ("not_contains", "tags", "1", True),
    ("not_contains", "missing", "x", True),
    ("not_contains", "n", 5, True),
    # starts_with / ends_with: strings only
    ("starts_with", "name", "Clip", True),
    ("starts_with", "name", "clip", False),
    ("starts_with", "title", "Été", True),
    ("starts_with", "n", "5", False),
    ("starts_with", "missing", "", False),
    ("ends_with", "name", ".MP4", True),
    ("ends_with", "name", ".mp4", False),
    ("ends_with", "tags", "x", False),
    ("ends_with", "empty", "", True),
    # exists / not_exists: null exists
    ("exists", "kind", None, True),
    ("exists", "none", None, True),
    ("exists", "meta.codec.name", None, True),
    ("exists", "meta.codec.nope", None, False),
    ("exists", "missing", None, False),
    ("exists", "kind.sub", None, False),
    ("not_exists", "missing", None, True),
    ("not_exists", "none", None, False),
    ("not_exists", "meta.fps", None, False),
    # matches: RE2 search on strings
    ("matches", "name", "^Clip_[0-9]+\\.", True),
    ("matches", "name", "(?i)\\.mp4$", True),
    ("matches", "name", "\\.mp4$", False),
    ("matches", "title", "^\\p{Lu}", True),
    ("matches", "n", "5", False),
    ("matches", "missing", ".*", False),
    ("matches", "none", ".*", False),
]


@pytest.mark.parametrize(("op", "field", "value", "expected"), CASES)
def test_operator(op: str, field: str, value: Any, expected: bool) -> None:
    rule = FilterRule(field, FilterOp(op), value)
    rule.validate("rule")
    assert rule.matches(FIELDS) is expected
    assert EdgeFilter((rule,)).matches(FIELDS) is expected


def test_every_operator_is_covered() -> None:
    assert {op for op, _, _, _ in CASES} == {op.value for op in FilterOp}


def test_missing_field_matches_only_the_negative_operators() -> None:
    samples = {
        FilterOp.EQ: None, FilterOp.NEQ: None, FilterOp.GT: 0, FilterOp.GTE: 0, FilterOp.LT: 0,
        FilterOp.LTE: 0, FilterOp.IN: [None], FilterOp.NOT_IN: [None], FilterOp.CONTAINS: "",
        FilterOp.NOT_CONTAINS: "", FilterOp.STARTS_WITH: "", FilterOp.ENDS_WITH: "",
        FilterOp.EXISTS: None, FilterOp.NOT_EXISTS: None, FilterOp.MATCHES: "",
    }
    matching = {op for op, value in samples.items() if FilterRule("nope", op, value).matches({})}
    assert matching == {FilterOp.NEQ, FilterOp.NOT_IN, FilterOp.NOT_CONTAINS, FilterOp.NOT_EXISTS}


def test_non_object_fields_have_no_fields() -> None:
    assert not FilterRule("a", FilterOp.EXISTS).matches(None)
    assert FilterRule("a", FilterOp.NOT_EXISTS).matches("text")


# -- combining rules ----------------------------------------------------------------------------


def rule(field: str, op: str, value: Any = None) -> FilterRule:
    return FilterRule(field, FilterOp(op), value)


def test_rules_are_anded() -> None:
    both = EdgeFilter((rule("kind", "eq", "video"), rule("n", "gt", 3)))
    assert both.matches({"kind": "video", "n": 4})
    assert not both.matches({"kind": "video", "n": 3})
    assert not both.matches({"kind": "audio", "n": 4})


def test_any_of_needs_one_whole_group() -> None:
    edge = EdgeFilter(
        rules=(rule("kind", "eq", "video"),),
        any_of=(
            (rule("n", "gt", 10),),
            (rule("tags", "contains", "hd"), rule("fps", "gte", 50)),
        ),
    )
    assert edge.matches({"kind": "video", "n": 11})
    assert edge.matches({"kind": "video", "n": 1, "tags": ["hd"], "fps": 60})
    assert not edge.matches({"kind": "video", "n": 1, "tags": ["hd"], "fps": 30})
    assert not edge.matches({"kind": "video", "n": 1})
    assert not edge.matches({"kind": "audio", "n": 11})


def test_empty_filter_lets_everything_through() -> None:
    assert EdgeFilter().matches({})
    assert EdgeFilter().matches({"x": 1})
    assert EdgeFilter.from_dict([]) == EdgeFilter()


def test_typed_equality_of_rules() -> None:
    assert rule("a", "eq", True) != rule("a", "eq", 1)
    assert rule("a", "eq", 1) == rule("a", "eq", 1.0)
    assert rule("a", "eq", "1") != rule("a", "eq", 1)
    assert rule("a", "in", [True]) != rule("a", "in", [1])
    assert rule("a", "eq", {"k": [1]}) == rule("a", "eq", {"k": [1]})
    assert hash(rule("a", "in", [1])) == hash(rule("a", "in", [1]))
    assert rule("a", "eq", 1) != rule("b", "eq", 1)
    assert rule("a", "eq", 1) != rule("a", "neq", 1)


# -- dict form ----------------------------------------------------------------------------------

ROUND_TRIPS: list[Any] = [
    {"rules": []},
    {"rules": [{"field": "kind", "op": "eq", "value": "video"}]},
    {"rules": [{"field": "x", "op": "exists"}, {"field": "y.z", "op": "not_exists"}]},
    {"rules": [{"field": "x", "op": "eq", "value": None}]},
    {
        "rules": [{"field": "n", "op": "gte", "value": 2}],
        "any_of": [
            [{"field": "tags", "op": "contains", "value": "hd"}],
            [
                {"field": "name", "op": "matches", "value": "\\.mp4$"},
                {"field": "kind", "op": "in", "value": ["a", 1, True]},
            ],
        ],
    },
]


@pytest.mark.parametrize("data", ROUND_TRIPS)
def test_dict_round_trip(data: Any) -> None:
    edge = EdgeFilter.from_dict(data, where="edge_filters.src")
    assert edge.to_dict() == data
    assert EdgeFilter.from_dict(edge.to_dict()) == edge


def test_bare_list_is_the_rules() -> None:
    rules = [{"field": "kind", "op": "eq", "value": "video"}]
    edge = EdgeFilter.from_dict(rules)
    assert edge == EdgeFilter((rule("kind", "eq", "video"),))
    assert edge.to_dict() == {"rules": rules}


def test_rule_dict_round_trip() -> None:
    for op in FilterOp:
        value: Any = {
            FilterOp.IN: [1], FilterOp.NOT_IN: [1], FilterOp.EXISTS: None,
            FilterOp.NOT_EXISTS: None, FilterOp.MATCHES: "a+",
        }.get(op, "x")
        original = FilterRule("a.b", op, value)
        data = original.to_dict()
        assert ("value" in data) is (op not in (FilterOp.EXISTS, FilterOp.NOT_EXISTS))
        assert FilterRule.from_dict(data) == original


# -- validation errors name the field -----------------------------------------------------------

W = "edge_filters.src"
INVALID: list[tuple[Any, str, str]] = [
    ("eq", W, "an edge filter must be a list of rules or an object"),
    ({"rules": [], "or": []}, W, "unknown key(s) in edge filter: or"),
    ({"rules": {}}, f"{W}.rules", "expected a list, got an object"),
    ({"any_of": [{}]}, f"{W}.any_of[0]", "expected a list, got an object"),
    ({"any_of": [[]]}, f"{W}.any_of[0]", "an any_of group must hold at least one rule"),
    ([5], f"{W}.rules[0]", "a filter rule must be an object"),
    ([{"op": "eq", "value": 1}], f"{W}.rules[0].field", "a filter rule needs a 'field'"),
    ([{"field": "a", "value": 1}], f"{W}.rules[0].op", "a filter rule needs an 'op'"),
    ([{"field": "a", "op": "eq", "value": 1, "x": 2}], f"{W}.rules[0]", "unknown key(s)"),
    ([{"field": "", "op": "eq", "value": 1}], f"{W}.rules[0].field", "non-empty dotted path"),
    ([{"field": "a..b", "op": "eq", "value": 1}], f"{W}.rules[0].field", "non-empty dotted"),
    ([{"field": 3, "op": "eq", "value": 1}], f"{W}.rules[0].field", "non-empty dotted path"),
    ([{"field": "a", "op": "equals", "value": 1}], f"{W}.rules[0].op", "unknown operator"),
    ([{"field": "a", "op": None, "value": 1}], f"{W}.rules[0].op", "unknown operator"),
    ([{"field": "a", "op": "eq"}], f"{W}.rules[0].value", "operator 'eq' needs a 'value'"),
    ([{"field": "a", "op": "exists", "value": 1}], f"{W}.rules[0].value", "takes no value"),
    ([{"field": "a", "op": "in", "value": "x"}], f"{W}.rules[0].value", "needs a list value"),
    ([{"field": "a", "op": "not_in", "value": 1}], f"{W}.rules[0].value", "needs a list"),
    ([{"field": "a", "op": "gt", "value": True}], f"{W}.rules[0].value", "a number or a string"),
    ([{"field": "a", "op": "lte", "value": None}], f"{W}.rules[0].value", "a number or a"),
    ([{"field": "a", "op": "lt", "value": [1]}], f"{W}.rules[0].value", "a number or a string"),
    ([{"field": "a", "op": "starts_with", "value": 1}], f"{W}.rules[0].value", "needs a string"),
    ([{"field": "a", "op": "ends_with", "value": None}], f"{W}.rules[0].value", "needs a string"),
    ([{"field": "a", "op": "matches", "value": 1}], f"{W}.rules[0].value", "needs a string"),
    ([{"field": "a", "op": "matches", "value": "("}], f"{W}.rules[0].value", "invalid pattern"),
    ([{"field": "a", "op": "matches", "value": "(a)\\1"}], f"{W}.rules[0].value", "invalid"),
    ([{"field": "a", "op": "eq", "value": float("nan")}], f"{W}.rules[0].value", "non-finite"),
    ([{"field": "a", "op": "eq", "value": {1: 2}}], f"{W}.rules[0].value", "object key"),
    ([{"field": "a", "op": "eq", "value": (1,)}], f"{W}.rules[0].value", "type tuple"),
    (
        {"rules": [{"field": "a", "op": "eq", "value": 1}],
         "any_of": [[{"field": "a", "op": "eq", "value": 1}, {"field": "b", "op": "in"}]]},
        f"{W}.any_of[0][1].value",
        "operator 'in' needs a 'value'",
    ),
]


@pytest.mark.parametrize(("data", "field", "message"), INVALID)
def test_from_dict_errors_name_the_field(data: Any, field: str, message: str) -> None:
    with pytest.raises(GraphError) as info:
        EdgeFilter.from_dict(data, where=W)
    assert info.value.field == field
    assert message in info.value.reason


def test_unknown_operator_lists_the_valid_ones() -> None:
    with pytest.raises(GraphError) as info:
        FilterRule.from_dict({"field": "a", "op": "~", "value": 1}, where="f.rules[2]")
    assert info.value.field == "f.rules[2].op"
    for op in FilterOp:
        assert op.value in info.value.reason


def test_validate_catches_directly_built_bad_filters() -> None:
    with pytest.raises(GraphError) as info:
        EdgeFilter((rule("a", "eq", 1), rule("b", "in", 3))).validate("edge_filters.x")
    assert info.value.field == "edge_filters.x.rules[1].value"
    with pytest.raises(GraphError) as info:
        EdgeFilter(any_of=((),)).validate("w")
    assert info.value.field == "w.any_of[0]"
    with pytest.raises(GraphError) as info:
        EdgeFilter(("not a rule",)).validate("w")  # type: ignore[arg-type]
    assert info.value.field == "w.rules[0]"
    with pytest.raises(GraphError) as info:
        FilterRule("a", "eq", 1).validate("w")  # type: ignore[arg-type]
    assert info.value.field == "w.op"


def test_matches_uses_re2() -> None:
    # (a+)+b backtracks exponentially in Python's re; RE2 answers at once (the timed check
    # lives in test_expressions_properties.py)
    edge = EdgeFilter.from_dict([{"field": "s", "op": "matches", "value": "(a+)+b"}])
    assert not edge.matches({"s": "a" * 100_000})
    assert edge.matches({"s": "a" * 1000 + "b"})


def test_matches_on_unsearchable_text_is_no_match() -> None:
    assert not rule("s", "matches", "a").matches({"s": "a\ud800"})


def test_matches_refuses_without_re2(monkeypatch: pytest.MonkeyPatch) -> None:
    from interlock import regex

    regex._compile_cached.cache_clear()
    monkeypatch.setattr(regex, "_re2", None)
    try:
        with pytest.raises(GraphError, match="google-re2") as info:
            EdgeFilter.from_dict([{"field": "s", "op": "matches", "value": "a"}], where="f")
        assert info.value.field == "f.rules[0].value"
        with pytest.raises(GraphError, match="google-re2"):
            rule("s", "matches", "a").matches({"s": "a"})
    finally:
        regex._compile_cached.cache_clear()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("ab"), inner),
    max_leaves=8,
)
valid_rules = st.one_of(
    st.builds(rule, st.sampled_from(["a", "a.b", "a.0"]), st.sampled_from(["eq", "neq"]),
              json_values),
    st.builds(rule, st.just("a"), st.sampled_from(["in", "not_in"]), st.lists(json_values)),
    st.builds(rule, st.just("a"), st.sampled_from(["gt", "gte", "lt", "lte"]),
              st.integers() | st.text(max_size=3)),
    st.builds(rule, st.just("a"), st.sampled_from(["contains", "not_contains"]), json_values),
    st.builds(rule, st.just("a"), st.sampled_from(["starts_with", "ends_with", "matches"]),
              st.text("ab.", max_size=3) | st.sampled_from(["a*", "^b+$", "(a|b)"])),
    st.builds(rule, st.sampled_from(["a", "a.b"]), st.sampled_from(["exists", "not_exists"])),
)
NEGATION = {"neq": "eq", "not_in": "in", "not_contains": "contains", "not_exists": "exists"}


@settings(deadline=None)
@given(valid_rules, st.dictionaries(st.sampled_from(["a", "b"]), json_values))
def test_negative_operators_are_exact_complements(candidate: FilterRule, fields: Any) -> None:
    candidate.validate("rule")
    result = candidate.matches(fields)
    assert isinstance(result, bool)
    op = candidate.op.value
    if op in NEGATION:
        positive = rule(candidate.field, NEGATION[op], candidate.value)
        assert result is not positive.matches(fields)
    assert FilterRule.from_dict(candidate.to_dict()) == candidate
