"""MongoDB persistence through pymongo's native async API (`AsyncMongoClient`).

Documents are plain JSON (`model_dump(mode="json")` of the ledger records, with
the record id duplicated as `_id`) and are re-validated with the ledger models
on the way out, so a hand-edited or corrupted document fails loudly instead of
flowing into a bundle.

Collections and what makes them safe:

| collection       | _id                    | notes                                                   |
|------------------|------------------------|---------------------------------------------------------|
| organizations    | org id                 | upserted whole by registry events                        |
| sites            | site id                | upserted whole (serialised by the site-attestation guard) |
| attestations     | attestation id         | by site; inserted; replaced whole when superseded/revoked |
| issuance_marks   | attestation id         | latest (seq, cumulative) of each attestation             |
| lots             | lot id                 | owner / consumed / class / parents indexes               |
| events           | event id               | the signed envelope + `seq` (ledger order) + query keys  |
| claims           | claim id               | by lot (multikey index on the claimed set `lot_ids`)     |
| sealed_openings  | "<event id>:<i>"       | by recipient                                             |
| nonces           | "<signer>:<nonce>"...  | the `nonce` guards: a replay is a duplicate key          |
| guards           | "<namespace>:<key>"    | every other guard (consume, custody, issuance, ...)      |
| log_state, log_tiles, log_checkpoints | see api/translog.py | the transparency log (docs/log.md); `head` allocates each event's `log_index` and `seq` |

`apply_effects` writes each accepted publication atomically, in ONE
multi-document transaction that it may share with the other publications
waiting at the same time (group commit, or batched sequencing: up to
ORETRACE_MAX_PUBLICATIONS_PER_TRANSACTION of them, one command per collection
for all, each member refused alone when its writes fail); the unique `_id`
of the guard documents is what makes double consumption, forked custody and
nonce replay impossible even under races between API replicas (the loser's
writes fail with a duplicate key and nothing of it is written).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import contextvars
import logging
import math
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel
import pymongo
from pymongo import ASCENDING, AsyncMongoClient, ReplaceOne, ReturnDocument, UpdateMany, WriteConcern
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
    WaitQueueTimeoutError,
    WriteConcernError,
    WTimeoutError,
)
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import ReadPreference

from ledger import anchoring
from ledger.effects import Effects, Guard
from ledger.envelope import Envelope, parse_envelope
from ledger.errors import Code, Rejection
from ledger.models import Attestation, Claim, IssuanceMark, Lot, Organization, Site
from ledger.view import MemoryView, References

from . import translog
from .settings import Settings
from .translog import LogUnavailable, TransparencyLog  # resolvers reach the log through the store

log = logging.getLogger("oretrace.store")

M = TypeVar("M", bound=BaseModel)

COLLECTIONS = (
    "organizations",
    "sites",
    "attestations",
    "issuance_marks",
    "lots",
    "events",
    "claims",
    "sealed_openings",
    "nonces",
    "guards",
    "log_state",
    "log_tiles",
    "log_checkpoints",
)
REGISTRY_TYPES = ("register_organization", "rotate_key", "revoke_key")
#: The most registry events `registry_event_ids` lists for one organisation (its
#: registration and key rotations and revocations; the operator signs each one).
MAX_REGISTRY_EVENTS = 1000
#: Values per `$in` query when looking documents up by a list of keys (`find_in`).
#: A list of 10,000 ids in one `$in` took minutes on the embedded database (measured at
#: 10^6 lots: 2,000 ids in one query 8.7 s, in chunks of 100 0.35 s; docs/scaling.md);
#: on MongoDB a chunk is one more round trip per 100 keys and a bounded query document.
IN_CHUNK = 100


class RegistryTooLong(Exception):
    """An organisation has more than MAX_REGISTRY_EVENTS registry events: they are not listed
    (a cut list would hide the latest rotations and revocations)."""
DUPLICATE_KEY = 11000
#: `comment` on the readiness probe's commands, so that database profiling (and the
#: tests' command counters) can tell health checks from request-driven reads.
READINESS_COMMENT = "oretrace/readiness"
MAX_TRANSACTION_ATTEMPTS = 10
#: ORETRACE_MAX_PUBLICATIONS_PER_TRANSACTION's default (api.settings)
DEFAULT_PUBLICATIONS_PER_TRANSACTION: int = Settings.model_fields["max_publications_per_transaction"].default
MAX_COMMIT_ATTEMPTS = 5
#: Back-off between retries (transaction and commit): full jitter, doubling from
#: BACKOFF_BASE up to BACKOFF_CAP seconds (MongoDB's transactions spec retries
#: TransientTransactionError and UnknownTransactionCommitResult; the pause keeps
#: retries from running back to back against a struggling server).
BACKOFF_BASE = 0.01
BACKOFF_CAP = 1.0
#: Seconds a client is told to wait before retrying a retryable error.
RETRY_AFTER_SECONDS = 1
#: Bound on aborting a failed commit's transaction (killSessions): the server may
#: first have to be rediscovered (a "shutting down" answer marks it unknown).
KILL_SESSION_TIMEOUT = 5.0

#: Server error codes that describe the database's state, not the command
#: (https://github.com/mongodb/mongo/blob/master/src/mongo/base/error_codes.yml):
#: HostUnreachable 6, HostNotFound 7, LockTimeout 24, MaxTimeMSExpired 50,
#: NetworkTimeout 89, ShutdownInProgress 91, WriteConflict 112, PrimarySteppedDown 189,
#: NoSuchTransaction 251, ExceededTimeLimit 262, TransactionExceededLifetimeLimitSeconds 290,
#: SocketException 9001, NotWritablePrimary 10107, InterruptedAtShutdown 11600,
#: Interrupted 11601, InterruptedDueToReplStateChange 11602, NotPrimaryNoSecondaryOk 13435,
#: NotPrimaryOrSecondary 13436, OutOfDiskSpace 14031.
INFRASTRUCTURE_CODES = frozenset(
    {6, 7, 24, 50, 89, 91, 112, 189, 251, 262, 290, 9001, 10107, 11600, 11601, 11602, 13435, 13436, 14031}
)
_RETRY_LABELS = ("TransientTransactionError", "UnknownTransactionCommitResult", "RetryableWriteError")


# --------------------------------------------------------------------------- helpers


def encode_cursor(doc_id: str) -> str:
    return base64.urlsafe_b64encode(doc_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """Opaque cursor -> last _id. ValueError on garbage."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = base64.urlsafe_b64decode(padded.encode("ascii")).decode()
    except (binascii.Error, UnicodeError, ValueError) as exc:
        raise ValueError(f"invalid cursor {cursor!r}") from exc
    if not value or len(value) > 200:
        raise ValueError(f"invalid cursor {cursor!r}")
    return value


def to_doc(record: BaseModel, doc_id: str) -> dict[str, Any]:
    return {"_id": doc_id, **record.model_dump(mode="json")}


def from_doc(model: type[M], doc: dict[str, Any]) -> M:
    """A record from its document; store-private fields (`_id`, `_rev`) are dropped."""
    data = {k: v for k, v in doc.items() if not k.startswith("_")}
    return model.model_validate(data)


def _now() -> datetime:
    return datetime.now(UTC)


def is_infrastructure_fault(exc: BaseException) -> bool:
    """True for a database that is down, paused, full, shutting down, too slow for
    the request's deadline, or answering with a retryable label: the client
    should retry later. False for everything else (a bug: INTERNAL_SERVER_ERROR)."""
    if isinstance(exc, (TimeoutError, ConnectionFailure, WaitQueueTimeoutError, ExecutionTimeout, WTimeoutError)):
        return True
    if not isinstance(exc, PyMongoError):
        return False
    if exc.timeout or isinstance(exc, WriteConcernError) or any(exc.has_error_label(x) for x in _RETRY_LABELS):
        return True
    return isinstance(exc, OperationFailure) and exc.code in INFRASTRUCTURE_CODES


def service_unavailable(what: str) -> Rejection:
    return Rejection(
        Code.SERVICE_UNAVAILABLE,
        f"{what}; nothing was written, retry in {RETRY_AFTER_SECONDS} s or later",
    )


def outcome_unknown(attempts: int) -> Rejection:
    """OUTCOME_UNKNOWN after `attempts` commit attempts, none of them answered for sure."""
    return Rejection(
        Code.OUTCOME_UNKNOWN,
        f"the database did not confirm the commit after {attempts} attempts; the publication "
        "may have landed: resubmitting the same envelope is safe (it returns the original outcome)",
    )


def _backoff(attempt: int) -> float:
    """Full-jitter exponential back-off for retry `attempt` (1, 2, ...), in seconds."""
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))


@dataclass
class SnapshotView(MemoryView):
    """The prefetched state the rules read, plus the revision of each organisation
    document read, so that writing the updated record can check nobody changed it
    in between (optimistic concurrency: a lost race is CONFLICT, not a lost update)."""

    org_revisions: dict[str, int] = field(default_factory=dict)


@dataclass
class Page:
    """One page of a connection, sorted by _id."""

    items: list[Any]
    cursors: list[str]
    has_next: bool

    @property
    def end_cursor(self) -> str | None:
        return self.cursors[-1] if self.cursors else None


@dataclass
class ProvenanceGraph:
    root: Lot
    nodes: list[Lot]  # root first, then by depth
    edges: list[tuple[str, str]]  # (parent, child), both in nodes
    truncated: bool  # some parents lie deeper than max_depth
    depth: int  # levels fetched beyond the root
    round_trips: int


@dataclass(frozen=True)
class StoredSealedOpening:
    recipient: str
    lot_ids: list[str]
    ciphertext: str
    event_id: str
    seq: int


@dataclass
class EventRecord:
    event_id: str
    seq: int
    type: str
    signer: str
    lot_ids: list[str]
    accepted_at: str
    envelope: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.event_id,
            "seq": self.seq,
            "type": self.type,
            "signer": self.signer,
            "lotIds": self.lot_ids,
            "acceptedAt": self.accepted_at,
            "envelope": self.envelope,
        }


@dataclass
class AppliedEvent:
    event_id: str
    seq: int
    accepted_at: datetime
    attempts: int = 1
    log_index: int | None = None


class _Abort(Exception):
    """Raised inside the transaction body: abort, and refuse `member` (set by
    `_on_behalf_of` when the raiser does not know it)."""

    def __init__(self, rejection: Rejection, member: _Member | None = None) -> None:
        super().__init__(rejection.message)
        self.rejection = rejection
        self.member = member


class _UnconfirmedCommit(Exception):
    """A commit attempt's answer was lost (UnknownTransactionCommitResult) and a later attempt
    failed with `error` (e.g. NoSuchTransaction from a restarted database): the transaction
    may have been applied, so the batch's members must never be told "nothing was written"
    (`Store._write_batch` may still run the batch again: a member that landed is then
    refused as a resend and answered with its original outcome by the ingestion service)."""

    def __init__(self, error: PyMongoError, attempts: int) -> None:
        super().__init__(str(error))
        self.error = error
        self.attempts = attempts


class _UnattributedLotWrite(Exception):
    """The batch's lot `bulk_write` wrote fewer lots than expected: run the transaction
    again with one update per write, to find whose (`Store._write_lots`)."""


class _UnattributedDuplicate(Exception):
    """A duplicate key that names no member: write each member alone."""


@contextlib.contextmanager
def _on_behalf_of(member: _Member) -> Iterator[None]:
    """Attribute an `_Abort` raised without a member to `member`."""
    try:
        yield
    except _Abort as abort:
        if abort.member is None:
            abort.member = member
        raise


@dataclass(eq=False)
class _Member:
    """One publication waiting for, or in, a group-commit transaction (`Store.apply_effects`)."""

    effects: Effects
    view: SnapshotView | None
    accepted_at: datetime
    event_doc: dict[str, Any]  # without `seq` / `log_index` until the transaction allocates them
    deadline: float  # its caller's deadline on the event loop's clock (loop.time(); inf: none)
    outcome: asyncio.Future[AppliedEvent]

    @property
    def alone(self) -> bool:
        """Registry and attestation events are written in a transaction of their own: their
        organisation writes (with `_rev` checks) would change the signing keys other members
        of the batch were just confirmed against, so in a batch they could not be refused
        or accepted exactly as in sequence. They are rare (the operator's registry, site
        attestations); transformations, transfers, issuances and claims are batched."""
        e = self.effects
        return bool(e.organizations or e.sites or e.attestations or e.attestation_updates)

    def settle(self, result: AppliedEvent | BaseException) -> None:
        if self.outcome.done():  # its caller was cancelled and it left the queue
            return
        if isinstance(result, BaseException):
            self.outcome.set_exception(result)
        else:
            self.outcome.set_result(result)


@dataclass(frozen=True)
class _LotWrite:
    """An update of existing lots by one member: `update` on the lots matching each of
    `filters` (one per custody step seen), `expected` lots written in all, else CONFLICT
    with message `conflict`."""

    member: _Member
    filters: list[dict[str, Any]]
    update: dict[str, Any]
    expected: int
    conflict: str


def _guard_doc(guard: Guard, event_id: str) -> dict[str, Any]:
    """A guard's document: `nonces` `_id` = its key ("<signer>:<nonce>"), `guards` `_id` = "<namespace>:<key>"."""
    doc_id = guard.key if guard.namespace == "nonce" else f"{guard.namespace}:{guard.key}"
    return {"_id": doc_id, "namespace": guard.namespace, "key": guard.key, "reason": guard.reason, "event_id": event_id}


def _guard_code(guard: Guard) -> Code:
    return Code.REPLAYED_NONCE if guard.namespace == "nonce" else Code.CONFLICT


def _already_exists(member: _Member, what: str, doc: dict[str, Any]) -> tuple[_Member, dict[str, Any], Rejection]:
    """An `_insert_attributed` row whose duplicate is ALREADY_EXISTS."""
    return member, doc, Rejection(Code.ALREADY_EXISTS, f"{what} {doc['_id']} already exists")


def _copy_error(error: Exception) -> Exception:
    """One exception object per member settled with it (each caller raises its own)."""
    if isinstance(error, Rejection):
        copy = Rejection(error.code, error.message)
        copy.__cause__ = error.__cause__
        return copy
    return error


@dataclass
class StoreStats:
    transactions: int = 0
    transient_retries: int = 0
    commit_retries: int = 0
    rejections: dict[str, int] = field(default_factory=dict)
    #: committed transactions by the number of publications each wrote (group commit)
    batch_sizes: collections.Counter[int] = field(default_factory=collections.Counter)


@dataclass(frozen=True)
class AncestryLimit:
    """Caps on every ancestry walk (claim prefetch, disclosure bundles): levels
    above the starting lots, and lots in all. Settings ORETRACE_MAX_ANCESTRY_DEPTH
    and ORETRACE_MAX_ANCESTRY_LOTS."""

    max_depth: int = 256
    max_lots: int = 10_000


@dataclass
class AcceptedPublication:
    """What an accepted publication created, as stored (for idempotent resends)."""

    event_id: str
    type: str
    lot_ids: list[str]  # lots created by the event, in the event's order
    claim_id: str | None
    attestation_id: str | None
    seq: int
    accepted_at: datetime
    envelope: dict[str, Any]
    log_index: int | None = None  # its leaf in the transparency log (None: stored before the log)


# --------------------------------------------------------------------------- store


#: The options of every client `Store.connect` makes (its `client_options` override them).
CLIENT_OPTIONS: dict[str, Any] = {
    "appname": "oretrace",
    "serverSelectionTimeoutMS": 10_000,
    "retryWrites": True,
    # A "shutting down"/"not primary" answer marks the server unknown until
    # the next heartbeat: 1 s (not the default 10 s) bounds how long a
    # restarted or recovering database stays unusable to this client.
    "heartbeatFrequencyMS": 1_000,
}


@dataclass(frozen=True)
class ClientConnection:
    """How a Store's client is made: `AsyncMongoClient(uri, **options)`. One
    constructor for the server's client and any other made alike (the
    heavy-query processes', api.heavy_queries), so that they cannot drift apart."""

    uri: str = field(repr=False)  # it may hold the database's password
    options: dict[str, Any]

    def client(self) -> AsyncMongoClient:
        return AsyncMongoClient(self.uri, **self.options)


class Store:
    def __init__(
        self,
        client: AsyncMongoClient,
        database: str,
        *,
        owns_client: bool = True,
        ancestry_limit: AncestryLimit = AncestryLimit(),
        connection: ClientConnection | None = None,
        max_publications_per_transaction: int = DEFAULT_PUBLICATIONS_PER_TRANSACTION,
    ) -> None:
        if not 1 <= max_publications_per_transaction <= 64:
            raise ValueError(f"max_publications_per_transaction must be 1..64, not {max_publications_per_transaction}")
        self.client = client
        #: how `client` was made (None: a client handed in as is); `reconnect` makes another alike
        self.connection = connection
        self.ancestry_limit = ancestry_limit
        self.db = client[database]
        self.database = database
        self._owns_client = owns_client
        self.stats = StoreStats()
        c = self.db
        self.organizations = c.organizations
        self.sites = c.sites
        self.attestations = c.attestations
        self.issuance_marks = c.issuance_marks
        self.lots = c.lots
        self.events = c.events
        self.claims = c.claims
        self.sealed_openings = c.sealed_openings
        self.nonces = c.nonces
        self.guards = c.guards
        # Every transaction writes the log head (translog.assign_position), so two of them
        # overlapping always conflict: one sequencer task per process writes them one at a
        # time, each holding every publication that waited for it (group commit:
        # apply_effects); other replicas still conflict and retry. The lock is held around
        # each transaction (bench/ingest_profile.py measures how long).
        self.log_sequencer = asyncio.Lock()
        #: most publications one transaction writes (ORETRACE_MAX_PUBLICATIONS_PER_TRANSACTION)
        self.max_publications_per_transaction = max_publications_per_transaction
        self._pending: collections.deque[_Member] = collections.deque()
        self._sequencer: asyncio.Task[None] | None = None
        self.translog: TransparencyLog | None = None  # set by the app (api.app.Runtime)

    @classmethod
    async def connect(
        cls, uri: str, database: str, *, ancestry_limit: AncestryLimit = AncestryLimit(), **client_options: Any
    ) -> Store:
        """A Store on `database` with a new client for `uri`: `CLIENT_OPTIONS`
        updated with `client_options` (any `AsyncMongoClient` keyword argument)."""
        connection = ClientConnection(uri, {**CLIENT_OPTIONS, **client_options})
        return cls(connection.client(), database, ancestry_limit=ancestry_limit, connection=connection)

    def reconnect(self) -> Store:
        """Another Store on the same database, with a new client made exactly as this
        one's was (same URI, credentials, timeouts, concerns, listeners): for use on
        another event loop, since a pymongo async client belongs to the loop it is
        first used on. Call it on the loop that will use it. The new Store owns its
        client (close it there) and has no transparency log.

        Raises ValueError for a Store made from a client handed in as is
        (`Store(client, ...)`: how that client was made is unknown)."""
        if self.connection is None:
            raise ValueError("this Store was made from a client handed in as is: use Store.connect to reconnect it")
        return Store(
            self.connection.client(), self.database, ancestry_limit=self.ancestry_limit, connection=self.connection
        )

    async def close(self) -> None:
        """Let the sequencer finish the publications it holds (a batch whose callers were
        cancelled is still written: its outcome is found by resubmission; each batch is
        bounded by its members' deadlines), stop the log's background task (it reads
        through this client), then close the client."""
        if self._sequencer is not None and not self._sequencer.done():
            await asyncio.gather(self._sequencer, return_exceptions=True)
        if self.translog is not None:
            await self.translog.stop()
        if self._owns_client:
            await self.client.close()

    async def ready(self, timeout: float = 2.0) -> bool:
        """Readiness: a majority-acknowledged write to `health` and its read back,
        within `timeout` seconds. A panicked, full or read-only engine fails it,
        where a `ping` would still pass."""
        # one document per check: concurrent probes must not read each other's token
        probe = f"readiness:{random.getrandbits(64):016x}"
        try:
            with pymongo.timeout(timeout):
                health = self.db.get_collection("health", write_concern=WriteConcern("majority"))
                await health.update_one(
                    {"_id": probe}, {"$set": {"at": _now().isoformat()}}, upsert=True, comment=READINESS_COMMENT
                )
                doc = await health.find_one({"_id": probe}, comment=READINESS_COMMENT)
                await health.delete_one({"_id": probe}, comment=READINESS_COMMENT)
        except (PyMongoError, TimeoutError, OSError) as exc:
            log.warning("readiness check failed: %s", exc)
            return False
        return doc is not None

    async def ensure_indexes(self) -> None:
        """One index per query path (idempotent)."""
        a = ASCENDING
        await asyncio.gather(
            # lots: connection filters (each sorted by _id for the cursor), DAG walks
            self.lots.create_index([("owner", a), ("consumed_by_event", a), ("_id", a)], name="owner_consumed_id"),
            self.lots.create_index([("consumed_by_event", a), ("_id", a)], name="consumed_id"),
            self.lots.create_index([("origin_class", a), ("_id", a)], name="class_id"),
            self.lots.create_index([("parents", a)], name="parents"),
            self.lots.create_index([("site_id", a)], name="site"),
            # events: by lot, by ledger order, by subject (registry / attestation chain / claim)
            self.events.create_index([("seq", a)], unique=True, name="seq"),
            self.events.create_index([("lot_ids", a), ("seq", a)], name="lot_ids_seq"),
            self.events.create_index([("org_id", a), ("seq", a)], sparse=True, name="org_seq"),
            self.events.create_index(
                [("attestation_id", a), ("issuance_seq", a)], sparse=True, name="attestation_issuance"
            ),
            self.events.create_index([("claim_id", a)], sparse=True, name="claim"),
            self.events.create_index([("site_id", a), ("type", a)], sparse=True, name="site_type"),
            # the few log-key registrations every bundle carries: a partial index holds only them
            self.events.create_index(
                [("type", a)], partialFilterExpression={"type": "register_log_key"}, name="log_key_registrations"
            ),
            self.claims.create_index([("lot_ids", a), ("created_at", a)], name="lot_ids_created"),  # multikey
            self.sealed_openings.create_index([("recipient", a), ("seq", a)], name="recipient_seq"),
            self.attestations.create_index([("site_id", a), ("valid_from", a)], name="site_from"),
            self.sites.create_index([("origin_class", a), ("_id", a)], name="class_id"),
            self.sites.create_index([("operator", a)], name="operator"),
        )
        # after the `seq` index exists: it finds the highest seq already used
        await translog.ensure_log_collections(self.db)

    # ------------------------------------------------------------------ writes

    @staticmethod
    def _event_doc(effects: Effects, accepted_at: datetime) -> dict[str, Any]:
        """The event document, without its `seq` and `log_index` (allocated in the transaction)."""
        env = effects.envelope
        payload = env.payload
        doc: dict[str, Any] = {
            "_id": env.event_id,
            "type": effects.event_type,
            "signer": env.signer,
            "key_id": env.key_id,
            "nonce": env.nonce,
            "lot_ids": list(effects.lot_ids),
            "accepted_at": accepted_at.isoformat().replace("+00:00", "Z"),
            "envelope": env.to_json(),
        }
        org_id = getattr(payload, "org_id", None)
        if org_id:
            doc["org_id"] = org_id
        if effects.event_type == "attest_site":
            doc["site_id"] = payload.site.site_id
            if effects.attestations:
                doc["attestation_id"] = effects.attestations[0].attestation_id
        elif effects.event_type == "revoke_attestation":
            doc["site_id"] = payload.site_id
            doc["attestation_id"] = payload.attestation_id
        elif effects.event_type == "issue":
            doc["site_id"] = payload.site_id
            doc["attestation_id"] = payload.attestation_id
            doc["issuance_seq"] = payload.seq
        elif effects.event_type == "transfer":
            doc["receiver"] = payload.to
        if effects.claims:
            doc["claim_id"] = effects.claims[0].claim_id
        return doc

    async def apply_effects(
        self, effects: Effects, view: SnapshotView | None = None, *, deadline: float | None = None
    ) -> AppliedEvent:
        """Write one accepted publication atomically, or raise Rejection and write nothing.

        Group commit (batched sequencing): the publication joins the queue of those
        waiting for the sequencer; the sequencer writes the waiting publications
        together, up to `max_publications_per_transaction` (setting
        ORETRACE_MAX_PUBLICATIONS_PER_TRANSACTION) in ONE multi-document
        transaction, one command per collection for the whole batch
        (`_transaction_body`). There is no timer: an idle server writes a lone
        publication at once, and a batch forms only from publications that arrived
        while the previous transaction ran. Each publication stays all-or-nothing
        and gets the outcome it would get alone, in its queue order (`_write_batch`):
        a member whose guard, nonce, custody or signing key fails is refused alone
        and the others are written by a new transaction without it; registry and
        attestation events are written alone (`_Member.alone`).

        `view` is the snapshot the rules read (from `prefetch`): organisation
        records are then written only if unchanged since (their `_rev`), so a
        concurrent key rotation cannot silently undo a revocation, and the
        signer's key is re-checked inside the transaction (`_confirm_signing_keys`).
        Without a view (tests, tools) organisations are upserted unconditionally.

        Errors (all `Rejection`): the rule codes of a lost race (CONFLICT,
        REPLAYED_NONCE, ...); SERVICE_UNAVAILABLE when the database fails before
        the commit or answers a definite commit error (the transaction is
        aborted: nothing of any member written), or when the caller's deadline
        passed while it waited for the sequencer; OUTCOME_UNKNOWN (every member of
        the batch) when every commit attempt ended without an answer, or when one
        did and the batch then failed otherwise (the publication may have
        landed: resubmitting the same envelope is safe).

        Deadlines and cancellation: `deadline` is the caller's, on the event
        loop's clock (`loop.time()`; None: no deadline). It is passed, not read
        from the caller's `pymongo.timeout`: pymongo has no public reader of the
        current deadline, and the sequencer task runs in a context of its own (the
        first caller's timeout must not bound the others' batches), so a
        `pymongo.timeout` around this call does not reach the transaction. A
        member whose deadline passed while it waited for the sequencer is refused
        (SERVICE_UNAVAILABLE, nothing written); so are a batch's members when its
        deadline passed before the batch could be run again (after a transient error
        or a refused member; OUTCOME_UNKNOWN if an earlier commit may have applied),
        never run with no time limit. A batch runs within the LATEST
        deadline of its members, so that no member is
        failed because another's deadline is near; a member's answer may then
        come after its own deadline by at most the batch's duration, plus up to
        KILL_SESSION_TIMEOUT when the database stops answering (the transaction
        it may still hold is killed before the answer, so that a resubmission
        does not conflict with it: tests/test_group_commit_faults.py, SIGSTOP). A caller
        cancelled while its publication still waits is taken out of the queue
        (nothing written); once its batch is in flight the batch is not
        cancelled with it (shielded) and its outcome is found by resubmitting
        the envelope.

        Ledger order: each member's `seq` and log leaf index are allocated
        inside the transaction by one write of the log's `head` document
        (`translog.assign_position`, `$inc` by the batch size: contiguous, in
        queue order). An event's dependencies committed before it was
        validated, so they hold smaller numbers: sorting by `seq` (or by
        `log_index`) is a valid replay order. A batch never holds a publication
        and one that depends on it: the rules validated every member against
        committed state only (the prefetch reads no uncommitted write), so a
        member that needs another member's lot, attestation or key sees it
        missing and is refused by the rules before it reaches the queue. A
        rejected or aborted publication takes no number.
        """
        accepted_at = _now()
        member = _Member(
            effects,
            view,
            accepted_at,
            self._event_doc(effects, accepted_at),
            math.inf if deadline is None else deadline,
            asyncio.get_running_loop().create_future(),
        )
        self._pending.append(member)
        if self._sequencer is None or self._sequencer.done():
            # a fresh context: the first caller's deadline must not bound the others' batches
            self._sequencer = asyncio.get_running_loop().create_task(
                self._sequence(), context=contextvars.Context()
            )
        try:
            return await asyncio.shield(member.outcome)
        except asyncio.CancelledError:
            if member in self._pending:  # not taken yet: nothing of it is written
                self._pending.remove(member)
                member.outcome.cancel()
            else:  # in flight: its outcome is found by resubmission; nobody reads it here
                member.outcome.add_done_callback(lambda f: f.cancelled() or f.exception())
            raise

    async def _sequence(self) -> None:
        """The sequencer: write the queue's publications, batch after batch, until it is empty."""
        while self._pending:
            batch = self._next_batch()
            try:
                await self._write_batch(batch)
            except asyncio.CancelledError:  # the loop is closing: nobody may wait forever
                for member in (*batch, *self._pending):
                    if not member.outcome.done():
                        member.outcome.cancel()
                self._pending.clear()
                raise
            except Exception as exc:  # a bug: the batch's members get it (INTERNAL_SERVER_ERROR); the queue goes on
                for member in batch:
                    member.settle(exc)

    def _next_batch(self) -> list[_Member]:
        """The next transaction's members: the oldest waiting publication, then those behind it
        in queue order, up to `max_publications_per_transaction`, stopping before one that
        must be written alone."""
        batch = [self._pending.popleft()]
        if batch[0].alone:
            return batch
        while self._pending and len(batch) < self.max_publications_per_transaction and not self._pending[0].alone:
            batch.append(self._pending.popleft())
        return batch

    async def _write_batch(self, members: list[_Member]) -> None:
        """Commit `members` in one transaction and settle each member's outcome.

        A member refused inside the transaction (`_Abort`: its nonce, guard, event id
        or lot id already taken, its custody changed, its key revoked) leaves the
        batch and the transaction is run again without it. Refusals are answered
        when the batch is settled, so that a refused resend of a member's envelope
        finds the original already committed, as it would in sequence. A custody
        shortfall of the batch's one `bulk_write` (which cannot say whose update
        matched too few lots) runs the transaction again with one update per lot
        write (`_write_lots`); a duplicate key that names no member writes each
        member alone. Transient errors retry the whole batch with back-off."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        late = service_unavailable("the request's deadline passed while it waited for its transaction")
        refused: list[tuple[_Member, Exception]] = [(m, _copy_error(late)) for m in members if m.deadline <= now]
        members = [m for m in members if m.deadline > now]
        deadline = max((m.deadline for m in members), default=now)
        attribute_lot_writes = False
        # runs of the transaction (`AppliedEvent.attempts`), and those that met a transient
        # error: only these count against MAX_TRANSACTION_ATTEMPTS and set the back-off, so
        # that members refused from the batch do not use up the retries of the others
        attempt = transient = 0
        unconfirmed: _UnconfirmedCommit | None = None  # a commit of this batch that may have applied
        while members:
            attempt += 1
            remaining = None if deadline == math.inf else deadline - loop.time()
            if remaining is not None and remaining <= 0:  # pymongo.timeout(0) would set no time limit at all
                failure = (
                    outcome_unknown(unconfirmed.attempts)
                    if unconfirmed is not None  # an earlier commit may have applied
                    else service_unavailable("the request's deadline passed before its transaction could run again")
                )
                refused.extend((m, _copy_error(failure)) for m in members)
                break
            try:
                with pymongo.timeout(remaining):
                    async with self.log_sequencer:
                        await self._run_transaction(members, attribute_lot_writes)
            except _Abort as abort:
                code = abort.rejection.code.value
                self.stats.rejections[code] = self.stats.rejections.get(code, 0) + 1
                members = [m for m in members if m is not abort.member]
                refused.append((abort.member, abort.rejection))
                continue
            except _UnattributedLotWrite:
                attribute_lot_writes = True
                continue
            except _UnattributedDuplicate:  # (never for one member: `_insert_attributed`)
                for member in members:
                    await self._write_batch([member])
                members = []
                break
            except (PyMongoError, _UnconfirmedCommit) as error:
                if isinstance(error, _UnconfirmedCommit):
                    unconfirmed, exc = error, error.error
                else:
                    exc = error
                transient += 1
                if (
                    exc.has_error_label("TransientTransactionError")
                    and transient < MAX_TRANSACTION_ATTEMPTS
                    and not exc.timeout
                ):
                    self.stats.transient_retries += 1
                    await asyncio.sleep(_backoff(transient))
                    continue
                if unconfirmed is not None:  # an earlier commit may have applied: never "nothing was written"
                    log.warning("commit outcome unknown, then the batch failed: %s", exc)
                    failure = outcome_unknown(unconfirmed.attempts)
                    failure.__cause__ = exc
                else:
                    failure = self._infrastructure(exc, "the database failed during the publications' transaction")
                refused.extend((m, _copy_error(failure)) for m in members)
                members = []
                break
            except Rejection as rejection:  # OUTCOME_UNKNOWN: every member may have landed
                refused.extend((m, _copy_error(rejection)) for m in members)
                members = []
                break
            self.stats.transactions += 1
            self.stats.batch_sizes[len(members)] += 1
            for m in members:
                doc = m.event_doc
                m.settle(AppliedEvent(m.effects.event_id, doc["seq"], m.accepted_at, attempt, doc["log_index"]))
            break
        for member, error in refused:
            member.settle(error)

    async def _run_transaction(self, members: list[_Member], attribute_lot_writes: bool) -> None:
        async with self.client.start_session() as session:
            await session.start_transaction(
                read_concern=ReadConcern("snapshot"),
                write_concern=WriteConcern("majority"),
                read_preference=ReadPreference.PRIMARY,
            )
            try:
                await self._transaction_body(session, members, attribute_lot_writes)
            except BaseException as exc:
                if session.in_transaction:
                    try:
                        await session.abort_transaction()
                    except PyMongoError:  # the server may have aborted it already
                        pass
                if isinstance(exc, PyMongoError):
                    # pymongo's abort is best effort (it ignores its own failure): after a fault
                    # the server may still hold the transaction and its writes (the signer's
                    # record, `head`), and every later transaction would conflict on them
                    # until transactionLifetimeLimitSeconds
                    await self._kill_session(session)
                raise
            await self._commit(session)

    @staticmethod
    def _infrastructure(exc: PyMongoError, what: str) -> Exception:
        """SERVICE_UNAVAILABLE for an infrastructure fault; the error itself (a bug) otherwise."""
        if not is_infrastructure_fault(exc):
            return exc
        log.warning("%s: %s", what, exc)
        return service_unavailable(what)

    async def _commit(self, session) -> None:
        """Commit, retrying an unknown result (UnknownTransactionCommitResult: lost
        connection, timeout, write-concern error) with back-off, as MongoDB's
        transactions spec advises; a commit retry is idempotent on the server.

        On any failure the transaction is killed (`killSessions`), so that a
        transaction the server still holds open does not keep its documents
        locked until transactionLifetimeLimitSeconds; the session is then ended
        by the caller's `async with`.

        Raises Rejection OUTCOME_UNKNOWN when the last attempt's answer was lost;
        `_UnconfirmedCommit` when an earlier one's was and the last failed otherwise
        (a restarted database answers a retried commit NoSuchTransaction, whether or
        not the first attempt applied); the PyMongoError when no attempt's answer was lost."""
        lost = False  # an attempt's answer was lost: the transaction may have been applied
        for attempt in range(1, MAX_COMMIT_ATTEMPTS + 1):
            try:
                await session.commit_transaction()
                return
            except PyMongoError as exc:
                unknown = exc.has_error_label("UnknownTransactionCommitResult")
                lost = lost or unknown
                if unknown and attempt < MAX_COMMIT_ATTEMPTS and not exc.timeout:
                    self.stats.commit_retries += 1
                    await asyncio.sleep(_backoff(attempt))
                    continue
                await self._kill_session(session)
                if unknown:
                    log.warning("commit outcome unknown after %d attempts: %s", attempt, exc)
                    raise outcome_unknown(attempt) from exc
                if lost:
                    raise _UnconfirmedCommit(exc, attempt) from exc
                raise

    async def _kill_session(self, session) -> None:
        """Abort whatever the server still holds for `session` (best effort, bounded).
        killSessions is the documented way to abort another session's transaction;
        it runs on its own session and outside the request's deadline."""

        async def kill() -> None:
            with pymongo.timeout(KILL_SESSION_TIMEOUT):
                await self.client.admin.command("killSessions", [session.session_id])

        try:  # a fresh context: the request's (possibly expired) deadline does not apply
            await asyncio.create_task(kill(), context=contextvars.Context())
        except PyMongoError as exc:  # the database may be gone: its transaction then dies with it
            log.warning("could not kill the session of a failed commit: %s", exc)

    async def _transaction_body(self, session, members: list[_Member], attribute_lot_writes: bool) -> None:
        """Every member's writes, one command per collection for the whole batch, in the
        order one publication alone checks them (so each member fails where it would
        alone): signing keys, nonces, guards, `head`, events, (registry and attestation
        records: alone), issuance marks, new lots, lot updates, claims, sealed openings.
        Inserts are ordered `insert_many`: a duplicate key's index names the member."""
        s = session
        await self._confirm_signing_keys(s, members)
        guards = [(m, g) for m in members for g in m.effects.guards]
        for collection, rows in (
            (self.nonces, [(m, g) for m, g in guards if g.namespace == "nonce"]),
            (self.guards, [(m, g) for m, g in guards if g.namespace != "nonce"]),
        ):
            await self._insert_attributed(
                s,
                collection,
                [
                    (m, _guard_doc(g, m.effects.event_id), Rejection(_guard_code(g), g.reason))
                    for m, g in rows
                ],
            )
        # in this transaction: gap-free, in commit order, contiguous in queue order
        first = await translog.assign_position(self.db, s, len(members))
        for i, m in enumerate(members):
            m.event_doc["log_index"], m.event_doc["seq"] = first.log_index + i, first.seq + i
        await self._insert_attributed(
            s,
            self.events,
            [
                (m, m.event_doc, Rejection(Code.REPLAYED_NONCE, f"event {m.effects.event_id} was already accepted"))
                for m in members
            ],
        )
        for m in members:
            with _on_behalf_of(m):
                await self._write_registry_and_attestations(s, m)
        marks = [m.effects.issuance_mark for m in members if m.effects.issuance_mark is not None]
        if marks:
            await self.issuance_marks.bulk_write(
                [ReplaceOne({"_id": k.attestation_id}, to_doc(k, k.attestation_id), upsert=True) for k in marks],
                ordered=True,
                session=s,
            )
        new_lots = [(m, to_doc(lot, lot.lot_id)) for m in members for lot in m.effects.new_lots]
        await self._insert_attributed(s, self.lots, [_already_exists(m, "lot", doc) for m, doc in new_lots])
        await self._write_lots(s, members, attribute_lot_writes)
        claims = [(m, to_doc(c, c.claim_id)) for m in members for c in m.effects.claims]
        await self._insert_attributed(s, self.claims, [_already_exists(m, "claim", doc) for m, doc in claims])
        await self._insert_attributed(
            s,
            self.sealed_openings,
            [
                _already_exists(
                    m,
                    "sealed opening",
                    {
                        "_id": f"{m.effects.event_id}:{i}",
                        "recipient": sealed.recipient,
                        "lot_ids": list(sealed.lot_ids),
                        "ciphertext": sealed.ciphertext,
                        "event_id": sealed.event_id,
                        "seq": m.event_doc["seq"],
                    },
                )
                for m in members
                for i, sealed in enumerate(m.effects.sealed)
            ],
        )

    async def _write_registry_and_attestations(self, session, member: _Member) -> None:
        """Organisations, sites and attestations of a registry or attestation event (written
        alone in its transaction: `_Member.alone`)."""
        s, effects, view = session, member.effects, member.view
        for org in effects.organizations:
            await self._write_organization(s, org, view)
        # Sites are whole-record upserts and superseded / revoked attestations whole-record
        # replacements: every event that writes them carries the site's "site-attestation"
        # guard, so concurrent attestations and revocations of one site are serialised by
        # the guard, not merged here. New attestations are inserts (an id collision fails).
        for site in effects.sites:
            await self.sites.replace_one({"_id": site.site_id}, to_doc(site, site.site_id), upsert=True, session=s)
        attestations = [to_doc(a, a.attestation_id) for a in effects.attestations]
        await self._insert_attributed(
            s, self.attestations, [_already_exists(member, "attestation", doc) for doc in attestations]
        )
        for attestation in effects.attestation_updates:
            await self.attestations.replace_one(
                {"_id": attestation.attestation_id}, to_doc(attestation, attestation.attestation_id), session=s
            )

    async def _insert_attributed(
        self, session, collection, rows: list[tuple[_Member, dict[str, Any], Rejection]]
    ) -> None:
        """One ordered `insert_many` of every row's document; a duplicate key at index i
        refuses the member of `rows[i]` with its rejection (`_Abort`)."""
        if not rows:
            return
        try:
            await collection.insert_many([doc for _, doc, _ in rows], ordered=True, session=session)
        except BulkWriteError as exc:
            dup = next((e for e in exc.details.get("writeErrors", []) if e.get("code") == DUPLICATE_KEY), None)
            if dup is None:
                raise
            member, _, rejection = rows[dup["index"]]
            raise _Abort(rejection, member) from None
        except DuplicateKeyError:
            owners = {id(m): m for m, _, _ in rows}
            if len(rows) != 1:
                if len(owners) > 1:
                    raise _UnattributedDuplicate from None
                raise _Abort(Rejection(Code.CONFLICT, "a concurrent publication won the race"), rows[0][0]) from None
            raise _Abort(rows[0][2], rows[0][0]) from None

    async def _confirm_signing_keys(self, session, members: list[_Member]) -> None:
        """Revocation at commit: each signer's registry record, as of this transaction.

        A read alone would not stop a revocation committing between this read and
        our commit (snapshot reads take no lock), so each signer's record is
        *written* (`_signed_events` += 1, once per transaction): a registry change
        committed after our snapshot makes this a write conflict
        (TransientTransactionError, retried with a new snapshot), one committed
        before it is read here. If a record changed since the rules read it
        (`_rev`), the member's key must still exist and be unrevoked, else
        REVOKED_KEY / UNKNOWN_KEY (that member alone). Correct on a replica set:
        it relies only on snapshot isolation and write conflicts. One signer: one
        `findAndModify`; several: one `update` and one `find` for all."""
        checked = [m for m in members if m.view is not None and m.effects.envelope.signer in m.view.org_revisions]
        signers = list(dict.fromkeys(m.effects.envelope.signer for m in checked))
        if not signers:  # the operator, or no snapshot (tools)
            return
        bump = {"$inc": {"_signed_events": 1}}
        if len(signers) == 1:
            doc = await self.organizations.find_one_and_update(
                {"_id": signers[0]}, bump, session=session, return_document=ReturnDocument.AFTER
            )
            records = {signers[0]: doc} if doc is not None else {}
        else:
            await self.organizations.update_many({"_id": {"$in": signers}}, bump, session=session)
            found = await self.organizations.find({"_id": {"$in": signers}}, session=session).to_list(None)
            records = {doc["_id"]: doc for doc in found}
        for m in checked:
            refusal = self._signing_key_refusal(m, records.get(m.effects.envelope.signer))
            if refusal is not None:
                raise _Abort(refusal, m)

    @staticmethod
    def _signing_key_refusal(member: _Member, doc: dict[str, Any] | None) -> Rejection | None:
        """Why `member`'s signing key no longer signs, given its signer's record in the transaction."""
        envelope = member.effects.envelope
        signer, key_id = envelope.signer, envelope.key_id
        if doc is None:
            return Rejection(Code.UNKNOWN_SIGNER, f"organisation {signer} is no longer registered")
        if int(doc.get("_rev", 0)) == member.view.org_revisions[signer]:
            return None
        key = next((k for k in from_doc(Organization, doc).signing_keys if k.key_id == key_id), None)
        if key is None:
            return Rejection(Code.UNKNOWN_KEY, f"{signer} no longer has key {key_id!r}")
        if key.revoked_at is not None:
            return Rejection(
                Code.REVOKED_KEY,
                f"key {key_id!r} of {signer} was revoked at {key.revoked_at.isoformat()}, "
                "while this publication was being verified",
            )
        return None

    @staticmethod
    def _custody_filter(effects: Effects, lot_id: str, view: SnapshotView | None) -> dict[str, Any]:
        """The lot as the rules saw it: held by the signer, at the custody step of the
        snapshot (without a snapshot - tests, tools - at any step)."""
        query: dict[str, Any] = {"_id": lot_id, "owner": effects.envelope.signer}
        seen = view.lots.get(lot_id) if view is not None else None
        if seen is not None:
            query["custody_seq"] = seen.custody_seq
        return query

    @classmethod
    def _custody_filters(cls, effects: Effects, lot_ids: list[str], view: SnapshotView | None) -> list[dict[str, Any]]:
        """`_custody_filter` for several lots: one filter per custody step seen (`_id: {$in}`),
        usually one for all. Not one `$or` of per-lot filters: SecantusDB runs an `$or`
        as a scan of the whole collection (10 s at 2*10^5 lots, against 3 ms for this
        form: docs/scaling.md), and this update runs in every transformation."""
        groups: dict[int | None, list[str]] = {}
        for lot_id in lot_ids:
            groups.setdefault(cls._custody_filter(effects, lot_id, view).get("custody_seq"), []).append(lot_id)
        return [{**cls._custody_filter(effects, ids[0], view), "_id": {"$in": ids}} for ids in groups.values()]

    def _lot_writes(self, member: _Member) -> list[_LotWrite]:
        """The updates of existing lots one publication makes, in the order it checks them alone."""
        effects, view, event_id = member.effects, member.view, member.effects.event_id
        writes = []
        if effects.consumed:
            # Consumption and transfer of one lot share no guard: the filter must also
            # pin the custody the rules saw (owner = signer, custody_seq), or a transfer
            # committed after validation would be followed by the consumption of the
            # lot the buyer now holds. Both write the lot, so a transfer committing
            # during this transaction is a write conflict (retried, then CONFLICT).
            wanted = list(dict.fromkeys(effects.consumed))
            writes.append(
                _LotWrite(
                    member,
                    [{**f, "consumed_by_event": None} for f in self._custody_filters(effects, wanted, view)],
                    {"$set": {"consumed_by_event": event_id}},
                    len(wanted),
                    f"input lot(s) {', '.join(wanted)} were consumed or transferred by a concurrent publication",
                )
            )
        for move in effects.custody_moves:
            writes.append(
                _LotWrite(
                    member,
                    [
                        {
                            "_id": move.lot_id,
                            "owner": move.from_owner,
                            "custody_seq": move.custody_seq - 1,
                            "consumed_by_event": None,
                        }
                    ],
                    {"$set": {"owner": move.to_owner, "custody_seq": move.custody_seq}},
                    1,
                    f"custody of lot {move.lot_id} changed concurrently (transfer lost the race)",
                )
            )
        # A claim covers lots its signer holds or consumed: re-check the custody the
        # rules saw (owner = signer at the snapshot's custody step) with a WRITE to
        # each lot (a read would not conflict with a transfer committing meanwhile; a
        # write does). A concurrent consumption by the signer keeps the lot eligible.
        for claim in effects.claims:
            wanted = list(dict.fromkeys(claim.lot_ids))
            writes.append(
                _LotWrite(
                    member,
                    self._custody_filters(effects, wanted, view),
                    {"$set": {"_last_claim_event": event_id}},
                    len(wanted),
                    f"lot(s) {', '.join(claim.lot_ids)}: one was transferred by a concurrent publication",
                )
            )
        return writes

    async def _write_lots(self, session, members: list[_Member], attributed: bool) -> None:
        """Every member's lot updates (`_lot_writes`), in queue order, so that two members
        updating one lot meet as they would in sequence. One ordered `bulk_write` for the
        batch; if it wrote fewer lots than expected (its result does not say whose update
        fell short) `_UnattributedLotWrite` asks for the transaction again with
        `attributed`: one `update_many` per write, the first short one refused (CONFLICT)."""
        writes = [w for m in members for w in self._lot_writes(m)]
        if not writes:
            return
        if not attributed:
            result = await self.lots.bulk_write(
                [UpdateMany(f, w.update) for w in writes for f in w.filters], ordered=True, session=session
            )
            if result.modified_count != sum(w.expected for w in writes):
                raise _UnattributedLotWrite
            return
        for w in writes:
            modified = 0
            for f in w.filters:  # one filter per custody step seen, never an `$or`
                modified += (await self.lots.update_many(f, w.update, session=session)).modified_count
            if modified != w.expected:
                raise _Abort(Rejection(Code.CONFLICT, w.conflict), w.member)

    async def _write_organization(self, session, org: Organization, view: SnapshotView | None) -> None:
        if view is None:
            current = await self.organizations.find_one({"_id": org.org_id}, {"_rev": 1}, session=session)
            rev = (current or {}).get("_rev", 0) + 1
            await self.organizations.replace_one(
                {"_id": org.org_id}, {**to_doc(org, org.org_id), "_rev": rev}, upsert=True, session=session
            )
            return
        expected = view.org_revisions.get(org.org_id)
        if expected is None:  # the rules saw no such organisation: this is a registration
            try:
                await self.organizations.insert_one({**to_doc(org, org.org_id), "_rev": 1}, session=session)
            except DuplicateKeyError:
                raise _Abort(
                    Rejection(Code.CONFLICT, f"organisation {org.org_id} was registered by a concurrent publication")
                ) from None
            return
        rev_filter: Any = expected if expected else {"$in": [0, None]}  # documents written before `_rev`
        result = await self.organizations.replace_one(
            {"_id": org.org_id, "_rev": rev_filter}, {**to_doc(org, org.org_id), "_rev": expected + 1}, session=session
        )
        if result.matched_count != 1:
            raise _Abort(
                Rejection(Code.CONFLICT, f"organisation {org.org_id} was changed by a concurrent publication")
            )

    # ------------------------------------------------------------------ ingestion reads

    async def prefetch(
        self, refs: References, authenticate: Callable[[SnapshotView], None] | None = None
    ) -> SnapshotView:
        """The ledger state an envelope's rule reads: one `$in` query per collection
        (run concurrently), then, if the rule needs whole ancestries
        (`refs.ancestry`), one `$in` query per ancestry level, capped by
        `ancestry_limit` (INVALID_CLAIM beyond it).

        `authenticate(view)` runs between the two and raises Rejection for an
        unknown signer, key or bad signature, so that no work growing with the
        ledger is done for an unauthenticated envelope."""
        view = SnapshotView()

        async def orgs() -> None:
            wanted = list(dict.fromkeys(refs.organizations))
            if not wanted:
                return
            for doc in await self.organizations.find({"_id": {"$in": wanted}}).to_list(None):
                view.organizations[doc["_id"]] = from_doc(Organization, doc)
                view.org_revisions[doc["_id"]] = int(doc.get("_rev", 0))

        async def sites() -> None:
            view.sites.update(await self.sites_by_ids(refs.sites))

        async def attestations() -> None:
            view.attestations.update(await self.attestations_by_ids(refs.attestations))

        async def marks() -> None:
            view.issuance_marks.update(await self.issuance_marks_by_ids(refs.attestations))

        async def lots() -> None:
            view.lots.update(await self.lots_by_ids(refs.lots))

        async def site_chains() -> None:
            chains = await self.attestations_by_site_ids(refs.site_attestations)
            found = {a.attestation_id: a for chain in chains.values() for a in chain}
            view.attestations.update(found)
            view.issuance_marks.update(await self.issuance_marks_by_ids(found))

        await asyncio.gather(orgs(), sites(), attestations(), marks(), lots(), site_chains())
        roots = set(getattr(refs, "ancestry", None) or ())
        if roots:
            if authenticate is not None:
                authenticate(view)  # before any work that grows with the ledger
            view.lots.update(await self.ancestry_lots(roots))
        return view

    @staticmethod
    async def find_in(
        collection, key: str, values: Sequence[Any], query: Mapping[str, Any] | None = None, projection=None
    ) -> list[dict[str, Any]]:
        """The documents matching `query` whose `key` is one of `values`: one `{key: {$in}}`
        query per IN_CHUNK values, in sequence (one pooled connection per request, whatever
        the list's length). A document matching several chunks (an array `key`) is
        returned once; no order is promised across chunks."""
        found: dict[Any, dict[str, Any]] = {}
        for start in range(0, len(values), IN_CHUNK):
            chunk = list(values[start : start + IN_CHUNK])
            for doc in await collection.find({**(query or {}), key: {"$in": chunk}}, projection).to_list(None):
                found.setdefault(doc["_id"], doc)
        return list(found.values())

    async def _by_ids(self, collection, model: type[M], ids: Iterable[str]) -> dict[str, M]:
        wanted = list(dict.fromkeys(i for i in ids if isinstance(i, str)))
        docs = await self.find_in(collection, "_id", wanted)
        return {doc["_id"]: from_doc(model, doc) for doc in docs}

    async def organizations_by_ids(self, ids: Iterable[str]) -> dict[str, Organization]:
        return await self._by_ids(self.organizations, Organization, ids)

    async def sites_by_ids(self, ids: Iterable[str]) -> dict[str, Site]:
        return await self._by_ids(self.sites, Site, ids)

    async def attestations_by_ids(self, ids: Iterable[str]) -> dict[str, Attestation]:
        return await self._by_ids(self.attestations, Attestation, ids)

    async def issuance_marks_by_ids(self, ids: Iterable[str]) -> dict[str, IssuanceMark]:
        return await self._by_ids(self.issuance_marks, IssuanceMark, ids)

    async def lots_by_ids(self, ids: Iterable[str]) -> dict[str, Lot]:
        return await self._by_ids(self.lots, Lot, ids)

    async def claims_by_ids(self, ids: Iterable[str]) -> dict[str, Claim]:
        return await self._by_ids(self.claims, Claim, ids)

    async def ancestry_lots(self, roots: Iterable[str]) -> dict[str, Lot]:
        """The lots in `roots` and all their ancestors: one `$in` query per DAG level.

        Raises Rejection(INVALID_CLAIM) when the ancestry reaches deeper than
        `ancestry_limit.max_depth` levels above the roots or holds more than
        `ancestry_limit.max_lots` lots: the walk stops there."""
        limit = self.ancestry_limit
        found: dict[str, Lot] = {}
        frontier = list(dict.fromkeys(roots))
        depth = 0
        while frontier:
            if depth > limit.max_depth or len(found) + len(frontier) > limit.max_lots:
                raise Rejection(
                    Code.INVALID_CLAIM,
                    f"the ancestry of lot(s) {', '.join(sorted(roots))} exceeds this server's limit "
                    f"({limit.max_depth} levels, {limit.max_lots} lots)",
                )
            level = await self.lots_by_ids(frontier)
            found.update(level)
            frontier = list(
                dict.fromkeys(p for lot in level.values() for p in lot.parents if p not in found)
            )
            depth += 1
        return found

    async def accepted_publication(self, event_id: str) -> AcceptedPublication | None:
        """The stored outcome of an accepted event, or None (two round trips)."""
        doc = await self.events.find_one({"_id": event_id})
        if doc is None:
            return None
        created = {
            d["_id"]
            for d in await self.lots.find(
                {"_id": {"$in": list(doc.get("lot_ids", []))}, "created_by_event": event_id}, {"_id": 1}
            ).to_list(None)
        }
        return AcceptedPublication(
            event_id=event_id,
            type=doc["type"],
            lot_ids=[i for i in doc.get("lot_ids", []) if i in created],
            claim_id=doc.get("claim_id"),
            attestation_id=doc.get("attestation_id") if doc["type"] == "attest_site" else None,
            seq=doc["seq"],
            accepted_at=datetime.fromisoformat(doc["accepted_at"].replace("Z", "+00:00")),
            envelope=doc["envelope"],
            log_index=doc.get("log_index"),
        )

    # ------------------------------------------------------------------ resolver reads

    async def claims_by_lot_ids(self, lot_ids: Iterable[str]) -> dict[str, list[Claim]]:
        """Per lot id, the claims whose set contains it, oldest first: one `$in` query on the
        multikey index `lot_ids` serves a whole DataLoader batch (a claim over several of the
        wanted lots is listed under each of them)."""
        wanted = list(dict.fromkeys(lot_ids))
        out: dict[str, list[Claim]] = {i: [] for i in wanted}
        if not wanted:
            return out
        cursor = self.claims.find({"lot_ids": {"$in": wanted}}).sort([("created_at", ASCENDING), ("_id", ASCENDING)])
        for doc in await cursor.to_list(None):
            claim = from_doc(Claim, doc)
            for lot_id in claim.lot_ids:
                if lot_id in out:
                    out[lot_id].append(claim)
        return out

    async def attestations_by_site_ids(self, site_ids: Iterable[str]) -> dict[str, list[Attestation]]:
        return await self._grouped_by(self.attestations, Attestation, "site_id", site_ids, "valid_from")

    async def _grouped_by(
        self, collection, model: type[M], key: str, ids: Iterable[str], order: str
    ) -> dict[str, list[M]]:
        """The documents whose `key` is one of `ids`, per id (every id present, oldest
        first by `order`): one `$in` query serves a whole DataLoader batch."""
        wanted = list(dict.fromkeys(ids))
        out: dict[str, list[M]] = {i: [] for i in wanted}
        if not wanted:
            return out
        cursor = collection.find({key: {"$in": wanted}}).sort([(key, ASCENDING), (order, ASCENDING)])
        for doc in await cursor.to_list(None):
            out[doc[key]].append(from_doc(model, doc))
        return out

    async def _page(self, collection, model: type[M], query: dict[str, Any], first: int, after: str | None) -> Page:
        if after is not None:
            query = {**query, "_id": {"$gt": decode_cursor(after)}}
        docs = await collection.find(query).sort("_id", ASCENDING).limit(first + 1).to_list(None)
        has_next = len(docs) > first
        docs = docs[:first]
        return Page([from_doc(model, d) for d in docs], [encode_cursor(d["_id"]) for d in docs], has_next)

    async def list_lots(
        self,
        *,
        first: int,
        after: str | None = None,
        owner: str | None = None,
        origin_class: str | None = None,
        consumed: bool | None = None,
    ) -> Page:
        query: dict[str, Any] = {}
        if owner is not None:
            query["owner"] = owner
        if origin_class is not None:
            query["origin_class"] = origin_class
        if consumed is not None:
            query["consumed_by_event"] = {"$ne": None} if consumed else None
        return await self._page(self.lots, Lot, query, first, after)

    async def list_organizations(self, *, first: int, after: str | None = None) -> Page:
        return await self._page(self.organizations, Organization, {}, first, after)

    async def list_sites(self, *, first: int, after: str | None = None, origin_class: str | None = None) -> Page:
        query = {"origin_class": origin_class} if origin_class is not None else {}
        return await self._page(self.sites, Site, query, first, after)

    async def attestation(self, attestation_id: str) -> Attestation | None:
        return (await self.attestations_by_ids([attestation_id])).get(attestation_id)

    async def event(self, event_id: str) -> EventRecord | None:
        doc = await self.events.find_one({"_id": event_id})
        return self._event_record(doc) if doc else None

    async def registry_event_ids(self, org_id: str) -> list[str]:
        """Ids of the operator-signed registry events about `org_id` (register_organization,
        rotate_key, revoke_key), in ledger order, all of them. RegistryTooLong if there are
        more than MAX_REGISTRY_EVENTS (never a list cut short)."""
        cursor = self.events.find(
            {"org_id": org_id, "type": {"$in": list(REGISTRY_TYPES)}}, projection={"_id": 1}
        ).sort("seq", 1).limit(MAX_REGISTRY_EVENTS + 1)
        ids = [d["_id"] async for d in cursor]
        if len(ids) > MAX_REGISTRY_EVENTS:
            raise RegistryTooLong(
                f"organisation {org_id} has more than {MAX_REGISTRY_EVENTS} registry events; this server does not"
                " list them (a partial list would hide the latest rotations and revocations)"
            )
        return ids

    @staticmethod
    def _event_record(doc: dict[str, Any]) -> EventRecord:
        return EventRecord(
            event_id=doc["_id"],
            seq=doc["seq"],
            type=doc["type"],
            signer=doc["signer"],
            lot_ids=list(doc.get("lot_ids", [])),
            accepted_at=doc["accepted_at"],
            envelope=doc["envelope"],
        )

    async def list_sealed_openings(self, *, recipient: str, first: int, after: str | None = None) -> Page:
        """Openings sealed to `recipient`, in ledger order (the cursor encodes `seq`)."""
        query: dict[str, Any] = {"recipient": recipient}
        if after is not None:
            try:
                query["seq"] = {"$gt": int(decode_cursor(after))}
            except ValueError:
                raise ValueError(f"invalid cursor {after!r}") from None
        docs = await self.sealed_openings.find(query).sort("seq", ASCENDING).limit(first + 1).to_list(None)
        has_next = len(docs) > first
        docs = docs[:first]
        items = [
            StoredSealedOpening(d["recipient"], list(d["lot_ids"]), d["ciphertext"], d["event_id"], d["seq"])
            for d in docs
        ]
        return Page(items, [encode_cursor(str(d["seq"])) for d in docs], has_next)

    # ------------------------------------------------------------------ provenance

    async def provenance(self, lot_id: str, max_depth: int) -> ProvenanceGraph | None:
        """The ancestry DAG of a lot, breadth-first with ONE `$in` query per level.

        Round trips = 1 + number of levels fetched (<= 1 + max_depth), whatever
        the width of the DAG; each lot is fetched once even when it is reached by
        several paths. `truncated` is true when some parents lie beyond max_depth.
        """
        round_trips = 1
        root = (await self.lots_by_ids([lot_id])).get(lot_id)
        if root is None:
            return None
        found: dict[str, Lot] = {root.lot_id: root}
        frontier = [p for p in dict.fromkeys(root.parents)]
        depth = 0
        while frontier and depth < max_depth:
            level = await self.lots_by_ids(frontier)
            round_trips += 1
            depth += 1
            found.update(level)
            frontier = list(dict.fromkeys(p for lot in level.values() for p in lot.parents if p not in found))
        edges = [(parent, lot.lot_id) for lot in found.values() for parent in lot.parents if parent in found]
        return ProvenanceGraph(
            root=root,
            nodes=list(found.values()),
            edges=edges,
            truncated=bool(frontier),
            depth=depth,
            round_trips=round_trips,
        )

    async def provenance_graphlookup(self, lot_id: str, max_depth: int) -> ProvenanceGraph | None:
        """Same result with `$graphLookup` (one round trip): slower than `provenance` on
        the embedded database, kept for a remote MongoDB where latency favours it (docs/api.md)."""
        pipeline = [
            {"$match": {"_id": lot_id}},
            {
                "$graphLookup": {
                    "from": self.lots.name,
                    "startWith": "$parents",
                    "connectFromField": "parents",
                    "connectToField": "_id",
                    "as": "ancestors",
                    "maxDepth": max(0, max_depth - 1),
                    "depthField": "_depth",
                }
            },
        ]
        if max_depth <= 0:
            pipeline = pipeline[:1]
        docs = await (await self.lots.aggregate(pipeline)).to_list(None)
        if not docs:
            return None
        doc = docs[0]
        ancestors = doc.pop("ancestors", [])
        root = from_doc(Lot, doc)
        found: dict[str, Lot] = {root.lot_id: root}
        ancestors.sort(key=lambda d: d["_depth"])
        for a in ancestors:
            a.pop("_depth", None)
            found.setdefault(a["_id"], from_doc(Lot, a))
        truncated = any(p not in found for lot in found.values() for p in lot.parents)
        edges = [(parent, lot.lot_id) for lot in found.values() for parent in lot.parents if parent in found]
        return ProvenanceGraph(root, list(found.values()), edges, truncated, max_depth, 1)

    # ------------------------------------------------------------------ disclosure bundles

    async def bundle_events(self, claim_id: str, lot_id: str | None = None) -> list[Envelope]:
        """Every signed event a verifier needs to check `claim_id` offline, in ledger order
        (`seq`): the claim, the whole ancestry of every lot of its set (issuances,
        transfers, transformations; the union, each event once), every attestation and
        revocation of the issuing sites up to the claim, the capacity chains (every
        issuance under the attestations used up to the highest seq used, and every
        issuance under a superseded attestation of those sites), and the registry
        entries of every organisation involved. The lots come from the claim; `lot_id`,
        if given, must be one of them (INVALID_CLAIM otherwise). Round trips: ancestry
        levels + 6 in sequence, plus one per attestation the ancestry's issuances use
        (run concurrently); the walk is capped by `ancestry_limit` (INVALID_CLAIM beyond).
        """
        claim = (await self.claims_by_ids([claim_id])).get(claim_id)
        if claim is None:
            raise Rejection(Code.INVALID_CLAIM, f"claim {claim_id!r} not found")
        if lot_id is not None and lot_id not in claim.lot_ids:
            raise Rejection(
                Code.INVALID_CLAIM, f"claim {claim_id} is about lot(s) {', '.join(claim.lot_ids)}, not {lot_id}"
            )
        claim_doc = await self.events.find_one({"_id": claim.event_id})
        if claim_doc is None:  # pragma: no cover - written in the same transaction
            raise Rejection(Code.INVALID_CLAIM, f"the event of claim {claim_id} is missing")
        ancestry = await self.ancestry_lots(claim.lot_ids)
        missing = [i for i in claim.lot_ids if i not in ancestry]
        if missing:  # pragma: no cover - a claim's lots exist when it is accepted
            raise Rejection(Code.LOT_NOT_FOUND, f"lot(s) {', '.join(missing)} not found")

        docs: dict[str, dict[str, Any]] = {claim_doc["_id"]: claim_doc}
        # the events up to the claim that create, transfer or consume an ancestry lot, but not
        # a transformation that only consumes claimed lots (a claim may cover lots its signer
        # consumed): its outputs are outside the ancestry, and its other inputs' history is not
        # the claim's. Two reads: the upstream lots were all consumed before the claim (each by
        # the event creating its child), so no later event but a claim names them and their
        # read needs no seq bound; the claimed lots (at most 64) can be transferred without end
        # after the claim, so their read carries the bound. One read with the bound for the
        # whole ancestry is what the embedded database plans as a walk of the `seq` index
        # (4.5 s against 0.3 s for a 1,000-level chain in a ledger of 10^6 events,
        # docs/scaling.md).
        claimed = set(claim.lot_ids)
        not_a_claim = {"type": {"$ne": "publish_claim"}}
        up_to_claim = {**not_a_claim, "seq": {"$lte": claim_doc["seq"]}}
        created = {lot.created_by_event for lot in ancestry.values()}
        read = await self.find_in(self.events, "lot_ids", [i for i in ancestry if i not in claimed], not_a_claim)
        read += await self.find_in(self.events, "lot_ids", sorted(claimed), up_to_claim)
        lot_events = list(
            {
                d["_id"]: d
                for d in read
                if d["seq"] <= claim_doc["seq"] and (d["type"] != "transform" or d["_id"] in created)
            }.values()
        )
        docs.update((d["_id"], d) for d in lot_events)

        # every attestation and revocation of each issuing site (a verifier sees
        # corrections), and the capacity chains the ancestry's issuances rely on: seq 0
        # up to the highest used, plus every issuance under a superseded attestation
        # of those sites (its cumulative carries over into its successor's chain)
        highest: dict[str, int] = {}
        sites: set[str] = set()
        for d in lot_events:
            if d["type"] == "issue":
                att = d["attestation_id"]
                highest[att] = max(highest.get(att, -1), d["issuance_seq"])
                sites.add(d["site_id"])
        if sites:
            superseded = [
                a.attestation_id
                for chain in (await self.attestations_by_site_ids(sites)).values()
                for a in chain
                if a.superseded_by is not None
            ]
            # one query per kind, without `$or`: SecantusDB runs an `$or` as a scan of the
            # whole collection (measured: 20 s at 2*10^5 events, against 9 ms for the site
            # query alone; docs/scaling.md); MongoDB plans each form with its indexes.
            up_to_claim = {"$lte": claim_doc["seq"]}
            queries = [
                {"site_id": {"$in": sorted(sites)}, "type": {"$in": ["attest_site", "revoke_attestation"]},
                 "seq": up_to_claim},  # fmt: skip
                *(
                    {"attestation_id": att, "type": "issue", "issuance_seq": {"$lte": top}, "seq": up_to_claim}
                    for att, top in highest.items()
                ),
            ]
            if superseded:
                queries.append({"attestation_id": {"$in": superseded}, "type": "issue", "seq": up_to_claim})
            for chain in await asyncio.gather(*(self.events.find(q).to_list(None) for q in queries)):
                docs.update((d["_id"], d) for d in chain)

        # registry entries of every organisation involved up to the claim (not a lot's current
        # owner: a buyer after the claim is no part of it, and naming it would disclose the sale)
        orgs: set[str] = set()
        for d in docs.values():
            orgs.add(d["signer"])
            if d.get("receiver"):
                orgs.add(d["receiver"])
        orgs.update(lot.issuer for lot in ancestry.values())
        registry = await self.events.find(
            {"org_id": {"$in": sorted(orgs)}, "type": {"$in": list(REGISTRY_TYPES)}}
        ).to_list(None)
        docs.update((d["_id"], d) for d in registry)
        # the log keys a verifier checks the bundle's checkpoint with (docs/log.md)
        docs.update((d["_id"], d) for d in await self.events.find({"type": "register_log_key"}).to_list(None))

        # log order (an event's dependencies committed before it, so it is a replay order too)
        ordered = [d["envelope"] for d in sorted(docs.values(), key=lambda d: (d.get("log_index", -1), d["seq"]))]
        # re-validating hundreds of envelopes (proof fields included) is CPU work: not on the event loop
        return await asyncio.to_thread(lambda: [parse_envelope(raw) for raw in ordered])

    async def bundle_log(self, event_ids: Sequence[str]) -> dict[str, Any] | None:
        """The bundle `log` member (ledger.anchoring) for these events, in this order:
        a checkpoint covering all of them and each one's inclusion proof at its size;
        None while the operator has not registered the log's current key (a verifier
        could not check the checkpoint: the bundle is then unanchored, and says so).

        Raises translog.LogUnavailable if the log is not running or an event has no leaf."""
        if self.translog is None:
            raise LogUnavailable("the transparency log is not running")
        if not await self.translog.key_is_registered():
            return None
        docs = await self.find_in(self.events, "_id", list(event_ids), projection={"log_index": 1})
        index_of = {d["_id"]: d.get("log_index") for d in docs}
        indices = [index_of.get(e) for e in event_ids]
        if any(i is None for i in indices):
            raise LogUnavailable("an event of the bundle has no leaf index")
        checkpoint, note = await self.translog.checkpoint_covering(max(indices))
        proofs = await self.translog.inclusion_proofs(indices, checkpoint.size)
        return anchoring.log_member(note, indices, proofs)

    # ------------------------------------------------------------------ maintenance

    async def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        """Every document of every collection, sorted by _id (tests: 'nothing was written')."""
        out: dict[str, list[dict[str, Any]]] = {}
        for name in COLLECTIONS:
            if name in ("log_tiles", "log_checkpoints"):  # derived from events, written in the background
                continue
            query = {"_id": translog.HEAD_ID} if name == "log_state" else {}  # the leaf and seq allocator only
            out[name] = await self.db[name].find(query).sort("_id", ASCENDING).to_list(None)
        return out

    async def drop(self) -> None:
        await self.client.drop_database(self.database)
