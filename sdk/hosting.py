"""Run the API server inside the current asyncio loop (for `serve --demo` and `demo`).

`running_server(settings, host, port)` starts uvicorn on the app of
`api.app.create_app(settings)` as a task of the running loop, waits until it
accepts connections (the lifespan has started the embedded database or
connected to MONGODB_URI by then), yields the base URL, and shuts it down
cleanly on exit. The embedded database is spawned from the loop's thread,
which is the main thread here, as its parent-death signal requires.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn

from api.embedded import free_port
from api.server import make_config
from api.settings import Settings


class ServerStartError(RuntimeError):
    pass


@contextlib.asynccontextmanager
async def running_server(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int | None = None,
    *,
    log_level: str = "warning",
    access_log: bool = False,
    capture_signals: bool = False,
    startup_timeout: float = 60.0,
) -> AsyncIterator[tuple[str, uvicorn.Server, asyncio.Task]]:
    """Yield (base_url, server, task); the server stops when the block exits."""
    port = port or free_port(host if host not in ("0.0.0.0", "::") else "127.0.0.1")
    config = make_config(settings, host, port, log_level=log_level, access_log=access_log)
    server = uvicorn.Server(config)
    if not capture_signals:
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + startup_timeout
    while not server.started:
        if task.done():
            exc = task.exception() if not task.cancelled() else None
            raise ServerStartError(f"the server stopped during startup: {exc!r}") from exc
        if loop.time() > deadline:
            server.should_exit = True
            raise ServerStartError(f"the server did not start within {startup_timeout:.0f} s")
        await asyncio.sleep(0.05)
    url_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    try:
        yield f"http://{url_host}:{port}", server, task
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(task), 30)
