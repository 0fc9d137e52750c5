"""Shared fixtures: the curve backend, the embedded database, a store per test
module, a running app, and `LedgerWorld`, a small builder of signed publications.

Fixtures (reuse them; all async ones run on the session event loop):

| fixture        | scope    | yields                                                                |
|----------------|----------|-----------------------------------------------------------------------|
| py_ecc         | function | nothing; the test runs on the pure-Python curve backend               |
| curve          | function | each name in CURVE_BACKENDS in turn, that backend active (params)     |
| embedded_db    | session  | `api.embedded.EmbeddedDatabase`, started on 127.0.0.1 (tmp data dir)  |
| mongo_uri      | session  | its connection URI                                                    |
| root_key       | session  | the network operator's `nacl.signing.SigningKey` (trust root)          |
| api_settings   | module   | `api.settings.Settings` (root key above, fresh database name,         |
|                |          | verification in threads)                                              |
| store          | module   | `api.store.Store` on a fresh database (dropped afterwards), indexed   |
| command_counter| module   | `CommandCounter`: the commands `store` sent (round trips), by name    |
| ingestion      | module   | `api.service.Ingestion` on `store`                                    |
| publish        | module   | `await publish(envelope) -> PublishOutcome` (ingestion, no HTTP)      |
| app            | module   | the Starlette app (`api.app.create_app`) bound to `store`             |
| client         | module   | `httpx.AsyncClient` on `app` through ASGITransport, base http://test  |
| gql            | module   | `await gql(query, variables=None, **kw) -> dict` (POST, the JSON body) |
| world          | module   | a `LedgerWorld` on the same network and root key                      |
| live_server    | module   | base URL of a real uvicorn serving `app` over TCP on 127.0.0.1        |

`LedgerWorld` signs real envelopes with the ledger builders (real proofs):
`register`, `attest`, `issue`, `transfer`, `transform`, `claim`; it tracks the
openings each organisation holds so later transformations can prove balance.
Publish an envelope with `await publish(envelope)` (the ingestion service,
no HTTP) or through the `gql` fixture's mutations.

`operator_wallet(network, root_key)` is the operator's SDK wallet (signs with the
root key and pins it); organisations' test wallets pin the same key with
`Wallet.generate(..., root_public_key=root_key.verify_key.encode().hex())`;
`member_wallets(prefix, network, root)` makes an auditor, a mine and a trader that way,
and `await register_and_attest_site(client, operator, wallets, site_id=...)` registers
them and has the auditor attest a site of the mine (the attestation id).

`with curve_backend(name):` switches the curve backend inside a test; like the
two backend fixtures it always restores arkworks, the backend every other test
expects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from nacl.public import PrivateKey
from pymongo import monitoring
from nacl.signing import SigningKey

from api.app import create_app
from api.embedded import EmbeddedDatabase
from api.service import Ingestion
from api.settings import Settings
from api.store import READINESS_COMMENT, Store
from crypto.group import set_msm_threads, use_backend

NETWORK = "oretrace-test"


# --------------------------------------------------------------------------- curve backends

CURVE_BACKENDS = ("arkworks", "py_ecc")
DEFAULT_CURVE_BACKEND = "arkworks"


@contextlib.contextmanager
def curve_backend(name: str) -> Iterator[str]:
    """Make `name` the active curve backend for the block, then restore the
    default even on failure: the backend is process-wide state."""
    use_backend(name)
    try:
        yield name
    finally:
        use_backend(DEFAULT_CURVE_BACKEND)


@pytest.fixture(autouse=True)
def one_msm_thread() -> None:
    """Every test starts with MSMs in one thread: `set_msm_threads` is process-wide state,
    and a server a test started (`Verifier.start`) sets it for the whole test process.
    A split's helper-thread calls depend on timing; tests of the split set it themselves."""
    set_msm_threads(1)


@pytest.fixture
def py_ecc() -> Iterator[None]:
    """Run the test on the pure-Python backend."""
    with curve_backend("py_ecc"):
        yield


@pytest.fixture(params=CURVE_BACKENDS)
def backend(request) -> str:
    """The curve backend the ledger rules verify on, once per backend (envelopes are built on
    the default one: verifying is what differs between backends)."""
    return request.param


@pytest.fixture(params=CURVE_BACKENDS)
def curve(request) -> Iterator[str]:
    """Run the test once per backend; yields the backend's name."""
    with curve_backend(request.param) as name:
        yield name


# --------------------------------------------------------------------------- database and app


@pytest.fixture(scope="session")
def embedded_db(tmp_path_factory) -> EmbeddedDatabase:
    db = EmbeddedDatabase(tmp_path_factory.mktemp("secantus"), host="127.0.0.1")
    db.start()  # from the main thread: PR_SET_PDEATHSIG is bound to the spawning thread
    yield db
    db.stop()


@pytest.fixture(scope="session")
def mongo_uri(embedded_db: EmbeddedDatabase) -> str:
    return embedded_db.uri


@pytest.fixture(scope="session")
def root_key() -> SigningKey:
    return SigningKey.generate()


def operator_wallet(network: str, root_key: SigningKey):
    """The operator's `sdk.wallet.Wallet` signing with `root_key`, pinning that key as the
    network's root (as `oretrace network init` writes it)."""
    from sdk.wallet import Wallet

    root = root_key.verify_key.encode().hex()
    operator = Wallet.generate("operator", network, key_id="root", root_public_key=root)
    operator.signing_seed = bytes(root_key)
    return operator


#: role -> (name, country) of the test organisations `member_wallets` makes.
MEMBER_PROFILES = {"auditor": ("Auditor", "CD"), "mine": ("Mine", "CD"), "trader": ("Trader", "CH")}


def member_wallets(prefix: str, network: str, root_public_key: str, roles=("auditor", "mine", "trader")):
    """{role: `sdk.wallet.Wallet`} of one test organisation per role (MEMBER_PROFILES), org id
    "<prefix>-<role>", pinning `root_public_key` (hex) as the network's root."""
    from sdk.wallet import Wallet

    return {
        role: Wallet.generate(
            f"{prefix}-{role}", network, root_public_key=root_public_key,
            name=MEMBER_PROFILES[role][0], country=MEMBER_PROFILES[role][1], roles=[role],
        )  # fmt: skip
        for role in roles
    }


async def register_and_attest_site(client, operator, wallets, *, site_id: str, name: str = "Pit") -> str:
    """Through the SDK on `client` (`sdk.client.Client`): the `operator` wallet registers every
    wallet of `wallets` ({role: Wallet}, `member_wallets`), then wallets["auditor"] attests the
    industrial site `site_id` (`name`, Lualaba, CD) of wallets["mine"] for `attestation_period()`
    with a capacity of 10^9 g. Returns the attestation id."""
    from sdk.demo_data import attestation_period
    from sdk.publisher import Publisher

    registrar = Publisher(operator, client)
    for wallet in wallets.values():
        await registrar.register_wallet(wallet)
    start, end = attestation_period()
    attested = await Publisher(wallets["auditor"], client).attest_site(
        site_id=site_id, operator=wallets["mine"].org_id, name=name, country="CD", region="Lualaba",
        lat=-10.7, lon=25.5, origin_class="industrial", valid_from=start, valid_until=end, capacity_g=10**9,
    )  # fmt: skip
    return attested.attestation_id


def fresh_database_name(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def api_settings(root_key: SigningKey, tmp_path_factory) -> Settings:
    return Settings(
        database=fresh_database_name(),
        data_dir=tmp_path_factory.mktemp("data"),
        network=NETWORK,
        root_public_key=root_key.verify_key.encode().hex(),
        verify_mode="thread",  # the default; tests/test_api_graphql.py::test_process_verifier covers "process"
    )


class CommandCounter(monitoring.CommandListener):
    """Counts the commands a client sends (round trips), by name and collection, for one database."""

    def __init__(self, database: str | None = None) -> None:
        self.database = database
        self.names: list[str] = []
        self.collections: list[object] = []  # the command's target (a collection name for find, aggregate, ...)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command.get("comment") == READINESS_COMMENT:
            return  # health checks, not the request under test
        if self.database is None or event.database_name == self.database:
            self.names.append(event.command_name)
            self.collections.append(event.command.get(event.command_name))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def reset(self) -> None:
        self.names.clear()
        self.collections.clear()

    def count(self, *names: str, collections: frozenset[str] | None = None) -> int:
        """Commands named `names` (all if none), on `collections` only if given."""
        return sum(
            1
            for n, c in zip(self.names, self.collections, strict=True)
            if (not names or n in names) and (collections is None or c in collections)
        )


@pytest.fixture(scope="module")
def command_counter(api_settings: Settings) -> CommandCounter:
    """Commands sent by the module's `store` to its database (reset() before measuring)."""
    return CommandCounter(api_settings.database)


@pytest.fixture(scope="module")
async def store(mongo_uri: str, api_settings: Settings, command_counter: CommandCounter) -> AsyncIterator[Store]:
    s = await Store.connect(mongo_uri, api_settings.database, event_listeners=[command_counter])
    await s.ensure_indexes()
    yield s
    await s.drop()
    await s.close()


@pytest.fixture(scope="module")
async def app(api_settings: Settings, store: Store):
    app = create_app(api_settings, store=store)
    yield app
    # what the app made around the module's store: its readiness check, its query
    # worker (thread, loop and database client) and its verification pool
    await app.state.runtime.stop()


@pytest.fixture(scope="module")
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        yield c


@pytest.fixture(scope="module")
def gql(client: httpx.AsyncClient) -> Callable[..., Any]:
    async def run(query: str, variables: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"query": query}
        if variables is not None:
            body["variables"] = variables
        response = await client.post("/graphql", json=body, **kwargs)
        assert response.status_code == 200, response.text
        return response.json()

    return run


@pytest.fixture(scope="module")
def ingestion(store: Store, api_settings: Settings) -> Ingestion:
    ingestion = Ingestion(store, api_settings)
    yield ingestion
    ingestion.close()


@pytest.fixture(scope="module")
def publish(ingestion: Ingestion):
    """`await publish(envelope)` -> PublishOutcome, through the ingestion service."""

    async def run(envelope):
        return await ingestion.publish(envelope.to_json())

    return run


Rewrite = Callable[[str, dict[str, Any], dict[str, Any]], dict[str, Any]]


class LyingTransport(httpx.AsyncBaseTransport):
    """An untrusted server for SDK tests: forwards every request to the real server, and
    `rewrite(query, variables, answer)` may change the decoded JSON answer before the SDK sees it."""

    def __init__(self, rewrite: Rewrite):
        self.rewrite = rewrite
        self.upstream = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        response = await self.upstream.handle_async_request(request)
        raw = await response.aread()
        await response.aclose()
        answer = self.rewrite(body.get("query", ""), body.get("variables") or {}, json.loads(raw))
        return httpx.Response(response.status_code, json=answer)

    async def aclose(self) -> None:
        await self.upstream.aclose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
async def live_server(app) -> AsyncIterator[str]:
    """The module's app under a real uvicorn on 127.0.0.1 (same event loop)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", access_log=False)
    )
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]  # leave Ctrl-C to pytest
    task = asyncio.create_task(server.serve())
    # startup precomputes all Bulletproof generators (~3 s idle, more on a loaded machine)
    for _ in range(2400):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.025)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await asyncio.wait_for(task, 15)


# --------------------------------------------------------------------------- ledger world


@dataclass
class Member:
    org_id: str
    roles: tuple[str, ...]
    signing_key: SigningKey = field(default_factory=SigningKey.generate)
    sealing_key: PrivateKey = field(default_factory=PrivateKey.generate)
    key_id: str = "k1"
    openings: dict[str, dict[str, Any]] = field(default_factory=dict)  # lot id -> class -> Opening

    @property
    def public_key(self) -> str:
        return self.signing_key.verify_key.encode().hex()

    @property
    def sealing_public(self) -> str:
        return self.sealing_key.public_key.encode().hex()


@dataclass
class AttestationState:
    attestation_id: str
    site_id: str
    origin_class: str
    operator: str
    capacity: Any  # Opening
    issued: Any  # Opening: sum of issuances so far
    next_seq: int = 0


class LedgerWorld:
    """Builds signed envelopes with real proofs. Methods return the Envelope and
    update the world's idea of who holds which openings optimistically (call
    them in the order you publish them)."""

    def __init__(self, root_key: SigningKey, network: str = NETWORK) -> None:
        self.root_key = root_key
        self.network = network
        self.members: dict[str, Member] = {}
        self.attestations: dict[str, AttestationState] = {}

    # -- helpers
    @staticmethod
    def nonce() -> str:
        return secrets.token_hex(16)

    def sign(self, payload, signer: str, *, nonce: str | None = None, timestamp: datetime | None = None,
             key: SigningKey | None = None, key_id: str | None = None):  # fmt: skip
        from ledger.envelope import sign

        if signer == "operator":
            return sign(payload, network=self.network, signer="operator", key_id=key_id or "root",
                        signing_key=key or self.root_key, nonce=nonce, timestamp=timestamp)  # fmt: skip
        member = self.members[signer]
        return sign(payload, network=self.network, signer=signer, key_id=key_id or member.key_id,
                    signing_key=key or member.signing_key, nonce=nonce, timestamp=timestamp)  # fmt: skip

    # -- registry
    def register(self, org_id: str, *roles: str, name: str | None = None, country: str = "CD"):
        from ledger.models import KeyEntry, RegisterOrganization

        member = self.members.get(org_id) or Member(org_id, roles)
        self.members[org_id] = member
        payload = RegisterOrganization(
            org_id=org_id,
            name=name or org_id.replace("-", " ").title(),
            country=country,
            roles=list(roles),
            signing_keys=[KeyEntry(key_id=member.key_id, public_key=member.public_key)],
            sealing_key=member.sealing_public,
        )
        return self.sign(payload, "operator")

    def revoke(self, org_id: str, key_id: str = "k1"):
        from ledger.models import RevokeKey

        return self.sign(RevokeKey(org_id=org_id, key_id=key_id, reason="test"), "operator")

    # -- sites
    def attest(self, auditor: str, operator: str, site_id: str, origin_class: str = "industrial",
               capacity: int = 10**9, nonce: str | None = None):  # fmt: skip
        from crypto.pedersen import Opening
        from ledger import statements as st
        from ledger.builders import build_attestation
        from ledger.models import Location, SiteInfo

        nonce = nonce or self.nonce()
        cap = Opening.fresh(capacity)
        site = SiteInfo(site_id=site_id, operator=operator, name=f"Site {site_id}", country="CD",
                        region="Lualaba", location=Location(lat=-10.7, lon=25.5), origin_class=origin_class)  # fmt: skip
        now = datetime.now(UTC)
        payload = build_attestation(self.network, auditor, nonce, site=site, valid_from=now - timedelta(days=1),
                                    valid_until=now + timedelta(days=365), capacity=cap,
                                    operator_sealing_key=self.members[operator].sealing_public)  # fmt: skip
        att_id = st.attestation_id(self.network, auditor, nonce)
        self.attestations[att_id] = AttestationState(att_id, site_id, origin_class, operator, cap, Opening.zero())
        return self.sign(payload, auditor, nonce=nonce), att_id

    def issue(self, attestation_id: str, amount: int, product: str = "cobalt hydroxide", seq: int | None = None,
              record: bool = True):  # fmt: skip
        """An issuance envelope; `record=False` leaves the attestation's chain state alone
        (for envelopes that are meant to be rejected, or to fork the sequence)."""
        from crypto.pedersen import Opening
        from ledger import statements as st
        from ledger.builders import build_issue

        att = self.attestations[attestation_id]
        operator = self.members[att.operator]
        nonce = self.nonce()
        opening = Opening.fresh(amount)
        payload = build_issue(self.network, att.operator, nonce, site_id=att.site_id, origin_class=att.origin_class,
                              attestation_id=attestation_id, seq=att.next_seq if seq is None else seq,
                              opening=opening, issued_before=att.issued, capacity=att.capacity, product=product,
                              owner_sealing_key=operator.sealing_public)  # fmt: skip
        lot_id = st.issued_lot_id(self.network, att.operator, nonce)
        if record:
            att.issued = att.issued + opening
            att.next_seq += 1
            operator.openings[lot_id] = {att.origin_class: opening}
        return self.sign(payload, att.operator, nonce=nonce), lot_id

    # -- lots
    def transfer(self, owner: str, lot_id: str, to: str):
        from ledger.builders import build_transfer

        openings = self.members[owner].openings[lot_id]
        payload = build_transfer(lot_id=lot_id, to=to, openings=openings,
                                 receiver_sealing_key=self.members[to].sealing_public)  # fmt: skip
        self.members[to].openings[lot_id] = openings
        return self.sign(payload, owner)

    def transform(self, owner: str, inputs: list[str], shares: list[float] | None = None,
                  process: str = "refine", product: str = "cobalt sulfate", keep: float = 0.98):  # fmt: skip
        """Consume `inputs`, create len(shares) outputs splitting `keep` of every class."""
        from crypto.pedersen import Opening
        from ledger import statements as st
        from ledger.builders import PlannedOutput, build_transform

        member = self.members[owner]
        shares = shares or [1.0]
        totals: dict[str, int] = {}
        for lot_id in inputs:
            for k, o in member.openings[lot_id].items():
                totals[k] = totals.get(k, 0) + o.value
        outputs = []
        for share in shares:
            outputs.append(
                PlannedOutput(product, {k: Opening.fresh(int(v * keep * share)) for k, v in totals.items()})
            )
        nonce = self.nonce()
        payload = build_transform(self.network, owner, nonce, process=process,
                                  inputs={i: member.openings[i] for i in inputs}, outputs=outputs,
                                  owner_sealing_key=member.sealing_public)  # fmt: skip
        out_ids = st.output_lot_ids(self.network, owner, nonce, len(outputs))
        for lot_id, out in zip(out_ids, outputs, strict=True):
            member.openings[lot_id] = dict(out.openings)
        return self.sign(payload, owner, nonce=nonce), out_ids

    def claim_excludes(self, owner: str, lot_id: str, origin_class: str = "artisanal"):
        from ledger import statements as st
        from ledger.builders import build_claim

        nonce = self.nonce()
        payload = build_claim(self.network, owner, nonce, lot_ids=[lot_id], kind="ancestry_excludes",
                              origin_class=origin_class)  # fmt: skip
        return self.sign(payload, owner, nonce=nonce), st.claim_id(self.network, owner, nonce)

    def claim_share(self, owner: str, lot_id: str, origin_class: str, p: int, q: int, at_least: bool = True):
        from ledger import statements as st
        from ledger.builders import build_claim

        nonce = self.nonce()
        payload = build_claim(self.network, owner, nonce, lot_ids=[lot_id],
                              kind="share_at_least" if at_least else "share_at_most",
                              openings={lot_id: self.members[owner].openings[lot_id]}, origin_class=origin_class, p=p, q=q)  # fmt: skip
        return self.sign(payload, owner, nonce=nonce), st.claim_id(self.network, owner, nonce)


@pytest.fixture(scope="module")
def world(root_key: SigningKey) -> LedgerWorld:
    return LedgerWorld(root_key)


@dataclass
class Chain:
    """A small published chain: mine -> trader -> refiner, with ids to query."""

    world: LedgerWorld
    attestation_id: str
    site_id: str
    issued: list[str]
    refined: list[str]
    claim_id: str


async def build_chain(world: LedgerWorld, publish, suffix: str = "") -> Chain:
    """Register auditor, mine, trader, refiner (+ OEM); attest a site; issue two
    lots; transfer them to the trader; the trader merges them into two outputs;
    publish an ancestry_excludes(artisanal) claim on the first output."""
    auditor, mine, trader, oem = (f"auditor{suffix}", f"mine{suffix}", f"trader{suffix}", f"oem{suffix}")
    for org_id, roles in ((auditor, ("auditor",)), (mine, ("mine",)), (trader, ("trader",)), (oem, ("oem",))):
        await publish(world.register(org_id, *roles))
    site_id = f"site{suffix or '-a'}"
    env, att_id = world.attest(auditor, mine, site_id, "industrial", capacity=50_000_000)
    await publish(env)
    issued = []
    for amount in (1_000_000, 2_000_000):
        env, lot_id = world.issue(att_id, amount)
        await publish(env)
        issued.append(lot_id)
    for lot_id in issued:
        await publish(world.transfer(mine, lot_id, trader))
    env, outs = world.transform(trader, issued, shares=[0.5, 0.5], process="merge")
    await publish(env)
    env, claim_id = world.claim_excludes(trader, outs[0], "artisanal")
    await publish(env)
    return Chain(world, att_id, site_id, issued, outs, claim_id)


# the CPU count is used by a few tests to size concurrency
CPUS = os.cpu_count() or 1
