"""GraphQL over WebSocket (the ``graphql-transport-ws`` subprotocol), as a sans-I/O client session.

The exchange, one JSON text message each::

    -> {"type":"connection_init","payload":{..}}     right after the WebSocket handshake
    <- {"type":"connection_ack"}                     (a refusal closes the socket, e.g. 4403)
    <- {"type":"ping"}  -> {"type":"pong"}           either side may ping; pongs answer
    -> {"id":"1","type":"subscribe","payload":{"query":"subscription {..}","variables":{..}}}
    <- {"id":"1","type":"next","payload":{"data":{..}}}    as often as the server has results
    <- {"id":"1","type":"error","payload":[{"message":".."}]}   the operation failed
    <- {"id":"1","type":"complete"}                  the server finished the operation
    -> {"id":"1","type":"complete"}                  the client stops it
"""

from __future__ import annotations

import json
from typing import Any

from . import Incoming, ProtocolViolation

__all__ = ["SUBPROTOCOL", "GraphQLWSSession"]

SUBPROTOCOL = "graphql-transport-ws"


def _dump(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


class GraphQLWSSession:
    """The client side of one ``graphql-transport-ws`` connection (no I/O)."""

    __slots__ = ("payload", "ready", "refusal", "ended", "active", "_outgoing")

    def __init__(self, payload: Any = None) -> None:
        self.payload = payload
        self.ready = False
        self.refusal: str | None = None
        self.ended: str | None = None
        #: Ids of the operations subscribed and not completed yet.
        self.active: set[str] = set()
        self._outgoing: list[str] = []

    # --- what the client does ---

    def start(self) -> None:
        """Queue ``connection_init`` (with the payload, when there is one)."""
        init: dict[str, Any] = {"type": "connection_init"}
        if self.payload is not None:
            init["payload"] = self.payload
        self._outgoing.append(_dump(init))

    def subscribe(
        self, op_id: str, query: str, variables: dict[str, Any] | None = None, operation_name: str | None = None
    ) -> None:
        """Queue a ``subscribe`` of ``query`` under ``op_id`` (a query or mutation gets one next, then complete)."""
        if op_id in self.active:
            raise ProtocolViolation(f"subscription id {op_id!r} is still active: the server would close with 4409")
        payload: dict[str, Any] = {"query": query}
        if variables:
            payload["variables"] = variables
        if operation_name:
            payload["operationName"] = operation_name
        self.active.add(op_id)
        self._outgoing.append(_dump({"id": op_id, "type": "subscribe", "payload": payload}))

    def complete(self, op_id: str) -> None:
        """Queue the client's ``complete`` of ``op_id`` (stop the subscription)."""
        self.active.discard(op_id)
        self._outgoing.append(_dump({"id": op_id, "type": "complete"}))

    def leave(self) -> None:
        """Nothing: the protocol ends with the WebSocket closing handshake (1000)."""

    def data_to_send(self) -> list[str]:
        out, self._outgoing = self._outgoing, []
        return out

    # --- what the server sends ---

    def receive(self, message: str | bytes) -> list[Incoming]:
        try:
            data = json.loads(message)
        except ValueError:
            raise ProtocolViolation(f"graphql-transport-ws message that is not JSON: {str(message)[:60]!r}") from None
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "ping":
            pong: dict[str, Any] = {"type": "pong"}
            if data.get("payload") is not None:
                pong["payload"] = data["payload"]
            self._outgoing.append(_dump(pong))
            return []
        if kind == "pong":
            return []
        if kind == "connection_ack":
            self.ready = True
            return []
        if kind in ("next", "error", "complete"):
            op_id = data.get("id")
            if not isinstance(op_id, str):
                raise ProtocolViolation(f"{kind} message without an id: {str(message)[:60]!r}")
            if kind != "next":
                self.active.discard(op_id)
            return [Incoming(kind, op_id, data.get("payload"))]
        raise ProtocolViolation(f"unknown graphql-transport-ws message type {kind!r}: {str(message)[:60]!r}")
