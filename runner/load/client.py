"""A WebSocket client that is only an I/O loop around websockets' sans-I/O ``ClientProtocol``.

All protocol work (handshake, framing, masking, ping answers, the close handshake) stays
in :mod:`websockets`; this module moves bytes between the protocol and one socket. Under
gevent (Locust monkey-patches ``socket``) each connection costs one file descriptor and no
thread, which is what lets one load process hold thousands of connections.
"""

from __future__ import annotations

import functools
import socket
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidURI, ProtocolError
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

__all__ = ["WebSocketClient", "ConnectionClosedError", "HandshakeError", "WebSocketError"]

_RECV_SIZE = 65536
#: Linux: bind an address without reserving a port, so the kernel picks one per
#: destination at connect() time (lets many source addresses share the port range).
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


class WebSocketError(Exception):
    """Base class of the client's errors; ``kind`` names the failure for statistics."""

    kind = "websocket error"


class HandshakeError(WebSocketError):
    kind = "handshake failed"


class ConnectionClosedError(WebSocketError):
    kind = "connection closed"


class WebSocketClient:
    """One client connection. Not thread-safe; one greenlet uses it at a time.

    Slotted and lean: a load worker holds ~20K of these at once, so every attribute
    costs megabytes (see README "Scale" for the client memory per held connection).
    """

    __slots__ = ("uri", "timeout", "source_address", "headers", "ssl_context", "protocol", "sock", "response",
                 "_pending", "_fragments", "_fragment_opcode")

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        source_address: str | None = None,
        headers: Mapping[str, str] | None = None,
        subprotocols: Sequence[str] | None = None,
        origin: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_size: int | None = 2**20,
    ) -> None:
        try:
            self.uri = _parse_uri(url)
        except InvalidURI as exc:
            raise WebSocketError(str(exc)) from None
        self.timeout = timeout
        self.source_address = source_address
        self.headers = dict(headers) if headers else None
        self.ssl_context = ssl_context
        self.protocol = ClientProtocol(
            self.uri,
            origin=origin,  # type: ignore[arg-type]
            subprotocols=[Subprotocol(s) for s in subprotocols] if subprotocols else None,
            max_size=max_size,
        )
        self.sock: socket.socket | None = None
        self.response: Response | None = None
        self._pending: list[Any] = []  # data messages received but not yet returned
        self._fragments: list[bytes] | None = None  # a fragmented message in progress
        self._fragment_opcode: Opcode | None = None

    # --- connection ----------------------------------------------------------------

    def connect(self) -> None:
        """Open the TCP (and TLS) connection and complete the opening handshake."""
        sock = socket.socket(socket.AF_INET6 if ":" in self.uri.host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.source_address:
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((self.source_address, 0))
            sock.connect((self.uri.host, self.uri.port))
            if self.uri.secure:
                context = self.ssl_context or ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=self.uri.host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        request = self.protocol.connect()
        for name, value in (self.headers or {}).items():
            request.headers[name] = value
        self.protocol.send_request(request)
        self._flush()
        while self.response is None:
            self._receive_once()
            for event in self.protocol.events_received():
                if isinstance(event, Response):
                    self.response = event
                else:
                    self._on_frame(event)
        if self.protocol.handshake_exc is not None:
            exc = self.protocol.handshake_exc
            self.abort()
            raise HandshakeError(f"{type(exc).__name__}: {exc}")

    @property
    def open(self) -> bool:
        return self.protocol.state is State.OPEN

    def send(self, message: str | bytes) -> None:
        """Send one text (``str``) or binary (``bytes``) message."""
        self._require_open()
        if isinstance(message, str):
            self.protocol.send_text(message.encode())
        else:
            self.protocol.send_binary(message)
        self._flush()

    def recv(self, timeout: float | None = None) -> str | bytes:
        """The next data message; pings are answered on the way. Raises TimeoutError."""
        if self.sock is None:
            raise ConnectionClosedError("not connected")
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            while not self._pending:
                if self.protocol.state is not State.OPEN:
                    raise ConnectionClosedError(self._closed_reason())
                self._receive_once()
                for event in self.protocol.events_received():
                    self._on_frame(event)
        finally:
            if timeout is not None and self.sock is not None:
                self.sock.settimeout(self.timeout)
        return self._pending.pop(0)

    def unread(self, messages: list[str | bytes]) -> None:
        """Put messages back in front of the queue: the next ``recv`` calls return them first, in order."""
        self._pending[:0] = messages

    def ping(self, payload: bytes = b"") -> None:
        self._require_open()
        self.protocol.send_ping(payload)
        self._flush()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Run the closing handshake, then release the socket whatever happens.

        A peer that resets the connection or never finishes the handshake within the
        timeout raises (OSError, TimeoutError): the caller counts it as a failed close.
        """
        if self.sock is None:
            return
        try:
            if self.protocol.state is State.OPEN:
                self.protocol.send_close(code, reason)
                self._flush()
            while self.protocol.state is not State.CLOSED:
                data = self.sock.recv(_RECV_SIZE)
                if data:
                    self.protocol.receive_data(data)
                else:
                    self.protocol.receive_eof()
                self.protocol.events_received()
                self._flush()
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop the connection at once (no closing handshake)."""
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    # --- internals -----------------------------------------------------------------

    def _require_open(self) -> None:
        if self.sock is None or self.protocol.state is not State.OPEN:
            raise ConnectionClosedError(self._closed_reason())

    def _closed_reason(self) -> str:
        close = self.protocol.close_rcvd
        if close is not None:
            return f"closed by server (code {close.code}{', ' + close.reason if close.reason else ''})"
        return "connection is not open"

    def _receive_once(self) -> None:
        assert self.sock is not None
        data = self.sock.recv(_RECV_SIZE)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        self._flush()
        if not data and self.response is None:
            raise HandshakeError("server closed the connection during the handshake")
        if self.protocol.parser_exc is not None and isinstance(self.protocol.parser_exc, ProtocolError):
            raise WebSocketError(f"protocol error: {self.protocol.parser_exc}")

    def _flush(self) -> None:
        if self.sock is None:
            return
        for data in self.protocol.data_to_send():
            if data:
                self.sock.sendall(data)
            elif not self.protocol.reader.eof:  # SEND_EOF: half-close (pointless once the peer has closed)
                try:
                    self.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

    def _on_frame(self, frame: Any) -> None:
        opcode = frame.opcode
        if opcode in (Opcode.TEXT, Opcode.BINARY):
            if frame.fin:
                self._pending.append(_decode(opcode, bytes(frame.data)))
            else:
                self._fragment_opcode = opcode
                self._fragments = [bytes(frame.data)]
        elif opcode is Opcode.CONT and self._fragment_opcode is not None and self._fragments is not None:
            self._fragments.append(bytes(frame.data))
            if frame.fin:
                self._pending.append(_decode(self._fragment_opcode, b"".join(self._fragments)))
                self._fragments, self._fragment_opcode = None, None
        # Control frames need nothing here: the protocol answers pings and tracks closes.


@functools.lru_cache(maxsize=64)
def _parse_uri(url: str) -> Any:
    """websockets' parse_uri, once per URL: a churn loop opens the same URL thousands of times a second."""
    return parse_uri(url)


def _decode(opcode: Opcode, data: bytes) -> str | bytes:
    return data.decode("utf-8", errors="replace") if opcode is Opcode.TEXT else data
