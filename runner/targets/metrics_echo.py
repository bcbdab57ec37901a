"""An echo server that exports its own Prometheus metrics, clean or leaky.

The WebSocket echo and ``GET /metrics`` share one port (``process_request`` answers plain
HTTP requests before the handshake), so ``sampling.metrics_url =
"http://127.0.0.1:{port}/metrics"`` works for a started target and for one given only by
URL. The page is prometheus_client's default registry: ``process_resident_memory_bytes``,
``process_open_fds``, ``python_gc_*``, plus ``echo_connections_total`` and
``echo_sessions`` of this server. ``--leak-bytes N`` keeps N bytes of session state per
connection for ever (as :mod:`runner.targets.leaky` does); 0, the default, is clean.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, generate_latest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from . import echo, leaky
from ._serve import keepalive, parser

CONNECTIONS = Counter("echo_connections", "WebSocket connections accepted")
SESSIONS = Gauge("echo_sessions", "Sessions kept in memory")
SESSIONS.set_function(lambda: len(leaky.SESSIONS))


def process_request(connection: ServerConnection, request: Request) -> Response | None:
    """``/metrics`` is the exposition page; every other path goes on to the WebSocket handshake."""
    if request.path.split("?", 1)[0] != "/metrics":
        return None
    response = connection.respond(200, generate_latest(REGISTRY).decode())
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def _serve(args: argparse.Namespace) -> None:
    args.leak_on_drop_only = False
    inner = leaky.make_handler(args) if args.leak_bytes > 0 else echo.make_handler(args)

    async def handler(websocket: ServerConnection) -> None:
        CONNECTIONS.inc()
        await inner(websocket)

    loop = asyncio.get_running_loop()
    stop = loop.create_future()

    def finish() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, finish)
    async with serve(
        handler,
        args.host,
        args.port,
        process_request=process_request,
        compression=None,
        max_queue=16,
        **keepalive(args),
    ):
        where = f"{args.host}:{args.port}"
        print(f"listening on ws://{where}/ (metrics on http://{where}/metrics)", flush=True)
        await stop


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument(
        "--leak-bytes", type=int, default=0, help="bytes of session state kept per connection (default 0: clean)"
    )
    asyncio.run(_serve(p.parse_args()))


if __name__ == "__main__":
    main()
