"""The SDK reads a bounded answer from the untrusted server (sdk.client.Client._post).

A hostile or broken endpoint (httpx.MockTransport, no network) answers with
more bytes than the limit, with an endless stream, or one byte at a time for
longer than the client's timeout: each is an ApiError that says so, after
reading at most the limit; an honest answer of the same shape still works.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from sdk.client import ApiError, Client

ANSWER = json.dumps({"data": {"lot": None}}).encode()


class Stream(httpx.AsyncByteStream):
    def __init__(self, chunks: AsyncIterator[bytes]):
        self.chunks = chunks
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.chunks:
            self.sent += len(chunk)
            yield chunk


async def endless() -> AsyncIterator[bytes]:
    yield b'{"data": {"lot": "'
    while True:
        yield b"x" * 65536


async def dripping() -> AsyncIterator[bytes]:
    for byte in ANSWER:
        await asyncio.sleep(0.05)
        yield bytes([byte])


async def large() -> AsyncIterator[bytes]:
    yield json.dumps({"data": {"lot": "y" * 3_000_000}}).encode()


async def honest() -> AsyncIterator[bytes]:
    yield ANSWER[:10]
    yield ANSWER[10:]


def client_for(chunks, **options) -> tuple[Client, Stream]:
    stream = Stream(chunks())
    transport = httpx.MockTransport(lambda request: httpx.Response(200, stream=stream))
    return Client("http://server.invalid/graphql", transport=transport, **options), stream


@pytest.mark.parametrize(
    "chunks, options, message, most_read",
    [  # an endless stream is read one chunk (64 KiB) past the limit at most
        (endless, {"max_response_bytes": 1_000_000}, "exceeds 1,000,000 bytes", 1_000_000 + 65536 + 18),
        (large, {"max_response_bytes": 1_000_000}, "exceeds 1,000,000 bytes", 3_000_100),
        (dripping, {"timeout": 0.5}, "within 0.5 s", len(ANSWER) - 1),
    ],
    ids=["endless", "larger-than-the-limit", "dripping"],
)
async def test_an_unbounded_answer_is_an_error_after_reading_at_most_the_limit(chunks, options, message, most_read):
    client, stream = client_for(chunks, **options)
    async with client:
        with pytest.raises(ApiError, match=message):
            await client.execute("query { lot(id: \"lot_x\") { id } }")
    assert stream.sent <= most_read


@pytest.mark.parametrize("chunks", [honest, dripping], ids=["in-chunks", "slow-but-within-the-timeout"])
async def test_an_honest_answer_in_chunks_is_read_whole(chunks):
    client, _ = client_for(chunks, timeout=30)
    async with client:
        assert await client.execute("query { lot(id: \"lot_x\") { id } }") == {"lot": None}
