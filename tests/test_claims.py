"""Claim proofs (crypto/claims.py): in range, share at most / at least,
non-negative. Completeness, soundness (tampering, other parameters, other
contexts), prover refusal of false claims, and batching."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from crypto.bulletproofs import RangeProof, batch_verify_range, prove_range, verify_range
from crypto.claims import (
    in_range_batch_statement,
    nonnegative_batch_statement,
    prove_in_range,
    prove_nonnegative,
    prove_share,
    range_statement,
    share_batch_statement,
    share_statement,
    verify_in_range,
    verify_nonnegative,
    verify_share,
)
from crypto.errors import ProofError, ProvingError
from crypto.generators import G, H
from crypto.group import ORDER, Point
from crypto.pedersen import Opening, commit, commit_opening
from crypto.transcript import Transcript

MAX = 2**64 - 1
STATEMENT = b"test/claim"
CONTEXT = b'{"claim":"clm_1"}'
SETTINGS = settings(max_examples=6, deadline=None)
amounts = st.integers(min_value=0, max_value=MAX)


def T(statement: bytes = STATEMENT, context: bytes = CONTEXT) -> Transcript:
    return Transcript(statement, context)


def tampered_proofs(proof: RangeProof) -> list[tuple[str, RangeProof]]:
    """One altered copy of `proof` per field (points moved by G, scalars by +1)."""
    out = []
    for f in dataclasses.fields(proof):
        value = getattr(proof, f.name)
        if isinstance(value, Point):
            out.append((f.name, dataclasses.replace(proof, **{f.name: value + G()})))
        elif isinstance(value, int):
            out.append((f.name, dataclasses.replace(proof, **{f.name: (value + 1) % ORDER})))
        else:
            for i in range(len(value)):
                items = list(value)
                items[i] = items[i] + G()
                out.append((f"{f.name}[{i}]", dataclasses.replace(proof, **{f.name: tuple(items)})))
    return out


# --------------------------------------------------------------------------- statements


def test_statement_points():
    o = Opening(50, 1234)
    c = commit_opening(o)
    low_pt, high_pt = range_statement(c, 10, 60)
    assert low_pt == commit(40, 1234)
    assert high_pt == commit(10, ORDER - 1234)
    cs = [commit(10, 1), commit(20, 2), commit(70, 3)]
    # at most: p*sum - q*c_i ; at least: the negation
    assert share_statement(cs, 0, 1, 4, False) == commit(100 - 4 * 10, 6 - 4)
    assert share_statement(cs, 0, 1, 4, True) == commit(4 * 10 - 100, 4 - 6)


# --------------------------------------------------------------------------- in range


@st.composite
def in_range_cases(draw):
    v = draw(amounts)
    low = draw(st.integers(min_value=0, max_value=v))
    high = draw(st.integers(min_value=v, max_value=MAX))
    return low, v, high


@SETTINGS
@given(in_range_cases(), st.integers(min_value=0, max_value=ORDER - 1))
@example((0, 0, 0), 0)
@example((0, 0, MAX), 5)
@example((MAX, MAX, MAX), 5)
@example((0, MAX, MAX), ORDER - 1)
def test_in_range_complete(case, r):
    low, v, high = case
    o = Opening(v, r)
    c = commit_opening(o)
    proof = prove_in_range(T(), c, o, low, high)
    verify_in_range(T(), c, low, high, RangeProof.from_bytes(proof.to_bytes()))


@pytest.fixture(scope="module")
def in_range_proof():
    o = Opening.fresh(500)
    c = commit_opening(o)
    return o, c, prove_in_range(T(), c, o, 100, 1000)


def test_in_range_other_bounds_fail(in_range_proof):
    o, c, proof = in_range_proof
    for low, high in [(100, 999), (101, 1000), (99, 1000), (100, 1001), (0, MAX), (500, 500)]:
        with pytest.raises(ProofError):
            verify_in_range(T(), c, low, high, proof)


def test_in_range_other_commitment_or_context_fails(in_range_proof):
    o, c, proof = in_range_proof
    for commitment, t in [
        (c + G(), T()),
        (c + H(), T()),
        (c, T(context=b'{"claim":"clm_2"}')),
        (c, T(statement=b"test/other")),
    ]:
        with pytest.raises(ProofError):
            verify_in_range(t, commitment, 100, 1000, proof)


def test_in_range_tampered_fields_fail(in_range_proof):
    o, c, proof = in_range_proof
    cases = tampered_proofs(proof)
    assert len(cases) == 4 + 3 + 2 * 7 + 2  # m = 2, n = 64: 7 inner-product rounds
    for name, bad in cases:
        with pytest.raises(ProofError):
            verify_in_range(T(), c, 100, 1000, bad)
            pytest.fail(f"tampered {name} verified")


def test_in_range_binds_claim_before_range_proof(in_range_proof):
    """The bare range proof on the statement points does not verify: the claim
    parameters were absorbed first."""
    o, c, proof = in_range_proof
    with pytest.raises(ProofError):
        verify_range(T(), range_statement(c, 100, 1000), proof, 64)


def test_in_range_prover_refuses_false_claims():
    o = Opening.fresh(500)
    c = commit_opening(o)
    for low, high in [(501, 1000), (0, 499), (0, 0)]:
        with pytest.raises(ProvingError):
            prove_in_range(T(), c, o, low, high)
    for low, high in [(10, 5), (-1, 1000), (0, 2**64), (True, 1000), (0, 1000.0)]:
        with pytest.raises(ProvingError):
            prove_in_range(T(), c, o, low, high)
        with pytest.raises(ProofError):
            verify_in_range(T(), c, low, high, None)  # type: ignore[arg-type]
    with pytest.raises(ProvingError):  # wrong opening
        prove_in_range(T(), c, Opening(500, (o.blinding + 1) % ORDER), 0, 1000)


# --------------------------------------------------------------------------- share


@st.composite
def share_cases(draw):
    vs = draw(st.lists(st.integers(min_value=0, max_value=2**40), min_size=1, max_size=3))
    index = draw(st.integers(min_value=0, max_value=len(vs) - 1))
    q = draw(st.integers(min_value=1, max_value=2**16 - 1))
    p = draw(st.integers(min_value=0, max_value=q))
    at_least = draw(st.booleans())
    holds = q * vs[index] >= p * sum(vs) if at_least else q * vs[index] <= p * sum(vs)
    assume(holds and sum(vs) > 0)
    return vs, index, p, q, at_least


@SETTINGS
@given(share_cases())
@example(([0, MAX, 0], 1, 1, 1, True))
@example(([MAX], 0, 1, 1, False))
@example(([MAX - 1, 1], 1, 1, 2**16 - 1, False))
def test_share_complete(case):
    vs, index, p, q, at_least = case
    ops = [Opening.fresh(v) for v in vs]
    cs = [commit_opening(o) for o in ops]
    proof = prove_share(T(), cs, ops, index, p, q, at_least)
    verify_share(T(), cs, index, p, q, at_least, RangeProof.from_bytes(proof.to_bytes()))


def test_share_of_an_empty_total_is_refused_and_cannot_be_forged():
    # 0 >= 16/100 * 0 holds vacuously; a share of nothing must prove nothing.
    ops = [Opening.fresh(0), Opening.fresh(0)]
    cs = [commit_opening(o) for o in ops]
    with pytest.raises(ProvingError, match="sum to zero"):
        prove_share(T(), cs, ops, 1, 16, 100, True)
    # The inequality alone (a 1-value proof on share_statement) does not pass as a share proof.
    inequality_only, _ = prove_range(T(), [Opening.zero() - (ops[0] + ops[1]).scale(16) + ops[1].scale(100)])
    with pytest.raises(ProofError):
        verify_share(T(), cs, 1, 16, 100, True, inequality_only)


@pytest.fixture(scope="module")
def share_proof():
    # recycled (index 2) = 20 of 100: share >= 16/100 holds
    ops = [Opening.fresh(60), Opening.fresh(20), Opening.fresh(20)]
    cs = [commit_opening(o) for o in ops]
    return ops, cs, prove_share(T(), cs, ops, 2, 16, 100, True)


def test_share_other_ratio_fails(share_proof):
    ops, cs, proof = share_proof
    verify_share(T(), cs, 2, 16, 100, True, proof)
    for index, p, q, at_least in [
        (2, 17, 100, True),
        (2, 16, 99, True),
        (2, 32, 200, True),  # the same ratio, other parameters
        (2, 15, 100, True),  # weaker, still a different claim
        (1, 16, 100, True),  # other index (same value!)
        (2, 16, 100, False),  # other direction
    ]:
        with pytest.raises(ProofError):
            verify_share(T(), cs, index, p, q, at_least, proof)


def test_share_other_commitments_or_context_fails(share_proof):
    ops, cs, proof = share_proof
    for commitments, t in [
        ([cs[0] + G(), cs[1], cs[2]], T()),
        ([cs[0], cs[1], cs[2] + G()], T()),
        ([cs[1], cs[0], cs[2]], T()),
        (cs + [Point.identity()], T()),
        (cs, T(context=b"other")),
    ]:
        with pytest.raises(ProofError):
            verify_share(t, commitments, 2, 16, 100, True, proof)


def test_share_tampered_fields_fail(share_proof):
    ops, cs, proof = share_proof
    cases = tampered_proofs(proof)
    assert len(cases) == 4 + 3 + 2 * 7 + 2  # m = 2: 7 rounds
    for name, bad in cases:
        with pytest.raises(ProofError):
            verify_share(T(), cs, 2, 16, 100, True, bad)
            pytest.fail(f"tampered {name} verified")


def test_share_parameters_are_bound_even_when_the_statement_point_is_equal():
    """With C_1 = identity, p*sum(C) - q*C_1 = p*C_0 for every q: the range
    statement is the same point, only the transcript tells q = 2 from q = 3."""
    ops = [Opening.fresh(10), Opening.zero()]
    cs = [commit_opening(o) for o in ops]
    assert cs[1].is_identity()
    assert share_statement(cs, 1, 1, 2, False) == share_statement(cs, 1, 1, 3, False)
    proof = prove_share(T(), cs, ops, 1, 1, 2, False)
    verify_share(T(), cs, 1, 1, 2, False, proof)
    with pytest.raises(ProofError):
        verify_share(T(), cs, 1, 1, 3, False, proof)
    # equal commitments: index 0 and index 1 give the same statement point
    o = Opening.fresh(5)
    same = [commit_opening(o), commit_opening(o)]
    proof = prove_share(T(), same, [o, o], 0, 1, 2, False)
    with pytest.raises(ProofError):
        verify_share(T(), same, 1, 1, 2, False, proof)


def test_share_prover_refuses_false_claims():
    ops = [Opening.fresh(60), Opening.fresh(20), Opening.fresh(20)]
    cs = [commit_opening(o) for o in ops]
    for index, p, q, at_least in [
        (2, 21, 100, True),  # 20 % >= 21 %: false
        (2, 19, 100, False),  # 20 % <= 19 %: false
        (0, 0, 1, False),  # 60 % <= 0 %
        (1, 1, 1, True),  # 20 % >= 100 %
    ]:
        with pytest.raises(ProvingError):
            prove_share(T(), cs, ops, index, p, q, at_least)


def test_share_parameter_validation():
    ops = [Opening.fresh(60), Opening.fresh(40)]
    cs = [commit_opening(o) for o in ops]
    bad = [
        (0, 1, 0, False),  # q = 0
        (0, 2, 1, False),  # p > q
        (0, -1, 2, False),
        (0, 1, 2**16, False),  # q too large
        (2, 1, 2, False),  # index out of range
        (-1, 1, 2, False),
        (0, True, 2, False),  # bool is not an int here
        (0, 1.0, 2, False),
        (0, 1, 2, 1),  # direction must be a bool
    ]
    for index, p, q, at_least in bad:
        with pytest.raises(ProvingError):
            prove_share(T(), cs, ops, index, p, q, at_least)
        with pytest.raises(ProofError):
            verify_share(T(), cs, index, p, q, at_least, None)  # type: ignore[arg-type]
    with pytest.raises(ProvingError):
        prove_share(T(), [], [], 0, 1, 2, False)
    with pytest.raises(ProvingError):  # openings do not match
        prove_share(T(), cs, ops[::-1], 0, 1, 2, False)
    with pytest.raises(ProvingError):  # count mismatch
        prove_share(T(), cs, ops[:1], 0, 1, 2, False)
    with pytest.raises(ProvingError):  # a value outside [0, 2^64)
        big = [Opening(2**64, 1), Opening(1, 1)]
        prove_share(T(), [commit_opening(o) for o in big], big, 1, 1, 2, False)
    with pytest.raises(ProvingError):  # true, but p*sum(v) - q*v_i >= 2^64
        huge = [Opening(MAX, 1), Opening(MAX, 2)]
        prove_share(T(), [commit_opening(o) for o in huge], huge, 0, 2**16 - 1, 2**16 - 1, False)


# --------------------------------------------------------------------------- non-negative


@SETTINGS
@given(amounts)
@example(0)
@example(MAX)
def test_nonnegative_complete(v):
    o = Opening.fresh(v)
    c = commit_opening(o)
    proof = prove_nonnegative(T(), c, o)
    verify_nonnegative(T(), c, RangeProof.from_bytes(proof.to_bytes()))


def test_nonnegative_capacity_use():
    capacity, cumulative = Opening.fresh(1000), Opening.fresh(400) + Opening.fresh(600)
    headroom = capacity - cumulative
    c = commit_opening(capacity) - commit_opening(cumulative)
    proof = prove_nonnegative(T(), c, headroom)
    verify_nonnegative(T(), c, proof)
    over = capacity - (cumulative + Opening.fresh(1))
    with pytest.raises(ProvingError):
        prove_nonnegative(T(), commit_opening(over), over)
    for commitment, t in [(c - G(), T()), (c, T(context=b"other"))]:
        with pytest.raises(ProofError):
            verify_nonnegative(t, commitment, proof)
    with pytest.raises(ProofError):  # bound to the claim domain, not a bare range proof
        verify_range(T(), [c], proof, 64)
    for name, bad in tampered_proofs(proof):
        with pytest.raises(ProofError):
            verify_nonnegative(T(), c, bad)
            pytest.fail(f"tampered {name} verified")


def test_claim_proofs_are_not_interchangeable():
    """A non-negative proof on D is not a share proof whose statement point is D."""
    ops = [Opening.fresh(30), Opening.fresh(70)]
    cs = [commit_opening(o) for o in ops]
    d = share_statement(cs, 0, 1, 2, False)
    diff = Opening.zero() + ops[0].scale(1) + ops[1].scale(1) - ops[0].scale(2)
    nn = prove_nonnegative(T(), d, diff)
    verify_nonnegative(T(), d, nn)
    with pytest.raises(ProofError):
        verify_share(T(), cs, 0, 1, 2, False, nn)


# --------------------------------------------------------------------------- batching


def test_batch_statements():
    o = Opening.fresh(500)
    c = commit_opening(o)
    ops = [Opening.fresh(60), Opening.fresh(40)]
    cs = [commit_opening(x) for x in ops]
    in_range = prove_in_range(T(), c, o, 100, 1000)
    share = prove_share(T(), cs, ops, 1, 1, 2, False)
    nn = prove_nonnegative(T(), c, o)
    good = [
        in_range_batch_statement(T(), c, 100, 1000, in_range),
        share_batch_statement(T(), cs, 1, 1, 2, False, share),
        nonnegative_batch_statement(T(), c, nn),
    ]
    batch_verify_range(good)
    bad = [*good[:2], share_batch_statement(T(), cs, 1, 1, 3, False, share)]
    with pytest.raises(ProofError):
        batch_verify_range(bad)
    with pytest.raises(ProofError):
        in_range_batch_statement(T(), c, 1000, 100, in_range)


# --------------------------------------------------------------------------- share in range (protocol v2)


def _split(inside: int, rest: int) -> tuple[list[Point], list[Opening]]:
    openings = [Opening.fresh(inside), Opening.fresh(rest)]
    return [commit_opening(o) for o in openings], openings


@pytest.mark.parametrize(
    ("inside", "rest", "p", "p_max", "holds"),
    [
        (165, 835, 160, 169, True),  # 16.5 %: inside 16.0-16.9 %
        (160, 840, 160, 169, True),  # exactly the lower bound
        (169, 831, 160, 169, True),  # exactly the upper bound
        (159, 841, 160, 169, False),  # 0.1 point below
        (170, 830, 160, 169, False),  # 0.1 point above
        (0, 1000, 0, 0, True),
        (1000, 0, 1000, 1000, True),
    ],
)
def test_share_in_range_is_exact_at_both_bounds(inside, rest, p, p_max, holds):
    from crypto.claims import prove_share_in_range, verify_share_in_range

    points, openings = _split(inside, rest)
    if not holds:
        with pytest.raises(ProvingError, match="the claim is false"):
            prove_share_in_range(T(), points, openings, 0, p, p_max, 1000)
        return
    proof = prove_share_in_range(T(), points, openings, 0, p, p_max, 1000)
    verify_share_in_range(T(), points, 0, p, p_max, 1000, proof)
    for other in ((p + 1, max(p + 1, p_max)), (p, p_max + 1) if p_max < 1000 else (p - 1, p_max)):
        if other[0] > other[1] or other[0] < 0:
            continue
        with pytest.raises(ProofError):  # the bounds are bound in the transcript
            verify_share_in_range(T(), points, 0, other[0], other[1], 1000, proof)


def test_share_in_range_refuses_bad_parameters_and_empty_totals():
    from crypto.claims import prove_share_in_range, share_in_range_batch_statement

    points, openings = _split(5, 5)
    for p, p_max, q in ((6, 5, 10), (1, 11, 10), (0, 0, 0)):
        with pytest.raises(ProvingError):
            prove_share_in_range(T(), points, openings, 0, p, p_max, q)
    proof = prove_share_in_range(T(), points, openings, 0, 4, 6, 10)
    with pytest.raises(ProofError, match="p <= p_max"):
        share_in_range_batch_statement(T(), points, 0, 7, 6, 10, proof)
    empty, zero = _split(0, 0)
    with pytest.raises(ProvingError, match="sum to zero"):
        prove_share_in_range(T(), empty, zero, 0, 0, 10, 10)


def _share_prover(claim: str):
    """The prover of `claim`, on index 0 with bounds that hold for 5 of 10."""
    from crypto.claims import prove_share_in_range

    if claim == "share":
        return lambda cs, ops: prove_share(T(), cs, ops, 0, 6, 10, False)
    return lambda cs, ops: prove_share_in_range(T(), cs, ops, 0, 4, 6, 10)


@pytest.mark.parametrize("claim", ["share", "share-in-range"])
@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("one opening short", "{claim} claim: 2 commitments but 1 openings"),
        ("one opening too many", "{claim} claim: 2 commitments but 3 openings"),
        ("value 2^64", "{claim} claim: value 1 is outside [0, 2^64)"),
        ("value -1", "{claim} claim: value 0 is outside [0, 2^64)"),
        ("opening of another commitment", "the opening does not open commitment 1"),
        ("other blinding", "the opening does not open commitment 0"),
        ("commitment not a Point", "commitment 0 must be a Point"),
        ("all zero", "{claim} claim: the values sum to zero, so no share can be shown"),
    ],
)
def test_share_provers_refuse_bad_openings_alike(claim, case, message):
    """Both share provers check their openings alike (crypto.claims._share_total), the
    count, range and sum refusals naming their own claim, before any proof is made."""
    cs, ops = _split(5, 5)
    if case == "one opening short":
        ops = ops[:1]
    elif case == "one opening too many":
        ops = [*ops, Opening.fresh(1)]
    elif case == "value 2^64":
        ops[1] = Opening(2**64, ops[1].blinding)
        cs[1] = commit_opening(ops[1])
    elif case == "value -1":
        ops[0] = Opening(-1, ops[0].blinding)
        cs[0] = commit_opening(ops[0])
    elif case == "opening of another commitment":
        cs[1] = commit_opening(Opening.fresh(5))
    elif case == "other blinding":
        ops[0] = Opening(5, (ops[0].blinding + 1) % ORDER)
    elif case == "commitment not a Point":
        cs[0] = cs[0].to_bytes()
    else:
        cs, ops = _split(0, 0)
    with pytest.raises(ProvingError) as refused:
        _share_prover(claim)(cs, ops)
    assert str(refused.value) == message.format(claim=claim)
