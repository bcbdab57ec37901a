"""What keeps the leaked memory: containers, tasks, threads and object types that grow per connection (pure).

The input is ``reduced["keepers"]`` (see :func:`runner.sampling.memray_capture.read_keepers`:
lengths of module-level containers, live asyncio tasks and threads at the GC checkpoints,
object counts by type at the full collections, the back-reference chain found in the
target) and the run's samples; the output is the ``keepers`` part of summary.json.

Each series is regressed against cumulative closed connections over the steady window
after its first quarter (as the allocation sites are). It is named when it grows, as the
verdict would call it: a significant upward trend (Mann-Kendall), a slope of at least
:data:`MIN_PER_CONNECTION` items per connection whose interval excludes zero, at least
:data:`MIN_GROWTH` items over the window, and no deceleration (the late half keeps at
least :data:`runner.analysis.verdict.DECELERATION_RATIO` of the pace). A cache that fills
and stops, or a set of the connections open right now, is not named.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..sampling.keepers_probe import PLUMBING  # stdlib only: the probe the target runs
from .sites import WARMUP_FRACTION, steady_closed
from .stats import mann_kendall, theil_sen
from .verdict import DECELERATION_RATIO

__all__ = [
    "keepers_summary",
    "keeper_lines",
    "grows",
    "MIN_PER_CONNECTION",
    "MIN_GROWTH",
    "MIN_POINTS",
    "MIN_CENSUS_POINTS",
    "THIN_POINTS",
]

#: Fewer items per connection than this is not a keeper (one per hundred connections).
MIN_PER_CONNECTION = 0.01
#: Fewest items a keeper gained over the analysed window.
MIN_GROWTH = 10
#: Fewest checkpoints in the window for a container, task or thread slope.
MIN_POINTS = 6
#: Fewest full collections in the window for an object-count slope.
MIN_CENSUS_POINTS = 3
#: Fewer checkpoints than this in the window: the evidence is called thin.
THIN_POINTS = 12
#: Items of each kind listed.
MAX_LISTED = 5
ALPHA = 0.05


def _window(walls: Sequence[float], samples: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray] | None:
    """(mask of the checkpoints in the analysed window, their closed-connection x), or None."""
    steady = steady_closed(samples)
    points = np.asarray(walls, dtype=float)
    if steady is None or not len(points):
        return None
    stamps, closed = steady
    x = np.interp(points, stamps, closed)
    start = closed[0] + WARMUP_FRACTION * (closed[-1] - closed[0])
    mask = (points >= stamps[0]) & (points <= stamps[-1]) & (x >= start)
    return mask, x


def grows(x: np.ndarray, y: np.ndarray, *, min_points: int = MIN_POINTS) -> dict[str, float] | None:
    """The slope of ``y`` per connection when it grows like a leak (see the module doc), else None."""
    keep = ~np.isnan(y)
    x, y = x[keep], y[keep]
    if len(x) < min_points or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    fit = theil_sen(x, y, alpha=ALPHA)
    if fit.slope < MIN_PER_CONNECTION or fit.low <= 0 or y[-1] - y[0] < MIN_GROWTH:
        return None
    if len(x) >= 8:  # the trend test needs a few points; fewer (full collections) rely on the interval
        trend = mann_kendall(y, alpha=ALPHA)
        if not (trend.increasing and trend.p_value < ALPHA):
            return None
    late = x >= x[0] + (x[-1] - x[0]) / 2
    if late.sum() >= max(3, min_points // 2) and np.ptp(x[late]) > 0:
        late_fit = theil_sen(x[late], y[late], alpha=ALPHA)
        if late_fit.slope < DECELERATION_RATIO * fit.slope and late_fit.high < fit.slope:
            return None  # it is slowing down: a cache filling up, a warm-up
        if late_fit.slope < MIN_PER_CONNECTION:
            return None
    return {"per_connection": round(fit.slope, 3), "ci_low": round(fit.low, 3), "ci_high": round(fit.high, 3)}


def _series(values: Sequence[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def keepers_summary(keepers: Mapping[str, Any] | None, samples: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The ``keepers`` part of summary.json (None when the target was not measured in-process).

    ``containers``: {name, type, file, per_connection, ci_low, ci_high, items_end, text};
    ``tasks``: {coroutine, waiting_at, per_connection, ..., alive_end, text}; ``threads``:
    the same for thread targets; ``objects``: types (and functions by code) whose count
    grew per connection at the full collections; ``chain``: {type, path, text};
    ``checkpoints`` and ``full_checkpoints`` in the window, ``thin`` (too few to be sure)
    and ``notes``.
    """
    if not keepers or not keepers.get("walls"):
        return None
    notes: list[str] = []
    window = _window(keepers["walls"], samples)
    out: dict[str, Any] = {"containers": [], "tasks": [], "threads": [], "objects": [], "chain": None, "notes": notes}
    if window is None:
        out.update(checkpoints=0, full_checkpoints=0, thin=True)
        notes.append("keepers: no checkpoint fell in the steady churn, so no container or task could be regressed")
        return out
    mask, x_all = window
    x = x_all[mask]
    full = np.asarray(keepers.get("full") or [False] * len(mask), dtype=bool)
    out["checkpoints"] = int(mask.sum())
    out["full_checkpoints"] = int((mask & full).sum())
    out["thin"] = bool(mask.sum() < THIN_POINTS)
    if out["thin"]:
        notes.append(
            f"keepers: only {int(mask.sum())} checkpoints fell in the analysed window (at least {THIN_POINTS} "
            "make a container's slope solid): lengthen load.duration"
        )
    for name, series in (keepers.get("containers") or {}).items():
        y = _series(series["lengths"])
        found = grows(x, y[mask])
        if found:
            end = next((v for v in reversed(series["lengths"]) if v is not None), None)
            text = f"{name} ({series['type']}) grows {found['per_connection']:.2f} items per connection"
            out["containers"].append(
                {
                    "name": name,
                    "type": series["type"],
                    "file": series.get("file"),
                    **found,
                    "items_end": end,
                    "text": text,
                }
            )
    for label, series in (keepers.get("tasks") or {}).items():
        y = _series(series["counts"])
        found = grows(x, y[mask])
        if found:
            waiting = f", waiting at {series['waiting_at']}" if series.get("waiting_at") else ""
            text = f"asyncio tasks alive grow {found['per_connection']:.2f} per connection (coroutine {label}{waiting})"
            out["tasks"].append(
                {
                    "coroutine": label,
                    "waiting_at": series.get("waiting_at"),
                    **found,
                    "alive_end": int(series["counts"][-1]),
                    "text": text,
                }
            )
    for label, counts in (keepers.get("threads") or {}).items():
        found = grows(x, _series(counts)[mask])
        if found:
            out["threads"].append(
                {
                    "target": label,
                    **found,
                    "alive_end": int(counts[-1]),
                    "text": f"threads alive grow {found['per_connection']:.2f} per connection (running {label})",
                }
            )
    census_walls = keepers.get("census_walls") or []
    judged = False  # enough full collections in the window to say which types grew
    if census_walls:
        census_window = _window(census_walls, samples)
        if census_window is not None:
            cmask, cx = census_window
            judged = bool(cmask.sum() >= MIN_CENSUS_POINTS)
            for name, counts in (keepers.get("census") or {}).items():
                if name in PLUMBING:
                    continue
                found = grows(cx[cmask], _series(counts)[cmask], min_points=MIN_CENSUS_POINTS)
                if found:
                    what = name[len("function ") :] if name.startswith("function ") else name
                    kind = "functions" if name.startswith("function ") else "objects"
                    text = f"{found['per_connection']:.2f} {what} {kind} kept per connection"
                    out["objects"].append({"type": name, **found, "text": text})
    grown_types = {item["type"] for item in out["objects"]}
    for key in ("containers", "tasks", "threads"):
        out[key].sort(key=lambda item: item["per_connection"], reverse=True)
    # the user's own functions (closures such as listeners) and classes first, then the rest, most per connection first
    containers = keepers.get("containers") or {}
    user_modules = {"__main__"} | {name.split(".")[0] for name, c in containers.items() if c.get("file")}
    out["objects"].sort(
        key=lambda item: (
            item["type"].startswith("function "),
            item["type"].split(".")[0] in user_modules,
            item["per_connection"],
        ),
        reverse=True,
    )
    for key in ("containers", "tasks", "threads", "objects"):
        out[key] = out[key][:MAX_LISTED]
    chain = keepers.get("chain")
    # a path to a type that grew per connection (or, when too few full collections could say, while something grew)
    relevant = False
    if chain:
        something = bool(out["containers"] or out["tasks"] or out["threads"])
        relevant = chain.get("type") in grown_types if judged else something
    if chain and chain.get("path") and relevant:
        out["chain"] = {"type": chain.get("type"), "path": list(chain["path"]), "text": " -> ".join(chain["path"])}
    elif chain and chain.get("error"):
        notes.append(f"keepers: the back-reference chain could not be traced ({chain['error']})")
    if keepers.get("truncated"):
        notes.append(
            f"keepers: the walk of module globals hit its budget at {keepers['truncated']} checkpoints; "
            "deeper containers were not measured"
        )
    return out


def keeper_lines(keepers: Mapping[str, Any] | None) -> list[str]:
    """The sentences naming what keeps the memory, most telling first (for the terminal and the report)."""
    if not keepers:
        return []
    kinds = ("containers", "tasks", "threads")
    lines = [f"kept by: {item['text']}" for key in kinds for item in keepers.get(key) or []]
    if keepers.get("chain"):
        lines.append(f"chain: {keepers['chain']['text']}")
    return lines
