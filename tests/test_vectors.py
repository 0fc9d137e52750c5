"""Shared test vectors (tests/vectors/*.json, made by tests/vectors/make_vectors.py).

Both backends reproduce the generators and commitments byte for byte, reject
every invalid encoding, and verify every stored proof. The stored sigma proofs
are reproduced byte for byte on both backends (deterministic nonces, vectors
only), so a proof made on either verifies on the other; the range-based ones
were made on arkworks and verify on py_ecc.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from conftest import curve_backend
from crypto.bulletproofs import RangeProof, batch_verify_range, verify_range
from crypto.claims import (
    in_range_batch_statement,
    nonnegative_batch_statement,
    share_batch_statement,
    share_in_range_batch_statement,
    verify_in_range,
    verify_nonnegative,
    verify_share,
    verify_share_in_range,
)
from crypto.errors import DecodeError, ProofError
from crypto.generators import DST, G, H, bulletproof_generators
from crypto.group import Point, scalar_from_bytes
from crypto.pedersen import commit
from crypto.sigma import OpeningProof, ZeroProof, verify_opening, verify_zero
from crypto.transcript import Transcript

VECTORS = Path(__file__).parent / "vectors"


def _load(name: str) -> dict:
    return json.loads((VECTORS / name).read_text())


def _make_vectors():
    spec = importlib.util.spec_from_file_location("make_vectors", VECTORS / "make_vectors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATORS = _load("generators.json")
COMMITMENTS = _load("commitments.json")
ENCODINGS = _load("encodings.json")
PROOFS = _load("proofs.json")["proofs"]


def _transcript(case: dict, context: str | None = None) -> Transcript:
    return Transcript(case["statement"].encode(), (case["context"] if context is None else context).encode())


def _point(text: str) -> Point:
    return Point.from_hex(text, allow_identity=True)


def verify_case(case: dict, context: str | None = None) -> None:
    """Decode a stored proof with the active backend and verify it."""
    t = _transcript(case, context)
    proof = bytes.fromhex(case["proof"])
    kind = case["kind"]
    if kind == "opening":
        verify_opening(t, _point(case["commitment"]), OpeningProof.from_bytes(proof))
    elif kind == "zero":
        verify_zero(t, [_point(p) for p in case["points"]], ZeroProof.from_bytes(proof))
    elif kind == "range":
        verify_range(t, [_point(c) for c in case["commitments"]], RangeProof.from_bytes(proof), case["n"])
    elif kind == "in_range":
        verify_in_range(t, _point(case["commitment"]), int(case["low"]), int(case["high"]), RangeProof.from_bytes(proof))
    elif kind == "share":
        verify_share(
            t, [_point(c) for c in case["commitments"]], case["index"], case["p"], case["q"], case["at_least"],
            RangeProof.from_bytes(proof),
        )  # fmt: skip
    elif kind == "share_in_range":
        verify_share_in_range(
            t, [_point(c) for c in case["commitments"]], case["index"], case["p"], case["p_max"], case["q"],
            RangeProof.from_bytes(proof),
        )  # fmt: skip
    elif kind == "nonnegative":
        verify_nonnegative(t, _point(case["commitment"]), RangeProof.from_bytes(proof))
    else:
        raise AssertionError(f"unknown vector kind {kind}")


# --------------------------------------------------------------------------- generators, commitments, encodings


def test_generators(curve):
    assert GENERATORS["dst"].encode() == DST
    assert G().hex() == GENERATORS["G"]
    assert H().hex() == GENERATORS["H"]["point"]
    assert Point.hash_to_curve(GENERATORS["H"]["message"].encode(), DST).hex() == GENERATORS["H"]["point"]
    Gs, Hs = bulletproof_generators(len(GENERATORS["G_i"]))
    assert [p.hex() for p in Gs] == [e["point"] for e in GENERATORS["G_i"]]
    assert [p.hex() for p in Hs] == [e["point"] for e in GENERATORS["H_i"]]
    # the documented messages, hashed directly
    for e in (GENERATORS["G_i"][0], GENERATORS["H_i"][-1]):
        assert Point.hash_to_curve(bytes.fromhex(e["message_hex"]), DST).hex() == e["point"]
    for text in (GENERATORS["G"], GENERATORS["H"]["point"]):
        assert Point.from_hex(text).hex() == text


def test_commitments(curve):
    cases = COMMITMENTS["cases"]
    values = {int(c["value"]) for c in cases}
    assert {0, 2**64 - 1} <= values
    for case in cases:
        v, r = int(case["value"]), scalar_from_bytes(bytes.fromhex(case["blinding"]))
        assert commit(v, r).hex() == case["commitment"]
        assert _point(case["commitment"]).hex() == case["commitment"]


def test_invalid_encodings_rejected(curve):
    for case in ENCODINGS["invalid_points"]:
        for allow in (False, True):
            with pytest.raises(DecodeError):
                Point.from_hex(case["hex"], allow_identity=allow)
                pytest.fail(f"accepted: {case['reason']}")
    for case in ENCODINGS["invalid_scalars"]:
        with pytest.raises(DecodeError):
            scalar_from_bytes(bytes.fromhex(case["hex"]))
    assert Point.from_hex(ENCODINGS["identity"], allow_identity=True).is_identity()
    with pytest.raises(DecodeError):
        Point.from_hex(ENCODINGS["identity"])


# --------------------------------------------------------------------------- proofs


def test_every_kind_is_present():
    assert [c["kind"] for c in PROOFS] == [
        "opening", "zero", "range", "in_range", "share", "share_in_range", "nonnegative"
    ]  # fmt: skip
    assert len(next(c for c in PROOFS if c["kind"] == "range")["commitments"]) == 2


def test_stored_proofs_verify(curve):
    for case in PROOFS:
        verify_case(case)


def test_stored_proofs_fail_in_another_context():
    for case in PROOFS:
        with pytest.raises(ProofError):
            verify_case(case, context=case["context"].replace("vectors", "elsewhere"))


def test_stored_range_proofs_batch():
    statements = []
    for case in PROOFS:
        if case["kind"] not in ("in_range", "share", "share_in_range", "nonnegative"):
            continue
        t, proof = _transcript(case), RangeProof.from_bytes(bytes.fromhex(case["proof"]))
        if case["kind"] == "in_range":
            statements.append(in_range_batch_statement(t, _point(case["commitment"]), int(case["low"]), int(case["high"]), proof))
        elif case["kind"] == "share":
            cs = [_point(c) for c in case["commitments"]]
            statements.append(share_batch_statement(t, cs, case["index"], case["p"], case["q"], case["at_least"], proof))
        elif case["kind"] == "share_in_range":
            cs = [_point(c) for c in case["commitments"]]
            args = (case["index"], case["p"], case["p_max"], case["q"])
            statements.append(share_in_range_batch_statement(t, cs, *args, proof))
        else:
            statements.append(nonnegative_batch_statement(t, _point(case["commitment"]), proof))
    assert len(statements) == 4
    batch_verify_range(statements)


def test_vectors_are_reproducible_on_arkworks():
    """Everything stored is regenerated byte for byte (sigma proofs on arkworks only here)."""
    mv = _make_vectors()
    files = mv.build(sigma_backends=("arkworks",))
    for name, obj in files.items():
        assert mv.dump(obj) == (VECTORS / name).read_text(), f"{name} is stale: run tests/vectors/make_vectors.py"


def test_sigma_proofs_reproduced_on_py_ecc():
    """The pure-Python backend makes the very same sigma proof bytes (same nonces),
    so stored proofs it verifies were, in effect, made by both backends."""
    mv = _make_vectors()
    stored = {c["kind"]: c for c in PROOFS}
    with curve_backend("py_ecc"):
        for make in mv.SIGMA_CASES:
            case = make()
            assert case == stored[case["kind"]]
