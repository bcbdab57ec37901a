"""Charts as inline SVG text (matplotlib, Agg backend; no files, no network)."""

from __future__ import annotations

import io
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

__all__ = ["memory_chart"]

PHASE_COLOURS = {"baseline": "#eeeeee", "ramp": "#fff3d6", "steady": "#ffffff", "drain": "#e3f0ff", "cooldown": "#eeeeee"}


def _bytes(value: float, _pos: int | None = None) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(value) < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)


def _svg(fig: Any) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def memory_chart(samples: Sequence[dict[str, Any]], phases: Sequence[dict[str, Any]]) -> str | None:
    """Memory of the target's tree against time, phases shaded."""
    if not samples:
        return None
    fig, ax = plt.subplots(figsize=(9, 3.2), dpi=100)
    for phase in phases:
        end = phase.get("end") if phase.get("end") is not None else samples[-1]["t"]
        ax.axvspan(phase["start"], end, color=PHASE_COLOURS.get(phase["name"], "#ffffff"), lw=0)
    for metric, colour in (("rss", "#1f77b4"), ("uss", "#2ca02c"), ("heap", "#d62728")):
        points = [(s["t"], s[metric]) for s in samples if s.get(metric) is not None]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, label=metric.upper() if metric != "heap" else "heap", color=colour, lw=1.2)
    ax.yaxis.set_major_formatter(FuncFormatter(_bytes))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("memory")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    return _svg(fig)
