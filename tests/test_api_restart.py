"""A real server process with its embedded database: stop, restart on the same
data directory, data still there; a SIGKILLed server takes its database down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import NETWORK, LedgerWorld, free_port

ROOT = Path(__file__).resolve().parent.parent


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class ServerProcess:
    def __init__(self, data_dir: Path, root_public_key: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
        self.log = open(data_dir.parent / f"server-{self.port}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "api.server", "--host", "127.0.0.1", "--port", str(self.port),
             "--data-dir", str(data_dir), "--root-public-key", root_public_key, "--network", NETWORK,
             "--log-level", "warning"],  # fmt: skip
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{self.port}"

        def healthy() -> bool:
            assert self.process.poll() is None, self.log_text()
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, 60, "the server to answer /healthz")

    def log_text(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return (self.data_dir.parent / f"server-{self.port}.log").read_text(errors="replace")

    @property
    def db_pid(self) -> int:
        return json.loads((self.data_dir / "embedded.json").read_text())["pid"]

    def gql(self, query: str, variables: dict | None = None) -> dict:
        response = httpx.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self.process.send_signal(sig)
        self.process.wait(timeout=30)
        self.log.close()


@pytest.fixture
def cleanup():
    servers: list[ServerProcess] = []
    yield servers
    for server in servers:
        if server.process.poll() is None:
            server.stop(signal.SIGKILL)


def test_restart_keeps_data_and_kill_takes_the_database_down(tmp_path: Path, root_key, cleanup) -> None:
    data_dir = tmp_path / "data"
    root_public = root_key.verify_key.encode().hex()
    world = LedgerWorld(root_key)
    register = "mutation($e: JSON!) { registerOrganization(envelope: $e) { eventId } }"
    lookup = '{ organization(id: "%s") { id name } }'

    first = ServerProcess(data_dir, root_public)
    cleanup.append(first)
    assert "errors" not in first.gql(register, {"e": world.register("persisted-org", "trader").to_json()})
    db_pid = first.db_pid
    assert alive(db_pid)
    first.stop(signal.SIGTERM)  # graceful: the lifespan stops the database
    # uvicorn re-raises the signal after its graceful shutdown, hence -SIGTERM
    assert first.process.returncode in (0, -signal.SIGTERM), first.log_text()
    assert not (data_dir / "embedded.json").exists(), "the lifespan shutdown did not run"
    wait_until(lambda: not alive(db_pid), 20, "the embedded database to stop")

    second = ServerProcess(data_dir, root_public)
    cleanup.append(second)
    assert second.gql(lookup % "persisted-org")["data"]["organization"] == {"id": "persisted-org", "name": "Persisted Org"}
    assert "errors" not in second.gql(register, {"e": world.register("second-org", "oem").to_json()})
    db_pid = second.db_pid
    second.stop(signal.SIGKILL)  # no lifespan shutdown: PR_SET_PDEATHSIG must stop the database
    wait_until(lambda: not alive(db_pid), 20, "the orphaned embedded database to die with its parent")

    third = ServerProcess(data_dir, root_public)
    cleanup.append(third)
    for org_id in ("persisted-org", "second-org"):
        assert third.gql(lookup % org_id)["data"]["organization"]["id"] == org_id
    third.stop()


def test_embedded_start_failure_shows_the_log(tmp_path: Path) -> None:
    from api.embedded import EmbeddedDatabase, EmbeddedDatabaseError

    blocker = EmbeddedDatabase(tmp_path / "x")
    blocker.start()
    try:  # same port as a running daemon: the second one exits, the error carries its log
        clash = EmbeddedDatabase(tmp_path / "y", port=blocker.port, startup_timeout=15)
        with pytest.raises(EmbeddedDatabaseError, match="Address already in use|exited"):
            clash.start()
    finally:
        blocker.stop()
