"""The range verifier's fast arithmetic against straightforward references.

`crypto.bulletproofs._vector_coefficients` builds the G_i / H_i coefficients by
doublings with the proof's constants folded in and leaves them unreduced
(docs/bulletproofs.md, "What the verifier computes per proof"); `_bind_statement`
replays a range proof's statement fields 1-9 from frames recorded once
(`transcript.Frames`); `Transcript.challenge_scalar` caches its challenge frames.
Here each is checked against the formulas written out item by item or field by
field from the docs, sharing nothing with the code under test. (Written by the
review of that change, 2026-12-01.)
"""

from __future__ import annotations

import hashlib
import random
import struct

import pytest

from crypto import bulletproofs as bp
from crypto import transcript as tmod
from crypto.generators import G, H, bulletproof_generators
from crypto.group import ORDER, Point, msm, scalar_to_bytes, use_backend
from crypto.pedersen import Opening
from crypto.transcript import Transcript

# --------------------------------------------------------------------------- coefficients


def reference_coefficients(n, m, z, us, y, e1, a, b):
    """g_i = -e1 (z + a s_i);  h_i = e1 (z + y^-i (z^(2+j) 2^k - b s_i^-1)),  i = j n + k,
    s_i = prod_r u_r^(+1 if bit (K-1-r) of i is set else -1): one item at a time,
    every power by pow(), nothing shared between items."""
    K = len(us)
    N = n * m
    assert N == 1 << K
    g, h = [], []
    for i in range(N):
        s = 1
        for r, u in enumerate(us):
            s = s * (u if (i >> (K - 1 - r)) & 1 else pow(u, -1, ORDER)) % ORDER
        j, k = divmod(i, n)
        g.append(-e1 * (z + a * s) % ORDER)
        yi = pow(y, -i, ORDER)
        h.append(e1 * (z + yi * (pow(z, 2 + j, ORDER) * pow(2, k, ORDER) - b * pow(s, -1, ORDER))) % ORDER)
    return g, h


def fast_coefficients(n, m, z, us, y, e1, a, b):
    u_inv = [pow(u, -1, ORDER) for u in us]
    u_sq = [u * u % ORDER for u in us]
    u_inv_sq = [v * v % ORDER for v in u_inv]
    return bp._vector_coefficients(n, m, z, us, u_inv, u_sq, u_inv_sq, pow(y, -1, ORDER), e1, a, b)


def in_bounds(values) -> bool:
    """The docstring's range of the unreduced coefficients: (-r, 2 r^3 + r)."""
    return all(-ORDER < v < 2 * ORDER**3 + ORDER and abs(v).bit_length() < 768 for v in values)


SHAPES = [(n, m) for n in bp.RANGE_BITS for m in (1, 2, 4, 8, 16, 32, 64) if n * m <= 1024] + [(64, 64), (8, 64)]


@pytest.mark.parametrize(("n", "m"), SHAPES)
def test_coefficients_match_the_reference(n, m):
    rnd = random.Random(n * 1000 + m)
    K = (n * m).bit_length() - 1
    for edge in (False, True):
        z, y, e1 = (rnd.randrange(1, ORDER) for _ in range(3))
        a, b = (0, ORDER - 1) if edge else (rnd.randrange(ORDER), rnd.randrange(ORDER))
        us = [rnd.randrange(1, ORDER) for _ in range(K)]
        g, h = fast_coefficients(n, m, z, us, y, e1, a, b)
        assert ([v % ORDER for v in g], [v % ORDER for v in h]) == reference_coefficients(n, m, z, us, y, e1, a, b)
        assert in_bounds(g + h)


@pytest.mark.parametrize("value", [1, ORDER - 1])
def test_extreme_challenges_stay_in_bounds(value):
    """Every challenge and scalar 1, or r - 1 (the largest reduced value: the unreduced
    levels are then largest)."""
    n, m, K = 64, 4, 8
    args = (n, m, value, [value] * K, value, value, value, value)
    g, h = fast_coefficients(*args)
    assert ([x % ORDER for x in g], [x % ORDER for x in h]) == reference_coefficients(*args)
    assert in_bounds(g + h)


@pytest.mark.parametrize("backend", ["arkworks", "py_ecc"])
def test_the_msm_reduces_unreduced_and_negative_scalars(backend):
    use_backend(backend)
    try:
        P = G()
        for k in (ORDER, 5 * ORDER, -ORDER, ORDER**3, -(ORDER**2) * 7, 2 * ORDER**3 + ORDER):
            assert msm([P], [k]).is_identity(), k
        for k in (ORDER + 1, -ORDER + 1, ORDER**3 + 1):
            assert msm([P], [k]) == P, k
        assert msm([P, H()], [-1, ORDER - 1]) == msm([P, H()], [ORDER - 1, -1])
    finally:
        use_backend("arkworks")


@pytest.mark.parametrize(("n", "values"), [(8, [3]), (16, [1, 2, 3]), (32, [5] * 5), (64, [2**64 - 1, 0])])
def test_the_reference_coefficients_verify_real_proofs(n, values):
    """Ties the reference to the protocol: with the reference G_i / H_i coefficients in
    place of `_vector_coefficients`, a real proof's equation holds, and one
    coefficient off by one breaks it."""
    proof, comms = bp.prove_range(Transcript(b"test/ref", b"ctx"), [Opening.fresh(v) for v in values], n)
    rp = bp._replay(Transcript(b"test/ref", b"ctx"), comms, proof, n)
    e1, e2 = 3, 7
    _, _, cg, ch, pts, kco = bp._scalars(rp, proof, e1, e2, vectors=False)
    rg, rh = reference_coefficients(rp.n, rp.m, rp.z, rp.u, rp.y, e1, proof.a, proof.b)
    Gs, Hs = bulletproof_generators(rp.n * rp.m)
    assert msm([*Gs, *Hs, G(), H(), *pts], [*rg, *rh, cg, ch, *kco]).is_identity()
    rh[-1] += 1
    assert not msm([*Gs, *Hs, G(), H(), *pts], [*rg, *rh, cg, ch, *kco]).is_identity()


# --------------------------------------------------------------------------- transcript frames


def absorb(h, label: bytes, data: bytes) -> None:
    """docs/bulletproofs.md: u32be(len(label)) || label || u64be(len(data)) || data."""
    h.update(struct.pack(">I", len(label)) + label + struct.pack(">Q", len(data)) + data)


def reference_statement(h, n, count, V) -> None:
    """Fields 1-9 of a range proof's transcript (docs/bulletproofs.md), one by one."""
    m = len(V)
    absorb(h, b"dom-sep", b"bulletproofs-range-v1")
    absorb(h, b"n", struct.pack(">Q", n))
    absorb(h, b"m", struct.pack(">Q", m))
    absorb(h, b"values", struct.pack(">Q", count))
    absorb(h, b"G", G().to_bytes())
    absorb(h, b"H", H().to_bytes())
    absorb(h, b"gens.count", struct.pack(">Q", n * m))
    Gs, Hs = bulletproof_generators(n * m)
    d = hashlib.sha512()
    d.update(b"oretrace/bulletproofs/generators/v1")
    d.update(struct.pack(">I", len(bp._GENERATOR_DST)) + bp._GENERATOR_DST)
    d.update(struct.pack(">Q", n * m))
    for p in (*Gs, *Hs):
        d.update(p.to_bytes())
    absorb(h, b"gens.digest", d.digest())
    absorb(h, b"V.len", struct.pack(">Q", len(V)))
    for p in V:
        absorb(h, b"V", p.to_bytes())


def reference_challenge(h, label: bytes) -> int:
    counter = 0
    while True:
        c_h = h.copy()
        absorb(c_h, b"challenge", label + struct.pack(">I", counter))
        c = int.from_bytes(c_h.digest(), "big") % ORDER
        if c:
            absorb(h, b"challenge-out", label + scalar_to_bytes(c))
            return c
        counter += 1


def bound_and_reference(n, count):
    """A transcript bound to a statement by `_bind_statement`, and the reference hash of it."""
    m = bp._pad(count)
    V = [G() * (i + 1) for i in range(count)] + [Point.identity()] * (m - count)
    t = Transcript(b"st", b"ctx")
    h = hashlib.sha512()
    absorb(h, b"protocol", tmod.PROTOCOL)
    absorb(h, b"statement", b"st")
    absorb(h, b"context", b"ctx")
    bp._bind_statement(t, n, count, V)
    reference_statement(h, n, count, V)
    return t, h


@pytest.mark.parametrize(("n", "count"), [(n, c) for n in bp.RANGE_BITS for c in (1, 2, 3, 5, 16, 33, 64) if n * bp._pad(c) <= 1024] + [(64, 64)])
def test_statement_frames_are_the_field_by_field_bytes(n, count):
    t, h = bound_and_reference(n, count)
    assert t._h.digest() == h.digest()
    for label in (b"y", b"z", b"u", bytearray(b"batch-binding")):
        assert t.challenge_scalar(label) == reference_challenge(h, bytes(label))
    assert t._h.digest() == h.digest()


def test_frames_do_not_leak_between_counts_with_the_same_m():
    """3 and 4 values both pad to m = 4: the same m, a different "values" field."""
    a, _ = bound_and_reference(16, 3)
    b, _ = bound_and_reference(16, 4)
    assert a.challenge_scalar(b"y") != b.challenge_scalar(b"y")
    assert bp._statement_frames(16, 3).data != bp._statement_frames(16, 4).data


def test_py_ecc_records_the_same_frames():
    arkworks = bp._statement_frames(8, 1).data
    use_backend("py_ecc")
    try:
        t, h = bound_and_reference(8, 1)
        assert t._h.digest() == h.digest()
        assert bp._statement_frames(8, 1).data == arkworks
    finally:
        use_backend("arkworks")


def test_a_frames_recorder_cannot_draw_challenges():
    with pytest.raises(AttributeError):
        tmod.Frames(lambda t: t.challenge_scalar(b"x"))
