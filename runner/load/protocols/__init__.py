"""Protocol presets: what a connection speaks on top of WebSocket messages (pure: no I/O).

Each preset is a sans-I/O session object in the manner of websockets' ``ClientProtocol``:
text messages go in (:meth:`Session.receive`), decoded application events come out, and
the messages the protocol itself must send (a handshake, a pong) queue up in
:meth:`Session.data_to_send`. No socket, no clock: :mod:`runner.load.channel` moves the
messages, and tests feed the sessions strings.

- ``socket.io`` (:mod:`.socketio`): Socket.IO v5 over Engine.IO v4, WebSocket transport.
- ``graphql-ws`` (:mod:`.graphql_ws`): the ``graphql-transport-ws`` subprotocol.
- no preset: plain messages, optionally with ``[[scenario.auto_reply]]`` rules (:mod:`.auto_reply`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Incoming", "ProtocolViolation", "Session", "PRESETS"]

#: The values of ``[scenario] protocol``.
PRESETS = ("socket.io", "graphql-ws")


class ProtocolViolation(ValueError):
    """The server sent something the preset's protocol does not allow (a failed request, with the text)."""


@dataclass(frozen=True, slots=True)
class Incoming:
    """One application event a preset decoded from the server's messages.

    ``kind`` is ``event`` / ``ack`` (Socket.IO) or ``next`` / ``error`` / ``complete``
    (GraphQL); ``key`` is the event name, the ack id or the subscription id; ``data`` the
    event's or ack's argument list, or the GraphQL payload.
    """

    kind: str
    key: str
    data: Any = None
    ack_id: int | None = None


class Session(Protocol):
    """What the channel needs of a preset's session."""

    #: The handshake is complete (namespace connected, connection acknowledged).
    ready: bool
    #: The server refused the handshake: its reason, for the failed ``connect``.
    refusal: str | None
    #: The server ended the session (namespace left, Engine.IO close): its reason.
    ended: str | None

    def start(self) -> None:
        """Queue what the client sends right after the WebSocket handshake."""

    def receive(self, message: str | bytes) -> list[Incoming]:
        """Feed one WebSocket message; the application events it carried (protocol replies are queued)."""

    def data_to_send(self) -> list[str]:
        """The messages queued for the server, oldest first (the queue is emptied)."""

    def leave(self) -> None:
        """Queue what goes before the closing handshake (e.g. Socket.IO's namespace disconnect)."""
