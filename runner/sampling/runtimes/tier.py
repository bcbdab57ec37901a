"""The runtime heap tier during a run: one probe, its paced checkpoints, its files.

The run owns the clock and the phases; this owns what a probe needs from the run
(it stays runtime-agnostic: any :class:`~runner.sampling.runtimes.RuntimeProbe` fits):

- :meth:`RuntimeTier.open` after the target is ready (or attached): a note says why not;
- :meth:`RuntimeTier.start` before the load, then :meth:`RuntimeTier.loop` in a greenlet:
  a checkpoint, then a pause long enough that the forced collections take at most
  :data:`GC_SHARE` of wall time (``next interval = max(MIN_INTERVAL, gc_seconds / GC_SHARE)``),
  but no longer than a steady phase's :data:`MIN_STEADY_CHECKPOINTS`-th part, so a large
  (leaking) heap still gets enough points for a verdict; a note says when that cost more;
- :meth:`RuntimeTier.steady_started` and :meth:`RuntimeTier.finish` at the steady phase's ends;
- :meth:`RuntimeTier.close` in the run's ``finally`` and on a second Ctrl-C; never raises.

Files in ``RUN_DIR/runtime/``: ``checkpoints.jsonl`` (one line per checkpoint: ``wall``,
``phase``, ``heap``, ``native``, ``gc_seconds``, ``sites``: ``[location, function, live
bytes, count]``, a site's stack written the first time it appears) and ``finish.json``
(the probe's extras: a snapshot diff, notes). Nothing with the inspector's URL.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import gevent
import gevent.lock

from ...results import write_json
from . import Checkpoint, ProbeUnavailable, RuntimeProbe, open_probe

__all__ = ["RuntimeTier", "GC_SHARE", "MIN_INTERVAL", "next_interval", "CHECKPOINTS", "FINISH"]

#: Longest share of wall time the checkpoints' forced collections may take.
GC_SHARE = 0.03
#: Shortest pause between two checkpoints, seconds.
MIN_INTERVAL = 1.5
#: Fewest checkpoints a steady phase gets (the heap verdict needs 8 after its warm-up cut).
MIN_STEADY_CHECKPOINTS = 20
#: Files in RUN_DIR/runtime/.
CHECKPOINTS = "checkpoints.jsonl"
FINISH = "finish.json"
#: Longest wait for a checkpoint under way before a close goes ahead on its own.
CLOSE_WAIT = 15.0


def next_interval(
    gc_seconds: float, *, share: float = GC_SHARE, minimum: float = MIN_INTERVAL, maximum: float | None = None
) -> float:
    """Seconds until the next checkpoint, so that collections take at most ``share`` of the time
    (capped at ``maximum``, never below ``minimum``)."""
    interval = max(minimum, gc_seconds / share)
    return max(minimum, min(interval, maximum)) if maximum is not None else interval


class RuntimeTier:
    """The probe of one run (None until opened) and its checkpoint files."""

    def __init__(self, folder: Path, note: Callable[[str], None]) -> None:
        self.root = folder / "runtime"
        self._note = note
        self.probe: RuntimeProbe | None = None
        self._lock = gevent.lock.Semaphore()
        self._seen: set[tuple[str, str]] = set()
        self.checkpoints = 0
        self.gc_seconds = 0.0
        self.name: str | None = None  # the runtime probed, kept after close
        self.opened_at: float | None = None

    @property
    def runtime(self) -> str | None:
        return self.probe.runtime if self.probe is not None else None

    def open(self, pid: int, *, started: bool, runtime: str | None, serving_port: int | None) -> bool:
        """Open the probe of ``pid``; False (with a note) when it cannot be probed."""
        try:
            self.probe = open_probe(pid, started=started, runtime=runtime, serving_port=serving_port)
        except ProbeUnavailable as exc:
            self._note(str(exc))
            return False
        self.root.mkdir(parents=True, exist_ok=True)
        self.name = self.probe.runtime
        self.opened_at = time.monotonic()
        self._note(
            f"{self.probe.runtime} heap probe: the live heap of pid {pid} is read after a forced GC "
            f"at paced checkpoints (at most {GC_SHARE:.0%} of wall time)"
        )
        return True

    def record(self) -> dict[str, Any] | None:
        """run.json's ``runtime``: which runtime was probed, how many checkpoints, their cost."""
        if self.name is None:
            return None
        wall = time.monotonic() - self.opened_at if self.opened_at is not None else None
        share = self.gc_seconds / wall if wall else None
        if share is not None and share > 2 * GC_SHARE:
            self._note(
                f"{self.name} heap probe: the forced collections took {share:.0%} of wall time (a large or busy "
                f"heap; at least {MIN_STEADY_CHECKPOINTS} checkpoints per steady phase are kept for the verdict; "
                "a longer steady phase spaces them out)"
            )
        return {
            "runtime": self.name,
            "checkpoints": self.checkpoints,
            "gc_seconds": round(self.gc_seconds, 3),
            "gc_share": round(self.gc_seconds / wall, 4) if wall else None,
        }

    def _guarded(self, what: str, action: Callable[[RuntimeProbe], Any]) -> Any:
        """Run ``action(probe)`` under the lock; a ProbeUnavailable is a note and ends the tier."""
        if self.probe is None:
            return None
        with self._lock:
            probe = self.probe
            if probe is None:
                return None
            try:
                return action(probe)
            except ProbeUnavailable as exc:
                self._note(f"{exc} ({what}; the run goes on without the runtime heap)")
        self.close()
        return None

    def start(self) -> None:
        self._guarded("start", lambda probe: probe.start())

    def steady_started(self) -> None:
        self._guarded("steady", lambda probe: probe.steady_started())

    def loop(self, phase: Callable[[], str], *, steady_seconds: float | None = None) -> None:
        """Checkpoints until the tier closes (run in a greenlet; killed at the end of the run)."""
        maximum = steady_seconds / MIN_STEADY_CHECKPOINTS if steady_seconds else None
        while self.probe is not None:
            point: Checkpoint | None = self._guarded("checkpoint", lambda probe: probe.checkpoint())
            if point is None:
                return
            self._write(point, phase())
            gevent.sleep(next_interval(point.gc_seconds, maximum=maximum))

    def _write(self, point: Checkpoint, phase: str) -> None:
        sites = []
        for site in point.sites:
            entry: list[Any] = [site.location, site.function, site.live_bytes, site.count]
            key = (site.location, site.function)
            if key not in self._seen and site.stack:
                entry.append(list(site.stack))
                self._seen.add(key)
            sites.append(entry)
        line = {
            "wall": round(time.time(), 3),
            "phase": phase,
            "heap": point.heap,
            "native": point.native,
            "gc_seconds": round(point.gc_seconds, 4),
            "sites": sites,
        }
        with open(self.root / CHECKPOINTS, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, separators=(",", ":")) + "\n")
        self.checkpoints += 1
        self.gc_seconds += point.gc_seconds

    def finish(self) -> None:
        """The probe's end-of-steady extras, into runtime/finish.json."""
        extras = self._guarded("finish", lambda probe: probe.finish())
        if extras is not None:
            write_json(self.root / FINISH, extras)

    def close(self, *, wait: float = CLOSE_WAIT) -> None:
        """Leave nothing enabled in the server; never raises (a checkpoint under way gets ``wait`` seconds)."""
        probe = self.probe
        if probe is None:
            return
        acquired = self._lock.acquire(timeout=wait)
        try:
            if self.probe is None:
                return
            self.probe = None
            try:
                notes = probe.close()
            except Exception as exc:  # noqa: BLE001 - close must never fail the run
                notes = [f"{probe.runtime} heap probe: close failed ({type(exc).__name__})"]
            for message in notes:
                self._note(message)
        finally:
            if acquired:
                self._lock.release()
