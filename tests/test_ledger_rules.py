"""Rule tests: the happy chain, and every rejection with its code and message."""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import timedelta

import pytest
from nacl.signing import SigningKey
from test_ledger_world import AMOUNTS, NETWORK, T0, World, base_world

from crypto.bulletproofs import prove_range
from crypto.errors import ProvingError
from crypto.generators import H
from crypto.group import ORDER, Point
from crypto.pedersen import Opening, commit_opening
from crypto.sigma import prove_zero
from ledger import builders
from ledger import statements as st
from ledger.effects import Guard
from ledger.errors import Code, Rejection
from ledger.models import (
    ClaimKind,
    KeyEntry,
    OutputLot,
    PublishClaim,
    RegisterOrganization,
    RevokeKey,
    Role,
    RotateKey,
    Transfer,
    Transform,
)
from ledger.rules import Policy, ancestry, references
from ledger.view import OPERATOR


@pytest.fixture
def chain() -> World:
    """A private copy of the shared chain that the test may extend or break."""
    return base_world().fork()


def rejected(w: World, envelope, code: Code, *fragments: str, policy: Policy | None = None) -> Rejection:
    with pytest.raises(Rejection) as info:
        w.apply(envelope, policy)
    assert info.value.code is code, info.value
    for fragment in fragments:
        assert fragment in info.value.message, info.value.message
    return info.value


def compressed_x(on_curve: bool) -> str:
    """A compressed encoding whose x is the smallest one on (or off) the curve y^2 = x^3 + 4.

    Points on the curve with a small x are not in the prime-order subgroup
    (the cofactor is huge), so `on_curve=True` gives an off-subgroup point.
    """
    from py_ecc.optimized_bls12_381 import field_modulus as p

    x = 1
    while (pow((x**3 + 4) % p, (p - 1) // 2, p) == 1) != on_curve:
        x += 1
    encoding = bytearray(x.to_bytes(48, "big"))
    encoding[0] |= 0x80
    return encoding.hex()


IDENTITY = (bytes([0xC0]) + bytes(47)).hex()


# --------------------------------------------------------------------------- the happy chain


def test_chain_state(chain: World):
    n, v = chain.names, chain.view
    clean, dirty = v.lot(n["CLEAN"]), v.lot(n["DIRTY"])
    assert clean.owner == "oem" and clean.issuer == "refiner" and clean.custody_seq == 1
    assert clean.parents == [n["A1"], n["R1"]] and set(clean.commitments) == {"industrial", "recycled_post_consumer"}
    assert dirty.owner == "refiner" and dirty.parents == [n["B1"]]
    for lot in ("A1", "R1", "B1"):
        assert v.lot(n[lot]).consumed_by_event is not None
    a2 = v.lot(n["A2"])
    assert (a2.owner, a2.site_id, a2.origin_class, a2.consumed_by_event) == ("mine-a", "site-a", "industrial", None)
    assert set(a2.commitments) == {"industrial"}
    mark = v.issuance_mark(chain.sites["site-a"][2])
    assert mark.seq == 1
    # the cumulative commits to A1 + A2
    assert Point.from_hex(mark.cumulative) == commit_opening(
        chain.openings[n["A1"]]["industrial"] + chain.openings[n["A2"]]["industrial"]
    )
    assert {c.kind for c in v.claims.values()} == {ClaimKind.ancestry_excludes, ClaimKind.share_at_least}


def test_every_publication_carries_its_nonce_guard_first(chain: World):
    for effects in chain.log:
        env = effects.envelope
        assert effects.guards[0] == Guard("nonce", f"{env.signer}:{env.nonce}", "nonce already used")


def test_guards_and_sealed_openings_per_event(chain: World):
    by_type = {}
    for effects in chain.log:
        by_type.setdefault(effects.event_type, []).append(effects)
    issue = by_type["issue"][1]  # A2: second issuance under site-a's attestation
    assert issue.guards[1] == Guard("issuance", f"{chain.sites['site-a'][2]}:1", issue.guards[1].reason)
    transform = by_type["transform"][0]
    assert [g.key for g in transform.guards[1:]] == [chain.names["A1"], chain.names["R1"]]
    assert {g.namespace for g in transform.guards[1:]} == {"consume"}
    assert transform.sealed[0].recipient == "refiner" and transform.sealed[0].lot_ids == (chain.names["CLEAN"],)
    transfer = by_type["transfer"][-1]
    assert transfer.guards[1] == Guard("custody", f"{chain.names['CLEAN']}:1", transfer.guards[1].reason)
    assert transfer.sealed[0].recipient == "oem"
    attest = by_type["attest_site"][0]
    assert attest.sealed[0].recipient == "mine-a" and attest.sealed[0].lot_ids == ()


def test_transferred_opening_is_readable_by_the_receiver_only(chain: World):
    from ledger.openings import SealedOpeningError, lot_openings, unseal

    transfer = [e for e in chain.log if e.event_type == "transfer"][-1]
    plaintext = unseal(transfer.sealed[0].ciphertext, chain.orgs["oem"].sealing)
    assert lot_openings(plaintext) == {chain.names["CLEAN"]: chain.openings[chain.names["CLEAN"]]}
    with pytest.raises(SealedOpeningError):
        unseal(transfer.sealed[0].ciphertext, chain.orgs["refiner"].sealing)


def test_references_name_what_each_rule_reads(chain: World):
    refs = {e.event_type: references(e.envelope) for e in chain.log}
    assert refs["register_organization"].organizations == {OPERATOR, "oem"}
    assert refs["attest_site"].sites == {"site-r"} and "recycler" in refs["attest_site"].organizations
    assert refs["issue"].attestations == {chain.sites["site-r"][2]} and refs["issue"].sites == {"site-r"}
    assert refs["transfer"].lots == {chain.names["CLEAN"]} and "oem" in refs["transfer"].organizations
    assert refs["transform"].lots == {chain.names["B1"]}
    claim_refs = [references(e.envelope) for e in chain.log if e.event_type == "publish_claim"]
    assert claim_refs[0].ancestry == {chain.names["CLEAN"]}  # ancestry_excludes walks the DAG
    assert claim_refs[1].ancestry == set() and claim_refs[1].lots == {chain.names["CLEAN"]}


def test_ancestry_walks_every_parent_once(chain: World):
    n = chain.names
    assert {lot.lot_id for lot in ancestry(chain.view, n["CLEAN"])} == {n["CLEAN"], n["A1"], n["R1"]}


# --------------------------------------------------------------------------- common checks


def test_wrong_network(chain: World):
    env = chain.sign(RevokeKey(org_id="oem", key_id="k1"), OPERATOR, network="other-net")
    rejected(chain, env, Code.WRONG_NETWORK, "other-net", NETWORK)


def test_freshness_only_online(chain: World):
    env = chain.sign(RevokeKey(org_id="oem", key_id="k1"), OPERATOR, timestamp=T0)
    online = Policy(network=NETWORK, root_public_key=chain.policy.root_public_key, now=T0 + timedelta(minutes=6))
    rejected(chain, env, Code.STALE_TIMESTAMP, policy=online)
    chain.apply(
        env, Policy(network=NETWORK, root_public_key=chain.policy.root_public_key, now=T0 + timedelta(minutes=4))
    )
    chain.apply(env)  # offline: no clock


def test_bad_signature(chain: World):
    env = chain.sign(RevokeKey(org_id="oem", key_id="k1"), OPERATOR)
    forged = env.model_copy(update={"payload": RevokeKey(org_id="refiner", key_id="k1")})
    rejected(chain, forged, Code.BAD_SIGNATURE, "root")
    other_key = chain.sign(Transfer(lot_id=chain.names["A2"], to="refiner", opening_sealed_to_receiver="x"), "mine-b")
    impostor = other_key.model_copy(update={"signer": "mine-a"})
    rejected(chain, impostor, Code.BAD_SIGNATURE, "mine-a")


def test_unknown_signer_and_key(chain: World):
    payload = Transfer(lot_id=chain.names["A2"], to="refiner", opening_sealed_to_receiver="x")
    env = chain.sign(payload, "mine-a")
    rejected(chain, env.model_copy(update={"signer": "ghost"}), Code.UNKNOWN_SIGNER, "ghost")
    rejected(chain, chain.sign(payload, "mine-a", key_id="k9"), Code.UNKNOWN_KEY, "k9")
    rejected(chain, chain.sign(RevokeKey(org_id="oem", key_id="k1"), OPERATOR, key_id="k1"), Code.UNKNOWN_KEY, "root")


def test_revoked_key_publishes_nothing_more(chain: World):
    before = chain.sign(Transfer(lot_id=chain.names["A2"], to="refiner", opening_sealed_to_receiver="x"), "mine-a")
    chain.apply(before)  # accepted while the key stands
    chain.submit(chain.sign(RevokeKey(org_id="mine-a", key_id="k1", reason="laptop stolen"), OPERATOR))
    after = chain.sign(Transfer(lot_id=chain.names["A2"], to="refiner", opening_sealed_to_receiver="x"), "mine-a")
    rejected(chain, after, Code.REVOKED_KEY, "k1", "mine-a")
    # dated before the revocation but arriving after it (a stolen key back-dating within the
    # clock skew): refused too; the key's state when the event is applied decides
    rejected(chain, before, Code.REVOKED_KEY, "k1", "mine-a")
    rejected(chain, chain.sign(RevokeKey(org_id="mine-a", key_id="k1"), OPERATOR), Code.REVOKED_KEY, "already")
    # a new key restores the organisation
    org = chain.orgs["mine-a"] = replace(chain.orgs["mine-a"], signing=SigningKey.generate(), key_id="k2")
    new_key = KeyEntry(key_id="k2", public_key=org.signing.verify_key.encode().hex())
    chain.submit(chain.sign(RotateKey(org_id="mine-a", new_key=new_key), OPERATOR))
    chain.apply(chain.sign(Transfer(lot_id=chain.names["A2"], to="refiner", opening_sealed_to_receiver="x"), "mine-a"))


def test_replayed_envelope_is_caught_by_its_guard(chain: World):
    """The rules are stateless about nonces: the store's unique key on the guard refuses the replay."""
    env = chain.log[-1].envelope
    assert chain.apply(env).guards[0].key == f"{env.signer}:{env.nonce}"


# --------------------------------------------------------------------------- registry


def registration(org_id: str, *roles: Role) -> RegisterOrganization:
    return RegisterOrganization(
        org_id=org_id,
        name="X",
        country="BE",
        roles=list(roles),
        signing_keys=[KeyEntry(key_id="k1", public_key="11" * 32)],
        sealing_key="22" * 32,
    )


def test_registry_is_operator_only(chain: World):
    rejected(chain, chain.sign(registration("trader-x", Role.trader), "auditor"), Code.WRONG_ROLE, "operator")
    rejected(chain, chain.sign(RevokeKey(org_id="oem", key_id="k1"), "oem"), Code.WRONG_ROLE, "operator")


def test_registry_conflicts(chain: World):
    rejected(chain, chain.sign(registration("oem", Role.oem), OPERATOR), Code.ALREADY_EXISTS, "oem")
    rejected(chain, chain.sign(registration(OPERATOR, Role.oem), OPERATOR), Code.ALREADY_EXISTS)
    rejected(chain, chain.sign(registration("x", Role.operator), OPERATOR), Code.WRONG_ROLE, "operator role")
    dup = RotateKey(org_id="oem", new_key=KeyEntry(key_id="k1", public_key="33" * 32))
    rejected(chain, chain.sign(dup, OPERATOR), Code.ALREADY_EXISTS, "k1")
    ghost = RotateKey(org_id="ghost", new_key=KeyEntry(key_id="k2", public_key="33" * 32))
    rejected(chain, chain.sign(ghost, OPERATOR), Code.UNKNOWN_ORGANIZATION, "ghost")
    rejected(chain, chain.sign(RevokeKey(org_id="oem", key_id="k7"), OPERATOR), Code.UNKNOWN_KEY, "k7")


# --------------------------------------------------------------------------- attestations


def attestation(chain: World, site_id: str, operator: str, origin_class: str, **overrides):
    payload = builders.build_attestation(
        NETWORK,
        "auditor",
        secrets.token_hex(16),
        site=chain.site_info(site_id, operator, origin_class),
        valid_from=T0,
        valid_until=T0 + timedelta(days=1),
        capacity=Opening.fresh(1000),
        operator_sealing_key=chain.orgs[operator].sealing_public,
    )
    return payload.model_copy(update=overrides)


def test_attestation_rules(chain: World):
    next_period = {"valid_from": T0 + timedelta(days=30), "valid_until": T0 + timedelta(days=60)}
    ok = chain.apply(chain.sign(attestation(chain, "site-a", "mine-a", "industrial", **next_period), "auditor"))
    assert ok.sites == [] and len(ok.attestations) == 1  # identical site, next period: a new chain
    rejected(
        chain, chain.sign(attestation(chain, "site-x", "mine-a", "industrial"), "mine-a"), Code.WRONG_ROLE, "auditor"
    )
    rejected(
        chain,
        chain.sign(attestation(chain, "site-a", "mine-a", "artisanal", **next_period), "auditor"),
        Code.SITE_MISMATCH,
        "origin_class",
    )
    rejected(
        chain,
        chain.sign(attestation(chain, "site-x", "recycler", "industrial"), "auditor"),
        Code.WRONG_ROLE,
        "recycler",
    )
    recycled_mine = attestation(chain, "site-x", "mine-a", "recycled_pre_consumer")
    rejected(chain, chain.sign(recycled_mine, "auditor"), Code.WRONG_ROLE, "mine")
    rejected(chain, chain.sign(attestation(chain, "site-x", "refiner", "industrial"), "auditor"), Code.WRONG_ROLE)
    backwards = attestation(chain, "site-x", "mine-a", "industrial", valid_until=T0 - timedelta(days=1))
    rejected(chain, chain.sign(backwards, "auditor"), Code.MALFORMED, "valid_from")
    no_capacity = attestation(chain, "site-x", "mine-a", "industrial", capacity_commitment=IDENTITY)
    rejected(chain, chain.sign(no_capacity, "auditor"), Code.MALFORMED, "capacity_commitment", "identity")


def test_auditor_cannot_attest_its_own_site(chain: World):
    chain.register("audit-mine", Role.auditor, Role.mine)
    payload = attestation(chain, "site-own", "audit-mine", "industrial")
    rejected(chain, chain.sign(payload, "audit-mine"), Code.WRONG_ROLE, "operates")


# --------------------------------------------------------------------------- issuance


def test_issuance_rules(chain: World):
    nonce = secrets.token_hex(16)
    payload, _ = chain.build_issue("site-a", 5_000, nonce)
    assert payload.seq == 2
    chain.apply(chain.sign(payload, "mine-a", nonce))
    rejected(chain, chain.sign(payload, "mine-b", nonce), Code.WRONG_ROLE, "mine-a", "site-a")
    rejected(chain, chain.sign(payload, "refiner", nonce), Code.WRONG_ROLE, "issue lots")
    skipped = payload.model_copy(update={"seq": 3})
    rejected(chain, chain.sign(skipped, "mine-a", nonce), Code.ISSUANCE_OUT_OF_SEQUENCE, "expects issuance 2")
    foreign = payload.model_copy(update={"attestation_id": chain.sites["site-b"][2]})
    rejected(chain, chain.sign(foreign, "mine-a", nonce), Code.SITE_MISMATCH, "site-b")
    missing = payload.model_copy(update={"attestation_id": "att_000"})
    rejected(chain, chain.sign(missing, "mine-a", nonce), Code.ATTESTATION_NOT_FOUND, "att_000")
    unknown_site = payload.model_copy(update={"site_id": "site-z"})
    rejected(chain, chain.sign(unknown_site, "mine-a", nonce), Code.SITE_NOT_FOUND, "site-z")


def test_issuance_needs_an_attestation_of_the_site_class(chain: World):
    """The lot takes the site's class and the capacity is the attestation's: an attestation
    of another class (a store that merged two concurrent first attestations of one site
    could hold one) must not lend its capacity to this site's issuances."""
    att_id = chain.sites["site-a"][2]
    chain.view.attestations[att_id] = chain.view.attestations[att_id].model_copy(update={"origin_class": "artisanal"})
    nonce = secrets.token_hex(16)
    payload, _ = chain.build_issue("site-a", 5_000, nonce)
    rejected(chain, chain.sign(payload, "mine-a", nonce), Code.SITE_MISMATCH, "attests class artisanal", "industrial")


def test_issuance_outside_the_attested_period(chain: World):
    nonce = secrets.token_hex(16)
    payload, _ = chain.build_issue("site-a", 5_000, nonce)
    late = chain.sign(payload, "mine-a", nonce, timestamp=T0 + timedelta(days=30))
    rejected(chain, late, Code.ATTESTATION_EXPIRED, "valid from")
    early = chain.sign(payload, "mine-a", nonce, timestamp=T0 - timedelta(days=2))
    rejected(chain, early, Code.ATTESTATION_EXPIRED)


def test_issuance_beyond_capacity(chain: World):
    # site-a: capacity 1e9, already issued A1 + A2 = 323,456,806
    with pytest.raises(ProvingError, match="capacity"):
        chain.build_issue("site-a", 700_000_000, secrets.token_hex(16))
    # A dishonest operator proves against a stale cumulative that forgets A1 and A2 ...
    nonce = secrets.token_hex(16)
    opening = Opening.fresh(700_000_000)
    att = chain.sites["site-a"][2]
    stale = builders.build_issue(
        NETWORK, "mine-a", nonce, site_id="site-a", origin_class="industrial", attestation_id=att, seq=2,
        opening=opening, issued_before=Opening.zero(), capacity=chain.capacity[att], product="ore",
        owner_sealing_key=chain.orgs["mine-a"].sealing_public,
    )  # fmt: skip
    # ... which the ledger's chain catches at once,
    rejected(chain, chain.sign(stale, "mine-a", nonce), Code.ISSUANCE_OUT_OF_SEQUENCE, "cumulative")
    # and with the true cumulative put back, the capacity proof no longer matches it.
    true_cumulative = commit_opening(chain.issued[att][1] + opening).hex()
    patched = stale.model_copy(update={"cumulative": true_cumulative})
    rejected(
        chain,
        chain.sign(patched, "mine-a", nonce),
        Code.BAD_PROOF,
        "capacity proof: issuance exceeds the attested capacity or the proof is invalid",
    )


@pytest.mark.parametrize(
    "field_name, value, reason",
    [
        ("commitment", compressed_x(on_curve=True), "subgroup"),
        ("commitment", IDENTITY, "identity"),
        ("cumulative", compressed_x(on_curve=False), "point"),
        ("range_proof", "00" * 10, "length 10"),
        ("capacity_proof", "00" * 928, "field A"),
    ],
)
def test_issuance_with_malformed_points_or_proofs(chain: World, field_name, value, reason):
    nonce = secrets.token_hex(16)
    payload, _ = chain.build_issue("site-a", 5_000, nonce)
    bad = payload.model_copy(update={field_name: value})
    rejected(chain, chain.sign(bad, "mine-a", nonce), Code.MALFORMED, f"{field_name}:", reason)


def test_issuance_range_proof_bound_to_its_lot(chain: World):
    """A valid proof copied into another issuance (other nonce, so other lot id) fails."""
    nonce = secrets.token_hex(16)
    payload, _ = chain.build_issue("site-a", 5_000, nonce)
    rejected(chain, chain.sign(payload, "mine-a"), Code.BAD_PROOF, "range proof")


# --------------------------------------------------------------------------- transfer


def test_transfer_rules(chain: World):
    n = chain.names
    sealed = "c2VhbGVk"

    def transfer(lot: str, to: str, signer: str):
        return chain.sign(Transfer(lot_id=lot, to=to, opening_sealed_to_receiver=sealed), signer)

    rejected(chain, transfer(n["CLEAN"], "refiner", "refiner"), Code.NOT_OWNER, "held by oem")
    rejected(chain, transfer(n["A1"], "oem", "refiner"), Code.LOT_CONSUMED, n["A1"])
    rejected(chain, transfer("lot_nope", "oem", "refiner"), Code.LOT_NOT_FOUND, "lot_nope")
    rejected(chain, transfer(n["DIRTY"], "ghost", "refiner"), Code.UNKNOWN_ORGANIZATION, "ghost")
    rejected(chain, transfer(n["DIRTY"], "auditor", "refiner"), Code.WRONG_ROLE, "hold lots")
    rejected(chain, transfer(n["DIRTY"], "refiner", "refiner"), Code.MALFORMED, "already holds")
    effects = chain.apply(transfer(n["DIRTY"], "oem", "refiner"))
    assert effects.custody_moves[0].custody_seq == 1 and effects.custody_moves[0].to_owner == "oem"


# --------------------------------------------------------------------------- transform


def test_transform_rules(chain: World):
    n = chain.names

    def transform(signer: str, inputs: list[str]):
        nonce = secrets.token_hex(16)
        openings = {i: chain.openings[i] for i in inputs}
        kept = {k: Opening.fresh(sum(o[k].value for o in openings.values() if k in o)) for o in openings.values() for k in o}
        plan = [builders.PlannedOutput("x", kept)]
        payload = builders.build_transform(
            NETWORK, signer, nonce, process="refine", inputs=openings, outputs=plan,
            owner_sealing_key=chain.orgs[signer].sealing_public,
        )  # fmt: skip
        return chain.sign(payload, signer, nonce)

    rejected(chain, transform("oem", [n["CLEAN"]]), Code.WRONG_ROLE, "transform lots")
    rejected(chain, transform("refiner", [n["B1"]]), Code.LOT_CONSUMED, n["B1"])
    rejected(chain, transform("refiner", [n["A2"]]), Code.NOT_OWNER, "held by mine-a")
    dup = transform("refiner", [n["DIRTY"]])
    dup = chain.sign(dup.payload.model_copy(update={"inputs": [n["DIRTY"], n["DIRTY"]]}), "refiner", dup.nonce)
    rejected(chain, dup, Code.MALFORMED, "inputs")
    chain.apply(transform("refiner", [n["DIRTY"]]))


def test_honest_builder_cannot_make_outputs_exceed_inputs(chain: World):
    with pytest.raises(ProvingError, match="artisanal"):
        builders.build_transform(
            NETWORK, "refiner", secrets.token_hex(16), process="refine",
            inputs={chain.names["DIRTY"]: chain.openings[chain.names["DIRTY"]]},
            outputs=[builders.PlannedOutput("x", {"artisanal": Opening.fresh(AMOUNTS["DIRTY.artisanal"] + 1)})],
            owner_sealing_key=chain.orgs["refiner"].sealing_public,
        )  # fmt: skip


def handmade_transform(
    chain: World, nonce: str, inputs: list[str], outputs, loss, range_values=None, cap_values=None
) -> Transform:
    """A refiner's transformation built by hand from openings, to forge what the builder refuses.

    The balance proof is made for the points rho_k*H that an honest balance
    would give; `range_values` replaces the openings the range proof covers and
    `cap_values` those of the loss-cap proof (default: the true p*In_k - q*L_k mod r).
    """
    out_ids = st.output_lot_ids(NETWORK, "refiner", nonce, len(outputs))
    in_openings = [chain.openings[i] for i in inputs]
    facts = (NETWORK, "refiner", nonce, "refine", inputs, out_ids)
    rhos = [d.blinding for d in st.class_balances(in_openings, outputs, loss, Opening.zero())]
    balance = prove_zero(st.transform_balance_transcript(*facts), [H() * r for r in rhos], rhos)
    values = range_values or st.transform_range_values(outputs, loss, Opening.zero())
    range_proof, _ = prove_range(st.transform_range_transcript(*facts), values)
    true_caps = st.loss_cap_values(in_openings, loss, "refine", Opening.zero(), Opening.scale)
    caps = cap_values or [Opening(c.value % ORDER, c.blinding) for c in true_caps]
    cap_proof, _ = prove_range(st.loss_cap_transcript(*facts), caps)
    return Transform(
        process="refine",
        inputs=inputs,
        outputs=[
            OutputLot(commitments={k: commit_opening(o).hex() for k, o in out.items()}, product="x") for out in outputs
        ],
        loss={k: commit_opening(o).hex() for k, o in loss.items()},
        balance_proof=balance.to_bytes().hex(),
        range_proof=range_proof.to_bytes().hex(),
        loss_cap_proof=cap_proof.to_bytes().hex(),
        openings_sealed_to_owner="c2VhbGVk",
    )


def test_handmade_honest_transform_is_accepted(chain: World):
    nonce = secrets.token_hex(16)
    outputs = [{"artisanal": Opening.fresh(64_000_000)}]
    loss = {"artisanal": Opening.fresh(AMOUNTS["DIRTY.artisanal"] - 64_000_000)}
    chain.apply(chain.sign(handmade_transform(chain, nonce, [chain.names["DIRTY"]], outputs, loss), "refiner", nonce))


@pytest.mark.parametrize(
    "outputs",
    [
        [{"artisanal": Opening.fresh(AMOUNTS["DIRTY.artisanal"] + 1_000_000)}],  # more out than in
        [{"industrial": Opening.fresh(AMOUNTS["DIRTY.artisanal"])}],  # launder artisanal into industrial
    ],
    ids=["inflate", "launder"],
)
def test_forged_balance_is_rejected(chain: World, outputs):
    nonce = secrets.token_hex(16)
    loss = {"artisanal": Opening.fresh(0)}
    forged = handmade_transform(chain, nonce, [chain.names["DIRTY"]], outputs, loss)
    rejected(
        chain,
        chain.sign(forged, "refiner", nonce),
        Code.BAD_PROOF,
        "balance proof: outputs exceed inputs in some class or the proof is invalid",
    )


def test_negative_loss_is_caught_by_the_range_proof(chain: World):
    """Inflating an output and committing to a 'negative' loss (mod r) balances exactly; the range proof refuses."""
    nonce = secrets.token_hex(16)
    surplus = 1_000_000
    outputs = [{"artisanal": Opening.fresh(AMOUNTS["DIRTY.artisanal"] + surplus)}]
    loss = {"artisanal": Opening(ORDER - surplus, Opening.fresh(0).blinding)}
    in_range_lie = {"artisanal": Opening(0, loss["artisanal"].blinding)}
    forged = handmade_transform(
        chain, nonce, [chain.names["DIRTY"]], outputs, loss,
        range_values=st.transform_range_values(outputs, in_range_lie, Opening.zero()),
    )  # fmt: skip
    rejected(chain, chain.sign(forged, "refiner", nonce), Code.BAD_PROOF, "range proof")


def test_transform_output_points_are_decoded_strictly(chain: World):
    nonce = secrets.token_hex(16)
    outputs = [{"artisanal": Opening.fresh(64_000_000)}]
    loss = {"artisanal": Opening.fresh(AMOUNTS["DIRTY.artisanal"] - 64_000_000)}
    honest = handmade_transform(chain, nonce, [chain.names["DIRTY"]], outputs, loss)
    bad = honest.model_copy(update={"outputs": [OutputLot(commitments={"artisanal": compressed_x(True)}, product="x")]})
    rejected(chain, chain.sign(bad, "refiner", nonce), Code.MALFORMED, "outputs[0].commitments.artisanal")
    bad = honest.model_copy(update={"balance_proof": "00000001"})
    rejected(chain, chain.sign(bad, "refiner", nonce), Code.MALFORMED, "balance_proof")


# --------------------------------------------------------------------------- claims


def claim(chain: World, lot: str, kind: ClaimKind, nonce: str | None = None, **params):
    nonce = nonce or secrets.token_hex(16)
    owner = chain.view.lot(lot).owner
    payload = builders.build_claim(NETWORK, owner, nonce, lot_ids=[lot], kind=kind, openings={lot: chain.openings[lot]}, **params)
    return chain.sign(payload, owner, nonce)


def test_ancestry_excludes_does_not_hold_with_artisanal_ancestry(chain: World):
    n = chain.names
    env = claim(chain, n["DIRTY"], ClaimKind.ancestry_excludes, origin_class="artisanal")
    rejected(chain, env, Code.CLAIM_DOES_NOT_HOLD, n["B1"], "artisanal site site-b")
    env = claim(chain, n["CLEAN"], ClaimKind.ancestry_excludes, origin_class="industrial")
    rejected(chain, env, Code.CLAIM_DOES_NOT_HOLD, n["A1"], "site-a")
    env = claim(chain, n["A2"], ClaimKind.ancestry_excludes, origin_class="industrial")
    rejected(chain, env, Code.CLAIM_DOES_NOT_HOLD, f"lot {n['A2']} was issued at industrial site site-a")
    chain.apply(claim(chain, n["A2"], ClaimKind.ancestry_excludes, origin_class="artisanal"))


def test_ancestry_must_be_complete(chain: World):
    del chain.view.lots[chain.names["R1"]]
    env = claim(chain, chain.names["CLEAN"], ClaimKind.ancestry_excludes, origin_class="artisanal")
    rejected(chain, env, Code.LOT_NOT_FOUND, chain.names["R1"], "ancestor")


def test_share_and_amount_claims(chain: World):
    clean = chain.names["CLEAN"]
    chain.apply(claim(chain, clean, ClaimKind.share_at_most, origin_class="industrial", p=3, q=4))
    chain.apply(claim(chain, clean, ClaimKind.amount_in_range, low=150_000_000, high=170_000_000))
    with pytest.raises(ProvingError):  # recycled is 27 %, not >= 30 %
        claim(chain, clean, ClaimKind.share_at_least, origin_class="recycled", p=30, q=100)
    with pytest.raises(ProvingError):
        claim(chain, clean, ClaimKind.amount_in_range, low=0, high=1000)


def test_claim_proof_is_bound_to_its_parameters(chain: World):
    honest = claim(chain, chain.names["CLEAN"], ClaimKind.share_at_least, origin_class="recycled", p=16, q=100)
    lie = honest.payload.model_copy(update={"p": 30})
    rejected(chain, chain.sign(lie, "oem", honest.nonce), Code.BAD_PROOF, "claim proof")
    other_lot = honest.payload.model_copy(update={"lot_ids": [chain.names["A2"]]})
    rejected(chain, chain.sign(other_lot, "oem", honest.nonce), Code.NOT_OWNER)


def test_claims_only_by_a_holder_current_or_at_consumption(chain: World):
    """A claim covers lots its signer holds now or consumed in its own transformation; a lot
    held by someone else now, or consumed while someone else held it, is NOT_OWNER."""
    n = chain.names
    rejected(
        chain,
        chain.sign(PublishClaim(lot_ids=[n["CLEAN"]], kind="ancestry_excludes", origin_class="artisanal"), "refiner"),
        Code.NOT_OWNER, f"lot {n['CLEAN']} is held by oem, not refiner",
    )  # fmt: skip
    rejected(
        chain,
        chain.sign(PublishClaim(lot_ids=[n["A1"]], kind="ancestry_excludes", origin_class="artisanal"), "mine-a"),
        Code.NOT_OWNER, f"lot {n['A1']} was consumed while held by refiner, not mine-a",
    )  # fmt: skip
    # the refiner consumed B1 in its own transformation: it may claim about it
    chain.apply(chain.sign(PublishClaim(lot_ids=[n["A1"]], kind="ancestry_excludes", origin_class="artisanal"), "refiner"))


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(kind="ancestry_excludes"), "needs origin_class"),
        (dict(kind="ancestry_excludes", origin_class="artisanal", p=1), "takes no p"),
        (dict(kind="share_at_least", origin_class="recycled", p=1, q=2), "needs proof"),
        (dict(kind="share_at_least", origin_class="recycled", p=3, q=2, proof="00"), "not a share"),
        (dict(kind="amount_in_range", low=5, high=4, proof="00"), "above high"),
    ],
)
def test_invalid_claim_parameters(chain: World, params, message):
    env = chain.sign(PublishClaim(lot_ids=[chain.names["CLEAN"]], **params), "oem")
    rejected(chain, env, Code.INVALID_CLAIM, message)
