"""A bad setting is refused before anything starts, in one line that names what
the operator set: the environment variable (and the field), or the field of a
command-line flag; `python -m api.server` exits 2 with that line, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from api.settings import _ENV_LIMITS, _ENV_SETTINGS, Settings, SettingsError

ROOT = Path(__file__).resolve().parent.parent
KEY = "ab" * 32

#: every setting read from the environment, as (field as pydantic names it, variable)
EVERY_VARIABLE = sorted(
    [(field, var) for field, var in _ENV_SETTINGS.items()]
    + [(f"limits.{field}", var) for field, var in _ENV_LIMITS.items()]
)
#: settings that take any text here: a directory, and the witness list (parsed, and
#: refused naming ORETRACE_WITNESSES, when the log opens: tests/test_log_witness.py)
FREE_TEXT = {"data_dir", "witnesses"}


@pytest.mark.parametrize(("field", "var"), EVERY_VARIABLE)
def test_a_bad_value_names_its_environment_variable(field, var) -> None:
    env = {"ORETRACE_ROOT_PUBLIC_KEY": KEY, var: "not valid -1"}
    if field in FREE_TEXT:
        assert Settings.from_env(env)
        return
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert f"{var} ({field}): " in str(caught.value)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ORETRACE_MSM_THREADS": "0"}, ["ORETRACE_MSM_THREADS (msm_threads)"]),
        ({"ORETRACE_VERIFY_WORKERS": "10000"}, ["ORETRACE_VERIFY_WORKERS (verify_workers)"]),
        ({"ORETRACE_MAX_ALIASES": "-1"}, ["ORETRACE_MAX_ALIASES (limits.max_aliases)"]),
        (  # every bad variable is named, not only the first
            {"ORETRACE_VERIFY_MODE": "fork", "ORETRACE_MAX_PAGE_SIZE": "lots"},
            ["ORETRACE_VERIFY_MODE (verify_mode)", "ORETRACE_MAX_PAGE_SIZE (limits.max_page_size)"],
        ),
    ],
)
def test_out_of_range_values_name_their_variables(env, named) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"ORETRACE_ROOT_PUBLIC_KEY": KEY, **env})
    for name in named:
        assert name in str(caught.value)


def test_a_bad_flag_names_its_field_not_the_variable_it_overrode() -> None:
    """`--network` (a keyword override) wins over ORETRACE_NETWORK: a bad flag is the
    flag's fault, so the message must not send the operator to a variable that is fine."""
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"ORETRACE_ROOT_PUBLIC_KEY": KEY, "ORETRACE_NETWORK": "fine"}, network="not fine!")
    assert "network: " in str(caught.value) and "ORETRACE_NETWORK" not in str(caught.value)


@pytest.mark.parametrize(
    "uri",
    ["localhost:27017", "not valid", "127.0.0.1", "http://db:27017", "mongodb://", "mongodb://db /x", "MONGODB://db"],
)
def test_mongodb_uri_must_be_a_connection_string(uri) -> None:
    """pymongo takes text without a scheme for a host name and fails only at the first
    query, after its server-selection timeout: refused at once instead."""
    with pytest.raises(SettingsError, match=r"MONGODB_URI \(mongodb_uri\): .*connection string"):
        Settings.from_env({"ORETRACE_ROOT_PUBLIC_KEY": KEY, "MONGODB_URI": uri})
    with pytest.raises(SettingsError, match=r"mongodb_uri: .*connection string"):
        Settings.from_env({"ORETRACE_ROOT_PUBLIC_KEY": KEY}, mongodb_uri=uri)


@pytest.mark.parametrize(
    "uri",
    [
        "mongodb://127.0.0.1:27017",
        "mongodb://user:secret@a.example.net:27017,b.example.net:27017/oretrace?replicaSet=rs0",
        "mongodb+srv://cluster0.example.net/?retryWrites=true",
    ],
)
def test_connection_strings_are_accepted(uri) -> None:
    assert Settings.from_env({"ORETRACE_ROOT_PUBLIC_KEY": KEY, "MONGODB_URI": uri}).mongodb_uri == uri


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"ORETRACE_MSM_THREADS": "0"}, "ORETRACE_MSM_THREADS (msm_threads)"),
        ({"MONGODB_URI": "localhost:27017"}, "MONGODB_URI (mongodb_uri)"),
        ({"ORETRACE_ROOT_PUBLIC_KEY": ""}, "ORETRACE_ROOT_PUBLIC_KEY is not set"),
    ],
)
def test_the_server_refuses_a_bad_setting_in_one_line(env, expected, tmp_path) -> None:
    """Before any database starts or any port is bound: exit status 2 (as for a bad
    flag), one line on stderr, no traceback."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ORETRACE_") and k != "MONGODB_URI"}
    environment.update({"ORETRACE_ROOT_PUBLIC_KEY": KEY, "ORETRACE_DATA_DIR": str(tmp_path), **env})
    done = subprocess.run(
        [sys.executable, "-m", "api.server", "--port", "0"],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and done.stdout == ""
    assert not (tmp_path / "db").exists()  # nothing was started
