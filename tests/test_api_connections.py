"""Connection hygiene (issue 8, item 7) on a real uvicorn built by
api.server.make_config: header and body read timeouts, a send timeout, keep-alive, a cap on
open connections and a per-client rate limit; /healthz keeps answering
through all of it. Timeouts are set small here; no assertion is timed (the
`wait_for` bounds only stop a broken test from hanging)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn

from api.app import GRAPHIQL_DIR
from api.rate_limit import TokenBuckets
from api.server import make_config
from api.settings import Limits, Settings
from api.store import Store
from conftest import free_port

LIMITS = Limits(
    header_timeout_seconds=0.5,
    body_timeout_seconds=0.5,
    send_timeout_seconds=0.5,
    keepalive_timeout_seconds=1,
    max_connections=6,
    rate_limit_per_second=2.0,
    rate_limit_burst=5,
)
SAFETY = 30  # seconds: only so that a regression fails instead of hanging


@pytest.fixture(scope="module")
async def running(api_settings: Settings, store: Store) -> AsyncIterator[uvicorn.Server]:
    settings = api_settings.model_copy(update={"limits": LIMITS})
    port = free_port()
    config = make_config(settings, "127.0.0.1", port, store=store, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    for _ in range(400):
        if server.started:
            break
        await asyncio.sleep(0.025)
    assert server.started
    yield server
    server.should_exit = True
    await asyncio.wait_for(task, 15)


@pytest.fixture(scope="module")
def server(running: uvicorn.Server) -> tuple[str, int]:
    return "127.0.0.1", running.config.port


async def healthz(host: str, port: int) -> None:
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as client:
        response = await client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (a reset, when
    the client wrote after the close, counts as closed with nothing more)."""
    try:
        return await asyncio.wait_for(reader.read(), SAFETY)
    except ConnectionResetError:
        return b""


@pytest.mark.parametrize(
    "partial",
    [b"", b"GET /heal", b"GET /healthz HTTP/1.1\r\n", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "],
    ids=["silent", "request-line", "no-headers", "half-header"],
)
async def test_connections_that_never_finish_their_headers_are_closed(server, partial: bytes) -> None:
    host, port = server
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(partial)
    await writer.drain()
    await healthz(host, port)  # served meanwhile
    assert await closed_by_server(reader) == b""
    writer.close()


async def test_trickled_headers_are_closed(server) -> None:
    """One byte at a time, never completing: closed although bytes keep arriving."""
    host, port = server
    reader, writer = await asyncio.open_connection(host, port)
    header = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 10_000
    closed = asyncio.create_task(closed_by_server(reader))
    for byte in header:
        if closed.done():
            break
        with contextlib.suppress(ConnectionError):
            writer.write(bytes([byte]))
            await writer.drain()
        await asyncio.sleep(0.02)
    assert await closed == b""
    writer.close()


@pytest.mark.parametrize("sent", [0, 10, 99])
async def test_a_body_not_received_in_time_is_a_408(server, sent: int) -> None:
    host, port = server
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        + b" " * sent
    )
    await writer.drain()
    await healthz(host, port)
    answer = await closed_by_server(reader)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b'"code": "REQUEST_TIMEOUT"' in answer or b'"code":"REQUEST_TIMEOUT"' in answer
    writer.close()


async def test_idle_keep_alive_connections_are_closed(server) -> None:
    host, port = server
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    answer = await closed_by_server(reader)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b'{"status":"ok"}')
    writer.close()


async def test_connections_beyond_the_cap_are_refused(server) -> None:
    host, port = server
    held = [await asyncio.open_connection(host, port) for _ in range(LIMITS.max_connections)]
    await asyncio.sleep(0)  # let the server accept them
    extra = [await asyncio.open_connection(host, port) for _ in range(3)]
    for reader, _writer in extra:
        assert await closed_by_server(reader) == b""
    for reader, _writer in held:  # the held ones go at their header timeout
        assert await closed_by_server(reader) == b""
    for _reader, writer in held + extra:
        writer.close()
    await healthz(host, port)  # and the server serves again


async def test_rate_limit_answers_429_with_retry_after(server) -> None:
    host, port = server
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as client:
        responses = [await client.post("/graphql", json={"query": "{ __typename }"}) for _ in range(LIMITS.rate_limit_burst + 3)]
        statuses = [r.status_code for r in responses]
        assert statuses[: LIMITS.rate_limit_burst] == [200] * LIMITS.rate_limit_burst, statuses
        refused = [r for r in responses if r.status_code == 429]
        assert len(refused) >= 2, statuses
        for response in refused:
            assert int(response.headers["retry-after"]) >= 1
            (error,) = response.json()["errors"]
            assert error["extensions"]["code"] == "RATE_LIMITED"
        assert (await client.get("/healthz")).status_code == 200  # health checks are exempt


def test_token_buckets_refill_at_the_rate() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=2.0, burst=3, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)
    assert buckets.take("b") == 0.0  # per client
    now[0] = 0.5  # one token back
    assert buckets.take("a") == 0.0 and buckets.take("a") > 0
    now[0] = 100.0  # never more than the burst
    assert [buckets.take("a") for _ in range(4)][-1] > 0


def test_token_buckets_forget_the_least_recent_clients() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1, max_clients=3, clock=lambda: 0.0)
    for client in "abcd":
        buckets.take(client)
    assert list(buckets.buckets) == ["b", "c", "d"]
    assert buckets.take("a") == 0.0  # forgotten: a full bucket again


STATIC_GET = b"GET /graphiql/graphiql.min.js HTTP/1.1\r\nHost: x\r\n\r\n"  # 3.5 MB each


@pytest.mark.parametrize(
    ("request_bytes", "read_every"),
    [(STATIC_GET * 3, None), (STATIC_GET * 3, 0.05), (STATIC_GET, None)],
    ids=["pipelined-unread", "pipelined-a-byte-now-and-then", "one-unread"],
)
async def test_responses_the_client_does_not_read_are_aborted(running, request_bytes: bytes, read_every) -> None:
    """Slow read: requests for megabytes of responses from a client with a tiny
    receive buffer that reads nothing, or a byte now and then. The server's
    write buffer fills (uvicorn would wait for it forever); at the send timeout
    the connection is aborted, and /healthz is answered meanwhile."""
    host, port = "127.0.0.1", running.config.port
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect((host, port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
    writer.write(request_bytes)

    ours = ("127.0.0.1", sock.getsockname()[1])

    def open_on_server() -> bool:
        return any(p.client == ours for p in running.server_state.connections)

    async def until_accepted() -> None:
        while not open_on_server():
            await asyncio.sleep(0.01)

    async def until_closed_by_server() -> None:
        while open_on_server():
            await healthz(host, port)
            if read_every is not None:
                with contextlib.suppress(ConnectionError):
                    await reader.read(1)
            await asyncio.sleep(read_every or 0.05)

    await asyncio.wait_for(until_accepted(), SAFETY)
    await asyncio.wait_for(until_closed_by_server(), SAFETY)
    received = await closed_by_server(reader)
    answers = request_bytes.count(STATIC_GET) * (GRAPHIQL_DIR / "graphiql.min.js").stat().st_size
    assert len(received) < answers  # cut short, not answered in full
    writer.close()
    await healthz(host, port)


POST_HEAD = b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
QUERY = b'{"query":"{__typename}"}'


@pytest.mark.parametrize(
    "request_bytes",
    [
        POST_HEAD + b"Content-Length: -1\r\n\r\n" + QUERY,
        POST_HEAD + b"Content-Length: 24\r\nContent-Length: 25\r\n\r\n" + QUERY,
        POST_HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + QUERY + b"\r\n0\r\n\r\n",
        POST_HEAD + b"Transfer-Encoding: gzip, chunked\r\n\r\n18\r\n" + QUERY + b"\r\n0\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"GET /health\x00z HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    ],
    ids=["negative-length", "two-lengths", "bad-chunk-size", "gzip-transfer-coding", "no-request-line",
         "nul-in-target", "header-without-colon"],  # fmt: skip
)
async def test_requests_h11_cannot_parse_get_a_json_400(server, request_bytes: bytes) -> None:
    host, port = server
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request_bytes)
    await writer.drain()
    answer = await closed_by_server(reader)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"content-type: application/json" in head.lower(), answer[:300]
    assert json.loads(body)["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
    writer.close()
    await healthz(host, port)
