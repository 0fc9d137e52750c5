"""Costly queries execute on their own thread, with their own event loop and
their own database client, so that the server's event loop stays free.

Why: graphql-core completes a result synchronously between two awaits. An
operation the cost budget allows can build thousands of objects (4,096 lots
of `lots(first: 4) { … parents { parents { … } } }`, 100 `_entities` with
their parents, 1,000 provenance nodes), and every such stretch of Python ran
on the one event loop that also accepts connections and answers /healthz:
with 8 of them in flight, /healthz p99 was 0.4-0.8 s (docs/performance.md,
"Abuse"). Here an operation whose cost (resolvers.query_budget) reaches
`Limits.heavy_query_cost` executes on `QueryWorker`'s loop instead:

* the worker is one thread running an asyncio loop of its own, with a
  `Store` on a pymongo `AsyncMongoClient` of its own (a pymongo async client
  belongs to the loop that created it), on the same database, made by the
  same constructor as the server's (`Store.reconnect`: the same URI and
  options, hence the same credentials, timeouts and concerns). A server
  whose Store was made from a client handed in as is (not `Store.connect`)
  has no worker: its heavy queries execute on its loop, under the same limits;
* the main loop still parses, validates, coerces and prices the operation,
  waits for one of the `max_heavy_operations` heavy slots, then hands the
  validated document to the worker and awaits the result: the worker's
  execution is graphql-core's `execute` with the same schema, variables,
  root value and executor class as Strawberry's, and a context whose store
  and DataLoaders are the worker's. Errors come back as they are and go
  through the same extensions (masking, typing of database faults) on the
  main loop; the JSON of a large answer is encoded on the worker too;
* the worker's CPU still needs Python's GIL, but a thread holding it gives
  it up every switch interval (`sys.getswitchinterval()`: 1 ms in a server,
  `Settings.gil_switch_interval_seconds`, set by `api.server.serve`) when
  another thread waits for it, so the main loop runs at least every
  millisecond or so instead of after a whole result's completion. One worker
  thread, not one per operation: every extra runnable thread lengthens the
  main loop's wait for the GIL;
* mutations never come here (they stay on the main path, where the
  ingestion service and its verification pool live), nor do operations
  selecting the transparency log's fields (`resolvers.schema.MAIN_LOOP_ROOT_FIELDS`:
  the log keeps state on the main loop); their cost is bounded by the budget anyway;
* cancellation (a request cancelled at shutdown) cancels the worker's task.
  The request deadline (`ORETRACE_REQUEST_DEADLINE_SECONDS`) applies to the
  worker's database work from the start of its execution (waiting for a
  heavy slot is not database work).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pymongo
from graphql import ExecutionResult, execute
from strawberry.execution import optimized_is_awaitable
from strawberry.types.execution import ExecutionContext

from .store import Store

log = logging.getLogger("oretrace.api")

T = TypeVar("T")

class QueryWorker:
    """One thread with its own event loop and Store, started at the first use.

    `execute(ctx)`: the result of executing a validated operation there;
    `encode(data)`: the JSON text of a response there. `close()` stops it."""

    def __init__(self, store: Store, deadline_seconds: float) -> None:
        self.source = store
        self.deadline_seconds = deadline_seconds
        self.store: Store | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._starting: asyncio.Lock | None = None
        self.executions = 0  # operations executed here (tests, metrics)

    async def _start(self) -> None:
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self.store is not None:
                return
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="oretrace-heavy-queries", daemon=True)
            thread.start()
            self._loop, self._thread = loop, thread
            self.store = await self._submit(self._connect())

    async def _connect(self) -> Store:
        return self.source.reconnect()  # made here: the client belongs to this loop

    async def _submit(self, coroutine: Awaitable[T]) -> T:
        """Run `coroutine` on the worker's loop; cancelling the caller cancels it there."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()
            raise

    async def run(self, work: Callable[[Store], Awaitable[T]]) -> T:
        """`await work(store)` on the worker's loop with the worker's store."""
        await self._start()
        return await self._submit(work(self.store))

    async def execute(self, ctx: ExecutionContext, context_for: Callable[[Store], Any]) -> ExecutionResult:
        """graphql-core's execution of the (validated) operation of `ctx`, as
        Strawberry would run it, with `context_for(worker's store)` as the
        context value (the request's context with the worker's store and
        DataLoaders). Database work runs under the request deadline (pymongo CSOT)."""
        schema = ctx.schema
        self.executions += 1

        async def work(store: Store) -> ExecutionResult:
            context = context_for(store)
            with pymongo.timeout(self.deadline_seconds):
                result = execute(
                    schema._schema,
                    ctx.graphql_document,
                    root_value=ctx.root_value,
                    variable_values=ctx.variables,
                    operation_name=ctx.operation_name,
                    context_value=context,
                    is_awaitable=optimized_is_awaitable,
                    executor_class=schema.execution_context_class,
                    operation_extensions=ctx.operation_extensions,
                )
                if inspect.isawaitable(result):
                    result = await result
            return result

        return await self.run(work)

    async def encode(self, data: Any) -> str:
        """`json.dumps(data, separators=(",", ":"))` (Strawberry's encoding) on the worker."""

        async def work(_store: Store) -> str:
            return json.dumps(data, separators=(",", ":"))

        return await self.run(work)

    async def close(self) -> None:
        if self._loop is None:
            return
        loop, thread, store = self._loop, self._thread, self.store
        self._loop = self._thread = self.store = None
        if store is not None:
            try:
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(store.close(), loop))
            except Exception as exc:  # noqa: BLE001 - closing at shutdown: say it, go on
                log.warning("closing the heavy-query worker's database client: %s", exc)
        loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join, 10)
        loop.close()
