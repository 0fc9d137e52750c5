"""A per-client rate limit for the API: a token bucket per client address,
answering **429 Too Many Requests** with `Retry-After` (RFC 9110 section
10.2.3; RFC 6585 section 4) and a JSON GraphQL error coded `RATE_LIMITED`.

    RateLimit(app, rate=20.0, burst=100, exempt=("/healthz",))

Each client (the connection's peer address: `scope["client"][0]`) may send
`burst` requests at once, then `rate` requests per second. The buckets live
in memory, at most `max_clients` of them (least recently seen dropped
first), so the table itself cannot be grown without bound by many addresses.

This is the app's backstop. Behind a front proxy every request comes from the
proxy's address: rate-limit at the proxy (docs/operations.md ships an nginx
snippet) and turn this one off, or raise it, there. `exempt` paths (health
checks from an orchestrator) are never limited.

No library: the well-kept ones (`limits`, `slowapi`) bring storage backends
and a framework integration for what is twenty lines of arithmetic here.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

#: Buckets kept at once; beyond, the least recently seen client is forgotten
#: (it gets a full bucket on its next request).
MAX_CLIENTS = 65_536


class TokenBuckets:
    """`take(key)` -> 0.0 if a request may go now, else the seconds until it may."""

    def __init__(self, rate: float, burst: int, *, max_clients: int = MAX_CLIENTS,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self.max_clients = max_clients
        self.clock = clock
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def take(self, key: str) -> float:
        now = self.clock()
        tokens, at = self.buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self.buckets[key] = (tokens, now)  # most recently seen last
        while len(self.buckets) > self.max_clients:
            self.buckets.popitem(last=False)
        return wait


class RateLimit:
    """ASGI middleware: HTTP requests over a client's rate get 429 + Retry-After."""

    def __init__(self, app: ASGIApp, rate: float, burst: int, exempt: Iterable[str] = ()) -> None:
        self.app = app
        self.buckets = TokenBuckets(rate, burst)
        self.exempt = frozenset(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.exempt:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        wait = self.buckets.take(client[0] if client else "-")
        if wait <= 0:
            await self.app(scope, receive, send)
            return
        retry_after = max(1, math.ceil(wait))
        body = json.dumps(
            {
                "errors": [
                    {
                        "message": f"too many requests from this client: retry after {retry_after} s",
                        "extensions": {"code": "RATE_LIMITED", "retryAfter": retry_after},
                    }
                ]
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 429,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(retry_after).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
