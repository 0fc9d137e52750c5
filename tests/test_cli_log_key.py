"""`oretrace log register-key`: the operator registers the checkpoint key of the log its
server runs (read from `logKey`), once; only the operator may, and a key other than the
one the operator expects (`--public-key`, from `oretrace serve`'s startup output) is refused.

A fresh database per module: the server's log key starts unregistered.
"""

from __future__ import annotations

import asyncio
import json

from nacl.signing import SigningKey
from typer.testing import CliRunner

from conftest import operator_wallet
from sdk.cli import app
from sdk.wallet import Wallet

runner = CliRunner()
CLEAN_ENV = {"ORETRACE_NETWORK": None, "ORETRACE_ROOT_PUBLIC_KEY": None, "ORETRACE_CONFIG": None,
             "ORETRACE_API": None, "ORETRACE_WALLET": None}  # fmt: skip


def cli(*argv: str):
    return asyncio.to_thread(runner.invoke, app, list(argv), env=CLEAN_ENV)


async def registrations(store) -> int:
    return await store.events.count_documents({"type": "register_log_key"})


async def test_register_log_key_once_and_only_the_servers_key(app, live_server, api_settings, root_key: SigningKey,
                                                               store, tmp_path):  # fmt: skip
    log = app.state.runtime.store.translog
    served = bytes(log.signing_key.verify_key).hex()
    url = f"{live_server}/graphql"
    operator = tmp_path / "operator.json"
    op = operator_wallet(api_settings.network, root_key)
    op.save(operator)
    mine = tmp_path / "mine.json"
    Wallet.generate("lk-mine", api_settings.network, root_public_key=op.root_public_key).save(mine)
    assert not await log.key_is_registered()

    for argv, code, words in (
        (["-w", str(mine)], 2, "only the network operator"),
        (["-w", str(operator), "--public-key", "ab" * 32], 1, f"reports log key {served}, not {'ab' * 32}"),
        (["-w", str(operator), "--public-key", "zz"], 2, "64"),
    ):
        r = await cli("log", "register-key", *argv, "--api", url)
        assert r.exit_code == code, r.output
        assert words in r.output and "Traceback" not in r.output
        assert await registrations(store) == 0 and not await log.key_is_registered()

    r = await cli("log", "register-key", "-w", str(operator), "--public-key", served.upper(), "--api", url)
    assert r.exit_code == 0, r.output
    assert f"registering log key {served} of {log.origin}" in r.output and log.key.vkey() in r.output
    assert await registrations(store) == 1 and await log.key_is_registered()
    assert not (tmp_path / "operator.json.pending.json").exists()

    for _ in range(2):  # already registered: nothing is published again
        r = await cli("log", "register-key", "-w", str(operator), "--api", url, "--json")
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout) == {"origin": log.origin, "public_key": served, "vkey": log.key.vkey(),
                                        "already_registered": True}  # fmt: skip
        assert await registrations(store) == 1
