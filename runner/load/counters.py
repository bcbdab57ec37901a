"""Connection counters shared by the users of one load process, read by the sampler."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["LoadCounters", "latency_summary", "ending_key", "MAX_ENDING_KINDS"]

#: Distinct (code, reason) endings kept; a server that puts ids in its close reasons must
#: not grow the counters (the rest are counted under "other").
MAX_ENDING_KINDS = 20


def ending_key(kind: str, code: int | None, reason: str) -> str:
    """One key per way the server ended connections, e.g. ``"server_close 1011 keepalive ping timeout"``."""
    parts = [kind] + ([str(code)] if code is not None else []) + ([reason[:80]] if reason else [])
    return " ".join(parts)


@dataclass
class LoadCounters:
    """Cumulative connection counts and the latencies seen since the last :meth:`take_latencies`."""

    opened: int = 0
    closed: int = 0
    errors: int = 0
    #: Connections the server ended while their user held them, waited or thought: with a
    #: close frame, or with FIN/RST and no close frame. Each is also counted in ``closed``.
    server_closes: int = 0
    resets: int = 0
    #: How many connections ended each way (see :func:`ending_key`).
    endings: dict[str, int] = field(default_factory=dict)
    _latencies: dict[str, list[float]] = field(default_factory=dict)

    @property
    def open(self) -> int:
        return self.opened - self.closed

    def server_ended(self, client: Any) -> None:
        """A watched connection that the server ended (``client.ending`` set): it is closed now."""
        ending = client.ending
        self.closed += 1
        if ending.kind == "server_close":
            self.server_closes += 1
        else:
            self.resets += 1
        key = ending_key(ending.kind, ending.code, ending.reason)
        if key not in self.endings and len(self.endings) >= MAX_ENDING_KINDS:
            key = f"{ending.kind} other"
        self.endings[key] = self.endings.get(key, 0) + 1

    def record_latency(self, name: str, milliseconds: float) -> None:
        bucket = self._latencies.setdefault(name, [])
        if len(bucket) < 20000:  # bounded: a sample interval never holds more than this
            bucket.append(milliseconds)

    def take_latencies(self) -> dict[str, list[float]]:
        """The latencies recorded since the previous call, by request name."""
        taken, self._latencies = self._latencies, {}
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


def latency_summary(latencies: dict[str, list[float]]) -> dict[str, list[float]]:
    """``{name: [p50, p95, p99]}`` in milliseconds, for one sample line."""
    import numpy as np

    summary = {}
    for name, values in latencies.items():
        if values:
            p50, p95, p99 = np.percentile(np.asarray(values), [50, 95, 99])
            summary[name] = [round(float(p50), 3), round(float(p95), 3), round(float(p99), 3)]
    return summary
