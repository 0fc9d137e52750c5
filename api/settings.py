"""Server settings, read from the environment.

| variable                     | default           | meaning                                              |
|------------------------------|-------------------|------------------------------------------------------|
| MONGODB_URI                  | (absent)          | a MongoDB replica set; absent -> embedded SecantusDB |
| ORETRACE_DATABASE            | oretrace          | database name                                        |
| ORETRACE_DATA_DIR            | ./oretrace-data   | embedded database files live in <dir>/db             |
| ORETRACE_NETWORK             | oretrace-demo     | network id every envelope must carry                 |
| ORETRACE_ROOT_PUBLIC_KEY     | (required)        | hex Ed25519 key of the network operator (trust root) |
| ORETRACE_MAX_BODY_BYTES      | 1048576           | HTTP request body limit (413 above)                  |
| ORETRACE_MAX_QUERY_DEPTH     | 12                | GraphQL depth limit                                  |
| ORETRACE_MAX_ALIASES         | 15                | GraphQL alias limit                                  |
| ORETRACE_MAX_TOKENS          | 2000              | GraphQL token limit                                  |
| ORETRACE_MAX_CLOCK_SKEW_SECONDS | 300            | envelope timestamp tolerance                         |
| ORETRACE_MAX_PAGE_SIZE       | 100               | largest `first` of a connection                      |
| ORETRACE_MAX_PROVENANCE_DEPTH| 256               | largest `maxDepth` of `provenance`                   |
| ORETRACE_VERIFY_MODE         | thread            | proof verification in worker `thread`s or `process`es |
| ORETRACE_VERIFY_WORKERS      | CPU count         | verification workers                                 |
| ORETRACE_REQUEST_DEADLINE_SECONDS | 10           | all database work of one request (pymongo CSOT)      |
| ORETRACE_MAX_ANCESTRY_DEPTH  | 256               | levels any ancestry walk may climb (claims, bundles) |
| ORETRACE_MAX_ANCESTRY_LOTS   | 10000             | lots any ancestry walk may collect                   |

`pydantic-settings` is not a dependency; `Settings.from_env()` does the same
job with plain pydantic validation (clear errors on bad values).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

_ENV_LIMITS = {
    "max_body_bytes": "ORETRACE_MAX_BODY_BYTES",
    "max_query_depth": "ORETRACE_MAX_QUERY_DEPTH",
    "max_aliases": "ORETRACE_MAX_ALIASES",
    "max_tokens": "ORETRACE_MAX_TOKENS",
    "max_clock_skew_seconds": "ORETRACE_MAX_CLOCK_SKEW_SECONDS",
    "max_page_size": "ORETRACE_MAX_PAGE_SIZE",
    "max_provenance_depth": "ORETRACE_MAX_PROVENANCE_DEPTH",
}


class SettingsError(RuntimeError):
    """The configuration is incomplete or invalid (message says which variable)."""


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_body_bytes: int = Field(default=1 << 20, gt=0)
    max_query_depth: int = Field(default=12, gt=0)
    max_aliases: int = Field(default=15, gt=0)
    max_tokens: int = Field(default=2000, gt=0)
    max_clock_skew_seconds: int = Field(default=300, ge=0)
    max_page_size: int = Field(default=100, gt=0)
    max_provenance_depth: int = Field(default=256, ge=0)

    @property
    def max_clock_skew(self) -> timedelta:
        return timedelta(seconds=self.max_clock_skew_seconds)


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mongodb_uri: str | None = None
    database: str = Field(default="oretrace", pattern=r"^[A-Za-z0-9_-]{1,63}$")
    data_dir: Path = Path("./oretrace-data")
    network: str = Field(default="oretrace-demo", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    root_public_key: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    limits: Limits = Limits()
    verify_mode: Literal["process", "thread"] = "thread"
    verify_workers: int | None = Field(default=None, gt=0)
    embedded_log_level: str = "WARNING"
    embedded_startup_timeout: float = 30.0
    #: deadline (seconds) for all database work of one request; beyond it the
    #: request answers SERVICE_UNAVAILABLE (or OUTCOME_UNKNOWN during a commit)
    request_deadline_seconds: float = Field(default=10.0, gt=0, le=600)
    max_ancestry_depth: int = Field(default=256, ge=0)
    max_ancestry_lots: int = Field(default=10_000, gt=0)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from environment variables; keyword overrides win (None = not given)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        if env.get("MONGODB_URI"):
            values["mongodb_uri"] = env["MONGODB_URI"]
        for key, var in (
            ("database", "ORETRACE_DATABASE"),
            ("data_dir", "ORETRACE_DATA_DIR"),
            ("network", "ORETRACE_NETWORK"),
            ("root_public_key", "ORETRACE_ROOT_PUBLIC_KEY"),
            ("verify_mode", "ORETRACE_VERIFY_MODE"),
            ("verify_workers", "ORETRACE_VERIFY_WORKERS"),
            ("request_deadline_seconds", "ORETRACE_REQUEST_DEADLINE_SECONDS"),
            ("max_ancestry_depth", "ORETRACE_MAX_ANCESTRY_DEPTH"),
            ("max_ancestry_lots", "ORETRACE_MAX_ANCESTRY_LOTS"),
        ):
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
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
            )
            raise SettingsError(f"invalid oretrace settings: {problems}") from exc

    def require_root_public_key(self) -> str:
        if not self.root_public_key:
            raise SettingsError(
                "ORETRACE_ROOT_PUBLIC_KEY is not set: the server needs the network operator's "
                "Ed25519 public key (64 hex characters) to check the organisation registry"
            )
        return self.root_public_key

    @property
    def ancestry_limit(self):
        from .store import AncestryLimit

        return AncestryLimit(self.max_ancestry_depth, self.max_ancestry_lots)

    @property
    def embedded_storage_path(self) -> Path:
        return Path(self.data_dir) / "db"
