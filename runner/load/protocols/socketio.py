"""Socket.IO v5 over Engine.IO v4 on the WebSocket transport, as a sans-I/O client session.

The exchange, one WebSocket text message per Engine.IO packet::

    <- 0{"sid":"..","upgrades":[],"pingInterval":25000,"pingTimeout":20000}   Engine.IO open
    -> 40{"token":".."}               Socket.IO CONNECT to "/" with the auth payload (40/ns,{..} elsewhere)
    <- 40{"sid":".."}                 connected  |  44{"message":"not authorized"}: refused
    <- 2                              Engine.IO ping (the server sends them in v4) -> 3 (pong)
    -> 42["join",{"room":"r1"}]       an event; 42<id>[..] asks for an ack
    <- 43<id>[{"ok":true}]            the ack of emit <id>
    <- 42["joined",{..}]              a server event
    -> 41                             leave the namespace, then the WebSocket closing handshake

A Socket.IO packet is ``<type>[<attachments>-][<namespace>,][<ack id>][JSON]``. Binary
events (types 5 and 6) are decoded with their placeholders; their binary attachments
are not reassembled (no preset step can match bytes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from . import Incoming, ProtocolViolation

__all__ = [
    "CONNECT",
    "DISCONNECT",
    "EVENT",
    "ACK",
    "CONNECT_ERROR",
    "BINARY_EVENT",
    "BINARY_ACK",
    "Packet",
    "encode",
    "decode",
    "socketio_url",
    "SocketIOSession",
]

# Engine.IO packet types (the first character of every text message)
_OPEN, _CLOSE, _PING, _PONG, _MESSAGE, _UPGRADE, _NOOP = "0123456"
# Socket.IO packet types (the character after the Engine.IO "4")
CONNECT, DISCONNECT, EVENT, ACK, CONNECT_ERROR, BINARY_EVENT, BINARY_ACK = range(7)
_DEFAULT_PATH = "/socket.io/"


@dataclass(frozen=True, slots=True)
class Packet:
    """One Socket.IO packet."""

    type: int
    namespace: str = "/"
    id: int | None = None
    data: Any = None
    attachments: int = 0


def socketio_url(url: str) -> str:
    """``ws://host:port/`` -> ``ws://host:port/socket.io/?EIO=4&transport=websocket`` (an explicit path is kept)."""
    parts = urlsplit(url)
    path = parts.path if parts.path not in ("", "/") else _DEFAULT_PATH
    pairs = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ("EIO", "transport")]
    pairs += [("EIO", "4"), ("transport", "websocket")]
    return urlunsplit((parts.scheme, parts.netloc, path, urlencode(pairs), parts.fragment))


def encode(packet: Packet) -> str:
    """A Socket.IO packet as the text of one WebSocket message (Engine.IO message type included)."""
    text = f"{_MESSAGE}{packet.type}"
    if packet.attachments:
        text += f"{packet.attachments}-"
    if packet.namespace != "/":
        text += f"{packet.namespace},"
    if packet.id is not None:
        text += str(packet.id)
    if packet.data is not None:
        text += json.dumps(packet.data, separators=(",", ":"))
    return text


def decode(text: str) -> Packet:
    """The Socket.IO packet of an Engine.IO message's payload (the text after the ``4``)."""
    if not text or not text[0].isdigit() or int(text[0]) > BINARY_ACK:
        raise ProtocolViolation(f"not a Socket.IO packet: {text[:40]!r}")
    kind, rest = int(text[0]), text[1:]
    attachments = 0
    if kind in (BINARY_EVENT, BINARY_ACK):
        count, dash, after = rest.partition("-")
        if not dash or not count.isdigit():
            raise ProtocolViolation(f"binary packet without its attachment count: {text[:40]!r}")
        attachments, rest = int(count), after
    namespace = "/"
    if rest.startswith("/"):
        namespace, comma, after = rest.partition(",")
        rest = after if comma else ""
    digits = 0
    while digits < len(rest) and rest[digits].isdigit():
        digits += 1
    ack_id = int(rest[:digits]) if digits else None
    rest = rest[digits:]
    data = None
    if rest:
        try:
            data = json.loads(rest)
        except ValueError:
            raise ProtocolViolation(f"Socket.IO packet with a payload that is not JSON: {text[:60]!r}") from None
    return Packet(kind, namespace, ack_id, data, attachments)


class SocketIOSession:
    """The client side of one Socket.IO connection to one namespace (no I/O).

    States: waiting for the Engine.IO open packet -> waiting for the namespace answer ->
    ready (events flow) -> ended. Engine.IO pings are answered whenever a message is fed,
    so the channel only has to keep reading.
    """

    __slots__ = (
        "namespace",
        "auth",
        "ready",
        "refusal",
        "ended",
        "sid",
        "ping_interval",
        "_outgoing",
        "_next_id",
        "_opened",
    )

    def __init__(self, namespace: str = "/", auth: Any = None) -> None:
        self.namespace = namespace
        self.auth = auth
        self.ready = False
        self.refusal: str | None = None
        self.ended: str | None = None
        self.sid: str | None = None
        #: The server's ping interval in seconds (from the open packet).
        self.ping_interval: float | None = None
        self._outgoing: list[str] = []
        self._next_id = 0
        self._opened = False

    # --- what the client does ---

    def start(self) -> None:
        """Nothing to send yet: the server speaks first (the open packet)."""

    def emit(self, name: str, args: list[Any] | tuple[Any, ...] = (), *, ack: bool = False) -> int | None:
        """Queue the event ``name`` with ``args``; with ``ack`` the id whose ack will answer it."""
        ack_id = None
        if ack:
            ack_id = self._next_id
            self._next_id += 1
        self._outgoing.append(encode(Packet(EVENT, self.namespace, ack_id, [name, *args])))
        return ack_id

    def ack(self, ack_id: int, args: list[Any] | tuple[Any, ...] = ()) -> None:
        """Answer an event the server emitted with an ack id."""
        self._outgoing.append(encode(Packet(ACK, self.namespace, ack_id, list(args))))

    def leave(self) -> None:
        """Queue the namespace disconnect (``41``), sent before the WebSocket closing handshake."""
        if self.ready and self.ended is None:
            self._outgoing.append(encode(Packet(DISCONNECT, self.namespace)))
            self.ended = "left by the client"

    def data_to_send(self) -> list[str]:
        out, self._outgoing = self._outgoing, []
        return out

    # --- what the server sends ---

    def receive(self, message: str | bytes) -> list[Incoming]:
        if isinstance(message, bytes):
            return []  # a binary attachment (or a binary Engine.IO message): not reassembled
        if not message:
            raise ProtocolViolation("empty Engine.IO packet")
        kind, payload = message[0], message[1:]
        if kind == _PING:
            self._outgoing.append(_PONG + payload)
            return []
        if kind == _OPEN:
            self._open(payload)
            return []
        if kind == _CLOSE:
            self.ended = "the server closed the Engine.IO session"
            return []
        if kind in (_PONG, _NOOP, _UPGRADE):
            return []
        if kind != _MESSAGE:
            raise ProtocolViolation(f"unknown Engine.IO packet type {kind!r}: {message[:40]!r}")
        return self._packet(decode(payload))

    def _open(self, payload: str) -> None:
        try:
            handshake = json.loads(payload)
        except ValueError:
            raise ProtocolViolation(f"Engine.IO open packet that is not JSON: {payload[:60]!r}") from None
        if not isinstance(handshake, dict) or "sid" not in handshake:
            raise ProtocolViolation(f"Engine.IO open packet without a sid: {payload[:60]!r}")
        interval = handshake.get("pingInterval")
        self.ping_interval = interval / 1000.0 if isinstance(interval, (int, float)) else None
        if not self._opened:
            self._opened = True
            self._outgoing.append(encode(Packet(CONNECT, self.namespace, None, self.auth)))

    def _packet(self, packet: Packet) -> list[Incoming]:
        if packet.namespace != self.namespace:
            return []  # another namespace multiplexed on this connection: not ours
        if packet.type == CONNECT:
            self.ready = True
            self.sid = packet.data.get("sid") if isinstance(packet.data, dict) else None
            return []
        if packet.type == CONNECT_ERROR:
            data = packet.data
            reason = data.get("message") if isinstance(data, dict) else data
            self.refusal = str(reason) if reason is not None else "refused without a message"
            return []
        if packet.type == DISCONNECT:
            self.ended = f"the server disconnected namespace {self.namespace}"
            return []
        if packet.type in (EVENT, BINARY_EVENT):
            if not isinstance(packet.data, list) or not packet.data or not isinstance(packet.data[0], str):
                raise ProtocolViolation(f"Socket.IO event without a name: {packet.data!r:.60}")
            return [Incoming("event", packet.data[0], packet.data[1:], packet.id)]
        if packet.type in (ACK, BINARY_ACK):
            if packet.id is None:
                raise ProtocolViolation("Socket.IO ack without an id")
            data = packet.data if isinstance(packet.data, list) else ([] if packet.data is None else [packet.data])
            return [Incoming("ack", str(packet.id), data)]
        raise ProtocolViolation(f"unexpected Socket.IO packet type {packet.type}")
