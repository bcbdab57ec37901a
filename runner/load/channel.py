"""One connection and what it speaks: the I/O loop between a WebSocketClient and a protocol session.

The protocol logic is pure (:mod:`runner.load.protocols`): this module reads messages from
the socket, feeds them to the preset's session, sends what the session queued (its
handshake, its pongs) and keeps the decoded application events in a small inbox until a
step takes them. Every read answers the server's heartbeats, so a step waiting for its
reply, a ``wait`` step, the hold and a scenario file's ``ctx.sleep`` all keep a
Socket.IO or GraphQL connection alive.

Without a preset, messages are plain WebSocket messages; the ``[[scenario.auto_reply]]``
rules answer those the scenario did not expect.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Callable, Mapping

from .client import ConnectionClosedError, HandshakeError, WebSocketClient, WebSocketError
from .protocols import Incoming, ProtocolViolation, Session
from .protocols.auto_reply import AutoReply, reply_to
from .protocols.graphql_ws import SUBPROTOCOL, GraphQLWSSession
from .protocols.socketio import SocketIOSession

__all__ = ["Channel", "PresetError", "Refused", "INBOX_SIZE"]

#: Events kept for later steps at most (older ones are dropped): bounded memory per connection.
INBOX_SIZE = 64
#: Longest single read while idling, so a stop request is noticed soon.
_IDLE_SLICE = 1.0


class PresetError(WebSocketError):
    """The server broke the preset's protocol (a failed request naming what came)."""

    kind = "protocol error"


class Refused(HandshakeError):
    """The preset's handshake was refused (Socket.IO CONNECT_ERROR, GraphQL close during connection_init)."""

    kind = "refused"


class Channel:
    """A client connection with its preset session (or none) and auto-reply rules. One greenlet uses it."""

    __slots__ = ("client", "session", "rules", "fields", "inbox")

    def __init__(
        self,
        client: WebSocketClient,
        session: Session | None = None,
        rules: tuple[AutoReply, ...] = (),
        fields: Mapping[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.session = session
        self.rules = rules
        self.fields: Mapping[str, Any] = fields or {}
        self.inbox: deque[Incoming] = deque(maxlen=INBOX_SIZE)

    @property
    def open(self) -> bool:
        return self.client.open and (self.session is None or self.session.ended is None)

    # --- the connection ---

    def connect(self) -> None:
        """The WebSocket handshake, then the preset's (awaited within the client's timeout)."""
        self.client.connect()
        session = self.session
        if session is None:
            return
        if isinstance(session, GraphQLWSSession) and self.client.protocol.subprotocol != SUBPROTOCOL:
            chosen = self.client.protocol.subprotocol
            raise HandshakeError(f"the server did not accept the subprotocol {SUBPROTOCOL} (it chose {chosen})")
        session.start()
        self._flush()
        deadline = time.monotonic() + self.client.timeout
        try:
            while not session.ready:
                if session.refusal is not None:
                    raise Refused(f"{self._what()} refused: {session.refusal}")
                self._read(deadline)
        except TimeoutError:
            raise HandshakeError(f"{self._what()}: no answer within {self.client.timeout:g}s") from None
        except ConnectionClosedError as exc:
            raise Refused(f"{self._what()} refused: {exc}") from None

    def _what(self) -> str:
        if isinstance(self.session, SocketIOSession):
            return f"Socket.IO namespace {self.session.namespace}"
        return "graphql-transport-ws connection_init"

    def close(self) -> None:
        """Leave the preset's session (Socket.IO: ``41``), then the WebSocket closing handshake."""
        if self.session is not None and self.client.open:
            self.session.leave()
            self._flush()
        self.client.close()

    def abort(self) -> None:
        self.client.abort()

    # --- sending ---

    def send(self, message: str | bytes) -> None:
        self.client.send(message)

    def flush(self) -> None:
        """Send what the session queued (after emit, subscribe, complete)."""
        self._flush()

    def _flush(self) -> None:
        assert self.session is not None
        for message in self.session.data_to_send():
            self.client.send(message)

    # --- receiving with a preset ---

    def _read(self, deadline: float) -> None:
        """Read one message into the session; its replies are sent, its events kept in the inbox."""
        session = self.session
        assert session is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError()
        message = self.client.recv(timeout=remaining)
        try:
            events = session.receive(message)
        except ProtocolViolation as exc:
            raise PresetError(str(exc)) from None
        self._flush()
        self.inbox.extend(events)
        if session.ended is not None and not events:
            raise ConnectionClosedError(session.ended)

    def take(
        self,
        accept: Callable[[Incoming], bool],
        deadline: float,
        *,
        keep_others: bool | Callable[[Incoming], bool] = False,
        skipped: list[Incoming] | None = None,
    ) -> Incoming:
        """The first event (the inbox first, then the wire) that ``accept`` approves, before ``deadline``.

        Events passed over are dropped (an expect skips what it does not want), or, with
        ``keep_others`` (True, or a predicate: waiting for an ack, for one subscription's
        results), left in the inbox for the steps after; with
        ``skipped`` they are also collected there (for the error message). ``accept`` may
        raise to fail at once (an error for the awaited subscription). Raises TimeoutError.
        """
        kept: list[Incoming] = []
        keep = keep_others if callable(keep_others) else (lambda _: keep_others)
        try:
            while True:
                while self.inbox:
                    event = self.inbox.popleft()
                    if accept(event):
                        return event
                    if keep(event):
                        kept.append(event)
                    if skipped is not None:
                        skipped.append(event)
                        del skipped[:-1]  # only the last one is ever shown; the count is kept by the caller
                self._read(deadline)
        finally:
            if kept:
                self.inbox.extendleft(reversed(kept))

    # --- plain messages (no preset) ---

    def auto_reply(self, message: str | bytes) -> bool:
        """Answer ``message`` by the first auto-reply rule that matches it; True when one did."""
        reply = reply_to(self.rules, message, self.fields) if self.rules else None
        if reply is None:
            return False
        self.client.send(reply)
        return True

    def recv(self, timeout: float) -> str | bytes:
        """The next plain message the auto-reply rules do not answer. Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError()
            message = self.client.recv(timeout=remaining)
            if not self.auto_reply(message):
                return message

    # --- idling ---

    def idle(self, seconds: float, stopping: Any = None) -> None:
        """Keep the connection alive for ``seconds``: read, answer heartbeats, keep events; end early on ``stopping``.

        A connection the server ends meanwhile just ends the idling (the caller sees it closed).
        """
        if seconds <= 0:
            return
        if self.session is None and not self.rules:
            if stopping is not None:
                stopping.wait(seconds)
            else:
                time.sleep(seconds)
            return
        end = time.monotonic() + seconds
        unread: deque[str | bytes] = deque(maxlen=INBOX_SIZE)  # plain messages the rules do not answer
        try:
            while True:
                now = time.monotonic()
                if now >= end or (stopping is not None and stopping.is_set()):
                    return
                try:
                    if self.session is not None:
                        self._read(min(end, now + _IDLE_SLICE))
                    else:
                        unread.append(self.recv(min(end - now, _IDLE_SLICE)))
                except TimeoutError:
                    continue
                except (ConnectionClosedError, PresetError, OSError):
                    return
        finally:
            if unread:
                self.client.unread(list(unread))  # for the steps after the wait, as without rules
