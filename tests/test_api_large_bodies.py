"""Request bodies over INLINE_BODY_BYTES (api.app.BodyLimits, GraphQLView.run):
decoded in a body-decoder process (api.body_decoding) with exactly the answers of small bodies,
admitted `Limits.large_body_slots` at a time (the others wait, then 503), and
not kept once answered. Ordering only, no timing: a request is held inside
the app by a database read that waits for the test."""

from __future__ import annotations

import asyncio
import gc
import json
import threading

import httpx
import pytest

from api import app as app_module
from api.app import INLINE_BODY_BYTES, create_app
from api.settings import BODY_MEMORY_FACTOR, Limits
from api.store import Store
from conftest import build_chain

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
async def chain(world, publish):
    return await build_chain(world, publish, suffix="-lb")


def padded(body: bytes) -> bytes:
    """The same JSON text with trailing whitespace, past the inline threshold."""
    return body + b" " * (INLINE_BODY_BYTES + 1 - len(body) + 10)


SMALL_BODIES = [
    json.dumps({"query": "{ __typename }"}).encode(),
    json.dumps({"query": "query($x: ID!) { lot(id: $x) { id } }", "variables": {"x": "lot_none"}}).encode(),
    b'{"query": "{ __typename }", "variables": {"a": "\xff"}}',  # not UTF-8
    b'{"query": "{ __typename }", "query": "{ __typename }"}',  # duplicate member name
    b'{"query": "{ __typename }", "variables": {"a": ["x", {"b": "\\udc00"}]}}',  # lone surrogate, deep
    b'{"query": "{ __typename }", "variables": {"a": "\\ud83d\\ude00"}}',  # a surrogate pair: fine
    b'{"query": "{ __typename }", "variables": {"a": NaN}}',
    b'{"query": "{ __typename }", "variables": {"a": ' + b"7" * 41 + b"}}",
    b'{"query": "{ __typename }", "variables": ' + b"[" * 65 + b"]" * 65 + b"}",
    b'[{"query": "{ __typename }"}]',  # not an object
    b'{"query": "{ __typename }" "variables": {}}',  # not JSON
    b"null",
]


@pytest.mark.parametrize("body", SMALL_BODIES, ids=range(len(SMALL_BODIES)))
async def test_large_bodies_get_the_answers_of_their_small_versions(app, client, monkeypatch, body: bytes) -> None:
    """The small body is decoded in the server's process, its padded copy in a decoder
    process (api.body_decoding); the answers are the same."""
    inline: list[tuple[bytes, str]] = []
    in_child: list[bytes] = []
    decode, decoder = app_module.GraphQLView._decode, app.state.runtime.body_decoder
    decode_in_child = decoder.decode

    def spy(view, data):
        inline.append((data, threading.current_thread().name))
        return decode(view, data)

    async def child_spy(data):
        in_child.append(data)
        return await decode_in_child(data)

    monkeypatch.setattr(app_module.GraphQLView, "_decode", spy)
    monkeypatch.setattr(decoder, "decode", child_spy)
    small = await client.post("/graphql", content=body, headers=JSON)
    large = await client.post("/graphql", content=padded(body), headers=JSON)
    assert (large.status_code, large.json()) == (small.status_code, small.json())
    assert small.status_code in (200, 400) and small.headers["content-type"].startswith("application/json")
    assert inline == [(body, threading.main_thread().name)] and in_child == [padded(body)]
    assert decoder.pids("idle"), "the decoder process stays up for the next large body"


async def test_a_large_body_is_not_kept_once_answered(client) -> None:
    """Nothing reachable keeps its parsed value once the request is answered, whatever
    outlives the request (here the test's own task, which ran the app: the context
    variable that carried the decoded body to Strawberry used to keep it there)."""
    marker = "marker_not_kept_" + "0" * 8
    body = json.dumps({"query": "{ __typename }", "variables": {marker: [f"{i:08d}" for i in range(9_000)]}}).encode()
    assert len(body) > INLINE_BODY_BYTES
    response = await client.post("/graphql", content=body, headers=JSON)
    assert response.json() == {"data": {"__typename": "Query"}}
    gc.collect()  # Strawberry's per-request objects hold each other in cycles: collect those
    assert not [o for o in gc.get_objects() if type(o) is dict and marker in o]


# --------------------------------------------------------------------------- admission


class HeldLots:
    """Store.list_lots waits for `release()` (on whichever loop calls it)."""

    def __init__(self, monkeypatch) -> None:
        self.entered = threading.Semaphore(0)
        self.gate = threading.Event()
        original = Store.list_lots
        held = self

        async def list_lots(self, *args, **kwargs):
            held.entered.release()
            await asyncio.to_thread(held.gate.wait, 60)
            return await original(self, *args, **kwargs)

        monkeypatch.setattr(Store, "list_lots", list_lots)

    async def wait_entered(self) -> None:
        assert await asyncio.to_thread(self.entered.acquire, True, 60), "the held read never started"


HELD_QUERY = padded(json.dumps({"query": "{ lots(first: 1) { edges { node { id } } } }"}).encode())
LARGE = padded(json.dumps({"query": "{ __typename }"}).encode())
SMALL = json.dumps({"query": "{ __typename }"}).encode()


def one_slot_limits(wait: float) -> Limits:
    limits = Limits(large_body_memory_mb=BODY_MEMORY_FACTOR - 1, large_body_wait_seconds=wait)
    assert limits.large_body_slots == 1
    return limits


async def _app_client(api_settings, store, limits: Limits):
    app = create_app(api_settings.model_copy(update={"limits": limits}), store=store)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=120)
    return app, client


async def chunks(body: bytes, size: int = 16 * 1024):
    for i in range(0, len(body), size):
        yield body[i : i + size]


def test_the_slots_follow_the_memory_budget() -> None:
    assert Limits().large_body_slots == 2  # 64 MB / (30 x 1 MiB)
    assert Limits(large_body_memory_mb=1).large_body_slots == 1  # never zero
    assert Limits(max_body_bytes=256 * 1024, large_body_memory_mb=64).large_body_slots == 8


async def test_beyond_the_slots_large_bodies_get_503_after_the_wait(api_settings, store, chain, monkeypatch) -> None:
    held = HeldLots(monkeypatch)
    app, client = await _app_client(api_settings, store, one_slot_limits(wait=0.2))
    try:
        first = asyncio.create_task(client.post("/graphql", content=HELD_QUERY, headers=JSON))
        try:
            await held.wait_entered()  # the first large body holds the only slot
            refused = [
                await client.post("/graphql", content=LARGE, headers=JSON),
                await client.post("/graphql", content=chunks(LARGE), headers=JSON),  # chunked: no Content-Length
            ]
            small = await client.post("/graphql", content=SMALL, headers=JSON)  # small bodies never wait
            assert not first.done()
        finally:
            held.gate.set()
        assert (await first).status_code == 200
        for response in refused:
            assert response.status_code == 503, response.text
            assert response.json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
            assert int(response.headers["retry-after"]) > 0 and response.headers["connection"] == "close"
        assert small.json() == {"data": {"__typename": "Query"}}
        # the slot is free again
        after = await client.post("/graphql", content=LARGE, headers=JSON)
        assert after.json() == {"data": {"__typename": "Query"}}
    finally:
        await client.aclose()
        await app.state.runtime.stop()  # readiness check, query worker, ingestion pool (not the store)


async def test_within_the_wait_large_bodies_queue_for_a_slot(api_settings, store, chain, monkeypatch) -> None:
    held = HeldLots(monkeypatch)
    app, client = await _app_client(api_settings, store, one_slot_limits(wait=60))
    try:
        first = asyncio.create_task(client.post("/graphql", content=HELD_QUERY, headers=JSON))
        await held.wait_entered()
        queued = [asyncio.create_task(client.post("/graphql", content=body, headers=JSON))
                  for body in (LARGE, chunks(LARGE))]  # fmt: skip
        small = await client.post("/graphql", content=SMALL, headers=JSON)
        assert small.json() == {"data": {"__typename": "Query"}}
        assert not first.done() and not any(q.done() for q in queued)  # waiting, not refused
        held.gate.set()
        assert (await first).status_code == 200
        for response in await asyncio.gather(*queued):
            assert response.json() == {"data": {"__typename": "Query"}}
    finally:
        await client.aclose()
        await app.state.runtime.stop()  # readiness check, query worker, ingestion pool (not the store)


class Trickler:
    """An ASGI client sending a large body that does not keep up: `sends` is a list
    of (bytes, seconds to wait before handing them over, or None: hand them over at
    once and send nothing more)."""

    def __init__(self, sends: list[tuple[bytes, float | None]], declared: int | None) -> None:
        self.sends = sends
        self.declared = declared
        self.admitted = asyncio.Event()  # the app asked for the body: it holds a slot
        self.answer: list[dict] = []

    async def __call__(self, app) -> tuple[int, dict]:
        headers = [(b"content-type", b"application/json")]
        if self.declared is not None:
            headers.append((b"content-length", str(self.declared).encode()))
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/graphql", "raw_path": b"/graphql", "root_path": "",
                 "query_string": b"", "headers": headers, "client": ("127.0.0.9", 4242),
                 "server": ("test", 80)}  # fmt: skip
        pieces = list(self.sends)

        async def receive():
            self.admitted.set()
            if not pieces:
                await asyncio.Event().wait()  # stalled: nothing more comes
            data, pause = pieces.pop(0)
            if pause is None:
                pieces.clear()  # this piece, then nothing
            else:
                await asyncio.sleep(pause)
            return {"type": "http.request", "body": data, "more_body": True}

        async def send(message):
            self.answer.append(message)

        await app(scope, receive, send)
        status = next(m["status"] for m in self.answer if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in self.answer if m["type"] == "http.response.body")
        return status, json.loads(body)


TRICKLES = {
    "declared, one byte then nothing": ([(b"{", None)], 200_000),
    "declared, a byte every 50 ms": ([(b" ", 0.05)] * 10_000, 200_000),
    "declared, 8 KiB at once then nothing": ([(b" " * 8192, None)], 200_000),
    "chunked, past the threshold then nothing": ([(b" " * (INLINE_BODY_BYTES + 1), None)], None),
}


@pytest.mark.parametrize("case", TRICKLES)
async def test_a_large_body_that_stops_keeping_up_gives_its_slot_back(api_settings, store, chain, monkeypatch, case):
    """A slot holder sending slower than `large_body_min_bytes_per_second` (after the
    grace) is answered 408 and its slot goes to the next large body; the body
    timeout (an hour here) would have kept every other large body out."""
    monkeypatch.setattr(app_module, "LARGE_BODY_GRACE_SECONDS", 0.3)
    sends, declared = TRICKLES[case]
    limits = one_slot_limits(wait=3600).model_copy(update={"body_timeout_seconds": 3600.0,
                                                           "large_body_min_bytes_per_second": 4096})  # fmt: skip
    app, client = await _app_client(api_settings, store, limits)
    try:
        trickler = Trickler(sends, declared)
        holder = asyncio.create_task(trickler(app))
        await trickler.admitted.wait()
        honest = await client.post("/graphql", content=LARGE, headers=JSON)  # waits for the slot
        assert honest.status_code == 200 and honest.json() == {"data": {"__typename": "Query"}}, honest.text
        status, answer = await holder
        assert status == 408, answer
        assert answer["errors"][0]["extensions"]["code"] == "REQUEST_TIMEOUT"
        assert "slower than 4096 bytes/s" in answer["errors"][0]["message"]
    finally:
        await client.aclose()
        await app.state.runtime.stop()  # readiness check, query worker, ingestion pool (not the store)


async def test_a_large_body_that_keeps_up_is_not_cut(api_settings, store, chain, monkeypatch) -> None:
    """Pieces arriving faster than the minimum rate, with pauses: the whole body is read."""
    monkeypatch.setattr(app_module, "LARGE_BODY_GRACE_SECONDS", 0.3)
    limits = one_slot_limits(wait=3600).model_copy(update={"large_body_min_bytes_per_second": 4096})
    app, client = await _app_client(api_settings, store, limits)

    async def steady():
        for i in range(0, len(LARGE), 8192):  # 8 KiB every 0.1 s: 80 KiB/s
            yield LARGE[i : i + 8192]
            await asyncio.sleep(0.1)

    try:
        response = await client.post("/graphql", content=steady(), headers=JSON)
        assert response.status_code == 200 and response.json() == {"data": {"__typename": "Query"}}, response.text
    finally:
        await client.aclose()
        await app.state.runtime.stop()
