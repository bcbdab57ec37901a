"""The run's side of "run until decided": the steady phase re-judged at its planned looks.

At each look of :func:`runner.analysis.sequential.plan_looks` the samples so far go to
:func:`runner.analysis.sequential.decide` (pure, the same analysis as ``soak analyze``);
the run ends the steady phase as soon as a look is decided. What touches files
and processes is here: the samples are read back from ``samples.jsonl`` as written, the
heap of a memray-tracked target from its capture in a child process (so a large capture
never holds the runner's GIL), and the analysis runs in gevent's thread pool so the load
keeps going while it computes. A look that fails is a one-line note; the run goes on.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, Callable

import gevent

from .analysis.model import Verdict
from .analysis.sequential import Decision, LookPlan, decide, plan_looks
from .analysis.sites import join_heap, tree_processes
from .profile import Profile
from .progress import Progress
from .results import RunFolder, join_runtime, read_samples
from .sampling.memray_capture import MemrayFiles

__all__ = ["Looks", "HEAP_READ_TIMEOUT", "MAX_LIVE_CAPTURE_BYTES"]

#: Longest wait for the child process that reads the heap so far out of a memray capture.
HEAP_READ_TIMEOUT = 300.0
#: Largest capture a look reads the heap from (memray writes ~1 MB per 1,000 connections and a
#: read costs ~0.1-0.3 s per MB of one core): beyond it the looks go on with psutil's tiers and
#: no early PASS; the final verdict still reads the whole capture.
MAX_LIVE_CAPTURE_BYTES = 256_000_000


class Looks:
    """The looks of one steady phase; :meth:`loop` runs as a greenlet, :meth:`is_decided` ends the wait."""

    def __init__(
        self,
        profile: Profile,
        folder: RunFolder,
        *,
        clock: Callable[[], float],
        progress: Progress,
        runtime: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.profile = profile
        #: The garbage-collected runtime whose probe reads the heap (runner.sampling.runtimes), if any.
        self.runtime = runtime
        self.folder = folder
        #: Seconds since the steady phase began.
        self.clock = clock
        self.progress = progress
        load = profile.load
        self.plan: LookPlan = plan_looks(
            max_duration=load.duration, alpha=profile.analysis.alpha, min_duration=load.min_duration
        )
        self.stop_on_leak = bool(load.stop_on_leak)
        self.stop_on_pass = load.until_decided
        self.decisions: list[tuple[float, Decision]] = []
        self.decided: Decision | None = None
        self.notes: list[str] = []
        self._heap_note = False

    def is_decided(self) -> bool:
        return self.decided is not None

    def loop(self) -> None:
        """Take every planned look in turn until one is decided."""
        for look, at in enumerate(self.plan.times):
            delay = at - self.clock()
            if delay > 0:
                gevent.sleep(delay)
            samples, heap_known = self._samples()
            try:
                decision = gevent.get_hub().threadpool.apply(
                    decide,
                    (samples, self.profile.analysis, self.plan, look),
                    {
                        "stop_on_leak": self.stop_on_leak,
                        "stop_on_pass": self.stop_on_pass and heap_known,
                        "runtime": self.runtime(),
                    },
                )
            except Exception as exc:  # noqa: BLE001 - a failed look must not end the run
                self._note(f"look {look + 1} of {self.plan.count} failed ({type(exc).__name__}: {exc}); run goes on")
                continue
            self.decisions.append((round(self.clock(), 3), decision))
            self.progress.look(decision, self.plan.count)
            if decision.decided:
                self.decided = decision
                self.progress.note(
                    f"decided: {decision.verdict.value.upper()} after {decision.cycles:,} connections "
                    f"(look {look + 1} of {self.plan.count}, alpha {decision.alpha:.2g}); stopping the steady phase"
                )
                return

    def _samples(self) -> tuple[list[dict[str, Any]], bool]:
        """The samples so far, with the heap joined when memray tracks the target; and whether the heap is known."""
        samples = list(read_samples(self.folder.samples)) if self.folder.samples.exists() else []
        files = MemrayFiles(self.folder.path)
        if not files.capture.exists():
            return join_runtime(self.folder, samples, self.runtime())[0], True
        if tree_processes(samples) > 1:
            return samples, True  # the final analysis leaves the heap out too (memray follows one process)
        if files.capture.stat().st_size > MAX_LIVE_CAPTURE_BYTES:
            if not self._heap_note:
                self._heap_note = True
                self._note(
                    f"memray's capture passed {MAX_LIVE_CAPTURE_BYTES / 1e6:.0f} MB: later looks judge "
                    "psutil's tiers only and cannot stop on PASS (the final verdict reads the whole capture)"
                )
            return samples, False
        argv = [
            sys.executable,
            "-m",
            "runner.sampling.memray_capture",
            "heap",
            str(files.capture),
            str(files.checkpoints),
        ]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=HEAP_READ_TIMEOUT, stdin=subprocess.DEVNULL
            )
            heap = json.loads(done.stdout) if done.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired, ValueError):
            heap = None
        if not heap:
            if not self._heap_note:
                self._heap_note = True
                self._note("a look could not read the heap so far from memray's capture: no early PASS until it can")
            return samples, False
        return join_heap(samples, heap), True

    def _note(self, message: str) -> None:
        self.notes.append(message)
        self.progress.note(message)

    def record(self, stop_reason: str) -> dict[str, Any]:
        """``run.json``'s ``decision``: plan, looks taken, why steady ended, the alpha of the final verdict."""
        if self.decided is not None:
            alpha, look, cycles = self.decided.alpha, self.decided.look, self.decided.cycles
        elif stop_reason in ("max_duration", "duration"):
            alpha, look, cycles = self.plan.alphas[-1], self.plan.count - 1, None
        else:  # interrupted or failed: an extra look the plan did not count, at the strictest share
            alpha, look, cycles = min(self.plan.alphas), len(self.decisions), None
        return {
            "stop_reason": stop_reason,
            "alpha": alpha,
            "look": look,
            "decided_after_cycles": cycles,
            "plan": self.plan.to_dict(),
            "looks": [dict(d.to_dict(), t=t) for t, d in self.decisions],
        }

    def stop_reason(self) -> str:
        """Why a steady phase that was not interrupted ended."""
        if self.decided is not None:
            return "leak" if self.decided.verdict is Verdict.LEAK else "pass"
        return "max_duration" if self.profile.load.until_decided else "duration"
