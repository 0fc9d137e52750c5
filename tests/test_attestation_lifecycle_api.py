"""The attestation lifecycle through the API, the SDK and the CLI (issue 9, docs/ledger.md section 5a).

An auditor attests a site at 100 t, the mine issues 40 t, the auditor corrects
the capacity to 60 t with a superseding attestation: the mine's wallet carries
the 40 t over (it learns the link from the auditor's signed attest_site event),
keeps issuing up to 60 t in total and is refused above, both by its own prover
and by the server when it tries the old attestation's 100 t. A revocation then
stops every issuance. The GraphQL Attestation shows the chain and the revocation.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from nacl.signing import SigningKey
from typer.testing import CliRunner

from sdk.cli import app
from sdk.client import ApiRejection, Client
from sdk.demo_data import attestation_period
from sdk.publisher import ProvingRefused, Publisher, restore
from sdk.wallet import Wallet

TONNE = 1_000_000  # grams
SITE = dict(name="Pit", country="CD", region="Lualaba", lat=-10.7, lon=25.5)
runner = CliRunner()

ATTESTATION_QUERY = """query($id: ID!) { attestation(id: $id) {
    id revokedAt supersedes { id } supersededBy { id } lastIssuance { seq } } }"""


@pytest.fixture(scope="module")
async def net(live_server, api_settings, root_key: SigningKey):
    network = api_settings.network
    root = root_key.verify_key.encode().hex()
    operator = Wallet.generate("operator", network, key_id="root")
    operator.signing_seed = bytes(root_key)
    wallets = {
        name: Wallet.generate(f"lc-{name}", network, name=name, country="CD", roles=[role], root_public_key=root)
        for name, role in (("auditor", "auditor"), ("other-auditor", "auditor"), ("mine", "mine"), ("mine2", "mine"),
                           ("cli-mine", "mine"))
    }
    url = f"{live_server}/graphql"
    async with Client(url) as client:
        for w in wallets.values():
            await Publisher(operator, client).register_wallet(w)
    return {"url": url, "root": root, **wallets}


async def _attest(client: Client, auditor: Wallet, site_id: str, operator: str, tonnes: int, *, supersedes=None, cls="industrial"):
    start, end = attestation_period()
    return await Publisher(auditor, client).attest_site(
        site_id=site_id, operator=operator, origin_class=cls, valid_from=start, valid_until=end,
        capacity_g=tonnes * TONNE, supersedes=supersedes, **SITE,
    )  # fmt: skip


async def test_a_superseded_capacity_bounds_the_period_and_a_revocation_stops_issuance(net):
    async with Client(net["url"]) as client:
        auditor, mine = net["auditor"], net["mine"]
        a1 = (await _attest(client, auditor, "lc-site", "lc-mine", 100)).attestation_id
        pub = Publisher(mine, client)
        await pub.issue(site_id="lc-site", attestation_id=a1, amount_g=40 * TONNE, product="hydroxide")

        a2 = (await _attest(client, auditor, "lc-site", "lc-mine", 60, supersedes=a1)).attestation_id
        # the wallet carries the 40 t over: 15 t land, then anything above the last 5 t is refused
        await pub.issue(site_id="lc-site", attestation_id=a2, amount_g=15 * TONNE, product="hydroxide")
        assert mine.capacities[a2].supersedes == a1  # learnt from the auditor's signed event
        assert mine.cumulative_opening(a2)[0] == 1 and mine.cumulative_opening(a2)[1].value == 55 * TONNE
        for grams in (5 * TONNE + 1, 6 * TONNE, 45 * TONNE):
            with pytest.raises(ProvingRefused, match="only 5,000,000 g left"):
                await pub.issue(site_id="lc-site", attestation_id=a2, amount_g=grams, product="hydroxide")
        # the old attestation's 100 t are gone: the server refuses issuing under it
        with pytest.raises(ApiRejection) as exc:
            await pub.issue(site_id="lc-site", attestation_id=a1, amount_g=TONNE, product="hydroxide")
        assert exc.value.code == "ATTESTATION_SUPERSEDED"

        before = (await client.execute(ATTESTATION_QUERY, {"id": a1}))["attestation"]
        assert before["supersededBy"] == {"id": a2} and before["supersedes"] is None and before["revokedAt"] is None
        assert before["lastIssuance"]["seq"] == 0

        # only the attestation's own auditor revokes it, and only once
        with pytest.raises(ApiRejection) as exc:
            await Publisher(net["other-auditor"], client).revoke_attestation(site_id="lc-site", attestation_id=a2)
        assert exc.value.code == "WRONG_ROLE"
        with pytest.raises(ApiRejection) as exc:
            await Publisher(auditor, client).revoke_attestation(site_id="lc-site", attestation_id=a1)
        assert exc.value.code == "ATTESTATION_SUPERSEDED"
        await Publisher(auditor, client).revoke_attestation(site_id="lc-site", attestation_id=a2, reason="audit withdrawn")
        with pytest.raises(ApiRejection) as exc:
            await Publisher(auditor, client).revoke_attestation(site_id="lc-site", attestation_id=a2)
        assert exc.value.code == "ATTESTATION_REVOKED"

        after = (await client.execute(ATTESTATION_QUERY, {"id": a2}))["attestation"]
        assert after["supersedes"] == {"id": a1} and after["supersededBy"] is None and after["revokedAt"] is not None
        assert after["lastIssuance"]["seq"] == 0
        for attestation in (a2, a1):  # neither the revoked nor the superseded one issues
            with pytest.raises(ApiRejection) as exc:
                await pub.issue(site_id="lc-site", attestation_id=attestation, amount_g=1, product="hydroxide")
            assert exc.value.code == ("ATTESTATION_REVOKED" if attestation == a2 else "ATTESTATION_SUPERSEDED")

        # re-attesting the revoked period by superseding it continues the same chain (55 t used):
        # the last 15 t exactly land, one gram more does not
        a3 = (await _attest(client, auditor, "lc-site", "lc-mine", 70, supersedes=a2)).attestation_id
        await pub.issue(site_id="lc-site", attestation_id=a3, amount_g=15 * TONNE, product="hydroxide")
        with pytest.raises(ProvingRefused, match="only 0 g left"):
            await pub.issue(site_id="lc-site", attestation_id=a3, amount_g=1, product="hydroxide")


async def test_a_restored_wallet_carries_the_chain_over(net):
    """Keys only (a lost laptop): restore learns both capacities and the supersedes link from the
    signed events, so issuing under the superseding attestation still counts the predecessor's lots."""
    async with Client(net["url"]) as client:
        auditor, mine = net["auditor"], net["mine2"]
        a1 = (await _attest(client, auditor, "lc-site2", "lc-mine2", 10)).attestation_id
        await Publisher(mine, client).issue(site_id="lc-site2", attestation_id=a1, amount_g=7 * TONNE, product="ore")
        await Publisher(mine, client).issue(site_id="lc-site2", attestation_id=a1, amount_g=1 * TONNE, product="ore")
        a2 = (await _attest(client, auditor, "lc-site2", "lc-mine2", 9, supersedes=a1)).attestation_id

        fresh = mine.keys_only()
        await restore(fresh, client)
        assert fresh.capacity_chain(a2) == [a2, a1]
        assert [c.attestation_id for c in fresh.live_capacities("lc-site2")] == [a2]
        pub = Publisher(fresh, client)
        with pytest.raises(ProvingRefused, match="only 1,000,000 g left"):
            await pub.issue(site_id="lc-site2", attestation_id=a2, amount_g=TONNE + 1, product="ore")
        await pub.issue(site_id="lc-site2", attestation_id=a2, amount_g=TONNE, product="ore")


def _cli(*argv: str):
    return asyncio.to_thread(runner.invoke, app, list(argv), env={"ORETRACE_CONFIG": None, "ORETRACE_API": None})


async def test_cli_supersedes_and_revokes(net, tmp_path):
    """`oretrace attest --supersedes`, `oretrace issue` (default attestation: the site's current
    one) and `oretrace revoke-attestation`, each with --json; then issuance is refused (exit 1)."""
    auditor_file, mine_file = tmp_path / "auditor.json", tmp_path / "mine.json"
    net["auditor"].save(auditor_file)
    net["cli-mine"].save(mine_file)
    api = ["--api", net["url"], "--json"]
    site = ["--site", "lc-cli-site", "--operator", "lc-cli-mine", "--class", "industrial", "--name", "Pit",
            "--country", "CD", "--region", "Lualaba", "--lat", "-10.7", "--lon", "25.5"]  # fmt: skip

    r = await _cli("attest", "-w", str(auditor_file), *site, "--capacity-g", "100", *api)
    assert r.exit_code == 0, r.output
    a1 = json.loads(r.stdout)["attestation_id"]
    r = await _cli("issue", "-w", str(mine_file), "--site", "lc-cli-site", "--grams", "40", *api)
    assert r.exit_code == 0, r.output
    r = await _cli("attest", "-w", str(auditor_file), *site, "--capacity-g", "50", *api)
    assert r.exit_code == 1 and "ATTESTATION_OVERLAP" in r.output, r.output
    r = await _cli("attest", "-w", str(auditor_file), *site, "--capacity-g", "50", "--supersedes", a1, *api)
    assert r.exit_code == 0, r.output
    a2 = json.loads(r.stdout)["attestation_id"]
    assert json.loads(r.stdout)["supersedes"] == a1

    # without --attestation the mine issues under the superseding one, within 50 g in total
    # (it keeps 1 g of headroom, so that the refusal after the revocation is the server's)
    r = await _cli("issue", "-w", str(mine_file), "--site", "lc-cli-site", "--grams", "11", *api)
    assert r.exit_code == 1 and "only 10 g left" in r.output, r.output
    r = await _cli("issue", "-w", str(mine_file), "--site", "lc-cli-site", "--grams", "9", *api)
    assert r.exit_code == 0, r.output
    lot = json.loads(r.stdout)["lot_ids"][0]
    assert Wallet.load(mine_file).lots[lot].attestation_id == a2

    r = await _cli("revoke-attestation", a2, "--site", "lc-cli-site", "--reason", "capacity overstated",
                   "-w", str(auditor_file), *api)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["type"] == "revoke_attestation"
    r = await _cli("revoke-attestation", a2, "--site", "lc-cli-site", "-w", str(auditor_file), *api)
    assert r.exit_code == 1 and "ATTESTATION_REVOKED" in r.output, r.output
    r = await _cli("issue", "-w", str(mine_file), "--site", "lc-cli-site", "--grams", "1", "--attestation", a2, *api)
    assert r.exit_code == 1 and "ATTESTATION_REVOKED" in r.output, r.output


def test_the_wallet_file_keeps_the_chain_and_refuses_a_bad_link(tmp_path):
    from crypto.pedersen import Opening
    from sdk.wallet import WalletError

    w = Wallet.generate("lc-unit", "n1", root_public_key="ab" * 32)
    w.add_capacity("att_1", "s", Opening.fresh(10))
    w.add_capacity("att_2", "s", Opening.fresh(8), supersedes="att_1")
    w.add_capacity("att_3", "s", Opening.fresh(9), supersedes="att_2")
    w.add_capacity("att_x", "other-site", Opening.fresh(9))
    again = Wallet.load(w.save(tmp_path / "w.json"))
    assert again.capacity_chain("att_3") == ["att_3", "att_2", "att_1"]
    assert [c.attestation_id for c in again.live_capacities("s")] == ["att_3"]

    data = json.loads((tmp_path / "w.json").read_text())
    for bad in (5, ["att_1"], {"id": "att_1"}):
        data["capacities"]["att_2"]["supersedes"] = bad
        with pytest.raises(WalletError, match="supersedes"):
            Wallet.from_json(data)
    again.capacities["att_1"].supersedes = "att_3"  # a cycle (only a corrupt wallet holds one)
    with pytest.raises(WalletError, match="cycle"):
        again.cumulative_opening("att_3")
