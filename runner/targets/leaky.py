"""The incident, reproduced: per-user session state is stored on connect and never removed.

Every connection adds a :class:`Session` to ``SESSIONS``; the disconnect path forgets to
delete it, so memory grows by about ``--leak-bytes`` per connection for as long as the
server runs. Otherwise it behaves exactly like :mod:`runner.targets.echo`.
"""

from __future__ import annotations

import argparse
import itertools

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosedError

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
        session = make_session(args.leak_bytes)
        try:
            async for message in websocket:
                await websocket.send(message)
        except ConnectionClosedError:  # the client vanished without a closing handshake
            if args.leak_on_drop_only:
                return  # BUG (on purpose): this early return skips the cleanup below
            raise
        if args.leak_on_drop_only:
            # A clean close reaches the cleanup; a killed tab or a lost network never does.
            # Clean-close churn cannot find this leak; load.drop_fraction does.
            del SESSIONS[session.user_id]
        # BUG (on purpose): otherwise the session is never removed from SESSIONS.

    return handler


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--leak-bytes", type=int, default=2048, help="bytes of session state kept per connection (default: 2048)"
    )
    p.add_argument(
        "--leak-on-drop-only",
        action="store_true",
        help="delete the session after a clean close; keep it only for clients that vanish without a close handshake",
    )


if __name__ == "__main__":
    main(make_handler, __doc__ or "", configure=_options)
