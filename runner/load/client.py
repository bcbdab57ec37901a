"""A WebSocket client that is only an I/O loop around websockets' sans-I/O ``ClientProtocol``.

All protocol work (handshake, framing, masking, ping answers, the close handshake) stays
in :mod:`websockets`; this module moves bytes between the protocol and one socket. Under
gevent (Locust monkey-patches ``socket``) each connection costs one file descriptor and no
thread, which is what lets one load process hold thousands of connections.
"""

from __future__ import annotations

import errno
import functools
import socket
import ssl
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gevent
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidURI, ProtocolError
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

__all__ = [
    "WebSocketClient",
    "ConnectionClosedError",
    "HandshakeError",
    "WebSocketError",
    "Ending",
    "SERVER_CLOSE",
    "RESET",
]

_RECV_SIZE = 65536
#: Data messages a watched connection keeps for the next recv (a server that pushes during
#: a hold must not grow the generator without bound); older ones are dropped first.
_WATCH_PENDING = 256
#: How a watched connection ended on the server's side: a close frame (with its code and
#: reason), or the TCP connection ending without one (FIN or RST).
SERVER_CLOSE = "server_close"
RESET = "reset"
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


class Ending:
    """How the server ended a watched connection: ``kind`` (SERVER_CLOSE or RESET), close code and reason."""

    __slots__ = ("kind", "code", "reason")

    def __init__(self, kind: str, code: int | None = None, reason: str = "") -> None:
        self.kind = kind
        self.code = code
        self.reason = reason

    def __repr__(self) -> str:
        return f"Ending({self.kind!r}, {self.code!r}, {self.reason!r})"


class WebSocketClient:
    """One client connection. Not thread-safe; one greenlet uses it at a time.

    Slotted and lean: a load worker holds ~20K of these at once, so every attribute
    costs megabytes (see README "Scale" for the client memory per held connection).
    """

    __slots__ = (
        "uri",
        "timeout",
        "source_address",
        "headers",
        "ssl_context",
        "protocol",
        "sock",
        "response",
        "_pending",
        "_fragments",
        "_fragment_opcode",
        "ending",
        "_watcher",
        "_on_end",
    )

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
        #: Set when the server ended the connection while it was watched (see :meth:`watch`).
        self.ending: Ending | None = None
        self._watcher: Any = None
        self._on_end: Callable[[WebSocketClient], None] | None = None

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
        close = self.protocol.close_rcvd
        if close is not None and close.code != code and self.protocol.close_rcvd_then_sent is False:
            # our close crossed one the server had sent already (e.g. 1011 keepalive ping timeout):
            # the connection was lost before the client closed it
            raise ConnectionClosedError(f"the server had closed the connection first ({_closed_text(close)})")

    def abort(self) -> None:
        """Drop the connection at once (no closing handshake)."""
        self.unwatch()
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    # --- while the caller does not use the connection ------------------------------

    def watch(self, on_end: Callable[["WebSocketClient"], None]) -> None:
        """Keep the connection alive and its state true while its user holds, waits or thinks.

        A read watcher on the gevent hub (no greenlet, no thread: a held connection must stay
        cheap) hands whatever the server sends to the protocol as it arrives: pings are
        answered (the protocol queues the pong, sent at once), data messages are kept for the
        next :meth:`recv`, and a close frame or the end of the TCP connection (FIN, RST) sets
        :attr:`ending`, releases the socket and calls ``on_end(self)`` right then - so the
        open count drops when the server closes, not when the user next touches the socket.
        Needs a gevent socket (Locust patches ``socket``); :meth:`unwatch` before using it again.
        """
        if self.sock is None or self._watcher is not None or self.protocol.state is not State.OPEN:
            return
        self._on_end = on_end
        self._start_watcher()

    def _start_watcher(self) -> None:
        assert self.sock is not None
        watcher = gevent.get_hub().loop.io(self.sock.fileno(), 1)  # 1: EV_READ
        self._watcher = watcher
        watcher.start(self._readable)

    def unwatch(self) -> None:
        """Stop watching (the caller uses the connection again); pending data stays for recv."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()
            watcher.close()
        self._on_end = None

    def _readable(self) -> None:
        """Hub callback: the watched socket has data (or EOF, or an error). Must never block."""
        sock = self.sock
        if sock is None:
            self.unwatch()
            return
        if self.uri.secure:
            # TLS records may need more than one read: decrypting waits, so not in the hub.
            self._pause_watch()
            gevent.spawn(self._read_tls)
            return
        raw = getattr(sock, "_sock", sock)  # gevent's socket wraps a non-blocking real one
        try:
            data = raw.recv(_RECV_SIZE, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._ended(Ending(RESET, reason=_errno_text(exc)))
            return
        self._take(data, raw)

    def _read_tls(self) -> None:
        sock = self.sock
        if sock is None:
            return
        try:
            data = sock.recv(_RECV_SIZE)
        except OSError as exc:
            self._ended(Ending(RESET, reason=_errno_text(exc)))
            return
        self._take(data, None)
        if self.ending is None and self.sock is not None and self._watcher is None and self._on_end is not None:
            self._start_watcher()  # not unwatched meanwhile: go on watching

    def _pause_watch(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()
            watcher.close()

    def _take(self, data: bytes, raw: Any) -> None:
        """Feed received bytes (b"": EOF) to the protocol, send what it answers, notice an ending."""
        protocol = self.protocol
        if data:
            protocol.receive_data(data)
        else:
            protocol.receive_eof()
        for event in protocol.events_received():
            self._on_frame(event)
        if len(self._pending) > _WATCH_PENDING:
            del self._pending[: len(self._pending) - _WATCH_PENDING]
        close = protocol.close_rcvd
        if close is not None or not data or protocol.state is not State.OPEN:
            try:
                self._send_nowait(raw)  # the close frame's answer, best effort
            except OSError:
                pass
            if close is not None:
                self._ended(Ending(SERVER_CLOSE, close.code, close.reason))
            elif protocol.parser_exc is not None:
                self._ended(Ending(RESET, reason=f"protocol error: {protocol.parser_exc}"))
            else:
                self._ended(Ending(RESET, reason="connection closed without a close frame"))
            return
        try:
            self._send_nowait(raw)  # pongs
        except OSError as exc:
            self._ended(Ending(RESET, reason=_errno_text(exc)))

    def _send_nowait(self, raw: Any) -> None:
        """Send the protocol's queued bytes without blocking the hub (a pong is a few bytes)."""
        sock = self.sock
        for data in self.protocol.data_to_send():
            if not data or sock is None:
                continue
            if raw is None:
                sock.sendall(data)  # TLS: in a greenlet already
                continue
            try:
                sent = raw.send(data, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                sent = 0
            if sent < len(data):  # a full send buffer: let a greenlet finish the write
                gevent.spawn(sock.sendall, data[sent:])

    def _ended(self, ending: Ending) -> None:
        if self.ending is not None:
            return
        self.ending = ending
        on_end = self._on_end
        self.abort()
        if on_end is not None:
            on_end(self)

    # --- internals -----------------------------------------------------------------

    def _require_open(self) -> None:
        if self.sock is None or self.protocol.state is not State.OPEN:
            raise ConnectionClosedError(self._closed_reason())

    def _closed_reason(self) -> str:
        close = self.protocol.close_rcvd
        if close is not None:
            return f"closed by server ({_closed_text(close)})"
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


def _closed_text(close: Any) -> str:
    return f"code {close.code}{', ' + close.reason if close.reason else ''}"


def _errno_text(exc: OSError) -> str:
    """A short name for a socket error: "ECONNRESET", "EPIPE", or the exception's type."""
    code = exc.errno
    if code is not None and code in errno.errorcode:
        return errno.errorcode[code]
    return type(exc).__name__


@functools.lru_cache(maxsize=64)
def _parse_uri(url: str) -> Any:
    """websockets' parse_uri, once per URL: a churn loop opens the same URL thousands of times a second."""
    return parse_uri(url)


def _decode(opcode: Opcode, data: bytes) -> str | bytes:
    return data.decode("utf-8", errors="replace") if opcode is Opcode.TEXT else data
