"""Key backups, the network settings file, key pinning, and the operator's key commands."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat

import pytest
from nacl.signing import SigningKey
from typer.testing import CliRunner

from conftest import member_wallets, operator_wallet, register_and_attest_site
from sdk.backup import BackupError, export_keys, import_keys
from sdk.cli import app
from sdk.client import Client
from sdk.network_config import load_config
from sdk.wallet import Wallet

runner = CliRunner()
PASS = "correct horse battery staple"
CLEAN_ENV = {"ORETRACE_NETWORK": None, "ORETRACE_ROOT_PUBLIC_KEY": None, "ORETRACE_CONFIG": None,
             "ORETRACE_API": None, "ORETRACE_WALLET": None, "ORETRACE_BACKUP_PASSPHRASE": PASS}  # fmt: skip


def cli(*argv: str, **env):
    return asyncio.to_thread(runner.invoke, app, list(argv), env={**CLEAN_ENV, **env})


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# --------------------------------------------------------------------------- backups


async def test_backup_round_trip_and_refusals(tmp_path):
    w = Wallet.generate("acme", "net-1", name="ACME", country="CD", roles=["mine"], root_public_key="ab" * 32)
    w.save(tmp_path / "w.json")
    r = await cli("wallet", "export-keys", "-w", str(tmp_path / "w.json"), "--out", str(tmp_path / "k.backup"))
    assert r.exit_code == 0, r.output
    backup = tmp_path / "k.backup"
    assert mode(backup) == 0o600
    text = backup.read_text()
    assert w.signing_seed.hex() not in text and w.sealing_secret.hex() not in text
    again = import_keys(backup, PASS)
    assert (again.org_id, again.network, again.key_id, again.root_public_key) == ("acme", "net-1", "k1", "ab" * 32)
    assert again.signing_seed == w.signing_seed and again.sealing_secret == w.sealing_secret
    assert again.lots == {} and again.meta == w.meta

    r = await cli("wallet", "export-keys", "-w", str(tmp_path / "w.json"), "--out", str(backup))
    assert r.exit_code == 2 and "exists" in r.output  # never overwrite a backup silently

    with pytest.raises(BackupError, match="wrong passphrase"):
        import_keys(backup, PASS + "!")
    data = json.loads(text)
    box = bytearray(base64.b64decode(data["box"]))
    box[-1] ^= 1
    altered = tmp_path / "altered.backup"
    altered.write_text(json.dumps({**data, "box": base64.b64encode(bytes(box)).decode()}))
    with pytest.raises(BackupError, match="altered"):
        import_keys(altered, PASS)
    greedy = tmp_path / "greedy.backup"
    greedy.write_text(json.dumps({**data, "kdf": {**data["kdf"], "memlimit": 2**40}}))
    with pytest.raises(BackupError, match="parameters"):
        import_keys(greedy, PASS)  # a file cannot make the reader spend unbounded memory
    for bad in (altered, greedy):
        r = await cli("wallet", "restore", "-w", str(tmp_path / "new.json"), "--from-backup", str(bad))
        assert r.exit_code == 2 and "Traceback" not in r.output, r.output
        assert not (tmp_path / "new.json").exists()
    r = await cli("wallet", "restore", "-w", str(tmp_path / "w.json"), "--from-backup", str(backup))
    assert r.exit_code == 2 and "exists" in r.output  # a restore never replaces a wallet unasked


async def test_short_passphrase_is_refused(tmp_path):
    w = Wallet.generate("acme", "net-1")
    with pytest.raises(BackupError, match="at least 12"):
        export_keys(w, tmp_path / "k", "short")
    assert not (tmp_path / "k").exists()


# --------------------------------------------------------------------------- network settings


async def test_network_init_writes_the_operator_wallet_and_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = await cli("network", "init", "--network", "acme-net", "--api", "http://127.0.0.1:8401/graphql")
    assert r.exit_code == 0, r.output
    operator = Wallet.load(tmp_path / "operator.json")
    assert mode(tmp_path / "operator.json") == 0o600
    assert operator.org_id == "operator" and operator.key_id == "root" and operator.network == "acme-net"
    root = operator.signing_public_hex
    assert operator.root_public_key == root
    assert f"export ORETRACE_ROOT_PUBLIC_KEY={root}" in r.output and "export ORETRACE_NETWORK=acme-net" in r.output
    cfg = load_config()
    assert (cfg.network, cfg.root_public_key, cfg.api) == ("acme-net", root, "http://127.0.0.1:8401/graphql")

    # keys reads the network and pins its root key; flags win over the file
    r = await cli("keys", "--org", "acme", "--role", "mine", "--country", "CD", "-w", "acme.json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["network"] == "acme-net"
    assert Wallet.load(tmp_path / "acme.json").root_public_key == root
    assert "export-keys" in r.output  # it says to back up
    r = await cli("keys", "--org", "b", "--role", "mine", "--country", "CD", "-w", "b.json", "--network", "other")
    assert json.loads(r.stdout)["network"] == "other"
    assert Wallet.load(tmp_path / "b.json").root_public_key is None  # the file's key belongs to another network

    r = await cli("network", "init", "--network", "acme-net")
    assert r.exit_code == 2 and "exists" in r.output
    assert Wallet.load(tmp_path / "operator.json").signing_seed == operator.signing_seed

    (tmp_path / "oretrace-network.json").write_text('{"format": "oretrace-network/v1", "network": "x"}')
    r = await cli("keys", "--org", "c", "--role", "mine", "--country", "CD", "-w", "c.json")
    assert r.exit_code == 2 and "root_public_key" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "c.json").exists()


async def test_old_wallets_without_a_root_key_still_load(tmp_path):
    w = Wallet.generate("acme", "net-1")
    data = w.to_json()
    assert "root_public_key" not in data
    (tmp_path / "w.json").write_text(json.dumps(data))
    assert Wallet.load(tmp_path / "w.json").root_public_key is None
    data["root_public_key"] = "not hex"
    (tmp_path / "w.json").write_text(json.dumps(data))
    r = await cli("wallet", "show", "-w", str(tmp_path / "w.json"))
    assert r.exit_code == 2 and "root_public_key" in r.output


# --------------------------------------------------------------------------- operator key commands


async def _attested_mine(prefix: str, url: str, network: str, root_key: SigningKey, tmp_path) -> Wallet:
    """The operator's wallet saved as tmp_path/operator.json; an auditor and a mine "<prefix>-mine"
    registered, the mine's site "<prefix>-site" attested; the mine's wallet saved as tmp_path/mine.json."""
    operator = operator_wallet(network, root_key)
    operator.save(tmp_path / "operator.json")
    wallets = member_wallets(prefix, network, operator.root_public_key, roles=("auditor", "mine"))
    async with Client(url) as client:
        await register_and_attest_site(client, operator, wallets, site_id=f"{prefix}-site")
    wallets["mine"].save(tmp_path / "mine.json")
    return wallets["mine"]


async def test_rotate_and_revoke_key(live_server, api_settings, root_key: SigningKey, store, tmp_path):
    net = api_settings.network
    url = f"{live_server}/graphql"
    await _attested_mine("kr", url, net, root_key, tmp_path)
    new_key = Wallet.generate("kr-mine", net, key_id="k2")
    op = str(tmp_path / "operator.json")
    r = await cli("rotate-key", "--org", "kr-mine", "--key-id", "k2", "--public-key", new_key.signing_public_hex,
                  "-w", op, "--api", url, "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["type"] == "rotate_key"
    r = await cli("revoke-key", "--org", "kr-mine", "--key-id", "k1", "--reason", "laptop lost", "-w", op, "--api", url)
    assert r.exit_code == 0, r.output
    before = await store.events.count_documents({})
    r = await cli("issue", "-w", str(tmp_path / "mine.json"), "--site", "kr-site", "--grams", "10", "--api", url)
    assert r.exit_code == 1, r.output
    assert "REVOKED_KEY" in r.output and "nothing was published" in r.output
    assert await store.events.count_documents({}) == before
    assert not (tmp_path / "mine.json.pending.json").exists()  # a definite refusal leaves no pending publication


def test_missing_directories_are_created_only_when_asked(tmp_path):
    from sdk.wallet import write_private_json

    target = tmp_path / "a" / "b" / "w.json"
    with pytest.raises(FileNotFoundError):
        write_private_json(target, {"v": 1})
    with pytest.raises(FileNotFoundError):
        Wallet.generate("x", "net").save(target)
    assert list(tmp_path.iterdir()) == []
    write_private_json(target, {"v": 1}, parents=True)
    assert json.loads(target.read_text()) == {"v": 1} and mode(target) == 0o600


async def test_new_signing_key_then_operator_rotation(live_server, api_settings, root_key: SigningKey, store, tmp_path):
    """The supplier makes a new key, the operator adds it and revokes the old one: publishing goes on."""
    net = api_settings.network
    url = f"{live_server}/graphql"
    mine = await _attested_mine("nk", url, net, root_key, tmp_path)
    path = tmp_path / "mine.json"
    r = await cli("wallet", "new-key", "-w", str(path), "--key-id", "k1")
    assert r.exit_code == 2 and "already" in r.output
    r = await cli("wallet", "new-key", "-w", str(path), "--key-id", "k2", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    renewed = Wallet.load(path)
    assert renewed.key_id == "k2" and renewed.signing_public_hex == out["signing_public_key"] != mine.signing_public_hex
    assert renewed.sealing_secret == mine.sealing_secret  # sealed openings stay readable
    before = await store.events.count_documents({})
    r = await cli("issue", "-w", str(path), "--site", "nk-site", "--grams", "10", "--api", url)
    assert r.exit_code == 1 and "UNKNOWN_KEY" in r.output, r.output  # not registered yet
    assert await store.events.count_documents({}) == before
    argv = out["operator_command"].split()[1:]
    argv[argv.index("operator.json")] = str(tmp_path / "operator.json")
    r = await cli(*argv, "--api", url)
    assert r.exit_code == 0, r.output
    r = await cli("revoke-key", "--org", "nk-mine", "--key-id", "k1", "-w", str(tmp_path / "operator.json"), "--api", url)
    assert r.exit_code == 0, r.output
    r = await cli("issue", "-w", str(path), "--site", "nk-site", "--grams", "10", "--api", url, "--json")
    assert r.exit_code == 0, r.output
    assert Wallet.load(path).lots[json.loads(r.stdout)["lot_ids"][0]].total == 10
