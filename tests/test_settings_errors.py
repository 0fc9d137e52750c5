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
#: the one setting that takes any text: a directory
FREE_TEXT = {"data_dir"}


def test_the_settings_table_lists_every_variable_and_no_other() -> None:
    """api/settings.py's docstring table is what an operator reads: it must list
    exactly the variables `from_env` reads (docs/operations.md has the same table)."""
    import re

    import api.settings

    documented = set(re.findall(r"^\| (MONGODB_URI|ORETRACE_\w+)\b", api.settings.__doc__, re.MULTILINE))
    assert documented == {var for _, var in EVERY_VARIABLE}


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


def test_a_bad_limits_override_names_its_field_not_the_variable_it_overrode() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"ORETRACE_ROOT_PUBLIC_KEY": KEY, "ORETRACE_MAX_ALIASES": "5"}, limits={"max_aliases": -1})
    assert "limits.max_aliases: " in str(caught.value) and "ORETRACE_MAX_ALIASES" not in str(caught.value)


@pytest.mark.parametrize(
    "witnesses",
    ["garbage", "oretrace-witness+00000000+AQ@http://w", "key@ftp://w", "@https://w"],
)
def test_a_bad_witness_list_is_refused_with_the_other_settings(witnesses) -> None:
    """Before anything starts (the log would parse it only once the database runs)."""
    with pytest.raises(SettingsError, match=r"ORETRACE_WITNESSES \(witnesses\): \S"):
        Settings.from_env({"ORETRACE_ROOT_PUBLIC_KEY": KEY, "ORETRACE_WITNESSES": witnesses})


def test_a_bad_flag_names_its_field_not_the_variable_it_overrode() -> None:
    """`--network` (a keyword override) wins over ORETRACE_NETWORK: a bad flag is the
    flag's fault, so the message must not send the operator to a variable that is fine."""
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"ORETRACE_ROOT_PUBLIC_KEY": KEY, "ORETRACE_NETWORK": "fine"}, network="not fine!")
    assert "network: " in str(caught.value) and "ORETRACE_NETWORK" not in str(caught.value)


@pytest.mark.parametrize(
    "uri",
    [
        "localhost:27017", "not valid", "127.0.0.1", "http://db:27017", "mongodb://", "MONGODB://db",
        "mongodb:///", "mongodb://:@", "mongodb://user:p@ss@db/", "mongodb://db:99999", "mongodb://db:27017\n",
        " mongodb://db", "mongodb+srv://db:27017", "mongodb+srv://a,b", "mongodb+srv://", "mongodb+srv://db /x",
    ],
)  # fmt: skip
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
        "mongodb://[::1]:27017,db2.example.net/?replicaSet=rs0",
        "mongodb://us%40er:p%40ss@db/?authSource=admin&w=majority",
        "mongodb://%2Ftmp%2Fmongodb-27017.sock",
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
        ({"ORETRACE_WITNESSES": "garbage"}, "ORETRACE_WITNESSES (witnesses)"),
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


@pytest.mark.parametrize("command", [["-m", "api.server"], ["-m", "sdk.cli", "serve", "--demo"]])
def test_a_bad_log_level_is_a_usage_error(command, tmp_path) -> None:
    environment = {**os.environ, "ORETRACE_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run(
        [sys.executable, *command, "--port", "9721", "--log-level", "bogus"],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "log-level" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(("value", "refused"), [("", False), ("arkwork", True), ("py_ecc", False)])
def test_the_curve_backend_variable(value, refused) -> None:
    """Empty is unset, as for every setting; an unknown name is refused naming the variable."""
    done = subprocess.run(
        [sys.executable, "-c", "import crypto.group as g; print(g.backend().name)"],
        cwd=ROOT, env={**os.environ, "ORETRACE_CURVE_BACKEND": value}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if refused:
        assert done.returncode != 0 and "ORETRACE_CURVE_BACKEND: unknown curve backend 'arkwork'" in done.stderr
    else:
        assert done.returncode == 0 and done.stdout.strip() == (value or "arkworks")
