"""Run the API under uvicorn, programmatically.

    serve(host="127.0.0.1", port=8000, data_dir="./oretrace-data", root_public_key=...)

is what `oretrace serve` calls. `python -m api.server --help` does the same
from a shell (used by the tests that restart a real server process).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import uvicorn

from .app import create_app
from .http_protocol import bounded_h11_protocol
from .settings import Settings, SettingsError
from .store import Store


def make_config(
    settings: Settings,
    host: str,
    port: int,
    *,
    store: Store | None = None,
    log_level: str = "info",
    access_log: bool = True,
    **uvicorn_options: Any,
) -> uvicorn.Config:
    app = create_app(settings, store=store)
    limits = settings.limits
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "access_log": access_log,
        "lifespan": "on",
        # SIGTERM: stop accepting, let requests in flight finish this long, then
        # cancel them (typed 503 from api.app.TypedCancellation), then the lifespan
        # stops the database
        "timeout_graceful_shutdown": settings.shutdown_grace_seconds,
        "server_header": False,
        "proxy_headers": False,
        # connection hygiene (docs/operations.md): header and send timeouts and connection cap
        # in the protocol, keep-alive and concurrent requests in uvicorn, body timeout in the app
        "http": bounded_h11_protocol(
            limits.header_timeout_seconds, limits.max_connections, limits.send_timeout_seconds
        ),
        "timeout_keep_alive": limits.keepalive_timeout_seconds,
        "limit_concurrency": limits.max_connections,
    }
    options.update(uvicorn_options)
    return uvicorn.Config(app, **options)


#: the server's log levels (`--log-level`; Python logging's names, lower case)
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    settings: Settings | None = None,
    root_public_key: str | None = None,
    network: str | None = None,
    mongodb_uri: str | None = None,
    database: str | None = None,
    log_level: str = "info",
    **uvicorn_options: Any,
) -> None:
    """Serve until SIGINT/SIGTERM; the lifespan starts and stops the embedded database.

    Explicit arguments override the environment (see api.settings)."""
    settings = settings or Settings.from_env(
        data_dir=Path(data_dir) if data_dir is not None else None,
        root_public_key=root_public_key,
        network=network,
        mongodb_uri=mongodb_uri,
        database=database,
    )
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # process-wide, hence here (the process's entry point) and not in create_app: the
    # event loop waits at most this long for the GIL held by another thread (the
    # validation threads, a large body's rebuild)
    # (docs/operations.md, "Keeping the event loop free")
    sys.setswitchinterval(settings.gil_switch_interval_seconds)
    config = make_config(settings, host, port, log_level=log_level, **uvicorn_options)
    uvicorn.Server(config).run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m api.server", description="Run the oretrace GraphQL API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--data-dir", default=None, help="embedded database directory (ORETRACE_DATA_DIR)")
    parser.add_argument("--root-public-key", default=None, help="hex Ed25519 key (ORETRACE_ROOT_PUBLIC_KEY)")
    parser.add_argument("--network", default=None)
    parser.add_argument("--mongodb-uri", default=None)
    parser.add_argument("--database", default=None)
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    args = parser.parse_args(argv)
    try:
        serve(
            args.host,
            args.port,
            args.data_dir,
            root_public_key=args.root_public_key,
            network=args.network,
            mongodb_uri=args.mongodb_uri,
            database=args.database,
            log_level=args.log_level,
        )
    except SettingsError as exc:  # one line naming the variable, as argparse does for a flag
        parser.exit(2, f"{parser.prog}: {exc}\n")


if __name__ == "__main__":
    main()
