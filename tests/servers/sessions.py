"""A chat server keeping a session object per user in a module-level dict, never deleted."""

import argparse
import asyncio
import itertools

from websockets.asyncio.server import serve


class Session:
    def __init__(self, user_id, remote):
        self.user_id = user_id
        self.name = f"user-{user_id:08d}"
        self.remote = str(remote)
        self.seen = {"joined": f"connection {user_id} from {remote}", "rooms": ["lobby"]}
        self.buffer = bytearray(1024)


SESSIONS = {}
_ids = itertools.count(1)


async def handler(websocket):
    user_id = next(_ids)
    SESSIONS[user_id] = Session(user_id, websocket.remote_address)  # the disconnect path forgets it
    async for message in websocket:
        await websocket.send(message)


async def main(port):
    async with serve(handler, "127.0.0.1", port):
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
