"""Aggregate claims through the API, the SDK and the CLI, on the real embedded database.

A fresh chain per module (tests/conftest.py `build_chain`, suffix "-agg"): the
mine issues two lots, the trader merges them into two outputs. The trader may
claim over the two inputs it consumed or over its two held outputs, not over an
input with an output (upstream of it). A set of held and consumed lots goes
through the SDK and the CLI in the last test.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from nacl.signing import SigningKey
from test_api_graphql import attempt, error_code, expect_rejection
from typer.testing import CliRunner

from conftest import Chain, build_chain, operator_wallet
from ledger import statements as st
from ledger.builders import build_claim
from ledger.bundle import verify_bundle
from ledger.models import MAX_CLAIM_LOTS, ClaimKind, PublishClaim
from sdk.cli import app
from sdk.client import Client
from sdk.demo_data import attestation_period
from sdk.publisher import ClaimSetRefused, Publisher
from sdk.wallet import Wallet

CLAIM_FIELDS = "eventId type lotIds claimId"


@pytest.fixture(scope="module")
async def chain(world, gql) -> Chain:
    async def publish(envelope):
        body = await attempt(gql, envelope)
        assert "errors" not in body, body["errors"]
        return next(iter(body["data"].values()))

    return await build_chain(world, publish, suffix="-agg")


def claim_envelope(world, owner: str, lot_ids: list[str], **params):
    nonce = world.nonce()
    openings = {i: world.members[owner].openings[i] for i in lot_ids}
    payload = build_claim(world.network, owner, nonce, lot_ids=lot_ids, openings=openings, **params)
    return world.sign(payload, owner, nonce=nonce), st.claim_id(world.network, owner, nonce)


def grams(world, owner: str, lot_ids: list[str]) -> int:
    return sum(o.value for i in lot_ids for o in world.members[owner].openings[i].values())


async def test_publish_an_aggregate_and_find_it_from_every_member(gql, world, chain: Chain, api_settings):
    trader = "trader-agg"
    for lots in (chain.issued, chain.refined):  # consumed by the trader; held by it
        total = grams(world, trader, lots)
        env, claim_id = claim_envelope(world, trader, lots, kind=ClaimKind.amount_in_range, low=total, high=total)
        body = await attempt(gql, env)
        assert "errors" not in body, body
        assert body["data"]["publishClaim"]["claimId"] == claim_id
        for member in lots:
            found = await gql("query($id: ID!) { lot(id: $id) { claims { id lotIds kind } } }", {"id": member})
            assert {"id": claim_id, "lotIds": sorted(lots), "kind": "amount_in_range"} in found["data"]["lot"]["claims"]
            listed = await gql("query($id: ID!) { claims(lotId: $id) { id } }", {"id": member})
            assert {"id": claim_id} in listed["data"]["claims"]
        # the bundle: the lots come from the claim; a member may be named, another lot may not
        for variables in ({"c": claim_id}, {"c": claim_id, "l": lots[1]}):
            bundle = (await gql("query($c: ID!, $l: ID) { disclosureBundle(claimId: $c, lotId: $l) }",
                                variables))["data"]["disclosureBundle"]  # fmt: skip
            assert bundle["lot_ids"] == sorted(lots)
            report = verify_bundle(bundle, api_settings.root_public_key)
            assert report.ok, report.summary
            assert f"for 2 lots: {', '.join(sorted(lots))}" in report.summary
        outsider = chain.refined[0] if lots == chain.issued else chain.issued[0]
        wrong = await gql("query($c: ID!, $l: ID) { disclosureBundle(claimId: $c, lotId: $l) }",
                          {"c": claim_id, "l": outsider})  # fmt: skip
        assert error_code(wrong) == "INVALID_CLAIM" and outsider in wrong["errors"][0]["message"]


async def test_refused_aggregates_write_nothing(gql, store, world, chain: Chain):
    trader, mine = "trader-agg", "mine-agg"
    # a lot with its ancestor: the proof is true for the inflated sums, the set is not allowed
    overlapping = sorted([chain.issued[0], chain.refined[0]])
    env, _ = claim_envelope(world, trader, overlapping, kind=ClaimKind.share_at_least, origin_class="industrial",
                            p=1, q=1)  # fmt: skip
    await expect_rejection(gql, store, env, "OVERLAPPING_LOTS", match=f"lot {chain.issued[0]} is an ancestor")
    # the mine sold both lots (the trader consumed them): not the mine's any more
    env = world.sign(PublishClaim(lot_ids=sorted(chain.issued), kind="ancestry_excludes", origin_class="artisanal"),
                     mine)  # fmt: skip
    await expect_rejection(gql, store, env, "NOT_OWNER", match="was consumed while held by trader-agg")
    # unsorted or repeated
    for bad in (sorted(chain.refined, reverse=True), [chain.refined[0], chain.refined[0]]):
        env = world.sign(PublishClaim(lot_ids=bad, kind="ancestry_excludes", origin_class="artisanal"), trader)
        await expect_rejection(gql, store, env, "MALFORMED", match="strictly ascending")
    # empty or 65 lots: refused by the strict decoder
    for count in (0, MAX_CLAIM_LOTS + 1):
        payload = PublishClaim.model_construct(type="publish_claim", lot_ids=[f"lot{i:03d}" for i in range(count)],
                                               kind=ClaimKind.ancestry_excludes, origin_class="artisanal", p=None,
                                               p_max=None, q=None, low=None, high=None, proof=None)  # fmt: skip
        await expect_rejection(gql, store, world.sign(payload, trader), "MALFORMED", match="lot_ids")
    # an amount above the true sum: the honest proof re-signed with a lie
    total = grams(world, trader, chain.refined)
    env, _ = claim_envelope(world, trader, chain.refined, kind=ClaimKind.amount_in_range, low=total, high=total)
    lie = world.sign(env.payload.model_copy(update={"low": total + 1, "high": total + 10}), trader, nonce=env.nonce)
    await expect_rejection(gql, store, lie, "BAD_PROOF", match="claim proof")


async def test_sdk_and_cli_claim_over_several_lots(live_server, api_settings, root_key: SigningKey, tmp_path):
    """`Publisher.claim` with a list; `oretrace claim A B ...` with --bundle-out; `oretrace verify` prints
    the set; the SDK refuses an overlapping set and a lot held by another before sending."""
    net = api_settings.network
    operator = operator_wallet(net, root_key)
    root = operator.root_public_key
    wallets = {
        "auditor": Wallet.generate("ag-auditor", net, root_public_key=root, name="Auditor", country="CD", roles=["auditor"]),
        "mine": Wallet.generate("ag-mine", net, root_public_key=root, name="Mine", country="CD", roles=["mine"]),
        "trader": Wallet.generate("ag-trader", net, root_public_key=root, name="Trader", country="CH", roles=["trader"]),
    }
    url = f"{live_server}/graphql"
    async with Client(url) as client:
        op = Publisher(operator, client)
        log_key = await client.log_key()
        if not log_key["registered"]:
            await op.register_log_key(log_key["origin"], log_key["publicKey"])
        for w in wallets.values():
            await op.register_wallet(w)
        start, end = attestation_period()
        att = await Publisher(wallets["auditor"], client).attest_site(
            site_id="ag-site", operator="ag-mine", name="Pit", country="CD", region="Lualaba",
            lat=-10.7, lon=25.5, origin_class="industrial", valid_from=start, valid_until=end, capacity_g=10**9,
        )  # fmt: skip
        mine, trader = Publisher(wallets["mine"], client), Publisher(wallets["trader"], client)
        lots = [(await mine.issue(site_id="ag-site", attestation_id=att.attestation_id, amount_g=g,
                                  product="hydroxide")).lot_ids[0] for g in (500_000, 300_000, 200_000)]  # fmt: skip
        for lot in lots[:2]:
            await mine.transfer(lot, "ag-trader")
        split = await trader.transform_proportional("split", [lots[0]], [("part 1", 250_000), ("part 2", 240_000)])
        # SDK: consumed input + held lot, in any order
        r = await trader.claim([lots[1], lots[0]], "amount_in_range", low=800_000, high=800_000)
        bundle = await client.disclosure_bundle(None, r.claim_id)
        assert bundle["lot_ids"] == sorted(lots[:2])
        with pytest.raises(ClaimSetRefused, match=f"lot {lots[0]} is an ancestor of lot {split.lot_ids[0]}"):
            await trader.claim([split.lot_ids[0], lots[0]], "ancestry_excludes", origin_class="artisanal")
        with pytest.raises(ClaimSetRefused, match=f"lot {lots[2]} is held by ag-mine, not ag-trader"):
            await trader.claim([lots[1], lots[2]], "ancestry_excludes", origin_class="artisanal")
        with pytest.raises(ClaimSetRefused, match="listed twice"):
            await trader.claim([lots[1], lots[1]], "ancestry_excludes", origin_class="artisanal")
    for name, w in wallets.items():
        w.save(tmp_path / f"{name}.json")

    runner = CliRunner()
    env = {"ORETRACE_CONFIG": None, "ORETRACE_API": None}
    out = tmp_path / "aggregate.json"
    members = [split.lot_ids[1], split.lot_ids[0], lots[1]]  # siblings and an unrelated lot, unsorted
    args = ["claim", *members, "-w", str(tmp_path / "trader.json"), "--kind", "share_in_range", "--class",
            "recycled", "--p", "0", "--p-max", "0", "--q", "1000", "--bundle-out", str(out), "--api", url, "--json"]  # fmt: skip
    r = await asyncio.to_thread(runner.invoke, app, args, env=env)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["lot_ids"] == sorted(members)
    assert json.loads(out.read_text())["lot_ids"] == sorted(members)
    r = await asyncio.to_thread(runner.invoke, app, ["verify", str(out), "--root-key", root], env=env,
                                terminal_width=200)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "for 3 lots:" in r.output and "PROVEN" in r.output
    r = await asyncio.to_thread(runner.invoke, app, ["verify", str(out), "--root-key", root, "--json"], env=env)
    report = json.loads(r.stdout)
    assert report["ok"] and report["claim"]["scope"] == f"for 3 lots: {', '.join(sorted(members))}"
    assert [lot["lot_id"] for lot in report["meaning"]["lots"]] == sorted(members)
    # the CLI refuses a lot twice before reading the wallet; the SDK check refuses an overlap (nothing sent)
    r = await asyncio.to_thread(runner.invoke, app, [*args[:2], args[1], *args[4:]], env=env)
    assert r.exit_code == 2 and "listed twice" in r.output, r.output
    overlap = ["claim", lots[0], split.lot_ids[0], "-w", str(tmp_path / "trader.json"), "--kind",
               "ancestry_excludes", "--class", "artisanal", "--api", url]  # fmt: skip
    r = await asyncio.to_thread(runner.invoke, app, overlap, env=env)
    assert r.exit_code != 0 and "is an ancestor of lot" in r.output, r.output


async def test_a_bundle_shows_nothing_that_happened_after_its_claim(gql, world, chain: Chain, api_settings):
    """The trader claims over the two lots it holds; one is sold afterwards to an organisation
    registered before the claim. The bundle's events stay the same: neither the sale nor the
    buyer's registration (who bought it is no part of the claim, and would be disclosed)."""
    trader, buyer = "trader-agg", "buyer-agg-late"

    async def publish(envelope) -> None:
        body = await attempt(gql, envelope)
        assert "errors" not in body, body

    async def bundle_events(claim_id: str) -> list:
        body = await gql("query($c: ID!) { disclosureBundle(claimId: $c) }", {"c": claim_id})
        bundle = body["data"]["disclosureBundle"]
        assert verify_bundle(bundle, api_settings.root_public_key).ok
        return bundle["events"]

    await publish(world.register(buyer, "oem"))
    env, claim_id = claim_envelope(world, trader, chain.refined, kind=ClaimKind.ancestry_excludes,
                                   origin_class="artisanal")  # fmt: skip
    await publish(env)
    before = await bundle_events(claim_id)
    assert buyer not in json.dumps(before)
    await publish(world.transfer(trader, chain.refined[1], buyer))
    assert await bundle_events(claim_id) == before
