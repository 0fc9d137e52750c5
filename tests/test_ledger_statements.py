"""Statement labels, transcript contexts and value layouts shared by prover and verifier."""

from __future__ import annotations

import json

from crypto.transcript import Transcript
from ledger import statements as st
from ledger.models import ORIGIN_CLASSES, ClaimKind


def challenge(transcript) -> int:
    return transcript.challenge_scalar(b"c")


def test_labels_are_distinct_and_versioned():
    labels = [st.ISSUE_RANGE, st.ISSUE_CAPACITY, st.TRANSFORM_BALANCE, st.TRANSFORM_RANGE, *st.CLAIM_LABELS.values()]
    assert len(set(labels)) == len(labels) == 4 + len(ClaimKind)
    assert all(label.startswith(b"oretrace/v2/") for label in labels)


def test_every_context_field_changes_the_challenge():
    base = ("net", "mine-a", "lot_1", "att_1", 0)
    variants = [("net2", *base[1:]), (base[0], "mine-b", *base[2:]), (*base[:2], "lot_2", *base[3:]),
                (*base[:3], "att_2", base[4]), (*base[:4], 1)]  # fmt: skip
    seen = {challenge(st.issuance_range_transcript(*base)), challenge(st.capacity_transcript(*base))}
    for args in variants:
        seen.add(challenge(st.issuance_range_transcript(*args)))
    assert len(seen) == 2 + len(variants)

    transform = ("net", "refiner", "ab" * 16, "refine", ["lot_1", "lot_2"], ["lot_3"])
    reordered = ("net", "refiner", "ab" * 16, "refine", ["lot_2", "lot_1"], ["lot_3"])
    other_process = ("net", "refiner", "ab" * 16, "merge", ["lot_1", "lot_2"], ["lot_3"])
    kinds = (st.transform_balance_transcript, st.transform_range_transcript, st.loss_cap_transcript)
    seen = {challenge(kind(*args)) for kind in kinds for args in (transform, reordered, other_process)}
    assert len(seen) == 9  # every label, input order and process (with its loss cap) changes the challenge

    share = st.claim_params(ClaimKind.share_at_least, "recycled_post_consumer", 16, 100)
    other = st.claim_params(ClaimKind.share_at_least, "recycled_post_consumer", 17, 100)
    assert share == {"kind": "share_at_least", "origin_class": "recycled_post_consumer", "p": 16, "q": 100}
    args = ("net", "oem", "clm_1", "lot_1", ClaimKind.share_at_least)
    assert challenge(st.claim_transcript(*args, share)) != challenge(st.claim_transcript(*args, other))


def test_context_is_canonical_json_of_the_facts():
    t = st.issuance_range_transcript("net", "mine-a", "lot_1", "att_1", 3)
    same = Transcript(
        st.ISSUE_RANGE,
        json.dumps(
            {"attestation_id": "att_1", "event": "issue", "lot_id": "lot_1", "network": "net",
             "origin_classes": {"order": list(ORIGIN_CLASSES), "version": 2}, "seq": 3, "signer": "mine-a"},
            separators=(",", ":"),
        ).encode(),
    )  # fmt: skip
    assert challenge(t) == challenge(same)


def test_transform_range_layout_is_outputs_by_class_then_loss():
    outputs = [{"recycled_post_consumer": "o0r", "industrial": "o0i"}, {"artisanal": "o1a"}]
    loss = {"industrial": "li"}
    assert st.transform_range_values(outputs, loss, "-") == [
        "o0i", "-", "-", "o0r", "-", "o1a", "-", "-", "li", "-", "-", "-"
    ]  # fmt: skip


def test_class_balances_are_inputs_minus_outputs_minus_loss():
    inputs = [{"industrial": 10, "recycled_post_consumer": 4}, {"industrial": 5}]
    outputs = [{"industrial": 12}, {"recycled_post_consumer": 3}]
    assert st.class_balances(inputs, outputs, {"industrial": 3, "recycled_post_consumer": 1}, 0) == [0, 0, 0, 0]
    assert st.class_balances(inputs, outputs, {}, 0) == [3, 0, 0, 1]


def test_derived_ids():
    assert st.output_lot_ids("net", "refiner", "00" * 16, 2)[0] == st.issued_lot_id("net", "refiner", "00" * 16)
    assert st.attestation_id("net", "a", "00" * 16).startswith("att_")
    assert st.claim_id("net", "a", "00" * 16).startswith("clm_")


def test_loss_cap_values_are_p_times_inputs_minus_q_times_loss():
    inputs = [{"industrial": 100, "artisanal": 50}, {"industrial": 20}]
    loss = {"industrial": 12, "artisanal": 6}
    # refine: p/q = 10/100
    assert st.loss_cap_values(inputs, loss, "refine", 0, lambda x, n: x * n) == [10 * 120 - 1200, 10 * 50 - 600, 0, 0]


def test_share_split_sums_a_class_set_against_the_rest():
    lot = {"industrial": 70, "recycled_pre_consumer": 4, "recycled_post_consumer": 12, "artisanal": 1}
    assert st.share_split(lot, "recycled", 0) == [16, 71]
    assert st.share_split(lot, "recycled_post_consumer", 0) == [12, 75]
    assert st.members("recycled") == ("recycled_pre_consumer", "recycled_post_consumer")
    assert st.members("artisanal") == ("artisanal",)
