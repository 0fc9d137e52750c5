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


#: Usage errors click finds before `verify` runs (bad option value, unknown option, no argument).
USAGE_ERRORS = {
    "negative-min-cosignatures": (["--min-cosignatures", "-1"], "--min-cosignatures"),
    "word-min-cosignatures": (["--min-cosignatures", "two"], "--min-cosignatures"),
    "unknown-option": (["--bogus"], "--bogus"),
    "no-bundle": (None, "bundle"),
}


@pytest.mark.parametrize("case", USAGE_ERRORS)
def test_a_usage_error_with_json_also_prints_a_json_document(isolated, case):
    extra, reason = USAGE_ERRORS[case]
    args = [] if extra is None else [write(isolated / "b.json", BUNDLE), "--root-key", KEY, *extra]
    r = runner.invoke(app, ["verify", *args, "--json"])
    assert r.exit_code == 2 and "Traceback" not in r.stdout + r.stderr, (r.stdout, r.stderr)
    document = json.loads(r.stdout)
    assert document["ok"] is False and document["verified"] is False and document["exit_code"] == 2
    assert reason in document["error"] and "Usage:" in r.stderr
    assert document["bundle"] is None  # the command line was not understood
    # without --json: click's usage message only
    plain = runner.invoke(app, ["verify", *args])
    assert plain.exit_code == 2 and plain.stdout == ""


def test_a_fifo_named_root_key_hex_beside_the_bundle_is_not_read(isolated):
    """A bundle unpacked from an archive can come with a `root-key.hex` that is a FIFO (or a link
    to a device): verify must not block on it (nor read a device without end), only name regular
    files. Run as a process so that a hang fails the test instead of stalling the suite."""
    import os
    import subprocess
    import sys

    path = write(isolated / "b.json", BUNDLE)
    os.mkfifo(isolated / BESIDE_KEY_NAME)
    env = {**os.environ, "XDG_CONFIG_HOME": str(isolated / "config")}
    env.pop("ORETRACE_ROOT_PUBLIC_KEY", None)
    try:
        r = subprocess.run([sys.executable, "-m", "sdk.cli", "verify", path, "--root-key", KEY, "--json"],
                           capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("verify blocked on a FIFO named root-key.hex next to the bundle")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "ignored_key_file" not in json.loads(r.stdout)


def test_a_bundle_read_from_a_pipe_is_bounded_like_a_file(isolated, monkeypatch):
    """`oretrace verify <(curl ...)` reads a pipe, whose size stat() cannot tell: the read itself
    stops at MAX_BUNDLE_BYTES (a hostile stream must not fill memory)."""
    import os
    import threading

    import sdk.report

    monkeypatch.setattr(sdk.report, "MAX_BUNDLE_BYTES", 1000)
    fifo = isolated / "pipe.json"
    os.mkfifo(fifo)
    body = json.dumps({**BUNDLE, "padding": "a" * 5000}).encode()

    def feed() -> None:
        try:
            with open(fifo, "wb") as pipe:
                pipe.write(body)
        except BrokenPipeError:  # the reader stopped at the limit
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    r = runner.invoke(app, ["verify", str(fifo), "--root-key", KEY, "--json"])
    writer.join()
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert "larger than 1000 bytes" in json.loads(r.stdout)["error"]
