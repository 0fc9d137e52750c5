"""The database fails in the middle of a batch (group commit, issue 11): killed, its
connection dropped, stopped past the request deadline.

A real app (`api.app.create_app` without a store: its runtime starts the embedded
SecantusDB, here with `--enable-test-commands`, and supervises it) answers GraphQL
mutations over ASGI. A plug and then several members (transfers, transformations, an
issuance) queue for the sequencer (`tests/test_group_commit.py::in_one_batch`), so that the
members are written by ONE transaction; the fault strikes that transaction (the store's
`_transaction_body` is wrapped for the test: before its writes, or after them with the
transaction still open, its commit about to be sent or, with a failpoint holding it on the
server, in flight); a follower publication is sent as it strikes and queues behind the
failing batch. Then, for every fault:

* every member's HTTP answer (and the follower's) is typed: accepted, or
  SERVICE_UNAVAILABLE / OUTCOME_UNKNOWN, OUTCOME_UNKNOWN alone once the batch's commit may
  have reached the server (never another status than 200 or 503, never a traceback);
* nothing is half-written: each member's documents (event, nonces, guards, sealed openings,
  lots it created, consumed or moved, issuance mark) are all as before the batch or all as
  after its acceptance; seq and log_index are contiguous and unique across the ledger;
* once the database serves again (restarted by the runtime's supervisor after a SIGKILL,
  resumed after a SIGSTOP), resubmitting every byte-identical envelope gives exactly one
  acceptance per envelope, the original outcome where it had been answered accepted.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import AutoReconnect, OperationFailure

import api.app
from api.app import Runtime, create_app
from api.embedded import EmbeddedDatabase
from api.settings import Settings
from api.store import Store
from conftest import NETWORK, LedgerWorld, fresh_database_name
from sdk.client import MUTATIONS
from test_group_commit import assert_ledger_order, build_setup, in_one_batch, ledger_of, names

#: the request deadline of the app under test (seconds): a SIGSTOP outlasts it
DEADLINE = 4.0
RETRYABLE = {"SERVICE_UNAVAILABLE", "OUTCOME_UNKNOWN"}
#: the driver's commit, restored after every test (`commit_applied_then_forgotten` replaces it)
DRIVER_COMMIT = AsyncClientSession.commit_transaction


@dataclass
class Server:
    runtime: Runtime
    client: httpx.AsyncClient
    admin: AsyncMongoClient  # failpoints

    @property
    def store(self) -> Store:
        return self.runtime.store

    @property
    def db(self) -> EmbeddedDatabase:
        return self.runtime.embedded


@pytest.fixture(scope="module")
async def server(root_key, tmp_path_factory) -> AsyncIterator[Server]:
    settings = Settings(
        database=fresh_database_name("gcf"),
        data_dir=tmp_path_factory.mktemp("gcf"),
        network=NETWORK,
        root_public_key=root_key.verify_key.encode().hex(),
        mongodb_uri=None,  # the runtime starts (and supervises) its embedded database
        request_deadline_seconds=DEADLINE,
        readiness_interval_seconds=0,
    )
    patch = pytest.MonkeyPatch()
    patch.setattr(api.app, "EmbeddedDatabase", functools.partial(EmbeddedDatabase, extra_args=["--enable-test-commands"]))
    app = create_app(settings)
    runtime: Runtime = app.state.runtime
    try:
        await runtime.start()
    finally:
        patch.undo()
    admin: AsyncMongoClient = AsyncMongoClient(runtime.embedded.uri, appname="gcf-admin")
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            yield Server(runtime, client, admin)
    finally:
        await admin.close()
        await runtime.stop()


def publication(payload_type: str) -> str:
    """The mutation for `payload_type`, its result with the log index (the outcome compared on resubmission)."""
    return f"mutation($e: JSON!) {{ {MUTATIONS[payload_type]}(envelope: $e) {{ eventId type lotIds logIndex }} }}"


async def post(server: Server, envelope) -> httpx.Response:
    body = {"query": publication(envelope.payload.type), "variables": {"e": envelope.to_json()}}
    return await server.client.post("/graphql", json=body)


def answer(response: httpx.Response) -> tuple[str, Any]:
    """("accepted", the PublishResult) or ("refused", the error code); fails on an untyped answer."""
    assert response.status_code in (200, 503), (response.status_code, response.text)
    assert "Traceback" not in response.text and "traceback" not in response.text, response.text
    body = response.json()
    errors = body.get("errors") or []
    if not errors:
        return "accepted", next(iter(body["data"].values()))
    codes = {(e.get("extensions") or {}).get("code") for e in errors}
    assert len(codes) == 1 and codes <= RETRYABLE, response.text
    if response.status_code == 503:
        assert int(response.headers["Retry-After"]) > 0
    return "refused", codes.pop()


async def serving(server: Server) -> None:
    """Wait until the database serves again (restarted by the supervisor, or resumed)."""

    async def ready() -> bool:
        return server.db.running() and not server.runtime.database_down and await server.store.ready(2.0)

    for _ in range(600):
        if await ready():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the database did not serve again")


async def accepted_after_retries(server: Server, envelope) -> dict[str, Any]:
    """Send the byte-identical envelope until it is accepted; every answer on the way typed, retryable."""
    for _ in range(100):
        kind, result = answer(await post(server, envelope))
        if kind == "accepted":
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"{envelope.event_id} never accepted")


async def traces(store: Store, envelopes: list) -> list[dict[str, Any]]:
    """Per envelope, everything a publication writes: its event, nonces, guards, sealed openings,
    the lots it created and consumed, the lot it transferred (owner, custody step) and the
    issuance mark of its attestation."""
    out = []
    for env in envelopes:
        e, p = env.event_id, env.payload
        by_event = {"event_id": e}
        trace: dict[str, Any] = {
            "event": await store.events.find_one({"_id": e}, {"accepted_at": 0}),  # with its seq and log_index
            "nonces": await store.nonces.find(by_event).sort("_id", 1).to_list(None),
            "guards": await store.guards.find(by_event).sort("_id", 1).to_list(None),
            "sealed": await store.sealed_openings.find(by_event).sort("_id", 1).to_list(None),
            "created": await store.lots.find({"created_by_event": e}).sort("_id", 1).to_list(None),
            "consumed": await store.lots.find({"consumed_by_event": e}, {"_id": 1}).sort("_id", 1).to_list(None),
        }
        if p.type == "transfer":
            trace["moved"] = await store.lots.find_one({"_id": p.lot_id}, {"owner": 1, "custody_seq": 1})
        if p.type == "issue":
            trace["mark"] = await store.issuance_marks.find_one({"_id": p.attestation_id})
        out.append(trace)
    return out


# --------------------------------------------------------------------------- faults


async def sigkill(server: Server) -> None:
    """SIGKILL the database and wait until it is gone (the supervisor restarts it)."""
    process = server.db.process
    os.kill(process.pid, signal.SIGKILL)
    while process.poll() is None:
        await asyncio.sleep(0.01)


async def sigkill_soon(server: Server) -> None:
    """SIGKILL the database once the commit (held by a failpoint on the server) is in flight."""
    pid = server.db.pid
    asyncio.get_running_loop().call_later(0.5, os.kill, pid, signal.SIGKILL)


async def sigstop(server: Server) -> None:
    """Stop the database (SIGSTOP: alive for the supervisor, silent for the clients); the test
    resumes it once every member was answered, past the request deadline."""
    os.kill(server.db.pid, signal.SIGSTOP)


def failpoint(data: dict[str, Any], mode: Any) -> Callable[[Server], Awaitable[None]]:
    async def arm(server: Server) -> None:
        await server.admin.admin.command({"configureFailPoint": "failCommand", "mode": mode, "data": data})

    return arm


async def commit_applied_then_forgotten(server: Server) -> None:
    """The batch's commit applies but its answer is lost (what a crash right after the commit,
    or a dropped connection, gives: UnknownTransactionCommitResult); the retried commit finds no
    transaction (NoSuchTransaction with TransientTransactionError: what a restarted database
    answers), and every re-run of the batch loses its connection on its first write. Injected
    into the driver's session for the batch's next two commits only (failpoints cannot apply a
    command and then drop its answer)."""
    real = DRIVER_COMMIT
    calls: list[None] = []

    async def commit_transaction(session: AsyncClientSession) -> None:
        calls.append(None)
        if len(calls) == 1:
            await real(session)
            await failpoint({"failCommands": ["insert"], "closeConnection": True, "appName": "oretrace"}, "alwaysOn")(server)
            lost = AutoReconnect("connection closed before the commit's answer")
            lost._add_error_label("UnknownTransactionCommitResult")
            raise lost
        AsyncClientSession.commit_transaction = real  # type: ignore[method-assign]
        raise OperationFailure("Transaction with txnNumber 1 has been aborted", 251,
                               {"ok": 0, "code": 251, "errorLabels": ["TransientTransactionError"]})  # fmt: skip

    AsyncClientSession.commit_transaction = commit_transaction  # type: ignore[method-assign]


async def both(*steps: Callable[[Server], Awaitable[None]], server: Server) -> None:
    for step in steps:
        await step(server)


COMMIT = ["commitTransaction"]
UNKNOWN, UNAVAILABLE = {"OUTCOME_UNKNOWN"}, {"SERVICE_UNAVAILABLE"}
#: name -> (when the fault strikes the batch's transaction, what it does, the refusals a member
#: may get: OUTCOME_UNKNOWN alone once a commit may have reached the server unanswered;
#: SERVICE_UNAVAILABLE ("nothing was written") only where no commit can have been applied)
FAULTS: dict[str, tuple[str, Callable[[Server], Awaitable[None]], set[str]]] = {
    # (1) killed: with the transaction open and its writes done, before the commit is sent
    "sigkill-open-transaction": ("after writes", sigkill, UNKNOWN | UNAVAILABLE),
    # (1) killed: while the server holds the commit (blockConnection), the commit in flight
    "sigkill-commit-in-flight": (
        "after writes",
        lambda s: both(failpoint({"failCommands": COMMIT, "blockConnection": True, "blockTimeMS": 5000,
                                  "appName": "oretrace"}, {"times": 1}), sigkill_soon, server=s),
        UNKNOWN,
    ),  # fmt: skip
    # (1) killed before the transaction wrote anything
    "sigkill-before-writes": ("before writes", sigkill, UNAVAILABLE),
    # (2) the connection dropped on the commit, once (the commit is retried) or on every attempt
    "close-connection-commit-once": (
        "after writes",
        failpoint({"failCommands": COMMIT, "closeConnection": True, "appName": "oretrace"}, {"times": 1}),
        UNKNOWN,
    ),
    "close-connection-commit-always": (
        "after writes",
        failpoint({"failCommands": COMMIT, "closeConnection": True, "appName": "oretrace"}, "alwaysOn"),
        UNKNOWN,
    ),
    # (2) the connection dropped on the batch's first write
    "close-connection-insert": (
        "before writes",
        failpoint({"failCommands": ["insert"], "closeConnection": True, "appName": "oretrace"}, "alwaysOn"),
        UNAVAILABLE,
    ),
    # (1) the commit applied, its answer lost, then the database forgot the transaction and
    # could not run the batch again: the members landed, so never "nothing was written"
    "commit-applied-answer-lost": ("after writes", commit_applied_then_forgotten, UNKNOWN),
    # (3) stopped past the deadline, the transaction open and its commit sent
    "sigstop-open-transaction": ("after writes", sigstop, UNKNOWN),
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_a_fault_in_the_middle_of_a_batch_types_every_member_and_writes_all_or_nothing(
    server, root_key, monkeypatch, fault
):
    when, strike, refusals = FAULTS[fault]
    store = server.store
    tag = f"gcf{list(FAULTS).index(fault)}"
    world = LedgerWorld(root_key)
    setup = build_setup(world, tag, mine_lots=3, trader_lots=2)
    for env in setup.envelopes:
        assert answer(await post(server, env))[0] == "accepted"
    n, t, m = names(tag), setup.trader_lots, setup.mine_lots
    plug = world.transfer(n.mine, m[0], n.trader)
    (attestation_id,) = (a for a, state in world.attestations.items() if state.site_id == f"gc-site-{tag}")
    members = [
        world.transform(n.trader, [t[0]])[0],
        world.transfer(n.mine, m[1], n.trader),
        world.issue(attestation_id, 5_000)[0],
        world.transform(n.trader, [t[1]], shares=[0.5, 0.5])[0],
    ]
    # sent once the fault struck: it queues behind the failing batch
    follower = world.transfer(n.mine, m[2], n.trader)
    everyone = [plug, *members, follower]
    before = await traces(store, everyone)

    struck: list[int] = []
    followed: list[asyncio.Task] = []
    body = store._transaction_body

    async def strike_once(batch: list) -> None:
        if len(batch) > 1 and not struck:
            struck.append(len(batch))
            await strike(server)
            followed.append(asyncio.create_task(post(server, follower)))

    async def transaction_body(session, batch, attribute_lot_writes):
        if when == "before writes":
            await strike_once(batch)
        await body(session, batch, attribute_lot_writes)
        if when == "after writes":
            await strike_once(batch)

    monkeypatch.setattr(store, "_transaction_body", transaction_body)
    pid = server.db.pid
    try:
        plug_response, responses = await in_one_batch(store, lambda env: post(server, env), plug, members)
        responses.append(await followed[0])
    finally:
        monkeypatch.undo()
        AsyncClientSession.commit_transaction = DRIVER_COMMIT  # type: ignore[method-assign]
        if server.db.running():
            os.kill(server.db.pid, signal.SIGCONT)  # after a SIGSTOP; harmless otherwise
        await server.admin.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    assert struck == [len(members)], struck  # the fault struck the batch of all the members
    answers = [answer(r) for r in (plug_response, *responses)]
    assert answers[0][0] == "accepted"  # the plug committed alone, before the fault
    assert {code for kind, code in answers[1:-1] if kind == "refused"} <= refusals, answers
    await serving(server)
    assert (server.db.pid != pid) == fault.startswith("sigkill")  # restarted by the supervisor, only when killed

    # nothing half-written: each member as before the batch, or all of it written
    at_fault = await traces(store, everyone)
    assert_ledger_order(await ledger_of(store))
    if strike is commit_applied_then_forgotten:  # it did apply: "nothing was written" would have been false
        assert all(t["event"] is not None for t in at_fault[1:-1])
    # every envelope resubmitted, byte for byte: accepted exactly once, the original outcome
    # where it was answered accepted; and again, the same
    outcomes = [await accepted_after_retries(server, env) for env in everyone]
    again = [answer(await post(server, env)) for env in everyone]
    assert again == [("accepted", o) for o in outcomes]
    for env, (kind, first), outcome in zip(everyone, answers, outcomes, strict=True):
        assert outcome["eventId"] == env.event_id
        if kind == "accepted":
            assert first == outcome
        assert await store.events.count_documents({"_id": env.event_id}) == 1
    full = await traces(store, everyone)
    for env, was, then, now in zip(everyone, before, at_fault, full, strict=True):
        assert was != now and then in (was, now), (env.payload.type, then)
    for (kind, code), was, then, now in zip(answers, before, at_fault, full, strict=True):
        if kind == "accepted":
            assert then == now
        elif code == "SERVICE_UNAVAILABLE":  # "nothing was written"
            assert then == was
    assert_ledger_order(await ledger_of(store))
