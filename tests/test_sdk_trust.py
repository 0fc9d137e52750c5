"""The SDK trusts the server for nothing (issue 7 points 2 and 5).

A real server on the embedded database holds a small chain (auditor, mine,
trader; an attested site, issued lots, a transfer). The SDK then talks to it
through a lying GraphQL endpoint: an httpx transport in front of the real
server that forwards every request and rewrites chosen answers (a swapped
sealing key, a swapped box, a re-pointed registration, a tampered envelope).
Each lie makes the SDK refuse with UntrustedAnswer, publishes nothing and
leaves every wallet unchanged; the same calls through the honest endpoint work.
"""

from __future__ import annotations

import copy
import json

import httpx
import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from conftest import LyingTransport, Rewrite, member_wallets, operator_wallet, register_and_attest_site
from crypto.pedersen import Opening
from ledger.models import Transfer
from ledger.openings import capacity_plaintext, lots_plaintext, seal
from sdk.client import Client
from sdk.demo_data import attestation_period
from sdk.publisher import Publisher, new_nonce, restore, sync
from sdk.registry import UntrustedAnswer
from sdk.wallet import Wallet, WalletError

ATTACKER = PrivateKey.generate()
ATTACKER_PUBLIC = bytes(ATTACKER.public_key).hex()



@pytest.fixture(scope="module")
async def net(live_server, api_settings, root_key: SigningKey, tmp_path_factory):
    network = api_settings.network
    root = root_key.verify_key.encode().hex()
    d = tmp_path_factory.mktemp("trust")
    w = member_wallets("tr", network, root)
    url = f"{live_server}/graphql"
    async with Client(url) as client:
        att = await register_and_attest_site(
            client, operator_wallet(network, root_key), w, site_id="tr-site", name="Trust pit"
        )
        mine = Publisher(w["mine"], client)
        lots = [
            (await mine.issue(site_id="tr-site", attestation_id=att, amount_g=g, product="hydroxide")).lot_ids[0]
            for g in (7_000, 5_000, 3_000)
        ]  # fmt: skip
        await mine.transfer(lots[0], "tr-trader")
        await sync(w["trader"], client)
    for name, wallet in w.items():
        wallet.save(d / f"{name}.json")
    return {"url": url, "dir": d, "att": att, "lots": lots, "root": root}


def wallet(net, name: str) -> Wallet:
    return Wallet.load(net["dir"] / f"{name}.json")


def lying(net, rewrite: Rewrite) -> Client:
    return Client(net["url"], transport=LyingTransport(rewrite))


async def owner_of(net, lot_id: str) -> str:
    async with Client(net["url"]) as client:
        return (await client.lot(lot_id))["owner"]["id"]


# --------------------------------------------------------------------------- lies about keys


def swap_sealing_key(query, variables, answer):
    if "organization(" in query and answer.get("data", {}).get("organization"):
        answer["data"]["organization"]["sealingKey"] = ATTACKER_PUBLIC
    return answer


@pytest.mark.parametrize("lie", ["sealing-key", "registration-of-another", "unsigned-registration"])
async def test_transfer_refuses_a_sealing_key_the_root_does_not_vouch_for(net, lie):
    mine = wallet(net, "mine")
    before = mine.to_json()
    async with Client(net["url"]) as honest:
        auditor_registration = (await honest.execute(
            'query { organization(id: "tr-auditor") { registeredByEvent } }'))["organization"]["registeredByEvent"]  # fmt: skip

    def rewrite(query, variables, answer):
        org = (answer.get("data") or {}).get("organization")
        if "organization(" not in query or not org or variables.get("id") != "tr-trader":
            return answer
        if lie == "sealing-key":
            org["sealingKey"] = ATTACKER_PUBLIC
        elif lie == "registration-of-another":
            org["registeredByEvent"] = auditor_registration
        return answer

    from ledger.envelope import parse_envelope, sign

    async with Client(net["url"]) as honest:
        trader_registration = (await honest.execute(
            'query { organization(id: "tr-trader") { registeredByEvent } }'))["organization"]["registeredByEvent"]  # fmt: skip
        genuine = parse_envelope((await honest.event(trader_registration))["envelope"])
    fake = sign(genuine.payload.model_copy(update={"sealing_key": ATTACKER_PUBLIC}), network=genuine.network,
                signer="operator", key_id="root", signing_key=SigningKey.generate())  # fmt: skip

    def forge_event(query, variables, answer):
        """Serve a registration of tr-trader with the attacker's sealing key, signed by a non-root key."""
        data = answer.get("data") or {}
        if "organization(" in query and variables.get("id") == "tr-trader" and data.get("organization"):
            data["organization"].update(sealingKey=ATTACKER_PUBLIC, registeredByEvent=fake.event_id)
        if "event(" in query and variables.get("id") == fake.event_id:
            data["event"] = {"id": fake.event_id, "type": "register_organization", "envelope": fake.to_json()}
        return answer

    chosen = forge_event if lie == "unsigned-registration" else rewrite
    async with lying(net, chosen) as client:
        with pytest.raises(UntrustedAnswer) as caught:
            await Publisher(mine, client, autosave=False).transfer(net["lots"][1], "tr-trader")
    expected = {"sealing-key": "sealing key", "registration-of-another": "registers tr-auditor",
                "unsigned-registration": "not signed by the pinned root key"}[lie]  # fmt: skip
    assert expected in str(caught.value)
    assert mine.to_json() == before
    assert await owner_of(net, net["lots"][1]) == "tr-mine"  # nothing was published


async def test_attestation_refuses_a_swapped_operator_sealing_key(net):
    auditor = wallet(net, "auditor")
    start, end = attestation_period()
    async with lying(net, swap_sealing_key) as client:
        with pytest.raises(UntrustedAnswer, match="sealing key"):
            await Publisher(auditor, client, autosave=False).attest_site(
                site_id="tr-site-2", operator="tr-mine", name="Second pit", country="CD", region="Lualaba",
                lat=-10.7, lon=25.5, origin_class="industrial", valid_from=start, valid_until=end, capacity_g=10**6,
            )  # fmt: skip
    async with Client(net["url"]) as client:
        assert await client.execute('query { site(id: "tr-site-2") { id } }') == {"site": None}


async def test_the_honest_endpoint_still_works(net):
    mine = wallet(net, "mine")
    async with Client(net["url"]) as client:
        assert (await Publisher(mine, client).sealing_key_of("tr-trader")) == wallet(net, "trader").sealing_public_hex


# --------------------------------------------------------------------------- lies about what a publication created


def publish_answer_lie(field: str) -> Rewrite:
    """Rewrite the server's answer to a publication: another lot id (an existing lot of
    someone else), the outputs in another order, another event id, or a claim id."""

    def rewrite(query, variables, answer):
        result = next(iter((answer.get("data") or {}).values()), None) if query.lstrip().startswith("mutation") else None
        if not isinstance(result, dict) or "lotIds" not in result:
            return answer
        if field == "lot" and result["lotIds"]:
            result["lotIds"] = [LIE_LOT[0], *result["lotIds"][1:]]
        elif field == "order":
            result["lotIds"] = list(reversed(result["lotIds"]))
        elif field == "event":
            result["eventId"] = "evt_" + "0" * 32
        elif field == "claim":
            result["claimId"] = "clm_" + "0" * 24
        return answer

    return rewrite


LIE_LOT: list[str] = []


@pytest.mark.parametrize("field", ["lot", "event", "claim"])
async def test_issue_answer_with_other_ids_is_refused_and_nothing_is_filed(net, field, tmp_path):
    """The wallet files an issued lot's opening under the id it derives itself: an answer
    naming another lot (or event, or a claim an issuance does not make) is UntrustedAnswer,
    no lot is filed, and a sync through the honest server then files it under its true id."""
    LIE_LOT[:] = [net["lots"][2]]
    mine = wallet(net, "mine")
    async with Client(net["url"]) as client:
        await sync(mine, client)  # learn the issuances of the other cases first
    mine.save(tmp_path / "mine.json")
    lots_before = {k: e.openings for k, e in mine.lots.items()}
    async with lying(net, publish_answer_lie(field)) as client:
        with pytest.raises(UntrustedAnswer, match="ids it does not create"):
            await Publisher(mine, client).issue(
                site_id="tr-site", attestation_id=net["att"], amount_g=2_000, product="hydroxide"
            )
    assert {k: e.openings for k, e in Wallet.load(tmp_path / "mine.json").lots.items()} == lots_before
    async with Client(net["url"]) as client:
        await sync(mine, client)
    new = set(mine.lots) - set(lots_before)
    assert len(new) == 1 and mine.lots[new.pop()].openings["industrial"].value == 2_000
    assert mine.lots[net["lots"][2]].openings == lots_before[net["lots"][2]]


async def test_transform_answer_with_outputs_reordered_is_refused(net):
    from ledger.builders import PlannedOutput

    mine, trader = wallet(net, "mine"), wallet(net, "trader")
    async with Client(net["url"]) as client:
        lot = (await Publisher(mine, client, autosave=False).issue(
            site_id="tr-site", attestation_id=net["att"], amount_g=4_000, product="hydroxide")).lot_ids[0]  # fmt: skip
        await Publisher(mine, client, autosave=False).transfer(lot, "tr-trader")
        await sync(trader, client)
    before = trader.to_json()
    outputs = [PlannedOutput("a", {"industrial": Opening.fresh(3_000)}),
               PlannedOutput("b", {"industrial": Opening.fresh(1_000)})]  # fmt: skip
    async with lying(net, publish_answer_lie("order")) as client:
        with pytest.raises(UntrustedAnswer, match="ids it does not create"):
            await Publisher(trader, client, autosave=False).transform("split", [lot], outputs)
    assert trader.to_json() == before
    async with Client(net["url"]) as client:  # the honest server: the outputs are filed under their true ids
        await sync(trader, client, full=True)
    assert sorted(trader.lots[x].openings["industrial"].value for x in set(trader.lots) - set(before["lots"])) == [1_000, 3_000]
    trader.save(net["dir"] / "trader.json")  # the module's later cases compare with this wallet


# --------------------------------------------------------------------------- lies about boxes


def trader_box_lie(kind: str) -> Rewrite:
    def rewrite(query, variables, answer):
        data = answer.get("data") or {}
        if "sealedOpenings(" in query and data.get("sealedOpenings"):
            for edge in data["sealedOpenings"]["edges"]:
                node = edge["node"]
                if kind == "box":  # a box the attacker made, with an opening of its choice
                    node["ciphertext"] = seal(lots_plaintext({node["lotIds"][0]: {"industrial": Opening(1, 1)}}),
                                              wallet_sealing["tr-trader"])  # fmt: skip
        if kind == "envelope" and "event(" in query and data.get("event"):
            env = data["event"]["envelope"]
            if env["payload"]["type"] == "transfer":
                env["payload"]["opening_sealed_to_receiver"] = seal(
                    lots_plaintext({env["payload"]["lot_id"]: {"industrial": Opening(1, 1)}}), wallet_sealing["tr-trader"]
                )
        return answer

    return rewrite


wallet_sealing: dict[str, str] = {}


@pytest.mark.parametrize("kind", ["box", "envelope"])
@pytest.mark.parametrize("full", [False, True], ids=["sync", "restore"])
async def test_sync_refuses_a_box_not_carried_by_its_signed_envelope(net, kind, full):
    trader = wallet(net, "trader")
    wallet_sealing["tr-trader"] = trader.sealing_public_hex
    target = trader.keys_only() if full else trader
    before = target.to_json()
    async with lying(net, trader_box_lie(kind)) as client:
        with pytest.raises(UntrustedAnswer):
            await (restore(target, client) if full else sync(target, client, full=True))
    assert target.to_json() == before


async def test_restore_through_the_honest_endpoint_gets_every_opening(net):
    trader = wallet(net, "trader")
    fresh = trader.keys_only()
    async with Client(net["url"]) as client:
        report = await restore(fresh, client)
    assert report.mismatched == 0 and report.unreadable == 0
    assert {k: e.openings for k, e in fresh.lots.items()} == {k: e.openings for k, e in trader.lots.items()}


# --------------------------------------------------------------------------- point 5: capacity only from attest_site


async def test_capacity_opening_in_a_transfer_box_is_never_taken(net, tmp_path):
    """A counterparty seals "capacity = 1 g" into a transfer to the mine; after a
    restore the mine's capacity is still the auditor's, and it can keep issuing."""
    trader, mine = wallet(net, "trader"), wallet(net, "mine")
    genuine = mine.capacity(net["att"]).opening
    forged = seal(capacity_plaintext(net["att"], Opening(1, 1)), mine.sealing_public_hex)
    async with Client(net["url"]) as client:
        pub = Publisher(trader, client, autosave=False)
        await pub.submit(pub.sign(Transfer(lot_id=net["lots"][0], to="tr-mine", opening_sealed_to_receiver=forged),
                                  new_nonce()))  # fmt: skip
        restored = mine.keys_only()
        restored.save(tmp_path / "mine.json")
        report = await restore(restored, client)
        assert report.mismatched >= 1
        assert restored.capacity(net["att"]).opening == genuine
        r = await Publisher(restored, client).issue(site_id="tr-site", attestation_id=net["att"], amount_g=1_000,
                                                    product="hydroxide")  # fmt: skip
    assert r.lot_ids


# --------------------------------------------------------------------------- the pin itself


def test_root_key_pin_round_trips_and_is_checked(tmp_path):
    w = Wallet.generate("x-org", "net", root_public_key="AB" * 32)
    assert w.root_public_key == "ab" * 32
    w.save(tmp_path / "w.json")
    assert json.loads((tmp_path / "w.json").read_text())["root_public_key"] == "ab" * 32
    assert Wallet.load(tmp_path / "w.json").root_public_key == "ab" * 32
    assert w.keys_only().root_public_key == "ab" * 32
    for bad in ("abc", "zz" * 32, 7):
        with pytest.raises(WalletError, match="root_public_key"):
            Wallet.generate("x-org", "net", root_public_key=bad)
    with pytest.raises(WalletError, match="pins no root public key"):
        Wallet.generate("x-org", "net").pinned_root_key
    op = Wallet.generate("operator", "net", key_id="root")
    assert op.pinned_root_key == op.signing_public_hex


async def test_a_wallet_without_a_pin_refuses_to_trust_the_server(net):
    unpinned = copy.deepcopy(wallet(net, "mine"))
    unpinned.root_public_key = None
    async with Client(net["url"]) as client:
        with pytest.raises(WalletError, match="pins no root public key"):
            await sync(unpinned, client)


# --------------------------------------------------------------------------- answers the client cannot read

_HOSTILE_ANSWER = """
import asyncio, httpx, sys
import crypto.group, py_ecc.bls12_381  # py_ecc raises the recursion limit to 100,000
from sdk.client import ApiError, Client
body = {body}
async def main():
    async with Client("http://lying.invalid/graphql", transport=httpx.MockTransport(
            lambda request: httpx.Response(200, content=body))) as client:
        try:
            await client.event("evt_" + "0" * 32)
        except ApiError as exc:
            print("ApiError", str(exc)[:80])
asyncio.run(main())
"""


@pytest.mark.parametrize(
    "body",
    ['b"[" * 200_000 + b"]" * 200_000', """b'{"data": {"event": 1}, "data": {"event": 2}}'""", """b'{"data": ' * 100 + b'1'"""],
    ids=["deep", "duplicate", "truncated"],
)
def test_an_unreadable_answer_is_an_api_error_not_a_crash(body):  # body: a Python expression
    """A hostile endpoint's answer is read with the one I-JSON reader: deep nesting
    (which overflowed the C decoder's stack, killing the wallet process) and duplicate
    member names are an ApiError. In a subprocess, so a crash is a failure."""
    import os
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _HOSTILE_ANSWER.format(body=body)], capture_output=True, text=True,
                       timeout=120, env=os.environ.copy())  # fmt: skip
    assert r.returncode == 0, (r.returncode, r.stderr[-400:])
    assert r.stdout.startswith("ApiError"), r.stdout
