"""A GraphQL subscription server (Ariadne, graphql-transport-ws, ASGI under uvicorn): clean or leaky.

Schema::

    subscription { room(name: "r1") { kind room user text } }   first {kind: "joined"}, then every post
    mutation { post(room: "r1", text: "hi") }                    true; a {kind: "message"} to the room
    query { stats { listeners pongs pingTimeouts } }             the server's own view

``connection_init`` must carry ``{"token": "tok-<user>"}``; any other payload is refused
with close code 4403. ``--ping-interval S`` makes the server ping every S seconds and
close a connection (4408) whose previous ping is still unanswered.

The leak (``--leak-bytes N``, N > 0) is a subscription that is never disposed: each
``room`` subscription files a listener (queue + N bytes of per-subscriber state) with
the room broker, and the leaky variant's generator never removes it when the client
completes or disconnects. With ``--leak-bytes 0`` (clean) the listener is removed.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any, AsyncGenerator, Sequence

from ariadne import MutationType, QueryType, SubscriptionType, make_executable_schema
from ariadne.asgi import GraphQL
from ariadne.asgi.handlers import GraphQLTransportWSHandler

from ._serve import run_asgi

__all__ = ["Broker", "Listener", "make_app", "main"]

_STATE_BYTES = 1024  # per-subscriber state a real server keeps (filters, cursor, a replay window)
_QUEUE = 16  # a subscriber's buffer: a slow one loses messages instead of growing the server

TYPE_DEFS = """
type Query { stats: Stats! }
type Stats { listeners: Int!, pongs: Int!, pingTimeouts: Int! }
type Mutation { post(room: String!, text: String!): Boolean! }
type Subscription { room(name: String!): RoomEvent! }
type RoomEvent { kind: String!, room: String!, user: String, text: String }
"""


@dataclass
class Listener:
    """One subscriber of one room."""

    user: str
    room: str
    queue: asyncio.Queue[dict[str, Any]]
    state: bytearray


@dataclass
class Broker:
    """Rooms of listeners; the leaky variant's subscriptions never leave."""

    leak: bool = False
    state_bytes: int = _STATE_BYTES
    rooms: dict[str, dict[int, Listener]] = field(default_factory=dict)
    pongs: int = 0
    ping_timeouts: int = 0
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def add(self, room: str, user: str) -> tuple[int, Listener]:
        key = next(self._ids)
        listener = Listener(user, room, asyncio.Queue(_QUEUE), bytearray(self.state_bytes))
        self.rooms.setdefault(room, {})[key] = listener
        return key, listener

    def remove(self, room: str, key: int) -> None:
        listeners = self.rooms.get(room)
        if listeners is not None:
            listeners.pop(key, None)
            if not listeners:
                del self.rooms[room]

    def publish(self, room: str, event: dict[str, Any]) -> None:
        for listener in self.rooms.get(room, {}).values():
            if not listener.queue.full():
                listener.queue.put_nowait(event)

    async def subscribe(self, room: str, user: str) -> AsyncGenerator[dict[str, Any], None]:
        """The events of ``room`` for one subscriber, from its joined event on."""
        key, listener = self.add(room, user)
        try:
            yield {"kind": "joined", "room": room, "user": user}
            while True:
                yield await listener.queue.get()
        finally:
            if not self.leak:
                self.remove(room, key)
            # BUG (leaky variant, on purpose): the listener filed by add() is never disposed


class _Handler(GraphQLTransportWSHandler):
    """Ariadne's graphql-transport-ws handler, with token auth and server pings."""

    def __init__(self, broker: Broker, ping_interval: float | None) -> None:
        super().__init__()
        self.broker = broker
        self.ping_interval = ping_interval

    async def handle_websocket_connection_init_message(
        self, websocket: Any, message: dict[str, Any], client_context: Any
    ) -> None:
        payload = message.get("payload")
        token = payload.get("token") if isinstance(payload, dict) else None
        if not isinstance(token, str) or not token.startswith("tok-"):
            await websocket.close(code=4403, reason="Forbidden: invalid token")
            return
        websocket.scope["soak_user"] = token[4:]
        # Ariadne's init timeout task sleeps out its whole minute and holds the connection meanwhile:
        # under churn that is a minute of connections kept alive, so it ends once init has come.
        task = getattr(client_context, "connection_init_timeout_task", None)
        if task is not None:
            task.cancel()
        await super().handle_websocket_connection_init_message(websocket, message, client_context)

    async def handle_websocket(self, websocket: Any) -> None:
        pinger = asyncio.create_task(self._ping(websocket)) if self.ping_interval else None
        try:
            await super().handle_websocket(websocket)
        finally:
            if pinger is not None:
                pinger.cancel()

    async def handle_websocket_pong_message(self, websocket: Any, client_context: Any) -> None:
        self.broker.pongs += 1
        websocket.scope["soak_ping_due"] = False

    async def _ping(self, websocket: Any) -> None:
        assert self.ping_interval
        while True:
            await asyncio.sleep(self.ping_interval)
            if websocket.scope.get("soak_ping_due"):
                self.broker.ping_timeouts += 1
                await websocket.close(code=4408, reason="ping timeout")
                return
            websocket.scope["soak_ping_due"] = True
            await websocket.send_json({"type": "ping"})


def make_app(*, leak_bytes: int = 0, ping_interval: float | None = None) -> Any:
    """The ASGI app: Ariadne's GraphQL with the room schema on every path."""
    broker = Broker(leak=leak_bytes > 0, state_bytes=leak_bytes or _STATE_BYTES)
    query, mutation, subscription = QueryType(), MutationType(), SubscriptionType()

    @query.field("stats")
    def resolve_stats(*_: Any) -> dict[str, int]:
        listeners = sum(len(room) for room in broker.rooms.values())
        return {"listeners": listeners, "pongs": broker.pongs, "pingTimeouts": broker.ping_timeouts}

    @mutation.field("post")
    def resolve_post(_: Any, info: Any, room: str, text: str) -> bool:
        user = info.context["request"].scope.get("soak_user")
        broker.publish(room, {"kind": "message", "room": room, "user": user, "text": text})
        return True

    @subscription.source("room")
    def room_source(_: Any, info: Any, name: str) -> AsyncGenerator[dict[str, Any], None]:
        return broker.subscribe(name, str(info.context["request"].scope.get("soak_user")))

    @subscription.field("room")
    def resolve_room(event: dict[str, Any], *_: Any, **__: Any) -> dict[str, Any]:
        return event

    schema = make_executable_schema(TYPE_DEFS, query, mutation, subscription)
    return GraphQL(schema, websocket_handler=_Handler(broker, ping_interval))


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument(
        "--leak-bytes",
        type=int,
        default=0,
        help="leaky variant: bytes of subscriber state never disposed (default 0: clean)",
    )
    p.add_argument(
        "--ping-interval", type=float, default=None, help="ping every S seconds; close a connection that missed one"
    )
    args = p.parse_args(argv)
    app = make_app(leak_bytes=args.leak_bytes, ping_interval=args.ping_interval)
    print(f"listening on ws://{args.host}:{args.port}/ (graphql-transport-ws)", flush=True)
    run_asgi(app, args.host, args.port)


if __name__ == "__main__":
    main()
