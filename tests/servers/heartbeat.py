"""A server starting a heartbeat task per connection and never cancelling it."""

import argparse
import asyncio

from websockets.asyncio.server import serve


async def heartbeat(websocket):
    while True:
        await asyncio.sleep(3600)
        try:
            await websocket.send("ping")
        except Exception:
            pass


async def handler(websocket):
    asyncio.create_task(heartbeat(websocket))  # never cancelled when the connection closes
    async for message in websocket:
        await websocket.send(message)


async def main(port):
    async with serve(handler, "127.0.0.1", port):
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
