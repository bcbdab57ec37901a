"""Connection counters shared by the users of one load process, read by the sampler."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["LoadCounters", "latency_summary"]


@dataclass
class LoadCounters:
    """Cumulative connection counts and the latencies seen since the last :meth:`take_latencies`."""

    opened: int = 0
    closed: int = 0
    errors: int = 0
    _latencies: dict[str, list[float]] = field(default_factory=dict)

    @property
    def open(self) -> int:
        return self.opened - self.closed

    def record_latency(self, name: str, milliseconds: float) -> None:
        bucket = self._latencies.setdefault(name, [])
        if len(bucket) < 20000:  # bounded: a sample interval never holds more than this
            bucket.append(milliseconds)

    def take_latencies(self) -> dict[str, list[float]]:
        """The latencies recorded since the previous call, by request name."""
        taken, self._latencies = self._latencies, {}
        return taken

    def snapshot(self) -> dict[str, int]:
        return {"opened": self.opened, "closed": self.closed, "open": self.open, "errors": self.errors}


def latency_summary(latencies: dict[str, list[float]]) -> dict[str, list[float]]:
    """``{name: [p50, p95, p99]}`` in milliseconds, for one sample line."""
    import numpy as np

    summary = {}
    for name, values in latencies.items():
        if values:
            p50, p95, p99 = np.percentile(np.asarray(values), [50, 95, 99])
            summary[name] = [round(float(p50), 3), round(float(p95), 3), round(float(p99), 3)]
    return summary
