"""A clean server: a cache that fills up to its bound and stops, and a set of open connections."""

import argparse
import asyncio
import itertools

from websockets.asyncio.server import serve

CACHE = {}
CONNECTED = set()
RECENT = []
_ids = itertools.count()


async def handler(websocket):
    n = next(_ids)
    CONNECTED.add(websocket)
    key = n % 300
    if key not in CACHE:
        CACHE[key] = bytearray(1024)  # fills up to 300 entries, then every lookup hits
    RECENT.append(n)
    del RECENT[:-50]  # a bounded history
    try:
        async for message in websocket:
            await websocket.send(message)
    finally:
        CONNECTED.discard(websocket)


async def main(port):
    async with serve(handler, "127.0.0.1", port):
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
