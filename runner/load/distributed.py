"""What a Locust master and its workers say to each other beyond Locust's own messages.

The master sends each worker the run's configuration (URL, load settings, source
addresses) when the worker says hello, so ``soak worker --master HOST:PORT`` needs no
profile of its own. Workers add their connection counters, fresh latencies and their own
CPU use to every ``report_to_master`` payload; the master keeps the latest per worker in
:class:`WorkerCounters`, which the sampler reads like the in-process :class:`LoadCounters`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "REPORT_LATENCIES",
    "sample_latencies",
    "MSG_HELLO",
    "MSG_CONFIG",
    "MSG_READY",
    "REPORT_KEY",
    "REPORT_INTERVAL",
    "WorkerCounters",
    "WorkerState",
    "master_heartbeat_timeout",
]

#: worker -> master: "I am here, send me the run" (data: pid, host).
MSG_HELLO = "soak_hello"
#: master -> worker: the run's configuration (data: url, load, source_addresses, stop_timeout).
MSG_CONFIG = "soak_config"
#: worker -> master: configuration applied, ready to spawn users (data: pid, fd_limit).
MSG_READY = "soak_ready"
#: Key of soak's part of a worker's ``report_to_master`` payload.
REPORT_KEY = "soak"
#: Seconds between worker reports (Locust's default is 3 s: too coarse next to 0.5 s samples).
REPORT_INTERVAL = 1.0
#: Most latencies per request name in one worker report: a uniform sample is enough for the
#: percentiles of a sample line, and the master (one process, also the sampler) must keep
#: up with every worker's reports or its heartbeats lag and the workers give it up for dead.
REPORT_LATENCIES = 300


def sample_latencies(latencies: dict[str, list[float]], limit: int = REPORT_LATENCIES) -> dict[str, list[float]]:
    """At most ``limit`` latencies per name, drawn uniformly (all of them when there are fewer)."""
    import random

    return {
        name: values if len(values) <= limit else random.sample(values, limit) for name, values in latencies.items()
    }


def master_heartbeat_timeout(stop_timeout: float, default: int = 60) -> int:
    """How long this worker waits for the master's heartbeats before it gives the master up.

    On "stop" (the drain), Locust's worker removes itself from the master and then sleeps
    ``stop_timeout`` in the greenlet that reads the master's messages, heartbeats included;
    with a drain longer than Locust's 60 s it gave the master up in the middle of the drain
    (measured at 50K: all three workers, 60 s after the drain began). The wait covers the
    drain and a margin.
    """
    return max(default, math.ceil(stop_timeout) + default)  # Locust keeps whole seconds


@dataclass
class WorkerState:
    """The latest report of one worker."""

    opened: int = 0
    closed: int = 0
    errors: int = 0
    server_closes: int = 0
    resets: int = 0
    endings: dict[str, int] = field(default_factory=dict)
    #: The worker's own monotonic clock and cumulative CPU seconds at its last report.
    cpu_clock: float | None = None
    cpu_seconds: float | None = None
    pid: int | None = None


@dataclass
class WorkerCounters:
    """The sum of every worker's counters; the same reading interface as LoadCounters."""

    workers: dict[str, WorkerState] = field(default_factory=dict)
    _latencies: dict[str, list[float]] = field(default_factory=dict)
    #: Longest stall of a worker's gevent loop, and longest delay of the master's heartbeats
    #: seen by a worker, reported since the last take (seconds).
    _loop_lag: float = 0.0
    _heartbeat_lag: float = 0.0

    @property
    def opened(self) -> int:
        return sum(w.opened for w in self.workers.values())

    @property
    def closed(self) -> int:
        return sum(w.closed for w in self.workers.values())

    @property
    def errors(self) -> int:
        return sum(w.errors for w in self.workers.values())

    @property
    def server_closes(self) -> int:
        return sum(w.server_closes for w in self.workers.values())

    @property
    def resets(self) -> int:
        return sum(w.resets for w in self.workers.values())

    @property
    def endings(self) -> dict[str, int]:
        """How the server ended connections during holds, summed over the workers."""
        total: dict[str, int] = {}
        for worker in self.workers.values():
            for key, count in worker.endings.items():
                total[key] = total.get(key, 0) + count
        return total

    @property
    def open(self) -> int:
        return self.opened - self.closed

    def update(self, client_id: str, report: dict[str, Any]) -> None:
        """Fold one worker report (the ``REPORT_KEY`` part) in; counters are cumulative per worker."""
        state = self.workers.setdefault(client_id, WorkerState())
        state.opened = int(report.get("opened", state.opened))
        state.closed = int(report.get("closed", state.closed))
        state.errors = int(report.get("errors", state.errors))
        state.server_closes = int(report.get("server_closes", state.server_closes))
        state.resets = int(report.get("resets", state.resets))
        if isinstance(report.get("endings"), dict):
            state.endings = {str(k): int(v) for k, v in report["endings"].items()}
        state.cpu_clock = report.get("cpu_clock", state.cpu_clock)
        state.cpu_seconds = report.get("cpu_seconds", state.cpu_seconds)
        state.pid = report.get("pid", state.pid)
        self._loop_lag = max(self._loop_lag, float(report.get("loop_lag") or 0.0))
        self._heartbeat_lag = max(self._heartbeat_lag, float(report.get("heartbeat_lag") or 0.0))
        for name, values in (report.get("lat") or {}).items():
            bucket = self._latencies.setdefault(name, [])
            room = 20000 - len(bucket)
            if room > 0:
                bucket.extend(values[:room])

    def take_latencies(self) -> dict[str, list[float]]:
        """The latencies reported since the previous call, by request name."""
        taken, self._latencies = self._latencies, {}
        return taken

    def lose(self, client_id: str) -> int:
        """A worker that died: its open connections ended with its process. Returns how many were open."""
        state = self.workers.get(client_id)
        if state is None:
            return 0
        lost = state.opened - state.closed
        state.closed = state.opened
        return lost

    def take_loop_lag(self) -> tuple[float, float]:
        """The longest worker loop stall and heartbeat delay reported since the previous call."""
        taken = (round(self._loop_lag, 3), round(self._heartbeat_lag, 3))
        self._loop_lag = self._heartbeat_lag = 0.0
        return taken

    def snapshot(self) -> dict[str, int]:
        return {
            "opened": self.opened,
            "closed": self.closed,
            "open": self.open,
            "errors": self.errors,
            "server_closes": self.server_closes,
            "resets": self.resets,
        }

    def cpu_readings(self) -> dict[str, tuple[float, float]]:
        """Each worker's latest (clock, cumulative CPU seconds) reading."""
        return {
            cid: (w.cpu_clock, w.cpu_seconds)
            for cid, w in self.workers.items()
            if w.cpu_clock is not None and w.cpu_seconds is not None
        }
