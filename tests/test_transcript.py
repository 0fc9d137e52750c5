"""Fiat-Shamir transcripts: deterministic, and every input changes the challenge."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.generators import G, H
from crypto.group import ORDER
from crypto.transcript import PROTOCOL, Transcript


def _challenge(statement=b"stmt", context=b"ctx", ops=(), label=b"c") -> int:
    t = Transcript(statement, context)
    for op in ops:
        op(t)
    return t.challenge_scalar(label)


def msg(label: bytes, data: bytes):
    return lambda t: t.append_message(label, data)


def test_protocol_id_is_versioned():
    assert PROTOCOL == b"oretrace/v2"


def test_same_inputs_same_challenge():
    ops = (msg(b"a", b"1"), lambda t: t.append_u64(b"n", 64), lambda t: t.append_point(b"G", G()))
    assert _challenge(ops=ops) == _challenge(ops=ops)
    c = _challenge(ops=ops)
    assert 0 < c < ORDER


def test_statement_context_label_data_change_challenge():
    base = _challenge(ops=(msg(b"a", b"1"),))
    variants = [
        _challenge(statement=b"stmt2", ops=(msg(b"a", b"1"),)),
        _challenge(context=b"ctx2", ops=(msg(b"a", b"1"),)),
        _challenge(ops=(msg(b"b", b"1"),)),  # label
        _challenge(ops=(msg(b"a", b"2"),)),  # data
        _challenge(ops=(msg(b"a", b"1"),), label=b"d"),  # challenge label
        _challenge(ops=()),  # omitted field
        _challenge(ops=(msg(b"a", b"1"), msg(b"a", b"1"))),  # repeated field
        _challenge(ops=(lambda t: t.domain_separator(b"1"),)),  # dom-sep vs message with the same data
    ]
    assert all(v != base for v in variants)
    assert len(set(variants)) == len(variants)


def test_order_matters():
    one = _challenge(ops=(msg(b"a", b"1"), msg(b"b", b"2")))
    two = _challenge(ops=(msg(b"b", b"2"), msg(b"a", b"1")))
    assert one != two
    p = _challenge(ops=(lambda t: t.append_points(b"P", [G(), H()]),))
    q = _challenge(ops=(lambda t: t.append_points(b"P", [H(), G()]),))
    assert p != q


def test_length_prefixing_prevents_ambiguity():
    # data split differently across two fields
    assert _challenge(ops=(msg(b"x", b"ab"), msg(b"x", b"c"))) != _challenge(ops=(msg(b"x", b"a"), msg(b"x", b"bc")))
    # label / data boundary
    assert _challenge(ops=(msg(b"ab", b"c"),)) != _challenge(ops=(msg(b"a", b"bc"),))
    # statement / context boundary
    assert _challenge(statement=b"ab", context=b"c") != _challenge(statement=b"a", context=b"bc")
    # a count-prefixed list is not the concatenation of two lists
    g, h = G(), H()
    joined = _challenge(ops=(lambda t: t.append_points(b"P", [g, h]),))
    split = _challenge(ops=(lambda t: t.append_points(b"P", [g]), lambda t: t.append_points(b"P", [h])))
    assert joined != split
    # a u64 is not the same as 8 raw bytes under another framing
    assert _challenge(ops=(lambda t: t.append_u64(b"n", 1),)) != _challenge(ops=(msg(b"n", b"\x01"),))


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.binary(max_size=8), st.binary(max_size=8)), max_size=4),
    st.lists(st.tuples(st.binary(max_size=8), st.binary(max_size=8)), max_size=4),
)
def test_distinct_field_sequences_give_distinct_challenges(a, b):
    ca = _challenge(ops=tuple(msg(label, data) for label, data in a))
    cb = _challenge(ops=tuple(msg(label, data) for label, data in b))
    assert (ca == cb) == (a == b)


def test_successive_challenges_differ_and_clone_agrees():
    t = Transcript(b"s", b"c")
    twin = t.clone()
    c1, c2 = t.challenge_scalar(b"x"), t.challenge_scalar(b"x")
    assert c1 != c2
    assert twin.challenge_scalar(b"x") == c1
    assert twin.challenge_scalar(b"x") == c2


def test_rng_does_not_advance_transcript_and_uses_witness_and_os_randomness():
    t = Transcript(b"s", b"c")
    reference = t.clone().challenge_scalar(b"x")
    a = t.rng([1, 2]).scalars(3)
    b = t.rng([1, 2]).scalars(3)
    c = t.rng([1, 3]).scalars(3)
    assert t.challenge_scalar(b"x") == reference  # rng() reads the state, never writes it
    assert a != b  # fresh OS randomness each time
    assert len({*a, *b, *c}) == 9
    assert all(0 < k < ORDER for k in a)
