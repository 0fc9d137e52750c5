"""README.md's "From Python" example runs as written, the README spells the command one way, and
every command of its "A network of your own" summary is one the CLI knows, with options it accepts.

The example is saved as claim.py in a directory laid out like `make run`'s
(oretrace-data/demo-wallets/rhine-motors.json, here the wallet of an OEM
holding a 3 t lot on the test server) and run by a separate interpreter;
the only change is the server's address.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import sys
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

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def python_example() -> str:
    section = README.read_text().split("## From Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1
    return blocks[0]


def network_summary() -> list[str]:
    """The `oretrace` lines of the "A network of your own" sh block: continuations joined,
    comments and `> file` redirections dropped."""
    section = README.read_text().split("## A network of your own", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```sh\n(.*?)```", section, flags=re.S)[0].replace("\\\n", " ")
    return [line.split(" #")[0].split(" > ")[0].strip() for line in block.splitlines() if line.startswith("oretrace ")]


def test_readme_summary_has_the_operators_steps():
    names = [" ".join(shlex.split(c)[1:3]) for c in network_summary()]
    order = ["network init", "serve --data-dir", "log register-key"]
    assert [n for n in names if n in order] == order  # the log key is registered before anything is published


@pytest.mark.parametrize("command", network_summary(), ids=lambda c: " ".join(shlex.split(c)[1:3]))
def test_readme_summary_commands_parse(command):
    """Click parses every argument before it acts on --help: an unknown command or option fails here."""
    r = CliRunner().invoke(app, [*shlex.split(command)[1:], "--help"])
    assert r.exit_code == 0, f"{command}\n{r.output}"


def test_readme_spells_the_command_one_way():
    text = README.read_text()
    assert ".venv/bin/oretrace" not in text
    assert "oretrace-data/demo-wallets/rhine-motors.json" in python_example()


async def test_readme_python_example_runs(live_server, api_settings, root_key: SigningKey, tmp_path):
    net = api_settings.network
    operator = operator_wallet(net, root_key)
    root = operator.root_public_key
    auditor = Wallet.generate("rd-auditor", net, root_public_key=root, name="Auditor", country="CD", roles=["auditor"])
    mine = Wallet.generate("rd-mine", net, root_public_key=root, name="Mine", country="CD", roles=["mine"])
    oem = Wallet.generate("rd-oem", net, root_public_key=root, name="OEM", country="DE", roles=["oem"])
    url = f"{live_server}/graphql"
    async with Client(url) as client:
        for w in (auditor, mine, oem):
            await Publisher(operator, client).register_wallet(w)
        start, end = attestation_period()
        att = await Publisher(auditor, client).attest_site(
            site_id="rd-site", operator="rd-mine", name="Pit", country="CD", region="Lualaba",
            lat=-10.7, lon=25.5, origin_class="industrial", valid_from=start, valid_until=end, capacity_g=10**9,
        )  # fmt: skip
        lot = (await Publisher(mine, client).issue(
            site_id="rd-site", attestation_id=att.attestation_id, amount_g=3_000_000, product="hydroxide")).lot_ids[0]  # fmt: skip
        await Publisher(mine, client).transfer(lot, "rd-oem")
        wallets = tmp_path / "oretrace-data" / "demo-wallets"
        wallets.mkdir(parents=True)
        oem.save(wallets / "rhine-motors.json")

        code = python_example()
        assert "http://127.0.0.1:8000/graphql" in code
        (tmp_path / "claim.py").write_text(code.replace("http://127.0.0.1:8000/graphql", url))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "claim.py", lot, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, errors = await asyncio.wait_for(proc.communicate(), 300)
        assert proc.returncode == 0, errors.decode()
        claim_id = out.decode().strip()
        assert claim_id.startswith("clm_")
        claims = await client.claims(lot)
    assert [c["id"] for c in claims] == [claim_id]
    assert claims[0]["kind"] == "amount_in_range" and (int(claims[0]["low"]), int(claims[0]["high"])) == (1_000_000, 5_000_000)
