"""A Socket.IO chat server (python-socketio, ASGI under uvicorn): rooms, auth, acks; clean or leaky.

Events (Socket.IO v5 on the default path ``/socket.io/``)::

    connect with auth {"token": "tok-..."}     refused (CONNECT_ERROR "invalid token") otherwise
    "join" {"room": r}          ack {"room": r, "members": k}; "joined" {"room", "user"} to the room
    "say" {"room": r, "text"}   ack true; "message" {"room", "from", "text"} to the room
    "leave" {"room": r}         ack true
    "stats"                     ack {"connected", "members", "disconnects": {reason: count}}

The user is the token's part after ``tok-``. The leak (``--leak-bytes N``, N > 0) is the
incident's: :meth:`ChatRooms.join` files a member profile per (room, session) and the
disconnect path forgets it, so a user's room membership outlives the connection.
With ``--leak-bytes 0`` (the clean variant) the same profile is made and removed.
``--ping-interval``/``--ping-timeout`` set Engine.IO's heartbeat (the server pings, a
client that does not answer is disconnected).
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import socketio

from ._serve import run_asgi

__all__ = ["ChatRooms", "Member", "make_app", "main"]

_PROFILE_BYTES = 1024  # state a real server keeps per room member (presence, cursor, history window)


@dataclass
class Member:
    """Per-member state of one room."""

    user: str
    room: str
    scratch: bytearray


@dataclass
class ChatRooms:
    """Room members by session id; the leaky variant never forgets a member on disconnect."""

    leak: bool = False
    profile_bytes: int = _PROFILE_BYTES
    #: room -> {sid: member}
    members: dict[str, dict[str, Member]] = field(default_factory=dict)
    disconnects: Counter[str] = field(default_factory=Counter)

    def join(self, sid: str, user: str, room: str) -> int:
        room_members = self.members.setdefault(room, {})
        room_members[sid] = Member(user, room, bytearray(self.profile_bytes))
        return len(room_members)

    def leave(self, sid: str, room: str) -> None:
        room_members = self.members.get(room)
        if room_members is not None:
            room_members.pop(sid, None)
            if not room_members:
                del self.members[room]

    def disconnect(self, sid: str, rooms: list[str], reason: str) -> None:
        self.disconnects[reason] += 1
        if self.leak:
            return  # BUG (leaky variant, on purpose): the member profiles filed by join() stay forever
        for room in rooms:
            self.leave(sid, room)


def make_app(*, leak_bytes: int = 0, ping_interval: float = 25, ping_timeout: float = 20) -> Any:
    """The ASGI app: a python-socketio AsyncServer with the chat's handlers."""
    sio = socketio.AsyncServer(
        async_mode="asgi", ping_interval=ping_interval, ping_timeout=ping_timeout, cors_allowed_origins="*"
    )
    chat = ChatRooms(leak=leak_bytes > 0, profile_bytes=leak_bytes or _PROFILE_BYTES)

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        if not isinstance(token, str) or not token.startswith("tok-"):
            raise socketio.exceptions.ConnectionRefusedError("invalid token")
        await sio.save_session(sid, {"user": token[4:], "rooms": []})

    @sio.event
    async def disconnect(sid: str, reason: str = "unknown") -> None:
        session = await sio.get_session(sid)
        chat.disconnect(sid, session.get("rooms", []), reason)

    @sio.event
    async def join(sid: str, data: Any) -> dict[str, Any]:
        room = str((data or {}).get("room", "")) if isinstance(data, dict) else ""
        if not room:
            return {"error": "join needs a room"}
        session = await sio.get_session(sid)
        count = chat.join(sid, session["user"], room)
        if room not in session["rooms"]:
            session["rooms"].append(room)
        await sio.enter_room(sid, room)
        await sio.emit("joined", {"room": room, "user": session["user"]}, room=room)
        return {"room": room, "members": count}

    @sio.event
    async def say(sid: str, data: Any) -> bool:
        session = await sio.get_session(sid)
        room = str(data.get("room", "")) if isinstance(data, dict) else ""
        if room not in session["rooms"]:
            return False
        await sio.emit("message", {"room": room, "from": session["user"], "text": str(data.get("text", ""))}, room=room)
        return True

    @sio.event
    async def leave(sid: str, data: Any) -> bool:
        session = await sio.get_session(sid)
        room = str(data.get("room", "")) if isinstance(data, dict) else ""
        if room in session["rooms"]:
            session["rooms"].remove(room)
            chat.leave(sid, room)
            await sio.leave_room(sid, room)
        return True

    @sio.event
    async def stats(sid: str, *_: Any) -> dict[str, Any]:
        return {
            "connected": len(sio.manager.rooms.get("/", {}).get(None, {})),
            "members": sum(len(m) for m in chat.members.values()),
            "disconnects": dict(chat.disconnects),
            "engineio_sockets": len(sio.eio.sockets),
            "environs": len(sio.environ),
        }

    return socketio.ASGIApp(sio)


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
    p.add_argument("--ping-interval", type=float, default=25, help="Engine.IO ping interval in seconds (default 25)")
    p.add_argument("--ping-timeout", type=float, default=20, help="seconds to wait for the pong (default 20)")
    args = p.parse_args(argv)
    app = make_app(leak_bytes=args.leak_bytes, ping_interval=args.ping_interval, ping_timeout=args.ping_timeout)
    print(f"listening on ws://{args.host}:{args.port}/socket.io/", flush=True)
    run_asgi(app, args.host, args.port)


if __name__ == "__main__":
    main()
