"""Turn a run folder into its verdict and outputs; shared by ``soak run`` and ``soak analyze``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from .analysis import Analysis, Verdict, analyse
import numpy as np
from scipy import stats

from .profile import AnalysisSettings, Profile
from .progress import format_bytes
from .redact import redact_data
from .report import render_report
from .results import RunFolder, RunRecord, write_json
from .summary import build_summary

__all__ = ["finish_run", "evaluate", "judge"]


def judge(record: RunRecord, analysis: Analysis) -> tuple[Verdict, list[str]]:
    """The run's final verdict: the analysis, overruled by run errors and interruptions."""
    run = record.run
    error = run.get("error")
    reasons = list(analysis.reasons)
    if error:
        reasons = [error["message"]]
        target = run.get("target") or {}
        died = error.get("kind") == "target_died" or (bool(target.get("crashed")) and error.get("kind") != "target_error")
        if died:
            how = f"killed by {target['signal']}" if target.get("signal") else f"exit code {target.get('exit_code')}"
            where = error["message"] if error.get("kind") == "target_died" else "the target died during the run"
            reasons = [f"{where} ({how})"]
            reasons += _memory_evidence(record.samples, analysis, target)
        if died or error.get("kind") == "target_error":
            last = [line.strip() for line in target.get("log_tail") or [] if line.strip()]
            if last:
                reasons.append(f"the last line of its log: {last[-1][:300]}")
        return Verdict.ERROR, reasons
    if not record.complete:
        note = f"the runner stopped before the run finished; {len(record.samples)} samples were analysed"
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
_OUT_OF_MEMORY = ("MemoryError", "out of memory", "Out of memory", "OutOfMemoryError", "std::bad_alloc",
                  "heap out of memory", "memory allocation of", "Cannot allocate memory")


#: A rise that counts as "rising before it died": at least this fraction of the RSS the
#: load phase started with, and at least this many bytes (below that it is allocator noise).
MATERIAL_RISE_FRACTION = 0.10
MATERIAL_RISE_BYTES = 8 * 1024 * 1024


def _memory_evidence(samples: list[dict[str, Any]], analysis: Analysis, target: dict[str, Any]) -> list[str]:
    """Sentences saying whether the target's death looks like memory exhaustion (pure).

    A leak verdict on a memory metric is the strongest evidence; otherwise an RSS whose
    Theil-Sen slope over time (after the baseline) is positive with 95% confidence is
    reported with its figures when it rose materially (see :data:`MATERIAL_RISE_FRACTION`),
    as is an out-of-memory message in the log's last lines.
    """
    evidence = []
    memory = [m for m in analysis.metrics.values() if m.unit == "bytes" and m.verdict is Verdict.LEAK]
    if memory:
        evidence.append(f"its memory was rising before it died, which points to a leak: {memory[0].reason}")
    else:
        points = [(s["t"], s["rss"]) for s in samples if s.get("rss") is not None and s.get("phase") not in ("starting", "baseline")]
        if len(points) >= 5:
            t = np.array([p[0] for p in points], dtype=float)
            y = np.array([p[1] for p in points], dtype=float)
            if np.ptp(t) > 0:
                slope, _, low, _ = stats.theilslopes(y, t, alpha=0.95)
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


def evaluate(record: RunRecord, settings: AnalysisSettings | None = None) -> tuple[Analysis, dict[str, Any]]:
    """Analyse a loaded run record; returns the analysis and the summary (pure)."""
    analysis = analyse(record.samples, settings or record.profile.analysis)
    verdict, reasons = judge(record, analysis)
    return analysis, build_summary(record, analysis, verdict=verdict, reasons=reasons)


def finish_run(path: str | Path, *, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Analyse a run folder, write summary.json and report.html, and return the summary."""
    record = RunRecord.load(path)
    settings = record.profile.analysis
    if overrides:
        settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    analysis, summary = evaluate(record, settings)
    summary = redact_data(summary)  # secrets never reach summary.json, the report or the terminal
    folder = RunFolder(Path(path))
    write_json(folder.summary, summary)
    folder.report.write_text(render_report(_redacted(record), summary, analysis), encoding="utf-8")
    return summary


def _redacted(record: RunRecord) -> RunRecord:
    """The record as reporters may show it: profile and meta without secrets (samples untouched)."""
    profile = Profile.from_dict(redact_data(record.profile.to_dict()))
    return replace(record, profile=profile, meta=redact_data(record.meta), run=redact_data(record.run))
