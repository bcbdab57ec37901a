"""A clean WebSocket echo server: every message comes back; nothing outlives its connection."""

from __future__ import annotations

import argparse

from websockets.asyncio.server import ServerConnection

from ._serve import Handler, main


def make_handler(args: argparse.Namespace) -> Handler:
    async def echo(websocket: ServerConnection) -> None:
        async for message in websocket:
            await websocket.send(message)

    return echo


if __name__ == "__main__":
    main(make_handler, __doc__ or "")
