"""Generate the shared test vectors in tests/vectors/*.json.

    .venv/bin/python tests/vectors/make_vectors.py          # (re)write the files
    .venv/bin/python tests/vectors/make_vectors.py --check  # compare, write nothing

Everything is deterministic. Blindings come from SHA-256 of a label, and proof
nonces are made reproducible by replacing the OS randomness that
`Transcript.rng` mixes in with a SHA-256 stream keyed by the proof's name
(`deterministic_rng`). That is for vectors only: real proofs MUST use fresh OS
randomness. With it, both backends produce byte-identical proofs; the sigma
proofs are generated on both and compared here, the range-based proofs on
arkworks (the pure-Python prover takes tens of seconds), and
tests/test_vectors.py verifies every stored proof on both backends.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import struct
import sys
import types
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from crypto import transcript as transcript_module  # noqa: E402
from crypto.bulletproofs import prove_range  # noqa: E402
from crypto.claims import prove_in_range, prove_nonnegative, prove_share, prove_share_in_range  # noqa: E402
from crypto.generators import DST, G, H, bulletproof_generators  # noqa: E402
from crypto.group import ORDER, Point, use_backend  # noqa: E402
from crypto.pedersen import Opening, commit, commit_opening  # noqa: E402
from crypto.sigma import prove_opening, prove_zero  # noqa: E402
from crypto.transcript import Transcript  # noqa: E402

HERE = Path(__file__).resolve().parent
SUITE = "BLS12381G1_XMD:SHA-256_SSWU_RO_"
VECTOR_COUNT = 8
FIELD_MODULUS = 0x1A0111EA397FE69A4B1BA7B6434BACD764774B84F38512BF6730D2A0F6B0F6241EABFFFEB153FFFFB9FEFFFFFFFFAAAB
STATEMENT_PREFIX = "oretrace/v1/test-vectors/"


def blinding(label: str) -> int:
    """A fixed, non-secret blinding for the vectors."""
    return int.from_bytes(hashlib.sha512(b"oretrace/test-vectors/blinding/" + label.encode()).digest(), "big") % ORDER


@contextlib.contextmanager
def deterministic_rng(name: str) -> Iterator[None]:
    """Replace the OS randomness of Transcript.rng by a SHA-256 stream keyed by `name`."""
    counter = 0

    def urandom(size: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < size:
            out += hashlib.sha256(b"oretrace/test-vectors/rng/" + name.encode() + struct.pack(">Q", counter)).digest()
            counter += 1
        return out[:size]

    saved = transcript_module.os
    transcript_module.os = types.SimpleNamespace(urandom=urandom)
    try:
        yield
    finally:
        transcript_module.os = saved


def transcript(case: dict) -> Transcript:
    return Transcript(case["statement"].encode(), case["context"].encode())


def _ctx(case: str) -> str:
    return json.dumps({"case": case, "network": "oretrace-vectors"}, sort_keys=True, separators=(",", ":"))


# --------------------------------------------------------------------------- generators and commitments


def generators_vector() -> dict:
    Gs, Hs = bulletproof_generators(VECTOR_COUNT)
    return {
        "description": "Pedersen and Bulletproof generators: G is the standard BLS12-381 G1 generator; "
        "every other point is RFC 9380 hash_to_curve(message, dst) with the suite below.",
        "suite": SUITE,
        "dst": DST.decode(),
        "G": G().hex(),
        "H": {"message": "pedersen/H", "point": H().hex()},
        "G_i": [
            {"i": i, "message_hex": (b"bulletproofs/G/" + struct.pack(">I", i)).hex(), "point": p.hex()}
            for i, p in enumerate(Gs)
        ],
        "H_i": [
            {"i": i, "message_hex": (b"bulletproofs/H/" + struct.pack(">I", i)).hex(), "point": p.hex()}
            for i, p in enumerate(Hs)
        ],
    }


COMMITMENT_CASES = [
    (0, 0),
    (1, 0),
    (0, 1),
    (1, 1),
    (0, "zero"),
    (42, "answer"),
    (1_000_000, "tonne"),
    (2**32, "two-to-32"),
    (2**64 - 1, "max"),
    (2**64 - 1, ORDER - 1),
]


def commitments_vector() -> dict:
    cases = []
    for v, r in COMMITMENT_CASES:
        r = blinding(r) if isinstance(r, str) else r
        cases.append(
            {"value": str(v), "blinding": r.to_bytes(32, "big").hex(), "commitment": commit(v, r).hex()}
        )
    return {
        "description": "C = value*G + blinding*H. value is a decimal string (it may exceed 2^53); "
        "blinding a 32-byte big-endian scalar; commitment the 48-byte compressed point.",
        "cases": cases,
    }


def encodings_vector() -> dict:
    """Encodings every decoder MUST reject (and the identity, accepted only where allowed)."""
    g = bytes.fromhex(G().hex())

    def enc(x: int, flags: int = 0x80) -> str:
        return (x | (flags << 376)).to_bytes(48, "big").hex()

    def is_square(a: int) -> bool:
        return pow(a % FIELD_MODULUS, (FIELD_MODULUS - 1) // 2, FIELD_MODULUS) == 1

    x_torsion = next(x for x in range(1, 100) if is_square(x**3 + 4))
    x_off = next(x for x in range(1, 100) if not is_square(x**3 + 4))
    k = 1
    while True:  # a subgroup point whose x + p still fits in 381 bits
        e = int.from_bytes((Point.generator() * k).to_bytes(), "big")
        if (e & ((1 << 381) - 1)) + FIELD_MODULUS < 1 << 381:
            break
        k += 1
    x_plus_p = (e + FIELD_MODULUS).to_bytes(48, "big").hex()
    identity = (bytes([0xC0]) + bytes(47)).hex()
    return {
        "description": "Point encodings a strict decoder rejects, with the reason; the identity is "
        "accepted only where a rule allows it. Scalars: 32-byte big-endian, < r.",
        "identity": identity,
        "invalid_points": [
            {"hex": "", "reason": "wrong length (0)"},
            {"hex": g.hex()[:94], "reason": "wrong length (47)"},
            {"hex": g.hex() + "00", "reason": "wrong length (49)"},
            {"hex": bytes(48).hex(), "reason": "48 zero bytes (compression flag clear)"},
            {"hex": bytes([g[0] & 0x7F]).hex() + g.hex()[2:], "reason": "compression flag clear"},
            {"hex": bytes([g[0] | 0x40]).hex() + g.hex()[2:], "reason": "infinity flag set on a finite point"},
            {"hex": "e0" + "00" * 47, "reason": "identity with the sign flag"},
            {"hex": "40" + "00" * 47, "reason": "identity without the compression flag"},
            {"hex": "c0" + "00" * 46 + "01", "reason": "infinity flag with x != 0"},
            {"hex": enc(0), "reason": "x = 0: the order-3 point (0, 2), not in the subgroup"},
            {"hex": enc(FIELD_MODULUS), "reason": "x = p (not below the field modulus)"},
            {"hex": x_plus_p, "reason": f"x + p for the valid point {k}*G (non-canonical x)"},
            {"hex": enc(x_off), "reason": f"x = {x_off}: x^3 + 4 is not a square (not on the curve)"},
            {"hex": enc(x_torsion), "reason": f"x = {x_torsion}: on the curve, not in the prime-order subgroup"},
            {"hex": enc(x_torsion, 0xA0), "reason": f"x = {x_torsion}, other y: not in the subgroup"},
        ],
        "invalid_scalars": [
            {"hex": ORDER.to_bytes(32, "big").hex(), "reason": "r (not below the group order)"},
            {"hex": (2**256 - 1).to_bytes(32, "big").hex(), "reason": "2^256 - 1"},
            {"hex": "00" * 31, "reason": "wrong length (31)"},
            {"hex": "00" * 33, "reason": "wrong length (33)"},
        ],
    }


# --------------------------------------------------------------------------- proofs


def _opening_case() -> dict:
    case = {"kind": "opening", "statement": STATEMENT_PREFIX + "opening", "context": _ctx("opening")}
    o = Opening(123456789, blinding("opening"))
    c = commit_opening(o)
    with deterministic_rng("opening"):
        proof = prove_opening(transcript(case), c, o)
    return {**case, "commitment": c.hex(), "proof": proof.to_bytes().hex()}


def _zero_case() -> dict:
    case = {"kind": "zero", "statement": STATEMENT_PREFIX + "zero", "context": _ctx("zero")}
    # three balances: two real differences in-out-loss, one absent (identity, rho = 0)
    a, b, loss = Opening(1000, blinding("zero/a")), Opening(600, blinding("zero/b")), Opening(400, blinding("zero/loss"))
    c, d = Opening(50, blinding("zero/c")), Opening(50, blinding("zero/d"))
    rhos = [(a - b - loss).blinding, (c - d).blinding, 0]
    points = [
        commit_opening(a) - commit_opening(b) - commit_opening(loss),
        commit_opening(c) - commit_opening(d),
        Point.identity(),
    ]
    with deterministic_rng("zero"):
        proof = prove_zero(transcript(case), points, rhos)
    return {**case, "points": [p.hex() for p in points], "proof": proof.to_bytes().hex()}


def _range_case() -> dict:
    case = {"kind": "range", "statement": STATEMENT_PREFIX + "range", "context": _ctx("range"), "n": 64}
    openings = [Opening(0, blinding("range/0")), Opening(2**64 - 1, blinding("range/1"))]
    with deterministic_rng("range"):
        proof, commitments = prove_range(transcript(case), openings, 64)
    return {**case, "commitments": [c.hex() for c in commitments], "proof": proof.to_bytes().hex()}


def _in_range_case() -> dict:
    case = {"kind": "in_range", "statement": STATEMENT_PREFIX + "in_range", "context": _ctx("in_range")}
    o = Opening(250_000, blinding("in_range"))
    c = commit_opening(o)
    low, high = 100_000, 500_000
    with deterministic_rng("in_range"):
        proof = prove_in_range(transcript(case), c, o, low, high)
    return {**case, "commitment": c.hex(), "low": str(low), "high": str(high), "proof": proof.to_bytes().hex()}


def _share_case() -> dict:
    case = {"kind": "share", "statement": STATEMENT_PREFIX + "share", "context": _ctx("share")}
    values = [700_000, 0, 300_000]  # index 2 holds 30 %: at least 16/100
    openings = [Opening(v, blinding(f"share/{i}")) for i, v in enumerate(values)]
    cs = [commit_opening(o) for o in openings]
    index, p, q, at_least = 2, 16, 100, True
    with deterministic_rng("share"):
        proof = prove_share(transcript(case), cs, openings, index, p, q, at_least)
    return {
        **case,
        "commitments": [c.hex() for c in cs],
        "index": index,
        "p": p,
        "q": q,
        "at_least": at_least,
        "proof": proof.to_bytes().hex(),
    }


def _share_in_range_case() -> dict:
    """Protocol v2: recycled (pre + post consumer) = 165 of 1000 against the rest, in [160, 169]/1000."""
    case = {"kind": "share_in_range", "statement": STATEMENT_PREFIX + "share_in_range", "context": _ctx("share_in_range")}
    openings = [Opening(165_000, blinding("share_in_range/0")), Opening(835_000, blinding("share_in_range/1"))]
    cs = [commit_opening(o) for o in openings]
    index, p, p_max, q = 0, 160, 169, 1000
    with deterministic_rng("share_in_range"):
        proof = prove_share_in_range(transcript(case), cs, openings, index, p, p_max, q)
    return {**case, "commitments": [c.hex() for c in cs], "index": index, "p": p, "p_max": p_max, "q": q,
            "proof": proof.to_bytes().hex()}  # fmt: skip


def _nonnegative_case() -> dict:
    case = {"kind": "nonnegative", "statement": STATEMENT_PREFIX + "nonnegative", "context": _ctx("nonnegative")}
    capacity, cumulative = Opening(5_000_000, blinding("capacity")), Opening(4_999_999, blinding("cumulative"))
    c = commit_opening(capacity) - commit_opening(cumulative)
    with deterministic_rng("nonnegative"):
        proof = prove_nonnegative(transcript(case), c, capacity - cumulative)
    return {**case, "commitment": c.hex(), "proof": proof.to_bytes().hex()}


SIGMA_CASES = (_opening_case, _zero_case)
RANGE_CASES = (_range_case, _in_range_case, _share_case, _share_in_range_case, _nonnegative_case)


def proofs_vector(*, sigma_backends: tuple[str, ...] = ("arkworks", "py_ecc")) -> dict:
    proofs = []
    try:
        for make in SIGMA_CASES:
            made = {}
            for name in sigma_backends:
                use_backend(name)
                made[name] = make()
            first = made[sigma_backends[0]]
            if any(m != first for m in made.values()):
                raise AssertionError(f"{first['kind']}: the backends produced different proofs")
            proofs.append(first)
        use_backend("arkworks")
        for make in RANGE_CASES:
            proofs.append(make())
    finally:
        use_backend("arkworks")
    return {
        "description": "One proof of each kind with its statement label and context (UTF-8), public "
        "inputs and proof bytes (hex). Nonces are deterministic for reproducibility (see "
        "make_vectors.py); the range-based proofs are 64-bit. Integers above 2^53 are decimal strings.",
        "proofs": proofs,
    }


def build(*, sigma_backends: tuple[str, ...] = ("arkworks", "py_ecc")) -> dict[str, dict]:
    use_backend("arkworks")
    return {
        "generators.json": generators_vector(),
        "commitments.json": commitments_vector(),
        "encodings.json": encodings_vector(),
        "proofs.json": proofs_vector(sigma_backends=sigma_backends),
    }


def dump(obj: dict) -> str:
    return json.dumps(obj, indent=2) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the stored files, write nothing")
    args = parser.parse_args()
    files = build()
    stale = []
    for name, obj in files.items():
        path = HERE / name
        text = dump(obj)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print("stale vectors: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
