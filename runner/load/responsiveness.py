"""How responsive the runner's own gevent loop is: the master must answer worker heartbeats.

A Locust worker gives its master up for dead when no heartbeat reply comes for 60 s, and
the master answers heartbeats from its gevent loop - the same loop that samples the
target, writes samples and draws progress. :class:`LoopLag` is a greenlet that asks to
wake every ``tick`` seconds and records how late it woke: the longest stall of the loop
since the last sample line (``loop_lag`` in samples.jsonl) and over the whole run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import gevent

__all__ = ["LoopLag", "STALL_SECONDS"]

#: A loop stall at least this long is counted (and worth a note): heartbeats are 1 s apart.
STALL_SECONDS = 1.0


@dataclass
class LoopLag:
    """Lateness of a periodic wake-up on this process's gevent loop."""

    tick: float = 0.05
    #: Longest lateness since the last :meth:`take`, and over the run (seconds).
    recent: float = 0.0
    peak: float = 0.0
    stalls: int = 0
    _greenlet: Any = field(default=None, repr=False)

    def start(self) -> None:
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    def _run(self) -> None:
        while True:
            before = time.monotonic()
            gevent.sleep(self.tick)
            self.record(time.monotonic() - before - self.tick)

    def record(self, lateness: float) -> None:
        """Fold one wake-up's lateness in (pure bookkeeping; the greenlet calls it)."""
        lateness = max(0.0, lateness)
        self.recent = max(self.recent, lateness)
        self.peak = max(self.peak, lateness)
        if lateness >= STALL_SECONDS:
            self.stalls += 1

    def take(self) -> float:
        """The longest lateness since the previous call, in seconds (for one sample line)."""
        taken, self.recent = self.recent, 0.0
        return round(taken, 3)

    def to_dict(self) -> dict[str, Any]:
        return {"peak_loop_lag_s": round(self.peak, 3), "loop_stalls": self.stalls, "stall_threshold_s": STALL_SECONDS}
