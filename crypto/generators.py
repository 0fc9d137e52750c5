"""Nothing-up-my-sleeve generators.

G is the standard BLS12-381 G1 generator. H and the Bulletproof vectors
G_i, H_i come from RFC 9380 hash_to_curve (BLS12381G1_XMD:SHA-256_SSWU_RO_)
under the versioned DST below, so nobody knows a discrete log between any two
of them (Pedersen binding rests on exactly that). The same bytes come out of
both backends; tests/vectors/generators.json pins them.

Results are cached per backend, and the vectors grow on demand: a 64-bit
aggregated proof over m values uses the first 64*m of each (at most
MAX_VECTOR). `precompute()` builds every vector point a proof can use, so a
server can pay the ~3 s once, before it serves.

Concurrency: the cache is process-wide state shared by verifier threads, so
it is only ever *replaced*, never mutated in place. Each entry is an immutable
tuple; readers take it without a lock, and growth happens under one lock,
re-checking the length once inside it, deriving point i from its index i
(never from the current length), then publishing the longer tuple in one
assignment. Two threads growing the same vector at once therefore get the
same points, and nobody ever observes a half-built or shifted vector. Worker
processes each hold their own cache (spawned or forked: a fork gets a fresh
lock, see `os.register_at_fork` below).
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable

from .group import Backend, Point, backend

DST = b"ORETRACE-V1-BLS12381G1_XMD:SHA-256_SSWU_RO_"
MAX_VECTOR = 64 * 64  # n = 64 bits, m = 64 values

_VECTOR_TAGS = (b"bulletproofs/G/", b"bulletproofs/H/")

#: (backend name, entry name) -> immutable tuple of points; replaced, never mutated.
_cache: dict[tuple[str, str], tuple[Point, ...]] = {}
_lock = threading.Lock()


def _new_lock_in_child() -> None:
    """A fork copies the lock in whatever state another thread left it."""
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_in_child)


def _prefix(name: str, count: int, build: Callable[[Backend, int], Point]) -> tuple[Point, ...]:
    """The first `count` points of the entry `name` for the active backend;
    point i is `build(backend, i)`. Thread safe (see the module docstring)."""
    b = backend()
    key = (b.name, name)
    points = _cache.get(key, ())
    if len(points) < count:
        with _lock:
            points = _cache.get(key, ())
            if len(points) < count:
                points = points + tuple(build(b, i) for i in range(len(points), count))
                _cache[key] = points
    return points[:count]


def G() -> Point:
    return _prefix("G", 1, lambda b, _: Point(b, b.generator()))[0]


def H() -> Point:
    """The Pedersen blinding generator."""
    return _prefix("H", 1, lambda b, _: Point(b, b.hash_to_curve(b"pedersen/H", DST)))[0]


def _vector(tag: bytes, count: int) -> list[Point]:
    if type(count) is not int or not 0 <= count <= MAX_VECTOR:
        raise ValueError(f"generator vectors hold at most {MAX_VECTOR} points")
    return list(_prefix(tag.decode(), count, lambda b, i: Point(b, b.hash_to_curve(tag + struct.pack(">I", i), DST))))


def bulletproof_generators(count: int) -> tuple[list[Point], list[Point]]:
    """The first `count` of the vectors (G_i) and (H_i), 0 <= count <= MAX_VECTOR
    (ValueError otherwise). Fresh lists: callers may modify them."""
    return _vector(_VECTOR_TAGS[0], count), _vector(_VECTOR_TAGS[1], count)


def precompute(count: int = MAX_VECTOR) -> None:
    """Build G, H and the first `count` vector points for the active backend now
    (default: all MAX_VECTOR, every point any range proof can use)."""
    G()
    H()
    bulletproof_generators(count)
