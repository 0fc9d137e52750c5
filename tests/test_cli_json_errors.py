"""A file that is not JSON is named once as such: the message of `loads_strict`
already says "not JSON: ..." (for bytes that are not UTF-8 too: RFC 8259 section 8.1), and the wallet, key-backup, registration-request
and network-settings readers used to prefix it again ("not JSON: not JSON: Expecting ...").
Each case runs without a server; it asserts exit 2, the file's kind in the
message, the parser's reason, no doubled prefix and no traceback.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sdk.cli import app

runner = CliRunner()

BAD_FILES = {
    "truncated": b'{"format": ',
    "unclosed": b'{"a": 1',
    "garbage": b"hello",
    "binary": b"\x00\xff\xfe junk",
}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ORETRACE_BACKUP_PASSPHRASE", "a passphrase for the test")
    for var in ("ORETRACE_CONFIG", "ORETRACE_NETWORK", "ORETRACE_ROOT_PUBLIC_KEY", "ORETRACE_API"):
        monkeypatch.delenv(var, raising=False)
    r = runner.invoke(app, ["network", "init", "--network", "json-errors", "--config", "net.json"])
    assert r.exit_code == 0, r.output
    return tmp_path


@pytest.mark.parametrize("content", BAD_FILES.values(), ids=BAD_FILES.keys())
@pytest.mark.parametrize(
    ("argv", "kind"),
    [
        (["lots", "--wallet", "bad.json", "--offline"], "is not a wallet file"),
        (["wallet", "restore", "--wallet", "new.json", "--from-backup", "bad.json"], "is not a key backup"),
        (["register", "bad.json", "--wallet", "operator.json", "--api", "http://127.0.0.1:9/graphql"], "is not a registration request"),
        (["--config", "bad.json", "keys", "--org", "x", "--role", "mine", "--country", "CD", "--name", "X", "--wallet", "new.json"], "is not a network settings file"),
    ],
)
def test_not_json_is_said_once(workdir, argv, kind, content):
    (workdir / "bad.json").write_bytes(content)
    r = runner.invoke(app, argv)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code == 2, r.output
    assert kind in r.output and "not JSON" in r.output, r.output
    assert "not JSON: not JSON" not in r.output and "not JSON (not JSON" not in r.output, r.output
    assert not (workdir / "new.json").exists()


def _set(member, value):
    def mutate(wallet):
        wallet[member] = value
        return wallet

    return mutate


def _drop(member):
    def mutate(wallet):
        del wallet[member]
        return wallet

    return mutate


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda wallet: [wallet], "a JSON object is expected"),
        (_set("lots", "oops"), "'lots' must be a JSON object"),
        (_drop("signing_key"), "'signing_key' is missing"),
    ],
    ids=["array", "lots-oops", "missing-key"],
)
def test_a_malformed_wallet_is_named_by_its_path(workdir, mutate, reason):
    """JSON that is not shaped like a wallet: the message names the file, as for non-JSON."""
    wallet = json.loads((workdir / "operator.json").read_text())
    (workdir / "bad.json").write_text(json.dumps(mutate(wallet)))
    (workdir / "bad.json").chmod(0o600)
    r = runner.invoke(app, ["lots", "--wallet", "bad.json", "--offline"])
    assert r.exit_code == 2, r.output
    text = " ".join(r.output.split())
    assert "bad.json" in text and "not a wallet file" in text and reason in text, text
