"""Progress on long runs: a live panel on a terminal (rich), plain periodic lines in CI logs.

The run calls :meth:`Progress.update` about once a second with the run's state
(phase, elapsed and remaining seconds, open and closed connections, cycles per second,
errors, RSS). Besides showing it, Progress keeps the (closed connections, RSS) pairs of
the steady phase and shows the *slope so far*: RSS growth per closed connection, a
Theil-Sen fit over at most :data:`SLOPE_POINTS` evenly thinned points after the first
quarter (warm-up), refreshed every :data:`SLOPE_EVERY` seconds. It is a hint for the
person watching, not the verdict (the analysis of the saved samples decides).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import numpy as np

from .analysis.stats import theil_sen
from .units import format_bytes

__all__ = ["Progress", "format_state", "format_running", "slope_so_far", "SLOPE_POINTS", "SLOPE_EVERY"]

#: Most points the slope-so-far fit uses (Theil-Sen is quadratic in the points).
SLOPE_POINTS = 300
#: Seconds between two slope-so-far fits.
SLOPE_EVERY = 5.0
#: Fewest steady points (after warm-up) before a slope is shown.
_SLOPE_MIN_POINTS = 8


def slope_so_far(points: list[tuple[float, float]]) -> float | None:
    """Theil-Sen slope of (closed connections, bytes) after the first quarter, or None (pure)."""
    if len(points) < _SLOPE_MIN_POINTS:
        return None
    kept = points[len(points) // 4 :]
    if len(kept) > SLOPE_POINTS:
        step = len(kept) / SLOPE_POINTS
        kept = [kept[int(i * step)] for i in range(SLOPE_POINTS)]
    xs = [p[0] for p in kept]
    if len(kept) < _SLOPE_MIN_POINTS or max(xs) == min(xs):
        return None
    return theil_sen(np.asarray(xs), np.asarray([p[1] for p in kept]), alpha=0.05).slope


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def format_state(state: dict[str, Any], slope: float | None = None) -> str:
    """One plain line of the run's state, for CI logs (pure)."""
    parts = [
        f"[{state.get('phase', '?'):>8}] {_clock(state.get('elapsed'))}",
        f"left {_clock(state['remaining'])}" if state.get("remaining") is not None else None,
        f"open {state.get('open', 0):>6}",
        f"closed {state.get('closed', 0):>8}",
        f"{state.get('rate', 0.0):7.1f} cycles/s",
        f"errors {state.get('errors', 0)}",
        f"rss {format_bytes(state.get('rss'))}",
        f"slope so far {format_bytes(slope)}/conn" if slope is not None else None,
    ]
    return "  ".join(p for p in parts if p)


def format_running(running: dict[str, Any]) -> str:
    """The running verdict of the latest look, per tier (pure): ``look 3/24: heap pass, rss inconclusive``."""
    tiers = ", ".join(f"{name} {verdict}" for name, verdict in running.get("tiers", {}).items()) or "no tier yet"
    if running.get("decided"):
        head = f"decided after {running.get('cycles', 0):,} connections: {str(running.get('verdict', '?')).upper()}"
    else:
        head = f"look {running.get('look')}/{running.get('looks')}: undecided ({running.get('verdict')})"
    return f"{head} - {tiers}"


class Progress:
    """Receives the run's state once a second and shows it without flooding a log.

    ``interactive`` (default: the stream is a TTY) selects a rich live panel; otherwise a
    plain line every ``every`` seconds. ``quiet`` shows nothing.
    """

    def __init__(
        self, stream: TextIO | None = None, *, interactive: bool | None = None, every: float = 10.0, quiet: bool = False
    ) -> None:
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.every = every
        self.quiet = quiet
        self.slope: float | None = None
        #: The latest look of a run judged as it goes: its verdict per tier, and whether it decided.
        self.running: dict[str, Any] | None = None
        self._points: list[tuple[float, float]] = []
        self._last_fit: float | None = None  # monotonic time of the last fit / line (None: never)
        self._last_line: float | None = None
        self._live: Any = None
        self._console: Any = None
        if self.interactive and not quiet:
            from rich.console import Console
            from rich.live import Live

            self._console = Console(file=self.stream, force_terminal=True)
            self._live = Live("", console=self._console, refresh_per_second=4, transient=True)
            self._live.start()

    def note(self, message: str) -> None:
        """A line that stays in the output (phase changes, notes)."""
        if self.quiet:
            return
        if self._console is not None:
            self._console.print(message, markup=False, highlight=False)
        else:
            print(message, file=self.stream, flush=True)

    def _track_slope(self, state: dict[str, Any]) -> None:
        if state.get("phase") != "steady" or state.get("rss") is None or state.get("closed") is None:
            return
        self._points.append((float(state["closed"]), float(state["rss"])))
        now = time.monotonic()
        if self._last_fit is None or now - self._last_fit >= SLOPE_EVERY:
            self._last_fit = now
            self.slope = slope_so_far(self._points)

    def look(self, decision: Any, looks: int) -> None:
        """The verdict of a look (a :class:`runner.analysis.sequential.Decision`) for the panel and the log."""
        self.running = {
            "look": decision.look + 1,
            "looks": looks,
            "verdict": decision.verdict.value,
            "tiers": dict(decision.tiers),
            "decided": decision.decided,
            "cycles": decision.cycles,
        }
        if not self.quiet and self._live is None:
            print(format_running(self.running), file=self.stream, flush=True)

    def update(self, state: dict[str, Any]) -> None:
        """The current state: phase, elapsed, remaining, open, closed, rate, errors, rss."""
        if self.quiet:
            return
        self._track_slope(state)
        if self._live is not None:
            self._live.update(self._panel(state), refresh=True)  # about once a second
            return
        now = time.monotonic()
        if self._last_line is None or now - self._last_line >= self.every:
            self._last_line = now
            print(format_state(state, self.slope), file=self.stream, flush=True)

    def _panel(self, state: dict[str, Any]) -> Any:
        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        for _ in range(4):
            table.add_column()
        remaining = state.get("remaining")
        table.add_row(
            f"[bold]{state.get('phase', '?')}[/]",
            f"elapsed {_clock(state.get('elapsed'))}"
            + (f"  left {_clock(remaining)}" if remaining is not None else ""),
            f"open [bold]{state.get('open', 0):,}[/]  closed {state.get('closed', 0):,}",
            f"{state.get('rate', 0.0):,.1f} cycles/s",
        )
        errors = state.get("errors", 0)
        table.add_row(
            f"errors {'[red]' if errors else ''}{errors:,}{'[/]' if errors else ''}",
            f"rss {format_bytes(state.get('rss'))}",
            f"slope so far {format_bytes(self.slope)}/conn" if self.slope is not None else "slope so far: collecting",
            "",
        )
        if self.running is not None:
            table.add_row(f"[bold]{format_running(self.running)}[/]", "", "", "")
        return table

    def close(self) -> None:
        """Stop the live panel (idempotent)."""
        if self._live is not None:
            self._live.stop()
            self._live = None
