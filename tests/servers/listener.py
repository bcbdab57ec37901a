"""A presence server: every connection registers a listener on a module-level list, never removed.

Written as a user would write it (plain ``websockets``), to soak a leak this project did not
write: the closure keeps the connection, its protocol and buffers, allocated inside websockets.
"""

import argparse
import asyncio

from websockets.asyncio.server import serve

LISTENERS = []


async def handler(websocket):
    scratch = bytearray(1024)
    LISTENERS.append(lambda event: (scratch, websocket.send(event)))  # never removed on close
    async for message in websocket:
        await websocket.send(message)


async def main(port):
    async with serve(handler, "127.0.0.1", port):
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
