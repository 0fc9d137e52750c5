"""Check, then publish, then save, and never lose the result.

Crashes are simulated in-process: the wallet save fails after the server
accepted (a full disk), or the connection drops after the envelope was sent
(the answer is lost). Each time the command reports what it knows with its
documented exit code, the signed envelope waits in the journal beside the
wallet, and running the same command again publishes nothing new: the
ledger holds exactly one event and the wallet learns its result.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import stat
from pathlib import Path

import pytest
from nacl.signing import SigningKey
from typer.testing import CliRunner

from conftest import operator_wallet
import sdk.client
import sdk.wallet
from sdk.cli import EXIT_NOT_SAVED, EXIT_OUTCOME_UNKNOWN, app
from sdk.client import ApiError, ApiRejection, Client
from sdk.demo_data import attestation_period
from sdk.journal import Journal
from sdk.publisher import Publisher
from sdk.wallet import Wallet

runner = CliRunner()


@pytest.fixture(scope="module")
async def net(live_server, api_settings, root_key: SigningKey, tmp_path_factory):
    """A registered auditor, mine (with an attested site) and trader; wallets as files in a fresh directory."""
    network = api_settings.network
    d = tmp_path_factory.mktemp("cli-publish")
    operator = operator_wallet(network, root_key)
    root = operator.root_public_key
    wallets = {
        "auditor": Wallet.generate("pb-auditor", network, root_public_key=root, name="Auditor", country="CD", roles=["auditor"]),
        "mine": Wallet.generate("pb-mine", network, root_public_key=root, name="Mine", country="CD", roles=["mine"]),
        "trader": Wallet.generate("pb-trader", network, root_public_key=root, name="Trader", country="CH", roles=["trader"]),
    }
    url = f"{live_server}/graphql"
    async with Client(url) as client:
        for w in wallets.values():
            await Publisher(operator, client).register_wallet(w)
        start, end = attestation_period()
        await Publisher(wallets["auditor"], client).attest_site(
            site_id="pb-site", operator="pb-mine", name="Pit", country="CD", region="Lualaba",
            lat=-10.7, lon=25.5, origin_class="industrial", valid_from=start, valid_until=end, capacity_g=10**9,
        )  # fmt: skip
    for name, w in wallets.items():
        w.save(d / f"{name}.json")
    return {"url": url, "dir": d}


def cli(*argv: str):
    return asyncio.to_thread(runner.invoke, app, list(argv), env={"ORETRACE_CONFIG": None, "ORETRACE_API": None})


async def events(store) -> int:
    return await store.events.count_documents({})


def lot_ids(text: str) -> list[str]:
    return sorted({w.strip("(),.") for w in text.split() if w.startswith("lot_")})


async def test_issue_save_fails_after_accept_then_retry_publishes_once(net, store, monkeypatch):
    wallet = net["dir"] / "mine.json"
    before_wallet, before = wallet.read_bytes(), await events(store)
    real_save = sdk.wallet.Wallet.save

    def disk_full(self, path=None):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sdk.wallet.Wallet, "save", disk_full)
    r = await cli("issue", "-w", str(wallet), "--site", "pb-site", "--grams", "12345", "--api", net["url"])
    assert r.exit_code == EXIT_NOT_SAVED, r.output
    assert "No space left on device" in r.output and f"oretrace wallet restore --wallet {wallet}" in r.output
    published = lot_ids(r.output)
    assert len(published) == 1 and await events(store) == before + 1
    assert wallet.read_bytes() == before_wallet  # the old wallet is intact
    journal = Journal(wallet).path
    assert journal.exists() and stat.S_IMODE(os.stat(journal).st_mode) == 0o600

    monkeypatch.setattr(sdk.wallet.Wallet, "save", real_save)
    r = await cli("issue", "-w", str(wallet), "--site", "pb-site", "--grams", "12345", "--api", net["url"], "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["lot_ids"] == published  # the same lot: the retry published nothing new
    assert await events(store) == before + 1
    assert not journal.exists()
    entry = Wallet.load(wallet).lots[published[0]]
    assert entry.total == 12345 and entry.attestation_id and entry.issue_seq is not None


@pytest.mark.parametrize("lost", ["answer", "request", "outcome unknown"])
async def test_connection_lost_then_retry_publishes_once(net, store, monkeypatch, lost):
    """The answer is lost after the server committed, the request never arrived, or the server
    answers OUTCOME_UNKNOWN after committing: each time exit 4, and the same command run again
    ends with exactly one publication."""
    wallet = net["dir"] / "mine.json"
    before = await events(store)
    real_publish = sdk.client.Client.publish

    async def flaky(self, envelope):
        if lost != "request":
            await real_publish(self, envelope)
        if lost == "outcome unknown":
            raise ApiRejection("OUTCOME_UNKNOWN", "commit outcome unknown after retries")
        raise ApiError("cannot reach the server: ReadError")

    monkeypatch.setattr(sdk.client.Client, "publish", flaky)
    r = await cli("issue", "-w", str(wallet), "--site", "pb-site", "--grams", "777", "--api", net["url"])
    assert r.exit_code == EXIT_OUTCOME_UNKNOWN, r.output
    assert "run the same command again" in r.output.lower()
    assert await events(store) == before + (0 if lost == "request" else 1)
    assert Journal(wallet).path.exists()

    monkeypatch.setattr(sdk.client.Client, "publish", real_publish)
    r = await cli("issue", "-w", str(wallet), "--site", "pb-site", "--grams", "777", "--api", net["url"], "--json")
    assert r.exit_code == 0, r.output
    lot = json.loads(r.stdout)["lot_ids"][0]
    assert await events(store) == before + 1
    assert Wallet.load(wallet).lots[lot].total == 777
    assert not Journal(wallet).path.exists()


async def test_a_different_command_completes_the_pending_one_first(net, store, monkeypatch):
    wallet = net["dir"] / "mine.json"
    before = await events(store)
    real_publish = sdk.client.Client.publish

    async def answer_lost(self, envelope):
        await real_publish(self, envelope)
        raise ApiError("connection reset")

    monkeypatch.setattr(sdk.client.Client, "publish", answer_lost)
    r = await cli("issue", "-w", str(wallet), "--site", "pb-site", "--grams", "1000", "--api", net["url"])
    assert r.exit_code == EXIT_OUTCOME_UNKNOWN
    monkeypatch.setattr(sdk.client.Client, "publish", real_publish)
    r = await cli("issue", "-w", str(wallet), "--site", "pb-site", "--grams", "2000", "--api", net["url"], "--json")
    assert r.exit_code == 0, r.output
    assert "interrupted issue publication was completed first" in r.output
    assert await events(store) == before + 2  # the pending one, once, and the new one
    amounts = sorted(e.total for e in Wallet.load(wallet).lots.values())
    assert 1000 in amounts and 2000 in amounts


async def test_claim_bundle_save_fails_after_publish_and_the_printed_command_recovers(net, store, monkeypatch, tmp_path):
    wallet = net["dir"] / "mine.json"
    r = await cli("issue", "-w", str(wallet), "--site", "pb-site", "--grams", "5000", "--api", net["url"], "--json")
    lot = json.loads(r.stdout)["lot_ids"][0]
    out = tmp_path / "bundle.json"
    real_write = sdk.wallet.write_private_json

    def fail_on_bundle(path, data):
        if Path(path) == out:
            raise OSError(errno.EIO, "Input/output error")
        return real_write(path, data)

    monkeypatch.setattr(sdk.wallet, "write_private_json", fail_on_bundle)
    before = await events(store)
    r = await cli("claim", lot, "-w", str(wallet), "--kind", "amount_in_range", "--low", "1000", "--high", "9000",
                  "--bundle-out", str(out), "--api", net["url"])  # fmt: skip
    assert r.exit_code == EXIT_NOT_SAVED, r.output
    assert await events(store) == before + 1
    recover = r.output[r.output.index("oretrace bundle"):].split(" (or run")[0].split()
    claim_id = recover[3]
    assert recover[:3] == ["oretrace", "bundle", lot] and recover[4:] == ["--out", str(out)]
    monkeypatch.setattr(sdk.wallet, "write_private_json", real_write)
    r = await cli(*recover[1:], "--api", net["url"])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["claim_id"] == claim_id
    assert await events(store) == before + 1

    # the other way out: the same claim command again publishes nothing new and saves the bundle
    out.unlink()
    r = await cli("claim", lot, "-w", str(wallet), "--kind", "amount_in_range", "--low", "1000", "--high", "9000",
                  "--bundle-out", str(out), "--api", net["url"], "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["claim_id"] == claim_id
    assert json.loads(out.read_text())["claim_id"] == claim_id
    assert await events(store) == before + 1
    assert not Journal(wallet).path.exists()
    r = await cli("claim", lot, "-w", str(wallet), "--kind", "amount_in_range", "--low", "1000", "--high", "9000",
                  "--bundle-out", str(out), "--api", net["url"], "--json")  # fmt: skip
    assert r.exit_code == 0 and json.loads(r.stdout)["claim_id"] != claim_id  # nothing pending: a new claim
    assert await events(store) == before + 2


async def test_claim_checks_the_bundle_path_before_publishing(net, store, tmp_path):
    wallet = net["dir"] / "mine.json"
    lot = next(iter(Wallet.load(wallet).lots))
    before = await events(store)
    for out, why in ((tmp_path, "is a directory"), (tmp_path / "missing" / "b.json", "does not exist")):
        r = await cli("claim", lot, "-w", str(wallet), "--kind", "ancestry_excludes", "--class", "artisanal",
                      "--bundle-out", str(out), "--api", net["url"])  # fmt: skip
        assert r.exit_code == 2 and why in r.output, r.output
    assert await events(store) == before


async def test_transform_shows_the_plan_and_refuses_a_large_loss(net, store):
    mine, trader = net["dir"] / "mine.json", net["dir"] / "trader.json"
    r = await cli("issue", "-w", str(mine), "--site", "pb-site", "--grams", "3900000", "--api", net["url"], "--json")
    lot = json.loads(r.stdout)["lot_ids"][0]
    r = await cli("transfer", lot, "--to", "pb-trader", "-w", str(mine), "--api", net["url"], "--json")
    assert r.exit_code == 0, r.output
    before = await events(store)

    r = await cli("transform", "-w", str(trader), "-i", lot, "-o", "ab=5", "--api", net["url"], "--exact")
    assert r.exit_code == 1, r.output  # a typo would write 3,899,995 g off as loss
    assert "3,899,995" in r.output and "--accept-loss" in r.output and "Nothing was published" in r.output
    assert await events(store) == before

    r = await cli("transform", "-w", str(trader), "-i", lot, "-o", "sulfate=3800000", "--dry-run", "--json", "--api", net["url"])
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)["plan"]
    assert plan["outputs"] == [{"product": "sulfate", "grams": {"industrial": 3_800_000, "artisanal": 0, "recycled_pre_consumer": 0,
                                                            "recycled_post_consumer": 0}}]
    assert plan["loss"] == {"industrial": 100_000, "artisanal": 0, "recycled_pre_consumer": 0, "recycled_post_consumer": 0}
    assert plan["inputs"][0]["lot_id"] == lot
    assert await events(store) == before

    r = await cli("transform", "-w", str(trader), "-i", lot, "-o", "sulfate=3800000", "--json", "--api", net["url"])
    assert r.exit_code == 0, r.output  # 2.6 % loss: under the default 5 % threshold
    assert await events(store) == before + 1
    created = json.loads(r.stdout)["outputs"]
    assert created[0]["grams"] == 3_800_000 and created[0]["product"] == "sulfate"
    held = Wallet.load(trader).lots
    assert held[created[0]["lot_id"]].total == 3_800_000 and held[lot].spent


async def test_accept_loss_publishes_what_the_plan_showed(net, store):
    trader = net["dir"] / "trader.json"
    lot = next(e.lot_id for e in Wallet.load(trader).lots.values() if not e.spent)
    before = await events(store)
    # 7.9 % loss: above the 5 % threshold, within refine's 10 % loss cap (protocol v2)
    r = await cli("transform", "-w", str(trader), "-i", lot, "-o", "sample=3500000", "--json", "--api", net["url"])
    assert r.exit_code == 1 and "--accept-loss" in r.output, r.output
    r = await cli("transform", "-w", str(trader), "-i", lot, "-o", "sample=3500000", "--accept-loss", "--json", "--api", net["url"])
    assert r.exit_code == 0, r.output
    assert await events(store) == before + 1
    assert json.loads(r.stdout)["outputs"][0]["grams"] == 3_500_000


async def test_symlinked_wallet_is_written_through(net, tmp_path):
    target = tmp_path / "real" / "mine.json"
    target.parent.mkdir()
    target.write_bytes((net["dir"] / "mine.json").read_bytes())
    os.chmod(target, 0o600)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    r = await cli("lots", "-w", str(link), "--api", net["url"])
    assert r.exit_code == 0, r.output
    assert link.is_symlink() and Wallet.load(target).org_id == "pb-mine"
    assert sorted(p.name for p in target.parent.iterdir()) == ["mine.json"]


async def test_attest_until_is_inclusive_and_the_default_is_the_calendar_year(net, store):
    from datetime import UTC, datetime

    auditor = net["dir"] / "auditor.json"
    r = await cli("attest", "-w", str(auditor), "--site", "pb-site-2", "--operator", "pb-mine", "--class", "artisanal",
                  "--capacity-g", "1000", "--name", "Yard", "--country", "PL", "--from", "2026-03-01",
                  "--until", "2026-03-31", "--api", net["url"], "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["valid_from"] == "2026-03-01T00:00:00+00:00"
    assert out["valid_until"] == "2026-04-01T00:00:00+00:00"  # the whole of 31 March is inside
    r = await cli("attest", "-w", str(auditor), "--site", "pb-site-3", "--operator", "pb-mine", "--class", "artisanal",
                  "--capacity-g", "1000", "--name", "Yard", "--country", "PL", "--api", net["url"], "--json")  # fmt: skip
    year = datetime.now(UTC).year
    out = json.loads(r.stdout)
    assert (out["valid_from"], out["valid_until"]) == (f"{year}-01-01T00:00:00+00:00", f"{year + 1}-01-01T00:00:00+00:00")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in any directory")
async def test_unwritable_wallet_directory_is_refused_before_signing(net, store, tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    wallet = d / "mine.json"
    wallet.write_bytes((net["dir"] / "mine.json").read_bytes())
    os.chmod(wallet, 0o600)
    os.chmod(d, 0o500)
    try:
        before = await events(store)
        r = await cli("issue", "-w", str(wallet), "--site", "pb-site", "--grams", "5", "--api", net["url"])
        assert r.exit_code == 2 and "could not be saved after publishing" in r.output, r.output
        assert await events(store) == before
    finally:
        os.chmod(d, 0o700)
