"""The incident, reproduced: per-user session state is stored on connect and never removed.

Every connection adds a :class:`Session` to ``SESSIONS``; the disconnect path forgets to
delete it, so memory grows by about ``--leak-bytes`` per connection for as long as the
server runs. Otherwise it behaves exactly like :mod:`runner.targets.echo`.
"""

from __future__ import annotations

import argparse
import itertools

from websockets.asyncio.server import ServerConnection

from ._serve import Handler, main


class Session:
    """Per-user state a real server might keep: an id and a scratch buffer."""

    __slots__ = ("user_id", "buffer")

    def __init__(self, user_id: int, size: int) -> None:
        self.user_id = user_id
        self.buffer = bytearray(size)


SESSIONS: dict[int, Session] = {}
_ids = itertools.count(1)


def make_session(size: int) -> Session:
    user_id = next(_ids)
    session = Session(user_id, size)
    SESSIONS[user_id] = session  # the leak: nothing ever deletes this entry
    return session


def make_handler(args: argparse.Namespace) -> Handler:
    async def handler(websocket: ServerConnection) -> None:
        make_session(args.leak_bytes)
        async for message in websocket:
            await websocket.send(message)
        # BUG (on purpose): the session is not removed from SESSIONS on disconnect.

    return handler


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--leak-bytes", type=int, default=2048, help="bytes of session state kept per connection (default: 2048)")


if __name__ == "__main__":
    main(make_handler, __doc__ or "", configure=_options)
