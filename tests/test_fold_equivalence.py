"""Folded verification (crypto.batch.verify_relations, one MSM) gives the same verdict
as verifying every proof alone (verify_range / verify_zero / verify_opening).

Hypothesis draws a batch - which proofs (64-bit range proofs over m = 1, 2, 16
values, zero (balance) proofs over 1 and 3 points, an opening proof), in which
order, with repeats - and corrupts none, one or two of them anywhere: any
scalar of the proof, any point of the proof (A, S, T1, T2, every L_r and R_r,
every R_i) replaced by another valid point, or a statement point. The batch
must accept exactly when every proof verifies alone, and otherwise name the
first proof that does not. This pins the arithmetic of the folding (unreduced
coefficients, one inversion per batch, s and y^-i by doubling) to the
per-proof verifier on the shapes the ledger uses.
"""

from __future__ import annotations

import dataclasses
import functools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from crypto.batch import BatchFailure, verify_relations
from crypto.bulletproofs import RangeProof, RangeStatement, prove_range, range_relation, verify_range
from crypto.errors import ProofError
from crypto.generators import G, H
from crypto.group import ORDER, Point
from crypto.pedersen import Opening
from crypto.sigma import (
    OpeningProof,
    ZeroProof,
    opening_relation,
    prove_opening,
    prove_zero,
    verify_opening,
    verify_zero,
    zero_relation,
)
from crypto.transcript import Transcript


def _t(context: bytes) -> Transcript:
    return Transcript(b"test/fold-equivalence", context)


@dataclasses.dataclass(frozen=True)
class Case:
    kind: str  # "range" | "zero" | "opening"
    context: bytes
    statement: tuple[Point, ...]
    proof: object


@functools.cache
def pool() -> tuple[Case, ...]:
    """The proofs batches are drawn from (proven once, arkworks)."""
    out = []
    for i, m in enumerate((1, 1, 2, 16)):
        ctx = b"range-%d" % i
        values = [(2**64 - 1) if j == 0 else 12345 * (j + i) for j in range(m)]
        proof, commitments = prove_range(_t(ctx), [Opening.fresh(v) for v in values], 64)
        out.append(Case("range", ctx, tuple(commitments), proof))
    for i, k in enumerate((1, 3)):
        ctx = b"zero-%d" % i
        rhos = [Opening.fresh(0).blinding for _ in range(k)]
        points = [H() * r for r in rhos]
        out.append(Case("zero", ctx, tuple(points), prove_zero(_t(ctx), points, rhos)))
    opening = Opening.fresh(10**9)
    c = G() * opening.value + H() * opening.blinding
    out.append(Case("opening", b"opening", (c,), prove_opening(_t(b"opening"), c, opening)))
    return tuple(out)


_RANGE_SCALARS = ("tau_x", "mu", "t_hat", "a", "b")
_RANGE_POINTS = ("A", "S", "T1", "T2")


def _range_slots(case: Case) -> list:
    rounds = range(case.proof.rounds)
    return [*_RANGE_SCALARS, *_RANGE_POINTS, *(("L", r) for r in rounds), *(("R", r) for r in rounds),
            *(("V", j) for j in range(len(case.statement)))]  # fmt: skip


def field_count(case: Case) -> int:
    """How many distinct fields `corrupted` can change in `case`."""
    if case.kind == "range":
        return len(_range_slots(case))
    return 3 * len(case.statement) if case.kind == "zero" else 4


def corrupted(case: Case, where: int) -> Case:
    """`case` with one of its fields changed; `where` picks the field (any int)."""
    other = H() * 987654321 + G()  # a valid point unrelated to every proof
    p = case.proof
    scalars, points = _RANGE_SCALARS, _RANGE_POINTS
    if case.kind == "range":
        slots = _range_slots(case)
        slot = slots[where % len(slots)]
        if slot in scalars:
            return dataclasses.replace(case, proof=dataclasses.replace(p, **{slot: (getattr(p, slot) + 1) % ORDER}))
        if slot in points:
            return dataclasses.replace(case, proof=dataclasses.replace(p, **{slot: other}))
        name, r = slot
        if name == "V":
            statement = list(case.statement)
            statement[r] = other
            return dataclasses.replace(case, statement=tuple(statement))
        vec = list(getattr(p, name))
        vec[r] = other
        return dataclasses.replace(case, proof=dataclasses.replace(p, **{name: tuple(vec)}))
    if case.kind == "zero":
        k = len(p.R)
        i = where % (3 * k)
        if i < k:
            s = list(p.s)
            s[i] = (s[i] + 1) % ORDER
            return dataclasses.replace(case, proof=ZeroProof(p.R, tuple(s)))
        if i < 2 * k:
            R = list(p.R)
            R[i - k] = other
            return dataclasses.replace(case, proof=ZeroProof(tuple(R), p.s))
        statement = list(case.statement)
        statement[i - 2 * k] = other
        return dataclasses.replace(case, statement=tuple(statement))
    i = where % 4
    if i == 0:
        return dataclasses.replace(case, proof=OpeningProof(p.R, (p.s_v + 1) % ORDER, p.s_r))
    if i == 1:
        return dataclasses.replace(case, proof=OpeningProof(p.R, p.s_v, (p.s_r + 1) % ORDER))
    if i == 2:
        return dataclasses.replace(case, proof=OpeningProof(other, p.s_v, p.s_r))
    return dataclasses.replace(case, statement=(other,))


def relation(case: Case):
    if case.kind == "range":
        return range_relation(RangeStatement(_t(case.context), case.statement, case.proof, 64))
    if case.kind == "zero":
        return zero_relation(_t(case.context), case.statement, case.proof)
    return opening_relation(_t(case.context), case.statement[0], case.proof)


def holds_alone(case: Case) -> bool:
    """The per-proof verifier's verdict (its own MSM, its own transcript)."""
    try:
        if case.kind == "range":
            verify_range(_t(case.context), case.statement, case.proof, 64)
        elif case.kind == "zero":
            verify_zero(_t(case.context), case.statement, case.proof)
        else:
            verify_opening(_t(case.context), case.statement[0], case.proof)
    except ProofError:
        return False
    return True


def folded_verdict(cases: list[Case]) -> int | None:
    """None if the folded batch accepts, else the index it names."""
    try:
        verify_relations([relation(c) for c in cases])
    except BatchFailure as failure:
        return failure.index
    return None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    picks=hs.lists(hs.integers(0, 6), min_size=1, max_size=7),
    faults=hs.lists(hs.tuples(hs.integers(0, 6), hs.integers(0, 10**6)), max_size=2),
)
def test_folded_verification_equals_verifying_each_proof_alone(picks, faults):
    cases = [pool()[i] for i in picks]
    for position, where in faults:
        position %= len(cases)
        cases[position] = corrupted(cases[position], where)
    alone = [holds_alone(c) for c in cases]
    first_bad = next((i for i, ok in enumerate(alone) if not ok), None)
    assert folded_verdict(cases) == first_bad, (picks, faults, alone)


@pytest.mark.parametrize("kind", ["range", "zero", "opening"])
def test_every_field_of_every_kind_is_checked(kind):
    """Exhaustively: each field of one proof of each kind, corrupted in a batch of three, is named."""
    cases = [c for c in pool() if c.kind == kind]
    victim = cases[-1]  # range: the m = 16 proof
    filler = pool()[0]
    for where in range(field_count(victim)):
        bad = corrupted(victim, where)
        assert not holds_alone(bad), (kind, where)
        assert folded_verdict([filler, bad, filler]) == 1, (kind, where)


def test_folded_verification_equals_per_proof_on_py_ecc(py_ecc):
    """The reference backend: a range (m = 2) and a zero proof, honest and with one fault each."""
    encoded = [(c.kind, c.context, tuple(p.to_bytes() for p in c.statement), c.proof.to_bytes())
               for c in (pool()[2], pool()[5])]  # fmt: skip
    cases = []
    for kind, ctx, statement, proof in encoded:  # re-decode on py_ecc
        points = tuple(Point.from_bytes(b) for b in statement)
        decoded = RangeProof.from_bytes(proof) if kind == "range" else ZeroProof.from_bytes(proof)
        cases.append(Case(kind, ctx, points, decoded))
    assert folded_verdict(cases) is None
    assert folded_verdict([cases[0], corrupted(cases[1], 0)]) == 1
    assert folded_verdict([corrupted(cases[0], 4), cases[1]]) == 0  # b
