"""Pedersen commitments: homomorphic, binding to (v, r), one encoding."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from crypto import pedersen
from crypto.generators import G, H
from crypto.group import ORDER, Point, use_backend
from crypto.pedersen import Opening, commit, commit_opening, verify_opening

values = st.integers(min_value=0, max_value=2**64 - 1)
blindings = st.integers(min_value=0, max_value=ORDER - 1)
openings = st.builds(Opening, values, blindings)
small = st.integers(min_value=-(2**20), max_value=2**20)

SETTINGS = settings(max_examples=40, deadline=None)


def test_generators_distinct_and_not_identity():
    g, h = G(), H()
    assert g != h
    assert not g.is_identity() and not h.is_identity()
    assert commit(1, 0) == g
    assert commit(0, 1) == h
    assert commit(0, 0).is_identity()


@SETTINGS
@given(openings, openings)
def test_sum_of_commitments_commits_to_sum(a, b):
    assert commit_opening(a) + commit_opening(b) == commit_opening(a + b)
    assert commit_opening(a) - commit_opening(b) == commit_opening(a - b)
    assert pedersen.add([commit_opening(a), commit_opening(b)]) == commit_opening(a + b)


@SETTINGS
@given(openings, small)
def test_scaling(a, k):
    assert commit_opening(a) * k == commit_opening(a.scale(k))


@SETTINGS
@given(st.lists(openings, max_size=5))
def test_add_many(items):
    total = sum(items, Opening.zero())
    assert pedersen.add([commit_opening(o) for o in items]) == commit_opening(total)


@SETTINGS
@given(openings)
def test_opening_checks(o):
    c = commit_opening(o)
    assert verify_opening(c, o)
    assert not verify_opening(c, Opening(o.value + 1, o.blinding))
    assert not verify_opening(c, Opening(o.value, (o.blinding + 1) % ORDER))
    assert Point.from_bytes(c.to_bytes(), allow_identity=True) == c


@SETTINGS
@given(values, blindings)
def test_values_reduce_mod_order(v, r):
    # commitments live in Z_r: v and v + r commit identically (why amounts need range proofs)
    assert commit(v, r) == commit(v + ORDER, r)
    assert commit(-v, r) == commit(ORDER - v, r)


def test_empty_sum_is_identity():
    assert pedersen.add([]).is_identity()
    assert commit_opening(Opening.zero()).is_identity()
    assert Opening.fresh(5).blinding != Opening.fresh(5).blinding


def test_backends_commit_identically():
    cases = [(0, 0), (0, 1), (1, 0), (2**64 - 1, ORDER - 1), (123456789, 987654321)]
    use_backend("py_ecc")
    try:
        slow = [commit(v, r).to_bytes() for v, r in cases]
    finally:
        use_backend("arkworks")
    assert slow == [commit(v, r).to_bytes() for v, r in cases]
