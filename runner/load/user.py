"""The Locust user: WebSocket connect -> echo round trips -> hold -> close -> think, in a loop.

Connect, echo and close are Locust request events (request type ``WS``), so Locust's
statistics hold their counts, failures and latency percentiles.
"""

from __future__ import annotations

import ssl
import time
from typing import Any, Callable

import gevent
import gevent.event
from locust import User, constant, task

from ..profile import LoadSettings
from .client import WebSocketClient, WebSocketError
from .counters import LoadCounters

__all__ = ["make_user_class", "REQUEST_TYPE"]

REQUEST_TYPE = "WS"

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

    def _request(self, name: str, action: Callable[[], Any], length: int = 0) -> bool:
        """Time ``action`` as one Locust request; True when it succeeded."""
        start = time.perf_counter()
        exception: BaseException | None = None
        try:
            action()
        except CYCLE_ERRORS as exc:
            exception = exc
            self.counters.errors += 1
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        self.counters.record_latency(name, elapsed_ms)
        self.environment.events.request.fire(
            request_type=REQUEST_TYPE,
            name=name,
            response_time=elapsed_ms,
            response_length=length,
            exception=exception,
            context={},
        )
        return exception is None

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
        client = WebSocketClient(self.url, timeout=settings.timeout, source_address=self._source_address())
        if not self._request("connect", client.connect):
            client.abort()
            return
        self.counters.opened += 1
        try:
            for _ in range(settings.messages):
                if not self._request("echo", lambda: self._echo(client), len(self.payload)):
                    return
            if settings.hold:
                self.stopping.wait(settings.hold)
            self._request("close", client.close)
        finally:
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
