"""The per-request GraphQL context."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import strawberry

from api.service import Ingestion
from api.settings import Settings
from api.store import Store

from .loaders import Loaders


@dataclass
class Context:
    store: Store
    ingestion: Ingestion
    settings: Settings
    loaders: Loaders
    request: Any = None
    response: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: api.heavy_queries.HeavyQueryProcesses: where operations of at least `heavy_query_cost`
    #: execute (resolvers.schema.PreExecutionChecks); None = on the calling loop
    query_worker: Any = None

    @classmethod
    def create(cls, store: Store, ingestion: Ingestion, settings: Settings, request: Any = None, response: Any = None):
        return cls(store, ingestion, settings, Loaders(store), request, response)


Info = strawberry.Info[Context, None]
