"""The heavy-query processes (api.heavy_queries, api.query_process): the same HTTP
answers as in-loop execution for heavy query shapes, partial errors and database
faults; a child that dies, exits or hangs gives a typed, retryable answer and is
replaced; an unexpected exception is masked as on the main path; no secret in the
child's argv or environment; a SIGKILLed server leaves no child. No assertion is timed."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from api.heavy_queries import HeavyQueryProcesses
from api.query_process import QueryExecutor, Request
from api.settings import Limits, Settings
from api.store import Store
from conftest import NETWORK, build_chain, free_port
from test_api_heavy_queries import _client, process_exists, stopped_children, wait_for

GR = "application/graphql-response+json"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
async def chain(world, publish):
    return await build_chain(world, publish, suffix="-hp")


def _settings(settings: Settings, **limits) -> Settings:
    return settings.model_copy(update={"limits": Limits(**limits)})


@pytest.fixture(scope="module")
async def heavy(api_settings: Settings, store: Store):
    """The default heavy-query cost (1,000): only the costly shapes go to a process."""
    async for pair in _client(api_settings, store):
        yield pair


@pytest.fixture(scope="module")
async def in_loop(api_settings: Settings, store: Store):
    """No operation heavy: everything executes on the event loop."""
    async for pair in _client(_settings(api_settings, heavy_query_cost=10**9), store):
        yield pair


def heavy_shapes(chain) -> list[tuple[str, dict | None]]:
    """Queries costing at least the default heavy cost (1,000), with good and bad parts."""
    refined, issued = chain.refined, chain.issued
    good = [{"__typename": "Lot", "id": i} for i in (*refined, *issued)]
    bad = [{"__typename": "Lot"}, {"__typename": "Nope", "id": "x"}, {"__typename": "Lot", "id": "\u00e9" * 3}, 7]
    lot_fields = "... on Lot { id owner { id name } parents { id } }"
    return [
        ("{ lots(first: 100) { edges { node { id parents { id owner { id } } } } } }", None),
        ("query($r: [_Any!]!) { _entities(representations: $r) { %s ... on Site { id } } }" % lot_fields,
         {"r": (good + bad) * 10}),  # 80 representations, half malformed: partial errors, in order
        ("query($l: ID!) { provenance(lotId: $l) { nodes { id owner { id } } edges { parent child } truncated } }",
         {"l": refined[0]}),
        ("query($s: ID!) { site(id: $s) { id attestations(first: 100) { id site { id attestations(first: 10) { id } } } } }",
         {"s": chain.site_id}),
        ('{ lots(first: 100, after: "not-a-cursor") { edges { node { id parents { id } } } } }', None),  # BAD_USER_INPUT
        ('query($o: ID) { lots(first: 100, owner: $o) { edges { node { id parents { id } } } } } ', {"o": "nobody"}),
        ('query($o: ID) { lots(first: 100, owner: $o) { edges { node { id claims(first: 10) { id } } } } }', {"o": "trader-hp"}),
    ]  # fmt: skip


async def both_ways(heavy, in_loop, query: str, variables: dict | None, accept: str | None):
    headers = {"content-type": "application/json", **({"accept": accept} if accept else {})}
    body = json.dumps({"query": query, **({"variables": variables} if variables is not None else {})})
    (h_client, h_app), (l_client, _) = heavy, in_loop
    processes = h_app.state.runtime.query_worker
    executed = processes.executions
    on_process = await h_client.post("/graphql", content=body, headers=headers)
    on_loop = await l_client.post("/graphql", content=body, headers=headers)
    return on_process, on_loop, processes.executions - executed


def same_answer(a: httpx.Response, b: httpx.Response) -> None:
    assert a.status_code == b.status_code, (a.text, b.text)
    assert a.headers.get("content-type") == b.headers.get("content-type")
    assert a.headers.get("retry-after") == b.headers.get("retry-after")
    assert a.content == b.content, (a.text, b.text)


@pytest.mark.parametrize("index", range(7))
@pytest.mark.parametrize("accept", [None, GR])
async def test_heavy_shapes_answer_as_in_the_loop(chain, heavy, in_loop, index, accept):
    query, variables = heavy_shapes(chain)[index]
    on_process, on_loop, executed = await both_ways(heavy, in_loop, query, variables, accept)
    same_answer(on_process, on_loop)
    assert executed == 1  # it did execute in a process
    body = on_process.json()
    if index == 1:  # the malformed representations are typed errors, the others resolved
        codes = {e["extensions"]["code"] for e in body["errors"]}
        assert codes == {"BAD_USER_INPUT"} and len(body["errors"]) == 40
        assert sum(1 for e in body["data"]["_entities"] if e is not None) == 40
    if index == 4:
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


# --------------------------------------------------------------------------- a failing child


HEAVY = "{ lots(first: 50) { edges { node { id owner { id } } } } }"


async def _fail_child(app, how: str) -> None:
    """Make the app's one heavy-query process fail while it holds a query: `killed`
    (SIGKILL), `terminated` (SIGTERM: it exits), `hung` (stays stopped past its limit)."""
    processes = app.state.runtime.query_worker
    [pid] = processes.pids("busy")
    if how == "killed":
        os.kill(pid, signal.SIGKILL)
    elif how == "terminated":
        os.kill(pid, signal.SIGTERM)
        os.kill(pid, signal.SIGCONT)  # a stopped process acts on SIGTERM once resumed
    # "hung": left stopped; the server kills it after the deadline plus the margin


@pytest.mark.parametrize("how", ["killed", "terminated", "hung"])
@pytest.mark.parametrize("accept", [None, GR])
async def test_a_child_that_fails_mid_query_gives_a_retryable_error_then_is_replaced(
    api_settings, store, chain, monkeypatch, how, accept
):
    import api.heavy_queries

    monkeypatch.setattr(api.heavy_queries, "MARGIN_SECONDS", 2.0)  # "hung" is declared sooner
    settings = _settings(api_settings, heavy_query_cost=50, max_heavy_operations=1).model_copy(
        update={"request_deadline_seconds": 3.0}
    )
    headers = {"accept": accept} if accept else {}
    async for client, app in _client(settings, store):
        processes = app.state.runtime.query_worker
        [pid] = await stopped_children(app, 1)
        request = asyncio.create_task(client.post("/graphql", json={"query": HEAVY}, headers=headers))
        await wait_for(lambda: processes.pids("busy") == [pid], "the heavy query to be sent")
        await _fail_child(app, how)
        answer = await request
        body = answer.json()
        assert answer.status_code == (503 if accept == GR else 200), answer.text
        assert answer.headers["retry-after"] == "1"
        assert [e["extensions"] for e in body["errors"]] == [{"code": "SERVICE_UNAVAILABLE", "retryAfterSeconds": 1}]
        assert ("data" in body) == (accept != GR) and body.get("data") is None
        assert "Traceback" not in answer.text and str(pid) not in answer.text
        await wait_for(lambda: not process_exists(pid), "the failed process to be gone")
        # the next heavy query works, in a new process
        answer = await client.post("/graphql", json={"query": HEAVY}, headers=headers)
        assert answer.status_code == 200 and answer.json()["data"]["lots"]["edges"], answer.text
        assert len(processes.pids()) == 1 and pid not in processes.pids()


@pytest.mark.parametrize("used", [False, True])
async def test_a_child_found_dead_while_idle_is_replaced_without_losing_the_query(api_settings, store, chain, used):
    settings = _settings(api_settings, heavy_query_cost=50, max_heavy_operations=1)
    async for client, app in _client(settings, store):
        processes = app.state.runtime.query_worker
        processes.start()
        await wait_for(lambda: len(processes.pids("idle")) == 1, "a heavy-query process")
        [pid] = processes.pids()
        if used:
            first = await client.post("/graphql", json={"query": HEAVY})
            assert first.status_code == 200 and processes.pids() == [pid], first.text
        os.kill(pid, signal.SIGKILL)
        await wait_for(lambda: _reapable(pid), "the process to die")
        answer = await client.post("/graphql", json={"query": HEAVY})
        assert answer.status_code == 200 and answer.json()["data"]["lots"]["edges"], answer.text
        assert len(processes.pids()) == 1 and pid not in processes.pids()


def _reapable(pid: int) -> bool:
    """Dead and not yet reaped, all its threads gone (what `Popen.poll` sees as dead):
    /proc showing the leader as a zombie ("Z") is not enough, its other threads (the
    child's database client has some) may still be exiting, and waitpid then says
    "running" (a flaky failure found in review)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


# --------------------------------------------------------------------------- unexpected exceptions


@pytest.mark.parametrize("error", [RuntimeError("secret internals"), KeyError("_id"), ZeroDivisionError()])
async def test_an_unexpected_exception_is_masked_as_on_the_main_path(
    api_settings, store, chain, in_loop, monkeypatch, caplog, error
):
    """The child's code (QueryExecutor, run here so a resolver can be made to fail): the
    same body as the main path, and the traceback logged once, never sent."""
    processes = HeavyQueryProcesses.for_store(store, api_settings)
    executor = await asyncio.to_thread(QueryExecutor, processes.config)
    try:
        original = Store.list_lots

        async def failing(self, *args, **kwargs):
            raise error

        monkeypatch.setattr(Store, "list_lots", failing)
        query = "{ lots(first: 100) { edges { node { id } } } organization(id: \"mine-hp\") { id } }"
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            answer = await asyncio.to_thread(executor.answer, Request(query, None, None, None))
        logged = [r for r in caplog.records if r.exc_info]
        assert len(logged) == 1 and logged[0].exc_info[1] is error
        on_loop = await in_loop[0].post("/graphql", json={"query": query})
        assert answer.body == on_loop.content, (answer.body, on_loop.text)
        assert answer.codes == ("INTERNAL_SERVER_ERROR",)
        assert answer.data_is_null == (json.loads(answer.body)["data"] is None)
        assert b"secret internals" not in answer.body and b"Traceback" not in answer.body
        monkeypatch.setattr(Store, "list_lots", original)
        assert json.loads((await asyncio.to_thread(executor.answer, Request(query, None, None, None))).body)["data"]["lots"]
    finally:
        await asyncio.to_thread(executor.loop.run_until_complete, executor.store.close())
        executor.loop.close()


# --------------------------------------------------------------------------- secrets and lifetime


@pytest.mark.parametrize("secret_setting", [None, "ab" * 32])
async def test_no_secret_in_the_childs_command_line_or_environment(
    api_settings, store, chain, mongo_uri, monkeypatch, secret_setting
):
    password = urlsplit(mongo_uri).password
    assert password, "the embedded database has credentials"
    monkeypatch.setenv("MONGODB_URI", mongo_uri)  # in the server's environment: not passed on
    monkeypatch.setenv("ORETRACE_LOG_KEY", "cd" * 32)
    settings = _settings(api_settings, heavy_query_cost=1).model_copy(update={"log_key": secret_setting})
    async for client, app in _client(settings, store):
        answer = await client.post("/graphql", json={"query": "{ lots(first: 1) { edges { node { id } } } }"})
        assert answer.status_code == 200 and answer.json()["data"]["lots"]["edges"], answer.text  # it logged in
        [pid] = app.state.runtime.query_worker.pids()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert b"api.query_process" in cmdline
        for secret in (password, "cd" * 32, "ab" * 32):
            assert secret.encode() not in cmdline and secret.encode() not in environ
        names = {entry.split(b"=", 1)[0] for entry in environ.split(b"\0") if entry}
        assert names == {b"PATH", b"PYTHONPATH", b"SUPERVISION_PARENT_PID"}


def test_a_sigkilled_server_leaves_no_heavy_query_process(tmp_path, mongo_uri, root_key, api_settings):
    """A real server (its lifespan starts the processes in the background); SIGKILL it:
    its heavy-query processes die with it (PR_SET_PDEATHSIG)."""
    port = free_port()
    env = {**os.environ, "MONGODB_URI": mongo_uri, "ORETRACE_DATABASE": api_settings.database,
           "ORETRACE_MAX_HEAVY_OPERATIONS": "2", "PYTHONPATH": str(ROOT)}  # fmt: skip
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "api.server", "--host", "127.0.0.1", "--port", str(port),
         "--data-dir", str(tmp_path / "data"), "--root-public-key", root_key.verify_key.encode().hex(),
         "--network", NETWORK, "--log-level", "warning"],  # fmt: skip
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        children: list[int] = []

        def started() -> bool:
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            children[:] = _heavy_query_children(server.pid)
            return len(children) == 2

        _wait(started, "the server's two heavy-query processes")
        answer = httpx.post(f"http://127.0.0.1:{port}/graphql", timeout=60,
                            json={"query": "{ lots(first: 100) { edges { node { id parents { id } } } } }"})  # fmt: skip
        assert answer.status_code == 200 and "errors" not in answer.json(), answer.text
        assert _heavy_query_children(server.pid) == children  # it executed in one of them
        server.kill()
        server.wait()
        _wait(lambda: not any(process_exists(pid) for pid in children), "the heavy-query processes to die")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        log.close()


def _heavy_query_children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            continue
        if ppid == parent and b"api.query_process" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def _wait(predicate, what: str, timeout: float = 120.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
