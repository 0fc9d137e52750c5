"""The embedded database: SecantusDB (`secantusd-py`) as a CHILD PROCESS on loopback.

Why a child process and not in-process: the daemon is pure Python and would
share the API's GIL (every query would compete with proof verification), and
SecantusDB is GPL-2.0, so it stays an optional, separately running component
(the `embedded` extra). The API only speaks the MongoDB wire protocol to it.

Lifecycle:

* `start()` / `astart()` picks a free loopback port (unless one is given),
  launches `secantusd-py --host 127.0.0.1 --port P --storage-path DATA/db
  --log-level WARNING --sync-on-commit --config DATA/secantusd.toml` (an explicit, empty config
  file turns off the daemon's auto-discovery of ./secantusd.toml and
  ~/.secantus/), and waits until it answers `serverStatus` with ITS pid (so
  another server already holding the port is never mistaken for ours). On
  timeout, or if the daemon exits early (e.g. the port is taken), `EmbeddedDatabaseError` carries the tail of its log
  (DATA/secantusd.log).
* `stop()` / `astop()`: SIGTERM (the daemon closes WiredTiger cleanly), wait,
  then SIGKILL. The wait matters: the daemon's SIGTERM handler can deadlock
  (seen here with secantusdb 0.7.0b3: the handler calls Event.set() while the
  interrupted main thread holds the same Event's lock inside Event.wait()).
* Dying with the parent: on Linux the child is started with
  `prctl(PR_SET_PDEATHSIG, SIGKILL)` (`supervision.children.die_with_parent`) in `preexec_fn`, so even a SIGKILLed API
  process takes its database down with it (no orphan holding the port and the
  WiredTiger lock). SIGKILL, not SIGTERM, because nobody is left to escalate
  after the deadlock above; it loses nothing committed, since the daemon runs
  WiredTiger with its journal on (`log=(enabled=true)`) and recovers from it
  at the next start (the restart test kills it this way). Caveat of PDEATHSIG: it fires when the *thread* that
  forked the child exits, so the daemon must be spawned from a long-lived
  thread (the main thread / event-loop thread) - never from a worker-pool
  thread; `astart()` spawns in the calling (event-loop) thread and only waits
  asynchronously. On other platforms this safety net is absent and `stop()`
  must be called (the app's lifespan does).
* The child runs in its own session (process group), so a Ctrl-C in a
  terminal reaches the API first, which then stops the database in order.
* The data directory persists: restarting on the same directory keeps data.
  `restart()` / `arestart()` start a dead child again on the same directory
  AND the same port, so a connected client (pymongo rediscovers the server
  within its heartbeat) needs no new URI (api.app.Runtime supervises it).
* Credentials (`auth=True`, the default): the daemon runs with `--auth`
  (SCRAM-SHA-256 for every command but the handshake). At the first start of
  a data directory without DATA/credentials.json (new, or from before
  credentials existed) the daemon is started once WITHOUT `--auth`, the user
  `oretrace` (role `root`) is created, or its password reset when it exists,
  with a fresh random password (`secrets.token_urlsafe(32)`, 256 bits), the
  password is stored in DATA/credentials.json (0600, in the 0700 directory),
  and the daemon is restarted with `--auth`. SecantusDB has no "localhost
  exception", hence that one unauthenticated start (on a fresh random
  loopback port, for about a second, before the API serves anything).

The daemon advertises itself as a single-node replica set, so multi-document
transactions work.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote_plus, urlsplit

from pymongo import AsyncMongoClient, MongoClient
from pymongo.errors import PyMongoError

from supervision.children import die_with_parent

LOG_NAME = "secantusd.log"
CONFIG_NAME = "secantusd.toml"
CREDENTIALS_NAME = "credentials.json"
#: the one database user the API connects as (role root on the daemon: it owns
#: the data, runs transactions, killSessions and serverStatus)
DB_USER = "oretrace"


class EmbeddedDatabaseError(RuntimeError):
    """The embedded database could not be started (message includes its log tail)."""


def _credentialed_uri(host: str, port: int, password: str) -> str:
    return (
        f"mongodb://{quote_plus(DB_USER)}:{quote_plus(password)}@{host}:{port}"
        "/?directConnection=true&authSource=admin&authMechanism=SCRAM-SHA-256"
    )


def _read_password(credentials_path: Path) -> str | None:
    """The password stored in `credentials_path`, or None when it does not exist yet."""
    try:
        password = json.loads(credentials_path.read_text())["password"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EmbeddedDatabaseError(
            f"{credentials_path} is unreadable ({exc}); restore it from a backup, or delete it "
            "to provision a new password at the next start"
        ) from exc
    if not isinstance(password, str) or not password:
        raise EmbeddedDatabaseError(f"{credentials_path} holds no password")
    return password


def local_client_uri(data_dir: str | os.PathLike) -> str:
    """The URI, with the stored login, of the embedded database a running server started
    in `data_dir` (its embedded.json and credentials.json): for local tools such as
    backups and benchmarks. EmbeddedDatabaseError if either file is missing or unreadable."""
    data_dir = Path(data_dir)
    try:
        public = urlsplit(json.loads((data_dir / "embedded.json").read_text())["uri"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EmbeddedDatabaseError(f"no running embedded database in {data_dir} ({exc})") from exc
    password = _read_password(data_dir / CREDENTIALS_NAME)
    if password is None or public.hostname is None or public.port is None:
        raise EmbeddedDatabaseError(f"{data_dir} holds no login for its embedded database")
    return _credentialed_uri(public.hostname, public.port, password)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _daemon_executable() -> str:
    """`secantusd-py` next to this interpreter (the venv), else on PATH."""
    candidate = Path(sys.executable).with_name("secantusd-py")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("secantusd-py")
    if not found:
        raise EmbeddedDatabaseError(
            "secantusd-py not found: install the embedded extra (pip install 'oretrace[embedded]') "
            "or set MONGODB_URI to a MongoDB replica set"
        )
    return found


class EmbeddedDatabase:
    """One `secantusd-py` child process serving `storage_path` on loopback."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        log_level: str = "WARNING",
        startup_timeout: float = 30.0,
        extra_args: list[str] | None = None,
        auth: bool = True,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.storage_path = self.data_dir / "db"
        self.log_path = self.data_dir / LOG_NAME
        self.host = host
        self._requested_port = port
        self.port: int | None = None
        self.log_level = log_level
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args or [])
        self.process: subprocess.Popen[bytes] | None = None
        self.auth = auth
        self.credentials_path = self.data_dir / CREDENTIALS_NAME
        #: the password of DB_USER once provisioned (None: no --auth)
        self._password: str | None = None

    # ------------------------------------------------------------------ info

    @property
    def uri(self) -> str:
        """The connection URI, with the credentials when the daemon runs with --auth."""
        if self._password is None:
            return self.public_uri
        return _credentialed_uri(self.host, self.port, self._password)

    @property
    def public_uri(self) -> str:
        """The URI without credentials (for logs and embedded.json)."""
        if self.port is None:
            raise EmbeddedDatabaseError("the embedded database is not started")
        return f"mongodb://{self.host}:{self.port}/?directConnection=true"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"

    # ------------------------------------------------------------------ start

    def _read_password(self) -> str | None:
        """The stored password, or None when this directory is not provisioned yet."""
        return _read_password(self.credentials_path)

    @staticmethod
    def _provisioning(users_info: dict) -> tuple[str, dict]:
        """(a new random password, the admin command creating DB_USER with it, or
        resetting its password when `usersInfo` says the user exists)."""
        password = secrets.token_urlsafe(32)
        if users_info.get("users"):
            return password, {"updateUser": DB_USER, "pwd": password}
        return password, {"createUser": DB_USER, "pwd": password, "roles": ["root"]}

    def _store_password(self, password: str) -> None:
        """Write DATA/credentials.json owner-only (0600), atomically."""
        tmp = self.credentials_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps({"user": DB_USER, "password": password}) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.credentials_path)

    def _provision(self) -> None:
        """On the daemon started without --auth: create the user, store its password."""
        with MongoClient(self.public_uri, serverSelectionTimeoutMS=5000) as client:
            password, command = self._provisioning(client.admin.command("usersInfo", DB_USER))
            client.admin.command(command)
            client.admin.command("fsync")  # the user is on disk before its password is stored
        self._store_password(password)

    async def _aprovision(self) -> None:
        client: AsyncMongoClient = AsyncMongoClient(self.public_uri, serverSelectionTimeoutMS=5000)
        try:
            password, command = self._provisioning(await client.admin.command("usersInfo", DB_USER))
            await client.admin.command(command)
            await client.admin.command("fsync")  # the user is on disk before its password is stored
        finally:
            await client.close()
        self._store_password(password)

    def _spawn(self, *, auth: bool) -> None:
        if self.running():
            raise EmbeddedDatabaseError("the embedded database is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # the data files, log and config are the ledger: readable by this user only
        os.chmod(self.data_dir, 0o700)
        config = self.data_dir / CONFIG_NAME
        if not config.exists():
            config.write_text("# oretrace: settings come from the command line\n")
        self.port = self._requested_port or free_port(self.host)
        argv = [
            _daemon_executable(),
            "--config", str(config),
            "--host", self.host,
            "--port", str(self.port),
            "--storage-path", str(self.storage_path),
            "--log-level", self.log_level,
            # An acknowledged publication must survive a crash: fsync the
            # journal at every commit (the daemon's default buffers it).
            "--sync-on-commit",
            *(["--auth"] if auth else []),
            *self.extra_args,
        ]  # fmt: skip
        parent = os.getpid()
        with open(self.log_path, "ab") as log:
            log.write(f"\n--- oretrace: starting {' '.join(argv)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=lambda: die_with_parent(parent),  # noqa: PLW1509 - documented above
                close_fds=True,
            )

    def _failure(self, why: str) -> EmbeddedDatabaseError:
        return EmbeddedDatabaseError(
            f"embedded database ({self.storage_path}) {why}; last lines of {self.log_path}:\n{self.log_tail()}"
        )

    def _is_ours(self, status: dict) -> bool:
        """The server answering on the port is our child, not another one holding the port."""
        pid = status.get("pid")
        return pid is None or int(pid) == self.process.pid

    def _exited_early(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def start(self) -> str:
        """Start and wait until it answers (blocking); provision credentials first
        when the directory has none (module docstring). Returns the connection URI."""
        if self.auth and self._read_password() is None:
            self._start_once(auth=False)
            try:
                self._provision()
            finally:
                self.stop()
        return self._start_once(auth=self.auth)

    async def astart(self) -> str:
        """`start()` from the event-loop thread (see PDEATHSIG caveat), waiting without blocking."""
        if self.auth and self._read_password() is None:
            await self._astart_once(auth=False)
            try:
                await self._aprovision()
            finally:
                await self.astop()
        return await self._astart_once(auth=self.auth)

    def restart(self) -> str:
        """Start again after the child died: same data directory, same port."""
        self._requested_port = self.port
        return self.start()

    async def arestart(self) -> str:
        self._requested_port = self.port
        return await self.astart()

    def _start_once(self, *, auth: bool) -> str:
        self._password = self._read_password() if auth else None
        for attempt in range(3):
            self._spawn(auth=auth)
            deadline = time.monotonic() + self.startup_timeout
            client = MongoClient(self.uri, serverSelectionTimeoutMS=250, connectTimeoutMS=250)
            try:
                while time.monotonic() < deadline:
                    if self._exited_early():
                        break
                    try:
                        if self._is_ours(client.admin.command("serverStatus")):
                            return self.uri
                    except PyMongoError:
                        pass
                    time.sleep(0.05)
            finally:
                client.close()
            if not self._exited_early():
                self.stop()
                raise self._failure(f"did not answer within {self.startup_timeout:.0f} s")
            if self._requested_port is not None or attempt == 2:
                raise self._failure(f"exited with code {self.process.returncode}")
            # a free port found by bind(0) can be taken before the daemon binds it: retry
        raise self._failure("could not start")  # pragma: no cover

    async def _astart_once(self, *, auth: bool) -> str:
        self._password = self._read_password() if auth else None
        for attempt in range(3):
            self._spawn(auth=auth)
            deadline = time.monotonic() + self.startup_timeout
            client: AsyncMongoClient = AsyncMongoClient(
                self.uri, serverSelectionTimeoutMS=250, connectTimeoutMS=250
            )
            try:
                while time.monotonic() < deadline:
                    if self._exited_early():
                        break
                    try:
                        if self._is_ours(await client.admin.command("serverStatus")):
                            return self.uri
                    except PyMongoError:
                        pass
                    await asyncio.sleep(0.05)
            finally:
                await client.close()
            if not self._exited_early():
                await self.astop()
                raise self._failure(f"did not answer within {self.startup_timeout:.0f} s")
            if self._requested_port is not None or attempt == 2:
                raise self._failure(f"exited with code {self.process.returncode}")
        raise self._failure("could not start")  # pragma: no cover

    # ------------------------------------------------------------------ stop

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, wait up to `timeout`, then SIGKILL. Idempotent."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    async def astop(self, timeout: float = 15.0) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if process.poll() is None:
            process.kill()
            while process.poll() is None:
                await asyncio.sleep(0.05)

    def __enter__(self) -> EmbeddedDatabase:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
