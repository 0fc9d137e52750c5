"""docs/getting-started.md, run as written.

Every line of the page's `sh` blocks that starts with `oretrace` runs in
order in an empty directory, with LOT_ID and ROOT_KEY replaced by what the
earlier commands printed and `> file` redirections honoured. `oretrace serve`
runs for real, as a child process on a free port, on a
fresh database of the test session's embedded SecantusDB (MONGODB_URI); the
other commands find it through ORETRACE_API, the only difference from the
page. The walk ends with `oretrace verify` proving the claim under the root
key printed by `oretrace network init` (the bundle anchored in the log whose
key `oretrace log register-key` registered: the key `serve` printed at
startup), and with a wallet restored from the encrypted key backup alone that
holds every lot with its product.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from sdk.cli import app
from sdk.wallet import Wallet

from conftest import free_port, fresh_database_name

DOC = Path(__file__).resolve().parent.parent / "docs" / "getting-started.md"
PORT = free_port()
runner = CliRunner()


def doc_commands() -> list[str]:
    text = DOC.read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("oretrace "):
                commands.append(line)
    return commands


def test_the_page_has_the_whole_walk():
    names = [shlex.split(c)[1] for c in doc_commands()]
    for step in ("network", "serve", "log", "keys", "register", "attest", "issue", "transfer", "claim", "verify",
                 "wallet"):
        assert step in names, step


@pytest.fixture
async def serve_process(mongo_uri, tmp_path, monkeypatch):
    """Start `oretrace serve` (the page's command + --port) as a child; yield a starter (it returns the
    process), stop it after."""
    started: list[subprocess.Popen] = []

    async def start(argv: list[str]) -> subprocess.Popen:
        env = {**os.environ, "MONGODB_URI": mongo_uri, "ORETRACE_DATABASE": fresh_database_name("gs"),
               "PYTHONPATH": str(DOC.parent.parent)}  # fmt: skip
        for var in ("ORETRACE_NETWORK", "ORETRACE_ROOT_PUBLIC_KEY", "ORETRACE_CONFIG"):
            env.pop(var, None)
        proc = subprocess.Popen([sys.executable, "-m", "sdk.cli", *argv, "--port", str(PORT), "--log-level", "warning"],
                                cwd=os.getcwd(), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
        started.append(proc)
        async with httpx.AsyncClient() as client:
            for _ in range(600):
                if proc.poll() is not None:
                    raise AssertionError(f"serve exited: {proc.stdout.read().decode()}")
                try:
                    if (await client.get(f"http://127.0.0.1:{PORT}/healthz")).status_code == 200:
                        return proc
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError("serve did not become healthy")

    yield start
    for proc in started:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_getting_started_walk_through(tmp_path, monkeypatch, serve_process):
    monkeypatch.chdir(tmp_path)
    env = {"ORETRACE_API": f"http://127.0.0.1:{PORT}/graphql", "ORETRACE_BACKUP_PASSPHRASE": "correct horse battery",
           "ORETRACE_NETWORK": None, "ORETRACE_ROOT_PUBLIC_KEY": None, "ORETRACE_CONFIG": None, "ORETRACE_WALLET": None}  # fmt: skip
    values: dict[str, str] = {}
    outputs: dict[str, str] = {}
    server = None
    for command in doc_commands():
        for name, value in values.items():
            command = command.replace(name, value)
        argv = shlex.split(command)[1:]
        redirect = None
        if ">" in argv:
            redirect = argv[argv.index(">") + 1]
            argv = argv[: argv.index(">")]
        if argv[0] == "mkdir" or argv[:1] == ["--version"]:
            continue
        if argv[0] == "serve":
            server = await serve_process(argv)
            continue
        r = await asyncio.to_thread(runner.invoke, app, argv, env=env)
        assert r.exception is None or isinstance(r.exception, SystemExit), (command, r.exception)
        assert r.exit_code == 0, f"{command}\n{r.output}"
        if redirect:
            Path(redirect).write_text(r.stdout)
        outputs[argv[0]] = r.output
        if argv[:2] == ["network", "init"]:
            values["ROOT_KEY"] = re.search(r"root public key: ([0-9a-f]{64})", r.output).group(1)
        if argv[0] == "issue":
            values["LOT_ID"] = re.search(r"issued lot (lot_[0-9a-f]+)", r.output).group(1)
    assert "PROVEN" in outputs["verify"] and "Anchored in" in outputs["verify"]
    server.send_signal(signal.SIGINT)
    startup = server.communicate(timeout=60)[0].decode()
    log_key = re.search(r"transparency log \S+, checkpoint key ([0-9a-f]{64})", startup)
    assert log_key, startup
    assert f"registering log key {log_key.group(1)} " in outputs["log"], outputs["log"]
    lot = values["LOT_ID"]
    restored = Wallet.load(tmp_path / "acme-restored.json")
    original = Wallet.load(tmp_path / "acme.json")
    assert restored.signing_seed == original.signing_seed
    assert restored.root_public_key == values["ROOT_KEY"] == original.root_public_key
    assert restored.lots[lot].product == "cobalt hydroxide" and restored.lots[lot].spent
    assert restored.lots[lot].openings == original.lots[lot].openings
    assert set(restored.capacities) == set(original.capacities)
