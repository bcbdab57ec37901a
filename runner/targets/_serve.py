"""Shared start-up of the bundled targets: argument parsing, serving, clean SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any, Awaitable, Callable, Sequence

from websockets.asyncio.server import ServerConnection, serve

Handler = Callable[[ServerConnection], Awaitable[None]]

#: websockets' own keepalive defaults: a real server pings, and closes a connection whose
#: client does not answer (code 1011, "keepalive ping timeout").
PING_INTERVAL = 20.0
PING_TIMEOUT = 20.0


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    add_keepalive_arguments(p)
    return p


def add_keepalive_arguments(p: argparse.ArgumentParser) -> None:
    """--ping-interval/--ping-timeout: websockets' keepalive, on by default as in real servers (20 s, 20 s)."""
    p.add_argument(
        "--ping-interval",
        type=_seconds_or_off,
        default=PING_INTERVAL,
        help=f"seconds between keepalive pings, 0 = off (default {PING_INTERVAL:g}, websockets' default)",
    )
    p.add_argument(
        "--ping-timeout",
        type=_seconds_or_off,
        default=PING_TIMEOUT,
        help=f"seconds a pong may take before the server closes the connection (default {PING_TIMEOUT:g})",
    )


def keepalive(args: argparse.Namespace) -> dict[str, Any]:
    """websockets' ``serve`` keyword arguments for the parsed keepalive options."""
    return {
        "ping_interval": getattr(args, "ping_interval", PING_INTERVAL),
        "ping_timeout": getattr(args, "ping_timeout", PING_TIMEOUT),
    }


def _seconds_or_off(text: str) -> float | None:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text}")
    return value or None


async def _serve_until_stopped(handler: Handler, host: str, port: int, options: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: None if stop.done() else stop.set_result(None))
    # No compression: the load generator does not ask for it, and the bundled targets
    # should measure per-connection state, not zlib buffers.
    async with serve(handler, host, port, compression=None, max_queue=16, **options):
        print(f"listening on ws://{host}:{port}/", flush=True)
        await stop


def run(handler: Handler, args: argparse.Namespace) -> None:
    """Serve ``handler`` until SIGTERM or SIGINT, then return normally."""
    asyncio.run(_serve_until_stopped(handler, args.host, args.port, keepalive(args)))


def main(
    handler_factory: Callable[[argparse.Namespace], Handler],
    description: str,
    argv: Sequence[str] | None = None,
    configure: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    p = parser(description)
    if configure:
        configure(p)
    args = p.parse_args(argv)
    run(handler_factory(args), args)


def run_asgi(app: Any, host: str, port: int) -> None:
    """Serve an ASGI app under uvicorn as the bundled ASGI targets do (websockets' sans-I/O core, quiet logs).

    uvicorn is imported here: only the ASGI targets need it, and it is a test-only dependency.
    """
    import uvicorn

    uvicorn.run(
        app, host=host, port=port, ws="websockets-sansio", ws_ping_interval=None, log_level="warning", lifespan="off"
    )
