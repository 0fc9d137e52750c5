"""The BLS12-381 G1 group behind one small interface, with two backends.

`arkworks` (py-arkworks-bls12381, Rust) is the fast default; `py_ecc` is the
pure-Python reference. Both produce byte-identical encodings (checked by the
shared vectors in tests/vectors/), so a proof made with one verifies with the
other.

Everything above this module works with `Point` (an immutable group element,
always in the prime-order subgroup) and plain Python ints for scalars, reduced
mod `ORDER`. The only ways to obtain a Point are the generator, the identity,
hash_to_curve, arithmetic on Points, and `Point.from_bytes`, which enforces the
full decoding rules: length, canonical encoding, on-curve, subgroup, and the
identity only when the caller allows it. That invariant is what lets `msm` use
the backends' unchecked multi-scalar multiplication safely.

Select the backend with `use_backend("py_ecc")` or the environment variable
`ORETRACE_CURVE_BACKEND` (read once, at import).

Two scopes make a verification of many proofs (a disclosure bundle) decode
each point once and as late as possible (crypto/batch.py uses both):

* `decode_cache()`: inside it, `Point.from_bytes` remembers every point it
  decoded, keyed by the 48 compressed bytes; the same bytes again give the
  same Point without a second subgroup check. Only successful decodings are
  kept, so a bad encoding fails every time, with the same error.
* `deferred_decoding()`: inside it, `Point.from_bytes` checks the length and
  the identity rule and returns a *deferred* Point that holds only its bytes.
  Its full decoding (canonical, on-curve, subgroup, not the identity) runs
  the first time the point is used in arithmetic, or by whoever verifies it
  in bulk (`deferred_encodings`, `decode_checked`) - a batch verifier that
  decodes proof points in worker processes, where they are also multiplied.
  Transcripts only need the bytes. A deferred point whose decoding fails
  raises DecodeError where it is first used.

`set_msm_threads(k)` lets one native MSM run in up to k parts on k cores at
once (arkworks releases the GIL inside its multiexp): the server's single
verification lane uses it to keep both cores busy while one batch's MSM runs
(api.service.Verifier; docs/performance.md, "One verification lane").
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import secrets
import threading
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from .errors import DecodeError

#: The prime order r of G1 (and of the scalar field).
ORDER = 0x73EDA753299D7D483339D80809A1D80553BDA402FFFE5BFEFFFFFFFF00000001
POINT_BYTES = 48
SCALAR_BYTES = 32
_IDENTITY_ENCODING = bytes([0xC0]) + bytes(47)


class Backend(Protocol):
    """What a curve library must provide. Native points are opaque here."""

    name: str

    def generator(self) -> Any: ...
    def identity(self) -> Any: ...
    def add(self, a: Any, b: Any) -> Any: ...
    def neg(self, a: Any) -> Any: ...
    def mul(self, a: Any, k: int) -> Any: ...
    def msm(self, points: Sequence[Any], scalars: Sequence[int]) -> Any: ...
    def eq(self, a: Any, b: Any) -> bool: ...
    def encode(self, a: Any) -> bytes: ...
    def decode(self, data: bytes) -> Any: ...
    def hash_to_curve(self, msg: bytes, dst: bytes) -> Any: ...


class ArkworksBackend:
    name = "arkworks"

    def __init__(self) -> None:
        from py_arkworks_bls12381 import G1Point, Scalar

        self._P = G1Point
        self._S = Scalar

    def generator(self):
        return self._P()

    def identity(self):
        return self._P.identity()

    def add(self, a, b):
        return a + b

    def neg(self, a):
        return -a

    def _scalar(self, k):
        # Scalar(int) silently reduces and rejects negatives, and costs ~5.6 us
        # per call; from_be_bytes of the reduced value is ~20x cheaper and
        # (being canonical) exactly the same scalar.
        return self._S.from_be_bytes((k % ORDER).to_bytes(SCALAR_BYTES, "big"))

    def mul(self, a, k):
        return a * self._scalar(k)

    def msm(self, points, scalars):
        # multiexp_unchecked truncates on a length mismatch and skips subgroup
        # checks: lengths are asserted by the caller, points are all validated.
        from_be = self._S.from_be_bytes
        points = list(points)
        scalars = [from_be((k % ORDER).to_bytes(SCALAR_BYTES, "big")) for k in scalars]
        parts = _msm_threads.parts(len(points))
        if parts == 1:
            return self._P.multiexp_unchecked(points, scalars)
        # multiexp releases the GIL: the parts run on as many cores at once
        step = -(-len(points) // parts)
        futures = [
            _msm_threads.pool.submit(self._P.multiexp_unchecked, points[i : i + step], scalars[i : i + step])
            for i in range(step, len(points), step)
        ]
        total = self._P.multiexp_unchecked(points[:step], scalars[:step])  # the first part in this thread
        for future in futures:
            total = total + future.result()
        return total

    def eq(self, a, b):
        return a == b

    def encode(self, a):
        return bytes(a.to_compressed_bytes())

    def decode(self, data):
        try:
            return self._P.from_compressed_bytes(data)  # on-curve and subgroup checked
        except Exception as exc:  # the binding raises plain exceptions
            raise DecodeError("point", f"not a valid compressed G1 point in the subgroup ({exc})") from None

    def hash_to_curve(self, msg, dst):
        return self._P.hash_to_curve(msg, dst)


class PyEccBackend:
    name = "py_ecc"

    def __init__(self) -> None:
        import hashlib

        from py_ecc import optimized_bls12_381 as curve
        from py_ecc.bls import point_compression
        from py_ecc.bls.hash_to_curve import hash_to_G1

        self._c = curve
        self._pc = point_compression
        self._h2c = lambda msg, dst: hash_to_G1(msg, dst, hashlib.sha256)

    def generator(self):
        return self._c.G1

    def identity(self):
        return self._c.Z1

    def add(self, a, b):
        return self._c.add(a, b)

    def neg(self, a):
        return self._c.neg(a)

    def mul(self, a, k):
        k %= ORDER  # multiply(P, negative) recurses forever
        return self._c.Z1 if k == 0 else self._c.multiply(a, k)

    def msm(self, points, scalars):
        acc = self._c.Z1
        for p, k in zip(points, scalars, strict=True):
            acc = self._c.add(acc, self.mul(p, k))
        return acc

    def eq(self, a, b):
        return self._c.eq(a, b)

    def encode(self, a):
        return self._pc.compress_G1(a).to_bytes(POINT_BYTES, "big")

    def decode(self, data):
        try:
            point = self._pc.decompress_G1(int.from_bytes(data, "big"))
        except ValueError as exc:
            raise DecodeError("point", str(exc)) from None
        # decompress_G1 checks the curve equation only; the subgroup is ours to check.
        if not self._c.is_inf(self._c.multiply(point, ORDER)):
            raise DecodeError("point", "not in the prime-order subgroup")
        return point

    def hash_to_curve(self, msg, dst):
        return self._h2c(msg, dst)


_BACKENDS = {"arkworks": ArkworksBackend, "py_ecc": PyEccBackend}
_instances: dict[str, Backend] = {}
_instances_lock = threading.Lock()
_active: Backend


def get_backend(name: str) -> Backend:
    """The one instance of backend `name` in this process (Points of two instances
    cannot be mixed, so it is built once, under a lock). ValueError if unknown."""
    if name not in _BACKENDS:
        raise ValueError(f"unknown curve backend {name!r}; choose one of {sorted(_BACKENDS)}")
    instance = _instances.get(name)
    if instance is None:
        with _instances_lock:
            instance = _instances.get(name)
            if instance is None:
                instance = _instances[name] = _BACKENDS[name]()
    return instance


def use_backend(name: str) -> None:
    """Make `name` the backend for all new Points. Existing Points keep theirs."""
    global _active
    _active = get_backend(name)


def backend() -> Backend:
    return _active


try:
    use_backend(os.environ.get("ORETRACE_CURVE_BACKEND") or "arkworks")  # empty = unset, as for every setting
except ValueError as exc:
    raise ValueError(f"ORETRACE_CURVE_BACKEND: {exc}") from None


class Point:
    """An element of the prime-order subgroup of BLS12-381 G1. Immutable."""

    __slots__ = ("_b", "_v", "_enc")

    def __init__(self, b: Backend, value: Any, encoding: bytes | None = None):
        self._b = b
        self._v = value
        self._enc = encoding

    # construction -------------------------------------------------------
    @classmethod
    def generator(cls) -> Point:
        return cls(_active, _active.generator())

    @classmethod
    def identity(cls) -> Point:
        return cls(_active, _active.identity(), _IDENTITY_ENCODING)

    @classmethod
    def hash_to_curve(cls, msg: bytes, dst: bytes) -> Point:
        """RFC 9380 BLS12381G1_XMD:SHA-256_SSWU_RO_ under the given DST."""
        if len(dst) > 255:
            raise ValueError("DST longer than 255 bytes")
        return cls(_active, _active.hash_to_curve(msg, dst))

    @classmethod
    def from_bytes(cls, data: bytes, *, allow_identity: bool = False) -> Point:
        """Strict decoding of a 48-byte compressed point from outside.

        DecodeError on a wrong length, a non-canonical encoding, a point off
        the curve or outside the prime-order subgroup, or the identity unless
        `allow_identity`. Inside `deferred_decoding()` only the length and the
        identity rule are checked here, the rest when the point is first used
        (see the module docstring); inside `decode_cache()` a repeated
        encoding is not decoded again.
        """
        if not isinstance(data, (bytes, bytearray)) or len(data) != POINT_BYTES:
            raise DecodeError("point", f"expected {POINT_BYTES} bytes")
        data = bytes(data)
        if data == _IDENTITY_ENCODING:
            if not allow_identity:
                raise DecodeError("point", "the identity is not allowed here")
            return cls.identity()
        cache = _DECODED.get()
        if cache is not None:
            point = cache.get(data)
            if point is not None and point._b is _active:
                return point
        if _DEFERRED.get():
            return cls(_active, None, data)
        point = cls(_active, decode_checked(_active, data), data)
        if cache is not None:
            cache[data] = point
        return point

    @classmethod
    def from_hex(cls, text: str, *, allow_identity: bool = False) -> Point:
        try:
            raw = bytes.fromhex(text)
        except (ValueError, TypeError):
            raise DecodeError("point", "not hexadecimal") from None
        return cls.from_bytes(raw, allow_identity=allow_identity)

    def is_deferred(self) -> bool:
        """True while the point holds only its encoding (see `deferred_decoding`)."""
        return self._v is None

    def native(self) -> Any:
        """The backend's point; a deferred point is decoded (fully checked) now.

        DecodeError if a deferred point's bytes are not a valid point.
        """
        if self._v is None:
            self._v = decode_checked(self._b, self._enc)
        return self._v

    # arithmetic ---------------------------------------------------------
    def _same(self, other: Point) -> Any:
        if not isinstance(other, Point):
            return NotImplemented
        if other._b is not self._b:
            raise ValueError("points from different curve backends cannot be mixed")
        return other.native()

    def __add__(self, other: Point) -> Point:
        return Point(self._b, self._b.add(self.native(), self._same(other)))

    def __sub__(self, other: Point) -> Point:
        return Point(self._b, self._b.add(self.native(), self._b.neg(self._same(other))))

    def __neg__(self) -> Point:
        return Point(self._b, self._b.neg(self.native()))

    def __mul__(self, k: int) -> Point:
        if not isinstance(k, int):
            return NotImplemented
        return Point(self._b, self._b.mul(self.native(), k))

    __rmul__ = __mul__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Point):
            return NotImplemented
        return self._b.eq(self.native(), self._same(other))

    def __hash__(self) -> int:
        return hash(self.to_bytes())

    def is_identity(self) -> bool:
        return self.to_bytes() == _IDENTITY_ENCODING

    # encoding -----------------------------------------------------------
    def to_bytes(self) -> bytes:
        if self._enc is None:
            self._enc = self._b.encode(self._v)
        return self._enc

    def hex(self) -> str:
        return self.to_bytes().hex()

    def __repr__(self) -> str:
        return f"Point({self.hex()[:16]}…)"


class _MsmThreads:
    """How many parts one native multi-scalar multiplication may run in at once
    (`set_msm_threads`), and the helper threads that run all but the caller's part."""

    #: Below this many points per part a split costs more than it saves: each part
    #: pays Pippenger's bucket sums again (measured here, 2 parts against one MSM of
    #: 2 x 300 / 2 x 600 / 1,226 points: 0.63 / 0.64 / 0.56 of its wall time,
    #: 1.18 / 1.27 / 1.11 of its CPU time).
    MIN_POINTS_PER_PART = 256

    def __init__(self) -> None:
        self.count = 1
        self._helpers = 0
        self.pool: Any = None
        self._lock = threading.Lock()

    def set(self, count: int) -> None:
        if type(count) is not int or count < 1:
            raise ValueError(f"MSM threads must be a positive integer, not {count!r}")
        from concurrent.futures import ThreadPoolExecutor

        with self._lock:
            if count - 1 > self._helpers:  # a bigger pool; MSMs running on the old one finish there
                self.pool = ThreadPoolExecutor(count - 1, thread_name_prefix="oretrace-msm")
                self._helpers = count - 1
            self.count = count

    def parts(self, points: int) -> int:
        return max(1, min(self.count, points // self.MIN_POINTS_PER_PART))


_msm_threads = _MsmThreads()


def set_msm_threads(count: int) -> None:
    """Let each native (arkworks) MSM of at least 2 x `_MsmThreads.MIN_POINTS_PER_PART`
    points run in up to `count` parts at once: `count` - 1 helper threads and the
    caller's (multiexp releases the GIL, so the parts use as many cores). Process
    wide; the helper threads are those of the largest count set so far (at most
    `crypto.batch.most_workers()` - 1 when set from the server's settings), idle when the
    count is lowered. 1 (the default): one part, in the caller's thread. The py_ecc backend
    (pure Python, holding the GIL) ignores it. ValueError unless `count` is an int >= 1."""
    _msm_threads.set(count)


def msm_threads() -> int:
    """The current `set_msm_threads` count of this process."""
    return _msm_threads.count


def msm(points: Sequence[Point], scalars: Sequence[int]) -> Point:
    """sum(k_i * P_i) in one multi-scalar multiplication (native on arkworks)."""
    if len(points) != len(scalars):
        raise ValueError(f"msm: {len(points)} points but {len(scalars)} scalars")
    if not points:
        return Point.identity()
    b = points[0]._b
    if any(p._b is not b for p in points):
        raise ValueError("points from different curve backends cannot be mixed")
    return Point(b, b.msm([p.native() for p in points], scalars))


def decode_checked(b: Backend, data: bytes) -> Any:
    """The backend point for 48 compressed bytes that are not the identity's.

    Full checks: canonical encoding, on the curve, in the subgroup, not the
    identity. DecodeError otherwise.
    """
    if data == _IDENTITY_ENCODING:
        raise DecodeError("point", "the identity is not allowed here")
    value = b.decode(data)
    if b.encode(value) != data:  # the identity re-encodes as _IDENTITY_ENCODING: caught here too
        raise DecodeError("point", "non-canonical encoding")
    return value


_DECODED: contextvars.ContextVar[dict[bytes, Point] | None] = contextvars.ContextVar("oretrace_decoded", default=None)
_DEFERRED: contextvars.ContextVar[bool] = contextvars.ContextVar("oretrace_deferred", default=False)


@contextlib.contextmanager
def decode_cache() -> Iterator[dict[bytes, Point]]:
    """Decode each distinct encoding once within this scope (module docstring).

    Yields the cache (compressed bytes -> Point). Nested scopes share the
    outermost cache.
    """
    cache = _DECODED.get()
    if cache is not None:
        yield cache
        return
    cache = {}
    token = _DECODED.set(cache)
    try:
        yield cache
    finally:
        _DECODED.reset(token)


@contextlib.contextmanager
def deferred_decoding(enabled: bool = True) -> Iterator[None]:
    """Within this scope `Point.from_bytes` defers the expensive checks (module docstring)."""
    token = _DEFERRED.set(enabled)
    try:
        yield
    finally:
        _DEFERRED.reset(token)


def scalar_to_bytes(k: int) -> bytes:
    """32-byte big-endian encoding of a scalar, reduced mod ORDER."""
    return (k % ORDER).to_bytes(SCALAR_BYTES, "big")


def scalar_from_bytes(data: bytes) -> int:
    """Strict decoding: exactly 32 bytes, big-endian, canonical (< ORDER)."""
    if not isinstance(data, (bytes, bytearray)) or len(data) != SCALAR_BYTES:
        raise DecodeError("scalar", f"expected {SCALAR_BYTES} bytes")
    k = int.from_bytes(data, "big")
    if k >= ORDER:
        raise DecodeError("scalar", "non-canonical (not below the group order)")
    return k


def random_scalar() -> int:
    """A uniformly random non-zero scalar from the OS CSPRNG."""
    while True:
        k = secrets.randbelow(ORDER)
        if k:
            return k
