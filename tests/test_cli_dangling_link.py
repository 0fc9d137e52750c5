"""A wallet path that is a symbolic link to nothing is refused with what it is (a link, and
its target), not "exists; ... its keys would be lost": there is no file and no key there.
Nothing is created, neither the link's target nor a new file; the link stays as it was."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from sdk.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    "argv",
    [
        ["keys", "--org", "dd", "--role", "mine", "--country", "CD", "--name", "D", "--network", "n1", "--wallet", "link.json"],
        ["network", "init", "--network", "n1", "--wallet", "link.json", "--config", "net.json"],
        ["wallet", "restore", "--wallet", "link.json", "--from-backup", "backup.json"],
    ],
    ids=["keys", "network-init", "wallet-restore"],
)
@pytest.mark.parametrize("target", ["gone.json", "missing-dir/w.json"])
def test_dangling_wallet_link_is_named(tmp_path, monkeypatch, argv, target):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ORETRACE_BACKUP_PASSPHRASE", "a passphrase for the test")
    (tmp_path / "backup.json").write_text("{}")
    os.symlink(tmp_path / target, tmp_path / "link.json")
    before = sorted(p.name for p in tmp_path.iterdir())
    r = runner.invoke(app, argv)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code == 2, r.output
    text = " ".join(r.output.split())
    assert "symbolic link" in text and target in text and "keys would be lost" not in text, text
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert os.readlink(tmp_path / "link.json") == str(tmp_path / target)
