"""uvicorn's h11 protocol with the two connection bounds uvicorn lacks:

* a **header read timeout**: a connection must deliver a request's complete
  headers within `header_timeout` seconds of opening, or of its previous
  response (uvicorn only times out an idle keep-alive connection *after* a
  response; a connection that never sends, or trickles its headers a byte at
  a time, stayed open forever: 30 such held ~1.3 MB each for minutes);
* a **bound on open connections**: beyond `max_connections` a new
  connection is closed at once, before it holds any buffer;
* a **send timeout**: a response the client does not read (its socket
  buffers full, the transport's write buffer above its high-water mark)
  for `send_timeout` seconds in a row aborts the connection (uvicorn waits
  for the buffer to drain forever: a client that sends pipelined requests
  for large responses and reads nothing, or a byte now and then, held its
  connection, its task and its buffers indefinitely; 256 of them fill the
  connection cap and lock every other client out, /healthz included).
  Abort, not close: close() itself waits for the unsent bytes;
* a **JSON 400** for requests h11 cannot parse (bad framing: a malformed
  Content-Length or chunk size, an unsupported Transfer-Encoding, a bad
  request line or header): one GraphQL error coded BAD_REQUEST, like every
  other refusal, instead of uvicorn's plain-text answer.

    protocol_class = bounded_h11_protocol(header_timeout=10.0, max_connections=256, send_timeout=30.0)
    uvicorn.Config(app, http=protocol_class, limit_concurrency=256, timeout_keep_alive=5)

The body read timeout is the app's (api.app.BodyLimits: it reads the body);
keep-alive and concurrent-request limits are uvicorn's own settings
(`timeout_keep_alive`, `limit_concurrency`). docs/operations.md says which
bound lives where, and what a front proxy should add.
"""

from __future__ import annotations

import asyncio
import json
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .app import http_error_code

log = logging.getLogger("oretrace.http")


class BoundedH11Protocol(H11Protocol):
    """H11Protocol + header read timeout + connection cap + send timeout
    (class attributes, set by `bounded_h11_protocol`)."""

    header_timeout: float = 10.0
    max_connections: int = 256
    send_timeout: float = 30.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._waiting_cycle = None
        if len(self.connections) > self.max_connections:
            log.warning("refused a connection: %d open (limit %d)", len(self.connections) - 1, self.max_connections)
            transport.close()
            return
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._header_timer is not None and self.cycle is not self._waiting_cycle:
            self._cancel_header_timer()  # a new request's headers are complete

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self._arm_header_timer()  # the next request's headers have the same deadline (unless pipelined)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        self._cancel_send_timer()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        """The transport's write buffer is full: the client has `send_timeout`
        seconds to read enough of it (until `resume_writing`)."""
        super().pause_writing()
        if getattr(self, "_send_timer", None) is None:
            self._send_timer = self.loop.call_later(self.send_timeout, self._send_timeout_expired)

    def resume_writing(self) -> None:
        self._cancel_send_timer()
        super().resume_writing()

    def _cancel_send_timer(self) -> None:
        if getattr(self, "_send_timer", None) is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_timeout_expired(self) -> None:
        self._send_timer = None
        log.info("aborted a connection: the client read none of its response for %s s", self.send_timeout)
        self.transport.abort()  # connection_lost follows: uvicorn marks the cycle disconnected

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request h11 cannot parse, as JSON (`msg` is
        uvicorn's fixed text, never the client's bytes); the connection closes."""
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):  # a response already started
            self.transport.close()
            return
        body = json.dumps({"errors": [{"message": msg, "extensions": {"code": http_error_code(400)}}]}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body),
                      h11.EndOfMessage()):  # fmt: skip
            self.transport.write(self.conn.send(event))
        self.transport.close()

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._waiting_cycle = self.cycle
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_timeout_expired)

    def _cancel_header_timer(self) -> None:
        if getattr(self, "_header_timer", None) is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout_expired(self) -> None:
        self._header_timer = None
        if self.cycle is self._waiting_cycle and not self.transport.is_closing():
            log.info("closed a connection: no complete request headers within %s s", self.header_timeout)
            self.transport.close()


def bounded_h11_protocol(header_timeout: float, max_connections: int,
                         send_timeout: float = BoundedH11Protocol.send_timeout) -> type[BoundedH11Protocol]:  # fmt: skip
    """A BoundedH11Protocol subclass with these bounds (uvicorn takes a class)."""
    return type(
        "BoundedH11Protocol",
        (BoundedH11Protocol,),
        {"header_timeout": header_timeout, "max_connections": max_connections, "send_timeout": send_timeout},
    )
