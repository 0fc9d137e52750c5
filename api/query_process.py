"""The heavy-query process: `python -m api.query_process`, a supervised child
(`supervision.children`) that executes GraphQL queries with its own event loop,
database client and schema, and answers each with its response already encoded.

The server side (starting, replacing, time limits) is `api.heavy_queries`; this
module is what runs in the child, plus the three messages both sides exchange
(frames of `supervision.children`: 4-byte length || pickle, written by oretrace's
own code on either side, never by a client):

    1st message      Config     (parent -> child) the MongoDB URI (with the
                                embedded database's credentials), client options,
                                database name, ancestry caps, the server's Settings
                                without its secrets; the child answers ("ready", pid)
    then, per query  Request    (parent -> child) document text, variables,
                                operation name, the request's `extensions`
                     Answer     (child -> parent) the response body (bytes), its
                                error codes, whether `data` is null

The configuration travels as the first message, never in argv or the environment
(`environment(root, inherit=False)`: PATH and PYTHONPATH only), so the database
password is in neither /proc/PID/cmdline nor /proc/PID/environ of the child.

Per request the child parses the document (cached, `DOCUMENT_CACHE_SIZE` texts),
executes it with graphql-core's `execute` exactly as Strawberry does (the same
schema from `resolvers.schema.build_schema`, Strawberry's executor class, a
`resolvers.context.Context` over its own Store, the request deadline as
`pymongo.timeout`), then treats the errors as the server's extensions do, in
their order: logged (`resolvers.errors.log_errors`: an unexpected exception's
traceback goes to this process's stderr, the server's log, once), database faults
typed SERVICE_UNAVAILABLE (`api.app.DatabaseFaults.typed_errors`), unexpected
exceptions masked (`resolvers.errors.mask`). The body is Strawberry's response
(`{"data": ..., "errors": [...]}`) in Strawberry's compact JSON: the main process
never builds nor encodes the large answer. The document was parsed, validated,
its variables coerced and its cost checked by the server before it was sent.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

#: the server's log line format (api.server.serve), for this process's stderr
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

log = logging.getLogger("oretrace.api")


@dataclass(frozen=True)
class Config:
    """The child's configuration, its first message. `options`: the server client's
    `AsyncMongoClient` options (api.store.ClientConnection) without `event_listeners`
    (objects of the server's process). `settings`: api.settings.Settings with
    `mongodb_uri` and `log_key` removed. `log_level`: the server's root log level."""

    uri: str = field(repr=False)  # it holds the database's password
    options: dict[str, Any]
    database: str
    ancestry_limit: Any  # api.store.AncestryLimit
    settings: Any  # api.settings.Settings
    log_level: int = logging.WARNING


@dataclass(frozen=True)
class Request:
    """One operation to execute: what the client sent (already checked by the server)."""

    query: str
    variables: dict[str, Any] | None
    operation_name: str | None
    extensions: dict[str, Any] | None


@dataclass(frozen=True)
class Answer:
    """The response `body` (UTF-8 JSON, Strawberry's compact encoding), the
    `extensions.code` of each of its errors (None for an error without one), and
    whether its `data` is null: what the server needs for the HTTP status and
    Retry-After (api.app.GraphQLView._retry_hint) without reading the body.
    `request_error`: an exception escaped graphql-core's `execute` (outside any
    field), which in-loop Strawberry answers as a PreExecutionError: under
    graphql-response+json, 400 and no `data` (api.app.GraphQLView.process_result)."""

    body: bytes
    codes: tuple[str | None, ...]
    data_is_null: bool
    request_error: bool = False

    @classmethod
    def of(cls, response: dict[str, Any], *, request_error: bool = False) -> Answer:
        codes = tuple((e.get("extensions") or {}).get("code") for e in response.get("errors") or ())
        body = json.dumps(response, separators=(",", ":")).encode()  # Strawberry's GraphQLView.encode_json
        return cls(body, codes, response.get("data") is None, request_error)


class QueryExecutor:
    """The child's state, made from its Config: one event loop (for the life of the
    process), the schema, a Store with its own client on that loop."""

    def __init__(self, config: Config) -> None:
        from graphql import parse

        import api.app  # noqa: F401 - imported now (for `_answer`), not at the first query
        from api.store import Store
        from resolvers.schema import DOCUMENT_CACHE_SIZE, build_schema

        self.settings = config.settings
        self.schema = build_schema(config.settings.limits)
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.store = self.loop.run_until_complete(
            Store.connect(config.uri, config.database, ancestry_limit=config.ancestry_limit, **config.options)
        )
        self.parse = functools.lru_cache(maxsize=DOCUMENT_CACHE_SIZE)(parse)

    def answer(self, request: Request) -> Answer:
        return self.loop.run_until_complete(self._answer(request))

    async def _answer(self, request: Request) -> Answer:
        import pymongo
        from graphql import execute
        from strawberry.execution import optimized_is_awaitable

        from api.app import DatabaseFaults
        from resolvers.context import Context
        from resolvers.errors import INTERNAL_MESSAGE, is_unexpected, log_errors, mask
        from resolvers.loaders import Loaders

        schema = self.schema
        context = Context(self.store, None, self.settings, Loaders(self.store))  # type: ignore[arg-type]
        try:
            with pymongo.timeout(self.settings.request_deadline_seconds):
                result = execute(
                    schema._schema,
                    self.parse(request.query),
                    root_value=None,
                    context_value=context,
                    variable_values=request.variables,
                    operation_name=request.operation_name,
                    is_awaitable=optimized_is_awaitable,
                    executor_class=schema.execution_context_class,
                    operation_extensions=request.extensions,
                )
                if inspect.isawaitable(result):
                    result = await result
        except Exception:  # noqa: BLE001 - outside any field: a bug, masked as the server masks it
            log.exception("unexpected error executing a heavy query")
            masked = {"message": INTERNAL_MESSAGE, "extensions": {"code": "INTERNAL_SERVER_ERROR"}}
            return Answer.of({"data": None, "errors": [masked]}, request_error=True)
        errors = result.errors
        if errors:  # the server's order: Schema.process_errors, DatabaseFaults, MaskUnexpectedErrors
            log_errors(errors)
            errors = [mask(e) if is_unexpected(e) else e for e in DatabaseFaults.typed_errors(errors)]
        return Answer.of({"data": result.data, **({"errors": [e.formatted for e in errors]} if errors else {})})


def _serve() -> None:
    from supervision.children import serve

    executor: QueryExecutor | None = None

    def handle(message: Config | Request) -> Answer | tuple[str, int]:
        nonlocal executor
        if executor is None:  # the first message: the configuration
            logging.basicConfig(level=message.log_level, format=LOG_FORMAT)
            executor = QueryExecutor(message)
            return "ready", os.getpid()
        return executor.answer(message)

    serve(handle)


if __name__ == "__main__":  # a heavy-query process (module docstring)
    # through the module's importable name, not `__main__`: the Answers it pickles must
    # name classes the server can import (api.query_process.Answer)
    from api.query_process import _serve as serve_module

    serve_module()
