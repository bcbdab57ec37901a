"""Turn a run folder into its verdict and outputs; shared by ``soak run`` and ``soak analyze``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from .analysis import Analysis, Verdict, analyse
from .profile import AnalysisSettings
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
        if error.get("kind") == "target_died" or target.get("crashed"):
            how = f"killed by {target['signal']}" if target.get("signal") else f"exit code {target.get('exit_code')}"
            reasons = [f"the target died during the run ({how})"]
            memory = [m for m in analysis.metrics.values() if m.unit == "bytes" and m.verdict is Verdict.LEAK]
            if memory:
                reasons.append(f"its memory was rising before it died, which points to a leak: {memory[0].reason}")
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
    folder = RunFolder(Path(path))
    write_json(folder.summary, summary)
    folder.report.write_text(render_report(record, summary, analysis), encoding="utf-8")
    return summary
