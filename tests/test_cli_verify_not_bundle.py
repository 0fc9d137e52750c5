"""`verify` given a JSON object that is not a disclosure bundle (no "format", no "events":
a CLI --json result, a wallet, a settings file) says so, exit 2, with or without a root key.

Before: with a root key it printed "format is None ... NOT PROVEN" (exit 1, as if a
bundle had been altered); without one, "no trust anchor for network None".
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sdk.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    "document",
    [
        {"event_id": "evt_x", "type": "issue", "lot_ids": ["lot_a"], "grams": 5},
        {"network": "n", "root_public_key": "ab" * 32},
        {},
    ],
    ids=["issue-json", "settings-like", "empty-object"],
)
@pytest.mark.parametrize("root_key", [None, "ab" * 32])
def test_json_that_is_not_a_bundle_is_named(tmp_path, monkeypatch, document, root_key):
    monkeypatch.delenv("ORETRACE_ROOT_PUBLIC_KEY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    path = tmp_path / "thing.json"
    path.write_text(json.dumps(document))
    argv = ["verify", str(path), *(["--root-key", root_key] if root_key else [])]
    for extra in ([], ["--json"]):
        r = runner.invoke(app, [*argv, *extra])
        assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
        assert r.exit_code == 2, r.output
        text = " ".join(r.output.split())
        assert "not a disclosure bundle" in text and "None" not in text, text
