"""The CLI faces of the log: `oretrace verify --witness/--min-cosignatures` exit codes, and
`oretrace monitor` (a separate process) against a live server: 0 clean, 2 unreachable."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import pytest
from nacl.signing import SigningKey
from typer.testing import CliRunner

from conftest import build_chain, free_port
from ledger import checkpoint as cp
from ledger.models import RegisterLogKey
from sdk.cli import app as cli

WITNESS = SigningKey(bytes([11] * 32))
WKEY = cp.key_from_signing_key("witness.test/cli", WITNESS, cp.COSIGNATURE_V1)


@pytest.fixture(scope="module")
async def bundle_files(app, world, publish, gql, root_key, tmp_path_factory):
    log = app.state.runtime.store.translog
    await publish(world.sign(RegisterLogKey(origin=log.origin, public_key=bytes(log.signing_key.verify_key).hex()),
                             "operator"))  # fmt: skip
    chain = await build_chain(world, publish, suffix="-cli")
    data = await gql("query($l: ID!, $c: ID!) { disclosureBundle(lotId: $l, claimId: $c) }",
                     {"l": chain.refined[0], "c": chain.claim_id})  # fmt: skip
    bundle = data["data"]["disclosureBundle"]
    folder = tmp_path_factory.mktemp("cli-bundles")
    plain = folder / "anchored.json"
    plain.write_text(json.dumps(bundle))
    note = cp.parse_note(bundle["log"]["checkpoint"])
    bundle["log"]["checkpoint"] = note.with_signatures(
        [cp.cosign(note.text, WKEY.name, WITNESS, int(time.time()))]
    ).encode().decode()
    cosigned = folder / "cosigned.json"
    cosigned.write_text(json.dumps(bundle))
    return plain, cosigned, root_key.verify_key.encode().hex()


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_verify_witness_options(bundle_files):
    plain, cosigned, root = bundle_files
    ok = run("verify", str(plain), "--root-key", root)
    assert ok.exit_code == 0, ok.output
    assert "Anchored in" in ok.output
    quorum = run("verify", str(cosigned), "--root-key", root, "--witness", WKEY.vkey(), "--min-cosignatures", "1")
    assert quorum.exit_code == 0, quorum.output
    missing = run("verify", str(plain), "--root-key", root, "--witness", WKEY.vkey(), "--min-cosignatures", "1")
    assert missing.exit_code == 1
    assert run("verify", str(plain), "--root-key", root, "--witness", "not-a-vkey").exit_code == 2
    log_vkey = cp.key_from_signing_key("x.example/log", WITNESS).vkey()  # a 0x01 key is not a witness key
    assert run("verify", str(plain), "--root-key", root, "--witness", log_vkey).exit_code == 2
    too_many = run("verify", str(plain), "--root-key", root, "--witness", WKEY.vkey(), "--min-cosignatures", "2")
    assert too_many.exit_code == 2


async def monitor_cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from sdk.cli import app; app()", "monitor", *args,
        env={**os.environ, "PYTHONPATH": os.getcwd(), "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 300)
    return proc.returncode, out.decode()


async def test_monitor_cli_exit_codes(bundle_files, app, live_server, tmp_path):
    _plain, _cosigned, root = bundle_files
    await app.state.runtime.store.translog.advance()
    code, out = await monitor_cli("--api", f"{live_server}/graphql", "--root-key", root, "--state", str(tmp_path / "m"))
    assert code == 0, out
    assert "entries replayed" in out and "OK" in out
    code, out = await monitor_cli("--api", f"http://127.0.0.1:{free_port()}/graphql", "--root-key", root,
                                  "--state", str(tmp_path / "m2"))  # fmt: skip
    assert code == 2, out
    code, out = await monitor_cli("--api", f"{live_server}/graphql", "--state", str(tmp_path / "m3"))
    assert code == 2, out


async def test_receipt_of_own_publication(bundle_files, app, world, publish):
    import httpx

    from sdk.client import Client
    from sdk.receipts import ReceiptError, fetch_receipt

    log = app.state.runtime.store.translog
    envelope = world.register("receipt-org", "trader")
    outcome = await publish(envelope)
    async with Client("http://test/graphql", transport=httpx.ASGITransport(app=app)) as client:
        receipt = await fetch_receipt(client, envelope, [log.key])
        assert receipt.log_index == outcome.log_index and receipt.tree_size > receipt.log_index
        with pytest.raises(ReceiptError):  # a checkpoint key the publisher does not trust
            await fetch_receipt(client, envelope, [cp.key_from_signing_key(log.origin, SigningKey.generate())])
        with pytest.raises(ReceiptError):  # never published
            await fetch_receipt(client, world.register("never-sent", "trader"))
