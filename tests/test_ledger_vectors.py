"""Ledger vectors (tests/vectors/envelopes.json, transcripts.json, bundle.json, made by
tests/vectors/make_ledger_vectors.py) hold on both curve backends: every envelope
decodes strictly to its signed bytes, id and derived ids; every transcript challenge
is recomputed; the bundle gives its expected report. Tampering with any of them is
detected (the checks can fail)."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest

VECTORS = Path(__file__).parent / "vectors"


def _module():
    spec = importlib.util.spec_from_file_location("make_ledger_vectors", VECTORS / "make_ledger_vectors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def mlv():
    return _module()


@pytest.fixture(scope="module")
def stored() -> tuple[dict, dict, dict]:
    return tuple(json.loads((VECTORS / name).read_text()) for name in ("envelopes.json", "transcripts.json", "bundle.json"))


def test_ledger_vectors_hold(curve, mlv, stored):
    assert mlv.check(*stored) == []


def test_every_proof_kind_has_its_challenges(stored):
    statements = {t["statement"] for case in stored[1]["cases"] for t in case["transcripts"] if t["challenges"]}
    assert statements == {
        "oretrace/v2/issue/range", "oretrace/v2/issue/capacity", "oretrace/v2/transform/balance",
        "oretrace/v2/transform/range", "oretrace/v2/transform/loss-cap", "oretrace/v2/claim/amount_in_range",
        "oretrace/v2/claim/share_at_least",
    }  # fmt: skip


def test_expected_report_says_what_the_claim_means(stored):
    report = stored[2]["expected_report"]
    assert report["ok"] and report["meaning"]["model"] == "mass balance"
    assert report["meaning"]["identity_preserved"] is True
    assert [s["site_id"] for s in report["meaning"]["sites"]] == ["site-1"]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda e, t, b: e["cases"][2].__setitem__("signed_bytes_hex", e["cases"][2]["signed_bytes_hex"][:-2] + "00"),
        lambda e, t, b: e["cases"][4].__setitem__("event_id", "evt_" + "0" * 32),
        lambda e, t, b: e["cases"][0].__setitem__("signer_public_key", e["cases"][1]["signer_public_key"]),
        lambda e, t, b: t["cases"][0]["transcripts"][0]["challenges"][0].__setitem__("scalar", "00" * 32),
        lambda e, t, b: b["expected_report"].__setitem__("range_proofs", 6),
    ],
    ids=["signed-bytes", "event-id", "signer-key", "challenge", "report"],
)
def test_tampered_vectors_are_detected(mlv, stored, tamper):
    copies = copy.deepcopy(stored)
    tamper(*copies)
    assert mlv.check(*copies) != []
