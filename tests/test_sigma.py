"""Sigma proofs (crypto/sigma.py): completeness, soundness against every
tampered field, strict decoding, and agreement between the two backends."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from crypto.errors import DecodeError, ProofError, ProvingError
from crypto.generators import G, H
from crypto.group import ORDER, Point, use_backend
from crypto.pedersen import Opening, commit_opening
from crypto.sigma import (
    MAX_ZERO_POINTS,
    OPENING_PROOF_BYTES,
    OpeningProof,
    ZeroProof,
    prove_opening,
    prove_zero,
    verify_opening,
    verify_zero,
)
from crypto.transcript import Transcript

STATEMENT = b"test/sigma"
CONTEXT = b'{"lot":"lot_1"}'
values = st.integers(min_value=0, max_value=2**64 - 1)
scalars = st.integers(min_value=0, max_value=ORDER - 1)
SETTINGS = settings(max_examples=25, deadline=None)


def T(statement: bytes = STATEMENT, context: bytes = CONTEXT) -> Transcript:
    return Transcript(statement, context)


# --------------------------------------------------------------------------- opening


@SETTINGS
@given(values, scalars)
@example(0, 0)
@example(0, 1)
@example(2**64 - 1, ORDER - 1)
def test_opening_complete(v, r):
    o = Opening(v, r)
    c = commit_opening(o)
    proof = prove_opening(T(), c, o)
    verify_opening(T(), c, proof)
    decoded = OpeningProof.from_bytes(proof.to_bytes())
    assert decoded == proof
    assert len(proof.to_bytes()) == OPENING_PROOF_BYTES == 112
    verify_opening(T(), c, decoded)


def test_opening_prover_and_verifier_transcripts_stay_in_step():
    o = Opening.fresh(42)
    c = commit_opening(o)
    tp, tv = T(), T()
    proof = prove_opening(tp, c, o)
    verify_opening(tv, c, proof)
    assert tp.challenge_scalar(b"next") == tv.challenge_scalar(b"next")


def test_opening_nonces_are_fresh():
    o = Opening.fresh(42)
    c = commit_opening(o)
    assert prove_opening(T(), c, o).R != prove_opening(T(), c, o).R


def test_opening_tampered_fields_fail():
    o = Opening.fresh(7)
    c = commit_opening(o)
    proof = prove_opening(T(), c, o)
    tampered = [
        dataclasses.replace(proof, R=proof.R + G()),
        dataclasses.replace(proof, R=proof.R + H()),
        dataclasses.replace(proof, R=-proof.R),
        dataclasses.replace(proof, s_v=(proof.s_v + 1) % ORDER),
        dataclasses.replace(proof, s_r=(proof.s_r + 1) % ORDER),
        dataclasses.replace(proof, s_v=proof.s_r, s_r=proof.s_v),
    ]
    for bad in tampered:
        with pytest.raises(ProofError) as info:
            verify_opening(T(), c, bad)
        assert info.value.proof == "opening"


def test_opening_wrong_statement_fails():
    o = Opening.fresh(7)
    c = commit_opening(o)
    proof = prove_opening(T(), c, o)
    for commitment, t in [
        (c + G(), T()),
        (c + H(), T()),
        (commit_opening(Opening(8, o.blinding)), T()),
        (c, T(context=b'{"lot":"lot_2"}')),
        (c, T(statement=b"test/other")),
    ]:
        with pytest.raises(ProofError):
            verify_opening(t, commitment, proof)
    # a transcript that already holds something else
    t = T()
    t.append_u64(b"extra", 1)
    with pytest.raises(ProofError):
        verify_opening(t, c, proof)


def test_opening_every_byte_flip_fails():
    o = Opening.fresh(7)
    c = commit_opening(o)
    data = prove_opening(T(), c, o).to_bytes()
    for i in range(len(data)):
        for bit in (0x01, 0x80):
            bad = bytearray(data)
            bad[i] ^= bit
            with pytest.raises((DecodeError, ProofError)):
                verify_opening(T(), c, OpeningProof.from_bytes(bytes(bad)))


def test_opening_prover_refuses_wrong_opening():
    o = Opening.fresh(7)
    c = commit_opening(o)
    for wrong in (Opening(8, o.blinding), Opening(7, (o.blinding + 1) % ORDER)):
        with pytest.raises(ProvingError):
            prove_opening(T(), c, wrong)


def test_opening_decoding_is_strict():
    o = Opening.fresh(7)
    c = commit_opening(o)
    data = prove_opening(T(), c, o).to_bytes()
    identity = bytes([0xC0]) + bytes(47)
    for bad in (
        data[:-1],
        data + b"\x00",
        b"",
        identity + data[48:],  # R = identity
        data[:48] + ORDER.to_bytes(32, "big") + data[80:],  # s_v not canonical
        data[:80] + (2**256 - 1).to_bytes(32, "big"),  # s_r not canonical
    ):
        with pytest.raises(DecodeError):
            OpeningProof.from_bytes(bad)
    # built in memory with an identity R: the verifier still refuses it
    proof = OpeningProof(Point.identity(), 0, 0)
    with pytest.raises(ProofError):
        verify_opening(T(), Point.identity(), proof)
    with pytest.raises(ValueError):
        OpeningProof(G(), ORDER, 0)


# --------------------------------------------------------------------------- zero


def _zero_statement(rhos):
    h = H()
    return [h * rho for rho in rhos]


@SETTINGS
@given(st.lists(scalars, min_size=1, max_size=5))
@example([0])
@example([0, 0, 0])
@example([1, 0, ORDER - 1])
def test_zero_complete(rhos):
    points = _zero_statement(rhos)
    proof = prove_zero(T(), points, rhos)
    verify_zero(T(), points, proof)
    data = proof.to_bytes()
    assert len(data) == 4 + 80 * len(rhos)
    decoded = ZeroProof.from_bytes(data)
    assert decoded == proof
    verify_zero(T(), points, decoded)


def test_zero_balance_of_commitments():
    """The use case: inputs - outputs - loss, per value slot, commits to 0."""
    a, b = Opening.fresh(100), Opening.fresh(30)
    loss = Opening.fresh(70)
    d = commit_opening(a) - commit_opening(b) - commit_opening(loss)
    rho = (a - b - loss)
    assert rho.value == 0
    proof = prove_zero(T(), [d, Point.identity()], [rho.blinding, 0])
    verify_zero(T(), [d, Point.identity()], proof)
    # a loss one gram too small: D commits to 1, and the prover refuses
    short = Opening(69, loss.blinding)
    d_bad = commit_opening(a) - commit_opening(b) - commit_opening(short)
    with pytest.raises(ProvingError):
        prove_zero(T(), [d_bad], [rho.blinding])


def test_zero_tampered_fields_fail():
    rhos = [11, 0, 13]
    points = _zero_statement(rhos)
    proof = prove_zero(T(), points, rhos)
    tampered = []
    for i in range(3):
        R = list(proof.R)
        R[i] = R[i] + H()
        tampered.append(dataclasses.replace(proof, R=tuple(R)))
        R = list(proof.R)
        R[i] = R[i] + G()
        tampered.append(dataclasses.replace(proof, R=tuple(R)))
        s = list(proof.s)
        s[i] = (s[i] + 1) % ORDER
        tampered.append(dataclasses.replace(proof, s=tuple(s)))
    tampered.append(dataclasses.replace(proof, R=proof.R[::-1]))
    tampered.append(dataclasses.replace(proof, s=proof.s[::-1]))
    for bad in tampered:
        with pytest.raises(ProofError) as info:
            verify_zero(T(), points, bad)
        assert info.value.proof == "balance"


def test_zero_wrong_statement_fails():
    rhos = [11, 0, 13]
    points = _zero_statement(rhos)
    proof = prove_zero(T(), points, rhos)
    bad_statements = []
    for i in range(3):
        p = list(points)
        p[i] = p[i] + G()  # commits to 1, not 0
        bad_statements.append((p, T()))
    bad_statements += [
        (points[::-1], T()),
        (points[:2], T()),
        (points + [Point.identity()], T()),
        (points, T(context=b"other")),
        (points, T(statement=b"test/other")),
    ]
    for p, t in bad_statements:
        with pytest.raises(ProofError):
            verify_zero(t, p, proof)


def test_zero_nonzero_point_cannot_be_proven():
    g, h = G(), H()
    with pytest.raises(ProvingError):
        prove_zero(T(), [g + h * 5], [5])
    with pytest.raises(ProvingError):
        prove_zero(T(), [h * 5], [6])
    with pytest.raises(ProvingError):
        prove_zero(T(), [h * 5, h], [5])
    with pytest.raises(ProvingError):
        prove_zero(T(), [], [])


def test_zero_decoding_is_strict():
    rhos = [3, 4]
    points = _zero_statement(rhos)
    data = prove_zero(T(), points, rhos).to_bytes()
    identity = bytes([0xC0]) + bytes(47)
    for bad in (
        b"",
        data[:3],
        data[:-1],
        data + bytes(1),
        (1).to_bytes(4, "big") + data[4:],  # count says 1, bytes hold 2
        (3).to_bytes(4, "big") + data[4:],
        (0).to_bytes(4, "big"),
        (MAX_ZERO_POINTS + 1).to_bytes(4, "big") + bytes(80 * (MAX_ZERO_POINTS + 1)),
        data[:4] + identity + data[52:],  # R_0 = identity
        data[:-32] + ORDER.to_bytes(32, "big"),  # s_1 not canonical
    ):
        with pytest.raises(DecodeError):
            ZeroProof.from_bytes(bad)
    # built in memory with an identity R_i: the verifier still refuses it
    proof = ZeroProof((Point.identity(),), (0,))
    with pytest.raises(ProofError):
        verify_zero(T(), [Point.identity()], proof)


def test_zero_every_byte_flip_fails():
    rhos = [3, 0]
    points = _zero_statement(rhos)
    data = prove_zero(T(), points, rhos).to_bytes()
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x01 if i % 2 else 0x80
        with pytest.raises((DecodeError, ProofError)):
            verify_zero(T(), points, ZeroProof.from_bytes(bytes(bad)))


# --------------------------------------------------------------------------- backends


def test_cross_backend(py_ecc):
    """Proofs made on one backend verify on the other (via their bytes)."""
    # made on py_ecc, verified on arkworks
    o = Opening(5, 77)
    c = commit_opening(o)
    opening_bytes = prove_opening(T(), c, o).to_bytes()
    zero_points = _zero_statement([9, 0])
    zero_bytes = prove_zero(T(), zero_points, [9, 0]).to_bytes()
    c_bytes, z_bytes = c.to_bytes(), [p.to_bytes() for p in zero_points]
    verify_opening(T(), c, OpeningProof.from_bytes(opening_bytes))

    use_backend("arkworks")
    verify_opening(T(), Point.from_bytes(c_bytes), OpeningProof.from_bytes(opening_bytes))
    zp = [Point.from_bytes(b, allow_identity=True) for b in z_bytes]
    verify_zero(T(), zp, ZeroProof.from_bytes(zero_bytes))
    # made on arkworks, verified on py_ecc
    opening_bytes2 = prove_opening(T(), Point.from_bytes(c_bytes), o).to_bytes()
    zero_bytes2 = prove_zero(T(), zp, [9, 0]).to_bytes()

    use_backend("py_ecc")
    cp = Point.from_bytes(c_bytes)
    verify_opening(T(), cp, OpeningProof.from_bytes(opening_bytes2))
    zp = [Point.from_bytes(b, allow_identity=True) for b in z_bytes]
    verify_zero(T(), zp, ZeroProof.from_bytes(zero_bytes2))
    with pytest.raises(ProofError):
        verify_zero(T(context=b"other"), zp, ZeroProof.from_bytes(zero_bytes2))
