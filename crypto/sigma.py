"""Sigma (Schnorr-type) proofs of knowledge, made non-interactive by Fiat-Shamir.

Two proofs, both over BLS12-381 G1 with the Pedersen generators G and H:

* `OpeningProof`: knowledge of (v, r) with C = v*G + r*H (Okamoto).
* `ZeroProof`: for points D_1..D_k, knowledge of rho_i with D_i = rho_i*H for
  every i (k Schnorr proofs w.r.t. H under one transcript and one challenge).
  Since nobody knows log_G(H), D_i = rho_i*H shows that D_i commits to the
  value 0: this is the per-class mass-balance proof.

Transcript layout (after the caller's `Transcript(statement, context)`),
identical for prover and verifier; the verifier recomputes the challenge:

    dom-sep  "sigma/opening"  |  "sigma/zero"
    "G", "H"                  the generators in use
    "count"                   u64 number of public points (1 for an opening)
    "C" / "D"                 every public point (u64 length, then each point)
    "R"                       the prover's nonce commitments
    challenge "c"

Prover nonces come from `transcript.rng(witness)` (transcript state, the
secret witness and fresh OS randomness), never from public data alone.

Wire formats (all big-endian; points 48-byte compressed, scalars 32 bytes < r):

    OpeningProof: R || s_v || s_r                        (112 bytes)
    ZeroProof:    u32(k) || R_1..R_k || s_1..s_k         (4 + 80*k bytes)

Decoding is strict: exact length, every R a valid subgroup point and not the
identity, every scalar canonical. See docs/protocol.md.

Verification is a relation for `crypto.batch` (`opening_relation`,
`zero_relation`): the verifier replays the transcript, recomputes c, and the
proof holds iff

    opening:  s_v*G + s_r*H - R - c*C                          == identity
    zero:     for every i:  s_i*H - R_i - c*D_i                == identity

The zero proof's k equations take k independent weights w_i, so in a batch
they become (sum w_i*s_i)*H - sum w_i*R_i - sum (w_i*c)*D_i, folded with every
other proof of the batch into one multi-scalar multiplication. `verify_*`
check one proof alone the same way (one MSM, fresh weights).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from .batch import Terms, holds_alone
from .errors import DecodeError, ProofError, ProvingError
from .generators import G, H
from .group import ORDER, POINT_BYTES, SCALAR_BYTES, Point, msm, scalar_from_bytes, scalar_to_bytes
from .pedersen import Opening, commit_opening
from .transcript import Transcript

OPENING_DOMAIN = b"sigma/opening"
ZERO_DOMAIN = b"sigma/zero"

#: Upper bound on the number of points in one ZeroProof (bounds decoding work).
MAX_ZERO_POINTS = 1024

OPENING_PROOF_BYTES = POINT_BYTES + 2 * SCALAR_BYTES
_ZERO_ITEM_BYTES = POINT_BYTES + SCALAR_BYTES


def _check_scalar(name: str, k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < ORDER:
        raise ValueError(f"{name} must be an int in [0, ORDER)")
    return k


def _check_point(name: str, p: object) -> Point:
    if not isinstance(p, Point):
        raise ValueError(f"{name} must be a Point")
    return p


# --------------------------------------------------------------------------- opening


@dataclass(frozen=True)
class OpeningProof:
    """Proof of knowledge of (v, r) with C = v*G + r*H."""

    R: Point
    s_v: int
    s_r: int

    def __post_init__(self) -> None:
        _check_point("R", self.R)
        _check_scalar("s_v", self.s_v)
        _check_scalar("s_r", self.s_r)

    def to_bytes(self) -> bytes:
        return self.R.to_bytes() + scalar_to_bytes(self.s_v) + scalar_to_bytes(self.s_r)

    @classmethod
    def from_bytes(cls, data: bytes) -> OpeningProof:
        if not isinstance(data, (bytes, bytearray)) or len(data) != OPENING_PROOF_BYTES:
            raise DecodeError("opening proof", f"expected {OPENING_PROOF_BYTES} bytes")
        data = bytes(data)
        R = Point.from_bytes(data[:POINT_BYTES])  # identity rejected
        s_v = scalar_from_bytes(data[POINT_BYTES : POINT_BYTES + SCALAR_BYTES])
        s_r = scalar_from_bytes(data[POINT_BYTES + SCALAR_BYTES :])
        return cls(R, s_v, s_r)


def _opening_header(transcript: Transcript, commitment: Point) -> None:
    transcript.domain_separator(OPENING_DOMAIN)
    transcript.append_point(b"G", G())
    transcript.append_point(b"H", H())
    transcript.append_u64(b"count", 1)
    transcript.append_points(b"C", [commitment])


def prove_opening(transcript: Transcript, commitment: Point, opening: Opening) -> OpeningProof:
    """Prove knowledge of `opening` for `commitment`. ProvingError if it does not open it."""
    _check_point("commitment", commitment)
    v, r = opening.value % ORDER, opening.blinding % ORDER
    if commit_opening(opening) != commitment:
        raise ProvingError("the opening does not open the commitment")
    _opening_header(transcript, commitment)
    rng = transcript.rng([v, r])
    a, b = rng.scalar(), rng.scalar()
    R = msm([G(), H()], [a, b])
    transcript.append_point(b"R", R)
    c = transcript.challenge_scalar(b"c")
    return OpeningProof(R, (a + c * v) % ORDER, (b + c * r) % ORDER)


@dataclass(frozen=True)
class OpeningRelation:
    """s_v*G + s_r*H - R - c*C == identity, for `crypto.batch` (one weight)."""

    commitment: Point
    proof: OpeningProof
    c: int
    binding: bytes
    weight_count: int = 1

    @property
    def proof_points(self) -> list[Point]:
        return [self.proof.R]

    def terms(self, weights: Sequence[int]) -> Terms:
        (w,) = weights
        p = self.proof
        return Terms((), (), w * p.s_v, w * p.s_r, [p.R, self.commitment], [-w, -w * self.c])


def opening_relation(transcript: Transcript, commitment: Point, proof: OpeningProof) -> OpeningRelation:
    """Replay the transcript (consumed) and return the proof's relation. ProofError("opening", ...) if malformed."""
    if not isinstance(proof, OpeningProof) or not isinstance(commitment, Point):
        raise ProofError("opening", "wrong argument types")
    if proof.R.is_identity():
        raise ProofError("opening", "nonce commitment R is the identity")
    _opening_header(transcript, commitment)
    transcript.append_point(b"R", proof.R)
    c = transcript.challenge_scalar(b"c")
    return OpeningRelation(commitment, proof, c, scalar_to_bytes(transcript.clone().challenge_scalar(b"batch-binding")))


def verify_opening(transcript: Transcript, commitment: Point, proof: OpeningProof) -> None:
    """Check s_v*G + s_r*H == R + c*C. Raises ProofError("opening", ...)."""
    _check_alone("opening", opening_relation(transcript, commitment, proof))


def _check_alone(kind: str, relation) -> None:
    try:
        ok = holds_alone(relation)
    except DecodeError as exc:
        raise ProofError(kind, f"malformed point ({exc.reason})") from None
    if not ok:
        raise ProofError(kind, "the proof does not verify")


# --------------------------------------------------------------------------- zero


@dataclass(frozen=True)
class ZeroProof:
    """Proof of knowledge of rho_i with D_i = rho_i*H for every i (one challenge)."""

    R: tuple[Point, ...]
    s: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "R", tuple(self.R))
        object.__setattr__(self, "s", tuple(self.s))
        if len(self.R) != len(self.s):
            raise ValueError("ZeroProof: R and s differ in length")
        if not 1 <= len(self.R) <= MAX_ZERO_POINTS:
            raise ValueError(f"ZeroProof: between 1 and {MAX_ZERO_POINTS} points")
        for p in self.R:
            _check_point("R_i", p)
        for k in self.s:
            _check_scalar("s_i", k)

    def to_bytes(self) -> bytes:
        return (
            struct.pack(">I", len(self.R))
            + b"".join(p.to_bytes() for p in self.R)
            + b"".join(scalar_to_bytes(k) for k in self.s)
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> ZeroProof:
        if not isinstance(data, (bytes, bytearray)) or len(data) < 4:
            raise DecodeError("zero proof", "too short")
        data = bytes(data)
        (count,) = struct.unpack(">I", data[:4])
        if not 1 <= count <= MAX_ZERO_POINTS:
            raise DecodeError("zero proof", f"count must be between 1 and {MAX_ZERO_POINTS}")
        if len(data) != 4 + count * _ZERO_ITEM_BYTES:
            raise DecodeError("zero proof", f"expected {4 + count * _ZERO_ITEM_BYTES} bytes for {count} points")
        off = 4
        R = []
        for _ in range(count):
            R.append(Point.from_bytes(data[off : off + POINT_BYTES]))  # identity rejected
            off += POINT_BYTES
        s = []
        for _ in range(count):
            s.append(scalar_from_bytes(data[off : off + SCALAR_BYTES]))
            off += SCALAR_BYTES
        return cls(tuple(R), tuple(s))


def _zero_header(transcript: Transcript, points: Sequence[Point]) -> None:
    transcript.domain_separator(ZERO_DOMAIN)
    transcript.append_point(b"G", G())
    transcript.append_point(b"H", H())
    transcript.append_u64(b"count", len(points))
    transcript.append_points(b"D", points)


def prove_zero(transcript: Transcript, points: Sequence[Point], blindings: Sequence[int]) -> ZeroProof:
    """Prove knowledge of rho_i with points[i] = rho_i*H. ProvingError if some point is not."""
    points, blindings = list(points), [int(b) % ORDER for b in blindings]
    if len(points) != len(blindings):
        raise ProvingError(f"{len(points)} points but {len(blindings)} blindings")
    if not 1 <= len(points) <= MAX_ZERO_POINTS:
        raise ProvingError(f"a zero proof covers between 1 and {MAX_ZERO_POINTS} points")
    h = H()
    for i, (d, rho) in enumerate(zip(points, blindings)):
        _check_point("point", d)
        if h * rho != d:
            raise ProvingError(f"point {i} is not its blinding times H (it does not commit to 0)")
    _zero_header(transcript, points)
    rng = transcript.rng(blindings)
    nonces = rng.scalars(len(points))
    R = [h * k for k in nonces]
    transcript.append_points(b"R", R)
    c = transcript.challenge_scalar(b"c")
    return ZeroProof(tuple(R), tuple((k + c * rho) % ORDER for k, rho in zip(nonces, blindings)))


@dataclass(frozen=True)
class ZeroRelation:
    """s_i*H - R_i - c*D_i == identity for every i, for `crypto.batch` (one weight per i)."""

    points: tuple[Point, ...]
    proof: ZeroProof
    c: int
    binding: bytes

    @property
    def weight_count(self) -> int:
        return len(self.points)

    @property
    def proof_points(self) -> list[Point]:
        return list(self.proof.R)

    def terms(self, weights: Sequence[int]) -> Terms:
        s_total = sum(w * s for w, s in zip(weights, self.proof.s, strict=True))
        wc = [w * self.c for w in weights]
        return Terms((), (), 0, s_total, [*self.proof.R, *self.points], [*(-w for w in weights), *(-k for k in wc)])


def zero_relation(transcript: Transcript, points: Sequence[Point], proof: ZeroProof) -> ZeroRelation:
    """Replay the transcript (consumed) and return the proof's relation.

    D_i may be the identity (rho_i = 0); R_i must not be. Raises
    ProofError("balance", ...) for a proof that cannot be checked at all.
    """
    points = tuple(points)
    if not isinstance(proof, ZeroProof):
        raise ProofError("balance", "not a zero proof")
    if any(not isinstance(p, Point) for p in points):
        raise ProofError("balance", "statement points must be Points")
    if len(proof.R) != len(points):
        raise ProofError("balance", f"the proof covers {len(proof.R)} points, the statement {len(points)}")
    if any(r.is_identity() for r in proof.R):
        raise ProofError("balance", "a nonce commitment R_i is the identity")
    _zero_header(transcript, points)
    transcript.append_points(b"R", proof.R)
    c = transcript.challenge_scalar(b"c")
    return ZeroRelation(points, proof, c, scalar_to_bytes(transcript.clone().challenge_scalar(b"batch-binding")))


def verify_zero(transcript: Transcript, points: Sequence[Point], proof: ZeroProof) -> None:
    """Check s_i*H == R_i + c*D_i for every i, in one multi-scalar multiplication
    (the k equations weighted by fresh random scalars). Raises ProofError("balance", ...)."""
    _check_alone("balance", zero_relation(transcript, points, proof))
