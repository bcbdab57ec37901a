"""CPU use of the load generator's processes, to tell when the generator is saturated.

A load process that uses more than :data:`SATURATED_PERCENT` of one core cannot be
trusted to produce the churn asked of it: connect latencies grow and churn rates fall
because of the generator, not the server, and a verdict built on them may be wrong.
Readings are cumulative CPU seconds against the reading process's own monotonic clock,
so a master can judge a worker's use exactly, whatever the delay of its reports.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import psutil

__all__ = ["SATURATED_PERCENT", "WINDOW_SECONDS", "cpu_reading", "SaturationTracker"]

SATURATED_PERCENT = 90.0
#: CPU use is judged over windows at least this long (a single busy instant is not saturation).
WINDOW_SECONDS = 5.0

_SELF = psutil.Process()


def cpu_reading() -> tuple[float, float]:
    """(monotonic clock, user + system CPU seconds) of this process."""
    times = _SELF.cpu_times()
    return time.monotonic(), times.user + times.system


@dataclass
class SaturationTracker:
    """Folds (clock, cpu seconds) readings per load process into windowed CPU percentages.

    Pure bookkeeping: the caller supplies every reading and the phase it belongs to.
    """

    window: float = WINDOW_SECONDS
    threshold: float = SATURATED_PERCENT
    #: Phases whose windows count for the verdict on saturation (the load is running).
    judged_phases: tuple[str, ...] = ("ramp", "steady")
    _start: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: Latest windowed percentage per process.
    latest: dict[str, float] = field(default_factory=dict)
    #: Highest windowed percentage per process in a judged phase.
    peaks: dict[str, float] = field(default_factory=dict)
    #: Judged windows above the threshold.
    hot_windows: int = 0
    windows: int = 0

    def feed(self, process: str, clock: float, cpu_seconds: float, phase: str) -> float | None:
        """Add one reading; returns the process's CPU percent when a window just closed."""
        start = self._start.get(process)
        if start is None or clock < start[0]:
            self._start[process] = (clock, cpu_seconds)
            return None
        elapsed = clock - start[0]
        if elapsed < self.window:
            return None
        percent = round(100.0 * (cpu_seconds - start[1]) / elapsed, 1)
        self._start[process] = (clock, cpu_seconds)
        self.latest[process] = percent
        if phase in self.judged_phases:
            self.windows += 1
            self.peaks[process] = max(percent, self.peaks.get(process, 0.0))
            if percent > self.threshold:
                self.hot_windows += 1
        return percent

    @property
    def current(self) -> float | None:
        """The busiest process's latest windowed percentage."""
        return max(self.latest.values()) if self.latest else None

    @property
    def peak(self) -> float | None:
        return max(self.peaks.values()) if self.peaks else None

    @property
    def saturated(self) -> bool:
        return self.hot_windows > 0

    def note(self) -> str | None:
        """The run note when the generator was saturated, else ``None``."""
        if not self.saturated:
            return None
        return (
            f"load generator saturated: a load process used {self.peak:.0f}% of a core "
            f"({self.hot_windows} of {self.windows} {self.window:g}s windows above {self.threshold:.0f}%); "
            "churn rates and latencies reflect the generator, and the verdict may be unreliable - add workers "
            "(load.workers)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "processes": len(self._start),
            "peak_cpu_percent": self.peak,
            "saturated": self.saturated,
            "hot_windows": self.hot_windows,
            "windows": self.windows,
            "threshold_percent": self.threshold,
        }
