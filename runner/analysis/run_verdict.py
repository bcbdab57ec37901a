"""The run's final verdict: the analysis, overruled by what happened to the run (pure).

A target that died, a run that was interrupted or never finished, a load worker lost on the
way: each changes what the analysis may claim, and the reasons say so.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..units import format_bytes
from .model import Analysis, Verdict
from .stats import theil_sen

__all__ = ["run_verdict", "memory_evidence", "MATERIAL_RISE_FRACTION", "MATERIAL_RISE_BYTES"]


def run_verdict(
    run: Mapping[str, Any], samples: Sequence[Mapping[str, Any]], analysis: Analysis, *, complete: bool
) -> tuple[Verdict, list[str]]:
    """The run's final verdict: the analysis, overruled by run errors and interruptions.

    ``run`` is run.json's content (empty when the runner died before writing it: then
    ``complete`` is false), ``samples`` what was measured.
    """
    error = run.get("error")
    reasons = list(analysis.reasons)
    if error:
        reasons = [error["message"]]
        target = run.get("target") or {}
        died = error.get("kind") == "target_died" or (
            bool(target.get("crashed")) and error.get("kind") != "target_error"
        )
        if died:
            how = f"killed by {target['signal']}" if target.get("signal") else f"exit code {target.get('exit_code')}"
            where = error["message"] if error.get("kind") == "target_died" else "the target died during the run"
            reasons = [f"{where} ({how})"]
            reasons += memory_evidence(samples, analysis, target)
        if died or error.get("kind") == "target_error":
            last = [line.strip() for line in target.get("log_tail") or [] if line.strip()]
            if last:
                reasons.append(f"the last line of its log: {last[-1][:300]}")
        return Verdict.ERROR, reasons
    lost = (run.get("load_generator") or {}).get("lost_workers") or []
    if lost:  # the run degraded instead of dying: judged on what was measured, and marked
        which = ", ".join(str(w.get("worker")) for w in lost)
        reasons.append(
            f"marked: {len(lost)} load worker(s) died during the run (worker {which}); "
            "the verdict is on the samples measured with the remaining load"
        )
    if not complete:
        note = f"the runner stopped before the run finished; {len(samples)} samples were analysed"
        if analysis.verdict is Verdict.LEAK:
            return Verdict.LEAK, reasons + [note]
        return Verdict.INCONCLUSIVE, [note] + reasons
    if run.get("interrupted"):
        note = "the run was interrupted before its planned end"
        if analysis.verdict is Verdict.LEAK:
            return Verdict.LEAK, reasons + [note]
        return Verdict.INCONCLUSIVE, [note] + reasons
    return analysis.verdict, reasons


#: Log phrases of a process that ran out of memory (Python, C/C++, Go, Java, Node, Rust).
_OUT_OF_MEMORY = (
    "MemoryError",
    "out of memory",
    "Out of memory",
    "OutOfMemoryError",
    "std::bad_alloc",
    "heap out of memory",
    "memory allocation of",
    "Cannot allocate memory",
)


#: A rise that counts as "rising before it died": at least this fraction of the RSS the
#: load phase started with, and at least this many bytes (below that it is allocator noise).
MATERIAL_RISE_FRACTION = 0.10
MATERIAL_RISE_BYTES = 8 * 1024 * 1024


def memory_evidence(samples: Sequence[Mapping[str, Any]], analysis: Analysis, target: Mapping[str, Any]) -> list[str]:
    """Sentences saying whether the target's death looks like memory exhaustion (pure).

    A leak verdict on a memory metric is the strongest evidence; otherwise an RSS whose
    Theil-Sen slope over time (after the baseline) is positive with 95% confidence is
    reported with its figures when it rose materially (see :data:`MATERIAL_RISE_FRACTION`),
    as is an out-of-memory message in the log's last lines.
    """
    evidence: list[str] = []
    memory = [m for m in analysis.metrics.values() if m.unit == "bytes" and m.verdict is Verdict.LEAK]
    if memory:
        evidence.append(f"its memory was rising before it died, which points to a leak: {memory[0].reason}")
    else:
        points = [
            (s["t"], s["rss"])
            for s in samples
            if s.get("rss") is not None and s.get("phase") not in ("starting", "baseline")
        ]
        if len(points) >= 5:
            t = np.array([p[0] for p in points], dtype=float)
            y = np.array([p[1] for p in points], dtype=float)
            if np.ptp(t) > 0:
                fit = theil_sen(t, y, alpha=0.05)
                slope, low = fit.slope, fit.low
                rise = y[-1] - y[0]
                if low > 0 and rise >= max(MATERIAL_RISE_FRACTION * y[0], MATERIAL_RISE_BYTES):
                    evidence.append(
                        f"its RSS was rising before it died ({format_bytes(y[0])} to {format_bytes(y[-1])}, "
                        f"{format_bytes(slope)} per second): it may have run out of memory"
                    )
    tail = " ".join(target.get("log_tail") or [])
    if any(phrase in tail for phrase in _OUT_OF_MEMORY):
        evidence.append("its log reports running out of memory")
    elif target.get("signal") == "SIGKILL" and evidence:
        evidence.append("SIGKILL is what the kernel's OOM killer sends")
    return evidence
