"""The Starlette application: `/graphql` (Strawberry, GraphiQL on GET text/html)
and `/healthz`, behind an ASGI request-body limit.

GraphQL over HTTP (https://graphql.github.io/graphql-over-http/):

* `Accept: application/graphql-response+json` is honoured: the response has
  that media type, and a request that fails before execution (syntax error,
  validation error, a depth / alias / token limit) gets **400** with the
  GraphQL errors in the body; malformed HTTP requests get 4xx with a JSON
  `errors` body too.
* Otherwise (`application/json`, `*/*`, or no Accept header) the classic
  behaviour is kept: `application/json`, 200 for any well-formed request.
* An Accept header naming neither type (nor a wildcard) gets 406.
* Mutations over GET are refused with **405** (`Allow: POST`); queries over
  GET are allowed. Batching and websockets are off.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cross_web import HTTPException
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
import pymongo
from graphql import GraphQLError
from strawberry.asgi import GraphQL
from strawberry.extensions import SchemaExtension
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.types.execution import PreExecutionError
from strawberry.types.unset import UNSET

from ledger.encoding import StrictJSONError, TooManyJSONValues, loads_strict
from resolvers.context import Context
from resolvers.errors import is_unexpected, mask
from resolvers.schema import build_schema

from . import translog
from .body_decoding import BodyDecoder, BodyDecoderUnavailable
from .embedded import EmbeddedDatabase, EmbeddedDatabaseError
from .heavy_queries import HeavyQueryProcesses
from .rate_limit import RateLimit
from .readiness import ReadinessCheck
from .service import Ingestion
from .settings import Settings
from .store import RETRY_AFTER_SECONDS, Store, is_infrastructure_fault

log = logging.getLogger("oretrace.api")

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
APPLICATION_JSON = "application/json"


# --------------------------------------------------------------------------- content negotiation


def negotiate(accept: str | None) -> str | None:
    """The response media type for an Accept header, or None if neither is acceptable.

    No header, `*/*` or `application/*` alone -> application/json (legacy clients).
    Both named with equal q -> application/graphql-response+json.
    """
    if accept is None or not accept.strip():
        return APPLICATION_JSON
    quality: dict[str, float] = {}
    for item in accept.split(","):
        parts = [p.strip() for p in item.split(";")]
        media = parts[0].lower()
        if not media:
            continue
        q = 1.0
        for param in parts[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        quality[media] = max(q, quality.get(media, 0.0))

    def q_of(media: str) -> tuple[float, int]:
        if media in quality:
            return quality[media], 2
        if "application/*" in quality:
            return quality["application/*"], 1
        if "*/*" in quality:
            return quality["*/*"], 0
        return 0.0, -1

    q_gr, specific_gr = q_of(GRAPHQL_RESPONSE_JSON)
    q_js, specific_js = q_of(APPLICATION_JSON)
    if q_gr <= 0 and q_js <= 0:
        return None
    if q_gr > q_js:
        return GRAPHQL_RESPONSE_JSON
    if q_js > q_gr:
        return APPLICATION_JSON
    # equal quality: an explicit graphql-response+json wins; wildcards mean legacy JSON
    return GRAPHQL_RESPONSE_JSON if specific_gr == 2 else APPLICATION_JSON


def http_error_code(status: int) -> str:
    """`extensions.code` of a request refused at the HTTP level."""
    return {
        400: "BAD_REQUEST",
        405: "METHOD_NOT_ALLOWED",
        408: "REQUEST_TIMEOUT",
        406: "NOT_ACCEPTABLE",
        413: "PAYLOAD_TOO_LARGE",
        429: "RATE_LIMITED",
        503: "SERVICE_UNAVAILABLE",
    }.get(status, "BAD_REQUEST" if status < 500 else "INTERNAL_SERVER_ERROR")


def request_error_code(message: str) -> str:
    """The code of an error raised before execution (the document was refused)."""
    if message.startswith("Syntax Error") or "Parsing aborted" in message:  # the token limit stops the parser
        return "GRAPHQL_PARSE_FAILED"
    return "GRAPHQL_VALIDATION_FAILED"


# --------------------------------------------------------------------------- body size limit


#: POST bodies larger than this are decoded in a child process (api.body_decoding),
#: off the event loop and its GIL, and admitted a few at a time (BodyLimits).
INLINE_BODY_BYTES = 64 * 1024
#: Seconds an admitted large body may lag behind BodyLimits' minimum rate (a client's
#: connection warming up), after which it must keep up with that rate.
LARGE_BODY_GRACE_SECONDS = 2.0


class BodyLimits:
    """Refuse request bodies above `max_bytes` with 413, and bodies not fully
    received within `timeout` seconds of the request's headers with 408
    (a client trickling its body would otherwise hold a task and its buffer
    for as long as it likes), before the app sees them.

    Checks Content-Length first, then counts the streamed bytes (chunked
    uploads have no Content-Length). The body is buffered (it is at most
    `max_bytes`) and replayed to the app. Both refusals close the connection.

    **Large bodies** (over `INLINE_BODY_BYTES`) are admitted `large_slots` at a
    time: a request holds its slot from before its body is read until its
    response is complete, so the memory of large bodies (the bytes, their
    parse, the variables, the answer) is bounded by the slots, whatever the
    number of clients. A request waiting for a slot has not read its body
    (uvicorn stops reading the socket beyond 64 KiB), so it holds almost
    nothing; after `large_wait` seconds without a slot it is answered 503
    SERVICE_UNAVAILABLE with Retry-After (the server is busy: retry later)
    and the connection closes. A chunked body takes its slot when it passes
    the threshold. The body timeout counts from the slot (or the headers).

    A slot holder must keep sending: from its admission, its body must arrive
    at `large_min_rate` bytes per second on average after a grace of
    `LARGE_BODY_GRACE_SECONDS`, or it is answered 408 and its slot freed (a
    client trickling a byte a second held a slot for the whole body timeout:
    two such connections kept every other large body out). Holding the slots
    now costs a client `large_min_rate` bytes per second per slot; a front
    proxy that buffers bodies (docs/operations.md) removes even that.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float, large_slots: int = 2,
                 large_wait: float = 10.0, large_min_rate: int = 64 * 1024) -> None:  # fmt: skip
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.large_slots = asyncio.Semaphore(large_slots)
        self.large_wait = large_wait
        self.large_min_rate = large_min_rate

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
        headers = {"Connection": "close"}
        if status == 503:
            headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        response = JSONResponse(
            {"errors": [{"message": message, "extensions": {"code": http_error_code(status)}}]},
            status_code=status,
            headers=headers,
        )
        await response(scope, receive, send)

    async def _admit(self) -> bool:
        """Take a large-body slot within `large_wait` seconds (False: none came free)."""
        try:
            async with asyncio.timeout(self.large_wait):
                await self.large_slots.acquire()
        except TimeoutError:
            return False
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"request body exceeds the limit of {self.max_bytes} bytes"
        busy = "the server is parsing as many large request bodies as it allows; retry later"
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await self._refuse(scope, receive, send, 400, "invalid Content-Length")
                    return
                if declared > self.max_bytes:
                    await self._refuse(scope, receive, send, 413, too_large)
                    return
        admitted = False
        try:
            if declared is not None and declared > INLINE_BODY_BYTES:
                if not await self._admit():
                    await self._refuse(scope, receive, send, 503, busy)
                    return
                admitted = True
            body = bytearray()
            loop = asyncio.get_running_loop()
            admitted_at, admitted_bytes = (loop.time(), 0) if admitted else (None, 0)
            final_deadline = loop.time() + self.timeout
            too_slow = False
            try:
                async with asyncio.timeout(self.timeout) as deadline:
                    while True:
                        if admitted_at is not None:  # keep up with the minimum rate, or give the slot back
                            sent = len(body) - admitted_bytes
                            lag_limit = admitted_at + LARGE_BODY_GRACE_SECONDS + sent / self.large_min_rate
                            too_slow = lag_limit < final_deadline
                            deadline.reschedule(min(lag_limit, final_deadline))
                        message = await receive()
                        if message["type"] == "http.disconnect":
                            return
                        body += message.get("body", b"")
                        if len(body) > self.max_bytes:
                            await self._refuse(scope, receive, send, 413, too_large)
                            return
                        if not admitted and len(body) > INLINE_BODY_BYTES:  # chunked: no Content-Length
                            if not await self._admit():
                                await self._refuse(scope, receive, send, 503, busy)
                                return
                            admitted = True
                            admitted_at, admitted_bytes = loop.time(), len(body)
                        if not message.get("more_body", False):
                            break
            except TimeoutError:
                reason = (
                    f"request body arrives slower than {self.large_min_rate} bytes/s"
                    if too_slow
                    else f"request body not received within {self.timeout:g} s"
                )
                await self._refuse(scope, receive, send, 408, reason)
                return
            data = bytes(body)
            del body  # one copy of the body, not two
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": data, "more_body": False}
                return await receive()

            await self.app(scope, replay, send)
        finally:
            if admitted:
                self.large_slots.release()


class TypedCancellation:
    """A request cancelled before its response started (uvicorn cancels the
    requests still running `timeout_graceful_shutdown` seconds after SIGTERM)
    answers a typed JSON 503 SERVICE_UNAVAILABLE with Retry-After, never
    uvicorn's plain-text 500, and the request task then ends. Outermost
    middleware, so it covers every route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except asyncio.CancelledError:
            if started:  # half a response already out: nothing typed can follow
                raise
            body = {"errors": [unavailable_error("the server is shutting down; retry later")]}
            await JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})(
                scope, receive, send
            )
            # answered: the request task ends normally (re-raising would make uvicorn log
            # an "Exception in ASGI application" traceback for an orderly shutdown)


# --------------------------------------------------------------------------- runtime


#: seconds between two checks that the embedded database child is alive
SUPERVISION_INTERVAL_SECONDS = 0.2
#: a readiness check that has not answered within this many seconds failed
READINESS_TIMEOUT_SECONDS = 2.0
#: back-off between failed restarts of the embedded database: 0.5 s doubling, at most 8 s
RESTART_BACKOFF_SECONDS = (0.5, 8.0)


@dataclass
class Runtime:
    """What the app holds between startup and shutdown."""

    settings: Settings
    store: Store | None = None
    ingestion: Ingestion | None = None
    embedded: EmbeddedDatabase | None = None
    owns_store: bool = True
    #: True while the supervised embedded database is down and being restarted:
    #: requests answer SERVICE_UNAVAILABLE at once instead of waiting for the deadline
    database_down: bool = False
    _supervisor: asyncio.Task | None = field(default=None, repr=False)
    #: the shared readiness check of /readyz and /healthz (api.readiness)
    readiness: ReadinessCheck | None = None
    #: where heavy queries execute (api.heavy_queries): one child process per heavy slot,
    #: started by `start` (the lifespan) or at the first heavy query
    query_worker: HeavyQueryProcesses | None = None
    #: where large bodies are decoded (api.body_decoding): one child process per large-body
    #: slot, each started at the first large body it gets
    body_decoder: BodyDecoder = field(init=False, repr=False)

    def __post_init__(self) -> None:
        limits = self.settings.limits
        self.body_decoder = BodyDecoder(
            limits.large_body_slots, limits.body_decode_timeout_seconds, limits.max_body_values
        )

    def attach(self, store: Store, *, owned: bool) -> None:
        self.store = store
        self.ingestion = Ingestion(store, self.settings)
        self.owns_store = owned
        self.readiness = ReadinessCheck(
            lambda timeout: store.ready(timeout),
            interval=self.settings.readiness_interval_seconds,
            timeout=READINESS_TIMEOUT_SECONDS,
        )
        # None for a Store made from a client handed in as is: heavy queries execute on this
        # loop (api.heavy_queries)
        self.query_worker = HeavyQueryProcesses.for_store(store, self.settings)
        if store.translog is None:  # one log per store, however many apps share it
            store.translog = translog.open_log(store.db, self.settings)

    async def start(self) -> None:
        if self.store is not None:  # injected (tests, embedding applications)
            await self.store.ensure_indexes()
            await self.ingestion.start()
            self.store.translog.start()
            self._start_query_processes()
            return
        uri = self.settings.mongodb_uri
        if not uri:
            self.embedded = EmbeddedDatabase(
                self.settings.data_dir,
                log_level=self.settings.embedded_log_level,
                startup_timeout=self.settings.embedded_startup_timeout,
            )
            uri = await self.embedded.astart()
            log.info(
                "embedded database (pid %s) at %s, data in %s",
                self.embedded.pid, self.embedded.public_uri, self.embedded.storage_path,
            )  # fmt: skip
            _write_embedded_info(self.embedded)
        store = await Store.connect(uri, self.settings.database, ancestry_limit=self.settings.ancestry_limit)
        try:
            await store.ensure_indexes()
        except Exception:
            await store.close()
            await self.stop()
            raise
        self.attach(store, owned=True)
        await self.ingestion.start()
        store.translog.start()
        self._start_query_processes()
        if self.embedded is not None:
            self._supervisor = asyncio.create_task(self._supervise(self.embedded), name="oretrace-embedded-supervisor")

    def _start_query_processes(self) -> None:
        """In the background, so the first heavy query does not wait for their imports."""
        if self.query_worker is not None:
            self.query_worker.start()

    async def _supervise(self, db: EmbeddedDatabase) -> None:
        """Watch the embedded database child; when it dies, restart it on the same
        data directory and port (the store's client reconnects by itself) with a
        bounded back-off. After `settings.embedded_max_restarts` failed restarts in
        a row, stop this server (SIGTERM to itself: graceful shutdown, then exit)
        so that a process supervisor, if any, takes over (docs/operations.md)."""
        while True:
            await asyncio.sleep(SUPERVISION_INTERVAL_SECONDS)
            if db.running():
                continue
            self.database_down = True
            log.error(
                "embedded database (pid %s) exited with code %s; restarting it on %s",
                db.pid, db.process.returncode if db.process else None, db.storage_path,
            )  # fmt: skip
            first, cap = RESTART_BACKOFF_SECONDS
            for failures in range(1, self.settings.embedded_max_restarts + 1):
                try:
                    await db.arestart()
                    break
                except (EmbeddedDatabaseError, OSError) as exc:  # OSError: spawning itself failed
                    log.error("restart %d of the embedded database failed: %s", failures, exc)
                    if failures < self.settings.embedded_max_restarts:
                        await asyncio.sleep(min(first * 2 ** (failures - 1), cap))
            else:
                log.critical(
                    "the embedded database did not restart after %d attempts; stopping this server",
                    self.settings.embedded_max_restarts,
                )
                os.kill(os.getpid(), signal.SIGTERM)
                return
            _write_embedded_info(db)
            log.warning("embedded database restarted (pid %s)", db.pid)
            self.database_down = False

    async def stop(self) -> None:
        if self._supervisor is not None:  # first: a database stopped on purpose is not restarted
            self._supervisor.cancel()
            try:
                await self._supervisor
            except asyncio.CancelledError:
                pass
            self._supervisor = None
        if self.readiness is not None:
            await self.readiness.close()
        if self.query_worker is not None:
            await self.query_worker.close()
        await self.body_decoder.close()
        if self.ingestion is not None:
            await asyncio.to_thread(self.ingestion.close)
        if self.store is not None and self.owns_store:
            await self.store.close()
            self.store = None
            self.ingestion = None
        if self.embedded is not None:
            await self.embedded.astop()
            _remove_embedded_info(self.embedded)
            self.embedded = None


def _write_embedded_info(db: EmbeddedDatabase) -> None:
    path = db.data_dir / "embedded.json"
    try:  # owner-only (0600), like the data directory (0700) it lives in
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps({"pid": db.pid, "uri": db.public_uri, "storage_path": str(db.storage_path)}) + "\n")
    except OSError:  # pragma: no cover - informational only
        pass


def _remove_embedded_info(db: EmbeddedDatabase) -> None:
    try:
        (db.data_dir / "embedded.json").unlink()
    except OSError:
        pass


# --------------------------------------------------------------------------- database faults


#: Error codes that tell a client to retry later (HTTP mapping below).
RETRYABLE_CODES = frozenset({"SERVICE_UNAVAILABLE", "OUTCOME_UNKNOWN"})


def unavailable_error(message: str) -> dict[str, Any]:
    return {"message": message, "extensions": {"code": "SERVICE_UNAVAILABLE", "retryAfterSeconds": RETRY_AFTER_SECONDS}}


class DatabaseFaults(SchemaExtension):
    """Every operation's database work runs under one deadline (pymongo's
    client-side operation timeout, `settings.request_deadline_seconds`), and an
    infrastructure fault met while resolving (database down, paused, full, too
    slow for the deadline) becomes a typed SERVICE_UNAVAILABLE error with a
    retry hint instead of a masked INTERNAL_SERVER_ERROR (kept for bugs).
    Added last, so it runs before MaskUnexpectedErrors on the way out."""

    deadline_seconds: float = 10.0

    def on_operation(self):
        with pymongo.timeout(self.deadline_seconds):
            yield
        result = self.execution_context.result
        errors = getattr(result, "errors", None)
        if errors:
            result.errors = self.typed_errors(errors)

    @classmethod
    def typed_errors(cls, errors: list[GraphQLError]) -> list[GraphQLError]:
        """`errors` with every infrastructure fault typed SERVICE_UNAVAILABLE, and one
        warning line if there was any (also used by the heavy-query process,
        api.query_process, on its own errors)."""
        typed = [cls._typed(e) for e in errors]
        faults = [(e, t) for e, t in zip(errors, typed, strict=True) if t is not e]
        if faults:  # one line per operation: a 4,096-lot answer past its deadline has thousands
            first = faults[0][0]
            log.warning(
                "database unavailable for %d field(s), first at %s: %s",
                len(faults), ".".join(map(str, first.path or ())), first.original_error,
            )  # fmt: skip
        return typed

    @staticmethod
    def _typed(error: GraphQLError) -> GraphQLError:
        if error.original_error is None or not is_infrastructure_fault(error.original_error):
            return error
        body = unavailable_error("the database is unavailable; retry later")
        return GraphQLError(
            body["message"], nodes=error.nodes, source=error.source, positions=error.positions,
            path=error.path, original_error=None, extensions=body["extensions"],
        )  # fmt: skip


def database_faults(deadline_seconds: float) -> type[DatabaseFaults]:
    return type("DatabaseFaults", (DatabaseFaults,), {"deadline_seconds": deadline_seconds})


# --------------------------------------------------------------------------- GraphQL view


#: GraphiQL, vendored with its licences (api/static/graphiql/README.md): served at
#: GRAPHIQL_PATH by this server, so the IDE needs no internet access.
GRAPHIQL_DIR = Path(__file__).parent / "static" / "graphiql"
GRAPHIQL_PATH = "/graphiql"
#: The IDE page loads only this server's scripts; inline styles are GraphiQL's own.
GRAPHIQL_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"
)


#: (body, (decoded value, error)) of the current request's large body: a ContextVar,
#: so concurrent requests never see each other's; matched by identity with the bytes
#: Strawberry reads back from the same Request.
_DECODED_BODY: ContextVar[tuple[bytes, tuple[object, HTTPException | None]] | None] = ContextVar(
    "oretrace_decoded_body", default=None
)


#: (response data, its JSON bytes) of the current request when encoded in a heavy-query
#: process (GraphQLView.process_result); matched by identity in encode_json.
_ENCODED_RESPONSE: ContextVar[tuple[object, bytes] | None] = ContextVar("oretrace_encoded_response", default=None)


class GraphQLView(GraphQL):
    """Strawberry's ASGI view + GraphQL-over-HTTP status codes and media types,
    with the vendored GraphiQL page (GET from a browser)."""

    graphql_ide_html = (GRAPHIQL_DIR / "index.html").read_text(encoding="utf-8")

    async def render_graphql_ide(self, request: Request) -> Response:
        return HTMLResponse(self.graphql_ide_html, headers={"Content-Security-Policy": GRAPHIQL_CSP})

    def __init__(self, runtime: Runtime, **kwargs: Any) -> None:
        schema = build_schema(runtime.settings.limits)
        schema.extensions = (*schema.extensions, database_faults(runtime.settings.request_deadline_seconds))
        super().__init__(
            schema,
            graphql_ide="graphiql",
            allow_queries_via_get=True,
            subscription_protocols=(),
            **kwargs,
        )
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await PlainTextResponse("Not Found", status_code=404)(scope, receive, send)
            return
        request = Request(scope=scope, receive=receive)
        try:
            response = await self.run(request)
        except HTTPException as exc:
            response = self._error_response(request, exc.status_code, exc.reason)
        await response(scope, receive, send)

    def _error_response(self, request: Request, status: int, reason: str) -> Response:
        """A request refused before GraphQL runs: always a JSON body with one
        GraphQL error, in the negotiated media type (application/json when the
        Accept header named neither)."""
        headers = {"Allow": "GET, POST"} if status == 405 else {}
        if status == 503:
            headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        media = getattr(request.state, "media", None) or negotiate(request.headers.get("accept")) or APPLICATION_JSON
        return Response(
            json.dumps({"errors": [{"message": reason, "extensions": {"code": http_error_code(status)}}]}),
            status_code=status,
            media_type=media,
            headers=headers,
        )

    def decode_json(self, data: str | bytes) -> object:
        """Every JSON text from a client (the POST body, the `variables` and
        `extensions` of a GET) through the one I-JSON reader: a 400 naming the
        fault for bad UTF-8, duplicate member names, lone surrogates, NaN,
        over-long integers or nesting deeper than 64 (never a RecursionError).
        A large body arrives here already decoded in a child process (`run`)."""
        decoded = _DECODED_BODY.get()
        if decoded is not None and decoded[0] is data:
            value, error = decoded[1]
            if error is not None:
                try:
                    raise error
                finally:  # this frame must not keep the exception that keeps this frame (a cycle)
                    decoded = error = None
            return value
        return self._decode(data)

    def _decode(self, data: str | bytes) -> object:
        try:
            value = loads_strict(data, max_values=self.runtime.settings.limits.max_body_values)
        except TooManyJSONValues as exc:
            raise self._too_many_values(str(exc)) from None
        except StrictJSONError as exc:
            raise self._not_i_json(str(exc)) from None
        return self._request_object(value)

    @staticmethod
    def _not_i_json(reason: str) -> HTTPException:
        return HTTPException(400, f"the request is not valid I-JSON (RFC 7493): {reason[:200]}")

    @staticmethod
    def _too_many_values(reason: str) -> HTTPException:
        return HTTPException(
            400, f"the request holds {reason[:200]} (ORETRACE_MAX_BODY_VALUES; a publication needs a few hundred)"
        )

    @staticmethod
    def _request_object(value: object) -> object:
        if value is None:
            return {}  # `null`: no query (400 below) for a body, no variables for a GET parameter
        if not isinstance(value, dict):
            raise HTTPException(400, "expected a JSON object ({query, variables, operationName, extensions})")
        return value

    async def _decode_large(self, data: bytes) -> tuple[object, HTTPException | None]:
        """(`_decode(data)`, None) or (None, its HTTPException), decoded in a child process
        (api.body_decoding); a child that died or hung gives a 503 (retry)."""
        try:
            status, result = await self.runtime.body_decoder.decode(data)
        except BodyDecoderUnavailable as exc:
            return None, HTTPException(503, f"{exc}; retry later")
        try:
            if status == "invalid":
                raise self._not_i_json(result)
            if status == "too_many":
                raise self._too_many_values(result)
            return self._request_object(result), None
        except HTTPException as exc:
            return None, exc.with_traceback(None)  # not this frame (it holds the decoded body)

    async def run(self, request, context=UNSET, root_value=UNSET):  # type: ignore[override]
        if not self.should_render_graphql_ide(self.request_adapter_class(request)):
            media = negotiate(request.headers.get("accept"))
            if media is None:
                raise HTTPException(
                    406, f"Not Acceptable: this endpoint answers {GRAPHQL_RESPONSE_JSON} or {APPLICATION_JSON}"
                )
            request.state.media = media
        decoded = None
        if request.method == "POST":
            body = await request.body()  # already buffered by BodyLimits
            if len(body) > INLINE_BODY_BYTES:  # decoding and I-JSON checks: up to ~0.2 s of CPU per MiB
                decoded = _DECODED_BODY.set((body, await self._decode_large(body)))
        try:
            return await super().run(request, context, root_value)
        finally:
            # drop the request's parsed body and encoded answer now: a context outliving the
            # request (a test's task, a copied context) must not keep megabytes alive
            if decoded is not None:
                _DECODED_BODY.reset(decoded)
            _ENCODED_RESPONSE.set(None)

    async def execute_single(self, request, request_adapter, sub_response, context, root_value, request_data):  # type: ignore[override]
        try:
            return await super().execute_single(
                request=request,
                request_adapter=request_adapter,
                sub_response=sub_response,
                context=context,
                root_value=root_value,
                request_data=request_data,
            )
        except HTTPException as exc:
            if isinstance(exc.__cause__, InvalidOperationTypeError) and request_adapter.method == "GET":
                raise HTTPException(405, "mutations are not allowed over GET: use POST") from exc
            raise

    async def get_sub_response(self, request: Request) -> Response:
        sub_response = await super().get_sub_response(request)
        sub_response.oretrace_media = getattr(request.state, "media", None)  # type: ignore[attr-defined]
        request.state.sub_response = sub_response
        return sub_response

    async def get_context(self, request: Request, response: Response) -> Context:  # type: ignore[override]
        runtime = self.runtime
        if runtime.store is None or runtime.ingestion is None:
            raise HTTPException(503, "the database is not connected yet")
        if runtime.database_down:
            raise HTTPException(503, "the database is restarting; retry later")
        context = Context.create(runtime.store, runtime.ingestion, runtime.settings, request, response)
        context.query_worker = runtime.query_worker
        request.state.graphql_extra = context.extra  # read by process_result (the context holds the request)
        return context

    async def process_result(self, request: Request, result) -> Any:  # type: ignore[override]
        if result.errors:
            # an exception escaping a schema extension (parse / validation hooks) skips
            # MaskUnexpectedErrors: mask it here too, never show its text
            result.errors = [mask(e) if is_unexpected(e) else e for e in result.errors]
        data = await super().process_result(request, result)
        if isinstance(result, PreExecutionError):
            # request errors get a code too, so clients can type them (the SDK raises
            # ApiRejection for any coded error): Apollo's GRAPHQL_PARSE_FAILED /
            # GRAPHQL_VALIDATION_FAILED, the latter covering the depth / alias / cost limits
            for error in data.get("errors") or ():
                extensions = error.setdefault("extensions", {}) or {}
                extensions.setdefault("code", request_error_code(error.get("message", "")))
                error["extensions"] = extensions
        if getattr(request.state, "media", None) == GRAPHQL_RESPONSE_JSON and isinstance(result, PreExecutionError):
            # a request error: execution never started, so no `data` entry, and 400
            data.pop("data", None)
            request.state.sub_response.status_code = 400
        heavy = getattr(request.state, "graphql_extra", {}).get("heavy_answer")
        if heavy is not None:  # executed in a heavy-query process: `data` is empty, the answer encoded
            body = heavy.body
            request_error = heavy.request_error and getattr(request.state, "media", None) == GRAPHQL_RESPONSE_JSON
            if request_error:  # as a PreExecutionError above: 400, no `data`
                request.state.sub_response.status_code = 400
            if self._retry_hint(request, heavy.codes, heavy.data_is_null) or request_error:
                answer = json.loads(body)  # data null: errors only, small
                answer.pop("data", None)
                body = json.dumps(answer, separators=(",", ":")).encode()
            _ENCODED_RESPONSE.set((data, body))
            return data
        codes = [(e.get("extensions") or {}).get("code") for e in data.get("errors") or ()]
        if self._retry_hint(request, codes, data.get("data") is None):
            data.pop("data", None)
        return data

    def encode_json(self, data: object) -> str | bytes:
        """Strawberry's compact JSON; a heavy query's answer arrives encoded (process_result)."""
        encoded = _ENCODED_RESPONSE.get()
        if encoded is not None and encoded[0] is data:
            return encoded[1]
        return super().encode_json(data)

    @staticmethod
    def _retry_hint(request: Request, codes: Sequence[str | None], data_is_null: bool) -> bool:
        """Retryable errors (SERVICE_UNAVAILABLE, OUTCOME_UNKNOWN; `codes`: the
        response's error codes) carry `Retry-After` whatever the media type. With
        graphql-response+json, an operation that produced no data at all because
        of them (data null) is answered as the request failure it is: no `data`
        entry (True: the caller removes it) and 503, which GraphQL-over-HTTP allows
        only without `data`. application/json keeps 200 and the body (`data:
        null`), as that media type requires."""
        if not any(c in RETRYABLE_CODES for c in codes):
            return False
        sub_response = request.state.sub_response
        sub_response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        if (
            getattr(request.state, "media", None) == GRAPHQL_RESPONSE_JSON
            and data_is_null
            and all(c in RETRYABLE_CODES for c in codes)
        ):
            sub_response.status_code = 503
            return True
        return False

    def create_response(self, response_data, sub_response: Response) -> Response:  # type: ignore[override]
        response = super().create_response(response_data, sub_response)
        media = getattr(sub_response, "oretrace_media", None)
        if media:
            response.headers["content-type"] = f"{media}; charset=utf-8"
        return response


# --------------------------------------------------------------------------- app factory


def create_app(settings: Settings | None = None, *, store: Store | None = None) -> Starlette:
    """The ASGI app. With `store`, use that (already connected) store and leave
    its lifecycle to the caller; otherwise the lifespan connects to MONGODB_URI
    or starts the embedded database, and stops it on shutdown."""
    settings = settings or Settings.from_env()
    settings.require_root_public_key()  # fail at startup, not at the first publication
    runtime = Runtime(settings)
    if store is not None:
        runtime.attach(store, owned=False)
    view = GraphQLView(runtime)

    async def readiness(request: Request) -> Response:
        """Ready = the database answered a write and the read of it (a panicked or
        full storage engine fails the write) in a check at most
        `settings.readiness_interval_seconds` + 2 s old (api.readiness); 503 +
        Retry-After otherwise, and at once while the embedded database restarts."""
        if runtime.store is not None and not runtime.database_down and await runtime.readiness.ready():
            return JSONResponse({"status": "ok"})
        return JSONResponse(
            {"status": "unavailable", "reason": "the database does not accept a write and read"},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    async def liveness(request: Request) -> Response:
        """Alive = this process serves HTTP (restart it otherwise); no database check."""
        return JSONResponse({"status": "alive"})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = Starlette(
        routes=[
            Route("/graphql", view),
            Route("/healthz", readiness, methods=["GET"]),
            Route("/readyz", readiness, methods=["GET"]),
            Route("/livez", liveness, methods=["GET"]),
            Mount(GRAPHIQL_PATH, StaticFiles(directory=GRAPHIQL_DIR), name="graphiql"),
            *translog.routes(runtime),
        ],
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    limits = settings.limits
    app.add_middleware(
        BodyLimits, max_bytes=limits.max_body_bytes, timeout=limits.body_timeout_seconds,
        large_slots=limits.large_body_slots, large_wait=limits.large_body_wait_seconds,
        large_min_rate=limits.large_body_min_bytes_per_second,
    )  # fmt: skip
    if limits.rate_limit_per_second > 0:  # outermost: a refused request costs no body read
        app.add_middleware(RateLimit, rate=limits.rate_limit_per_second, burst=limits.rate_limit_burst, exempt=("/healthz",))
    app.add_middleware(TypedCancellation)  # around everything: see its docstring
    return app
