"""The Locust user: WebSocket connect -> echo round trips -> hold -> close -> think, in a loop.

With ``load.connections_per_user = N`` one user opens N connections one after another
(each with its echoes), holds them together, then closes them in the order they opened:
one greenlet then carries N connections, the lever on the generator's memory per held
connection at 50K (see README "Scale"). With ``load.drop_fraction`` that share of the
connections ends without the close handshake (request name ``drop``): the socket is just
closed, the way a killed tab or a lost network ends a connection.

Connect, echo and close are Locust request events (request type ``WS``), so Locust's
statistics hold their counts, failures and latency percentiles.
"""

from __future__ import annotations

import functools
import ssl
from typing import Any, Callable

import gevent
import gevent.event
from locust import User, constant, task

from ..profile import LoadSettings
from .client import WebSocketClient, WebSocketError
from .counters import LoadCounters
from .requests import REQUEST_TYPE, RequestRecorder
from .scenario import drop_due

__all__ = ["make_user_class", "REQUEST_TYPE"]


#: Errors a cycle counts as a failed request; anything else is a bug and reaches Locust.
CYCLE_ERRORS = (WebSocketError, OSError, ssl.SSLError, EOFError)


class EchoMismatch(WebSocketError):
    kind = "echo mismatch"


class ChurnUser(User):
    """One simulated client; each task run is one whole connection cycle."""

    abstract = True
    url: str = ""
    settings: LoadSettings = LoadSettings()
    counters: LoadCounters = LoadCounters()
    payload: str = ""
    source_addresses: tuple[str, ...] = ()
    #: Scenario, identity and TLS (runner.load.scenario); None: the plain echo loop.
    scenario: Any = None
    #: Set when the load stops (the driver listens to Locust's test_stopping): a held
    #: connection closes at once instead of sleeping out its hold through the drain.
    stopping: gevent.event.Event = gevent.event.Event()
    _next_source = 0
    #: Accumulated share of drops (load.drop_fraction); a drop is due when it reaches 1.
    _drop_credit = 0.0

    def _request(self, name: str, action: Callable[[], Any], length: int = 0) -> bool:
        """Time ``action`` as one Locust request; True when it succeeded."""
        return RequestRecorder(self, CYCLE_ERRORS).time(name, action, length)

    def _source_address(self) -> str | None:
        if not self.source_addresses:
            return None
        cls = type(self)
        cls._next_source = (cls._next_source + 1) % len(self.source_addresses)
        return self.source_addresses[cls._next_source]

    @task
    def cycle(self) -> None:
        if self.scenario is not None:
            self.scenario.run_cycle(self, url=self.url, source_address=self._source_address())
            return
        settings = self.settings
        held: list[WebSocketClient] = []
        try:
            for _ in range(settings.connections_per_user):
                if held and self.stopping.is_set():
                    break
                client = WebSocketClient(self.url, timeout=settings.timeout, source_address=self._source_address())
                if not self._request("connect", client.connect):
                    client.abort()
                    continue
                self.counters.opened += 1
                held.append(client)
                for _ in range(settings.messages):
                    if not self._request("echo", functools.partial(self._echo, client), len(self.payload)):
                        held.remove(client)
                        self._release(client)
                        break
            if held and settings.hold:
                self._hold(held, settings.hold)
            while held:
                client = held.pop(0)
                if client.ending is not None:
                    continue  # the server ended it during the hold: counted then
                try:
                    if self._drop_next():
                        self._request("drop", client.abort)
                    else:
                        self._request("close", client.close)
                finally:
                    self._release(client)
        finally:
            for client in held:  # only when the cycle was cut short (the load stopping, a bug)
                if client.ending is None:
                    self._release(client)

    def _hold(self, held: list[WebSocketClient], seconds: float) -> None:
        """Hold the connections open for ``seconds`` (less when the load stops), answering pings.

        A connection the server ends meanwhile leaves the open count when it happens
        (``server_close``/``reset`` in the counters), not when the hold is over.
        """
        for client in held:
            client.watch(self.counters.server_ended)
        try:
            self.stopping.wait(seconds)
        finally:
            for client in held:
                client.unwatch()

    def _drop_next(self) -> bool:
        """True when this connection is to be dropped: every 1/drop_fraction-th, evenly, per user."""
        drop, self._drop_credit = drop_due(self._drop_credit, self.settings.drop_fraction)
        return drop

    def _release(self, client: WebSocketClient) -> None:
        """Release the socket and count the connection as closed, whatever state it is in."""
        client.abort()
        self.counters.closed += 1

    def _echo(self, client: WebSocketClient) -> None:
        client.send(self.payload)
        reply = client.recv()
        if reply != self.payload:
            raise EchoMismatch(f"echo mismatch: sent {len(self.payload)} bytes, got {len(reply)}")


def make_user_class(
    url: str,
    settings: LoadSettings,
    counters: LoadCounters,
    *,
    source_addresses: tuple[str, ...] = (),
    scenario: Any = None,
) -> type[ChurnUser]:
    """A concrete user class configured for one run."""
    payload = ("soak-runner " * (settings.message_bytes // 12 + 1))[: settings.message_bytes]
    return type(
        "WebSocketChurnUser",
        (ChurnUser,),
        {
            "abstract": False,
            "url": url,
            "settings": settings,
            "counters": counters,
            "payload": payload,
            "source_addresses": source_addresses,
            "scenario": scenario,
            "stopping": gevent.event.Event(),
            "wait_time": constant(settings.think),
            "host": url,
        },
    )
