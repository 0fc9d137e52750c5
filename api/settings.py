"""Server settings, read from the environment.

| variable                     | default           | meaning                                              |
|------------------------------|-------------------|------------------------------------------------------|
| MONGODB_URI                  | (absent)          | a MongoDB replica set; absent -> embedded SecantusDB |
| ORETRACE_DATABASE            | oretrace          | database name                                        |
| ORETRACE_DATA_DIR            | ./oretrace-data   | embedded database files live in <dir>/db             |
| ORETRACE_NETWORK             | oretrace-demo     | network id every envelope must carry                 |
| ORETRACE_ROOT_PUBLIC_KEY     | (required)        | hex Ed25519 key of the network operator (trust root) |
| ORETRACE_MAX_BODY_BYTES      | 1048576           | HTTP request body limit (413 above); at most 1 GiB   |
| ORETRACE_MAX_BODY_VALUES     | 10000             | JSON values one body (or a GET's variables) may hold (400 above) |
| ORETRACE_MAX_QUERY_DEPTH     | 12                | GraphQL depth limit                                  |
| ORETRACE_MAX_ALIASES         | 15                | GraphQL alias limit                                  |
| ORETRACE_MAX_TOKENS          | 2000              | GraphQL token limit                                  |
| ORETRACE_MAX_CLOCK_SKEW_SECONDS | 300            | envelope timestamp tolerance                         |
| ORETRACE_MAX_PAGE_SIZE       | 100               | largest `first` of a connection                      |
| ORETRACE_MAX_PROVENANCE_DEPTH| 256               | largest `maxDepth` of `provenance`                   |
| ORETRACE_MAX_QUERY_COST     | 10000             | cost budget of one operation (QUERY_TOO_COSTLY above) |
| ORETRACE_MAX_ENTITIES        | 100               | representations per `_entities` request              |
| ORETRACE_MAX_PROVENANCE_NODES| 1000              | lots one `provenance` answer lists (then truncated)  |
| ORETRACE_HEAVY_QUERY_COST    | 1000              | operations costing this much are "heavy"...           |
| ORETRACE_MAX_HEAVY_OPERATIONS| 1                 | ...and execute at most this many at a time           |
| ORETRACE_HEADER_TIMEOUT_SECONDS | 10             | complete request headers within this (else closed)   |
| ORETRACE_BODY_TIMEOUT_SECONDS | 30               | complete request body within this (else 408)         |
| ORETRACE_SEND_TIMEOUT_SECONDS | 30               | a client must take an answer's bytes within this (else closed) |
| ORETRACE_KEEPALIVE_TIMEOUT_SECONDS | 5           | idle keep-alive connections closed after this        |
| ORETRACE_MAX_CONNECTIONS     | 256               | open connections (more are closed; 503 over requests) |
| ORETRACE_RATE_LIMIT_PER_SECOND | 0 (off)        | requests per second per client address (429 above)   |
| ORETRACE_RATE_LIMIT_BURST    | 100               | requests a client may send at once                   |
| ORETRACE_LARGE_BODY_MEMORY_MB | 64               | memory for bodies > 64 KiB in flight: budget / (30 x max body) requests at once (2) |
| ORETRACE_LARGE_BODY_WAIT_SECONDS | 10            | a large body waits this long for its turn, then 503  |
| ORETRACE_LARGE_BODY_MIN_BYTES_PER_SECOND | 65536 | an admitted large body arrives at least this fast after a 2 s grace (else 408) |
| ORETRACE_BODY_DECODE_TIMEOUT_SECONDS | 10        | a large body's decoder process answers within this (else killed, replaced, 503); at most 600 |
| ORETRACE_VERIFY_MODE         | thread            | proof verification in worker `thread`s or `process`es |
| ORETRACE_VERIFY_WORKERS      | 1 (thread mode), CPU count (process mode) | verification batches at once (at most 64, or the CPU count if more) |
| ORETRACE_VERIFY_MAX_BATCH    | 8                 | most publications verified together in one MSM (1..64) |
| ORETRACE_MSM_THREADS         | CPU count / workers | threads one verification MSM runs on at once (at most 64, or the CPU count if more) |
| ORETRACE_VERIFY_GATHER_MS    | 10                | a free verifier waits up to this for publications on their way to it (0..50; 0 = off) |
| ORETRACE_MAX_PUBLICATIONS_PER_TRANSACTION | 8    | most publications one transaction writes (batched sequencing, api.store; 1..64, 1 = one per transaction) |
| ORETRACE_LOG_KEY             | <data_dir>/log-key.hex | hex Ed25519 seed of the log's checkpoint key    |
| ORETRACE_LOG_ORIGIN          | oretrace.log/<network> | checkpoint origin line and log key name         |
| ORETRACE_CHECKPOINT_INTERVAL | 2                 | seconds between checkpoints while the log grows      |
| ORETRACE_WITNESSES           | (none)            | `<vkey>@<url>` witnesses that cosign checkpoints     |
| ORETRACE_REQUEST_DEADLINE_SECONDS | 10           | all database work of one request (pymongo CSOT)      |
| ORETRACE_SHUTDOWN_GRACE_SECONDS | 10           | after SIGTERM, in-flight requests may finish this long (then typed 503) |
| ORETRACE_EMBEDDED_MAX_RESTARTS | 5             | failed restarts in a row of the embedded database before the server exits |
| ORETRACE_MAX_ANCESTRY_DEPTH  | 256               | levels any ancestry walk may climb (claims, bundles) |
| ORETRACE_MAX_ANCESTRY_LOTS   | 10000             | lots any ancestry walk may collect                   |
| ORETRACE_READINESS_INTERVAL_SECONDS | 1          | /readyz: a new database check at most this often (answers from a check <= this + 2 s old) |
| ORETRACE_EMBEDDED_STARTUP_TIMEOUT_SECONDS | 120  | the embedded database must answer within this after each (re)start (41 s measured on a 10^6-event ledger) |
| ORETRACE_GIL_SWITCH_INTERVAL_SECONDS | 0.001     | `sys.setswitchinterval` of the server process (`serve`): how long a thread holding Python's GIL keeps it while the event loop waits |

`pydantic-settings` is not a dependency; `Settings.from_env()` does the same
job with plain pydantic validation (clear errors on bad values).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from crypto.batch import most_workers

#: Settings read from the environment (`Settings.from_env`): field -> variable.
_ENV_SETTINGS = {
    "mongodb_uri": "MONGODB_URI",
    "database": "ORETRACE_DATABASE",
    "data_dir": "ORETRACE_DATA_DIR",
    "network": "ORETRACE_NETWORK",
    "root_public_key": "ORETRACE_ROOT_PUBLIC_KEY",
    "verify_mode": "ORETRACE_VERIFY_MODE",
    "verify_workers": "ORETRACE_VERIFY_WORKERS",
    "verify_max_batch": "ORETRACE_VERIFY_MAX_BATCH",
    "msm_threads": "ORETRACE_MSM_THREADS",
    "verify_gather_ms": "ORETRACE_VERIFY_GATHER_MS",
    "max_publications_per_transaction": "ORETRACE_MAX_PUBLICATIONS_PER_TRANSACTION",
    "log_key": "ORETRACE_LOG_KEY",
    "log_origin": "ORETRACE_LOG_ORIGIN",
    "checkpoint_interval": "ORETRACE_CHECKPOINT_INTERVAL",
    "witnesses": "ORETRACE_WITNESSES",
    "request_deadline_seconds": "ORETRACE_REQUEST_DEADLINE_SECONDS",
    "shutdown_grace_seconds": "ORETRACE_SHUTDOWN_GRACE_SECONDS",
    "embedded_max_restarts": "ORETRACE_EMBEDDED_MAX_RESTARTS",
    "max_ancestry_depth": "ORETRACE_MAX_ANCESTRY_DEPTH",
    "max_ancestry_lots": "ORETRACE_MAX_ANCESTRY_LOTS",
    "readiness_interval_seconds": "ORETRACE_READINESS_INTERVAL_SECONDS",
    "embedded_startup_timeout": "ORETRACE_EMBEDDED_STARTUP_TIMEOUT_SECONDS",
    "gil_switch_interval_seconds": "ORETRACE_GIL_SWITCH_INTERVAL_SECONDS",
}

#: The same for `Limits`, under `Settings.limits`.
_ENV_LIMITS = {
    "max_body_bytes": "ORETRACE_MAX_BODY_BYTES",
    "max_body_values": "ORETRACE_MAX_BODY_VALUES",
    "max_query_depth": "ORETRACE_MAX_QUERY_DEPTH",
    "max_aliases": "ORETRACE_MAX_ALIASES",
    "max_tokens": "ORETRACE_MAX_TOKENS",
    "max_clock_skew_seconds": "ORETRACE_MAX_CLOCK_SKEW_SECONDS",
    "max_page_size": "ORETRACE_MAX_PAGE_SIZE",
    "max_provenance_depth": "ORETRACE_MAX_PROVENANCE_DEPTH",
    "max_query_cost": "ORETRACE_MAX_QUERY_COST",
    "max_entities": "ORETRACE_MAX_ENTITIES",
    "max_provenance_nodes": "ORETRACE_MAX_PROVENANCE_NODES",
    "heavy_query_cost": "ORETRACE_HEAVY_QUERY_COST",
    "max_heavy_operations": "ORETRACE_MAX_HEAVY_OPERATIONS",
    "header_timeout_seconds": "ORETRACE_HEADER_TIMEOUT_SECONDS",
    "body_timeout_seconds": "ORETRACE_BODY_TIMEOUT_SECONDS",
    "send_timeout_seconds": "ORETRACE_SEND_TIMEOUT_SECONDS",
    "keepalive_timeout_seconds": "ORETRACE_KEEPALIVE_TIMEOUT_SECONDS",
    "max_connections": "ORETRACE_MAX_CONNECTIONS",
    "rate_limit_per_second": "ORETRACE_RATE_LIMIT_PER_SECOND",
    "rate_limit_burst": "ORETRACE_RATE_LIMIT_BURST",
    "large_body_memory_mb": "ORETRACE_LARGE_BODY_MEMORY_MB",
    "large_body_wait_seconds": "ORETRACE_LARGE_BODY_WAIT_SECONDS",
    "large_body_min_bytes_per_second": "ORETRACE_LARGE_BODY_MIN_BYTES_PER_SECOND",
    "body_decode_timeout_seconds": "ORETRACE_BODY_DECODE_TIMEOUT_SECONDS",
}

#: Peak memory of one request per byte of its body, for bodies of small JSON values
#: (`[[],[],...]`, `[{},{},...]`: ~25 MB of Python objects per MiB, measured with
#: tracemalloc, plus the body's bytes and text): sizes the large-body slots.
BODY_MEMORY_FACTOR = 30


class SettingsError(RuntimeError):
    """The configuration is incomplete or invalid (message says which variable)."""


def _source(loc: tuple, env: Mapping[str, str], overrides: Mapping[str, Any]) -> str:
    """Where a bad value came from, for `SettingsError`: the environment variable a
    user set (and the field), or the field of a keyword argument (a command-line flag)."""
    field = ".".join(str(part) for part in loc) or "settings"  # () for a model-wide error
    head, rest = (str(loc[0]), loc[1:]) if loc else ("", ())
    if overrides.get(head) is not None:  # a flag (or `limits=`) replaced the environment's value
        var = None
    elif head == "limits" and rest:
        var = _ENV_LIMITS.get(str(rest[0]))
    else:
        var = _ENV_SETTINGS.get(head)
    return f"{var} ({field})" if var and env.get(var) else field


#: The largest ORETRACE_MAX_BODY_BYTES: a decoded body comes back from its decoder process
#: in a frame of at most 1 GiB (`supervision.children.Child`'s `max_frame`), and a body
#: of 2 GiB or more cannot be sent to it at all (`supervision.children.MAX_MESSAGE_BYTES`).
MAX_BODY_BYTES = 1 << 30


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: at most MAX_BODY_BYTES: a large body goes to its decoder process (api.body_decoding)
    #: in one frame, and the decoded value comes back in one (supervision.children)
    max_body_bytes: int = Field(default=1 << 20, gt=0, le=MAX_BODY_BYTES)
    #: JSON values one request body (or a GET's `variables`, `extensions`) may hold
    #: (`ledger.encoding.check_value_count`): what decoding, copying and freeing it costs
    #: grows with this, not with its bytes. The largest envelope the rules accept holds
    #: a few hundred values, `_entities` at its cap ~300; bounded so that the server's
    #: copy of a body decoded in a child (api.body_decoding) stays a few ms of its GIL
    max_body_values: int = Field(default=10_000, ge=100, le=1_000_000)
    max_query_depth: int = Field(default=12, gt=0)
    max_aliases: int = Field(default=15, gt=0)
    max_tokens: int = Field(default=2000, gt=0)
    max_clock_skew_seconds: int = Field(default=300, ge=0)
    max_page_size: int = Field(default=100, gt=0)
    max_provenance_depth: int = Field(default=256, ge=0)
    #: resolvers.query_budget: cost units (about one object built / one loader key each)
    max_query_cost: int = Field(default=10_000, gt=0)
    max_entities: int = Field(default=100, gt=0)
    max_provenance_nodes: int = Field(default=1000, gt=0)
    heavy_query_cost: int = Field(default=1000, gt=0)
    #: 1: measured against 2 side by side (docs/performance.md, "Abuse", 14:34 UTC), /healthz
    #: p99 fell in all three heavy classes and 8 heavy queries finished no later
    max_heavy_operations: int = Field(default=1, gt=0)
    #: connection hygiene (api.http_protocol, api.app.BodyLimits, api.rate_limit; docs/operations.md)
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    body_timeout_seconds: float = Field(default=30.0, gt=0)
    send_timeout_seconds: float = Field(default=30.0, gt=0)
    keepalive_timeout_seconds: int = Field(default=5, gt=0)
    max_connections: int = Field(default=256, gt=0)
    rate_limit_per_second: float = Field(default=0.0, ge=0)  # off: a front proxy usually limits (docs)
    rate_limit_burst: int = Field(default=100, gt=0)
    #: memory for request bodies over 64 KiB being read, parsed and served at once
    #: (api.app.BodyLimits): `large_body_slots` such requests at a time
    large_body_memory_mb: int = Field(default=64, gt=0)
    #: a large body waits at most this long for a slot, then 503 + Retry-After
    large_body_wait_seconds: float = Field(default=10.0, gt=0)
    #: an admitted large body must keep arriving at this average rate (after a 2 s grace),
    #: or 408: a client trickling it would otherwise hold a slot for the whole body timeout
    large_body_min_bytes_per_second: int = Field(default=64 * 1024, gt=0)
    #: a large body's decoder process (api.body_decoding) must answer within this; a child
    #: that does not is killed and replaced, and the request answers 503 + Retry-After;
    #: bounded (a watchdog timer cannot wait `inf` seconds: it would never fire)
    body_decode_timeout_seconds: float = Field(default=10.0, gt=0, le=600)

    @property
    def large_body_slots(self) -> int:
        """Requests with a body over 64 KiB admitted at once: the memory budget over
        what one body of `max_body_bytes` may cost (BODY_MEMORY_FACTOR), at least 1."""
        return max(1, self.large_body_memory_mb * 2**20 // (self.max_body_bytes * BODY_MEMORY_FACTOR))

    @property
    def max_clock_skew(self) -> timedelta:
        return timedelta(seconds=self.max_clock_skew_seconds)


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: a MongoDB connection string (https://www.mongodb.com/docs/manual/reference/connection-string/);
    #: pymongo would take text without the scheme for a host name and fail only at the
    #: first query, after its server-selection timeout
    mongodb_uri: str | None = None
    database: str = Field(default="oretrace", pattern=r"^[A-Za-z0-9_-]{1,63}$")
    data_dir: Path = Path("./oretrace-data")
    network: str = Field(default="oretrace-demo", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    root_public_key: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    limits: Limits = Limits()
    verify_mode: Literal["process", "thread"] = "thread"
    #: at most `crypto.batch.most_workers()` (64, or the cores if more): 100000 would
    #: start that many verifier processes (process mode) or threads. None: 1 in thread mode
    #: (one lane: batches stay whole, their MSMs use every core), the cores in process mode
    verify_workers: int | None = Field(default=None, gt=0, le=most_workers())
    #: most publications verified together in one MSM (api.verification_batches); 1 = one at a time
    verify_max_batch: int = Field(default=8, ge=1, le=64)
    #: threads one verification MSM may use at once (crypto.group.set_msm_threads); None:
    #: the cores / the verification workers, at least 1 (resolved by api.service.Verifier)
    msm_threads: int | None = Field(default=None, gt=0, le=most_workers())
    #: milliseconds a free verifier may hold a batch of fewer than `verify_max_batch` for
    #: publications already on their way to it (api.service.Verifier); 0 = never. An idle
    #: server (nothing else in flight) never waits. Any client can make every publication
    #: wait the whole window, so it stays short (docs/operations.md, "Verification batches")
    verify_gather_ms: float = Field(default=10.0, ge=0, le=50)
    #: most publications written by one transaction (group commit: the publications waiting
    #: for the sequencer when it frees, api.store.Store.apply_effects); 1 = one per transaction
    max_publications_per_transaction: int = Field(default=8, ge=1, le=64)
    log_key: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$", repr=False)
    log_origin: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:/-]{1,128}$")
    checkpoint_interval: float = Field(default=2.0, gt=0, le=3600)
    witnesses: str | None = None
    embedded_log_level: str = "WARNING"
    #: seconds the embedded database may take to answer after each start or
    #: restart: it reads its collections' metadata first, which grows with the
    #: ledger (41 s at 10^6 events on 2 loaded vCPUs, docs/scaling.md)
    embedded_startup_timeout: float = Field(default=120.0, gt=0, le=3600)
    #: deadline (seconds) for all database work of one request; beyond it the
    #: request answers SERVICE_UNAVAILABLE (or OUTCOME_UNKNOWN during a commit)
    request_deadline_seconds: float = Field(default=10.0, gt=0, le=600)
    #: after SIGTERM, requests in flight may finish for this long; then they are
    #: cancelled and answer a typed 503 (api.app.TypedCancellation)
    shutdown_grace_seconds: float = Field(default=10.0, ge=0, le=600)
    #: failed restarts in a row of a dead embedded database before the server exits
    embedded_max_restarts: int = Field(default=5, gt=0, le=100)
    max_ancestry_depth: int = Field(default=256, ge=0)
    max_ancestry_lots: int = Field(default=10_000, gt=0)
    #: /readyz starts a new database check when the latest started longer ago than
    #: this, and answers from the latest completed one meanwhile (api.readiness)
    readiness_interval_seconds: float = Field(default=1.0, ge=0, le=60)
    #: `sys.setswitchinterval` of a server process (api.server.serve): a thread holding
    #: Python's GIL (a long document's validation, a large body's unpickling) hands it to the waiting event
    #: loop after at most this long; CPython's default is 0.005 (docs/performance.md)
    gil_switch_interval_seconds: float = Field(default=0.001, ge=0.0001, le=0.1)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from environment variables; keyword overrides win (None = not given)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for key, var in _ENV_SETTINGS.items():
            if env.get(var):
                values[key] = env[var]
        limits = {key: env[var] for key, var in _ENV_LIMITS.items() if env.get(var)}
        if limits:
            values["limits"] = limits
        values.update({k: v for k, v in overrides.items() if v is not None})
        if isinstance(values.get("root_public_key"), str):
            values["root_public_key"] = values["root_public_key"].strip().lower()
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{_source(err['loc'], env, overrides)}: {err['msg'].removeprefix('Value error, ')}" for err in exc.errors()
            )
            raise SettingsError(f"invalid oretrace settings: {problems}") from exc

    @field_validator("mongodb_uri")
    @classmethod
    def _connection_string(cls, uri: str | None) -> str | None:
        """pymongo's own parser for `mongodb://` (no I/O); for `mongodb+srv://`, whose
        parsing resolves DNS, the shape pymongo requires: one host name, no port."""
        if uri is None:
            return uri
        if uri.startswith("mongodb://"):
            from pymongo.errors import PyMongoError
            from pymongo.uri_parser import parse_uri

            try:
                parse_uri(uri)
            except (PyMongoError, ValueError) as exc:  # InvalidURI, ConfigurationError, a bad port
                raise ValueError(f"not a valid MongoDB connection string: {exc}") from None
        elif not re.fullmatch(r"mongodb\+srv://([^@/\s]+@)?[^,:/@\s]+(/\S*)?", uri):
            raise ValueError(
                "expected a MongoDB connection string, mongodb://HOST[:PORT][,...]/... or "
                "mongodb+srv://HOST/... (one host name, no port), with no spaces around it"
            )
        return uri

    @field_validator("witnesses")
    @classmethod
    def _witness_list(cls, text: str | None) -> str | None:
        """Parsed here, so that a bad list stops the server before anything starts
        (the log parses it again when it opens: api.translog.open_log)."""
        from .translog import parse_witnesses

        parse_witnesses(text)  # ValueError naming the bad item
        return text

    def require_root_public_key(self) -> str:
        if not self.root_public_key:
            raise SettingsError(
                "ORETRACE_ROOT_PUBLIC_KEY is not set: the server needs the network operator's "
                "Ed25519 public key (64 hex characters) to check the organisation registry"
            )
        return self.root_public_key

    @property
    def origin(self) -> str:
        """The log's checkpoint origin (C2SP tlog-checkpoint), unique per network."""
        return self.log_origin or f"oretrace.log/{self.network}"

    @property
    def ancestry_limit(self):
        """The store's cap of every ancestry walk (api.store.AncestryLimit)."""
        from .store import AncestryLimit

        return AncestryLimit(self.max_ancestry_depth, self.max_ancestry_lots)

    @property
    def embedded_storage_path(self) -> Path:
        return Path(self.data_dir) / "db"
