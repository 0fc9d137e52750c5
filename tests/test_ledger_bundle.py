"""Disclosure bundles: assembled from the required events, verified offline, broken by any tampering."""

from __future__ import annotations

import copy
import json

import pytest
from test_ledger_world import AMOUNTS, World, base_world

from ledger.bundle import BUNDLE_FORMAT, assemble, involved_organizations, verify_bundle
from ledger.envelope import Envelope, parse_envelope, sign
from ledger.models import ClaimKind
from ledger.rules import ancestry

REGISTRY = {"register_organization", "rotate_key", "revoke_key"}


def required_events(w: World, claim_id: str) -> list[Envelope]:
    """The event set docs/ledger.md prescribes, selected the way the API does (here from the in-memory log)."""
    index = next(i for i, e in enumerate(w.log) if any(c.claim_id == claim_id for c in e.claims))
    log = w.log[: index + 1]
    lots = {lot.lot_id for lot in ancestry(w.view, w.view.claims[claim_id].lot_ids)}
    # not a transformation that only consumed claimed lots (its outputs are outside the ancestry)
    touching = [e for e in log if lots & set(e.lot_ids)
                and (e.event_type != "transform" or any(lot.lot_id in lots for lot in e.new_lots))]  # fmt: skip
    last_seq: dict[str, int] = {}
    sites: set[str] = set()
    for e in touching:
        if e.event_type == "issue":
            p = e.envelope.payload
            last_seq[p.attestation_id] = max(p.seq, last_seq.get(p.attestation_id, 0))
            sites.add(p.site_id)
    # every attestation and revocation of those sites; issuances under superseded ones carry over
    attests = [e for e in log if e.event_type in ("attest_site", "revoke_attestation")
               and any(a.site_id in sites for a in [*e.attestations, *e.attestation_updates])]  # fmt: skip
    superseded = {a.attestation_id for e in attests for a in e.attestation_updates if a.superseded_by is not None}
    chains = [
        e
        for e in log
        if e.event_type == "issue"
        and (
            e.envelope.payload.seq <= last_seq.get(e.envelope.payload.attestation_id, -1)
            or e.envelope.payload.attestation_id in superseded
        )
    ]
    core = {e.event_id for e in [*touching, *chains, *attests]}
    orgs = involved_organizations(e.envelope for e in log if e.event_id in core)
    registry = {e.event_id for e in log if e.event_type in REGISTRY and e.envelope.payload.org_id in orgs}
    return [e.envelope for e in log if e.event_id in core | registry]


@pytest.fixture(scope="module")
def chain() -> World:
    """Read-only here: the shared chain itself, not a copy."""
    return base_world()


@pytest.fixture(scope="module")
def root_hex(chain: World) -> str:
    return chain.policy.root_public_key


@pytest.fixture(scope="module")
def clean_bundle(chain: World) -> dict:
    claim_id = chain.names["CLAIM_CLEAN"]
    return assemble(required_events(chain, claim_id), claim_id, chain.policy.network)


@pytest.fixture(scope="module")
def share_bundle(chain: World) -> dict:
    claim_id = chain.names["CLAIM_SHARE"]
    return assemble(required_events(chain, claim_id), claim_id, chain.policy.network)


def failed(bundle: dict, root_hex: str, check: str, *fragments: str):
    report = verify_bundle(bundle, root_hex)
    assert not report.ok
    failure = report.failed()
    assert failure.name == check, report.summary
    for fragment in fragments:
        assert fragment in failure.detail, failure.detail
    assert report.summary.startswith(f"INVALID: {check}")
    return report


# --------------------------------------------------------------------------- valid bundles


def test_ancestry_claim_bundle_verifies(chain: World, clean_bundle: dict, root_hex: str):
    report = verify_bundle(clean_bundle, root_hex)
    assert report.ok, report.summary
    assert [c.name for c in report.checks] == ["format", "decode", "rules", "uniqueness", "revocation", "proofs", "claim"]
    assert report.claim["kind"] == "ancestry_excludes" and report.claim["lot_ids"] == [chain.names["CLEAN"]]
    assert report.summary.startswith("VALID: no artisanal origin anywhere upstream, claimed by Oem")
    # issuances A1 and R1 (range + capacity each) and the transformation (range + loss cap): one batch
    assert (report.range_proofs, report.sigma_proofs) == (6, 1)
    types = [e["payload"]["type"] for e in clean_bundle["events"]]
    assert types.count("register_organization") == 5  # not mine-b: it is nowhere upstream
    assert clean_bundle["format"] == BUNDLE_FORMAT and types[-1] == "publish_claim"


def test_share_claim_bundle_verifies(share_bundle: dict, root_hex: str):
    report = verify_bundle(share_bundle, root_hex)
    assert report.ok, report.summary
    assert report.claim["statement"] == "recycled share >= 16/100 (16%)"
    assert report.range_proofs == 7


def test_a_bundle_with_every_event_up_to_the_claim_verifies_too(chain: World, root_hex: str):
    bundle = assemble(chain.events, chain.names["CLAIM_CLEAN"], chain.policy.network)
    assert bundle["events"][-1]["payload"]["type"] == "publish_claim"  # later events are cut off
    assert verify_bundle(bundle, root_hex).ok


def test_every_required_event_is_necessary(clean_bundle: dict, root_hex: str):
    for i in range(len(clean_bundle["events"]) - 1):
        bundle = {**clean_bundle, "events": clean_bundle["events"][:i] + clean_bundle["events"][i + 1 :]}
        report = verify_bundle(bundle, root_hex)
        assert not report.ok and report.failed().name == "rules", (i, report.summary)


def test_bundle_reveals_no_amount_or_blinding(chain: World, clean_bundle: dict, share_bundle: dict):
    text = json.dumps([clean_bundle, share_bundle])
    secrets_ = set(AMOUNTS.values())
    for openings in chain.openings.values():
        for o in openings.values():
            secrets_ |= {o.value, o.blinding}
    for opening in chain.capacity.values():
        secrets_ |= {opening.value, opening.blinding}
    for secret in secrets_:
        assert str(secret) not in text
        assert format(secret, "064x") not in text and format(secret, "x") not in text


# --------------------------------------------------------------------------- tampering


def tampered(bundle: dict, index: int, edit) -> dict:
    bundle = copy.deepcopy(bundle)
    edit(bundle["events"][index])
    return bundle


def resigned(chain: World, bundle: dict, index: int, edit) -> dict:
    """Tamper with the payload, then re-sign as the original signer: only the proofs can object."""
    bundle = copy.deepcopy(bundle)
    env = parse_envelope(bundle["events"][index])
    payload = env.payload.model_dump(mode="json")
    edit(payload)
    fresh = sign(
        type(env.payload).model_validate(payload),
        network=env.network, signer=env.signer, key_id=env.key_id, nonce=env.nonce, timestamp=env.timestamp,
        signing_key=chain.orgs[env.signer].signing,
    )  # fmt: skip
    bundle["events"][index] = fresh.to_json()
    return bundle


def index_of(bundle: dict, event_type: str, nth: int = 0) -> int:
    return [i for i, e in enumerate(bundle["events"]) if e["payload"]["type"] == event_type][nth]


def flip_byte(hex_text: str, offset: int) -> str:
    raw = bytearray(bytes.fromhex(hex_text))
    raw[offset] ^= 0x01
    return raw.hex()


TAU_X_LAST_BYTE = 4 * 48 + 31  # a scalar of the range proof: still canonical when flipped


def test_any_signed_field_changed_breaks_the_signature(clean_bundle: dict, root_hex: str):
    i = index_of(clean_bundle, "issue")
    edits = [
        lambda e: e["payload"].update(product="conflict-free ore"),
        lambda e: e["payload"].update(range_proof=flip_byte(e["payload"]["range_proof"], TAU_X_LAST_BYTE)),
        lambda e: e.update(timestamp="2025-03-01T09:00:00Z"),
    ]
    for edit in edits:
        failed(tampered(clean_bundle, i, edit), root_hex, "rules", f"event {i}", "BAD_SIGNATURE")


def test_a_resigned_bad_range_proof_is_named_by_the_batch(chain: World, clean_bundle: dict, root_hex: str):
    i = index_of(clean_bundle, "issue", 1)
    bundle = resigned(
        chain, clean_bundle, i, lambda p: p.update(range_proof=flip_byte(p["range_proof"], TAU_X_LAST_BYTE))
    )
    failed(bundle, root_hex, "proofs", f"event {i} (issue", "range proof")


def test_a_resigned_bad_claim_proof_is_named(chain: World, share_bundle: dict, root_hex: str):
    i = len(share_bundle["events"]) - 1
    bundle = resigned(chain, share_bundle, i, lambda p: p.update(proof=flip_byte(p["proof"], TAU_X_LAST_BYTE)))
    failed(bundle, root_hex, "proofs", f"event {i} (publish_claim", "claim proof")
    bundle = resigned(chain, share_bundle, i, lambda p: p.update(p=50))  # a stronger claim with the same proof
    failed(bundle, root_hex, "proofs", "claim proof", "share_at_least")


def test_a_resigned_bad_balance_proof_is_named(chain: World, clean_bundle: dict, root_hex: str):
    i = index_of(clean_bundle, "transform")
    bundle = resigned(
        chain,
        clean_bundle,
        i,
        lambda p: p.update(balance_proof=flip_byte(p["balance_proof"], len(p["balance_proof"]) // 2 - 1)),
    )
    failed(bundle, root_hex, "proofs", f"event {i} (transform", "balance proof", "outputs exceed inputs")


def test_reordering_breaks_the_replay(clean_bundle: dict, root_hex: str):
    events = clean_bundle["events"]
    t = index_of(clean_bundle, "transform")
    swapped = events[: t - 1] + [events[t], events[t - 1]] + events[t + 1 :]
    failed({**clean_bundle, "events": swapped}, root_hex, "rules")
    registry_last = events[1:] + events[:1]
    failed({**clean_bundle, "events": registry_last}, root_hex, "rules", "UNKNOWN_SIGNER")


def test_a_repeated_event_is_caught(clean_bundle: dict, root_hex: str):
    events = clean_bundle["events"]
    failed({**clean_bundle, "events": events + events[-1:]}, root_hex, "uniqueness", "nonce already used")


def test_network_root_and_claim_must_match(chain: World, clean_bundle: dict, share_bundle: dict, root_hex: str):
    failed({**clean_bundle, "network": "other-net"}, root_hex, "rules", "WRONG_NETWORK")
    other_root = "ab" * 32
    failed(clean_bundle, other_root, "rules", "event 0", "BAD_SIGNATURE")
    failed({**clean_bundle, "claim_id": chain.names["CLAIM_SHARE"]}, root_hex, "claim", "not published")
    failed({**share_bundle, "lot_ids": [chain.names["A2"]]}, root_hex, "claim", chain.names["A2"])


@pytest.mark.parametrize(
    "junk, check",
    [
        ([], "format"),
        ("bundle", "format"),
        ({"format": "oretrace-bundle/v0"}, "format"),
        ({"format": BUNDLE_FORMAT, "network": "n", "claim_id": "c", "lot_ids": ["l"], "events": {}}, "format"),
        ({"format": BUNDLE_FORMAT, "network": "n", "claim_id": "c", "lot_ids": [7], "events": [{}]}, "format"),
        ({"format": BUNDLE_FORMAT, "network": "n", "claim_id": "c", "lot_ids": "l", "events": [{}]}, "format"),
        ({"format": BUNDLE_FORMAT, "network": "n", "claim_id": "c", "lot_ids": [], "events": [{}]}, "format"),
        ({"format": BUNDLE_FORMAT, "network": "n", "claim_id": "c", "lot_id": "l", "events": [{}]}, "format"),
        ({"format": BUNDLE_FORMAT, "network": "n", "claim_id": "c", "lot_ids": ["l"], "events": [{}]}, "decode"),
        ({"format": BUNDLE_FORMAT, "network": "n", "claim_id": "c", "lot_ids": ["l"], "events": [17]}, "decode"),
    ],
)
def test_malformed_bundles_fail_without_raising(junk, check, root_hex: str):
    report = verify_bundle(junk, root_hex)
    assert not report.ok and report.failed().name == check, report.summary


def test_malformed_event_is_named(clean_bundle: dict, root_hex: str):
    bundle = tampered(clean_bundle, 3, lambda e: e["payload"].update(unexpected="field"))
    failed(bundle, root_hex, "decode", "event 3", "unexpected")


# --------------------------------------------------------------------------- assembling


def test_assemble_drops_duplicates_and_needs_the_claim(chain: World):
    events = required_events(chain, chain.names["CLAIM_CLEAN"])
    bundle = assemble(events[:3] + events, chain.names["CLAIM_CLEAN"], chain.policy.network)
    assert len(bundle["events"]) == len(events)
    with pytest.raises(ValueError, match="not among"):
        assemble(events[:-1], chain.names["CLAIM_CLEAN"], chain.policy.network)


def test_the_verifier_can_pin_the_network(chain: World, clean_bundle: dict, root_hex: str):
    """One root key may serve several networks: a verifier that names its network refuses the others."""
    assert verify_bundle(clean_bundle, root_hex, network=chain.policy.network).ok
    report = verify_bundle(clean_bundle, root_hex, network="production")
    assert not report.ok and report.failed().name == "format", report.summary
    assert "'production'" in report.failed().detail and chain.policy.network in report.failed().detail


def test_a_lot_id_created_twice_is_caught(monkeypatch, root_hex: str):
    """Lot ids are 96-bit truncated hashes: a publisher can grind two of its nonces to one
    lot id (~2^48 hashes). The server's unique _id refuses the second lot; a bundle
    replay must too, or the second creation silently replaces the first and launders
    the ancestry: here an artisanal lot becomes "industrial only" under the same id."""
    import secrets

    from ledger import statements as st

    w = base_world().fork()
    n = w.names
    laundered = secrets.token_hex(16)
    real = st.derive_id
    collide: dict[str, str] = {}

    def grinded(prefix, network, signer, nonce, index=0):
        if prefix == "lot" and nonce in collide:
            return collide[nonce]
        return real(prefix, network, signer, nonce, index)

    monkeypatch.setattr(st, "derive_id", grinded)
    (dirty_child,) = w.transform("refiner", [n["DIRTY"]], [{"artisanal": AMOUNTS["DIRTY.artisanal"]}])
    w.transfer(n["A2"], "refiner")
    collide[laundered] = dirty_child  # the ground collision: another nonce, the same lot id
    assert w.transform("refiner", [n["A2"]], [{"industrial": AMOUNTS["A2"]}], nonce=laundered) == [dirty_child]
    claim_id = w.claim(dirty_child, ClaimKind.ancestry_excludes, origin_class="artisanal")

    bundle = assemble(w.events, claim_id, w.policy.network)
    failed(bundle, root_hex, "uniqueness", "lot id already created", dirty_child)


# --------------------------------------------------------------------------- a claim in words


@pytest.mark.parametrize(
    ("kind", "p", "p_max", "q", "words"),
    [
        (ClaimKind.share_in_range, 160, 169, 1000, "(16.0-16.9%)"),  # the demo's passport claim: not "16-16.9%"
        (ClaimKind.share_in_range, 999, 1000, 1000, "(99.9-100.0%)"),
        (ClaimKind.share_in_range, 0, 1, 1, "(0-100%)"),
        (ClaimKind.share_in_range, 1, 2, 3, "(~33.33-66.67%)"),  # rounded outwards, marked
        (ClaimKind.share_in_range, 1, 99_999, 100_000, "(~0.00-100.00%)"),
        (ClaimKind.share_at_least, 16, None, 100, "(16%)"),
        (ClaimKind.share_at_least, 1, None, 8, "(12.5%)"),
        (ClaimKind.share_at_least, 1, None, 3, "(~33.33%)"),  # a lower bound rounds down
        (ClaimKind.share_at_least, 2, None, 3, "(~66.66%)"),
        (ClaimKind.share_at_most, 2, None, 3, "(~66.67%)"),  # an upper bound rounds up
        (ClaimKind.share_at_most, 1, None, 7, "(~14.29%)"),
    ],
)
def test_a_share_claim_in_words_gives_its_bounds_with_equal_decimals_and_never_overstates(kind, p, p_max, q, words):
    """Both ends of a range with the same decimals; a percentage that cannot be written
    exactly in two decimals is rounded so that the words still state a true bound
    (down for a lower bound, up for an upper one) and marked "~"."""
    from types import SimpleNamespace

    from ledger.bundle import describe_claim

    claim = SimpleNamespace(kind=kind, origin_class="recycled", p=p, p_max=p_max, q=q)
    text = describe_claim(claim)
    assert text.endswith(words), text
    assert f"{p}/{q}" in text  # the exact fraction stays beside the reading aid
