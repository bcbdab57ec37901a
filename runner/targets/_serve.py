"""Shared start-up of the bundled targets: argument parsing, serving, clean SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Awaitable, Callable, Sequence

from websockets.asyncio.server import ServerConnection, serve

Handler = Callable[[ServerConnection], Awaitable[None]]


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    return p


async def _serve_until_stopped(handler: Handler, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: None if stop.done() else stop.set_result(None))
    # No compression: the load generator does not ask for it, and the bundled targets
    # should measure per-connection state, not zlib buffers.
    async with serve(handler, host, port, compression=None, max_queue=16, ping_interval=None):
        print(f"listening on ws://{host}:{port}/", flush=True)
        await stop


def run(handler: Handler, args: argparse.Namespace) -> None:
    """Serve ``handler`` until SIGTERM or SIGINT, then return normally."""
    asyncio.run(_serve_until_stopped(handler, args.host, args.port))


def main(handler_factory: Callable[[argparse.Namespace], Handler], description: str, argv: Sequence[str] | None = None,
         configure: Callable[[argparse.ArgumentParser], None] | None = None) -> None:
    p = parser(description)
    if configure:
        configure(p)
    args = p.parse_args(argv)
    run(handler_factory(args), args)
