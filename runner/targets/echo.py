"""A clean WebSocket echo server: every message comes back; nothing outlives its connection.

``--idle-timeout S`` closes a connection that sent no message for S seconds (code 1001,
reason "idle timeout"), as many production servers do: a server that ends connections
while the client holds them. Keepalive pings follow websockets' defaults (see ``--ping-interval``).
"""

from __future__ import annotations

import argparse
import asyncio

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from ._serve import Handler, main

#: Close code and reason of an idle connection (1001: going away).
IDLE_CLOSE = (1001, "idle timeout")


def make_handler(args: argparse.Namespace) -> Handler:
    idle = getattr(args, "idle_timeout", 0.0)

    async def echo(websocket: ServerConnection) -> None:
        if not idle:
            async for message in websocket:
                await websocket.send(message)
            return
        while True:
            try:
                message = await asyncio.wait_for(websocket.recv(), idle)
            except TimeoutError:
                await websocket.close(*IDLE_CLOSE)
                return
            except ConnectionClosed:
                return
            await websocket.send(message)

    return echo


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=0.0,
        help="close a connection that sent nothing for this many seconds (default 0: never)",
    )


if __name__ == "__main__":
    main(make_handler, __doc__ or "", configure=configure)
