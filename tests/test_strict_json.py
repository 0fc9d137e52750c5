"""ledger.encoding.loads_strict: I-JSON (RFC 7493) only, bounded depth, typed errors, never RecursionError."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.encoding import MAX_JSON_DEPTH, StrictJSONError, canonical_json, loads_strict


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[" * 1000 + "]" * 1000, "nested deeper"),
        ("[" * 200_000, "nested deeper"),
        ('{"a": {"b": ' * 70 + "1" + "}" * 140, "nested deeper"),
        ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), "nested deeper"),
        ('{"a": 1, "a": 2}', "duplicate member name 'a'"),
        ('{"x": [{"p": 16, "p": "16"}]}', "duplicate member name 'p'"),
        ("1" * 5000, "5000 digits"),
        ('{"n": -' + "9" * 41 + "}", "41 digits"),
        ('{"x": "\\ud800"}', "lone UTF-16 surrogate"),
        ('{"\\udfff": 1}', "lone UTF-16 surrogate"),
        ("NaN", "NaN"),
        ('[Infinity]', "Infinity"),
        (b"\xff\xfe", "not UTF-8"),
        ("{", "not JSON"),
        ("", "not JSON"),
    ],
)
def test_refused_with_a_reason(text, fragment):
    with pytest.raises(StrictJSONError, match=fragment.replace("(", r"\(")):
        loads_strict(text)


def test_depth_limit_is_inclusive():
    depth = MAX_JSON_DEPTH
    assert loads_strict("[" * depth + "]" * depth) is not None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(st.characters(blacklist_categories=["Cs"])),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_round_trips_every_i_json_value(value):
    assert loads_strict(canonical_json(value)) == value
