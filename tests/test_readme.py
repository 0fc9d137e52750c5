"""Follow the README: run its example GraphQL operations against a running, seeded server.

Every ```graphql block of README.md that is an operation (starts with `query`,
`mutation` or `{`) is run, over HTTP, against a real server on the embedded
database seeded with the demo chain (small size). Blocks that are schema
definitions (the federation example) are skipped. Variables are filled from
the seeded ids by name ($lotId, $claimId, $representations, $envelope), and
each named operation's answer is checked.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from ledger.bundle import verify_bundle
from ledger.builders import build_claim
from sdk.client import Client
from sdk.demo import make_wallets, run_scenario
from sdk.publisher import Publisher, new_nonce

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parent.parent / "README.md"


def graphql_blocks() -> list[str]:
    blocks = re.findall(r"```graphql\n(.*?)```", README.read_text(), flags=re.S)
    operations = []
    for block in blocks:
        body = "\n".join(line for line in block.splitlines() if not line.strip().startswith("#")).strip()
        if re.match(r"^(query|mutation)\b|^\{", body):
            operations.append(body)
    return operations


def operation_name(block: str) -> str:
    m = re.match(r"^(?:query|mutation)\s+(\w+)", block)
    return m.group(1) if m else "anonymous"


def test_readme_has_the_two_fresh_machine_commands():
    text = README.read_text()
    section = text.split("## On a fresh machine", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^(make \w+)", section, flags=re.M)
    assert commands == ["make run", "make test"]
    makefile = (README.parent / "Makefile").read_text()
    assert re.search(r"^run:.*\n\t.*oretrace serve --demo", makefile, flags=re.M)
    assert re.search(r"^test:.*\n\t.*pytest", makefile, flags=re.M)


def test_readme_operations_are_found():
    names = [operation_name(b) for b in graphql_blocks()]
    assert names == [
        "Organizations", "Sites", "OemLots", "ArtisanalLots", "Provenance", "Lot", "Bundle", "Entities", "PublishClaim",
    ]  # fmt: skip


@pytest.fixture(scope="module")
async def seeded(live_server, api_settings, root_key: SigningKey):
    wallets = make_wallets(api_settings.network, root_seed=bytes(root_key))
    url = f"{live_server}/graphql"
    async with Client(url) as client:
        result = await run_scenario(client, wallets, size="small")
    assert result.ok, [o for o in result.outcomes if not o.ok]
    return {"url": url, "wallets": wallets, "ids": result.ids, "root": root_key.verify_key.encode().hex()}


def _variables(block: str, seeded) -> dict:
    ids = seeded["ids"]
    pack = ids["lot_pack_clean"]
    variables = {}
    if "$lotId" in block:
        variables["lotId"] = pack
    if "$claimId" in block:
        variables["claimId"] = ids["claim_clean_recycled_16pct"]
    if "$representations" in block:
        variables["representations"] = [
            {"__typename": "Lot", "id": pack},
            {"__typename": "Lot", "id": "lot_doesnotexist00000000000"},
        ]
    if "$envelope" in block:
        oem = Publisher(seeded["wallets"]["rhine-motors"], client=None)  # signing only
        entry = oem.wallet.lot(pack)
        nonce = new_nonce()
        payload = build_claim(
            oem.network, oem.org_id, nonce, lot_ids=[pack], kind="amount_in_range", openings={pack: entry.openings},
            low=entry.total - 1_000, high=entry.total + 1_000,
        )  # fmt: skip
        variables["envelope"] = oem.sign(payload, nonce).to_json()
    return variables


def check(name: str, data: dict, seeded) -> None:
    ids = seeded["ids"]
    if name == "Organizations":
        orgs = {e["node"]["id"]: e["node"] for e in data["organizations"]["edges"]}
        assert "rhine-motors" in orgs and "kasulo-coop" in orgs
        assert orgs["rhine-motors"]["roles"] == ["oem"]
    elif name == "Sites":
        sites = {e["node"]["id"]: e["node"] for e in data["sites"]["edges"]}
        assert sites["kasulo-asm"]["originClass"] == "artisanal"
        assert sites["kw-west"]["region"] == "Lualaba"
        assert sites["lk-main"]["attestations"][0]["lastIssuance"]["seq"] == 1  # two issuances; forgeries refused
        assert sites["nbr-plant"]["attestations"][0]["auditor"]["name"] == "Copperbelt Assurance SARL"
    elif name == "OemLots":
        nodes = {e["node"]["id"]: e["node"] for e in data["lots"]["edges"]}
        deliveries = {ids["lot_pack_clean"], ids["lot_pack_clean_a2"], ids["lot_pack_clean_a3"]}
        assert set(nodes) == deliveries | {ids["lot_pack_mixed"]}
        # batch A's own claims, and the model-year aggregates over the three clean deliveries
        kinds = sorted(c["kind"] for c in nodes[ids["lot_pack_clean"]]["claims"])
        assert kinds == ["amount_in_range", "ancestry_excludes", "share_at_least", "share_at_least", "share_in_range",
                         "share_in_range"]  # fmt: skip
        for lot in deliveries - {ids["lot_pack_clean"]}:
            assert sorted(c["kind"] for c in nodes[lot]["claims"]) == ["amount_in_range", "share_at_least", "share_in_range"]
        assert [c["kind"] for c in nodes[ids["lot_pack_mixed"]]["claims"]] == ["share_at_most"]
    elif name == "ArtisanalLots":
        nodes = [e["node"] for e in data["lots"]["edges"]]
        assert {n["site"]["name"] for n in nodes} == {"Kasulo artisanal site", "Kambove artisanal site"}
        assert all(n["consumed"] for n in nodes)  # blended by the trader
    elif name == "Provenance":
        p = data["provenance"]
        assert not p["truncated"]
        classes = {n["originClass"] for n in p["nodes"] if n["originClass"]}
        assert classes == {"industrial", "recycled_pre_consumer", "recycled_post_consumer"}  # the clean batch: no artisanal node
        regions = {n["site"]["region"] for n in p["nodes"] if n["site"]}
        assert "Lualaba" in regions
        ids_ = {n["id"] for n in p["nodes"]}
        assert p["nodes"][0]["id"] == ids["lot_pack_clean"]
        assert all(e["parent"] in ids_ and e["child"] in ids_ for e in p["edges"])
    elif name == "Lot":
        lot = data["lot"]
        assert lot["owner"]["id"] == "rhine-motors" and lot["custodySeq"] == 1
        assert {c["originClass"] for c in lot["commitments"]} == {"industrial", "recycled_pre_consumer", "recycled_post_consumer"}
        assert all(re.fullmatch(r"[0-9a-f]{96}", c["commitment"]) for c in lot["commitments"])
    elif name == "Bundle":
        report = verify_bundle(data["disclosureBundle"], seeded["root"])
        assert report.ok, report.summary
        assert report.claim["statement"].startswith("recycled share between 160/1000 and 169/1000")
        assert report.meaning["model"] == "mass balance"
    elif name == "Entities":
        first, unknown = data["_entities"]
        assert first["id"] == ids["lot_pack_clean"] and first["owner"]["name"] == "Rhine Motors AG"
        assert unknown is None
    elif name == "PublishClaim":
        r = data["publishClaim"]
        assert r["type"] == "publish_claim" and r["claimId"].startswith("clm_")
        assert r["lotIds"] == []  # lotIds lists lots an event creates
    else:  # pragma: no cover
        raise AssertionError(f"no check for README operation {name}")


@pytest.mark.parametrize("block", graphql_blocks(), ids=operation_name)
async def test_readme_operation(block, seeded):
    async with Client(seeded["url"]) as client:
        data = await client.execute(block, _variables(block, seeded))
    check(operation_name(block), data, seeded)
