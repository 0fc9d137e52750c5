"""One MSM for many proofs (crypto/batch.py, ledger/proofs.py): soundness of the
folding, naming of the failing proof by bisection, deferred and cached point
decoding, worker processes, and the cost of rejecting a bad batch."""

from __future__ import annotations

import dataclasses
import functools

import pytest

from crypto.batch import BatchFailure, DeferredPoints, WorkerPool, verify_relations
from crypto.bulletproofs import RangeProof, RangeStatement, prove_range, range_relation
from crypto.errors import DecodeError
from crypto.generators import G, H
from crypto.group import Point, backend, decode_cache, deferred_decoding
from crypto.pedersen import Opening
from crypto.sigma import OpeningProof, ZeroProof, opening_relation, prove_opening, prove_zero, zero_relation
from crypto.transcript import Transcript
from test_bulletproofs import _off_curve_encoding, _off_subgroup_encoding

# --------------------------------------------------------------------------- a mixed batch, as bytes


@dataclasses.dataclass(frozen=True)
class Item:
    """One proof of a batch, as bytes (so each backend decodes it itself)."""

    kind: str  # "range" | "zero" | "opening"
    context: bytes
    statement: tuple[bytes, ...]  # the statement's points
    proof: bytes
    n: int = 8


def _t(context: bytes) -> Transcript:
    return Transcript(b"test/batch", context)


@functools.cache
def items() -> tuple[Item, ...]:
    """Range proofs (m = 1, 2, 3; n = 8, 16), zero proofs (k = 1, 3) and an opening proof,
    proven once on arkworks."""
    out = []
    for i, (values, n) in enumerate([([7], 8), ([0, 255], 8), ([1, 2, 3], 16), ([65535], 16)]):
        ctx = b"range-%d" % i
        proof, commitments = prove_range(_t(ctx), [Opening.fresh(v) for v in values], n)
        out.append(Item("range", ctx, tuple(c.to_bytes() for c in commitments), proof.to_bytes(), n))
    for i, k in enumerate([1, 3]):
        ctx = b"zero-%d" % i
        rhos = [Opening.fresh(0).blinding for _ in range(k)]
        points = [H() * r for r in rhos]
        proof = prove_zero(_t(ctx), points, rhos)
        out.append(Item("zero", ctx, tuple(p.to_bytes() for p in points), proof.to_bytes()))
    opening = Opening.fresh(42)
    c = G() * 42 + H() * opening.blinding
    proof = prove_opening(_t(b"opening"), c, opening)
    out.append(Item("opening", b"opening", (c.to_bytes(),), proof.to_bytes()))
    return tuple(out)


TAMPERINGS = ("scalar", "statement", "context", "proof point")


def relation(item: Item, tamper: str | None = None):
    """The item's relation on the active backend, tampered as asked."""
    ctx = item.context + (b"!" if tamper == "context" else b"")
    statement = [Point.from_bytes(b, allow_identity=True) for b in item.statement]
    other = H() * 1234567  # a valid point unrelated to the proof
    if tamper == "statement":
        statement[-1] = statement[-1] + G()
    if item.kind == "range":
        proof = RangeProof.from_bytes(item.proof)
        if tamper == "scalar":
            proof = dataclasses.replace(proof, t_hat=(proof.t_hat + 1))
        if tamper == "proof point":
            proof = dataclasses.replace(proof, L=(other, *proof.L[1:]))
        return range_relation(RangeStatement(_t(ctx), tuple(statement), proof, item.n))
    if item.kind == "zero":
        proof = ZeroProof.from_bytes(item.proof)
        if tamper == "scalar":
            proof = ZeroProof(proof.R, (proof.s[0] + 1, *proof.s[1:]))
        if tamper == "proof point":
            proof = ZeroProof((*proof.R[:-1], other), proof.s)
        return zero_relation(_t(ctx), statement, proof)
    proof = OpeningProof.from_bytes(item.proof)
    if tamper == "scalar":
        proof = OpeningProof(proof.R, proof.s_v + 1, proof.s_r)
    if tamper == "proof point":
        proof = OpeningProof(other, proof.s_v, proof.s_r)
    return opening_relation(_t(ctx), statement[0], proof)


def batch(tampered: dict[int, str] | None = None) -> list:
    tampered = tampered or {}
    return [relation(item, tampered.get(i)) for i, item in enumerate(items())]


def failure_index(relations, deferred=None) -> int:
    with pytest.raises(BatchFailure) as info:
        verify_relations(relations, deferred)
    return info.value.index


# --------------------------------------------------------------------------- soundness and naming


def test_an_honest_mixed_batch_verifies(curve):
    verify_relations(batch())


@pytest.mark.parametrize("tamper", TAMPERINGS)
def test_every_tampered_proof_is_caught_and_named_arkworks(tamper):
    for i in range(len(items())):
        assert failure_index(batch({i: tamper})) == i, (i, tamper)


@pytest.mark.parametrize(("index", "tamper"), [(0, "scalar"), (4, "proof point"), (6, "statement"), (5, "context")])
def test_tampered_proofs_are_caught_and_named_py_ecc(py_ecc, index, tamper):
    assert failure_index(batch({index: tamper})) == index


def test_several_bad_proofs_name_the_first():
    cases = ({1: "scalar", 5: "context"}, {3: "proof point", 4: "scalar", 6: "statement"}, {0: "scalar", 6: "scalar"})
    for bad in cases:
        assert failure_index(batch(bad)) == min(bad)


def test_weights_are_fresh_per_verification():
    """Two proofs whose errors cancel for one fixed choice of weights do not cancel for the batch."""
    # Relation 0 off by +G (statement + G), relation 1 off by -G: with equal weights they would cancel.
    g = G()
    o0, o1 = Opening.fresh(5), Opening.fresh(9)
    c0, c1 = G() * 5 + H() * o0.blinding, G() * 9 + H() * o1.blinding
    p0 = prove_opening(_t(b"a"), c0, o0)
    p1 = prove_opening(_t(b"b"), c1, o1)
    rel0 = opening_relation(_t(b"a"), c0, OpeningProof(p0.R + g, p0.s_v, p0.s_r))
    rel1 = opening_relation(_t(b"b"), c1, OpeningProof(p1.R - g, p1.s_v, p1.s_r))
    assert failure_index([rel0, rel1]) == 0


# --------------------------------------------------------------------------- deferred and cached decoding


@pytest.mark.parametrize("bad", [_off_curve_encoding(), _off_subgroup_encoding()], ids=["off-curve", "off-subgroup"])
def test_a_deferred_point_that_does_not_decode_names_its_proof(curve, bad):
    for i in (2, 5):  # a range proof's L[0], a zero proof's R_0
        item = items()[i]
        offset = 4 * 48 + 3 * 32 if item.kind == "range" else 4
        proof = item.proof[:offset] + bad + item.proof[offset + 48 :]
        broken = dataclasses.replace(item, proof=proof)
        with deferred_decoding():
            rels = [relation(it) for it in items()[:i]] + [relation(broken)] + [relation(it) for it in items()[i + 1 :]]
        with pytest.raises(BatchFailure, match="malformed point") as info:
            verify_relations(rels)
        assert info.value.index == i
        with pytest.raises(DecodeError):  # outside the scope it fails at once
            relation(broken)


def test_deferred_points_decode_when_used():
    enc = H().to_bytes()
    with deferred_decoding():
        p = Point.from_bytes(enc)
        q = Point.from_bytes(_off_subgroup_encoding())
    assert p.is_deferred() and q.is_deferred()
    assert p.to_bytes() == enc and not p.is_identity()
    assert p + G() == H() + G() and not p.is_deferred()
    for use in (lambda: q + G(), lambda: q * 3, lambda: -q, lambda: q == H()):
        with pytest.raises(DecodeError):
            use()
    for data in (bytes(47), bytes([0xC0]) + bytes(47)):  # length and identity rules: checked at once
        with deferred_decoding(), pytest.raises(DecodeError):
            Point.from_bytes(data)


def test_the_decode_cache_decodes_each_encoding_once(curve, monkeypatch):
    b = backend()
    calls = []
    real = b.decode
    monkeypatch.setattr(b, "decode", lambda data: calls.append(data) or real(data))
    encs = [(H() * k).to_bytes() for k in (2, 3)]
    with decode_cache():
        first = [Point.from_bytes(e) for e in encs * 3]
        for _ in range(2):  # a bad encoding is not cached: it fails every time
            with pytest.raises(DecodeError):
                Point.from_bytes(_off_curve_encoding())
    assert calls.count(encs[0]) == calls.count(encs[1]) == 1
    assert first[0] is first[2] and first[0] == H() * 2
    Point.from_bytes(encs[0])  # outside the scope: decoded again
    assert calls.count(encs[0]) == 2


# --------------------------------------------------------------------------- worker processes


@pytest.fixture(scope="module")
def pool():
    p = WorkerPool(2, "arkworks")
    yield p
    p.close()


def test_workers_verify_and_name_like_this_process(pool):
    deferred = [relation(it) for it in items()]
    with deferred_decoding():
        honest = [relation(it) for it in items()]
        bad = batch({3: "scalar"})
    assert all(any(p.is_deferred() for p in r.proof_points) for r in honest)
    dp = DeferredPoints(pool)
    for r in honest:
        dp.add(r.proof_points)
    verify_relations(honest, dp)
    verify_relations(deferred, DeferredPoints(pool))
    assert failure_index(bad, DeferredPoints(pool)) == 3
    item = items()[0]
    broken = dataclasses.replace(item, proof=item.proof[:48] + _off_subgroup_encoding() + item.proof[96:])  # S
    with deferred_decoding():
        rels = [relation(broken), *(relation(it) for it in items()[1:])]
    dp = DeferredPoints(pool)
    for r in rels:
        dp.add(r.proof_points)
    with pytest.raises(BatchFailure, match="malformed point") as info:
        verify_relations(rels, dp)
    assert info.value.index == 0


def test_workers_compute_the_coefficients_of_a_large_batch(pool):
    """Hundreds of range proofs: their G_i/H_i coefficients go to the workers in many
    messages (`split_terms`), more than the pipes buffer, and the sums are what this
    process computes; a bad proof among them is still named."""
    honest = [relation(it) for it in items()]
    many = honest * 200  # 1,400 relations, 800 range proofs: 25 messages of jobs, ~100 KB of sums
    verify_relations(many, DeferredPoints(pool))
    for bad_at in (0, 711, len(many) - 1):
        tampered = list(many)
        tampered[bad_at] = relation(items()[bad_at % len(items())], "scalar")
        assert failure_index(tampered, DeferredPoints(pool)) == bad_at
        assert failure_index(tampered) == bad_at  # the same verdict without workers


# --------------------------------------------------------------------------- the cost of a bad batch


def _msm_points(monkeypatch, fn) -> int:
    """Points multiplied (all MSMs of this process) while running fn."""
    b = backend()
    real = b.msm
    counted = [0]

    def counting(points, scalars):
        counted[0] += len(points)
        return real(points, scalars)

    monkeypatch.setattr(b, "msm", counting)
    try:
        fn()
    except BatchFailure:
        pass
    monkeypatch.setattr(b, "msm", real)
    return counted[0]


def test_rejecting_a_batch_costs_about_one_more_pass_not_one_per_proof(monkeypatch):
    """Issue 8 item 10: the last proof bad costs ~2x an honest batch (bisection), never
    a re-check of every proof (which multiplied every proof's points again, twice)."""
    proofs = []
    for i in range(32):
        rhos = [Opening.fresh(0).blinding for _ in range(3)]
        points = [H() * r for r in rhos]
        proofs.append((b"z%d" % i, points, prove_zero(_t(b"z%d" % i), points, rhos)))

    def rels(bad: int | None):
        out = []
        for i, (ctx, points, proof) in enumerate(proofs):
            if i == bad:
                proof = ZeroProof(proof.R, (proof.s[0] + 1, *proof.s[1:]))
            out.append(zero_relation(_t(ctx), points, proof))
        return out

    honest = _msm_points(monkeypatch, lambda: verify_relations(rels(None)))
    for bad in (0, 17, 31):
        cost = _msm_points(monkeypatch, lambda bad=bad: verify_relations(rels(bad)))
        assert cost <= 2.2 * honest, (bad, cost, honest)
        assert failure_index(rels(bad)) == bad


# --------------------------------------------------------------------------- in a bundle

from test_ledger_bundle import chain, clean_bundle, failed, flip_byte, index_of, resigned, root_hex  # noqa: E402, F401


def _replace_point(hex_text: str, offset: int, encoding: bytes) -> str:
    raw = bytes.fromhex(hex_text)
    return (raw[:offset] + encoding + raw[offset + 48 :]).hex()


@pytest.mark.parametrize("bad", [_off_curve_encoding(), _off_subgroup_encoding()], ids=["off-curve", "off-subgroup"])
@pytest.mark.parametrize("min_points", [0, 10**9], ids=["workers", "in-process"])
def test_a_bad_point_inside_a_bundle_proof_is_named_with_its_event(
    chain, clean_bundle, root_hex, bad, min_points, monkeypatch
):
    """Proof points are decoded late (in the workers or here): a bad one still fails the bundle and names its proof."""
    monkeypatch.setattr("ledger.proofs.WORKERS_MIN_POINTS", min_points)
    i = index_of(clean_bundle, "transform")
    edits = [
        ("range proof", lambda p: p.update(range_proof=_replace_point(p["range_proof"], 48, bad))),  # S
        ("balance proof", lambda p: p.update(balance_proof=_replace_point(p["balance_proof"], 4, bad))),  # R_0
    ]
    for name, edit in edits:
        bundle = resigned(chain, clean_bundle, i, edit)
        failed(bundle, root_hex, "proofs", f"event {i} (transform", name, "malformed point")


def test_bundle_verdicts_are_the_same_with_and_without_workers(chain, clean_bundle, root_hex, monkeypatch):
    from ledger.bundle import verify_bundle

    i = index_of(clean_bundle, "transform")
    last = len(clean_bundle["events"][i]["payload"]["balance_proof"]) // 2 - 1  # a scalar's last byte
    bad = resigned(chain, clean_bundle, i, lambda p: p.update(balance_proof=flip_byte(p["balance_proof"], last)))
    monkeypatch.setattr("ledger.proofs.WORKERS_MIN_POINTS", 0)  # a small bundle: use the workers anyway
    for workers in ("0", "2"):
        monkeypatch.setenv("ORETRACE_BUNDLE_WORKERS", workers)
        assert verify_bundle(clean_bundle, root_hex).ok
        failed(bad, root_hex, "proofs", f"event {i} (transform", "balance proof")
