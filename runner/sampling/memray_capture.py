"""Read a run's memray capture once and keep what the verdict needs: ``memray/reduced.json``.

A capture holds every allocation of the run (about 1 MB per 1,000 connections) and
takes seconds to minutes to read, so it is read once, at the end of ``soak run`` (or by
the first ``soak analyze`` of a folder without the cache), and reduced to:

- ``heap``: the live heap at each GC checkpoint (``[wall, bytes]``), joined to the samples
  as the ``heap`` metric by :func:`runner.analysis.sites.join_heap`;
- ``sites``: live bytes per allocation site at (at most :data:`MAX_POINTS`) checkpoints,
  aggregated by the (file, line) of the innermost frame in user code, for the sites that
  grew most or hold most at the end (:data:`KEEP_SITES`);
- ``status``: whether the capture was finalised, capped, or cut short by a kill.

The reduction is cached with the capture's size and mtime; a later ``soak analyze``
reuses it unless the capture changed. ``memray flamegraph --temporal`` is rendered next
to it (``memray/flamegraph.html``, assets inlined with ``--no-web``).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..results import write_json

__all__ = [
    "MemrayFiles",
    "REDUCED_FORMAT",
    "MAX_POINTS",
    "KEEP_SITES",
    "FLAMEGRAPH_MAX_BYTES",
    "ensure_reduced",
    "reduce_capture",
    "read_checkpoints",
    "read_keepers",
    "read_heap",
    "render_flamegraph",
    "user_frame",
]

#: Version of ``reduced.json``. 1 - first version. 2 - ``keepers`` (memray/keepers.jsonl as
#: series), ``full_checkpoints``, ``gc_ms_max``, per-site ``library`` (no user frame).
REDUCED_FORMAT = 2
#: Most checkpoints kept per site (evenly thinned); the heap series keeps every one.
MAX_POINTS = 400
#: Sites kept in the cache: the largest growers and the largest holders at the end.
KEEP_SITES = 60
#: Largest capture rendered as a flame graph at the end of a run: memray's renderer took
#: 1.6 s for a 1 MB capture on an idle machine and 24-59 s for 1.7-2.2 MB on a busy one
#: (bench/memray_bench.py), several times the reduction; above this a note gives the command.
FLAMEGRAPH_MAX_BYTES = 32_000_000
#: Size of one pymalloc arena (CPython 3.10+): small objects are carved from arenas, and without
#: python-allocator tracing memray charges a whole arena to the allocation that opened it.
PYMALLOC_ARENA_BYTES = 1 << 20
#: Most memory snapshots the reader builds (memray's own default is 10,000).
MAX_MEMORY_RECORDS = 20_000

_NO_STACK = ("(no Python stack)", "?", 0)


@dataclass(frozen=True)
class MemrayFiles:
    """Where memray's files live inside a run folder (all under ``memray/``)."""

    folder: Path

    @property
    def root(self) -> Path:
        return self.folder / "memray"

    @property
    def capture(self) -> Path:
        return self.root / "capture.bin"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints.jsonl"

    @property
    def control(self) -> Path:
        return self.root / "control"

    @property
    def keepers(self) -> Path:
        return self.root / "keepers.jsonl"

    @property
    def reduced(self) -> Path:
        return self.root / "reduced.json"

    @property
    def flamegraph(self) -> Path:
        return self.root / "flamegraph.html"

    def relative(self, path: Path) -> str:
        """``path`` relative to the run folder, as summary.json and the report link it."""
        return path.relative_to(self.folder).as_posix()


def read_checkpoints(path: Path) -> dict[str, Any]:
    """The launcher's log: checkpoint wall times and start/capped/end events (torn lines skipped)."""
    walls: list[float] = []
    events: dict[str, dict[str, Any]] = {}
    gc_ms: list[float] = []
    full = 0
    if path.exists():
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if not isinstance(entry, dict) or "wall" not in entry:
                    continue
                if "event" in entry:
                    events.setdefault(str(entry["event"]), entry)
                else:
                    walls.append(float(entry["wall"]))
                    if "gc_ms" in entry:
                        gc_ms.append(float(entry["gc_ms"]))
                    full += bool(entry.get("full", True))
    return {"walls": walls, "events": events, "gc_ms": gc_ms, "full": full}


def read_keepers(path: Path) -> dict[str, Any] | None:
    """``memray/keepers.jsonl`` as series aligned on its checkpoints (None when there is none).

    ``walls``/``full``: each checkpoint; ``containers``/``tasks``/``threads``: per name, a
    length (or count) per checkpoint, None where it was not seen; ``census``: per type (or
    function), a count at each full checkpoint (``census_walls``); ``chain``: the in-target
    back-reference path, if one was found; ``walk_ms_max``, ``truncated`` (walks cut short).
    """
    if not path.exists():
        return None
    entries: list[dict[str, Any]] = []
    chain: dict[str, Any] | None = None
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(entry, dict):
                continue
            if entry.get("event") == "chain":
                chain = entry.get("chain") or ({"error": entry["error"]} if entry.get("error") else None)
            elif "wall" in entry and "containers" in entry:
                entries.append(entry)
    n = len(entries)
    containers: dict[str, dict[str, Any]] = {}
    tasks: dict[str, dict[str, Any]] = {}
    threads: dict[str, list[Any]] = {}
    census_walls: list[float] = []
    census: dict[str, list[Any]] = {}
    for i, entry in enumerate(entries):
        for name, (kind, length, file) in (entry.get("containers") or {}).items():
            series = containers.setdefault(name, {"type": kind, "file": file, "lengths": [None] * n})
            series["lengths"][i] = length
        for label, (count, waiting) in (entry.get("tasks") or {}).items():
            series = tasks.setdefault(label, {"waiting_at": waiting, "counts": [0] * n})
            series["counts"][i] = count
            series["waiting_at"] = series["waiting_at"] or waiting
        for label, count in (entry.get("threads") or {}).items():
            threads.setdefault(label, [0] * n)[i] = count
        if entry.get("census"):
            census_walls.append(float(entry["wall"]))
    for j, entry in enumerate(e for e in entries if e.get("census")):
        for name, count in entry["census"].items():
            census.setdefault(name, [None] * len(census_walls))[j] = count
    return {
        "walls": [float(e["wall"]) for e in entries],
        "full": [bool(e.get("full")) for e in entries],
        "containers": containers,
        "tasks": tasks,
        "threads": threads,
        "census_walls": census_walls,
        "census": census,
        "chain": chain,
        "walk_ms_max": max((float(e.get("walk_ms") or 0) for e in entries), default=None),
        "truncated": sum(1 for e in entries if e.get("truncated")),
    }


def _library_prefixes() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    prefixes = {os.path.realpath(paths[key]) for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    prefixes.add(os.path.dirname(os.path.abspath(__file__)))  # the launcher itself
    return tuple(sorted(p + os.sep for p in prefixes))


@functools.lru_cache(maxsize=8192)
def _in_library(file: str, library: tuple[str, ...]) -> bool:
    return os.path.realpath(file).startswith(library)


def user_frame(
    stack: Sequence[tuple[str, str, int]], library: tuple[str, ...]
) -> tuple[tuple[str, str, int], list[tuple[str, str, int]]]:
    """The innermost frame in user code, and the user frames of the stack (innermost first).

    ``stack`` is memray's ``(function, file, line)`` list, innermost first. Library
    frames (standard library, site-packages, frozen importlib, the launcher) are skipped,
    pseudo-files such as ``<string>`` (code run with ``-c``) are the user's;
    when there is no user frame at all, the innermost real frame stands in, so an
    allocation made wholly inside a library is still named.
    """
    user = []
    for function, file, line in stack:
        if not file or file.startswith("<frozen"):
            continue
        if not file.startswith("<") and _in_library(file, library):  # "<string>": code run with -c
            continue
        user.append((function, file, line))
    if user:
        return user[0], user
    for function, file, line in stack:
        if file and not file.startswith("<"):
            return (function, file, line), []
    if stack:
        return stack[0], []
    return _NO_STACK, []


def _display_path(file: str) -> str:
    try:
        rel = os.path.relpath(file)
    except ValueError:
        return file
    return file if rel.startswith("..") else rel


def _checkpoint_indices(snapshot_ms: np.ndarray, walls: Sequence[float]) -> np.ndarray:
    """For each checkpoint, the first snapshot taken at or after it (dropped past the end)."""
    if not len(walls):
        return np.arange(len(snapshot_ms))
    wall_ms = np.asarray(walls, dtype=float) * 1000.0
    index = np.searchsorted(snapshot_ms, wall_ms, side="left")
    index = index[index < len(snapshot_ms)]
    return np.unique(index)


def _thin(indices: np.ndarray, most: int) -> np.ndarray:
    if len(indices) <= most:
        return indices
    pick = np.unique(np.linspace(0, len(indices) - 1, most).round().astype(int))
    return indices[pick]


def _heap_at_checkpoints(snapshots: Sequence[Any], walls: Sequence[float]) -> tuple[np.ndarray, list[list[float]]]:
    """Snapshot indices just after each checkpoint, and the heap there as ``[wall, bytes]``."""
    snapshot_ms = np.array([s.time for s in snapshots], dtype=float)
    at = _checkpoint_indices(snapshot_ms, walls)
    return at, [[round(snapshots[i].time / 1000.0, 3), int(snapshots[i].heap)] for i in at]


def read_heap(capture: Path, checkpoints: Path) -> list[list[float]]:
    """The heap at each GC checkpoint so far, ``[wall, bytes]``, from a capture still being written.

    Only memray's memory snapshots are read (not the allocation records), so a look during
    the run costs milliseconds per MB of capture; the tail not yet flushed is simply not seen.
    """
    import memray

    walls = read_checkpoints(checkpoints)["walls"]
    if not capture.exists() or not walls:
        return []
    reader = memray.FileReader(str(capture), max_memory_records=MAX_MEMORY_RECORDS)
    try:
        snapshots = list(reader.get_memory_snapshots())
    finally:
        reader.close()
    return _heap_at_checkpoints(snapshots, walls)[1] if snapshots else []


def reduce_capture(capture: Path, checkpoints: Path) -> dict[str, Any]:
    """Read ``capture`` (finalised or not) and return the reduced record (see module doc)."""
    import memray

    began = time.perf_counter()
    log = read_checkpoints(checkpoints)
    events = log["events"]
    notes: list[str] = []
    reader = memray.FileReader(str(capture), max_memory_records=MAX_MEMORY_RECORDS)
    try:
        snapshots = list(reader.get_memory_snapshots())
        at, heap = _heap_at_checkpoints(snapshots, log["walls"])
        if not log["walls"]:
            notes.append("memray: no GC checkpoints were logged; heap figures include objects awaiting the cyclic GC")
        points = _thin(at, MAX_POINTS)
        library = _library_prefixes()
        # live bytes per site at each kept point, through a difference array in point space:
        # an interval is live at snapshot k when allocated_before <= k < deallocated_before.
        diffs: dict[tuple[str, int], np.ndarray] = {}
        meta: dict[tuple[str, int], dict[str, Any]] = {}
        records = 0
        for record in reader.get_temporal_allocation_records(merge_threads=True):
            records += 1
            intervals = record.intervals
            if not intervals or not len(points):
                continue
            starts = np.fromiter(
                (iv.allocated_before_snapshot for iv in intervals), dtype=np.int64, count=len(intervals)
            )
            ends = np.fromiter(
                (
                    len(snapshots) + 1 if iv.deallocated_before_snapshot is None else iv.deallocated_before_snapshot
                    for iv in intervals
                ),
                dtype=np.int64,
                count=len(intervals),
            )
            sizes = np.fromiter((iv.n_bytes for iv in intervals), dtype=np.float64, count=len(intervals))
            first = np.searchsorted(points, starts, side="left")  # first point with k >= allocated_before
            stop = np.searchsorted(points, ends, side="left")  # first point with k >= deallocated_before
            live = stop > first
            if not live.any():
                continue
            (function, file, line), user = user_frame(record.stack_trace(), library)
            key = (file, int(line))
            diff = diffs.get(key)
            if diff is None:
                diff = diffs[key] = np.zeros(len(points) + 1)
                meta[key] = {
                    "function": function,
                    "weight": 0.0,
                    "stack": user[:4],
                    "live": 0.0,
                    "arena": 0.0,
                    "library": not user,
                }
            np.add.at(diff, first[live], sizes[live])
            np.add.at(diff, stop[live], -sizes[live])
            weight = float(sizes[live].sum())
            meta[key]["live"] += weight
            meta[key]["arena"] += float(sizes[live][sizes[live] == PYMALLOC_ARENA_BYTES].sum())
            if weight > meta[key]["weight"]:
                meta[key].update(function=function, weight=weight, stack=user[:4])
    finally:
        reader.close()
    point_walls = [round(snapshots[i].time / 1000.0, 3) for i in points]
    series = {key: np.cumsum(diff)[:-1] for key, diff in diffs.items()}
    keep = _select_sites(series, len(points))
    sites = []
    for key in keep:
        file, line = key
        info = meta[key]
        sites.append(
            {
                "file": file,
                "location": f"{_display_path(file)}:{line}" if line else _display_path(file),
                "function": info["function"],
                "stack": [f"{_display_path(f)}:{n} {fn}" for fn, f, n in info["stack"]],
                "library": info["library"],
                "arena_share": round(info["arena"] / info["live"], 3) if info["live"] else 0.0,
                "live": [int(v) for v in series[key]],
            }
        )
    status = "complete" if "end" in events else "incomplete"
    if "capped" in events:
        status = "capped"
        capped = events["capped"]
        notes.append(
            f"memray: the capture reached its size cap ({capped.get('bytes', 0) / 1e6:.0f} MB) and tracking stopped; "
            "heap and sites cover the run up to that moment"
        )
    elif status == "incomplete":
        notes.append(
            "memray: capture incomplete: the target was killed before tracking ended; it was read up to its last record"
        )
    return {
        "format": REDUCED_FORMAT,
        "status": status,
        "notes": notes,
        "python_allocators": bool(events.get("start", {}).get("python_allocators", False)),
        "checkpoints": len(log["walls"]),
        "gc_ms_median": float(np.median(log["gc_ms"])) if log["gc_ms"] else None,
        "snapshots": len(snapshots),
        "records": records,
        "heap": heap,
        "points": point_walls,
        "sites": sites,
        "gc_ms_max": float(max(log["gc_ms"])) if log["gc_ms"] else None,
        "full_checkpoints": log["full"],
        "keepers": read_keepers(checkpoints.parent / "keepers.jsonl"),
        "capture_bytes": capture.stat().st_size,
        "capture_mtime": capture.stat().st_mtime,
        "analysis_seconds": round(time.perf_counter() - began, 3),
    }


def _select_sites(series: dict[tuple[str, int], np.ndarray], n_points: int) -> list[tuple[str, int]]:
    """The sites worth keeping: biggest growth over the later three quarters, biggest at the end."""
    if not series or n_points == 0:
        return []
    early = n_points // 4
    growth = sorted(series, key=lambda k: float(series[k][-1] - series[k][early]), reverse=True)
    holders = sorted(series, key=lambda k: float(series[k][-1]), reverse=True)
    chosen = list(dict.fromkeys(growth[:KEEP_SITES] + holders[: KEEP_SITES // 4]))
    return chosen


def render_flamegraph(capture: Path, output: Path, *, timeout: float = 600.0) -> str | None:
    """``memray flamegraph --temporal --no-web``; returns None on success, else why it failed.

    Temporal: the reviewer picks the steady phase on the heap timeline and sees what was
    allocated in it and never freed. ``--confidential-files all`` keeps source lines out
    of an artifact that CI may publish; names, files and line numbers stay.
    """
    argv = [
        sys.executable,
        "-m",
        "memray",
        "flamegraph",
        "--temporal",
        "--no-web",
        "--force",
        "--confidential-files",
        "all",
        "-o",
        str(output),
        str(capture),
    ]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        output.unlink(missing_ok=True)
        return f"memray flamegraph took longer than {timeout:g}s"
    if done.returncode != 0 or not output.exists():
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"memray flamegraph failed: {last[0]}"
    return None


def _cache_valid(cached: dict[str, Any], capture: Path) -> bool:
    try:
        stat = capture.stat()
    except OSError:
        return False
    return (
        cached.get("format") == REDUCED_FORMAT
        and cached.get("capture_bytes") == stat.st_size
        and cached.get("capture_mtime") == stat.st_mtime
    )


def ensure_reduced(folder: Path, *, flamegraph: bool = True) -> dict[str, Any] | None:
    """The folder's reduced memray record, computed (and cached) when missing or stale.

    Returns None when the run has no capture. Never raises for a damaged capture: the
    record then says so in ``status``/``notes`` (a run's verdict must not die of it).
    """
    files = MemrayFiles(Path(folder))
    if not files.capture.exists():
        return None
    if files.reduced.exists():
        try:
            cached = json.loads(files.reduced.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            cached = {}
        if isinstance(cached, dict) and _cache_valid(cached, files.capture):
            return cached
    try:
        reduced = reduce_capture(files.capture, files.checkpoints)
    except Exception as exc:  # noqa: BLE001 - memray raises plain IOError/RuntimeError on damaged files
        reduced = {
            "format": REDUCED_FORMAT,
            "status": "unreadable",
            "notes": [f"memray: the capture could not be read ({type(exc).__name__}: {exc}); no heap series or sites"],
            "heap": [],
            "points": [],
            "sites": [],
            "capture_bytes": files.capture.stat().st_size,
            "capture_mtime": files.capture.stat().st_mtime,
        }
    if flamegraph and reduced["status"] != "unreadable" and reduced["capture_bytes"] > FLAMEGRAPH_MAX_BYTES:
        reduced["notes"].append(
            f"memray: no flame graph: the capture is {reduced['capture_bytes'] / 1e6:.0f} MB; "
            f"render it yourself with `memray flamegraph --temporal --no-web {files.capture}`"
        )
    elif flamegraph and reduced["status"] != "unreadable":
        began = time.perf_counter()
        failure = render_flamegraph(files.capture, files.flamegraph)
        reduced["flamegraph_seconds"] = round(time.perf_counter() - began, 3)
        if failure:
            reduced["notes"].append(f"memray: {failure}")
    reduced["flamegraph"] = files.relative(files.flamegraph) if files.flamegraph.exists() else None
    write_json(files.reduced, reduced)
    return reduced


def _main(argv: Sequence[str]) -> int:
    """``python -m runner.sampling.memray_capture heap CAPTURE CHECKPOINTS``: the heap so far as JSON.

    Run by the run-until-decided looks in a child process, so reading a large capture
    never holds the runner's GIL while it drives the load.
    """
    if len(argv) != 3 or argv[0] != "heap":
        print("usage: python -m runner.sampling.memray_capture heap CAPTURE CHECKPOINTS", file=sys.stderr)
        return 2
    json.dump(read_heap(Path(argv[1]), Path(argv[2])), sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
