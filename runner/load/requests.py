"""The one timer of a user's work as Locust requests, and the one request type.

Connect, each echo or step, close and drop are Locust requests: their counts, failures and
latency percentiles are Locust's statistics, and the same latencies feed the run's counters.
"""

from __future__ import annotations

import time
from typing import Any, Callable

__all__ = ["REQUEST_TYPE", "RequestRecorder"]

#: The request type of every WebSocket request in Locust's statistics.
REQUEST_TYPE = "WS"


class RequestRecorder:
    """Fires Locust request events and keeps the shared counters, for one user.

    ``failures``: the exceptions that fail a request (and are recorded); any other escapes.
    """

    def __init__(self, user: Any, failures: tuple[type[BaseException], ...]) -> None:
        self.user = user
        self.failures = failures

    def record(self, name: str, start: float, exception: BaseException | None, length: int = 0) -> None:
        """One request named ``name`` that began at ``start`` (``time.perf_counter()``)."""
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        counters = self.user.counters
        if exception is not None:
            counters.errors += 1
        counters.record_latency(name, elapsed_ms)
        self.user.environment.events.request.fire(
            request_type=REQUEST_TYPE,
            name=name,
            response_time=elapsed_ms,
            response_length=length,
            exception=exception,
            context={},
        )

    def time(self, name: str, action: Callable[[], Any], length: int = 0) -> bool:
        """Time ``action`` as one request; True when it succeeded."""
        start = time.perf_counter()
        try:
            action()
        except self.failures as exc:
            self.record(name, start, exc, length)
            return False
        self.record(name, start, None, length)
        return True
