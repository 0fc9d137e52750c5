"""`oretrace verify --json` answers every outcome with a JSON document on stdout.

Exit 0/1 print the verification report; the outcomes where nothing could be
verified (2: unreadable input, no trust anchor or a bad option; 3: the only key
found lies next to the bundle) print `{"ok": false, "verified": false,
"exit_code", "error", "bundle"}`, with the same one-line reason on stderr. No
server is needed: nothing here reaches the proofs.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sdk.cli import EXIT_BESIDE_KEY, app
from sdk.trust_store import BESIDE_KEY_NAME

runner = CliRunner()
KEY = "ab" * 32
BUNDLE = {"format": "oretrace-bundle/v2", "network": "json-net", "claim_id": "clm_x", "events": []}


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.delenv("ORETRACE_ROOT_PUBLIC_KEY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path


def write(path, content: bytes | dict) -> str:
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return str(path)


CASES = {
    "key-beside-only": (lambda d: [write(d / "b.json", BUNDLE)], EXIT_BESIDE_KEY, BESIDE_KEY_NAME),
    "no-anchor": (lambda d: [write(d / "b.json", BUNDLE)], 2, "oretrace trust add"),
    "not-json": (lambda d: [write(d / "b.json", b"{\"format\": ")], 2, "not JSON"),
    "nested-too-deep": (lambda d: [write(d / "b.json", b"[" * 5000 + b"]" * 5000), "--root-key", KEY], 2, "nest"),
    "missing-file": (lambda d: [str(d / "absent.json"), "--root-key", KEY], 2, "absent.json"),
    "bad-witness": (lambda d: [write(d / "b.json", BUNDLE), "--root-key", KEY, "--witness", "nonsense"], 2, "--witness"),
    "too-many-cosignatures": (lambda d: [write(d / "b.json", BUNDLE), "--root-key", KEY, "--min-cosignatures", "2"], 2,
                              "--min-cosignatures"),
}


@pytest.mark.parametrize("case", CASES)
def test_every_refusal_prints_a_json_document(isolated, case):
    argv, code, reason = CASES[case]
    args = argv(isolated)
    if case == "key-beside-only":
        (isolated / BESIDE_KEY_NAME).write_text(KEY)
    r = runner.invoke(app, ["verify", *args, "--json"])
    assert r.exit_code == code, (r.stdout, r.stderr)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    document = json.loads(r.stdout)
    assert document["ok"] is False and document["verified"] is False and document["exit_code"] == code
    assert reason in document["error"] and reason in " ".join(r.stderr.split())
    # without --json: the same exit code, nothing on stdout
    plain = runner.invoke(app, ["verify", *args])
    assert plain.exit_code == code and plain.stdout == ""
