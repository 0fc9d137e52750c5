"""Heavy queries execute in heavy-query processes (api.heavy_queries: their own
event loop, database client and GIL), so the server's event loop stays free; the
answers are exactly those of the normal path. No assertion is timed: "the loop
stays free" is shown by ordering (probes answer while heavy queries are held in
stopped processes, before they are resumed)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator

import httpx
import pytest
from pymongo import monitoring

from api.app import create_app
from api.settings import Limits, Settings
from api.store import Store
from conftest import build_chain
from resolvers.schema import MAIN_LOOP_ROOT_FIELDS, build_schema
from resolvers.log import LogQuery

GR = "application/graphql-response+json"


@pytest.fixture(scope="module")
async def chain(world, publish):
    return await build_chain(world, publish, suffix="-hq")


async def _client(settings: Settings, store: Store) -> AsyncIterator[tuple[httpx.AsyncClient, object]]:
    app = create_app(settings, store=store)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=120) as c:
            yield c, app
    finally:
        await app.state.runtime.stop()  # readiness check, heavy-query processes, ingestion pool (not the store)


def _with_limits(settings: Settings, **limits) -> Settings:
    return settings.model_copy(update={"limits": Limits(**limits)})


@pytest.fixture(scope="module")
async def in_process(api_settings: Settings, store: Store):
    """Every operation heavy (cost >= 1): queries execute in heavy-query processes."""
    async for pair in _client(_with_limits(api_settings, heavy_query_cost=1, max_heavy_operations=2), store):
        yield pair


@pytest.fixture(scope="module")
async def on_loop(api_settings: Settings, store: Store):
    """No operation heavy: everything executes on the event loop."""
    async for pair in _client(_with_limits(api_settings, heavy_query_cost=10**9), store):
        yield pair


def _queries(chain) -> list[tuple[str, dict | None, bool]]:
    """(query, variables, whether it executes: False when refused before execution)."""
    refined, issued = chain.refined[0], chain.issued[0]
    return [
        ("{ lots(first: 8) { edges { cursor node { id owner { id name } parents { id parentIds } } } "
         "pageInfo { hasNextPage endCursor } } }", None, True),
        ("query($l: ID!) { provenance(lotId: $l) { nodes { id owner { id } } edges { parent child } truncated } }",
         {"l": refined}, True),
        ("query($r: [_Any!]!) { _entities(representations: $r) { ... on Lot { id owner { name } parents { id } } "
         "... on Site { id } ... on Organization { id roles } } }",
         {"r": [{"__typename": "Lot", "id": refined}, {"__typename": "Site", "id": chain.site_id},
                {"__typename": "Lot", "id": "lot_missing"}, {"__typename": "Nope", "id": "x"},
                {"__typename": "Organization", "id": "mine-hq"}]}, True),
        ("query($s: ID!) { site(id: $s) { id attestations(first: 5) { id site { id attestations { id } } } } }",
         {"s": chain.site_id}, True),
        ("query($x: ID!) { lot(id: $x) { id } }", {"x": "\ud800"}, False),  # BAD_USER_INPUT before execution
        ('{ lots(first: 2, after: "not-a-cursor") { edges { node { id } } } }', None, True),  # BAD_USER_INPUT in a resolver
        ("{ lots(first: 100) { edges { node { parents { parents { parents { id } } } } } } }", None, False),  # QUERY_TOO_COSTLY
        ('query($l: ID!) { lot(id: $l) { id claims { id } } organization(id: "nobody") { id } }', {"l": issued}, True),
        ('{ lot(id: "lot_x") { id nope } }', None, False),  # validation error
    ]


@pytest.mark.parametrize("index", range(9))
@pytest.mark.parametrize("accept", [None, GR])
async def test_a_heavy_query_process_answers_exactly_what_the_event_loop_answers(chain, in_process, on_loop, index, accept):
    query, variables, executes = _queries(chain)[index]
    headers = {"content-type": "application/json", **({"accept": accept} if accept else {})}
    body = json.dumps({"query": query, **({"variables": variables} if variables is not None else {})})  # \ud800 escaped
    worker_client, worker_app = in_process
    loop_client, _ = on_loop
    worker = worker_app.state.runtime.query_worker
    executed = worker.executions
    in_process_answer = await worker_client.post("/graphql", content=body, headers=headers)
    on_loop_answer = await loop_client.post("/graphql", content=body, headers=headers)
    assert in_process_answer.status_code == on_loop_answer.status_code
    assert in_process_answer.headers["content-type"] == on_loop_answer.headers["content-type"]
    assert in_process_answer.content == on_loop_answer.content, (in_process_answer.text, on_loop_answer.text)
    assert worker.executions - executed == (1 if executes else 0)


def test_the_log_fields_stay_on_the_event_loop() -> None:
    """Every root field of the transparency log (its state lives on the server's loop) is listed."""
    import strawberry

    log_fields = set(strawberry.Schema(query=LogQuery)._schema.query_type.fields)
    assert {"logCheckpoint", "inclusionProof"} <= log_fields <= MAIN_LOOP_ROOT_FIELDS
    assert "disclosureBundle" in MAIN_LOOP_ROOT_FIELDS  # anchors its bundle in the log


async def test_a_log_field_in_a_heavy_query_executes_on_the_loop(in_process, chain) -> None:
    client, app = in_process
    worker = app.state.runtime.query_worker
    executed = worker.executions
    response = await client.post("/graphql", json={"query": "{ logCheckpoint lots(first: 1) { edges { node { id } } } }"})
    assert response.status_code == 200 and "lots" in response.json()["data"], response.text
    assert worker.executions == executed


async def test_mutations_never_execute_in_a_heavy_query_process(in_process, world) -> None:
    client, app = in_process
    worker = app.state.runtime.query_worker
    executed = worker.executions
    envelope = world.register("heavy-mutation-org", "trader")
    response = await client.post(
        "/graphql", json={"query": "mutation($e: JSON!) { registerOrganization(envelope: $e) { eventId } }",
                          "variables": {"e": envelope.to_json()}},  # fmt: skip
    )
    assert response.status_code == 200 and response.json()["data"]["registerOrganization"]["eventId"], response.text
    assert worker.executions == executed


# --------------------------------------------------------------------------- the loop stays free


async def wait_for(predicate, what: str, timeout: float = 60.0) -> None:
    """Poll `predicate` (no timing is asserted: the limit only stops a broken test)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def stopped_children(app, n: int) -> list[int]:
    """The app's `n` heavy-query processes, started and SIGSTOPped: a query sent to one
    stays in flight (in its pipe) until SIGCONT."""
    processes = app.state.runtime.query_worker
    processes.start()
    await wait_for(lambda: len(processes.pids("idle")) == n, f"{n} heavy-query processes")
    pids = processes.pids("idle")
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    return pids


def resume(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


HEAVY = "{ lots(first: 50) { edges { node { id owner { id } } } } }"


@pytest.mark.parametrize("in_flight", [1, 2])
async def test_probes_answer_while_heavy_queries_are_in_flight(api_settings, store, chain, in_flight):
    settings = _with_limits(api_settings, heavy_query_cost=50, max_heavy_operations=2)
    async for client, app in _client(settings, store):
        processes = app.state.runtime.query_worker
        pids = await stopped_children(app, 2)
        heavy = [asyncio.create_task(client.post("/graphql", json={"query": HEAVY})) for _ in range(in_flight)]
        try:
            await wait_for(lambda: len(processes.pids("busy")) == in_flight, "the heavy queries to be sent")
            # the heavy queries are now in their processes, held; the server still answers
            probes = [await client.get(path) for path in ("/livez", "/healthz", "/readyz")]
            cheap = await client.post("/graphql", json={"query": '{ organization(id: "mine-hq") { id } }'})
            assert not any(task.done() for task in heavy)
        finally:
            resume(pids)
        answers = await asyncio.gather(*heavy)
        assert [p.status_code for p in probes] == [200, 200, 200]
        assert cheap.json() == {"data": {"organization": {"id": "mine-hq"}}}
        for answer in answers:
            assert answer.status_code == 200 and len(answer.json()["data"]["lots"]["edges"]) > 0, answer.text
        assert processes.executions == in_flight and sorted(processes.pids()) == sorted(pids)  # the same children


async def test_heavy_queries_beyond_the_slots_wait_and_cheap_ones_do_not(api_settings, store, chain):
    settings = _with_limits(api_settings, heavy_query_cost=50, max_heavy_operations=1)
    async for client, app in _client(settings, store):
        processes = app.state.runtime.query_worker
        pids = await stopped_children(app, 1)
        first = asyncio.create_task(client.post("/graphql", json={"query": HEAVY}))
        try:
            await wait_for(lambda: processes.pids("busy") == pids, "the first heavy query to be sent")
            second = asyncio.create_task(client.post("/graphql", json={"query": HEAVY}))
            cheap = await client.post("/graphql", json={"query": '{ organization(id: "mine-hq") { id } }'})
            assert cheap.json() == {"data": {"organization": {"id": "mine-hq"}}}
            assert not first.done() and not second.done() and processes.executions == 1  # the second waits its slot
        finally:
            resume(pids)
        for answer in await asyncio.gather(first, second):
            assert answer.status_code == 200 and "errors" not in answer.json(), answer.text
        assert processes.executions == 2 and processes.pids() == pids


async def test_a_cancelled_heavy_request_kills_its_process(api_settings, store, chain):
    """Shutdown cancels requests in flight (typed 503, api.app.TypedCancellation): the
    process executing it is killed (no reply can be left for the next request), and
    the next heavy query gets a new one."""
    settings = _with_limits(api_settings, heavy_query_cost=50, max_heavy_operations=1)
    async for client, app in _client(settings, store):
        processes = app.state.runtime.query_worker
        [pid] = await stopped_children(app, 1)
        request = asyncio.create_task(client.post("/graphql", json={"query": HEAVY}))
        await wait_for(lambda: processes.pids("busy") == [pid], "the heavy query to be sent")
        request.cancel()
        cancelled = await request
        assert cancelled.status_code == 503 and cancelled.json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
        await wait_for(lambda: not process_exists(pid), "the cancelled query's process to be gone")
        # the slot is free again, and a new process serves
        answer = await client.post("/graphql", json={"query": HEAVY})
        assert answer.status_code == 200 and "errors" not in answer.json(), answer.text
        assert pid not in processes.pids() and len(processes.pids()) == 1


def process_exists(pid: int) -> bool:
    """Running or stopped, not gone nor a zombie."""
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.parametrize(
    "client_options",
    [
        {},  # Store.connect's defaults
        {"w": "majority", "readConcernLevel": "majority", "wTimeoutMS": 4_000, "socketTimeoutMS": 7_000,
         "connectTimeoutMS": 3_000, "serverSelectionTimeoutMS": 6_000, "maxPoolSize": 7, "appname": "other"},
        {"w": 1, "readPreference": "primaryPreferred", "retryReads": False, "heartbeatFrequencyMS": 2_500},
    ],  # fmt: skip
)
async def test_the_process_client_is_made_like_the_servers(mongo_uri, api_settings, chain, client_options) -> None:
    """The heavy-query process's client is made from the server's URI (its credentials:
    the embedded database refuses a client without them) and options, whatever they
    are, less the in-process event listeners; its Settings carry no secret.
    (Before: the worker thread's client object was compared with the server's.)"""
    listeners = [PoolWatcher()]  # objects of this process: not sent
    store = await Store.connect(mongo_uri, api_settings.database, event_listeners=listeners, **client_options)
    settings = _with_limits(api_settings, heavy_query_cost=1).model_copy(update={"log_key": "ab" * 32})
    try:
        async for client, app in _client(settings, store):
            response = await client.post("/graphql", json={"query": "{ lots(first: 1) { edges { node { id } } } }"})
            assert response.status_code == 200 and response.json()["data"]["lots"]["edges"], response.text
            processes = app.state.runtime.query_worker
            assert processes.executions == 1 and len(processes.pids()) == 1
            config = processes.config
            assert config.uri == store.connection.uri == mongo_uri and config.database == store.database
            assert config.options == {k: v for k, v in store.connection.options.items() if k != "event_listeners"}
            for name, value in client_options.items():  # the options asked for, not pymongo's defaults
                assert config.options[name] == value
            assert config.ancestry_limit == store.ancestry_limit
            assert config.settings.mongodb_uri is None and config.settings.log_key is None
            assert config.settings.limits == settings.limits
    finally:
        await store.close()


async def test_a_store_made_from_a_bare_client_executes_heavy_queries_on_the_loop(mongo_uri, api_settings, chain):
    """A Store made from a client handed in as is cannot be reconnected alike: no
    worker, and a heavy query still gets its answer (on the event loop)."""
    from pymongo import AsyncMongoClient

    store = Store(AsyncMongoClient(mongo_uri), api_settings.database)
    try:
        with pytest.raises(ValueError, match="handed in as is"):
            store.reconnect()
        app = create_app(_with_limits(api_settings, heavy_query_cost=1), store=store)
        assert app.state.runtime.query_worker is None
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
                response = await client.post("/graphql", json={"query": "{ lots(first: 1) { edges { node { id } } } }"})
        finally:
            await app.state.runtime.stop()
        assert response.status_code == 200 and response.json()["data"]["lots"]["edges"], response.text
    finally:
        await store.close()


def test_a_stores_connection_does_not_show_its_password() -> None:
    from api.store import ClientConnection

    connection = ClientConnection("mongodb://oretrace:s3cret-pw@127.0.0.1:1/?directConnection=true", {"appname": "x"})
    assert "s3cret-pw" not in repr(connection)


class PoolWatcher(monitoring.ConnectionPoolListener):
    """Connection pools opened and closed, by any client made with this listener."""

    def __init__(self) -> None:
        self.opened = self.closed = 0

    def pool_created(self, event) -> None:
        self.opened += 1

    def pool_closed(self, event) -> None:
        self.closed += 1

    def pool_ready(self, event) -> None: ...
    def pool_cleared(self, event) -> None: ...
    def connection_created(self, event) -> None: ...
    def connection_ready(self, event) -> None: ...
    def connection_closed(self, event) -> None: ...
    def connection_check_out_started(self, event) -> None: ...
    def connection_check_out_failed(self, event) -> None: ...
    def connection_checked_out(self, event) -> None: ...
    def connection_checked_in(self, event) -> None: ...


@pytest.mark.parametrize("queries", [0, 1, 3])
async def test_stopping_the_runtime_ends_the_processes_and_leaves_the_store_open(mongo_uri, api_settings, chain, queries):
    """Runtime.stop (the lifespan's shutdown; the tests' app fixtures) ends the heavy-query
    processes; the store handed in stays open."""
    store = await Store.connect(mongo_uri, api_settings.database)
    try:
        app = create_app(_with_limits(api_settings, heavy_query_cost=1), store=store)
        processes = app.state.runtime.query_worker
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            for _ in range(queries):
                response = await client.post("/graphql", json={"query": "{ lots(first: 1) { edges { node { id } } } }"})
                assert response.json()["data"]["lots"], response.text
        pids = processes.pids()
        assert len(pids) == (1 if queries else 0)  # no lifespan here: started at the first heavy query
        assert all(process_exists(pid) for pid in pids)
        await app.state.runtime.stop()
        assert processes.pids() == [] and not any(process_exists(pid) for pid in pids)
        assert await store.ready()
    finally:
        await store.close()
