"""GraphQL end to end (ASGI): mutations with real signed envelopes, queries,
bundles, and every kind of rejection leaving the database unchanged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conftest import AttestationState, Chain, build_chain
from ledger.bundle import verify_bundle
from ledger.openings import unseal
from sdk.client import MUTATIONS  # the SDK's payload type -> mutation map is the contract under test


def mutation_for(payload_type: str) -> str:
    name = MUTATIONS[payload_type]
    return f"mutation($e: JSON!) {{ {name}(envelope: $e) {{ eventId type lotIds claimId attestationId }} }}"


@pytest.fixture(scope="module")
def gql_publish(gql):
    """Publish through the GraphQL mutation matching the payload; raise on errors."""

    async def run(envelope):
        body = await gql(mutation_for(envelope.payload.type), {"e": envelope.to_json()})
        assert "errors" not in body, body["errors"]
        return next(iter(body["data"].values()))

    return run


@pytest.fixture(scope="module")
async def chain(world, gql_publish) -> Chain:
    return await build_chain(world, gql_publish)


async def attempt(gql, envelope, payload_type: str | None = None) -> dict:
    """Send an envelope (or raw JSON) to the mutation for `payload_type`; return the response body."""
    raw = envelope if isinstance(envelope, dict) else envelope.to_json()
    kind = payload_type or raw["payload"]["type"]
    return await gql(mutation_for(kind), {"e": raw})


def error_code(body: dict) -> str:
    assert body.get("errors"), body
    return body["errors"][0]["extensions"]["code"]


# --------------------------------------------------------------------------- mutations and reads


async def test_publish_results(world, gql_publish) -> None:
    result = await gql_publish(world.register("res-auditor", "auditor"))
    assert result["type"] == "register_organization" and result["eventId"].startswith("evt_")
    await gql_publish(world.register("res-mine", "mine"))
    env, att = world.attest("res-auditor", "res-mine", "res-site")
    assert (await gql_publish(env))["attestationId"] == att
    env, lot_id = world.issue(att, 1234)
    assert (await gql_publish(env))["lotIds"] == [lot_id]


async def test_lot_with_relations(gql, chain: Chain) -> None:
    body = await gql(
        """query($id: ID!) { lot(id: $id) {
            id product consumed custodySeq originClass createdAt
            commitments { originClass commitment }
            owner { id name roles } issuer { id }
            parents { id originClass consumed site { id name originClass operator { id }
                      attestations { id auditor { id } capacityCommitment lastIssuance { seq } } } }
            claims { id kind originClass lotIds owner { id } }
        } }""",
        {"id": chain.refined[0]},
    )
    assert "errors" not in body, body
    lot = body["data"]["lot"]
    assert lot["owner"]["id"] == "trader" and lot["owner"]["roles"] == ["trader"]
    assert lot["issuer"]["id"] == "trader" and lot["originClass"] is None and not lot["consumed"]
    assert [c["originClass"] for c in lot["commitments"]] == ["industrial"]
    assert sorted(p["id"] for p in lot["parents"]) == sorted(chain.issued)
    parent = lot["parents"][0]
    assert parent["consumed"] and parent["originClass"] == "industrial"
    assert parent["site"]["operator"]["id"] == "mine"
    assert parent["site"]["attestations"][0]["lastIssuance"]["seq"] == 1
    assert lot["claims"] == [
        {"id": chain.claim_id, "kind": "ancestry_excludes", "originClass": "artisanal", "lotIds": [lot["id"]],
         "owner": {"id": "trader"}}  # fmt: skip
    ]
    assert (await gql('{ lot(id: "lot_nope") { id } }'))["data"] == {"lot": None}


async def test_lots_pagination(gql, chain: Chain) -> None:
    ids, after = [], None
    for _ in range(20):
        body = await gql(
            "query($a: String) { lots(first: 1, after: $a, owner: \"trader\") { edges { cursor node { id } } "
            "pageInfo { hasNextPage endCursor } } }",
            {"a": after},
        )
        conn = body["data"]["lots"]
        ids += [e["node"]["id"] for e in conn["edges"]]
        after = conn["pageInfo"]["endCursor"]
        if not conn["pageInfo"]["hasNextPage"]:
            break
    owned_by_trader = sorted([*chain.issued, *chain.refined])
    assert ids == owned_by_trader
    body = await gql('{ lots(first: 100, originClass: industrial, consumed: true) { edges { node { id } } } }')
    assert sorted(e["node"]["id"] for e in body["data"]["lots"]["edges"]) >= sorted(chain.issued)
    assert error_code(await gql('{ lots(first: 101) { edges { cursor } } }')) == "BAD_USER_INPUT"
    assert error_code(await gql('{ lots(first: 0) { edges { cursor } } }')) == "BAD_USER_INPUT"
    assert error_code(await gql('{ lots(after: "%%%") { edges { cursor } } }')) == "BAD_USER_INPUT"


async def test_organizations_and_sites(gql, chain: Chain) -> None:
    body = await gql("{ organizations(first: 100) { edges { node { id signingKeys { keyId revokedAt } } } } }")
    ids = [e["node"]["id"] for e in body["data"]["organizations"]["edges"]]
    assert {"auditor", "mine", "trader"} <= set(ids) and ids == sorted(ids)
    body = await gql("{ sites(first: 10, originClass: industrial) { edges { node { id latitude region } } } }")
    assert chain.site_id in [e["node"]["id"] for e in body["data"]["sites"]["edges"]]
    body = await gql("{ sites(originClass: recycled_pre_consumer) { edges { node { id } } pageInfo { hasNextPage } } }")
    assert body["data"]["sites"] == {"edges": [], "pageInfo": {"hasNextPage": False}}
    body = await gql("query($id: ID!) { attestation(id: $id) { id originClass site { id } auditor { id } } }",
                     {"id": chain.attestation_id})  # fmt: skip
    assert body["data"]["attestation"]["site"]["id"] == chain.site_id


async def test_provenance(gql, chain: Chain) -> None:
    query = """query($id: ID!, $d: Int) { provenance(lotId: $id, maxDepth: $d) {
        root { id } nodes { id } edges { parent child } truncated depth } }"""
    prov = (await gql(query, {"id": chain.refined[0], "d": 5}))["data"]["provenance"]
    assert prov["root"]["id"] == chain.refined[0] and not prov["truncated"]
    assert sorted(n["id"] for n in prov["nodes"]) == sorted([chain.refined[0], *chain.issued])
    assert sorted((e["parent"], e["child"]) for e in prov["edges"]) == sorted(
        (p, chain.refined[0]) for p in chain.issued
    )
    cut = (await gql(query, {"id": chain.refined[0], "d": 0}))["data"]["provenance"]
    assert cut["truncated"] and cut["nodes"] == [{"id": chain.refined[0]}] and cut["edges"] == []
    assert error_code(await gql(query, {"id": chain.refined[0], "d": 100_000})) == "BAD_USER_INPUT"
    assert (await gql(query, {"id": "lot_unknown", "d": 3}))["data"]["provenance"] is None


async def test_disclosure_bundle_verifies_offline(gql, chain: Chain, api_settings) -> None:
    body = await gql("query($l: ID!, $c: ID!) { disclosureBundle(lotId: $l, claimId: $c) }",
                     {"l": chain.refined[0], "c": chain.claim_id})  # fmt: skip
    bundle = body["data"]["disclosureBundle"]
    report = verify_bundle(bundle, api_settings.root_public_key)
    assert report.ok, report.summary
    types = [e["payload"]["type"] for e in bundle["events"]]
    assert types[-1] == "publish_claim" and types.count("issue") == 2 and "attest_site" in types
    signers = {e["signer"] for e in bundle["events"]}
    assert "oem" not in signers and not any(e["payload"].get("org_id") == "oem" for e in bundle["events"])
    wrong = await gql("query($l: ID!, $c: ID!) { disclosureBundle(lotId: $l, claimId: $c) }",
                      {"l": chain.issued[0], "c": chain.claim_id})  # fmt: skip
    assert error_code(wrong) == "INVALID_CLAIM"


async def test_sealed_openings_and_events(gql, chain: Chain, world) -> None:
    page = '{ sealedOpenings(recipient: "trader", first: %d%s) { edges { node { recipient lotIds ciphertext eventId } } pageInfo { hasNextPage endCursor } } }'
    body = await gql(page % (100, ""))
    sealed = [e["node"] for e in body["data"]["sealedOpenings"]["edges"]]
    assert len(sealed) >= 3 and not body["data"]["sealedOpenings"]["pageInfo"]["hasNextPage"]
    # one at a time, following the cursor, gives the same list in the same (ledger) order
    paged, after = [], ""
    while True:
        conn = (await gql(page % (1, after)))["data"]["sealedOpenings"]
        paged += [e["node"] for e in conn["edges"]]
        if not conn["pageInfo"]["hasNextPage"]:
            break
        after = ', after: "%s"' % conn["pageInfo"]["endCursor"]
    assert paged == sealed
    assert error_code(await gql(page % (1, ', after: "bm90LWEtc2Vx"'))) == "BAD_USER_INPUT"  # "not-a-seq"
    lot_ids = {x for s in sealed for x in s["lotIds"]}
    assert set(chain.issued) | set(chain.refined) <= lot_ids
    plaintext = unseal(sealed[-1]["ciphertext"], world.members["trader"].sealing_key)
    assert plaintext  # readable by the trader only
    event = (await gql("query($id: ID!) { event(id: $id) }", {"id": sealed[-1]["eventId"]}))["data"]["event"]
    assert event["id"] == sealed[-1]["eventId"] and event["envelope"]["signer"] == "trader"
    claims = (await gql("query($l: ID!) { claims(lotId: $l) { id } }", {"l": chain.refined[0]}))["data"]["claims"]
    assert claims == [{"id": chain.claim_id}]


async def test_nested_reads_are_batched(gql, chain: Chain, command_counter) -> None:
    command_counter.reset()
    # 8 lots, two levels of parents (up to 32 each) and 10 claims each stay within the cost budget
    body = await gql(
        """{ lots(first: 8) { edges { node { id owner { name } issuer { name } site { name operator { name } }
             claims(first: 10) { id owner { name } } parents { id owner { name } parents { id } } } } } }"""
    )
    assert "errors" not in body and len(body["data"]["lots"]["edges"]) >= 5
    # one query per kind of relation and level, whatever the number of lots
    assert command_counter.count() <= 8, command_counter.names


async def test_unexpected_errors_are_masked(gql, store, monkeypatch) -> None:
    async def boom(event_id):
        raise RuntimeError("secret connection string mongodb://admin:hunter2@db")

    monkeypatch.setattr(store, "event", boom)
    body = await gql('{ event(id: "evt_x") }')
    assert body["errors"][0]["message"] == "Internal server error"
    assert body["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert "hunter2" not in str(body)


async def test_malformed_entity_representations_are_bad_input(gql, chain: Chain, caplog) -> None:
    """`_Any` accepts any JSON value: a malformed representation (found by fuzzing:
    `false`, no or an unknown `__typename`, extra keys, a non-string id) is a typed
    BAD_USER_INPUT error at its index, not a masked internal error that fails the
    whole batch, and the valid representations around it still resolve in order."""
    reps = [
        False,
        {"__typename": "Lot", "id": chain.refined[0]},
        {"id": "x"},
        {"__typename": [], "id": "x"},
        {"__typename": "Attestation", "id": chain.attestation_id},
        {"__typename": "Query", "id": "x"},
        {"__typename": "Lot", "id": chain.issued[0], "owner": "mine"},
        {"__typename": "Site", "id": ["x"]},
        {"__typename": "Organization", "id": None},
        {"__typename": "Organization", "id": "mine"},
    ]
    with caplog.at_level("ERROR", logger="oretrace.graphql"):
        body = await gql("query($r: [_Any!]!) { _entities(representations: $r) { ... on Lot { id } ... on Organization { id } } }",
                         {"r": reps})  # fmt: skip
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    assert [e and e["id"] for e in body["data"]["_entities"]] == [None, chain.refined[0], *[None] * 7, "mine"]
    errors = {tuple(e["path"]): e for e in body["errors"]}
    assert sorted(errors) == [("_entities", i) for i in (0, 2, 3, 4, 5, 6, 7, 8)]
    assert {e["extensions"]["code"] for e in errors.values()} == {"BAD_USER_INPUT"}
    assert "owner" in errors[("_entities", 6)]["message"]


# --------------------------------------------------------------------------- rejections write nothing


@pytest.fixture(scope="module")
async def cast(world, gql_publish, chain: Chain):
    """Extra organisations for the rejection tests; a lot held by `trader2`."""
    await gql_publish(world.register("trader2", "trader"))
    await gql_publish(world.register("revoked-trader", "trader"))
    await gql_publish(world.revoke("revoked-trader"))
    env, lot_id = world.issue(chain.attestation_id, 10_000)
    await gql_publish(env)
    await gql_publish(world.transfer("mine", lot_id, "trader2"))
    return {"trader2_lot": lot_id}


async def expect_rejection(gql, store, envelope, code: str, payload_type: str | None = None, match: str = "") -> None:
    before = await store.snapshot()
    body = await attempt(gql, envelope, payload_type)
    assert error_code(body) == code, body
    assert match in body["errors"][0]["message"], body["errors"][0]["message"]
    assert body["data"] is None
    assert await store.snapshot() == before


def tamper(envelope, **payload_changes) -> dict:
    raw = envelope.to_json()
    raw["payload"].update(payload_changes)
    return raw


async def test_rejected_bad_signature(gql, store, world, chain, cast) -> None:
    env = world.transfer("trader2", cast["trader2_lot"], "trader")
    raw = env.to_json()
    raw["signature"] = ("0" if raw["signature"][0] != "0" else "1") + raw["signature"][1:]
    await expect_rejection(gql, store, raw, "BAD_SIGNATURE")
    await expect_rejection(gql, store, tamper(env, to="oem"), "BAD_SIGNATURE")  # payload changed after signing


async def test_rejected_unknown_signer_and_key(gql, store, world, chain, cast) -> None:
    env = world.transfer("trader2", cast["trader2_lot"], "trader")
    raw = env.to_json()
    await expect_rejection(gql, store, {**raw, "key_id": "k9"}, "UNKNOWN_KEY")
    await expect_rejection(gql, store, {**raw, "signer": "nobody"}, "UNKNOWN_SIGNER")


async def test_rejected_revoked_key(gql, store, world, chain, cast) -> None:
    world.members["revoked-trader"].openings[cast["trader2_lot"]] = world.members["trader2"].openings[cast["trader2_lot"]]
    env, _ = world.claim_excludes("revoked-trader", cast["trader2_lot"])
    await expect_rejection(gql, store, env, "REVOKED_KEY", match="revoked")


async def test_rejected_revoked_key_back_dated_before_its_revocation(gql, store, world, gql_publish, cast) -> None:
    """A stolen key back-dating within the clock skew to before its revocation is still
    refused: a key revoked in the ledger publishes nothing more (before this, the server
    accepted such an envelope for the whole skew window after the revocation)."""
    from ledger.models import Transfer

    await gql_publish(world.register("backdating-trader", "trader"))
    revocation = world.revoke("backdating-trader")
    await gql_publish(revocation)
    for seconds in (1, 60, 240):
        env = world.sign(Transfer(lot_id=cast["trader2_lot"], to="trader", opening_sealed_to_receiver="eA=="),
                         "backdating-trader", timestamp=revocation.timestamp - timedelta(seconds=seconds))  # fmt: skip
        await expect_rejection(gql, store, env, "REVOKED_KEY", match="revoked")


async def test_rejected_wrong_role(gql, store, world, chain, cast) -> None:
    env, _ = world.attest("trader", "mine", "rogue-site")  # a trader is no auditor
    await expect_rejection(gql, store, env, "WRONG_ROLE")
    env, _ = world.transform("mine", [cast["trader2_lot"]])  # a mine does not transform
    await expect_rejection(gql, store, env, "WRONG_ROLE", match="transform")
    env = world.register("bad-operator", "operator")
    await expect_rejection(gql, store, env, "WRONG_ROLE", match="operator role")


async def test_rejected_another_owners_lot(gql, store, world, chain, cast) -> None:
    world.members["trader"].openings[cast["trader2_lot"]] = world.members["trader2"].openings[cast["trader2_lot"]]
    env = world.transfer("trader", cast["trader2_lot"], "oem")
    await expect_rejection(gql, store, env, "NOT_OWNER", match="trader2")


async def test_rejected_consumed_lot(gql, store, world, chain, cast) -> None:
    env, _ = world.transform("trader", chain.issued)  # already merged into chain.refined
    await expect_rejection(gql, store, env, "LOT_CONSUMED")


async def test_rejected_replayed_nonce(gql, store, world, chain, cast) -> None:
    doc = await store.events.find_one({"claim_id": chain.claim_id})
    claim_event = doc["envelope"]
    # the very same envelope again is idempotent: its original outcome, nothing new written
    before = await store.snapshot()
    body = await gql("mutation($e: JSON!) { publishClaim(envelope: $e) { eventId claimId } }", {"e": claim_event})
    assert body == {"data": {"publishClaim": {"eventId": doc["_id"], "claimId": chain.claim_id}}}
    assert await store.snapshot() == before
    from ledger.builders import build_claim

    payload = build_claim(world.network, "trader", claim_event["nonce"], lot_ids=[chain.refined[1]],
                          kind="ancestry_excludes", origin_class="artisanal")  # fmt: skip
    fresh = world.sign(payload, "trader", nonce=claim_event["nonce"])  # a new claim reusing the nonce
    await expect_rejection(gql, store, fresh, "REPLAYED_NONCE")


async def test_rejected_malformed(gql, store, world, chain, cast) -> None:
    env, _ = world.issue(chain.attestation_id, 5, record=False)
    off_curve = world.sign(env.payload.model_copy(update={"commitment": "8" + "1" * 95}), "mine")
    await expect_rejection(gql, store, off_curve, "MALFORMED", match="commitment")
    raw = env.to_json()
    del raw["signature"]
    await expect_rejection(gql, store, raw, "MALFORMED", payload_type="issue", match="signature")
    await expect_rejection(gql, store, tamper(env, commitment="zz"), "MALFORMED", match="commitment")
    await expect_rejection(gql, store, env, "MALFORMED", payload_type="transfer", match="'issue'")
    body = await gql('mutation { issueLot(envelope: "just a string") { eventId } }')
    assert error_code(body) == "MALFORMED"


async def test_rejected_bad_proof(gql, store, world, chain, cast) -> None:
    first, _ = world.issue(chain.attestation_id, 7, record=False)
    other, _ = world.issue(chain.attestation_id, 8, record=False)
    swapped = world.sign(first.payload.model_copy(update={"range_proof": other.payload.range_proof}), "mine")
    await expect_rejection(gql, store, swapped, "BAD_PROOF", match="range proof")


async def test_rejected_network_and_clock(gql, store, world, chain, cast) -> None:
    env = world.transfer("trader2", cast["trader2_lot"], "trader")
    from ledger.envelope import sign

    member = world.members["trader2"]
    elsewhere = sign(env.payload, network="other-net", signer="trader2", key_id="k1", signing_key=member.signing_key)
    await expect_rejection(gql, store, elsewhere, "WRONG_NETWORK")
    stale = world.sign(env.payload, "trader2", timestamp=datetime.now(UTC) - timedelta(hours=2))
    await expect_rejection(gql, store, stale, "STALE_TIMESTAMP")


async def test_process_verifier(store, api_settings, world, chain, cast) -> None:
    """The production default: rules.apply in spawned worker processes, rejections carried back typed."""
    from api.service import Ingestion, Verifier
    from ledger.errors import Code, Rejection

    ingestion = Ingestion(store, api_settings, Verifier("process", workers=1))
    try:
        await ingestion.start()
        outcome = await ingestion.publish(world.register("via-process", "oem").to_json())
        assert outcome.type == "register_organization"
        raw = world.transfer("trader2", cast["trader2_lot"], "trader").to_json()
        raw["signature"] = "00" * 64
        with pytest.raises(Rejection) as info:
            await ingestion.publish(raw)
        assert info.value.code is Code.BAD_SIGNATURE
    finally:
        ingestion.close()


async def test_rejected_registry_mutations(gql, store, world, chain, cast) -> None:
    from ledger.models import KeyEntry, RevokeKey, RotateKey

    by_trader = world.sign(RevokeKey(org_id="trader2", key_id="k1"), "trader")  # only the operator may
    await expect_rejection(gql, store, by_trader, "WRONG_ROLE", match="operator")
    ghost = world.sign(RotateKey(org_id="ghost", new_key=KeyEntry(key_id="k2", public_key="22" * 32)), "operator")
    await expect_rejection(gql, store, ghost, "UNKNOWN_ORGANIZATION", match="ghost")
    forged_root = world.sign(RevokeKey(org_id="trader2", key_id="k1"), "operator", key=world.members["trader"].signing_key)
    await expect_rejection(gql, store, forged_root, "BAD_SIGNATURE")
    await expect_rejection(gql, store, world.register("trader2", "trader"), "ALREADY_EXISTS")


async def test_rejected_issuance_beyond_capacity(gql, gql_publish, store, world, chain, cast) -> None:
    """The laundering path: more cobalt declared at a site than its audited capacity."""
    import dataclasses

    from crypto.errors import ProvingError
    from crypto.pedersen import Opening

    env, small_site = world.attest("auditor", "mine", "small-site", capacity=100)
    await gql_publish(env)
    await gql_publish(world.issue(small_site, 60)[0])
    with pytest.raises(ProvingError):  # an honest wallet cannot prove 120 <= 100
        world.issue(small_site, 60, record=False)
    # A forger proves against a larger capacity opening than the auditor committed to.
    att = world.attestations[small_site]
    real_capacity = att.capacity
    world.attestations[small_site] = dataclasses.replace(att, capacity=Opening(10**6, real_capacity.blinding))
    try:
        forged, _ = world.issue(small_site, 60, record=False)
    finally:
        world.attestations[small_site] = att
    await expect_rejection(gql, store, forged, "BAD_PROOF", match="capacity")


async def test_rejected_expired_attestation(gql, gql_publish, store, world, chain, cast) -> None:
    from crypto.pedersen import Opening
    from ledger import statements as st
    from ledger.builders import build_attestation
    from ledger.models import Location, SiteInfo

    nonce = world.nonce()
    capacity = Opening.fresh(10**6)
    site = SiteInfo(site_id="old-site", operator="mine", name="Old site", country="CD", region="Lualaba",
                    location=Location(lat=-10.7, lon=25.5), origin_class="industrial")  # fmt: skip
    now = datetime.now(UTC)
    payload = build_attestation(world.network, "auditor", nonce, site=site, valid_from=now - timedelta(days=400),
                                valid_until=now - timedelta(days=35), capacity=capacity,
                                operator_sealing_key=world.members["mine"].sealing_public)  # fmt: skip
    await gql_publish(world.sign(payload, "auditor", nonce=nonce))
    att_id = st.attestation_id(world.network, "auditor", nonce)
    world.attestations[att_id] = AttestationState(att_id, "old-site", "industrial", "mine", capacity, Opening.zero())
    env, _ = world.issue(att_id, 10, record=False)
    await expect_rejection(gql, store, env, "ATTESTATION_EXPIRED", match=att_id)


async def test_rejected_outputs_exceeding_inputs(gql, store, world, chain, cast) -> None:
    """A refiner declaring more cobalt out than went in: the balance proof cannot hold."""
    from crypto.generators import G
    from crypto.group import Point

    honest, _ = world.transform("trader2", [cast["trader2_lot"]])
    output = honest.payload.outputs[0]
    inflated_commitment = (Point.from_hex(output.commitments["industrial"]) + G() * 5_000).hex()
    inflated = output.model_copy(update={"commitments": {**output.commitments, "industrial": inflated_commitment}})
    forged = world.sign(honest.payload.model_copy(update={"outputs": [inflated]}), "trader2")
    await expect_rejection(gql, store, forged, "BAD_PROOF", match="balance")


async def test_disclosure_bundle_work_runs_off_the_event_loop(gql, chain: Chain, monkeypatch) -> None:
    """Parsing every event of an ancestry and packing the bundle is CPU work: a worker thread's."""
    import threading

    import api.store
    import ledger.bundle

    loop_thread = threading.get_ident()
    threads: dict[str, set[int]] = {"parse": set(), "assemble": set()}
    real_parse, real_assemble = api.store.parse_envelope, ledger.bundle.assemble

    def parse(raw):
        threads["parse"].add(threading.get_ident())
        return real_parse(raw)

    def assemble(*args):
        threads["assemble"].add(threading.get_ident())
        return real_assemble(*args)

    monkeypatch.setattr(api.store, "parse_envelope", parse)
    monkeypatch.setattr(ledger.bundle, "assemble", assemble)
    body = await gql("query($l: ID!, $c: ID!) { disclosureBundle(lotId: $l, claimId: $c) }",
                     {"l": chain.refined[0], "c": chain.claim_id})  # fmt: skip
    assert body["data"]["disclosureBundle"]["claim_id"] == chain.claim_id
    assert threads["parse"] and threads["assemble"], threads
    assert loop_thread not in threads["parse"] | threads["assemble"], threads
