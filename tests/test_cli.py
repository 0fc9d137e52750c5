"""The `oretrace` CLI: verify exit codes, wallet restore, wallet file permissions.

A small chain (mine -> trader, a split, a claim) is published through a real
server on the embedded database with the SDK; its disclosure bundle is then
verified by the CLI. CLI commands that talk to the server run in a worker
thread (the server shares this test's event loop).
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import pytest
from nacl.signing import SigningKey
from typer.testing import CliRunner

from conftest import operator_wallet
from sdk.cli import app
from sdk.client import Client
from sdk.demo_data import attestation_period
from sdk.publisher import Publisher
from sdk.wallet import Wallet

runner = CliRunner()


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(scope="module")
async def chain(live_server, api_settings, root_key: SigningKey, tmp_path_factory):
    """Publish a tiny chain; return wallets (saved to files), the bundle file and the root key."""
    net = api_settings.network
    d = tmp_path_factory.mktemp("cli")
    operator = operator_wallet(net, root_key)
    root = operator.root_public_key
    w = {
        "auditor": Wallet.generate("cli-auditor", net, root_public_key=root, name="Auditor", country="CD", roles=["auditor"]),
        "mine": Wallet.generate("cli-mine", net, root_public_key=root, name="Mine", country="CD", roles=["mine"]),
        "trader": Wallet.generate("cli-trader", net, root_public_key=root, name="Trader", country="CH", roles=["trader"]),
    }
    for name, wallet in w.items():
        wallet.save(d / f"{name}.json")
    url = f"{live_server}/graphql"
    async with Client(url) as client:
        op = Publisher(operator, client)
        log_key = await client.log_key()  # the operator runs this server: anchor its bundles in its log
        if not log_key["registered"]:
            await op.register_log_key(log_key["origin"], log_key["publicKey"])
        for wallet in w.values():
            await op.register_wallet(wallet)
        start, end = attestation_period()
        att = await Publisher(w["auditor"], client).attest_site(
            site_id="cli-site", operator="cli-mine", name="CLI pit", country="CD", region="Lualaba",
            lat=-10.7, lon=25.5, origin_class="industrial", valid_from=start, valid_until=end, capacity_g=10**9,
        )  # fmt: skip
        mine = Publisher(w["mine"], client)
        lot_a = (await mine.issue(site_id="cli-site", attestation_id=att.attestation_id, amount_g=700_000, product="hydroxide")).lot_ids[0]
        lot_b = (await mine.issue(site_id="cli-site", attestation_id=att.attestation_id, amount_g=300_000, product="hydroxide")).lot_ids[0]
        await mine.transfer(lot_a, "cli-trader")
        trader = Publisher(w["trader"], client)
        split = await trader.transform_proportional("split", [lot_a], [("part 1", 400_000), ("part 2", 300_000)])
        claim = await trader.claim(split.lot_ids[0], "ancestry_excludes", origin_class="artisanal")
        bundle = await client.disclosure_bundle(split.lot_ids[0], claim.claim_id)
    bundle_dir = d / "bundles"
    bundle_dir.mkdir()
    bundle_path = bundle_dir / "claim.json"
    bundle_path.write_text(json.dumps(bundle))
    return {
        "url": url,
        "dir": d,
        "wallets": w,
        "bundle": bundle_path,
        "root": root_key.verify_key.encode().hex(),
        "lots": {"a": lot_a, "b": lot_b, "outputs": split.lot_ids},
    }


# --------------------------------------------------------------------------- verify


async def test_verify_valid_bundle_exits_0(chain):
    r = runner.invoke(app, ["verify", str(chain["bundle"]), "--root-key", chain["root"]])
    assert r.exit_code == 0, r.output
    assert "PROVEN" in r.output and "no artisanal origin anywhere upstream" in r.output


async def test_verify_json_report(chain):
    r = runner.invoke(app, ["verify", str(chain["bundle"]), "--root-key", chain["root"], "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["ok"] is True
    assert report["claim"]["kind"] == "ancestry_excludes"
    assert {c["name"] for c in report["checks"]} >= {"format", "rules", "proofs", "claim"}
    assert report["root_key_source"] == "--root-key"


async def test_verify_root_key_file_and_never_the_key_next_to_bundle(chain, tmp_path):
    key_file = tmp_path / "op.hex"
    key_file.write_text(chain["root"] + "\n")
    r = runner.invoke(app, ["verify", str(chain["bundle"]), "--root-key-file", str(key_file)])
    assert r.exit_code == 0, r.output
    # without a flag, root-key.hex next to the bundle is named and refused (exit 3), never used
    copy = tmp_path / "bundle.json"
    copy.write_text(chain["bundle"].read_text())
    (tmp_path / "root-key.hex").write_text(chain["root"])
    env = {"ORETRACE_ROOT_PUBLIC_KEY": None, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    r = runner.invoke(app, ["verify", str(copy)], env=env)
    assert r.exit_code == 3, r.output
    assert "next to the bundle" in r.output and "oretrace trust add" in r.output


async def test_verify_tampered_bundle_exits_1(chain, tmp_path):
    bundle = json.loads(chain["bundle"].read_text())
    for event in bundle["events"]:
        if event["payload"]["type"] == "transform":
            loss = event["payload"]["loss"]
            k = next(iter(loss))
            loss[k] = event["payload"]["outputs"][0]["commitments"][k]  # a different valid point
            break
    path = tmp_path / "tampered.json"
    path.write_text(json.dumps(bundle))
    r = runner.invoke(app, ["verify", str(path), "--root-key", chain["root"]])
    assert r.exit_code == 1, r.output
    assert "NOT PROVEN" in r.output and "FAIL" in r.output
    assert "BAD_SIGNATURE" in r.output  # the failed check is named, with its reason
    r = runner.invoke(app, ["verify", str(path), "--root-key", chain["root"], "--json"])
    assert r.exit_code == 1
    report = json.loads(r.stdout)
    assert report["ok"] is False
    assert [c["name"] for c in report["checks"] if not c["ok"]] == ["rules"]


async def test_verify_under_another_root_key_exits_1(chain):
    other = SigningKey.generate().verify_key.encode().hex()
    r = runner.invoke(app, ["verify", str(chain["bundle"]), "--root-key", other])
    assert r.exit_code == 1, r.output


async def test_verify_incomplete_bundle_exits_1(chain, tmp_path):
    bundle = json.loads(chain["bundle"].read_text())
    bundle["events"] = [e for e in bundle["events"] if e["payload"]["type"] != "transform"]
    path = tmp_path / "incomplete.json"
    path.write_text(json.dumps(bundle))
    r = runner.invoke(app, ["verify", str(path), "--root-key", chain["root"]])
    assert r.exit_code == 1, r.output


@pytest.mark.parametrize(
    "content",
    [None, "{ not json", "", "[1, 2, 3]", "\xff\xfe garbage"],
    ids=["missing", "broken-json", "empty", "not-an-object", "binary"],
)
async def test_verify_unreadable_input_exits_2(chain, tmp_path, content):
    path = tmp_path / "input.json"
    if content is not None:
        path.write_bytes(content.encode("latin-1"))
    r = runner.invoke(app, ["verify", str(path), "--root-key", chain["root"]])
    assert r.exit_code == 2, r.output


async def test_verify_bad_root_key_exits_2(chain):
    r = runner.invoke(app, ["verify", str(chain["bundle"]), "--root-key", "abc"])
    assert r.exit_code == 2
    r = runner.invoke(app, ["verify", str(chain["bundle"]), "--root-key-file", "/nonexistent/key"])
    assert r.exit_code == 2


# --------------------------------------------------------------------------- wallets


async def test_wallet_restore_reproduces_lost_openings(chain, tmp_path):
    for name in ("mine", "trader"):
        original = Wallet.load(chain["dir"] / f"{name}.json")
        assert original.lots, name
        lost = tmp_path / f"{name}-lost.json"
        original.keys_only().save(lost)
        assert Wallet.load(lost).lots == {}
        r = await asyncio.to_thread(
            runner.invoke, app, ["wallet", "restore", "--wallet", str(lost), "--api", chain["url"]]
        )
        assert r.exit_code == 0, r.output
        restored = Wallet.load(lost)
        assert mode(lost) == 0o600
        assert set(restored.lots) == set(original.lots)
        for lot_id, entry in original.lots.items():
            again = restored.lots[lot_id]
            assert again.openings == entry.openings, lot_id
            assert again.spent == entry.spent, lot_id
            assert again.product == entry.product != "", lot_id  # spent lots received by transfer included
            assert again.attestation_id == entry.attestation_id
            assert again.issue_seq == entry.issue_seq
        assert {k: c.opening for k, c in restored.capacities.items()} == {
            k: c.opening for k, c in original.capacities.items()
        }
    # the restored mine wallet can keep issuing (its capacity chain is intact)
    mine = Wallet.load(tmp_path / "mine-lost.json")
    att = next(iter(mine.capacities))
    async with Client(chain["url"]) as client:
        r = await Publisher(mine, client).issue(site_id="cli-site", attestation_id=att, amount_g=1_000, product="x")
    assert r.lot_ids


async def test_sync_ignores_openings_that_do_not_open_the_lot(chain, tmp_path):
    """A sender controls what it seals: it must not overwrite the receiver's openings
    of another lot, nor plant openings that do not open the published commitments."""
    from crypto.pedersen import Opening
    from ledger.models import Transfer
    from ledger.openings import lots_plaintext, seal
    from sdk.publisher import restore, new_nonce

    trader = Wallet.load(chain["dir"] / "trader.json")
    victim = chain["lots"]["outputs"][1]  # the trader's own lot
    honest = trader.lots[victim].openings
    mine = Wallet.load(chain["dir"] / "mine.json")
    lot_b = chain["lots"]["b"]
    forged_plaintext = lots_plaintext({victim: {"industrial": Opening(1, 1)}, lot_b: {"industrial": Opening(5, 5)}})
    payload = Transfer(lot_id=lot_b, to="cli-trader",
                       opening_sealed_to_receiver=seal(forged_plaintext, trader.sealing_public_hex))  # fmt: skip
    async with Client(chain["url"]) as client:
        await Publisher(mine, client).submit(Publisher(mine, client).sign(payload, new_nonce()))
        path = tmp_path / "trader.json"
        trader.save(path)
        restored = Wallet.load(path)
        report = await restore(restored, client)
    assert report.mismatched == 2  # the lot it may not name, and the wrong opening of lot_b
    assert restored.lots[victim].openings == honest
    assert lot_b not in restored.lots


async def test_lots_command_shows_decrypted_amounts(chain, monkeypatch):
    """At 80 columns every column keeps its content (lot id, product, exact amount, origin mix)."""
    import sdk.cli

    monkeypatch.setattr(sdk.cli.console, "width", 80)
    path = chain["dir"] / "trader.json"
    r = await asyncio.to_thread(runner.invoke, app, ["lots", "--wallet", str(path), "--api", chain["url"]])
    assert r.exit_code == 0, r.output
    assert "400.000 kg" in r.output and "300.000 kg" in r.output
    lines = r.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    for lot_id, product in zip(chain["lots"]["outputs"], ("part 1", "part 2")):
        row = next(line for line in lines if lot_id in line)
        assert product in row and "ind 100%" in row
    r = await asyncio.to_thread(runner.invoke, app, ["lots", "--wallet", str(path), "--api", chain["url"], "--exact"])
    assert "400,000" in r.output and "300,000" in r.output
    # exact grams at 80 columns: no figure cut with an ellipsis, the product column kept
    exact_lines = r.output.splitlines()
    assert max(len(line) for line in exact_lines) <= 80 and "…" not in r.output
    for lot_id, product in zip(chain["lots"]["outputs"], ("part 1", "part 2")):
        assert product in next(line for line in exact_lines if lot_id in line)
    r = await asyncio.to_thread(runner.invoke, app, ["lots", "--wallet", str(path), "--offline", "--json"])
    listed = {x["lot_id"]: x for x in json.loads(r.stdout)}
    assert listed[chain["lots"]["outputs"][0]]["grams"] == {"industrial": 400_000, "artisanal": 0, "recycled_pre_consumer": 0, "recycled_post_consumer": 0}


async def test_keys_command_writes_a_0600_wallet(tmp_path):
    old = os.umask(0)  # even with a permissive umask
    try:
        path = tmp_path / "new.json"
        r = runner.invoke(app, ["keys", "--org", "acme-mining", "--wallet", str(path), "--role", "mine", "--country", "CD",
                                "--network", "oretrace-test"])  # fmt: skip
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    assert mode(path) == 0o600
    request = json.loads(r.stdout)
    w = Wallet.load(path)
    assert request["signing_public_key"] == w.signing_public_hex
    assert request["sealing_public_key"] == w.sealing_public_hex
    assert "signing_key" not in request and "sealing_key" not in request
    r = runner.invoke(app, ["keys", "--org", "acme-mining", "--wallet", str(path), "--role", "mine", "--country", "CD",
                            "--network", "oretrace-test"])  # fmt: skip
    assert r.exit_code == 2  # never overwrite keys silently
    assert Wallet.load(path).signing_seed == w.signing_seed


async def test_wallet_save_is_atomic_and_private(tmp_path):
    path = tmp_path / "w.json"
    path.write_text("{}")
    os.chmod(path, 0o644)  # a pre-existing, too permissive file is replaced, not reused
    w = Wallet.generate("x", "net")
    w.save(path)
    assert mode(path) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["w.json"]  # no temporary file left behind
    assert Wallet.load(path).signing_seed == w.signing_seed


async def test_verify_can_pin_the_network(chain):
    r = runner.invoke(app, ["verify", str(chain["bundle"]), "--root-key", chain["root"], "--network", "production"])
    assert r.exit_code == 1, r.output
    r = runner.invoke(app, ["verify", str(chain["bundle"]), "--root-key", chain["root"], "--network", "oretrace-test"])
    assert r.exit_code == 0, r.output
