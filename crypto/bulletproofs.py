"""Aggregated Bulletproofs range proofs over BLS12-381 G1.

The construction is the aggregated range proof of Bünz, Bootle, Boneh,
Poelstra, Wuille and Maxwell, "Bulletproofs: Short Proofs for Confidential
Transactions and More" (IEEE S&P 2018), sections 4.2-4.3 and 6.2, laid out as
in dalek-cryptography/bulletproofs. docs/bulletproofs.md gives the math next
to this code: the statement, every transcript field in order, the byte layout
and the single multi-scalar-multiplication verifier.

Notation (one letter per object, as in the docs):

* ``G``/``H``: the Pedersen bases (value, blinding), ``V_j = v_j G + r_j H``;
* ``G_i``/``H_i``: the vector generators, ``i < N = n m``, with
  ``i = j n + k`` for bit ``k`` of value ``j``;
* ``m``: the number of commitments rounded up to a power of two; the missing
  ones are the identity (a commitment to 0 with blinding 0) and are part of the
  statement that the transcript binds.

Scalars are Python ints mod ``ORDER``; Python big-int arithmetic is the
bottleneck next to the native MSM, so the code favours few reductions, list
comprehensions and batch inversion, and the verifier computes the IPP
``s`` vector in N - 1 multiplications from its binary structure.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from operator import mul

from .batch import BatchFailure, Terms, verify_relations
from .errors import DecodeError, ProofError, ProvingError
from .generators import DST as _GENERATOR_DST
from .generators import G, H, bulletproof_generators
from .group import (
    ORDER,
    POINT_BYTES,
    SCALAR_BYTES,
    Point,
    backend,
    msm,
    scalar_from_bytes,
    scalar_to_bytes,
)
from .pedersen import Opening, commit
from .transcript import Frames, Transcript

__all__ = [
    "RANGE_BITS",
    "MAX_AGGREGATION",
    "RangeProof",
    "RangeStatement",
    "RangeRelation",
    "range_relation",
    "prove_range",
    "verify_range",
    "batch_verify_range",
]

#: Allowed bit lengths n: every value is proved to lie in [0, 2^n).
RANGE_BITS = (8, 16, 32, 64)
#: At most this many commitments in one aggregated proof (m <= 64 after padding).
MAX_AGGREGATION = 64

DOMAIN = b"bulletproofs-range-v1"
IPP_DOMAIN = b"bulletproofs-ipp-v1"

_MIN_ROUNDS = (min(RANGE_BITS) * 1).bit_length() - 1  # log2(8 * 1) = 3
_MAX_ROUNDS = (max(RANGE_BITS) * MAX_AGGREGATION).bit_length() - 1  # log2(64 * 64) = 12
_FIXED_BYTES = 4 * POINT_BYTES + 5 * SCALAR_BYTES  # A S T1 T2 | tau_x mu t_hat | a b
_ROUND_BYTES = 2 * POINT_BYTES  # L_r R_r


# ---------------------------------------------------------------------------
# the proof object and its encoding
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RangeProof:
    """An aggregated range proof. Challenges are *not* part of it: the verifier
    recomputes every one of them from its own transcript."""

    A: Point
    S: Point
    T1: Point
    T2: Point
    tau_x: int
    mu: int
    t_hat: int
    L: tuple[Point, ...]
    R: tuple[Point, ...]
    a: int
    b: int

    @property
    def rounds(self) -> int:
        """Number of inner-product rounds, log2(n * m)."""
        return len(self.L)

    @staticmethod
    def size(n: int, m: int) -> int:
        """Encoded size in bytes of a proof for `m` commitments of `n` bits
        (m is rounded up to a power of two): (2 log2(n m) + 4) * 48 + 5 * 32."""
        rounds = (n * _pad(m)).bit_length() - 1
        return _FIXED_BYTES + rounds * _ROUND_BYTES

    def to_bytes(self) -> bytes:
        """A || S || T1 || T2 || tau_x || mu || t_hat || (L_r || R_r)_r || a || b."""
        if len(self.L) != len(self.R):
            raise ValueError("RangeProof: L and R differ in length")
        parts = [
            self.A.to_bytes(),
            self.S.to_bytes(),
            self.T1.to_bytes(),
            self.T2.to_bytes(),
            scalar_to_bytes(self.tau_x),
            scalar_to_bytes(self.mu),
            scalar_to_bytes(self.t_hat),
        ]
        for left, right in zip(self.L, self.R):
            parts.append(left.to_bytes())
            parts.append(right.to_bytes())
        parts.append(scalar_to_bytes(self.a))
        parts.append(scalar_to_bytes(self.b))
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes, *, n: int | None = None, m: int | None = None) -> RangeProof:
        """Strict decoding (raises DecodeError).

        The length must be 352 + 96 k bytes for a round count k in [3, 12]; if
        `n` and `m` (the number of commitments, unpadded) are given, k must be
        exactly log2(n * padded m). Every point is decoded with the full checks
        of `Point.from_bytes` (on-curve, subgroup, canonical) and the identity
        is rejected everywhere; every scalar must be canonical (< r).
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise DecodeError("range proof", "a range proof must be bytes")
        data = bytes(data)
        extra = len(data) - _FIXED_BYTES
        if extra < 0 or extra % _ROUND_BYTES:
            raise DecodeError("range proof", f"range proof length {len(data)} is not 352 + 96*k bytes")
        rounds = extra // _ROUND_BYTES
        if not _MIN_ROUNDS <= rounds <= _MAX_ROUNDS:
            raise DecodeError(
                "range proof", f"a range proof has {_MIN_ROUNDS} to {_MAX_ROUNDS} inner-product rounds, not {rounds}"
            )
        if n is not None or m is not None:
            if not _valid_n(n) or type(m) is not int or not 1 <= m <= MAX_AGGREGATION:
                raise DecodeError("range proof", f"unsupported range proof parameters n={n}, m={m}")
            expected = (n * _pad(m)).bit_length() - 1
            if rounds != expected:
                raise DecodeError(
                    "range proof", f"range proof has {rounds} rounds but n={n}, m={m} needs {expected}"
                )

        pos = 0

        def point(name: str) -> Point:
            nonlocal pos
            chunk = data[pos : pos + POINT_BYTES]
            pos += POINT_BYTES
            try:
                return Point.from_bytes(chunk)
            except DecodeError as exc:
                raise DecodeError("range proof", f"range proof field {name}: {exc.reason}") from None

        def scalar(name: str) -> int:
            nonlocal pos
            chunk = data[pos : pos + SCALAR_BYTES]
            pos += SCALAR_BYTES
            try:
                return scalar_from_bytes(chunk)
            except DecodeError as exc:
                raise DecodeError("range proof", f"range proof field {name}: {exc.reason}") from None

        A, S, T1, T2 = point("A"), point("S"), point("T1"), point("T2")
        tau_x, mu, t_hat = scalar("tau_x"), scalar("mu"), scalar("t_hat")
        Ls, Rs = [], []
        for r in range(rounds):
            Ls.append(point(f"L[{r}]"))
            Rs.append(point(f"R[{r}]"))
        a, b = scalar("a"), scalar("b")
        assert pos == len(data)
        return cls(A, S, T1, T2, tau_x, mu, t_hat, tuple(Ls), tuple(Rs), a, b)


@dataclass(frozen=True)
class RangeStatement:
    """One proof to check in a batch: its transcript (already bound to the
    statement and context by the caller), the commitments, the proof, n."""

    transcript: Transcript
    commitments: tuple[Point, ...]
    proof: RangeProof
    n: int = 64

    def __post_init__(self) -> None:
        if not isinstance(self.commitments, tuple):
            object.__setattr__(self, "commitments", tuple(self.commitments))


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _valid_n(n: object) -> bool:
    # `64.0 in RANGE_BITS` and `True in (1,)` hold in Python: insist on an int.
    return type(n) is int and n in RANGE_BITS


def _pad(count: int) -> int:
    """`count` rounded up to a power of two (count >= 1)."""
    return 1 << (count - 1).bit_length()


def _batch_invert(xs: Sequence[int]) -> list[int]:
    """Inverses of non-zero scalars with one modular inversion (Montgomery)."""
    prefix = []
    acc = 1
    for x in xs:
        prefix.append(acc)
        acc = acc * x % ORDER
    inv = pow(acc, -1, ORDER)
    out = [0] * len(xs)
    for i in range(len(xs) - 1, -1, -1):
        out[i] = prefix[i] * inv % ORDER
        inv = inv * xs[i] % ORDER
    return out


def _powers(x: int, count: int) -> list[int]:
    """[1, x, x^2, ..., x^(count-1)] mod r."""
    out = [1] * count
    acc = 1
    for i in range(1, count):
        acc = acc * x % ORDER
        out[i] = acc
    return out


#: Thread safe without a lock: a digest is a pure function of the immutable
#: generator prefix, so a race only computes the same bytes twice, and the
#: dict assignment is atomic.
_DIGESTS: dict[tuple[str, int], bytes] = {}


def _generator_digest(count: int) -> bytes:
    """The SHA-512 digest of the encodings of the first `count` G_i and H_i (the
    transcript's "gens.digest"; cached per backend and count, both backends give
    the same bytes)."""
    key = (backend().name, count)
    digest = _DIGESTS.get(key)
    if digest is None:
        Gs, Hs = bulletproof_generators(count)
        h = hashlib.sha512()
        h.update(b"oretrace/bulletproofs/generators/v1")
        h.update(struct.pack(">I", len(_GENERATOR_DST)) + _GENERATOR_DST)
        h.update(struct.pack(">Q", count))
        for p in Gs:
            h.update(p.to_bytes())
        for p in Hs:
            h.update(p.to_bytes())
        digest = _DIGESTS[key] = h.digest()
    return digest


#: (backend, n, count) -> `Frames` of transcript fields 1-8; at most
#: len(RANGE_BITS) * MAX_AGGREGATION entries per backend. Thread safe like `_DIGESTS`.
_STATEMENT_FRAMES: dict[tuple[str, int, int], Frames] = {}


def _statement_frames(n: int, count: int) -> Frames:
    """Transcript fields 1-8 of docs/bulletproofs.md: they depend only on n and the
    number of values, so a batch of like proofs frames them once."""
    key = (backend().name, n, count)
    frames = _STATEMENT_FRAMES.get(key)
    if frames is None:
        m = _pad(count)

        def record(t: Transcript) -> None:
            t.domain_separator(DOMAIN)
            t.append_u64(b"n", n)
            t.append_u64(b"m", m)
            t.append_u64(b"values", count)
            t.append_point(b"G", G())
            t.append_point(b"H", H())
            t.append_u64(b"gens.count", n * m)
            t.append_message(b"gens.digest", _generator_digest(n * m))

        frames = _STATEMENT_FRAMES[key] = Frames(record)
    return frames


def _bind_statement(t: Transcript, n: int, count: int, V: Sequence[Point]) -> None:
    """Transcript fields 1-9 of docs/bulletproofs.md (shared by prover and verifier);
    V is padded to m = `_pad(count)` points."""
    t.append_frames(_statement_frames(n, count))
    t.append_points(b"V", V)


# ---------------------------------------------------------------------------
# prover
# ---------------------------------------------------------------------------


def prove_range(transcript: Transcript, openings: Sequence[Opening], n: int = 64) -> tuple[RangeProof, list[Point]]:
    """Prove that every opening.value lies in [0, 2^n), in one aggregated proof.

    Returns the proof and the commitments V_j = commit(v_j, r_j) in the order
    of `openings` (unpadded). The transcript must already be bound to the
    caller's statement and context; it is advanced exactly as `verify_range`
    advances the verifier's copy.
    """
    if not _valid_n(n):
        raise ProvingError(f"range proofs support n in {RANGE_BITS}, not {n!r}")
    openings = list(openings)
    count = len(openings)
    if not 1 <= count <= MAX_AGGREGATION:
        raise ProvingError(f"a range proof covers 1 to {MAX_AGGREGATION} values, got {count}")
    values: list[int] = []
    blindings: list[int] = []
    for idx, o in enumerate(openings):
        v, r = o.value, o.blinding
        if not isinstance(v, int) or isinstance(v, bool) or not isinstance(r, int) or isinstance(r, bool):
            raise ProvingError(f"value #{idx}: value and blinding must be integers")
        if not 0 <= v < 1 << n:
            raise ProvingError(f"value #{idx} is not in [0, 2^{n})")
        values.append(v)
        blindings.append(r % ORDER)

    commitments = [commit(v, r) for v, r in zip(values, blindings)]
    m = _pad(count)
    pad = m - count
    values_p = values + [0] * pad
    blindings_p = blindings + [0] * pad
    V = commitments + [Point.identity()] * pad
    N = n * m
    Gs, Hs = bulletproof_generators(N)
    g, h = G(), H()

    _bind_statement(transcript, n, count, V)
    rng = transcript.rng([*values_p, *blindings_p])
    alpha, rho, tau1, tau2 = rng.scalars(4)
    sL = rng.scalars(N)
    sR = rng.scalars(N)

    # a_L = bits of the values, a_R = a_L - 1.
    aL = [(v >> k) & 1 for v in values_p for k in range(n)]
    # A = alpha H + <a_L, G> + <a_R, H>: the vector part is a sum of points
    # (coefficients 0, 1 and -1), so additions instead of an MSM.
    plus = minus = None
    for i, bit in enumerate(aL):
        if bit:
            plus = Gs[i] if plus is None else plus + Gs[i]
        else:
            minus = Hs[i] if minus is None else minus + Hs[i]
    A = h * alpha
    if plus is not None:
        A = A + plus
    if minus is not None:
        A = A - minus
    S = msm([h, *Gs, *Hs], [rho, *sL, *sR])
    _nonidentity_or_fail(A=A, S=S)
    transcript.append_point(b"A", A)
    transcript.append_point(b"S", S)
    y = transcript.challenge_scalar(b"y")
    z = transcript.challenge_scalar(b"z")

    # l(X) = (a_L - z) + s_L X ;  r(X) = y^N o (a_R + z + s_R X) + z^(2+j) 2^k
    ypow = _powers(y, N)
    zpow = _powers(z, m + 2)[2:]  # z^(2+j)
    two = [1 << k for k in range(n)]
    l0 = [(bit - z) % ORDER for bit in aL]
    r0 = []
    for j in range(m):
        zj = zpow[j]
        base = j * n
        for k in range(n):
            i = base + k
            r0.append((ypow[i] * (aL[i] - 1 + z) + zj * two[k]) % ORDER)
    r1 = [yp * s % ORDER for yp, s in zip(ypow, sR)]
    t1 = (sum(map(mul, l0, r1)) + sum(map(mul, sL, r0))) % ORDER
    t2 = sum(map(mul, sL, r1)) % ORDER
    T1 = msm([g, h], [t1, tau1])
    T2 = msm([g, h], [t2, tau2])
    _nonidentity_or_fail(T1=T1, T2=T2)
    transcript.append_point(b"T1", T1)
    transcript.append_point(b"T2", T2)
    x = transcript.challenge_scalar(b"x")

    l_vec = [(a0 + a1 * x) % ORDER for a0, a1 in zip(l0, sL)]
    r_vec = [(b0 + b1 * x) % ORDER for b0, b1 in zip(r0, r1)]
    t_hat = sum(map(mul, l_vec, r_vec)) % ORDER
    tau_x = (tau2 * x * x + tau1 * x + sum(map(mul, zpow, blindings_p))) % ORDER
    mu = (alpha + rho * x) % ORDER
    transcript.append_scalar(b"tau_x", tau_x)
    transcript.append_scalar(b"mu", mu)
    transcript.append_scalar(b"t_hat", t_hat)
    w = transcript.challenge_scalar(b"w")

    Ls, Rs, a_fin, b_fin = _prove_inner_product(transcript, l_vec, r_vec, Gs, Hs, y, g, w)
    transcript.append_scalar(b"a", a_fin)
    transcript.append_scalar(b"b", b_fin)
    proof = RangeProof(A, S, T1, T2, tau_x, mu, t_hat, tuple(Ls), tuple(Rs), a_fin, b_fin)
    return proof, commitments


def _nonidentity_or_fail(**points: Point) -> None:
    for name, p in points.items():
        if p.is_identity():  # probability ~2^-255 for an honest prover
            raise ProvingError(f"internal: {name} is the identity; retry with fresh randomness")


def _prove_inner_product(
    t: Transcript,
    a: list[int],
    b: list[int],
    Gs: list[Point],
    Hs: list[Point],
    y: int,
    g: Point,
    w: int,
) -> tuple[list[Point], list[Point], int, int]:
    """Inner-product argument for P = <a, G> + <b, H'> + <a, b> Q with
    H'_i = y^-i H_i and Q = w G.

    The folded generators are never materialised: after k rounds, folded
    generator p is the sum of the original G_i with i mod N_k = p, each with
    a running coefficient cg[i] (ch[i] for H, starting at y^-i). So L_k and
    R_k are MSMs over N original generators plus G, and no single scalar
    multiplications are spent on folding (those cost ~4-8x an MSM term here).
    """
    N = len(a)
    cg = [1] * N
    ch = _powers(pow(y, -1, ORDER), N)
    t.domain_separator(IPP_DOMAIN)
    t.append_u64(b"ipp.n", N)
    Ls: list[Point] = []
    Rs: list[Point] = []
    size = N
    while size > 1:
        half = size >> 1
        a_lo, a_hi = a[:half], a[half:]
        b_lo, b_hi = b[:half], b[half:]
        c_L = sum(map(mul, a_lo, b_hi)) % ORDER
        c_R = sum(map(mul, a_hi, b_lo)) % ORDER
        Lp: list[Point] = []
        Lk: list[int] = []
        Rp: list[Point] = []
        Rk: list[int] = []
        for base in range(0, N, size):
            lo = slice(base, base + half)
            hi = slice(base + half, base + size)
            # L = <a_lo, G_hi> + <b_hi, H'_lo> + c_L Q
            Lp += Gs[hi]
            Lk += map(mul, a_lo, cg[hi])
            Lp += Hs[lo]
            Lk += map(mul, b_hi, ch[lo])
            # R = <a_hi, G_lo> + <b_lo, H'_hi> + c_R Q
            Rp += Gs[lo]
            Rk += map(mul, a_hi, cg[lo])
            Rp += Hs[hi]
            Rk += map(mul, b_lo, ch[hi])
        Lp.append(g)
        Lk.append(c_L * w)
        Rp.append(g)
        Rk.append(c_R * w)
        L = msm(Lp, Lk)
        R = msm(Rp, Rk)
        _nonidentity_or_fail(L=L, R=R)
        t.append_point(b"L", L)
        t.append_point(b"R", R)
        u = t.challenge_scalar(b"u")
        u_inv = pow(u, -1, ORDER)
        Ls.append(L)
        Rs.append(R)
        # a' = u a_lo + u^-1 a_hi ; b' = u^-1 b_lo + u b_hi
        # G' = u^-1 G_lo + u G_hi ; H' = u H_lo + u^-1 H_hi
        a = [(p * u + q * u_inv) % ORDER for p, q in zip(a_lo, a_hi)]
        b = [(p * u_inv + q * u) % ORDER for p, q in zip(b_lo, b_hi)]
        for base in range(0, N, size):
            lo = slice(base, base + half)
            hi = slice(base + half, base + size)
            cg[lo] = [c * u_inv % ORDER for c in cg[lo]]
            cg[hi] = [c * u % ORDER for c in cg[hi]]
            ch[lo] = [c * u % ORDER for c in ch[lo]]
            ch[hi] = [c * u_inv % ORDER for c in ch[hi]]
        size = half
    return Ls, Rs, a[0], b[0]


# ---------------------------------------------------------------------------
# verifier
# ---------------------------------------------------------------------------


@dataclass
class _Replayed:
    """Everything the verifier derived for one proof: the padded statement, the
    recomputed challenges and (once `_invert_challenges` ran) the inverses of
    the round challenges u_r and of y, and the squares u_r^2 and u_r^-2 that
    both the proof-point coefficients and the G_i / H_i coefficients use."""

    n: int
    m: int
    V: list[Point]
    y: int
    z: int
    x: int
    w: int
    u: list[int]
    u_inv: list[int] | None = None
    y_inv: int | None = None
    u_sq: list[int] | None = None
    u_inv_sq: list[int] | None = None


def _invert_challenges(replayed: Sequence[_Replayed]) -> None:
    """Fill in u_inv, y_inv, u_sq and u_inv_sq of every replayed proof that lacks
    them, with ONE modular inversion for all of them (Montgomery's trick,
    `_batch_invert`)."""
    todo = [rp for rp in replayed if rp.u_inv is None]
    if not todo:
        return
    inverses = iter(_batch_invert([v for rp in todo for v in (*rp.u, rp.y)]))
    for rp in todo:
        u_inv = [next(inverses) for _ in rp.u]
        y_inv = next(inverses)
        # all four at once, `u_inv` last: `u_inv is None` is what marks a proof as not done yet
        rp.y_inv, rp.u_sq, rp.u_inv_sq = y_inv, [u * u % ORDER for u in rp.u], [u * u % ORDER for u in u_inv]
        rp.u_inv = u_inv


def _reject(reason: str) -> ProofError:
    return ProofError("range", reason)


def _replay(t: Transcript, commitments: Sequence[Point], proof: RangeProof, n: int) -> _Replayed:
    """Structural checks, then the verifier's side of the transcript: every
    challenge is recomputed here, none is read from the proof."""
    if not _valid_n(n):
        raise _reject(f"n = {n!r} is not one of {RANGE_BITS}")
    if not isinstance(proof, RangeProof):
        raise _reject("not a RangeProof")
    commitments = list(commitments)
    count = len(commitments)
    if not 1 <= count <= MAX_AGGREGATION:
        raise _reject(f"a range proof covers 1 to {MAX_AGGREGATION} commitments, got {count}")
    if not all(isinstance(c, Point) for c in commitments):
        raise _reject("commitments must be Points")
    m = _pad(count)
    N = n * m
    rounds = N.bit_length() - 1
    if len(proof.L) != rounds or len(proof.R) != rounds:
        raise _reject(
            f"expected {rounds} inner-product rounds for n={n}, m={m}, got {len(proof.L)} L and {len(proof.R)} R"
        )
    for name, p in (("A", proof.A), ("S", proof.S), ("T1", proof.T1), ("T2", proof.T2)):
        if not isinstance(p, Point) or p.is_identity():
            raise _reject(f"{name} is the identity or not a point")
    for r, (left, right) in enumerate(zip(proof.L, proof.R)):
        if not isinstance(left, Point) or left.is_identity():
            raise _reject(f"L[{r}] is the identity or not a point")
        if not isinstance(right, Point) or right.is_identity():
            raise _reject(f"R[{r}] is the identity or not a point")
    for name in ("tau_x", "mu", "t_hat", "a", "b"):
        k = getattr(proof, name)
        if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k < ORDER:
            raise _reject(f"{name} is not a canonical scalar")

    V = commitments + [Point.identity()] * (m - count)
    _bind_statement(t, n, count, V)
    t.append_point(b"A", proof.A)
    t.append_point(b"S", proof.S)
    y = t.challenge_scalar(b"y")
    z = t.challenge_scalar(b"z")
    t.append_point(b"T1", proof.T1)
    t.append_point(b"T2", proof.T2)
    x = t.challenge_scalar(b"x")
    t.append_scalar(b"tau_x", proof.tau_x)
    t.append_scalar(b"mu", proof.mu)
    t.append_scalar(b"t_hat", proof.t_hat)
    w = t.challenge_scalar(b"w")
    t.domain_separator(IPP_DOMAIN)
    t.append_u64(b"ipp.n", N)
    us = []
    for left, right in zip(proof.L, proof.R):
        t.append_point(b"L", left)
        t.append_point(b"R", right)
        us.append(t.challenge_scalar(b"u"))
    t.append_scalar(b"a", proof.a)
    t.append_scalar(b"b", proof.b)
    return _Replayed(n, m, V, y, z, x, w, us)


#: Levels of a doubling left unreduced (`_doubling`): skipping the reduction of the
#: last two levels saves 3N/4 of the N - 1 reductions mod r, for products below
#: r^3 (each later multiplication and addition costs a little more, the larger the
#: operands). A third level would save only N/8 more, for products below r^4.
_UNREDUCED_LEVELS = 2


def _doubling(first: int, factors: Sequence[int]) -> list[int]:
    """[first * prod_{p: bit p of i set} factors[p] for i < 2^len(factors)], in
    2^len(factors) - 1 multiplications (list comprehensions, no Python loop per item),
    for `first` and `factors` reduced mod r.

    The levels are reduced mod r except the last `_UNREDUCED_LEVELS`: those hold
    3/4 of the list, are final coefficients that the MSM reduces (once per batch,
    after summing) and are below r^3."""
    out = [first]
    cut = max(0, len(factors) - _UNREDUCED_LEVELS)
    for f in factors[:cut]:
        out += [v * f % ORDER for v in out]
    for f in factors[cut:]:
        out += [v * f for v in out]
    return out


def _vector_coefficients(
    n: int,
    m: int,
    z: int,
    us: Sequence[int],
    u_inv: Sequence[int],
    u_sq: Sequence[int],
    u_inv_sq: Sequence[int],
    y_inv: int,
    e1: int,
    a: int,
    b: int,
) -> tuple[list[int], list[int]]:
    """The G_i and H_i coefficients of one range proof's equation weighted by e1:
    the O(nm) part of the verifier's arithmetic (docs, "Verifier"). NOT reduced
    mod r: each lies in (-r, 2 r^3 + r), so below 2^768 in magnitude (a product of
    three reduced values from `_doubling`, plus or minus a reduced constant), and g_i
    is negative for most i; the MSM reduces each summed coefficient once
    (tests/test_range_verifier_reference.py checks the bounds and the values mod r).
    A plain function of ints, so a worker process can run it (`RangeRelation.split_terms`).

    Every i-dependent part is a product over the bits of i, so each is ONE
    doubling (`_doubling`, N - 1 multiplications) with the proof's constants
    folded into its first element, and no per-item product is left:

        g_i = -e1 z - e1 a s_i
        h_i =  e1 z + e1 z^(2+j) 2^k y^-i - e1 b y^-i s_(N-1-i)      (i = j n + k)

    Bit p of i (LSB first) is round K-1-p: s_0 = prod_r u_r^-1 and setting bit p
    multiplies s_i by u_(K-1-p)^2; s_(N-1-i) = 1/s_i starts at prod_r u_r and
    setting bit p divides it by u_(K-1-p)^2; y^-i gains y^-(2^p). The term
    2^k y^-i z^(2+j) = (2/y)^k (z y^-n)^j: for p < log2 n bit p of i is bit p of
    k, a factor (2/y)^(2^p) = 2^(2^p) y^-(2^p); the bits above are those of j,
    a factor (z y^-n)^(2^q) for bit q of j.
    """
    K = len(us)
    log_n = n.bit_length() - 1
    y_steps = [y_inv]  # y^-(2^p), p < K
    for _ in range(K - 1):
        y_steps.append(y_steps[-1] * y_steps[-1] % ORDER)
    s_first = 1  # s_0
    for v in u_inv:
        s_first = s_first * v % ORDER
    s_last = 1  # s_(N-1) = 1 / s_0
    for v in us:
        s_last = s_last * v % ORDER
    # -e1 a s_i, then -e1 z
    g_var = _doubling(-e1 * a % ORDER * s_first % ORDER, u_sq[::-1])
    # e1 z^(2+j) 2^k y^-i
    q_factors = [(y_steps[p] << (1 << p)) % ORDER for p in range(log_n)]
    zq = z
    for q in range(m.bit_length() - 1):
        q_factors.append(zq * y_steps[log_n + q] % ORDER)
        zq = zq * zq % ORDER
    e1z = e1 * z % ORDER
    q_var = _doubling(e1z * z % ORDER, q_factors)
    # -e1 b y^-i s_(N-1-i)
    b_var = _doubling(-e1 * b % ORDER * s_last % ORDER, [yp * v % ORDER for yp, v in zip(y_steps, u_inv_sq[::-1])])
    gco = [v - e1z for v in g_var]
    hco = [e1z + q + v for q, v in zip(q_var, b_var)]
    return gco, hco


def _scalars(rp: _Replayed, proof: RangeProof, e1: int, e2: int, vectors: bool = True):
    """The coefficients of the single verification equation (docs, section
    "Verifier"), with the inner-product part weighted by e1 and the
    polynomial-commitment part (t check) weighted by e2.

    Returns (g_i list, h_i list, coefficient of G, coefficient of H,
    per-proof points, their coefficients); the coefficient of A (e1) is
    included in the per-proof lists. The G_i / H_i coefficients
    (`_vector_coefficients`) are left empty if not `vectors`. Coefficients that
    are not multiplied again are left unreduced: the MSM reduces every one.
    """
    n, m, y, z, x, w, us = rp.n, rp.m, rp.y, rp.z, rp.x, rp.w, rp.u
    K = len(us)
    if rp.u_inv is None:
        _invert_challenges([rp])
    a, b = proof.a, proof.b
    gco, hco = _vector_coefficients(*_vector_arguments(rp, e1, a, b)) if vectors else ((), ())

    # delta(y, z) = (z - z^2) <1, y^N> - sum_j z^(3+j) (2^n - 1)
    zpow = _powers(z, m + 3)  # z^0 .. z^(m+2)
    sum_y = 1
    yk = y
    for _ in range(K):  # <1, y^N> for N a power of two, by doubling
        sum_y = sum_y * (1 + yk) % ORDER
        yk = yk * yk % ORDER
    delta = ((z - zpow[2]) * sum_y - ((1 << n) - 1) * sum(zpow[3 : 3 + m])) % ORDER
    coef_G = e1 * w % ORDER * (proof.t_hat - a * b) + e2 * (delta - proof.t_hat)
    coef_H = -e1 * proof.mu - e2 * proof.tau_x

    pts = [proof.A, proof.S, proof.T1, proof.T2, *proof.L, *proof.R, *rp.V]
    e2x = e2 * x % ORDER
    kco = [
        e1,
        e1 * x,
        e2x,
        e2x * x,
        *[e1 * v for v in rp.u_sq],
        *[e1 * v for v in rp.u_inv_sq],
        *[e2 * v for v in zpow[2 : 2 + m]],
    ]
    return gco, hco, coef_G, coef_H, pts, kco


def _vector_arguments(rp: _Replayed, e1: int, a: int, b: int) -> tuple:
    """The arguments of `_vector_coefficients` for one replayed proof (plain ints)."""
    return rp.n, rp.m, rp.z, rp.u, rp.u_inv, rp.u_sq, rp.u_inv_sq, rp.y_inv, e1, a, b


def verify_range(transcript: Transcript, commitments: Sequence[Point], proof: RangeProof, n: int = 64) -> None:
    """Check `proof` against `commitments` (unpadded, in the prover's order).

    Raises ProofError("range", reason). One multi-scalar multiplication of
    2 n m + 2 log2(n m) + m + 5 points (A is added outside it).
    """
    rp = _replay(transcript, commitments, proof, n)
    # The two equations (inner product, t polynomial) are combined with a
    # random weight that the prover cannot predict: transcript state + OS
    # randomness (see Transcript.rng).
    c = transcript.rng([]).scalar()
    gco, hco, coef_G, coef_H, pts, kco = _scalars(rp, proof, 1, c)
    N = rp.n * rp.m
    Gs, Hs = bulletproof_generators(N)
    # A has coefficient e1 = 1: add it instead of spending an MSM term on it.
    try:
        total = msm([*Gs, *Hs, G(), H(), *pts[1:]], [*gco, *hco, coef_G, coef_H, *kco[1:]]) + proof.A
    except DecodeError as exc:  # a deferred point (crypto.group.deferred_decoding) that does not decode
        raise _reject(f"malformed point ({exc.reason})") from None
    if not total.is_identity():
        raise _reject("the verification equation does not hold")


@dataclass(frozen=True)
class RangeRelation:
    """One range proof's verification equation for `crypto.batch`: two weights,
    e1 for the inner-product equation and e2 for the t-polynomial check
    (`_scalars`; docs/bulletproofs.md, "Batch verification")."""

    replayed: _Replayed
    proof: RangeProof
    binding: bytes
    weight_count: int = 2

    @property
    def proof_points(self) -> list[Point]:
        p = self.proof
        return [p.A, p.S, p.T1, p.T2, *p.L, *p.R]

    def terms(self, weights: Sequence[int]) -> Terms:
        e1, e2 = weights
        gco, hco, coef_G, coef_H, pts, kco = _scalars(self.replayed, self.proof, e1, e2)
        return Terms(gco, hco, coef_G, coef_H, pts, kco)

    def split_terms(self, weights: Sequence[int]) -> tuple[Terms, tuple]:
        """`terms` without the G_i / H_i coefficients, and (function, args) computing
        those (`_vector_coefficients`: plain ints, for a worker process)."""
        e1, e2 = weights
        rp = self.replayed
        _, _, coef_G, coef_H, pts, kco = _scalars(rp, self.proof, e1, e2, vectors=False)
        job = (_vector_coefficients, _vector_arguments(rp, e1, self.proof.a, self.proof.b))
        return Terms((), (), coef_G, coef_H, pts, kco), job

    @staticmethod
    def prepare_batch(relations: Sequence[RangeRelation]) -> None:
        """One modular inversion for the challenges of every range proof of a batch."""
        _invert_challenges([r.replayed for r in relations])


def range_relation(statement: RangeStatement) -> RangeRelation:
    """Replay the statement's transcript (on a clone: the statement is left
    untouched) and return the relation. ProofError("range", ...) for a proof
    that cannot be checked at all (wrong shape, identity points, bad n)."""
    if not isinstance(statement, RangeStatement):
        raise _reject("not a RangeStatement")
    t = statement.transcript.clone()
    rp = _replay(t, statement.commitments, statement.proof, statement.n)
    return RangeRelation(rp, statement.proof, scalar_to_bytes(t.challenge_scalar(b"batch-binding")))


def batch_verify_range(statements: Sequence[RangeStatement]) -> None:
    """Verify many range proofs with ONE multi-scalar multiplication (`crypto.batch`).

    Each proof's two equations are scaled by fresh random non-zero weights
    drawn from a transcript over every proof of the batch plus OS randomness;
    the shared G_i, H_i, G, H coefficients are summed. A failing batch is
    bisected to name the first failing proof:
    ProofError("range", "batch: proof #i rejected: ..."). The statements'
    transcripts are not modified (clones are used).
    """
    relations = []
    for idx, st in enumerate(statements):
        try:
            relations.append(range_relation(st))
        except ProofError as exc:
            raise _reject(f"batch: proof #{idx} rejected: {exc.reason}") from None
    try:
        verify_relations(relations)
    except BatchFailure as failure:
        raise _reject(f"batch: proof #{failure.index} rejected: {failure.reason}") from None
