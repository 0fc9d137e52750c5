"""The group layer: both backends agree byte for byte and decode strictly."""

from __future__ import annotations

import pytest
from py_ecc.optimized_bls12_381 import field_modulus as FIELD_MODULUS

from conftest import CURVE_BACKENDS, curve_backend
from crypto import group
from crypto.errors import DecodeError
from crypto.generators import H
from crypto.group import ORDER, Point, msm, scalar_from_bytes, scalar_to_bytes, use_backend

COMPRESSED = 0x80
INFINITY = 0x40
SIGN = 0x20
IDENTITY = bytes([COMPRESSED | INFINITY]) + bytes(47)


def _is_square(a: int) -> bool:
    return pow(a % FIELD_MODULUS, (FIELD_MODULUS - 1) // 2, FIELD_MODULUS) == 1


def _compressed(x: int, flags: int = COMPRESSED) -> bytes:
    return (x | (flags << 376)).to_bytes(48, "big")


def _x_on_curve_outside_subgroup() -> int:
    """The smallest x > 0 with x^3 + 4 a square: (x, y) is on E but not in the r-torsion.

    (x = 0 would give the order-3 point (0, 2), whose compressed encoding is
    ambiguous with the identity's x; it is tested separately.)
    """
    x = 1
    while not _is_square(x**3 + 4):
        x += 1
    return x


def _x_off_curve() -> int:
    x = 1
    while _is_square(x**3 + 4):
        x += 1
    return x


def _subgroup_point_with_small_x() -> tuple[int, int]:
    """k and x(k*G) with x + field modulus < 2^381, so x + p still fits the 381 bits."""
    use_backend("arkworks")
    k = 1
    while True:
        enc = (Point.generator() * k).to_bytes()
        x = int.from_bytes(enc, "big") & ((1 << 381) - 1)
        if x + FIELD_MODULUS < 1 << 381:
            return k, int.from_bytes(enc, "big")
        k += 1


# --------------------------------------------------------------------------- agreement


def test_backends_encode_identically():
    encodings = {}
    for name in CURVE_BACKENDS:
        with curve_backend(name):
            g = Point.generator()
            points = [g, g * 2, g * (ORDER - 1), H(), H() * 12345 + g * 7, Point.identity(), g - g]
            encodings[name] = [p.to_bytes() for p in points]
    assert encodings["arkworks"] == encodings["py_ecc"]
    assert encodings["arkworks"][5] == IDENTITY == encodings["arkworks"][6]


def test_roundtrip_and_arithmetic(curve):
    g = Point.generator()
    p = g * 5 + H() * 3
    assert Point.from_bytes(p.to_bytes()) == p
    assert Point.from_hex(p.hex()) == p
    assert g * 3 - g == g * 2
    assert -(g * 2) + g * 2 == Point.identity()
    assert g * ORDER == Point.identity()
    assert g * (ORDER + 4) == g * 4
    assert g * -1 == -g
    assert msm([g, H()], [5, 3]) == p
    assert msm([], []) == Point.identity()
    assert Point.from_bytes(IDENTITY, allow_identity=True).is_identity()


# --------------------------------------------------------------------------- strict decoding


def test_rejects_wrong_length(curve):
    g = Point.generator().to_bytes()
    for bad in (b"", g[:47], g + b"\x00", g * 2):
        with pytest.raises(DecodeError):
            Point.from_bytes(bad)
    with pytest.raises(DecodeError):
        Point.from_bytes(g.hex())  # type: ignore[arg-type]  # str, not bytes
    with pytest.raises(DecodeError):
        Point.from_hex("zz" * 48)


def test_rejects_all_zero_bytes(curve):
    for allow in (False, True):
        with pytest.raises(DecodeError):
            Point.from_bytes(bytes(48), allow_identity=allow)


def test_identity_only_when_allowed(curve):
    with pytest.raises(DecodeError):
        Point.from_bytes(IDENTITY)
    assert Point.from_bytes(IDENTITY, allow_identity=True) == Point.identity()


def test_rejects_noncanonical_flags(curve):
    g = Point.generator().to_bytes()
    bad = [
        bytes([g[0] & ~COMPRESSED & 0xFF]) + g[1:],  # compression flag cleared
        bytes([g[0] | INFINITY]) + g[1:],  # infinity flag on a real point
        bytes([COMPRESSED | INFINITY | SIGN]) + bytes(47),  # identity with the sign flag
        bytes([INFINITY]) + bytes(47),  # identity without the compression flag
        bytes([COMPRESSED | INFINITY]) + bytes(46) + b"\x01",  # identity with x != 0
    ]
    for data in bad:
        for allow in (False, True):
            with pytest.raises(DecodeError):
                Point.from_bytes(data, allow_identity=allow)


def test_rejects_x_not_below_field_modulus(curve):
    with pytest.raises(DecodeError):
        Point.from_bytes(_compressed(FIELD_MODULUS))
    # x + p for a valid subgroup point: would decode to that point if x were reduced.
    _, enc = _subgroup_point_with_small_x()
    use_backend(curve)
    flags = enc >> 381
    x = enc & ((1 << 381) - 1)
    with pytest.raises(DecodeError):
        Point.from_bytes(((flags << 381) | (x + FIELD_MODULUS)).to_bytes(48, "big"))
    # and the reduced one does decode (the test above is not vacuous)
    Point.from_bytes(enc.to_bytes(48, "big"))


def test_rejects_off_curve_x(curve):
    x = _x_off_curve()
    for flags in (COMPRESSED, COMPRESSED | SIGN):
        with pytest.raises(DecodeError):
            Point.from_bytes(_compressed(x, flags))


def test_rejects_on_curve_point_outside_subgroup(curve):
    from py_ecc import optimized_bls12_381 as oc
    from py_ecc.bls.point_compression import decompress_G1

    x = _x_on_curve_outside_subgroup()
    for flags in (COMPRESSED, COMPRESSED | SIGN):
        data = _compressed(x, flags)
        # The encoding is a valid point on the curve (py_ecc's decompression,
        # which checks the curve equation only, accepts it) ...
        point = decompress_G1(int.from_bytes(data, "big"))
        assert oc.is_on_curve(point, oc.b)
        # ... outside the prime-order subgroup ...
        assert not oc.is_inf(oc.multiply(point, ORDER))
        # ... and the strict decoder rejects it.
        with pytest.raises(DecodeError):
            Point.from_bytes(data)


def test_rejects_order_three_point_with_x_zero(curve):
    # (0, +-2) lies on y^2 = x^3 + 4 with order 3; its encoding has x = 0 and no infinity flag.
    for flags in (COMPRESSED, COMPRESSED | SIGN):
        for allow in (False, True):
            with pytest.raises(DecodeError):
                Point.from_bytes(_compressed(0, flags), allow_identity=allow)


# --------------------------------------------------------------------------- scalars and misuse


def test_scalar_encoding():
    for k in (0, 1, 2**64 - 1, ORDER - 1):
        assert scalar_from_bytes(scalar_to_bytes(k)) == k
    assert scalar_to_bytes(ORDER) == bytes(32)
    assert scalar_to_bytes(-1) == (ORDER - 1).to_bytes(32, "big")
    for bad in (ORDER, ORDER + 1, 2**256 - 1):
        with pytest.raises(DecodeError):
            scalar_from_bytes(bad.to_bytes(32, "big"))
    for bad in (b"", bytes(31), bytes(33)):
        with pytest.raises(DecodeError):
            scalar_from_bytes(bad)


def test_msm_length_mismatch_raises(curve):
    g = Point.generator()
    with pytest.raises(ValueError):
        msm([g, g], [1])
    with pytest.raises(ValueError):
        msm([g], [1, 2])


def test_mixing_backends_raises():
    use_backend("arkworks")
    a = Point.generator()
    with curve_backend("py_ecc"):
        b = Point.generator()
        with pytest.raises(ValueError):
            a + b
        with pytest.raises(ValueError):
            b - a
        with pytest.raises(ValueError):
            _ = a == b
        with pytest.raises(ValueError):
            msm([a, b], [1, 1])
    assert group.backend().name == "arkworks"
