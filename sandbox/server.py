"""Entry points: :func:`create_app` (the ASGI app) and :func:`run` (serve it, blocking).

``run`` is what ``python -m sandbox`` and the project CLI (``npay-billing sandbox``) call. It
serves with uvicorn on uvloop + httptools with the access log off: the worker's benchmarks need
well over a thousand requests per second from one core.
"""

from __future__ import annotations

from typing import Any

import uvicorn
from starlette.applications import Starlette

from sandbox.app import build_app
from sandbox.clock import Now, system_now
from sandbox.config import from_options
from sandbox.state import Runtime


def create_app(*, now: Now | None = None, **options: Any) -> Starlette:
    """The sandbox app with ``options`` (snake_case or camelCase names of SandboxConfig).

    ``now`` replaces the system clock (tests); ValueError on an unknown option or bad value.
    """
    return build_app(Runtime(from_options(options), now or system_now))


def run(
    host: str = "127.0.0.1", port: int = 8055, *, log_level: str = "warning", **options: Any
) -> None:
    """Serve the sandbox on ``host:port`` until interrupted."""
    app = create_app(**options)
    uvicorn.run(
        app, host=host, port=port, log_level=log_level, access_log=False,
        loop="uvloop", http="httptools", lifespan="off",
        server_header=False, date_header=False,
        # Held responses (timeoutAfterCommit) may sleep long; do not let them delay a stop.
        timeout_graceful_shutdown=1,
    )
