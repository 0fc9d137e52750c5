"""Aggregated Bulletproofs range proofs: completeness, soundness, encoding,
cross-backend agreement and batch verification (crypto/bulletproofs.py)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from crypto import bulletproofs as bp
from crypto.bulletproofs import (
    MAX_AGGREGATION,
    RANGE_BITS,
    RangeProof,
    RangeStatement,
    batch_verify_range,
    prove_range,
    verify_range,
)
from crypto.errors import DecodeError, ProofError, ProvingError
from crypto.generators import G, H
from crypto.group import ORDER, Point, use_backend
from crypto.pedersen import Opening, commit
from crypto.transcript import Transcript

STATEMENT = b"test/range"
CONTEXT = b"lot:0001|signer:alice|net:test"
U64_MAX = 2**64 - 1
# BLS12-381 base field modulus (for building off-curve / off-subgroup encodings).
FIELD_P = int(
    "1a0111ea397fe69a4b1ba7b6434bacd764774b84f38512bf6730d2a0f6b0f6241eabfffeb153ffffb9feffffffffaaab", 16
)


def tr(context: bytes = CONTEXT, statement: bytes = STATEMENT) -> Transcript:
    return Transcript(statement, context)


def prove(values, n=64, context=CONTEXT):
    openings = [Opening.fresh(v) for v in values]
    proof, commitments = prove_range(tr(context), openings, n)
    return proof, commitments, openings


@pytest.fixture(scope="module")
def single():
    """One honest 64-bit proof (m = 1), shared by the tampering tests."""
    return prove([123_456_789])


@pytest.fixture(scope="module")
def pair():
    return prove([0, U64_MAX])


# ---------------------------------------------------------------------------
# completeness
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("m", [1, 2, 4])
def test_completeness_arkworks(m):
    values = [U64_MAX, 0, 1, 2**63][:m]
    proof, commitments, openings = prove(values)
    assert commitments == [commit(o.value, o.blinding) for o in openings]
    assert proof.rounds == (64 * m).bit_length() - 1
    data = proof.to_bytes()
    assert len(data) == RangeProof.size(64, m) == (2 * proof.rounds + 4) * 48 + 5 * 32
    decoded = RangeProof.from_bytes(data, n=64, m=m)
    assert decoded == proof and decoded.to_bytes() == data
    verify_range(tr(), commitments, decoded)


def test_completeness_m16():
    values = [0, 1, U64_MAX, 2**32, *range(1000, 1012)]
    proof, commitments, _ = prove(values)
    assert len(proof.to_bytes()) == 1312  # (2*10 + 4) * 48 + 160
    verify_range(tr(), commitments, proof)


@pytest.mark.parametrize("n", [8, 16, 32])
def test_completeness_small_n(n):
    values = [0, 2**n - 1, 2 ** (n - 1)]
    proof, commitments, _ = prove(values, n=n)
    assert proof.rounds == (n * 4).bit_length() - 1  # 3 values padded to m = 4
    verify_range(tr(), commitments, proof, n=n)


@pytest.mark.parametrize("m", [1, 2])
def test_completeness_py_ecc(py_ecc, m):
    # n = 8 keeps the pure-Python backend to ~1 s per case; n = 64 on py_ecc is
    # covered by test_cross_backend.
    values = [255, 0][:m]
    proof, commitments, _ = prove(values, n=8)
    verify_range(tr(), commitments, proof, n=8)
    data = proof.to_bytes()
    encoded_commitments = [c.to_bytes() for c in commitments]
    # ... and the same bytes verify on arkworks.
    use_backend("arkworks")
    verify_range(
        tr(),
        [Point.from_bytes(c, allow_identity=True) for c in encoded_commitments],
        RangeProof.from_bytes(data),
        n=8,
    )


def test_cross_backend(single, py_ecc):
    proof, commitments, _ = single
    data = proof.to_bytes()
    decoded = RangeProof.from_bytes(data)  # decoded with py_ecc (subgroup-checked)
    assert decoded.to_bytes() == data
    decoded_commitments = [Point.from_bytes(c.to_bytes()) for c in commitments]
    verify_range(tr(), decoded_commitments, decoded)
    with pytest.raises(ProofError):
        verify_range(tr(b"other"), decoded_commitments, decoded)


@settings(max_examples=12, deadline=None)
@given(values=st.lists(st.integers(min_value=0, max_value=U64_MAX), min_size=1, max_size=4))
@example(values=[0])
@example(values=[U64_MAX])
@example(values=[0, U64_MAX, 1])  # 3 values: padded to m = 4
def test_property_completeness(values):
    proof, commitments, _ = prove(values)
    assert len(commitments) == len(values)
    m = 1 << (len(values) - 1).bit_length()
    assert proof.rounds == (64 * m).bit_length() - 1
    verify_range(tr(), commitments, RangeProof.from_bytes(proof.to_bytes(), n=64, m=len(values)))


@settings(max_examples=10, deadline=None)
@given(
    values=st.lists(st.integers(min_value=0, max_value=U64_MAX), min_size=1, max_size=3),
    delta=st.integers(min_value=1, max_value=2**70),
    which=st.integers(min_value=0, max_value=2),
)
def test_property_wrong_value_rejected(values, delta, which):
    proof, commitments, _ = prove(values)
    which %= len(values)
    shifted = list(commitments)
    shifted[which] = shifted[which] + G() * delta  # commits to v + delta, same blinding
    with pytest.raises(ProofError):
        verify_range(tr(), shifted, proof)


def test_padding_is_part_of_the_statement():
    proof, commitments, _ = prove([5, 6, 7])
    verify_range(tr(), commitments, proof)
    # Supplying the padding explicitly is a different statement (4 values).
    with pytest.raises(ProofError):
        verify_range(tr(), [*commitments, Point.identity()], proof)


def test_identity_commitment_allowed():
    # A missing origin class is amount 0 with blinding 0: the identity.
    proof, commitments = prove_range(tr(), [Opening(0, 0), Opening(9, 77)])
    assert commitments[0].is_identity()
    verify_range(tr(), commitments, proof)


def test_transcripts_end_in_the_same_state():
    t_prover, t_verifier = tr(), tr()
    proof, commitments = prove_range(t_prover, [Opening.fresh(42)])
    verify_range(t_verifier, commitments, proof)
    assert t_prover.challenge_scalar(b"next") == t_verifier.challenge_scalar(b"next")


def test_nonces_are_fresh():
    opening = Opening.fresh(42)
    p1, _ = prove_range(tr(), [opening])
    p2, _ = prove_range(tr(), [opening])
    assert p1.A != p2.A and p1.S != p2.S and p1.T1 != p2.T1


# ---------------------------------------------------------------------------
# prover input checks
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "n"),
    [
        ([2**64], 64),
        ([-1], 64),
        ([0, 2**64 + 5], 64),
        ([256], 8),
        ([2**32], 32),
        ([ORDER - 1], 64),
    ],
)
def test_prove_rejects_out_of_range(values, n):
    with pytest.raises(ProvingError):
        prove_range(tr(), [Opening.fresh(v) for v in values], n)


@pytest.mark.parametrize("n", [0, 1, 7, 12, 24, 63, 65, 128, 256, 64.0, "64", None])
def test_prove_rejects_bad_n(n):
    with pytest.raises(ProvingError):
        prove_range(tr(), [Opening.fresh(1)], n)


def test_prove_rejects_bad_counts_and_types():
    with pytest.raises(ProvingError):
        prove_range(tr(), [], 64)
    with pytest.raises(ProvingError):
        prove_range(tr(), [Opening.fresh(1)] * (MAX_AGGREGATION + 1), 8)
    with pytest.raises(ProvingError):
        prove_range(tr(), [Opening(True, 5)], 64)
    with pytest.raises(ProvingError):
        prove_range(tr(), [Opening(1.0, 5)], 64)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# soundness: tampering, wrong statements, forgeries
# ---------------------------------------------------------------------------

POINT_FIELDS = ["A", "S", "T1", "T2"]
SCALAR_FIELDS = ["tau_x", "mu", "t_hat", "a", "b"]


@pytest.mark.parametrize("field", POINT_FIELDS)
def test_tampered_point_rejected(single, field):
    proof, commitments, _ = single
    other = getattr(proof, field) + G()
    with pytest.raises(ProofError):
        verify_range(tr(), commitments, dataclasses.replace(proof, **{field: other}))


@pytest.mark.parametrize("field", SCALAR_FIELDS)
def test_tampered_scalar_rejected(single, field):
    proof, commitments, _ = single
    bumped = (getattr(proof, field) + 1) % ORDER
    with pytest.raises(ProofError):
        verify_range(tr(), commitments, dataclasses.replace(proof, **{field: bumped}))


def test_tampered_rounds_rejected(single):
    proof, commitments, _ = single
    for side in ("L", "R"):
        points = getattr(proof, side)
        for i in range(len(points)):
            changed = list(points)
            changed[i] = changed[i] + H()
            with pytest.raises(ProofError):
                verify_range(tr(), commitments, dataclasses.replace(proof, **{side: tuple(changed)}))
    # swapping L and R, or reordering the rounds, must fail too
    with pytest.raises(ProofError):
        verify_range(tr(), commitments, dataclasses.replace(proof, L=proof.R, R=proof.L))
    with pytest.raises(ProofError):
        verify_range(tr(), commitments, dataclasses.replace(proof, L=proof.L[::-1], R=proof.R[::-1]))
    # dropping or adding a round is a structural error
    with pytest.raises(ProofError, match="rounds"):
        verify_range(tr(), commitments, dataclasses.replace(proof, L=proof.L[:-1], R=proof.R[:-1]))
    with pytest.raises(ProofError, match="rounds"):
        verify_range(tr(), commitments, dataclasses.replace(proof, L=(*proof.L, G()), R=(*proof.R, H())))


def test_every_byte_flip_rejected(single):
    """Flipping any bit of the encoding breaks decoding or verification."""
    proof, commitments, _ = single
    data = proof.to_bytes()
    # one byte in every field (48-byte points, 32-byte scalars), both ends
    offsets = sorted({0, 47, 48, 191, 192, 223, 224, 287, 288, 335, len(data) - 64, len(data) - 1})
    for off in offsets:
        bad = bytearray(data)
        bad[off] ^= 0x01
        with pytest.raises((DecodeError, ProofError)):
            verify_range(tr(), commitments, RangeProof.from_bytes(bytes(bad)))


@pytest.mark.parametrize("field", POINT_FIELDS)
def test_identity_point_rejected_by_verifier(single, field):
    proof, commitments, _ = single
    with pytest.raises(ProofError, match="identity"):
        verify_range(tr(), commitments, dataclasses.replace(proof, **{field: Point.identity()}))


def test_identity_round_point_rejected_by_verifier(single):
    proof, commitments, _ = single
    with pytest.raises(ProofError, match="identity"):
        verify_range(tr(), commitments, dataclasses.replace(proof, L=(Point.identity(), *proof.L[1:])))
    with pytest.raises(ProofError, match="identity"):
        verify_range(tr(), commitments, dataclasses.replace(proof, R=(*proof.R[:-1], Point.identity())))


@pytest.mark.parametrize("field", SCALAR_FIELDS)
def test_non_canonical_scalar_rejected_by_verifier(single, field):
    proof, commitments, _ = single
    value = getattr(proof, field)
    with pytest.raises(ProofError, match="canonical"):
        verify_range(tr(), commitments, dataclasses.replace(proof, **{field: value + ORDER}))
    with pytest.raises(ProofError, match="canonical"):
        verify_range(tr(), commitments, dataclasses.replace(proof, **{field: -1}))


def test_wrong_commitments_rejected(pair):
    proof, commitments, openings = pair
    v0 = openings[0]
    cases = [
        [commit(v0.value + 1, v0.blinding), commitments[1]],  # other value
        [commit(v0.value, v0.blinding + 1), commitments[1]],  # other blinding
        commitments[::-1],  # order matters
        commitments[:1],  # missing one (and m changes)
        [*commitments, commit(1, 1)],  # extra one
        [Point.hash_to_curve(b"nobody can open this", b"TEST-DST"), commitments[1]],
    ]
    for bad in cases:
        with pytest.raises(ProofError):
            verify_range(tr(), bad, proof)
    with pytest.raises(ProofError):
        verify_range(tr(), [], proof)
    with pytest.raises(ProofError):
        verify_range(tr(), [commitments[0]] * (MAX_AGGREGATION + 1), proof)


def test_bound_to_context_and_statement(single):
    proof, commitments, _ = single
    verify_range(tr(), commitments, proof)
    with pytest.raises(ProofError):
        verify_range(tr(context=CONTEXT + b"x"), commitments, proof)
    with pytest.raises(ProofError):
        verify_range(tr(statement=b"test/other"), commitments, proof)
    # A transcript that has absorbed something else first is another statement too.
    t = tr()
    t.append_u64(b"extra", 1)
    with pytest.raises(ProofError):
        verify_range(t, commitments, proof)


def test_bound_to_n():
    # n = 32 with 2 values has log2(64) = 6 rounds, like n = 64 with 1 value:
    # the structure fits, the transcript (n, m, V, generators) does not.
    proof, commitments, _ = prove([7, 8], n=32)
    verify_range(tr(), commitments, proof, n=32)
    with pytest.raises(ProofError):
        verify_range(tr(), commitments[:1], proof, n=64)
    with pytest.raises(ProofError, match="rounds"):
        verify_range(tr(), commitments, proof, n=64)
    with pytest.raises(ProofError, match="rounds"):
        verify_range(tr(), commitments, proof, n=16)
    for bad_n in (0, 7, 12, 128, 32.0):
        with pytest.raises(ProofError, match="not one of"):
            verify_range(tr(), commitments, proof, n=bad_n)


@pytest.mark.parametrize("true_value", [2**64, 2**64 + 123, ORDER - 1, ORDER - 2**63])
def test_forged_out_of_range_proof_rejected(monkeypatch, true_value):
    """A cheating prover that commits to an out-of-range value (>= 2^64, or a
    'negative' one, i.e. close to r) but runs the protocol honestly on the
    low 64 bits. The transcript binds the real commitment, so only the
    algebra can catch it, and it does (t_0 no longer matches V)."""
    low = true_value % 2**64
    real_commit = bp.commit

    def cheating_commit(v, r):
        assert v == low
        return real_commit(true_value, r)

    monkeypatch.setattr(bp, "commit", cheating_commit)
    opening = Opening.fresh(low)
    proof, commitments = prove_range(tr(), [opening])
    monkeypatch.undo()
    assert commitments[0] == commit(true_value, opening.blinding)
    with pytest.raises(ProofError):
        verify_range(tr(), commitments, proof)


def test_proof_for_other_commitment_rejected(single):
    """Re-using an honest proof for a commitment the prover cannot open."""
    proof, commitments, _ = single
    unknown = Point.hash_to_curve(b"some commitment", b"TEST-DST")
    with pytest.raises(ProofError):
        verify_range(tr(), [unknown], proof)
    with pytest.raises(ProofError):
        verify_range(tr(), [commitments[0] + unknown], proof)


# ---------------------------------------------------------------------------
# strict decoding
# ---------------------------------------------------------------------------


def _off_curve_encoding() -> bytes:
    """A compressed encoding whose x has no point on y^2 = x^3 + 4."""
    x = 5
    while pow(x**3 + 4, (FIELD_P - 1) // 2, FIELD_P) == 1:
        x += 1
    raw = bytearray(x.to_bytes(48, "big"))
    raw[0] |= 0x80
    return bytes(raw)


def _off_subgroup_encoding() -> bytes:
    """A compressed encoding of a curve point outside the prime-order subgroup."""
    x = 1
    while pow(x**3 + 4, (FIELD_P - 1) // 2, FIELD_P) != 1:
        x += 1
    raw = bytearray(x.to_bytes(48, "big"))
    raw[0] |= 0x80
    return bytes(raw)


def test_from_bytes_wrong_length(single):
    proof, _, _ = single
    data = proof.to_bytes()
    for bad in (b"", data[:-1], data + b"\x00", data[:-96], data[:352 + 96 * 2], data[:352]):
        with pytest.raises(DecodeError):
            RangeProof.from_bytes(bad)
    # 13 rounds is more than any allowed (n, m) needs (12 = log2(64 * 64))
    round0 = data[288:384]
    RangeProof.from_bytes(data[:288] + round0 * 12 + data[-64:])
    with pytest.raises(DecodeError, match="rounds"):
        RangeProof.from_bytes(data[:288] + round0 * 13 + data[-64:])
    # a well-formed 7-round proof is not a proof for n = 64, m = 1
    seven = data[:-64] + data[288:384] + data[-64:]
    RangeProof.from_bytes(seven)
    with pytest.raises(DecodeError):
        RangeProof.from_bytes(seven, n=64, m=1)
    with pytest.raises(DecodeError):
        RangeProof.from_bytes(data, n=64, m=2)
    with pytest.raises(DecodeError):
        RangeProof.from_bytes(data, n=63, m=1)
    with pytest.raises(DecodeError):
        RangeProof.from_bytes(bytearray(data).decode("latin-1"))  # type: ignore[arg-type]


@pytest.mark.parametrize("field", range(5))
def test_from_bytes_non_canonical_scalar(single, field):
    proof, _, _ = single
    data = bytearray(proof.to_bytes())
    offsets = [192, 224, 256, len(data) - 64, len(data) - 32]  # tau_x mu t_hat a b
    for bad_value in (ORDER, ORDER + 1, 2**256 - 1):
        bad = bytearray(data)
        bad[offsets[field] : offsets[field] + 32] = bad_value.to_bytes(32, "big")
        with pytest.raises(DecodeError, match="non-canonical"):
            RangeProof.from_bytes(bytes(bad))


def _point_offsets(rounds: int) -> list[int]:
    return [0, 48, 96, 144] + [288 + 48 * i for i in range(2 * rounds)]


def test_from_bytes_rejects_bad_points(single):
    proof, _, _ = single
    data = proof.to_bytes()
    identity = bytes([0xC0]) + bytes(47)
    for off in _point_offsets(proof.rounds):
        for bad_point, reason in (
            (identity, "identity"),
            (bytes(48), None),
            (_off_curve_encoding(), None),
            (_off_subgroup_encoding(), None),
        ):
            bad = data[:off] + bad_point + data[off + 48 :]
            with pytest.raises(DecodeError, match=reason):
                RangeProof.from_bytes(bad)


def test_test_encodings_are_what_they_claim():
    from py_arkworks_bls12381 import G1Point

    on_curve = G1Point.from_compressed_bytes_unchecked(_off_subgroup_encoding())
    assert not on_curve.is_in_subgroup()
    with pytest.raises(Exception):
        G1Point.from_compressed_bytes_unchecked(_off_curve_encoding())


def test_off_subgroup_rejected_on_py_ecc(single, py_ecc):
    proof, _, _ = single
    data = proof.to_bytes()
    with pytest.raises(DecodeError, match="subgroup"):
        RangeProof.from_bytes(_off_subgroup_encoding() + data[48:])
    with pytest.raises(DecodeError):
        RangeProof.from_bytes(data[:48] + _off_curve_encoding() + data[96:])


# ---------------------------------------------------------------------------
# batch verification
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch():
    specs = [([1], 64), ([2, 3, 4], 32), ([255, 0], 8), ([U64_MAX], 64), ([9] * 5, 16)]
    statements = []
    for i, (values, n) in enumerate(specs):
        ctx = b"batch-ctx-%d" % i
        proof, commitments, _ = prove(values, n=n, context=ctx)
        statements.append(RangeStatement(tr(ctx), tuple(commitments), proof, n))
    return statements


def test_batch_valid(batch):
    batch_verify_range(batch)
    batch_verify_range(batch[:1])
    batch_verify_range([])
    # the statements' transcripts were not consumed
    for st in batch:
        verify_range(st.transcript.clone(), st.commitments, st.proof, st.n)


def test_batch_names_the_bad_proof(batch):
    bad = list(batch)
    st = bad[3]
    bad[3] = dataclasses.replace(st, proof=dataclasses.replace(st.proof, t_hat=(st.proof.t_hat + 1) % ORDER))
    with pytest.raises(ProofError, match=r"batch: proof #3 "):
        batch_verify_range(bad)
    # wrong commitment for #1
    bad = list(batch)
    bad[1] = dataclasses.replace(batch[1], commitments=(batch[1].commitments[0] + G(), *batch[1].commitments[1:]))
    with pytest.raises(ProofError, match=r"batch: proof #1 "):
        batch_verify_range(bad)
    # a proof moved to another context
    bad = list(batch)
    bad[4] = dataclasses.replace(batch[4], transcript=tr(b"elsewhere"))
    with pytest.raises(ProofError, match=r"batch: proof #4 "):
        batch_verify_range(bad)
    # structural error (wrong n) is named before any MSM
    bad = list(batch)
    bad[2] = dataclasses.replace(batch[2], n=64)
    with pytest.raises(ProofError, match=r"batch: proof #2 .*rounds"):
        batch_verify_range(bad)


def test_batch_rejects_swapped_proofs(batch):
    """Two valid proofs exchanged between statements: the weights are random,
    so errors cannot cancel out."""
    bad = list(batch)
    bad[0], bad[3] = (
        dataclasses.replace(batch[0], proof=batch[3].proof),
        dataclasses.replace(batch[3], proof=batch[0].proof),
    )
    with pytest.raises(ProofError, match=r"batch: proof #0 "):
        batch_verify_range(bad)


def test_constants():
    assert RANGE_BITS == (8, 16, 32, 64)
    assert MAX_AGGREGATION == 64
    assert RangeProof.size(64, 1) == 928
    assert RangeProof.size(64, 3) == RangeProof.size(64, 4) == (2 * 8 + 4) * 48 + 160
    assert RangeProof.size(64, 64) == (2 * 12 + 4) * 48 + 160


# ---------------------------------------------------------------------------
# an independent, textbook verifier: the two checks of the paper kept apart,
# generators folded explicitly round by round (slow, no shared code with the
# single-MSM verifier beyond the transcript replay)
# ---------------------------------------------------------------------------


def reference_verify(transcript, commitments, proof, n) -> bool:
    from crypto.generators import bulletproof_generators
    from crypto.group import msm

    rp = bp._replay(transcript, commitments, proof, n)
    y, z, x, w = rp.y, rp.z, rp.x, rp.w
    m, N = rp.m, n * rp.m
    Gs, Hs = bulletproof_generators(N)
    inv = lambda k: pow(k, -1, ORDER)  # noqa: E731

    # (1) t_hat G + tau_x H == sum_j z^(2+j) V_j + delta G + x T1 + x^2 T2
    sum_y = sum(pow(y, i, ORDER) for i in range(N))
    sum_2 = sum(2**k for k in range(n))
    delta = ((z - z * z) * sum_y - sum(pow(z, 3 + j, ORDER) for j in range(m)) * sum_2) % ORDER
    lhs = msm([G(), H()], [proof.t_hat, proof.tau_x])
    rhs = msm(
        [*rp.V, G(), proof.T1, proof.T2],
        [*(pow(z, 2 + j, ORDER) for j in range(m)), delta, x, x * x],
    )
    if lhs != rhs:
        return False

    # (2) inner-product argument on P = A + x S - z<1,G> + <z y^N + z^(2+j) 2^n, H'> - mu H + t_hat Q
    Hp = [Hs[i] * inv(pow(y, i, ORDER)) for i in range(N)]
    Q = G() * w
    P = msm(
        [proof.A, proof.S, *Gs, *Hp, H(), Q],
        [
            1,
            x,
            *([-z] * N),
            *(z * pow(y, i, ORDER) + pow(z, 2 + i // n, ORDER) * 2 ** (i % n) for i in range(N)),
            -proof.mu,
            proof.t_hat,
        ],
    )
    g_vec, h_vec = list(Gs), Hp
    for left, right, u in zip(proof.L, proof.R, rp.u):
        P = P + left * (u * u) + right * inv(u * u)
        half = len(g_vec) // 2
        g_vec = [msm([g_vec[i], g_vec[half + i]], [inv(u), u]) for i in range(half)]
        h_vec = [msm([h_vec[i], h_vec[half + i]], [u, inv(u)]) for i in range(half)]
    return P == g_vec[0] * proof.a + h_vec[0] * proof.b + Q * (proof.a * proof.b)


@pytest.mark.parametrize(("values", "n"), [([77], 64), ([3, 4, 5], 8)])
def test_reference_verifier_agrees(values, n):
    proof, commitments, _ = prove(values, n=n)
    assert reference_verify(tr(), commitments, proof, n)
    verify_range(tr(), commitments, proof, n)
    for field in ("t_hat", "tau_x", "mu", "a", "b"):
        bad = dataclasses.replace(proof, **{field: (getattr(proof, field) + 1) % ORDER})
        assert not reference_verify(tr(), commitments, bad, n)
        with pytest.raises(ProofError):
            verify_range(tr(), commitments, bad, n)
