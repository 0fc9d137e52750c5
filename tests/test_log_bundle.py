"""Bundles anchored in the log, end to end on the embedded database: the server adds the
checkpoint and inclusion proofs, `verify_bundle` checks them against the log key the
operator registered, and refuses every kind of forgery; the C2SP read API and the
GraphQL log fields agree with the tree."""

from __future__ import annotations

import base64
import copy
import time

import pytest
from nacl.signing import SigningKey

from conftest import build_chain
from ledger import checkpoint as cp
from ledger import merkle
from ledger.bundle import verify_bundle
from ledger.encoding import canonical_json
from ledger.models import RegisterLogKey, RegisterOrganization

BUNDLE_QUERY = "query($l: ID!, $c: ID!) { disclosureBundle(lotId: $l, claimId: $c) }"
WITNESS = SigningKey(bytes([9] * 32))
WITNESS_KEY = cp.key_from_signing_key("witness.test/w1", WITNESS, cp.COSIGNATURE_V1)


@pytest.fixture(scope="module")
async def anchored(app, world, publish, gql, root_key):
    log = app.state.runtime.store.translog
    outcome = await publish(
        world.sign(RegisterLogKey(origin=log.origin, public_key=bytes(log.signing_key.verify_key).hex()), "operator")
    )
    assert outcome.log_index is not None
    chain = await build_chain(world, publish, suffix="-lg")
    data = await gql(BUNDLE_QUERY, {"l": chain.refined[0], "c": chain.claim_id})
    assert "errors" not in data, data
    return chain, data["data"]["disclosureBundle"], root_key.verify_key.encode().hex()


def failed(report) -> str:
    assert not report.ok, report.summary
    return report.failed().name


async def test_server_bundle_is_anchored_and_verifies(anchored):
    _chain, bundle, root = anchored
    report = verify_bundle(bundle, root, require_log=True)
    assert report.ok, report.summary
    assert report.anchor["size"] >= len(bundle["events"])
    assert "anchored in checkpoint oretrace.log/oretrace-test" in report.summary
    indices = [leaf["index"] for leaf in bundle["log"]["leaves"]]
    assert indices == sorted(set(indices))


async def test_event_the_ledger_never_accepted_fails(anchored, world):
    _chain, bundle, root = anchored
    forged = copy.deepcopy(bundle)
    stray = world.sign(
        RegisterOrganization(org_id="ghost", name="Ghost", country="CD", roles=["trader"],
                             signing_keys=[{"key_id": "k1", "public_key": "00" * 32}], sealing_key="00" * 32),
        "operator",
    )  # fmt: skip
    claim_leaf = forged["log"]["leaves"][-1]
    before = forged["log"]["leaves"][-2]
    for leaf in (before, claim_leaf, {"index": claim_leaf["index"] - 1, "inclusion_proof": before["inclusion_proof"]}):
        attempt = copy.deepcopy(forged)
        attempt["events"].insert(-1, stray.to_json())
        attempt["log"]["leaves"].insert(-1, copy.deepcopy(leaf))
        assert failed(verify_bundle(attempt, root)) == "log"


async def test_swapped_or_shifted_indices_fail(anchored):
    _chain, bundle, root = anchored
    swapped = copy.deepcopy(bundle)
    leaves = swapped["log"]["leaves"]
    leaves[1]["index"], leaves[2]["index"] = leaves[2]["index"], leaves[1]["index"]
    assert failed(verify_bundle(swapped, root)) == "log"
    both = copy.deepcopy(bundle)
    leaves = both["log"]["leaves"]
    leaves[1], leaves[2] = leaves[2], leaves[1]  # indices and proofs swapped together: order broken
    assert failed(verify_bundle(both, root)) == "log"
    for i in range(len(bundle["events"])):
        tampered = copy.deepcopy(bundle)
        proof = tampered["log"]["leaves"][i]["inclusion_proof"]
        if proof:
            proof[0] = ("1" if proof[0][0] != "1" else "2") + proof[0][1:]
            assert failed(verify_bundle(tampered, root)) == "log"


async def test_checkpoint_of_another_log_or_key_fails(anchored, app):
    _chain, bundle, root = anchored
    note = cp.parse_note(bundle["log"]["checkpoint"])
    checkpoint = cp.parse_checkpoint_body(note.text)
    origin = app.state.runtime.store.translog.origin
    cases = [
        cp.sign_checkpoint(checkpoint, origin, SigningKey.generate()),  # same name, unregistered key
        cp.sign_checkpoint(cp.Checkpoint("other.log/x", checkpoint.size, checkpoint.root), "other.log/x",
                           SigningKey.generate()),  # fmt: skip
        cp.sign_checkpoint(cp.Checkpoint(checkpoint.origin, checkpoint.size, bytes(32)), origin, SigningKey.generate()),
    ]
    for forged_note in cases:
        forged = copy.deepcopy(bundle)
        forged["log"]["checkpoint"] = forged_note.encode().decode()
        assert failed(verify_bundle(forged, root)) == "log"
    unanchored = {k: v for k, v in bundle.items() if k != "log"}
    assert verify_bundle(unanchored, root).ok  # legacy: accepted only when no anchoring is asked for
    assert failed(verify_bundle(unanchored, root, require_log=True)) == "log"
    assert failed(verify_bundle({**bundle, "log": {"checkpoint": bundle["log"]["checkpoint"]}}, root)) == "log"


async def test_witness_quorum(anchored):
    _chain, bundle, root = anchored
    note = cp.parse_note(bundle["log"]["checkpoint"])
    cosigned = copy.deepcopy(bundle)
    cosigned["log"]["checkpoint"] = (
        note.with_signatures([cp.cosign(note.text, WITNESS_KEY.name, WITNESS, int(time.time()))]).encode().decode()
    )
    other = cp.key_from_signing_key("witness.test/w2", SigningKey.generate(), cp.COSIGNATURE_V1)
    report = verify_bundle(cosigned, root, witnesses=(WITNESS_KEY, other), min_cosignatures=1)
    assert report.ok, report.summary
    assert report.anchor["cosigners"].keys() == {"witness.test/w1"}
    assert failed(verify_bundle(cosigned, root, witnesses=(WITNESS_KEY, other), min_cosignatures=2)) == "log"
    assert failed(verify_bundle(bundle, root, witnesses=(WITNESS_KEY,), min_cosignatures=1)) == "log"


async def test_read_api_and_graphql_fields_agree(anchored, app, client, gql, store):
    log = app.state.runtime.store.translog
    await log.advance()
    response = await client.get("/checkpoint")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    checkpoint, _ = cp.open_checkpoint(response.content, log.origin, [log.key])
    size = checkpoint.size
    docs = await store.events.find({}, {"log_index": 1, "envelope": 1}).sort("log_index", 1).to_list(None)
    entries = [canonical_json(d["envelope"]) for d in docs[:size]]
    tree = merkle.MemoryTree.from_entries(entries)
    assert tree.root() == checkpoint.root
    tile = await client.get("/tile/0/" + merkle.tile_path(0, 0, size).split("/", 2)[2])
    assert tile.status_code == 200 and tile.content == b"".join(tree.levels[0][:size])
    bundle = await client.get(f"/tile/entries/000.p/{size}")
    assert merkle.parse_entry_bundle(bundle.content) == entries
    assert (await client.get(f"/tile/0/000.p/{size + 1}")).status_code == 404
    assert (await client.get("/tile/0/000")).status_code == 404  # no full tile yet
    for bad in ("/tile/0/0", "/tile/00/000", "/tile/0/000.p/0", "/tile/x/000"):
        assert (await client.get(bad)).status_code == 400, bad

    event_id = docs[3]["_id"]
    data = await gql(
        "query($e: ID!, $o: Int!, $n: Int!) { inclusionProof(eventId: $e) { logIndex treeSize leafHash hashes checkpoint }"
        " consistencyProof(oldSize: $o, newSize: $n) logCheckpoint }",
        {"e": event_id, "o": 2, "n": size},
    )
    proof = data["data"]["inclusionProof"]
    merkle.verify_inclusion(bytes.fromhex(proof["leafHash"]), proof["logIndex"], proof["treeSize"],
                            [bytes.fromhex(h) for h in proof["hashes"]], checkpoint.root)  # fmt: skip
    merkle.verify_consistency(2, size, tree.root(2), checkpoint.root,
                              [bytes.fromhex(h) for h in data["data"]["consistencyProof"]])  # fmt: skip
    assert data["data"]["logCheckpoint"].encode() == response.content
    bad = await gql("{ consistencyProof(oldSize: 5, newSize: 4) }")
    assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    mutation = await gql(
        "mutation($e: JSON!) { registerOrganization(envelope: $e) { eventId logIndex } }",
        {"e": anchored[0].world.register("late-org", "trader").to_json()},
    )
    assert mutation["data"]["registerOrganization"]["logIndex"] == len(docs)


async def test_retired_log_key_is_refused(anchored, app, world, publish, gql):
    chain, old_bundle, root = anchored
    log = app.state.runtime.store.translog
    old = bytes(log.signing_key.verify_key).hex()
    new_key = SigningKey.generate()
    retire = world.sign(RegisterLogKey(origin=log.origin, public_key=bytes(new_key.verify_key).hex(), retire=[old]),
                        "operator")  # fmt: skip
    await publish(retire)
    data = await gql(BUNDLE_QUERY, {"l": chain.refined[0], "c": chain.claim_id})
    bundle = data["data"]["disclosureBundle"]
    assert bundle["events"][-1]["payload"]["retire"] == [old]  # registered after the claim, still carried
    assert "log" not in bundle  # the server does not anchor with a retired key
    # a checkpoint by the retired key fails once the bundle carries the retirement
    forged = copy.deepcopy(old_bundle)
    forged["events"].append(retire.to_json())
    forged["log"]["leaves"].append({"index": forged["log"]["leaves"][-1]["index"] + 1, "inclusion_proof": []})
    report = verify_bundle(forged, root)
    assert failed(report) == "log" and "no signature by a trusted key" in report.failed().detail
    log.signing_key = new_key  # the operator rotates the server to the new key
    data = await gql(BUNDLE_QUERY, {"l": chain.refined[0], "c": chain.claim_id})
    report = verify_bundle(data["data"]["disclosureBundle"], root, require_log=True)
    assert report.ok, report.summary
    assert base64.b64decode(report.anchor["log_key"].split("+", 2)[2])[1:] == bytes(new_key.verify_key)
