"""A runtime heap probe's checkpoints as analysis input (pure functions over recorded data).

The run writes ``runtime/checkpoints.jsonl`` (see :mod:`runner.sampling.runtimes.tier`):
the live heap after a forced GC, the native memory the runtime reports and live bytes per
site at each checkpoint. :func:`reduce_checkpoints` turns those lines into the same shape
as memray's reduced record (``points``, ``heap``, ``sites`` with a ``live`` series each),
so one site-slope computation (:func:`runner.analysis.sites.leak_sites`) serves
memray and every runtime; :func:`runtime_sites` tags the result with the runtime, and
:func:`snapshot_growth` turns a heap-snapshot diff into per-connection figures.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .jvm_heap import jvm_sites
from .sites import MAX_SITES, leak_sites

__all__ = ["reduce_checkpoints", "runtime_sites", "runtime_summary", "snapshot_growth", "INLINING_NOTE"]

#: Classes whose slopes the JVM site attribution sees (a server class may grow less than JDK ones).
JVM_CANDIDATES = 200
#: What a reader of JVM sites must know (the class histogram counts shallow bytes).
JVM_NOTE = (
    "jvm sites: classes from GC.class_histogram (shallow bytes); a server class's bytes per connection adds "
    "what it holds (JFR old-object samples, else a share of the JDK classes that grew with it): an estimate"
)
#: What a reader of Node sites must know (V8 attributes by function, and inlines).
INLINING_NOTE = (
    "node sites: the line is where the function starts (V8 samples by function, not by line), and V8 may "
    "inline a small function into its optimised caller, crediting the caller with its bytes"
)


def reduce_checkpoints(lines: Iterable[Mapping[str, Any]], runtime: str | None = None) -> dict[str, Any]:
    """Checkpoint lines -> ``{runtime, points, heap, native, sites, gc_seconds, phases}``.

    ``heap``/``native`` are ``[wall, bytes]`` pairs (for :func:`~runner.analysis.sites.join_heap`);
    each site has ``live`` (bytes, 0 where a checkpoint did not list it) and, where the
    runtime counts instances, ``count``, aligned with ``points`` (the checkpoints' wall times).
    """
    rows = sorted(
        (line for line in lines if line.get("wall") is not None and line.get("heap") is not None),
        key=lambda line: float(line["wall"]),
    )
    points = [float(line["wall"]) for line in rows]
    index: dict[tuple[str, str], dict[str, Any]] = {}
    for k, line in enumerate(rows):
        for entry in line.get("sites") or []:
            location, function, live = entry[0], entry[1], entry[2]
            count = entry[3] if len(entry) > 3 else None
            site = index.get((location, function))
            if site is None:
                site = index[(location, function)] = {
                    "location": location,
                    "function": function,
                    "stack": [],
                    "live": [0] * len(rows),
                    "count": None,
                }
            site["live"][k] = int(live)
            if count is not None:
                if site["count"] is None:
                    site["count"] = [0] * len(rows)
                site["count"][k] = int(count)
            if len(entry) > 4 and not site["stack"]:
                site["stack"] = list(entry[4])
    sites = []
    for site in index.values():
        if site["count"] is None:
            del site["count"]
        sites.append(site)
    return {
        "runtime": runtime,
        "points": points,
        "heap": [[float(line["wall"]), int(line["heap"])] for line in rows],
        "native": [[float(line["wall"]), int(line["native"])] for line in rows if line.get("native") is not None],
        "gc_seconds": [float(line.get("gc_seconds") or 0.0) for line in rows],
        "phases": [line.get("phase") for line in rows],
        "sites": sites,
    }


def runtime_sites(
    reduced: Mapping[str, Any],
    samples: Sequence[Mapping[str, Any]],
    *,
    budget: float,
    finish: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The sites that grew per connection (memray's slope), each tagged with its ``runtime``.

    JVM sites are classes with shallow bytes; :func:`~runner.analysis.jvm_heap.jvm_sites`
    credits the server's classes with what they hold and adds JFR's line and root
    (``finish``: the probe's ``finish.json``), before the list is cut to its length.
    """
    runtime = reduced.get("runtime")
    if runtime == "jvm":
        found = jvm_sites(
            leak_sites(reduced, samples, budget=budget, limit=JVM_CANDIDATES), (finish or {}).get("jfr"), budget=budget
        )[:MAX_SITES]
    else:
        found = leak_sites(reduced, samples, budget=budget)
    return [dict(site, runtime=runtime) for site in found]


def _closed_at(samples: Sequence[Mapping[str, Any]], wall: float | None) -> float | None:
    rows = sorted((float(s["wall"]), float(s.get("closed") or 0)) for s in samples if s.get("wall") is not None)
    if wall is None or not rows:
        return None
    walls = np.array([r[0] for r in rows])
    closed = np.array([r[1] for r in rows])
    return float(np.interp(wall, walls, closed))


def snapshot_growth(diff: Mapping[str, Any] | None, samples: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """A heap-snapshot diff with per-connection figures (connections closed between the two snapshots)."""
    if not diff:
        return None
    start, end = _closed_at(samples, diff.get("start_wall")), _closed_at(samples, diff.get("end_wall"))
    connections = (end - start) if start is not None and end is not None else None
    groups = []
    for group in diff.get("groups") or []:
        row = dict(group)
        if connections and connections > 0:
            row["bytes_per_connection"] = round(group["bytes_delta"] / connections, 1)
            row["count_per_connection"] = round(group["count_delta"] / connections, 3)
        groups.append(row)
    return {
        "why": diff.get("why"),
        "connections": int(connections) if connections is not None else None,
        "groups": groups,
    }


def runtime_summary(
    reduced: Mapping[str, Any] | None,
    finish: Mapping[str, Any] | None,
    run_record: Mapping[str, Any] | None,
    samples: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """summary.json's ``runtime``: which runtime, how many checkpoints, their GC share, the snapshot diff, notes."""
    if not reduced:
        return {"enabled": False}
    notes = list((finish or {}).get("notes") or [])
    if reduced.get("runtime") == "node":
        notes.append(INLINING_NOTE)
    if reduced.get("runtime") == "jvm":
        notes.append(JVM_NOTE)
    return {
        "enabled": True,
        "runtime": reduced.get("runtime"),
        "checkpoints": len(reduced.get("points") or []),
        "gc_seconds": round(float(sum(reduced.get("gc_seconds") or [])), 3),
        "gc_share": (run_record or {}).get("gc_share"),
        "snapshot_diff": snapshot_growth((finish or {}).get("snapshot_diff"), samples),
        "notes": notes,
    }
