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
        ('{"x": 1e999}', "beyond IEEE 754 double range"),  # inf by overflow, which RFC 8785 cannot write
        ("[-1.5e309]", "beyond IEEE 754 double range"),
        ("1" * 30 + "0" * 10 + ".5e300", "beyond IEEE 754 double range"),
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


@pytest.mark.parametrize("text", ["1e308", "-1.7976931348623157e308", "1e-400", "0.0", "-0e5"])
def test_finite_and_underflowing_numbers_are_read(text):
    assert loads_strict(text) == float(text)


surrogate_texts = st.lists(
    st.sampled_from(['"', "\\", "\\u", "\\ud800", "\\uDC00", "\\ud83d\\ude00", "\\n", "[", "]", "{", "}",
                     ":", ",", "1", "a", "\ud800", "\U0001f600"]),
    max_size=24,
).map("".join)


@given(surrogate_texts)
def test_skipping_the_surrogate_walk_never_accepts_what_the_walk_refuses(text):
    """loads_strict walks the parsed value for lone surrogates only when the text may
    hold one: whatever it accepts, the full walk (check_i_json) accepts too."""
    from ledger.encoding import check_i_json

    try:
        value = loads_strict(text)
    except StrictJSONError:
        return
    check_i_json(value)


@given(st.lists(st.sampled_from("[]{}"), max_size=60).map("".join), st.integers(1, 7), st.integers(0, 12))
def test_the_chunked_depth_scan_matches_a_running_count(brackets, chunk, max_depth):
    """ledger.encoding._nested_deeper_than computes the depth a chunk of brackets at a
    time: the same verdict as counting one bracket at a time, at every chunk size."""
    from unittest import mock

    from ledger import encoding

    depth = deepest = 0
    for b in brackets:
        depth += 1 if b in "[{" else -1
        deepest = max(deepest, depth)
    with mock.patch.object(encoding, "_DEPTH_CHUNK", chunk):
        assert encoding._nested_deeper_than(brackets, max_depth) == (deepest > max_depth)
