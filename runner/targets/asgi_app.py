"""A Starlette WebSocket echo app under uvicorn, in one process or several workers.

The stack many Python services deploy: an ASGI app, uvicorn, and ``--workers N`` for
more cores. With workers, uvicorn's supervisor process forks N worker processes that
share the listening socket; soak samples the whole process tree, so every worker's
memory counts. ``--leak-bytes N`` makes each connection leave N bytes behind in the
worker that served it (a module-level list that is never trimmed).

    python -m runner.targets.asgi_app --port 8000 --workers 2
    uvicorn runner.targets.asgi_app:app --port 8000          # the same app, your way

The WebSocket route is ``/ws`` (and ``/``).
"""

from __future__ import annotations

import argparse
import os
from typing import Sequence

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

__all__ = ["app", "main", "LEAK_ENV"]

#: uvicorn's workers import the app by name, so the leak size travels in the environment.
LEAK_ENV = "SOAK_ASGI_LEAK_BYTES"
_KEPT: list[bytearray] = []


async def echo(websocket: WebSocket) -> None:
    """Echo every text or binary message until the client closes."""
    await websocket.accept()
    leak = int(os.environ.get(LEAK_ENV, "0") or 0)
    if leak > 0:
        _KEPT.append(bytearray(leak))  # the leak, on purpose: nothing ever removes it
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await websocket.send_text(message["text"])
        elif message.get("bytes") is not None:
            await websocket.send_bytes(message["bytes"])


app = Starlette(routes=[WebSocketRoute("/ws", echo), WebSocketRoute("/", echo)])


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1: no supervisor)")
    p.add_argument("--leak-bytes", type=int, default=0, help="bytes each connection leaves behind (default 0: clean)")
    p.add_argument(
        "--healthcheck-timeout",
        type=int,
        default=60,
        help="seconds a worker may take to answer uvicorn's supervisor (default 60)",
    )
    args = p.parse_args(argv)
    os.environ[LEAK_ENV] = str(args.leak_bytes)
    uvicorn.run(
        "runner.targets.asgi_app:app",
        host=args.host,
        port=args.port,
        workers=args.workers if args.workers > 1 else None,
        ws="websockets-sansio",  # websockets' sans-I/O core: no deprecated legacy API
        log_level="warning",
        lifespan="off",
        # uvicorn kills a worker that does not answer its supervisor's ping within 5 s by default;
        # on a 2-core machine saturated by the soak itself that restarts workers in a loop.
        timeout_worker_healthcheck=args.healthcheck_timeout,
    )


if __name__ == "__main__":
    main()
