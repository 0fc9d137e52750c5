"""`--api` values no request could be sent to are usage errors (exit 2), named, before anything is read or signed.

Before: a URL with a control character, a space, a bad port or a broken IPv6
host got past the "http(s)://" check and failed inside httpx as "cannot reach"
(exit 1), quoting the raw value.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from sdk.cli import app
from sdk.wallet import Wallet

runner = CliRunner()


@pytest.mark.parametrize(
    ("api", "says"),
    [
        ("http://127.0.0.1:9/\x1b[31mred", "control characters"),
        ("http://127.0.0.1:9/\u202egraphql", "control characters"),
        ("http://a b/graphql", "spaces"),
        ("http://127.0.0.1:99999/graphql", "port 99999"),
        ("http://[::1/graphql", "not a valid URL"),
        ("ftp://127.0.0.1/graphql", "not an http(s) URL"),
    ],
)
def test_unusable_api_url_is_a_usage_error(tmp_path, api, says):
    w = Wallet.generate("url-org", "net", root_public_key="ab" * 32, name="URL Org")
    w.save(tmp_path / "w.json")
    before = (tmp_path / "w.json").read_bytes()
    r = runner.invoke(app, ["lots", "--wallet", str(tmp_path / "w.json"), "--api", api])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code == 2, r.output
    assert says in r.output and "\x1b" not in r.output and "\u202e" not in r.output, r.output
    assert (tmp_path / "w.json").read_bytes() == before
