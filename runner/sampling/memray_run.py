"""Decide whether a target runs under memray, and build the command that does it.

Used by the run when it starts the target: a Python target (its command starts
with ``{python}``) runs under :mod:`runner.sampling.memray_launch` with its capture in
``RUN_DIR/memray/``; anything else runs as given, with a one-line note saying why memray
was skipped. Nothing here starts a process.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ..profile import TargetSettings
from .memray_capture import MemrayFiles
from .memray_launch import UnsupportedCommand, launcher_argv

__all__ = [
    "MemrayPlan",
    "plan_memray",
    "request_freeze",
    "request_chain",
    "checkpoint_interval",
    "MEMRAY_STARTUP_FACTOR",
    "MEMORY_INTERVAL_MS",
    "MIN_CHECKPOINT_INTERVAL",
]

#: memray's RSS/heap snapshot period. Its default (10 ms) writes 100 records a second for
#: nothing: the heap is read only at checkpoints, and a checkpoint waits at most this long.
MEMORY_INTERVAL_MS = 50
#: memray records every allocation of the imports too: start-up takes up to ~3x longer,
#: so target.ready_timeout is stretched by this factor for a tracked target.
MEMRAY_STARTUP_FACTOR = 3
#: Shortest period of the GC checkpoints (a full collection each): bounds their cost.
MIN_CHECKPOINT_INTERVAL = 1.0


def checkpoint_interval(sampling_interval: float) -> float:
    """Seconds between GC checkpoints for a run sampled every ``sampling_interval`` seconds.

    Shared by a started target (:func:`plan_memray`) and an attached one (``--pid``).
    """
    return max(MIN_CHECKPOINT_INTERVAL, sampling_interval)


@dataclass(frozen=True)
class MemrayPlan:
    """The target command to run, and whether (or why not) memray tracks it."""

    argv: list[str]
    tracked: bool
    note: str | None = None


def plan_memray(
    target: TargetSettings, argv: list[str], folder: Path, *, sampling_interval: float, max_bytes: int | None
) -> MemrayPlan:
    """Wrap ``argv`` (already substituted) in the memray launcher when the profile wants it."""
    if target.memray is False:
        return MemrayPlan(argv, False)
    if not target.is_python:
        if target.memray:
            return MemrayPlan(
                argv,
                False,
                "memray skipped: it tracks Python targets started with {python}; this target is measured by psutil "
                "only",
            )
        return MemrayPlan(
            argv, False, "memray skipped: not a Python target started with {python} (psutil metrics only)"
        )
    if importlib.util.find_spec("memray") is None:
        return MemrayPlan(
            argv,
            False,
            "memray skipped: memray is not installed in the target's Python environment (pip install memray)",
        )
    files = MemrayFiles(folder)
    try:
        wrapped = launcher_argv(
            argv[0],
            argv[1:],
            capture=str(files.capture.resolve()),
            checkpoints=str(files.checkpoints.resolve()),
            control=str(files.control.resolve()),
            checkpoint_interval=checkpoint_interval(sampling_interval),
            memory_interval_ms=MEMORY_INTERVAL_MS,
            max_bytes=max_bytes,
            python_allocators=target.memray_python_allocators,
        )
    except UnsupportedCommand as exc:
        return MemrayPlan(argv, False, f"memray skipped: {exc} (run the server without it, or with --no-memray)")
    files.root.mkdir(parents=True, exist_ok=True)
    return MemrayPlan(wrapped, True)


def request_freeze(folder: Path) -> None:
    """Tell the launcher the target is ready: collect once and freeze the start-up heap.

    Written once the target accepted its first handshake and before any load, so the
    objects frozen are the server's start-up state, not connections (see memray_launch).
    """
    files = MemrayFiles(folder)
    if files.root.is_dir():
        files.control.write_text("freeze\n", encoding="utf-8")


def request_chain(folder: Path) -> None:
    """Tell the launcher the steady churn is over: trace what keeps the type that grew most.

    Written when the drain starts, while the target still holds what it leaked (a script's
    globals and its event loop's tasks are gone once it exits); see keepers_probe.
    """
    files = MemrayFiles(folder)
    if files.control.is_file():
        with open(files.control, "a", encoding="utf-8") as fh:
            fh.write("chain\n")
