"""Leak sites: from a reduced heap record (memray's, or a runtime probe's) to the ``heap`` metric
and the allocation sites that grow per connection (pure functions).

Nothing here reads files, starts processes or looks at a clock: the input is the
``memray/reduced.json`` content (see :mod:`runner.sampling.memray_capture`) and the
run's samples; the output is plain data for the samples, summary.json and the report.

Bytes per connection of a site: the Theil-Sen slope of its live bytes at the GC
checkpoints against the cumulative closed connections at those moments, over the
steady phase after its first quarter (warm-up: caches and pools fill there).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

__all__ = [
    "join_heap",
    "leak_sites",
    "memray_summary",
    "tree_processes",
    "steady_closed",
    "site_meaning",
    "coverage_note",
    "WARMUP_FRACTION",
    "MAX_SITES",
    "MIN_POINTS",
]

#: Share of the steady window (by closed connections) skipped as warm-up.
WARMUP_FRACTION = 0.25
#: Sites listed in summary.json.
MAX_SITES = 10
#: Fewest checkpoints in the window before a site slope is given.
MIN_POINTS = 6
#: Below this many bytes per connection a site keeps less than one small Python object and its slot.
SMALL_OBJECT_BYTES = 64
#: Fewest checkpoints for any site slope (then marked ``thin``, warm-up included).
THIN_MIN_POINTS = 3
#: Sites growing by less than this many bytes per connection are not listed at all.
MIN_BYTES_PER_CONNECTION = 1.0


def join_heap(
    samples: Sequence[dict[str, Any]],
    heap: Sequence[Sequence[float]],
    *,
    tolerance: float | None = None,
    field: str = "heap",
) -> list[dict[str, Any]]:
    """The samples with ``heap`` (or ``field``) filled from GC checkpoints, matched by wall time.

    Each checkpoint goes to the sample nearest in time (within ``tolerance`` seconds,
    by default the largest gap between samples); samples with no checkpoint keep
    ``heap = None`` so the analysis uses only measured points, never repeated ones.
    """
    out = [dict(s) for s in samples]
    walls = np.array([s.get("wall", np.nan) for s in out], dtype=float)
    if not len(heap) or not len(out) or np.isnan(walls).all():
        return out
    order = np.argsort(walls)
    sorted_walls = walls[order]
    if tolerance is None:
        gaps = np.diff(sorted_walls[~np.isnan(sorted_walls)])
        tolerance = float(gaps.max()) if len(gaps) else 1.0
    best: dict[int, tuple[float, int]] = {}
    for wall, value in heap:
        pos = int(np.searchsorted(sorted_walls, wall))
        near = [c for c in (pos - 1, pos) if 0 <= c < len(sorted_walls) and not np.isnan(sorted_walls[c])]
        if not near:
            continue
        candidate = min(near, key=lambda c: abs(sorted_walls[c] - wall))
        gap = abs(sorted_walls[candidate] - wall)
        if gap <= tolerance and (candidate not in best or gap < best[candidate][0]):
            best[candidate] = (gap, int(value))
    for candidate, (_, value) in best.items():
        out[int(order[candidate])][field] = value
    return out


def tree_processes(samples: Sequence[Mapping[str, Any]]) -> int:
    """Most processes the target's tree had during steady churn (memray tracks only the first).

    A pre-fork or multi-worker server serves connections in processes memray does not
    follow; its heap would look flat while the workers leak, so the caller leaves the
    heap out of the verdict when this is above 1.
    """
    return max((int(s.get("procs") or 0) for s in samples if s.get("phase") == "steady"), default=0)


def steady_closed(samples: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray] | None:
    """Wall times and cumulative closed connections of the steady-churn samples, in time order."""
    steady = [s for s in samples if s.get("phase") == "steady" and s.get("wall") is not None]
    if len(steady) < 2:
        return None
    walls = np.array([s["wall"] for s in steady], dtype=float)
    closed = np.array([s["closed"] for s in steady], dtype=float)
    order = np.argsort(walls)
    return walls[order], closed[order]


def leak_sites(
    reduced: Mapping[str, Any], samples: Sequence[Mapping[str, Any]], *, budget: float, limit: int = MAX_SITES
) -> list[dict[str, Any]]:
    """The allocation sites that grew with connections, largest first.

    Each: ``location`` (file:line of the innermost user frame), ``function``,
    ``bytes_per_connection`` (slope over the steady window), ``ci_low``/``ci_high``
    (95%), ``live_bytes_end`` (at the last checkpoint of the run), ``share`` (of the
    heap's own growth per connection over the same window; None when the heap did not
    grow), ``over_budget``, ``stack`` (user frames, innermost first); where a site also has
    a ``count`` series (instances, e.g. a JVM class histogram), ``instances_per_connection``.
    """
    steady = steady_closed(samples)
    points = np.asarray(reduced.get("points") or [], dtype=float)
    if steady is None or not len(points) or not reduced.get("sites"):
        return []
    walls, closed = steady
    inside = (points >= walls[0]) & (points <= walls[-1])
    x_all = np.interp(points, walls, closed)
    start = closed[0] + WARMUP_FRACTION * (closed[-1] - closed[0])
    window = inside & (x_all >= start)
    if window.sum() < MIN_POINTS:  # thin evidence: rather every steady checkpoint than no site at all
        window = inside
    if window.sum() < THIN_MIN_POINTS or np.ptp(x_all[window]) == 0:
        return []
    thin = bool(window.sum() < MIN_POINTS)
    x = x_all[window]
    heap_slope = _heap_slope(reduced, walls, closed, start)
    found = []
    for site in reduced["sites"]:
        live = np.asarray(site["live"], dtype=float)
        if len(live) != len(points):
            continue
        y = live[window]
        if np.ptp(y) == 0:
            continue
        slope, _, low, high = stats.theilslopes(y, x, alpha=0.95)
        if slope < MIN_BYTES_PER_CONNECTION:
            continue
        library = bool(site.get("library"))
        approximate = not reduced.get("python_allocators") and float(site.get("arena_share") or 0.0) > 0.5
        entry: dict[str, Any] = {
            "location": site["location"],
            "function": site["function"],
            "bytes_per_connection": round(float(slope), 1),
            "ci_low": round(float(low), 1),
            "ci_high": round(float(high), 1),
            "live_bytes_end": int(live[-1]),
            "share": round(float(slope / heap_slope), 3) if heap_slope and heap_slope > 0 else None,
            "over_budget": bool(low > budget),
            "stack": list(site.get("stack", [])),
            "library": library,
            "approximate": approximate,
            "thin": thin,
            "meaning": site_meaning(site["location"], site["function"], library=library, approximate=approximate),
        }
        counts = site.get("count")
        if counts is not None and len(counts) == len(points):
            c = np.asarray(counts, dtype=float)[window]
            entry["instances_per_connection"] = round(float(stats.theilslopes(c, x)[0]), 3) if np.ptp(c) else 0.0
        found.append(entry)
    found.sort(key=lambda s: s["bytes_per_connection"], reverse=True)
    found = found[:limit]
    shares = [s["share"] for s in found if s["share"] is not None]
    exact = bool(reduced.get("python_allocators"))
    unexplained = bool(shares) and sum(shares) < 0.5
    arenas_elsewhere = any(s["approximate"] for s in found)
    for site in found:
        # Without python-allocator tracing, small objects sit in pymalloc arenas charged to whichever
        # allocation opened them: when the sites do not add up to the heap's growth, or arenas were
        # charged to other sites and this one keeps less than a small object costs, it may read low.
        if (
            not exact
            and not site["approximate"]
            and (unexplained or (arenas_elsewhere and site["bytes_per_connection"] < SMALL_OBJECT_BYTES))
        ):
            site["approximate"] = True
            site["meaning"] = site_meaning(
                site["location"], site["function"], library=site["library"], approximate=False, unexplained=True
            )
    return found


def _package(location: str) -> str:
    """The library a file belongs to: the folder under site-packages, or the standard library module."""
    parts = location.replace("\\", "/").split("/")
    if "site-packages" in parts:
        rest = parts[parts.index("site-packages") + 1 :]
        return rest[0] if len(rest) > 1 else rest[0].split(".")[0]
    for marker in ("lib", "Lib"):
        if marker in parts:
            rest = parts[len(parts) - 1 - parts[::-1].index(marker) + 1 :]
            if len(rest) > 1 and rest[0].startswith("python"):
                return rest[1].split(".")[0] if len(rest) > 2 else rest[1].split(":")[0].removesuffix(".py")
    return parts[-1].split(":")[0]


def site_meaning(location: str, function: str, *, library: bool, approximate: bool, unexplained: bool = False) -> str:
    """The sentence the report and the terminal give a site: what its growth means for the reader.

    ``approximate``: most of the site's bytes are pymalloc arenas; ``unexplained``: the site may
    read low (the sites explain under half of the heap's growth, or it keeps less than a small object).
    """
    if library:
        package = _package(location)
        text = (
            f"{package} allocates these ({function}) for every connection and they are never freed: "
            "something in your code keeps the connections (see what keeps it)"
        )
    else:
        text = f"{function}() allocates these for every connection and they are still held at the end"
    if approximate:
        text += (
            "; this site's figure is approximate because most of its bytes are pymalloc arenas, charged to "
            "whichever allocation opened them (target.memray_python_allocators = true counts each object)"
        )
    elif unexplained:
        text += (
            "; this site's figure is approximate because, without python-allocator tracing, small objects sit "
            "in pymalloc arenas charged to other allocations, so it may read low "
            "(target.memray_python_allocators = true counts each object)"
        )
    return text


def coverage_note(sites: Sequence[Mapping[str, Any]], *, python_allocators: bool) -> str | None:
    """A note when the named sites explain less than half of the heap's growth per connection."""
    shares = [float(s["share"]) for s in sites if s.get("share") is not None]
    if not shares or sum(shares) >= 0.5:
        return None
    explained = f"the allocation sites named explain {100 * sum(shares):.0f}% of the heap's growth per connection"
    if python_allocators:
        return f"{explained}; the rest is spread over sites too small to list"
    return (
        f"{explained}: the rest is small objects carved from pymalloc arenas, which memray charges to whichever "
        "allocation opened the arena; rerun with target.memray_python_allocators = true to split it by line"
    )


def _heap_slope(reduced: Mapping[str, Any], walls: np.ndarray, closed: np.ndarray, start: float) -> float | None:
    heap = np.asarray(reduced.get("heap") or [], dtype=float)
    if heap.ndim != 2 or len(heap) < MIN_POINTS:
        return None
    x = np.interp(heap[:, 0], walls, closed)
    keep = (heap[:, 0] >= walls[0]) & (heap[:, 0] <= walls[-1]) & (x >= start)
    if keep.sum() < MIN_POINTS or np.ptp(x[keep]) == 0:
        return None
    return float(stats.theilslopes(heap[keep, 1], x[keep])[0])


def memray_summary(reduced: Mapping[str, Any] | None, notes: Sequence[str] = ()) -> dict[str, Any]:
    """The ``memray`` part of summary.json: was it used, how complete, where its files are."""
    if reduced is None:
        return {"enabled": False, "notes": list(notes)}
    return {
        "enabled": True,
        "status": reduced.get("status"),
        "capture": "memray/capture.bin",
        "flamegraph": reduced.get("flamegraph"),
        "capture_bytes": reduced.get("capture_bytes"),
        "checkpoints": reduced.get("checkpoints"),
        "python_allocators": reduced.get("python_allocators", False),
        "analysis_seconds": reduced.get("analysis_seconds"),
        "notes": list(reduced.get("notes", [])) + list(notes),
    }
