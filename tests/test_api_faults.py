"""A failing database, lost answers and races at commit (issues 13, 8 items 8/9/11, 7 item 6).

Runs against its own embedded SecantusDB started with `--enable-test-commands`,
so that `configureFailPoint`/`failCommand` can inject what a real MongoDB does
when it fails: errors on commit, write-concern errors after the write, dropped
connections. Every test checks the typed answer AND what is in the database.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import timedelta
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nacl.signing import SigningKey
from pymongo import AsyncMongoClient, monitoring
from pymongo.errors import OperationFailure

from api.embedded import EmbeddedDatabase
from api.service import Ingestion
from api.settings import Settings
from api.store import AncestryLimit, Store
from conftest import NETWORK, LedgerWorld, Member, build_chain, fresh_database_name
from ledger.errors import Code, Rejection


class LotFinds(monitoring.CommandListener):
    """Counts `find` commands on the lots collection (the ancestry walk's round trips)."""

    def __init__(self) -> None:
        self.count = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find" and event.command.get("find") == "lots":
            self.count += 1

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


@pytest.fixture(scope="module")
def fault_db(tmp_path_factory) -> EmbeddedDatabase:
    db = EmbeddedDatabase(tmp_path_factory.mktemp("faults"), extra_args=["--enable-test-commands"])
    db.start()
    yield db
    db.stop()


@pytest.fixture(scope="module")
def settings(root_key: SigningKey, tmp_path_factory) -> Settings:
    return Settings(
        database=fresh_database_name("faults"),
        data_dir=tmp_path_factory.mktemp("faults-data"),
        network=NETWORK,
        root_public_key=root_key.verify_key.encode().hex(),
        request_deadline_seconds=10,
        readiness_interval_seconds=0,  # a database check per probe: the probes below follow each fault at once
    )


@pytest.fixture(scope="module")
def lot_finds() -> LotFinds:
    return LotFinds()


@pytest.fixture(scope="module")
async def fstore(fault_db: EmbeddedDatabase, settings: Settings, lot_finds: LotFinds) -> AsyncIterator[Store]:
    store = await Store.connect(
        fault_db.uri, settings.database, ancestry_limit=settings.ancestry_limit, event_listeners=[lot_finds]
    )
    await store.ensure_indexes()
    yield store
    await store.close()  # the database dies with the module's own SecantusDB process


@pytest.fixture(scope="module")
def ing(fstore: Store, settings: Settings) -> Ingestion:
    ingestion = Ingestion(fstore, settings)
    yield ingestion
    ingestion.close()


@pytest.fixture(scope="module")
def fworld(root_key: SigningKey) -> LedgerWorld:
    return LedgerWorld(root_key)


@pytest.fixture(scope="module")
async def admin(fault_db: EmbeddedDatabase) -> AsyncIterator[AsyncMongoClient]:
    client: AsyncMongoClient = AsyncMongoClient(fault_db.uri)
    yield client
    await client.close()


@contextlib.asynccontextmanager
async def failpoint(admin: AsyncMongoClient, data: dict[str, Any], mode: Any = "alwaysOn") -> AsyncIterator[None]:
    await admin.admin.command({"configureFailPoint": "failCommand", "mode": mode, "data": data})
    try:
        yield
    finally:
        await admin.admin.command({"configureFailPoint": "failCommand", "mode": "off"})


async def publish(ing: Ingestion, envelope):
    return await ing.publish(envelope.to_json())


async def rejected(ing: Ingestion, envelope) -> Rejection:
    with pytest.raises(Rejection) as info:
        await publish(ing, envelope)
    return info.value


async def event_count(store: Store, event_id: str) -> int:
    return await store.events.count_documents({"_id": event_id})


@pytest.fixture(scope="module")
async def chain(ing: Ingestion, fworld: LedgerWorld):
    return await build_chain(fworld, lambda env: publish(ing, env), suffix="-f")


# --------------------------------------------------------------------------- idempotent publication


async def test_resend_of_each_kind_returns_the_original_outcome(ing, fworld, fstore):
    w = fworld
    envs = []
    envs.append(w.register("idem-auditor", "auditor"))
    envs.append(w.register("idem-mine", "mine"))
    envs.append(w.register("idem-trader", "trader"))
    for env in envs:
        await publish(ing, env)
    att_env, att_id = w.attest("idem-auditor", "idem-mine", "idem-site")
    issue1, lot1 = w.issue(att_id, 1_000)
    issue2, lot2 = w.issue(att_id, 2_000)
    transfer1 = w.transfer("idem-mine", lot1, "idem-trader")
    transfer2 = w.transfer("idem-mine", lot2, "idem-trader")
    ordered = [att_env, issue1, issue2, transfer1, transfer2]
    for env in ordered:
        await publish(ing, env)
    transform, outs = w.transform("idem-trader", [lot1, lot2], shares=[0.5, 0.5])
    await publish(ing, transform)
    claim, claim_id = w.claim_excludes("idem-trader", outs[0])
    first = await publish(ing, claim)
    assert first.claim_id == claim_id
    originals = {}
    for env in [*envs, *ordered, transform, claim]:
        # the first outcome, looked up again: every one of them has moved on since
        # (lots transferred and consumed, later issuances), so the rules would refuse
        originals[env.event_id] = await publish(ing, env)
    for env in [*envs, *ordered, transform, claim]:
        again = await publish(ing, env)
        assert again == originals[env.event_id]
        assert again.event_id == env.event_id
        assert await event_count(fstore, env.event_id) == 1
    assert originals[transform.event_id].lot_ids == outs
    assert originals[issue1.event_id].lot_ids == [lot1]
    assert originals[att_env.event_id].attestation_id == att_id
    assert originals[claim.event_id].claim_id == claim_id


async def test_a_different_envelope_reusing_a_nonce_is_still_a_replay(ing, fworld, chain):
    """Claims pass every rule a second time, so only the nonce guard can refuse them."""
    w = fworld
    env, _ = w.claim_excludes("trader-f", chain.refined[0])
    first = await publish(ing, env)
    later = w.sign(env.payload, env.signer, nonce=env.nonce, timestamp=env.timestamp + timedelta(seconds=1))
    other_lot, _ = w.claim_excludes("trader-f", chain.refined[1])
    other_lot = w.sign(other_lot.payload, env.signer, nonce=env.nonce)
    for other in (later, other_lot):
        assert other.to_json() != env.to_json()
        assert (await rejected(ing, other)).code is Code.REPLAYED_NONCE
    assert await publish(ing, env) == first  # the original is still answered


# --------------------------------------------------------------------------- failpoints on commit


@pytest.mark.parametrize(
    "error, code",
    [
        ({"errorCode": 14031}, Code.SERVICE_UNAVAILABLE),  # OutOfDiskSpace: a definite refusal
        ({"errorCode": 24}, Code.SERVICE_UNAVAILABLE),  # LockTimeout
        ({"errorCode": 11600}, Code.OUTCOME_UNKNOWN),  # InterruptedAtShutdown: the driver cannot know
        ({"errorCode": 91}, Code.OUTCOME_UNKNOWN),  # ShutdownInProgress
    ],
)
async def test_persistent_commit_error_is_typed_and_writes_nothing(ing, fworld, chain, fstore, admin, error, code):
    env, lot_id = fworld.issue(chain.attestation_id, 5)
    before = await fstore.snapshot()
    async with failpoint(admin, {"failCommands": ["commitTransaction"], **error}):
        rejection = await rejected(ing, env)
    assert rejection.code is code and rejection.retryable
    assert await fstore.snapshot() == before  # nothing written, nothing left locked:
    outcome = await publish(ing, env)  # the same envelope goes through at once
    assert outcome.lot_ids == [lot_id]


@pytest.mark.parametrize("wce_code", [64, 100])  # WriteConcernFailed (wtimeout), UnsatisfiableWriteConcern-like
async def test_write_concern_error_after_the_write_resend_returns_the_original(ing, fworld, chain, fstore, admin, wce_code):
    env, lot_id = fworld.issue(chain.attestation_id, 6)
    wce = {"code": wce_code, "errmsg": "waiting for replication timed out"}
    async with failpoint(admin, {"failCommands": ["commitTransaction"], "writeConcernError": wce}):
        with pytest.raises(Rejection) as info:
            await publish(ing, env)
        assert info.value.code in (Code.OUTCOME_UNKNOWN, Code.SERVICE_UNAVAILABLE)
        assert await event_count(fstore, env.event_id) == 1  # it did land
        # resent while the database still fails commits: the lookup answers first
        during = await publish(ing, env)
    after = await publish(ing, env)
    assert during == after and during.event_id == env.event_id and during.lot_ids == [lot_id]
    assert await event_count(fstore, env.event_id) == 1


async def test_lost_connection_on_every_commit_does_not_block_the_next_attempt(ing, fworld, chain, fstore, admin):
    env, lot_id = fworld.issue(chain.attestation_id, 7)
    before = await fstore.snapshot()
    async with failpoint(admin, {"failCommands": ["commitTransaction"], "closeConnection": True}):
        rejection = await rejected(ing, env)
    assert rejection.code is Code.OUTCOME_UNKNOWN
    assert "resubmitting the same envelope is safe" in rejection.message
    assert await fstore.snapshot() == before
    # the abandoned transaction was killed: its guards do not hold the next attempt
    # (it would otherwise conflict until transactionLifetimeLimitSeconds, ~60 s)
    assert (await publish(ing, env)).lot_ids == [lot_id]


# --------------------------------------------------------------------------- faults before the commit


@pytest.mark.parametrize("command", ["find", "insert", "findAndModify"])
@pytest.mark.parametrize("error", [{"errorCode": 11600}, {"errorCode": 14031}, {"closeConnection": True}])
async def test_database_faults_before_commit_are_service_unavailable(ing, fworld, chain, fstore, admin, command, error):
    env, _ = fworld.issue(chain.attestation_id, 9, record=False)
    before = await fstore.snapshot()
    async with failpoint(admin, {"failCommands": [command], **error}):
        rejection = await rejected(ing, env)
    assert rejection.code is Code.SERVICE_UNAVAILABLE
    assert "retry" in rejection.message
    assert await fstore.snapshot() == before


async def test_a_command_error_that_is_not_infrastructure_stays_a_bug(ing, fworld, chain, admin):
    env, _ = fworld.issue(chain.attestation_id, 9, record=False)
    async with failpoint(admin, {"failCommands": ["find"], "errorCode": 2}):  # BadValue: our query is wrong
        with pytest.raises(OperationFailure):
            await publish(ing, env)


# --------------------------------------------------------------------------- authentication before work


async def test_unauthenticated_ancestry_claims_do_no_ancestry_walk(ing, fworld, chain, lot_finds):
    w = fworld
    lot_id = chain.refined[0]
    trader = chain.world.members["trader-f"]
    w.members["ghost-f"] = Member("ghost-f", ("trader",))
    unregistered, _ = w.claim_excludes("ghost-f", lot_id)
    w.members["trader-f"] = Member("trader-f", trader.roles, openings=trader.openings)  # a key nobody registered
    wrong_key, _ = w.claim_excludes("trader-f", lot_id)
    w.members["trader-f"] = trader
    unknown_key, _ = w.claim_excludes("trader-f", lot_id)
    unknown_key = w.sign(unknown_key.payload, "trader-f", nonce=unknown_key.nonce, key_id="k9")
    for env, code in ((unregistered, Code.UNKNOWN_SIGNER), (wrong_key, Code.BAD_SIGNATURE), (unknown_key, Code.UNKNOWN_KEY)):
        lot_finds.count = 0
        assert (await rejected(ing, env)).code is code
        assert lot_finds.count <= 1  # the claimed lot itself, never a level above it
    honest, _ = w.claim_excludes("trader-f", lot_id)
    lot_finds.count = 0
    await publish(ing, honest)
    assert lot_finds.count >= 3  # the lot, then its ancestry level by level


def aggregate_claim(w: LedgerWorld, owner: str, lot_ids: list[str]):
    """An amount claim over `lot_ids` (their exact sum), by `owner`."""
    from ledger.builders import build_claim

    openings = {i: w.members[owner].openings[i] for i in lot_ids}
    total = sum(o.value for lot in openings.values() for o in lot.values())
    nonce = w.nonce()
    payload = build_claim(w.network, owner, nonce, lot_ids=lot_ids, kind="amount_in_range", openings=openings,
                          low=total, high=total)  # fmt: skip
    return w.sign(payload, owner, nonce=nonce)


async def test_an_unauthenticated_aggregate_claim_does_no_ancestry_walk(ing, fworld, chain, lot_finds):
    """A set of two lots needs the no-overlap walk: it runs only for an authenticated signer."""
    env = aggregate_claim(fworld, "trader-f", sorted(chain.refined))
    forged = fworld.sign(env.payload, "trader-f", nonce=env.nonce, key_id="k9")
    lot_finds.count = 0
    assert (await rejected(ing, forged)).code is Code.UNKNOWN_KEY
    assert lot_finds.count <= 1  # the claimed lots themselves (one $in), never a level above them
    lot_finds.count = 0
    assert (await publish(ing, env)).claim_id
    assert lot_finds.count >= 3  # the lots, then their ancestry level by level


@pytest.mark.parametrize(
    "claimed, limit, ok",
    [
        # one lot with 2 parents one level up: 3 lots, 1 level
        ("one", AncestryLimit(0, 100), False), ("one", AncestryLimit(1, 100), True),
        ("one", AncestryLimit(5, 2), False), ("one", AncestryLimit(5, 3), True),
        # two sibling lots with the same 2 parents (the no-overlap walk of an aggregate claim): 4 lots, 1 level
        ("set", AncestryLimit(0, 100), False), ("set", AncestryLimit(1, 100), True),
        ("set", AncestryLimit(5, 3), False), ("set", AncestryLimit(5, 4), True),
    ],
)
async def test_ancestry_walks_are_capped(ing, fworld, chain, fstore, claimed, limit, ok):
    saved = fstore.ancestry_limit
    fstore.ancestry_limit = limit
    try:
        if claimed == "one":
            env, _ = fworld.claim_excludes("trader-f", chain.refined[1])
        else:
            env = aggregate_claim(fworld, "trader-f", sorted(chain.refined))
        if ok:
            assert (await publish(ing, env)).claim_id
        else:
            rejection = await rejected(ing, env)
            assert rejection.code is Code.INVALID_CLAIM and "exceeds this server's limit" in rejection.message
    finally:
        fstore.ancestry_limit = saved


# --------------------------------------------------------------------------- HTTP: readiness, typed 503


@pytest.fixture(scope="module")
async def http(settings: Settings, fstore: Store) -> AsyncIterator:
    import httpx

    from api.app import create_app

    app = create_app(settings, store=fstore)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield client
    await app.state.runtime.stop()  # readiness check, query worker, ingestion pool (not the store)


@pytest.mark.parametrize("command", ["update", "find"])
@pytest.mark.parametrize("error", [{"errorCode": 14031}, {"errorCode": 11600}, {"closeConnection": True}])
async def test_readiness_reads_and_writes_liveness_does_not(http, admin, command, error):
    assert (await http.get("/healthz")).status_code == 200
    async with failpoint(admin, {"failCommands": [command], **error}):
        for path in ("/healthz", "/readyz"):
            response = await http.get(path)
            assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert (await http.get("/livez")).status_code == 200
    assert (await http.get("/readyz")).status_code == 200


GRAPHQL_RESPONSE = {"accept": "application/graphql-response+json"}


@pytest.mark.parametrize("error", [{"errorCode": 11600}, {"errorCode": 262}, {"closeConnection": True}])
async def test_reads_during_a_database_fault_are_typed_and_retryable(http, admin, chain, error, caplog):
    query = {"query": "query($id: ID!) { lot(id: $id) { id } }", "variables": {"id": chain.issued[0]}}
    caplog.set_level(logging.WARNING)
    async with failpoint(admin, {"failCommands": ["find"], **error}):
        for headers in ({}, GRAPHQL_RESPONSE):
            response = await http.post("/graphql", json=query, headers=headers)
            body = response.json()
            assert response.status_code == 200  # partial data (`lot: null`): a 2xx either way
            assert body["errors"][0]["extensions"] == {"code": "SERVICE_UNAVAILABLE", "retryAfterSeconds": 1}
            assert response.headers["retry-after"] == "1"
    # not a bug: one warning line per operation, no "unexpected error" traceback
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []
    assert any("database unavailable" in r.getMessage() for r in caplog.records)
    body = (await http.post("/graphql", json=query)).json()
    assert body == {"data": {"lot": {"id": chain.issued[0]}}}


@pytest.fixture(scope="module")
async def heavy_http(settings: Settings, fstore: Store) -> AsyncIterator:
    """Every query heavy: it executes on the query worker (api.heavy_queries), own client."""
    import httpx

    from api.app import create_app
    from api.settings import Limits

    app = create_app(settings.model_copy(update={"limits": Limits(heavy_query_cost=1)}), store=fstore)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield client, app.state.runtime.query_worker
    await app.state.runtime.stop()  # readiness check, query worker, ingestion pool (not the store)


@pytest.mark.parametrize("error", [{"errorCode": 11600}, {"errorCode": 262}, {"closeConnection": True}])
async def test_a_database_fault_on_the_query_worker_is_typed_as_on_the_loop(http, heavy_http, admin, chain, error):
    query = {"query": "query($id: ID!) { lot(id: $id) { id owner { id } } }", "variables": {"id": chain.issued[0]}}
    client, worker = heavy_http
    executed = worker.executions
    async with failpoint(admin, {"failCommands": ["find"], **error}):
        for headers in ({}, GRAPHQL_RESPONSE):
            on_worker, on_loop = (await client.post("/graphql", json=query, headers=headers),
                                  await http.post("/graphql", json=query, headers=headers))  # fmt: skip
            assert (on_worker.status_code, on_worker.json()) == (on_loop.status_code, on_loop.json())
            assert on_worker.json()["errors"][0]["extensions"] == {"code": "SERVICE_UNAVAILABLE", "retryAfterSeconds": 1}
            assert on_worker.headers["retry-after"] == "1"
    assert worker.executions - executed == 2
    assert (await client.post("/graphql", json=query)).json()["data"]["lot"]["id"] == chain.issued[0]


async def test_a_publication_during_a_database_fault_is_503_without_data(http, admin, fworld, chain, fstore):
    env, lot_id = fworld.issue(chain.attestation_id, 12)
    mutation = {"query": "mutation($e: JSON!) { issueLot(envelope: $e) { eventId lotIds } }", "variables": {"e": env.to_json()}}
    async with failpoint(admin, {"failCommands": ["find"], "errorCode": 11600}):
        response = await http.post("/graphql", json=mutation, headers=GRAPHQL_RESPONSE)
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        body = response.json()
        assert "data" not in body and body["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
        legacy = await http.post("/graphql", json=mutation)
        assert legacy.status_code == 200 and legacy.json()["data"] is None
        assert legacy.json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert await event_count(fstore, env.event_id) == 0
    body = (await http.post("/graphql", json=mutation)).json()
    assert body["data"]["issueLot"] == {"eventId": env.event_id, "lotIds": [lot_id]}


# --------------------------------------------------------------------------- revocation at commit


class RevokeAfterVerification:
    """A verifier that, once the rules accepted the publication, commits the
    revocation of its signer's key (the race of issue 7 item 6, made deterministic)."""

    def __init__(self, inner, revoke) -> None:
        self.inner = inner
        self.revoke = revoke

    def upstream(self):  # the gathering window's announcement (api.service.Verifier.upstream)
        return self.inner.upstream()

    async def apply(self, envelope, view, policy):
        effects = await self.inner.apply(envelope, view, policy)
        await self.revoke()
        return effects


async def test_a_key_revoked_between_verification_and_commit_is_refused(ing, fworld, settings, fstore):
    w = fworld
    for org in ("rev-auditor", "rev-mine"):
        await publish(ing, w.register(org, "auditor" if org == "rev-auditor" else "mine"))
    env, att_id = w.attest("rev-auditor", "rev-mine", "rev-site")
    await publish(ing, env)
    issue, lot_id = w.issue(att_id, 100)
    racing = Ingestion(fstore, settings, verifier=RevokeAfterVerification(ing.verifier, lambda: publish(ing, w.revoke("rev-mine"))))
    rejection = await rejected(racing, issue)
    assert rejection.code is Code.REVOKED_KEY and "while this publication was being verified" in rejection.message
    assert await event_count(fstore, issue.event_id) == 0
    assert await fstore.lots.count_documents({"_id": lot_id}) == 0


class RevokeInsideTheTransaction(Store):
    """Commits the revocation after this publication's transaction took its
    snapshot (its first read) and before it writes the signer's record."""

    revoke = None

    async def _confirm_signing_keys(self, session, members):
        if self.revoke is not None:
            signer = members[0].effects.envelope.signer
            await self.organizations.find_one({"_id": signer}, session=session)  # the snapshot
            revoke, self.revoke = self.revoke, None
            await revoke()
        await super()._confirm_signing_keys(session, members)


async def test_a_key_revoked_after_the_transaction_snapshot_is_refused(ing, fworld, settings, fstore):
    w = fworld
    for org in ("rev2-auditor", "rev2-mine"):
        await publish(ing, w.register(org, "auditor" if org == "rev2-auditor" else "mine"))
    env, att_id = w.attest("rev2-auditor", "rev2-mine", "rev2-site")
    await publish(ing, env)
    issue, lot_id = w.issue(att_id, 100)
    store = RevokeInsideTheTransaction(fstore.client, fstore.database, owns_client=False)
    store.revoke = lambda: publish(ing, w.revoke("rev2-mine"))
    racing = Ingestion(store, settings, verifier=ing.verifier)
    rejection = await rejected(racing, issue)
    assert rejection.code is Code.REVOKED_KEY
    assert await event_count(fstore, issue.event_id) == 0
    assert store.stats.transient_retries >= 1  # the write conflict, then a fresh snapshot that sees it


# --------------------------------------------------------------------------- the SDK resends


@pytest.mark.parametrize("fault", [
    {"failCommands": ["find"], "errorCode": 11600},  # SERVICE_UNAVAILABLE: nothing written
    {"failCommands": ["commitTransaction"], "closeConnection": True},  # OUTCOME_UNKNOWN
])  # fmt: skip
async def test_sdk_publish_resends_the_same_envelope_until_it_lands(settings, fstore, admin, fworld, chain, fault):
    """The database fails until the SDK sends its second request (the failpoint is
    lifted in the request hook), so the first answer is retryable and the resend lands."""
    import httpx

    from api.app import create_app
    from sdk.client import Client

    app = create_app(settings, store=fstore)
    sent: list[bytes] = []

    async def record(request: httpx.Request) -> None:
        sent.append(request.content)
        if len(sent) == 2:
            await admin.admin.command({"configureFailPoint": "failCommand", "mode": "off"})

    env, lot_id = fworld.issue(chain.attestation_id, 13)
    client = Client("http://test/graphql", transport=httpx.ASGITransport(app=app))
    client._http.event_hooks["request"] = [record]
    try:
        async with failpoint(admin, fault):
            result = await client.publish(env)
    finally:
        await client.aclose()
        await app.state.runtime.stop()  # readiness check, query worker, ingestion pool (not the store)
    assert result["eventId"] == env.event_id and result["lotIds"] == [lot_id]
    assert len(sent) == 2 and sent[0] == sent[1]  # resent, byte for byte the same request
    assert await event_count(fstore, env.event_id) == 1


# --------------------------------------------------------------------------- file permissions


def test_embedded_data_directory_and_info_file_are_owner_only(tmp_path):
    from api.app import _write_embedded_info

    data_dir = tmp_path / "shared"
    data_dir.mkdir()
    data_dir.chmod(0o755)  # as a careless operator (or an old release) left it
    with EmbeddedDatabase(data_dir) as db:
        assert data_dir.stat().st_mode & 0o777 == 0o700
        (data_dir / "embedded.json").write_text("{}")
        (data_dir / "embedded.json").chmod(0o644)
        _write_embedded_info(db)
        assert (data_dir / "embedded.json").stat().st_mode & 0o777 == 0o600
