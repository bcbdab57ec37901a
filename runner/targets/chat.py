"""A chat server with rooms and broadcast that wants an auth message first (clean or leaky).

Protocol (JSON text messages)::

    -> {"type": "auth", "user": "alice", "token": "..."}   first message, always
    <- {"type": "welcome", "user": "alice", "header": <value of --echo-header or null>}
    -> {"type": "join", "room": "lobby"}
    <- {"type": "joined", "room": "lobby", "user": "alice", "members": 3}   (to the whole room)
    -> {"type": "say", "room": "lobby", "text": "hi"}
    <- {"type": "message", "room": "lobby", "from": "alice", "text": "hi"}  (to the whole room)
    -> {"type": "leave", "room": "lobby"}
    <- {"type": "left", "room": "lobby"}

Anything before a valid auth gets ``{"type": "error"}`` and close code 4001. With
``--require-header NAME`` the handshake itself is refused (HTTP 401) without that
header, and the welcome echoes its value, so a test can see a templated header arrive.

The leak (``--leak-bytes N``, N > 0) lives in the join path: :func:`join` files a
member profile per (room, connection) and the leave/disconnect path forgets to remove
it - the incident's "per-user state in a map the disconnect never cleans". With
``--leak-bytes 0`` (the clean variant) the same profile is made and removed.
``--certfile/--keyfile`` serve wss://.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import signal
import ssl
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Sequence

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

from ._serve import add_keepalive_arguments, keepalive

__all__ = ["ChatServer", "MemberProfile", "main"]

_PROFILE_BYTES = 1024  # state a real server keeps per room member (presence, cursor, history window)


@dataclass
class MemberProfile:
    """Per-member state of one room."""

    user: str
    room: str
    scratch: bytearray


@dataclass
class ChatServer:
    """Rooms of connections; the join path optionally leaks."""

    leak: bool = False
    rooms: dict[str, set[ServerConnection]] = field(default_factory=dict)
    #: (room, connection id) -> profile; the clean server removes entries on leave/disconnect.
    profiles: dict[tuple[str, int], MemberProfile] = field(default_factory=dict)
    profile_bytes: int = _PROFILE_BYTES
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def join(self, websocket: ServerConnection, conn_id: int, user: str, room: str) -> int:
        members = self.rooms.setdefault(room, set())
        members.add(websocket)
        # The profile is keyed per connection; the leaky server never deletes it (see leave()).
        self.profiles[(room, conn_id)] = MemberProfile(user, room, bytearray(self.profile_bytes))
        return len(members)

    def leave(self, websocket: ServerConnection, conn_id: int, room: str) -> None:
        members = self.rooms.get(room)
        if members is not None:
            members.discard(websocket)
            if not members:
                del self.rooms[room]
        if not self.leak:
            self.profiles.pop((room, conn_id), None)
        # BUG (leaky variant, on purpose): the member profile filed by join() stays forever.

    async def handler(self, websocket: ServerConnection, header: str | None) -> None:
        conn_id = next(self._ids)
        joined: set[str] = set()
        try:
            user = await self._authenticate(websocket, header)
            if user is None:
                return
            async for raw in websocket:
                try:
                    message = json.loads(raw)
                    kind = message["type"]
                except (ValueError, KeyError, TypeError):
                    await websocket.send(json.dumps({"type": "error", "reason": "expected a JSON object with a type"}))
                    continue
                room = str(message.get("room", ""))
                if kind == "join" and room:
                    count = self.join(websocket, conn_id, user, room)
                    joined.add(room)
                    broadcast(
                        self.rooms[room], json.dumps({"type": "joined", "room": room, "user": user, "members": count})
                    )
                elif kind == "say" and room in joined:
                    text = str(message.get("text", ""))
                    broadcast(
                        self.rooms[room], json.dumps({"type": "message", "room": room, "from": user, "text": text})
                    )
                elif kind == "leave" and room in joined:
                    self.leave(websocket, conn_id, room)
                    joined.discard(room)
                    await websocket.send(json.dumps({"type": "left", "room": room}))
                else:
                    await websocket.send(json.dumps({"type": "error", "reason": f"cannot {kind} {room!r}"}))
        finally:
            for room in joined:
                self.leave(websocket, conn_id, room)

    async def _authenticate(self, websocket: ServerConnection, header: str | None) -> str | None:
        try:
            first = json.loads(await websocket.recv())
            ok = first.get("type") == "auth" and bool(first.get("token")) and bool(first.get("user"))
        except ConnectionClosed:  # e.g. a readiness probe: handshake, then close
            return None
        except (ValueError, AttributeError, TypeError):
            ok = False
        if not ok:
            await websocket.send(
                json.dumps({"type": "error", "reason": "auth required: send {type: auth, user, token} first"})
            )
            await websocket.close(4001, "auth required")
            return None
        user = str(first["user"])
        await websocket.send(json.dumps({"type": "welcome", "user": user, "header": header}))
        return user


async def _serve(args: argparse.Namespace) -> None:
    chat = ChatServer(leak=args.leak_bytes > 0, profile_bytes=args.leak_bytes or _PROFILE_BYTES)
    header_name = args.require_header or args.echo_header

    def process_request(connection: ServerConnection, request: Any) -> Any:
        if args.require_header and args.require_header not in request.headers:
            return connection.respond(HTTPStatus.UNAUTHORIZED, f"missing header {args.require_header}\n")
        return None

    async def handler(websocket: ServerConnection) -> None:
        header = websocket.request.headers.get(header_name) if header_name and websocket.request else None
        await chat.handler(websocket, header)

    context = None
    if args.certfile:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.certfile, args.keyfile)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: None if stop.done() else stop.set_result(None))
    async with serve(
        handler,
        args.host,
        args.port,
        ssl=context,
        process_request=process_request,
        compression=None,
        max_queue=16,
        **keepalive(args),
    ):
        print(f"listening on {'wss' if context else 'ws'}://{args.host}:{args.port}/", flush=True)
        await stop


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument(
        "--leak-bytes",
        type=int,
        default=0,
        help="leaky variant: bytes of member profile kept forever per join (default 0: clean)",
    )
    p.add_argument(
        "--require-header",
        metavar="NAME",
        help="refuse handshakes without this header (HTTP 401); echo its value in the welcome",
    )
    p.add_argument(
        "--echo-header", metavar="NAME", help="echo this handshake header's value in the welcome (not required)"
    )
    p.add_argument("--certfile", help="PEM certificate chain: serve wss://")
    p.add_argument("--keyfile", help="PEM private key of --certfile")
    add_keepalive_arguments(p)
    args = p.parse_args(argv)
    if args.certfile and not args.keyfile:
        p.error("--certfile needs --keyfile")
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
