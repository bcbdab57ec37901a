"""An audit log keeping a small ``bytes`` record per connection in a module-level list."""

import argparse
import asyncio

from websockets.asyncio.server import serve

AUDIT = []
SIZE = 200


async def handler(websocket):
    AUDIT.append(bytes(SIZE))  # ~SIZE bytes per connection, each too small for its own malloc arena
    async for message in websocket:
        await websocket.send(message)


async def main(port):
    async with serve(handler, "127.0.0.1", port):
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bytes", type=int, default=SIZE)
    options = parser.parse_args()
    SIZE = options.bytes
    asyncio.run(main(options.port))
