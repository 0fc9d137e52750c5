"""Nothing-up-my-sleeve generators.

G is the standard BLS12-381 G1 generator. H and the Bulletproof vectors
G_i, H_i come from RFC 9380 hash_to_curve (BLS12381G1_XMD:SHA-256_SSWU_RO_)
under the versioned DST below, so nobody knows a discrete log between any two
of them (Pedersen binding rests on exactly that). The same bytes come out of
both backends; tests/vectors/generators.json pins them.

Results are cached per backend, and the vectors grow on demand: a 64-bit
aggregated proof over m values uses the first 64*m of each.
"""

from __future__ import annotations

import struct

from .group import Point, backend

DST = b"ORETRACE-V1-BLS12381G1_XMD:SHA-256_SSWU_RO_"
MAX_VECTOR = 64 * 64  # n = 64 bits, m = 64 values

_cache: dict[str, dict] = {}


def _slot(name: str) -> dict:
    return _cache.setdefault(backend().name, {}).setdefault(name, {})


def G() -> Point:
    slot = _slot("G")
    if "p" not in slot:
        slot["p"] = Point.generator()
    return slot["p"]


def H() -> Point:
    """The Pedersen blinding generator."""
    slot = _slot("H")
    if "p" not in slot:
        slot["p"] = Point.hash_to_curve(b"pedersen/H", DST)
    return slot["p"]


def _vector(tag: bytes, count: int) -> list[Point]:
    if not 0 <= count <= MAX_VECTOR:
        raise ValueError(f"generator vectors hold at most {MAX_VECTOR} points")
    slot = _slot(tag.decode())
    points = slot.setdefault("v", [])
    while len(points) < count:
        points.append(Point.hash_to_curve(tag + struct.pack(">I", len(points)), DST))
    return points[:count]


def bulletproof_generators(count: int) -> tuple[list[Point], list[Point]]:
    """The first `count` of the vectors (G_i) and (H_i)."""
    return _vector(b"bulletproofs/G/", count), _vector(b"bulletproofs/H/", count)
