"""`ORETRACE_GIL_SWITCH_INTERVAL_SECONDS`: `api.server.serve` sets the server
process's `sys.setswitchinterval` from it (default 1 ms) before uvicorn runs;
out-of-range values stop the server at startup with a SettingsError. The
latency it buys is measured by bench/abuse.py, not here."""

from __future__ import annotations

import sys

import pytest
import uvicorn

from api.server import serve
from api.settings import Settings, SettingsError

ROOT_KEY = "ab" * 32


@pytest.fixture
def uvicorn_runs(monkeypatch) -> list[float]:
    """Stand-in for uvicorn.Server.run: records the switch interval it starts with."""
    seen: list[float] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: seen.append(sys.getswitchinterval()))
    before = sys.getswitchinterval()
    yield seen
    sys.setswitchinterval(before)


@pytest.mark.parametrize("value, expected", [(None, 0.001), ("0.0005", 0.0005), ("0.005", 0.005), ("0.02", 0.02)])
def test_serve_sets_the_switch_interval_before_uvicorn_runs(uvicorn_runs, monkeypatch, tmp_path, value, expected):
    monkeypatch.delenv("ORETRACE_GIL_SWITCH_INTERVAL_SECONDS", raising=False)
    if value is not None:
        monkeypatch.setenv("ORETRACE_GIL_SWITCH_INTERVAL_SECONDS", value)
    sys.setswitchinterval(0.05)  # neither the default nor any value above
    serve("127.0.0.1", 9399, tmp_path, root_public_key=ROOT_KEY, log_level="warning")
    assert uvicorn_runs == [pytest.approx(expected)]


@pytest.mark.parametrize("value", ["0", "-0.001", "0.00001", "1", "fast"])
def test_an_out_of_range_switch_interval_is_refused_at_startup(value):
    with pytest.raises(SettingsError, match="gil_switch_interval_seconds"):
        Settings.from_env({"ORETRACE_GIL_SWITCH_INTERVAL_SECONDS": value, "ORETRACE_ROOT_PUBLIC_KEY": ROOT_KEY})
