"""The attestation lifecycle (protocol v2): one capacity chain per site and period,
supersession (capacity and class corrections), revocation.

Each test is an attack from issue 9 or the honest path next to it.
"""

from __future__ import annotations

import secrets

import pytest
from test_ledger_world import NETWORK, World, base_world, refused

from crypto.errors import ProvingError
from crypto.pedersen import Opening
from ledger import builders
from ledger.effects import Guard
from ledger.errors import Code, Rejection
from ledger.models import ClaimKind, RevokeAttestation
from ledger.rules import references
from ledger.statements import claim_id as claim_id_of
from ledger.statements import issued_lot_id

T = 1_000_000  # grams in a tonne


@pytest.fixture
def w() -> World:
    """The shared chain plus mine-c, whose site-c is attested at 100 t for days -1..30."""
    w = base_world().fork()
    w.register("mine-c", *w.orgs["mine-a"].roles)
    w.register("auditor-2", *w.orgs["auditor"].roles)
    w.attest("site-c", "mine-c", "industrial", capacity=100 * T)
    return w


def attestation_envelope(w: World, capacity: int, days: tuple[int, int], supersedes: str | None = None,
                         origin_class: str = "industrial", auditor: str = "auditor"):  # fmt: skip
    from datetime import timedelta

    from test_ledger_world import T0

    nonce = secrets.token_hex(16)
    payload = builders.build_attestation(
        NETWORK, auditor, nonce, site=w.site_info("site-c", "mine-c", origin_class),
        valid_from=T0 + timedelta(days=days[0]), valid_until=T0 + timedelta(days=days[1]),
        capacity=Opening.fresh(capacity), operator_sealing_key=w.orgs["mine-c"].sealing_public,
        supersedes=supersedes,
    )  # fmt: skip
    return w.sign(payload, auditor, nonce)


def issue_envelope(w: World, grams: int, attestation: str | None = None):
    nonce = secrets.token_hex(16)
    payload, _ = w.build_issue("site-c", grams, nonce, attestation)
    return w.sign(payload, "mine-c", nonce)


def revoke(w: World, attestation: str, auditor: str = "auditor"):
    return w.sign(RevokeAttestation(site_id="site-c", attestation_id=attestation, reason="audit withdrawn"), auditor)


# --------------------------------------------------------------------------- one chain per site and period


@pytest.mark.parametrize(
    "days", [(-1, 30), (10, 60), (-30, 0), (5, 6), (-60, 90)], ids=["same", "later-start", "earlier", "inside", "around"]
)
def test_an_overlapping_attestation_is_refused(w: World, days):
    first = w.sites["site-c"][2]
    refused(w, attestation_envelope(w, 60 * T, days), Code.ATTESTATION_OVERLAP, first, "supersede it")


@pytest.mark.parametrize("days", [(30, 60), (-30, -1)], ids=["next-period", "previous-period"])
def test_an_adjacent_period_starts_its_own_chain(w: World, days):
    w.apply(attestation_envelope(w, 60 * T, days))


def test_an_overlapping_attestation_cannot_exceed_the_audited_capacity(w: World, backend: str):
    """Issue 9: audited at 100 t, corrected to 60 t. A second chain would allow 160 t;
    the correction supersedes instead, and the 90 t already issued count against the 60 t."""
    old = w.sites["site-c"][2]
    w.issue("site-c", 90 * T)
    new = w.attest("site-c", "mine-c", "industrial", capacity=60 * T, supersedes=old)
    # the old chain is closed, whatever the issuer proves
    refused(w, issue_envelope(w, 1 * T, attestation=old), Code.ATTESTATION_SUPERSEDED, old, new, backend=backend)
    # the honest builder cannot prove an issuance beyond the corrected capacity ...
    with pytest.raises(ProvingError, match="exceeds the attested capacity"):
        issue_envelope(w, 1 * T)
    # ... and a forged capacity proof (pretending the period started from zero) is refused
    operator, origin_class, _ = w.sites["site-c"]
    nonce, opening = secrets.token_hex(16), Opening.fresh(50 * T)
    _, before = w.issued[new]
    forged = builders.prove_issue(
        NETWORK, operator, nonce, site_id="site-c", origin_class=origin_class, attestation_id=new, seq=0,
        opening=opening, cumulative=before + opening, headroom=w.capacity[new] - opening, product="x",
        owner_sealing_key=w.orgs[operator].sealing_public,
    )  # fmt: skip
    refused(w, w.sign(forged, operator, nonce), Code.BAD_PROOF, "capacity proof", backend=backend)
    # a fresh chain that forgets the carried cumulative is out of sequence
    stale = builders.build_issue(
        NETWORK, operator, nonce, site_id="site-c", origin_class=origin_class, attestation_id=new, seq=0,
        opening=opening, issued_before=Opening.zero(), capacity=w.capacity[new], product="x",
        owner_sealing_key=w.orgs[operator].sealing_public,
    )  # fmt: skip
    refused(w, w.sign(stale, operator, nonce), Code.ISSUANCE_OUT_OF_SEQUENCE, "cumulative", backend=backend)


def test_within_the_corrected_capacity_issuance_continues(w: World):
    old = w.sites["site-c"][2]
    w.issue("site-c", 40 * T)
    new = w.attest("site-c", "mine-c", "industrial", capacity=60 * T, supersedes=old)
    lot = w.issue("site-c", 20 * T)  # 40 + 20 = 60 t: exactly the corrected capacity
    mark = w.view.issuance_mark(new)
    assert mark.seq == 0 and w.view.lot(lot).origin_class == "industrial"
    assert w.view.attestation(old).superseded_by == new and w.view.attestation(new).supersedes == old


def test_supersession_closes_the_predecessor_chain_against_a_race(w: World):
    old = w.sites["site-c"][2]
    w.issue("site-c", 10 * T)
    effects = w.apply(attestation_envelope(w, 60 * T, (-1, 30), supersedes=old))
    assert Guard("issuance", f"{old}:1", "the attestation was closed meanwhile") in effects.guards
    assert effects.guards[1].namespace == "site-attestation" and effects.guards[1].key == "site-c:1"


@pytest.mark.parametrize("target", ["missing", "other-site", "superseded"])
def test_supersedes_must_name_the_live_attestation_of_the_site(w: World, target: str):
    """The server prefetches `references()`: the named attestation must be among them, so the
    server and an offline replay give the same refusal."""
    old = w.sites["site-c"][2]
    if target == "missing":
        name, code = "att_missing", Code.ATTESTATION_NOT_FOUND
    elif target == "other-site":
        name, code = w.sites["site-a"][2], Code.SITE_MISMATCH
    else:
        w.attest("site-c", "mine-c", "industrial", capacity=60 * T, supersedes=old)
        name, code = old, Code.ATTESTATION_SUPERSEDED
    env = attestation_envelope(w, 60 * T, (-1, 30), supersedes=name)
    assert name in references(env).attestations and "site-c" in references(env).site_attestations
    refused(w, env, code, name)


# --------------------------------------------------------------------------- revocation


def test_issuance_after_revocation_is_refused(w: World, backend: str):
    att = w.sites["site-c"][2]
    w.issue("site-c", 10 * T)
    effects = w.submit(revoke(w, att))
    assert Guard("issuance", f"{att}:1", "the attestation was closed meanwhile") in effects.guards
    assert w.view.attestation(att).revoked_at is not None
    refused(w, issue_envelope(w, 1 * T), Code.ATTESTATION_REVOKED, att, backend=backend)


def test_only_the_attesting_auditor_revokes_and_only_once(w: World):
    att = w.sites["site-c"][2]
    refused(w, revoke(w, att, auditor="auditor-2"), Code.WRONG_ROLE, "made by auditor")
    refused(w, w.sign(RevokeAttestation(site_id="site-c", attestation_id=att), "mine-c"), Code.WRONG_ROLE)
    refused(w, w.sign(RevokeAttestation(site_id="site-a", attestation_id=att), "auditor"), Code.SITE_MISMATCH)
    w.submit(revoke(w, att))
    refused(w, revoke(w, att), Code.ATTESTATION_REVOKED, "revoked at")


def test_a_revoked_period_is_re_attested_by_superseding_and_keeps_its_total(w: World):
    old = w.sites["site-c"][2]
    w.issue("site-c", 70 * T)
    w.submit(revoke(w, old))
    refused(w, attestation_envelope(w, 100 * T, (-1, 30)), Code.ATTESTATION_OVERLAP, old)
    w.attest("site-c", "mine-c", "industrial", capacity=100 * T, supersedes=old)
    w.issue("site-c", 30 * T)
    with pytest.raises(ProvingError):
        issue_envelope(w, 1)  # 70 + 30 = 100 t: not one gram more


# --------------------------------------------------------------------------- class correction


def test_a_class_correction_changes_the_class_of_later_issuances(w: World, backend: str):
    """Issue 9: an 'industrial' site found to be artisanal is re-attested; its issuances then
    carry the new class, an issuance under the old attestation is refused, and an
    ancestry_excludes(artisanal) claim on the new lot does not hold."""
    old = w.sites["site-c"][2]
    before = w.issue("site-c", 10 * T)
    refused(w, attestation_envelope(w, 100 * T, (-1, 30), origin_class="artisanal"), Code.SITE_MISMATCH, "supersede")
    new = w.attest("site-c", "mine-c", "artisanal", capacity=100 * T, supersedes=old)
    assert w.view.site("site-c").origin_class == "artisanal"
    refused(w, issue_envelope(w, 1 * T, attestation=old), Code.ATTESTATION_SUPERSEDED, old, new, backend=backend)
    after = w.issue("site-c", 5 * T)
    assert w.view.lot(after).origin_class == "artisanal" and set(w.view.lot(after).commitments) == {"artisanal"}
    assert w.view.lot(before).origin_class == "industrial"  # what was issued stays as audited then
    nonce = secrets.token_hex(16)
    claim = builders.build_claim(NETWORK, "mine-c", nonce, lot_ids=[after], kind=ClaimKind.ancestry_excludes,
                                 origin_class="artisanal")  # fmt: skip
    refused(w, w.sign(claim, "mine-c", nonce), Code.CLAIM_DOES_NOT_HOLD, "artisanal site site-c", backend=backend)
    assert issued_lot_id(NETWORK, "mine-c", nonce) != after


def test_without_supersession_a_site_cannot_change_class(w: World):
    env = attestation_envelope(w, 60 * T, (30, 60), origin_class="artisanal")
    refused(w, env, Code.SITE_MISMATCH, "origin_class", "supersede")


# --------------------------------------------------------------------------- bundles


def test_a_bundle_carries_the_corrections_and_every_event_is_needed(w: World):
    """A lot issued after a revocation and a supersession: its bundle holds every attestation and
    revocation of the site and the superseded chain's issuances, and verifies offline; without an
    attestation or an issuance of the chain the replay fails. (A dropped revocation is not
    detectable by replay; it cannot make a claim false, since the server refused every issuance
    after it; the log's inclusion proofs are what make omissions visible.)"""
    from test_ledger_bundle import required_events

    from ledger.bundle import assemble, verify_bundle

    first = w.sites["site-c"][2]
    w.issue("site-c", 30 * T)
    w.submit(revoke(w, first))
    second = w.attest("site-c", "mine-c", "artisanal", capacity=80 * T, supersedes=first)
    lot = w.issue("site-c", 20 * T)
    nonce = secrets.token_hex(16)
    claim = builders.build_claim(NETWORK, "mine-c", nonce, lot_ids=[lot], kind=ClaimKind.amount_in_range,
                                 openings={lot: w.openings[lot]}, low=19 * T, high=21 * T)  # fmt: skip
    w.submit(w.sign(claim, "mine-c", nonce))
    claim_id = claim_id_of(NETWORK, "mine-c", nonce)
    bundle = assemble(required_events(w, claim_id), claim_id, NETWORK)
    root = w.policy.root_public_key
    report = verify_bundle(bundle, root)
    assert report.ok, report.summary
    types = [e["payload"]["type"] for e in bundle["events"]]
    assert types.count("attest_site") == 2 and types.count("revoke_attestation") == 1 and types.count("issue") == 2
    assert {e["payload"].get("attestation_id") for e in bundle["events"] if e["payload"]["type"] == "issue"} == {
        first, second
    }
    needed = [i for i, e in enumerate(bundle["events"]) if e["payload"]["type"] in ("attest_site", "issue")]
    for i in needed:
        cut = {**bundle, "events": bundle["events"][:i] + bundle["events"][i + 1 :]}
        assert not verify_bundle(cut, root).ok, i


async def test_the_api_bundle_carries_revocations_and_superseded_chains(world, publish, store, root_key):
    """api.store.bundle_events on the real embedded database: a lot issued after a revocation and
    a class correction gets a bundle with both attestations, the revocation and the superseded
    chain's issuance; it verifies offline with the root key alone."""
    from datetime import UTC, datetime, timedelta

    from conftest import AttestationState

    from ledger import statements as st
    from ledger.bundle import assemble, verify_bundle
    from ledger.models import Location, SiteInfo

    for org_id, roles in (("v2-auditor", ("auditor",)), ("v2-mine", ("mine",))):
        await publish(world.register(org_id, *roles))
    env, first = world.attest("v2-auditor", "v2-mine", "v2-site", "industrial", capacity=100 * T)
    await publish(env)
    env, _ = world.issue(first, 30 * T)
    await publish(env)
    await publish(world.sign(RevokeAttestation(site_id="v2-site", attestation_id=first), "v2-auditor"))
    nonce, capacity, now = world.nonce(), Opening.fresh(80 * T), datetime.now(UTC)
    site = SiteInfo(site_id="v2-site", operator="v2-mine", name="Site v2-site", country="CD", region="Lualaba",
                    location=Location(lat=-10.7, lon=25.5), origin_class="artisanal")  # fmt: skip
    payload = builders.build_attestation(
        world.network, "v2-auditor", nonce, site=site, valid_from=now - timedelta(days=1),
        valid_until=now + timedelta(days=365), capacity=capacity,
        operator_sealing_key=world.members["v2-mine"].sealing_public, supersedes=first,
    )  # fmt: skip
    await publish(world.sign(payload, "v2-auditor", nonce=nonce))
    second = st.attestation_id(world.network, "v2-auditor", nonce)
    carried = world.attestations[first].issued
    world.attestations[second] = AttestationState(second, "v2-site", "artisanal", "v2-mine", capacity, carried)
    env, lot = world.issue(second, 20 * T)
    await publish(env)
    nonce = world.nonce()
    claim = builders.build_claim(world.network, "v2-mine", nonce, lot_ids=[lot], kind=ClaimKind.amount_in_range,
                                 openings={lot: world.members["v2-mine"].openings[lot]}, low=20 * T, high=20 * T)  # fmt: skip
    await publish(world.sign(claim, "v2-mine", nonce=nonce))
    claim_id = claim_id_of(world.network, "v2-mine", nonce)

    events = await store.bundle_events(claim_id, lot)
    types = [e.payload.type for e in events]
    assert types.count("attest_site") == 2 and types.count("revoke_attestation") == 1 and types.count("issue") == 2
    assert (await store.attestation(first)).superseded_by == second
    assert (await store.attestation(first)).revoked_at is not None
    report = verify_bundle(assemble(events, claim_id, world.network), root_key.verify_key.encode().hex())
    assert report.ok, report.summary
