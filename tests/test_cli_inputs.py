"""No traceback, ever, for a user's mistake: every command against a table of bad inputs.

Each case runs one `oretrace` command with one bad value (argument, option,
request file, wallet file, output path) and asserts: no uncaught exception
(what would print a traceback), the documented exit code, the message naming
the problem, no event added to the ledger, and no file created, changed or
removed in the working directory (wallets included).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from nacl.signing import SigningKey
from typer.testing import CliRunner

from conftest import member_wallets, operator_wallet, register_and_attest_site
from sdk.cli import app
from sdk.client import Client
from sdk.publisher import Publisher

runner = CliRunner()
TOO_LONG = "x" * 201
HUGE = "18446744073709551616"  # 2^64


@pytest.fixture(scope="module")
async def small_chain(live_server, api_settings, root_key: SigningKey, tmp_path_factory):
    """Operator, auditor, a mine with an attested site and one lot, a trader; wallets as files."""
    net = api_settings.network
    d = tmp_path_factory.mktemp("cli-inputs")
    operator = operator_wallet(net, root_key)
    wallets = member_wallets("in", net, operator.root_public_key)
    url = f"{live_server}/graphql"
    async with Client(url) as client:
        att = await register_and_attest_site(client, operator, wallets, site_id="in-site")
        lot = (await Publisher(wallets["mine"], client).issue(
            site_id="in-site", attestation_id=att, amount_g=500_000, product="hydroxide")).lot_ids[0]  # fmt: skip
    operator.save(d / "operator.json")
    for name, w in wallets.items():
        w.save(d / f"{name}.json")
    return {"url": url, "dir": d, "lot": lot, "att": att, "network": net, "root": root_key.verify_key.encode().hex()}


def _request(**changes) -> str:
    base = {"org_id": "new-org", "name": "New Org", "country": "DE", "roles": ["refiner"], "key_id": "k1",
            "signing_public_key": "ab" * 32, "sealing_public_key": "cd" * 32, "network": "oretrace-test"}  # fmt: skip
    base.update(changes)
    return json.dumps(base)


WALLET_FILES = {
    "binary junk": b"\x00\xff\xfe\x80 junk \x9c",
    "not json": b"{ not json",
    "a list": b"[1, 2]",
    "lots is a string": None,  # filled from a real wallet below
    "opening not a number": None,
    "duplicate member": b'{"version": 1, "version": 1}',
    "empty": b"",
}


def _bad_wallet(kind: str, mine: Path) -> bytes:
    if WALLET_FILES[kind] is not None:
        return WALLET_FILES[kind]
    data = json.loads(mine.read_text())
    if kind == "lots is a string":
        data["lots"] = "oops"
    else:
        lot = next(iter(data["lots"].values()))
        next(iter(lot["openings"].values()))["value"] = "five hundred"
    return json.dumps(data).encode()


# (id, argv with {placeholders}, exit code, fragment of the message)
CASES = [
    # attest: integer ranges, enumerations, countries, coordinates, ids, text, dates
    ("attest capacity -1", "attest -w {auditor} --site s2 --operator in-mine --class industrial --capacity-g -1 --name n --country CD", 2, "or equal to"),
    ("attest capacity 2^64", "attest -w {auditor} --site s2 --operator in-mine --class industrial --capacity-g " + HUGE + " --name n --country CD", 2, "or equal to"),
    ("attest capacity 0", "attest -w {auditor} --site s2 --operator in-mine --class industrial --capacity-g 0 --name n --country CD", 2, "or equal to"),
    ("attest capacity text", "attest -w {auditor} --site s2 --operator in-mine --class industrial --capacity-g lots --name n --country CD", 2, "integer"),
    ("attest class gold", "attest -w {auditor} --site s2 --operator in-mine --class gold --capacity-g 5 --name n --country CD", 2, "gold"),
    ("attest country Germany", "attest -w {auditor} --site s2 --operator in-mine --class industrial --capacity-g 5 --name n --country Germany", 2, "ISO 3166-1"),
    ("attest country XX", "attest -w {auditor} --site s2 --operator in-mine --class industrial --capacity-g 5 --name n --country XX", 2, "ISO 3166-1"),
    ("attest lat 500", "attest -w {auditor} --site s2 --operator in-mine --class industrial --capacity-g 5 --name n --country CD --lat 500", 2, "latitude"),
    ("attest lat nan", "attest -w {auditor} --site s2 --operator in-mine --class industrial --capacity-g 5 --name n --country CD --lat nan", 2, "latitude"),
    ("attest lon -181", "attest -w {auditor} --site s2 --operator in-mine --class industrial --capacity-g 5 --name n --country CD --lon -181", 2, "longitude"),
    ("attest site id", "attest -w {auditor} --site bad/site --operator in-mine --class industrial --capacity-g 5 --name n --country CD", 2, "not an id"),
    ("attest operator id", "attest -w {auditor} --site s2 --operator 'in mine' --class industrial --capacity-g 5 --name n --country CD", 2, "not an id"),
    ("attest long name", "attest -w {auditor} --site s2 --operator in-mine --class industrial --capacity-g 5 --name " + TOO_LONG + " --country CD", 2, "at most 200"),
    ("attest until before from", "attest -w {auditor} --site s2 --operator in-mine --class industrial --capacity-g 5 --name n --country CD --from 2026-06-01 --until 2026-05-31", 2, "before --from"),
    ("attest bad date", "attest -w {auditor} --site s2 --operator in-mine --class industrial --capacity-g 5 --name n --country CD --from 2026-13-01", 2, "--from"),
    ("attest supersedes id", "attest -w {auditor} --site in-site --operator in-mine --class industrial --capacity-g 5 --name Pit --country CD --supersedes 'att 1'", 2, "not an id"),
    ("attest supersedes unknown", "attest -w {auditor} --site in-site --operator in-mine --class industrial --capacity-g 5 --name Pit --country CD --region Lualaba --lat -10.7 --lon 25.5 --supersedes att_nope", 1, "ATTESTATION_NOT_FOUND"),
    ("attest overlap without supersedes", "attest -w {auditor} --site in-site --operator in-mine --class industrial --capacity-g 5 --name Pit --country CD --region Lualaba --lat -10.7 --lon 25.5", 1, "ATTESTATION_OVERLAP"),
    # revoke-attestation
    ("revoke-attestation id", "revoke-attestation 'att 1' --site in-site -w {auditor}", 2, "not an id"),
    ("revoke-attestation site id", "revoke-attestation att_x --site 'in site' -w {auditor}", 2, "not an id"),
    ("revoke-attestation no site", "revoke-attestation att_x -w {auditor}", 2, "--site"),
    ("revoke-attestation long reason", "revoke-attestation att_x --site in-site --reason " + TOO_LONG + " -w {auditor}", 2, "at most 200"),
    ("revoke-attestation no wallet", "revoke-attestation att_x --site in-site -w {dir}/missing.json", 2, "no wallet"),
    ("revoke-attestation unknown", "revoke-attestation att_nope --site in-site -w {auditor}", 1, "ATTESTATION_NOT_FOUND"),
    ("revoke-attestation by the mine", "revoke-attestation {att} --site in-site -w {mine}", 1, "WRONG_ROLE"),
    ("revoke-attestation other site", "revoke-attestation {att} --site s2 -w {auditor}", 1, "SITE_MISMATCH"),
    # keys: ids, roles, countries, network, paths
    ("keys org with space", "keys --org 'Bad Org!' --country DE --role refiner --network n1 -w {dir}/new.json", 2, "not an id"),
    ("keys role miner", "keys --org ok --country DE --role miner --network n1 -w {dir}/new.json", 2, "miner"),
    ("keys role operator", "keys --org ok --country DE --role operator --network n1 -w {dir}/new.json", 2, "operator"),
    ("keys country Germany", "keys --org ok --country Germany --role refiner --network n1 -w {dir}/new.json", 2, "ISO 3166-1"),
    ("keys no country", "keys --org ok --role refiner --network n1 -w {dir}/new.json", 2, "--country is required"),
    ("keys no role", "keys --org ok --country DE --network n1 -w {dir}/new.json", 2, "--role"),
    ("keys five roles", "keys --org ok --country DE --role mine --role trader --role refiner --role cell --role oem --network n1 -w {dir}/new.json", 2, "one to four"),
    ("keys no network", "keys --org ok --country DE --role refiner -w {dir}/new.json", 2, "which network"),
    ("keys bad network", "keys --org ok --country DE --role refiner --network 'my net' -w {dir}/new.json", 2, "not an id"),
    ("keys bad root key", "keys --org ok --country DE --role refiner --network n1 --root-public-key xyz -w {dir}/new.json", 2, "64 hexadecimal"),
    ("keys wallet exists", "keys --org ok --country DE --role refiner --network n1 -w {mine}", 2, "exists"),
    ("keys wallet dir missing", "keys --org ok --country DE --role refiner --network n1 -w {dir}/nowhere/new.json", 2, "does not exist"),
    ("keys wallet is a dir", "keys --org ok --country DE --role refiner --network n1 -w {dir}", 2, "exists"),
    ("keys long name", "keys --org ok --country DE --role refiner --network n1 --name " + TOO_LONG + " -w {dir}/new.json", 2, "at most 200"),
    # register: the request file, checked field by field
    ("register bad org", "register {req_bad_org} -w {operator}", 2, "org_id"),
    ("register role miner", "register {req_miner} -w {operator}", 2, "roles"),
    ("register country Germany", "register {req_country} -w {operator}", 2, "country"),
    ("register bad key", "register {req_key} -w {operator}", 2, "signing_public_key"),
    ("register other network", "register {req_network} -w {operator}", 2, "network"),
    ("register missing field", "register {req_missing} -w {operator}", 2, "missing"),
    ("register not json", "register {junk} -w {operator}", 2, "not JSON"),
    ("register no file", "register {dir}/nope.json -w {operator}", 2, "no such file"),
    ("register non-operator", "register {req_ok} -w {mine}", 2, "operator"),
    # issue: grams, ids, text, wallets
    ("issue grams -5", "issue -w {mine} --site in-site --grams -5", 2, "or equal to"),
    ("issue grams 0", "issue -w {mine} --site in-site --grams 0", 2, "or equal to"),
    ("issue grams 1.5", "issue -w {mine} --site in-site --grams 1.5", 2, "integer"),
    ("issue grams 2^64", "issue -w {mine} --site in-site --grams " + HUGE, 2, "or equal to"),
    ("issue site id", "issue -w {mine} --site 'in site' --grams 5", 2, "not an id"),
    ("issue long product", "issue -w {mine} --site in-site --grams 5 --product " + TOO_LONG, 2, "at most 200"),
    ("issue attestation id", "issue -w {mine} --site in-site --grams 5 --attestation 'a b'", 2, "not an id"),
    ("issue no wallet", "issue -w {dir}/missing.json --site in-site --grams 5", 2, "no wallet"),
    ("issue wallet is a dir", "issue -w {dir} --site in-site --grams 5", 2, "directory"),
    ("issue api without scheme", "issue -w {mine} --site in-site --grams 5 --api localhost:8000", 2, "not an http"),
    # transfer
    ("transfer lot id", "transfer 'lot 1' --to in-trader -w {mine}", 2, "not an id"),
    ("transfer to id", "transfer {lot} --to 'in trader' -w {mine}", 2, "not an id"),
    ("transfer to empty", "transfer {lot} --to '' -w {mine}", 2, "not an id"),
    # transform: outputs, inputs, process
    ("transform a=b=5", "transform -w {mine} -i {lot} -o a=b=5", 2, "exactly one '='"),
    ("transform y=0", "transform -w {mine} -i {lot} -o y=0", 2, "between 1"),
    ("transform y=-3", "transform -w {mine} -i {lot} -o y=-3", 2, "between 1"),
    ("transform y=abc", "transform -w {mine} -i {lot} -o y=abc", 2, "whole number"),
    ("transform =5", "transform -w {mine} -i {lot} -o =5", 2, "product is empty"),
    ("transform no =", "transform -w {mine} -i {lot} -o 5000", 2, "PRODUCT=GRAMS"),
    ("transform twice the input", "transform -w {mine} -i {lot} -i {lot} -o y=5", 2, "twice"),
    ("transform process melt", "transform -w {mine} -i {lot} -o y=5 --process melt", 2, "melt"),
    ("transform input id", "transform -w {mine} -i 'lot x' -o y=5", 2, "not an id"),
    ("transform max loss 101", "transform -w {mine} -i {lot} -o y=5 --max-loss-percent 101", 2, "or equal to"),
    # claim: kinds, classes, bounds, combinations, output paths
    ("claim kind no_artisanal", "claim {lot} -w {mine} --kind no_artisanal --class artisanal", 2, "no_artisanal"),
    ("claim class gold", "claim {lot} -w {mine} --kind ancestry_excludes --class gold", 2, "gold"),
    ("claim high 10^23", "claim {lot} -w {mine} --kind amount_in_range --low 0 --high 99999999999999999999999", 2, "or equal to"),
    ("claim low above high", "claim {lot} -w {mine} --kind amount_in_range --low 9 --high 5", 2, "above --high"),
    ("claim range without high", "claim {lot} -w {mine} --kind amount_in_range --low 9", 2, "--high"),
    ("claim share without p", "claim {lot} -w {mine} --kind share_at_most --class artisanal --q 100", 2, "--p and --q"),
    ("claim share p > q", "claim {lot} -w {mine} --kind share_at_most --class artisanal --p 101 --q 100", 2, "larger than"),
    ("claim share q 0", "claim {lot} -w {mine} --kind share_at_most --class artisanal --p 0 --q 0", 2, "or equal to"),
    ("claim share p 2^16", "claim {lot} -w {mine} --kind share_at_most --class artisanal --p 65536 --q 100", 2, "or equal to"),
    ("claim ancestry without class", "claim {lot} -w {mine} --kind ancestry_excludes", 2, "needs --class"),
    ("claim bundle-out is a dir", "claim {lot} -w {mine} --kind ancestry_excludes --class artisanal --bundle-out {dir}", 2, "is a directory"),
    ("claim bundle-out dir missing", "claim {lot} -w {mine} --kind ancestry_excludes --class artisanal --bundle-out {dir}/no/b.json", 2, "does not exist"),
    ("claim lot id", "claim 'lot?' -w {mine} --kind ancestry_excludes --class artisanal", 2, "not an id"),
    # operator key management
    ("rotate-key bad public key", "rotate-key --org in-mine --key-id k2 --public-key xyz -w {operator}", 2, "64 hexadecimal"),
    ("rotate-key non-operator", "rotate-key --org in-mine --key-id k2 --public-key " + "ab" * 32 + " -w {mine}", 2, "operator"),
    ("revoke-key bad key id", "revoke-key --org in-mine --key-id 'k 1' -w {operator}", 2, "not an id"),
    ("new-key bad key id", "wallet new-key -w {mine} --key-id 'k 2'", 2, "not an id"),
    ("new-key same key id", "wallet new-key -w {mine} --key-id k1", 2, "already"),
    ("new-key operator's root key", "wallet new-key -w {operator} --key-id k2", 2, "network's root key"),
    # the log key
    ("log register-key non-operator", "log register-key -w {mine}", 2, "only the network operator"),
    ("log register-key bad key", "log register-key -w {operator} --public-key xyz", 2, "64 hexadecimal"),
    ("log register-key another key", "log register-key -w {operator} --public-key " + "ab" * 32, 1, "not " + "ab" * 32),
    # wallet maintenance and downloads
    ("export-keys out is a dir", "wallet export-keys -w {mine} --out {dir}", 2, "is a directory"),
    ("export-keys short passphrase", "wallet export-keys -w {mine} --out {dir}/k.backup", 2, "at least 12"),
    ("restore backup missing", "wallet restore -w {dir}/r.json --from-backup {dir}/none.backup", 2, "no backup"),
    ("restore not a backup", "wallet restore -w {dir}/r.json --from-backup {mine}", 2, "not an oretrace key backup"),
    ("bundle out missing dir", "bundle {lot} clm_x --out {dir}/no/b.json", 2, "does not exist"),
    ("network init bad id", "network init --network 'my net' -w {dir}/op2.json --config {dir}/net.json", 2, "not an id"),
    ("network init wallet exists", "network init --network n2 -w {operator} --config {dir}/net.json", 2, "exists"),
    ("serve size huge", "serve --size huge --port 8411", 2, "full or small"),
    ("serve port 0", "serve --port 0", 2, "or equal to"),
    ("serve no network", "serve --port 8412", 2, "which network"),
    ("serve no root key", "serve --port 8413 --network n1", 2, "root public key"),
    ("lots bad wallet", "lots -w {junk} --offline", 2, "not a wallet"),
]

WALLET_CASES = [(f"issue with wallet: {kind}", kind) for kind in WALLET_FILES]


def _snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


async def _events(store) -> int:
    return await store.events.count_documents({})


async def _invoke(argv: list[str], env: dict[str, str | None] | None = None):
    base = {"ORETRACE_NETWORK": None, "ORETRACE_ROOT_PUBLIC_KEY": None, "ORETRACE_API": None, "ORETRACE_WALLET": None,
            "ORETRACE_CONFIG": None, "ORETRACE_BACKUP_PASSPHRASE": "short"}  # fmt: skip
    return await asyncio.to_thread(runner.invoke, app, argv, env={**base, **(env or {})})


def _no_traceback(r) -> None:
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output


@pytest.mark.parametrize("argv,code,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_bad_input_is_a_clear_error_and_changes_nothing(small_chain, store, tmp_path, monkeypatch, argv, code, message):
    import shlex

    d = small_chain["dir"]
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # no oretrace-network.json here: nothing is read from the current directory
    requests = {
        "req_ok": _request(), "req_bad_org": _request(org_id="Bad Org!"), "req_miner": _request(roles=["miner"]),
        "req_country": _request(country="Germany"), "req_key": _request(signing_public_key="xyz"),
        "req_network": _request(network="elsewhere"), "req_missing": _request(sealing_public_key=None),
    }  # fmt: skip
    paths = {}
    for name, content in requests.items():
        path = work / f"{name}.json"
        data = json.loads(content)
        if name == "req_missing":
            del data["sealing_public_key"]
        path.write_text(json.dumps(data))
        paths[name] = str(path)
    (work / "junk.json").write_bytes(b"\x00\xffjunk")
    values = {"dir": str(work), "lot": small_chain["lot"], "att": small_chain["att"], "junk": str(work / "junk.json"), **paths}
    for name in ("operator", "auditor", "mine", "trader"):
        copy = work / f"{name}.json"
        copy.write_bytes((d / f"{name}.json").read_bytes())
        os.chmod(copy, 0o600)
        values[name] = str(copy)
    args = shlex.split(argv.format(**values))
    if args[0] not in ("serve", "network", "keys", "bundle", "wallet") or args[:2] == ["wallet", "restore"]:
        args += ["--api", small_chain["url"]] if "--api" not in args else []
    if args[0] == "bundle":
        args += ["--api", small_chain["url"]]
    before_files, before_events = _snapshot(work), await _events(store)
    r = await _invoke(args)
    _no_traceback(r)
    assert r.exit_code == code, r.output
    assert message in r.output, r.output
    assert await _events(store) == before_events, "something was published"
    assert _snapshot(work) == before_files, "a file was created, changed or removed"


@pytest.mark.parametrize("kind", [c[1] for c in WALLET_CASES], ids=[c[0] for c in WALLET_CASES])
async def test_malformed_wallet_is_a_usage_error(small_chain, store, tmp_path, kind):
    path = tmp_path / "bad.json"
    path.write_bytes(_bad_wallet(kind, small_chain["dir"] / "mine.json"))
    os.chmod(path, 0o600)
    before_events = await _events(store)
    for argv in (["issue", "-w", str(path), "--site", "in-site", "--grams", "5"], ["lots", "-w", str(path), "--offline"],
                 ["wallet", "show", "-w", str(path)], ["wallet", "export-keys", "-w", str(path), "--out", str(tmp_path / "k")]):  # fmt: skip
        r = await _invoke([*argv, "--api", small_chain["url"]] if argv[0] == "issue" else argv)
        _no_traceback(r)
        assert r.exit_code == 2, r.output
        assert "wallet" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json"]
    assert await _events(store) == before_events


async def test_case_is_forgiven_where_it_is_unambiguous(small_chain, tmp_path):
    """`--country de` and `--role MINE` mean DE and mine: normalised, not refused."""
    path = tmp_path / "w.json"
    r = await _invoke(["keys", "--org", "ok", "--country", "de", "--role", "MINE", "--network", "n1", "-w", str(path)])
    assert r.exit_code == 0, r.output
    request = json.loads(r.stdout)
    assert request["country"] == "DE" and request["roles"] == ["mine"]


async def test_help_lists_the_allowed_values():
    for argv, values in (
        (["keys", "--help"], ["mine", "trader", "refiner", "cathode", "cell", "recycler", "oem", "auditor"]),
        (["attest", "--help"], ["industrial", "artisanal", "recycled", "ISO 3166-1", "inclusive"]),
        (["claim", "--help"], ["ancestry_excludes", "share_at_most", "share_at_least", "amount_in_range"]),
        (["transform", "--help"], ["refine", "split", "merge", "convert", "--dry-run", "--accept-loss"]),
        (["serve", "--help"], ["ORETRACE_ROOT_PUBLIC_KEY", "ORETRACE_NETWORK", "--root-public-key", "--network"]),
    ):
        r = runner.invoke(app, argv, terminal_width=200)
        assert r.exit_code == 0
        for value in values:
            assert value in r.output, (argv, value)


async def test_group_readable_wallet_gets_a_warning(small_chain, tmp_path):
    path = tmp_path / "mine.json"
    path.write_bytes((small_chain["dir"] / "mine.json").read_bytes())
    os.chmod(path, 0o644)
    r = await _invoke(["lots", "-w", str(path), "--offline"])
    assert r.exit_code == 0, r.output
    assert "can be read by other users" in r.output and f"chmod 600 {path}" in r.output
    os.chmod(path, 0o600)
    r = await _invoke(["lots", "-w", str(path), "--offline"])
    assert "can be read by other users" not in r.output


async def test_api_without_graphql_path_gets_a_hint(small_chain, tmp_path):
    path = tmp_path / "mine.json"
    path.write_bytes((small_chain["dir"] / "mine.json").read_bytes())
    os.chmod(path, 0o600)
    base = small_chain["url"].rsplit("/graphql", 1)[0]
    r = await _invoke(["lots", "-w", str(path), "--api", base])
    _no_traceback(r)
    assert r.exit_code == 1, r.output
    assert f"try --api {base}/graphql" in r.output


async def test_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.startswith("oretrace ")


async def test_messages_are_not_hard_wrapped_when_not_a_terminal(tmp_path):
    """Piped to a file, a long message stays on one line (ids and codes are never cut in two)."""
    r = await _invoke(["keys", "--org", "ok", "--country", "DE", "--role", "refiner", "-w", str(tmp_path / "w.json")])
    assert r.exit_code == 2
    line = next(line for line in r.output.splitlines() if "which network" in line)
    assert len(line) > 120 and line.endswith("the demo's network is --network oretrace-demo")


async def test_serve_refuses_a_data_directory_in_use(tmp_path):
    import subprocess
    import sys

    from api.settings import Settings
    from sdk.cli import _require_free_data_dir

    data = tmp_path / "data"
    data.mkdir()
    info = data / "embedded.json"
    info.write_text(json.dumps({"pid": os.getpid(), "uri": "mongodb://127.0.0.1:1/", "storage_path": str(data / "db")}))
    r = await _invoke(["serve", "--data-dir", str(data), "--network", "n1", "--root-public-key", "ab" * 32, "--port", "8414"],
                      env={"MONGODB_URI": None})  # fmt: skip
    _no_traceback(r)
    assert r.exit_code == 2 and "is in use by another oretrace server" in r.output, r.output
    assert len(r.output.splitlines()) == 1  # one sentence, not 85 lines of log
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    info.write_text(json.dumps({"pid": int(gone.stdout), "uri": "x", "storage_path": "y"}))
    _require_free_data_dir(Settings(data_dir=data))  # a stale record (its process is gone) does not block
