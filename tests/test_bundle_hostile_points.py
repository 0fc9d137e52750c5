"""A hostile bundle's proof points and proofs get the same verdict whether the worker
processes or this process decode and multiply them: several kinds of bad encoding
(the identity, non-canonical encodings, a flag set wrong, the other point of the same x)
and a valid proof moved from one event to another, each named with its event."""

from __future__ import annotations

import pytest

from test_batch_verify import _replace_point
from test_bulletproofs import FIELD_P
from test_ledger_bundle import chain, clean_bundle, index_of, resigned, root_hex  # noqa: F401

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

POINT_OFFSET = 48  # the range proof's second point (S)


def _bad_encodings(original: bytes) -> dict[str, bytes]:
    x = int.from_bytes(bytes([original[0] & 0x1F]) + original[1:], "big")
    x_non_canonical = x + FIELD_P if x + FIELD_P < 1 << 381 else FIELD_P  # (x or 0) + p: still 381 bits
    return {
        "identity": bytes([0xC0]) + bytes(47),
        "identity-flag-with-bits": bytes([0xC0]) + bytes(46) + b"\x01",
        "x-plus-p": (x_non_canonical | (original[0] & 0xE0) << 376).to_bytes(48, "big"),
        "no-compression-flag": bytes([original[0] & 0x7F]) + original[1:],
        "other-sign": bytes([original[0] ^ 0x20]) + original[1:],
    }


def _verdict(bundle, root_hex, monkeypatch, workers: str):
    from ledger.bundle import verify_bundle

    monkeypatch.setattr("ledger.proofs.WORKERS_MIN_POINTS", 0)
    monkeypatch.setenv("ORETRACE_BUNDLE_WORKERS", workers)
    report = verify_bundle(bundle, root_hex)
    assert not report.ok
    failure = report.failed()
    return failure.name, failure.detail


@pytest.mark.parametrize("kind", ["identity", "identity-flag-with-bits", "x-plus-p", "no-compression-flag", "other-sign"])
def test_a_bad_proof_point_gets_the_same_verdict_with_and_without_workers(chain, clean_bundle, root_hex, monkeypatch, kind):
    i = index_of(clean_bundle, "transform")
    original = bytes.fromhex(clean_bundle["events"][i]["payload"]["range_proof"])[POINT_OFFSET : POINT_OFFSET + 48]
    bad_point = _bad_encodings(original)[kind]
    if kind == "x-plus-p":  # the case is what it says: an x coordinate of p or more
        assert int.from_bytes(bad_point, "big") & ((1 << 381) - 1) >= FIELD_P
    bad = resigned(chain, clean_bundle, i, lambda p: p.update(range_proof=_replace_point(p["range_proof"], POINT_OFFSET, bad_point)))
    verdicts = {w: _verdict(bad, root_hex, monkeypatch, w) for w in ("0", "2")}
    assert verdicts["0"] == verdicts["2"], verdicts
    name, detail = verdicts["2"]
    assert f"event {i} (transform" in detail, detail


@pytest.mark.parametrize("proof", ["range_proof", "capacity_proof"])
def test_a_proof_moved_to_another_event_is_named_there(chain, clean_bundle, root_hex, monkeypatch, proof):
    """The second issuance carries the first one's (valid) proof: its transcript binds
    the other statement, so the proof fails there, with and without workers."""
    first, second = index_of(clean_bundle, "issue", 0), index_of(clean_bundle, "issue", 1)
    moved = clean_bundle["events"][first]["payload"][proof]
    assert moved != clean_bundle["events"][second]["payload"][proof]
    bad = resigned(chain, clean_bundle, second, lambda p: p.update({proof: moved}))
    verdicts = {w: _verdict(bad, root_hex, monkeypatch, w) for w in ("0", "2")}
    assert verdicts["0"] == verdicts["2"], verdicts
    assert f"event {second} (issue" in verdicts["2"][1], verdicts
