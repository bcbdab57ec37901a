"""Progress on long runs: a live line on a terminal (rich), plain periodic lines in CI logs."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["Progress", "format_bytes"]


def format_bytes(value: float | None) -> str:
    if value is None:
        return "-"
    sign = "-" if value < 0 else ""
    value = abs(float(value))
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{sign}{value:.0f} {unit}" if unit == "B" else f"{sign}{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


class Progress:
    """Receives the run's state once a second and shows it without flooding a log."""

    def __init__(self, stream: TextIO | None = None, *, interactive: bool | None = None, every: float = 10.0, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.every = every
        self.quiet = quiet
        self._last_line = 0.0
        self._live = None
        self._console = None
        if self.interactive and not quiet:
            from rich.console import Console
            from rich.live import Live

            self._console = Console(file=self.stream)
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

    def update(self, state: dict[str, Any]) -> None:
        """The current state: phase, elapsed, remaining, open, cycles/s, rss."""
        if self.quiet:
            return
        line = (
            f"[{state['phase']:>8}] {state['elapsed']:7.0f}s"
            + (f" (-{state['remaining']:.0f}s)" if state.get("remaining") is not None else "")
            + f"  open {state['open']:>6}  closed {state['closed']:>8}  {state['rate']:7.1f} cycles/s"
            + f"  errors {state['errors']}  rss {format_bytes(state.get('rss'))}"
        )
        if self._live is not None:
            self._live.update(line)
            return
        now = time.monotonic()
        if now - self._last_line >= self.every:
            self._last_line = now
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
