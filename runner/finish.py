"""Turn a run folder into its verdict and outputs; shared by ``soak run`` and ``soak analyze``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from .analysis import Analysis, Verdict, analyse
from .analysis.run_verdict import run_verdict
from .analysis.sequential import at_look, stopping_reason
from .profile import AnalysisSettings, Profile
from .redact import redact_data, redact_text
from .report import render_report
from .results import RunFolder, RunRecord, write_json
from .sampling.memray_capture import ensure_reduced
from .summary import build_summary
from .target import tail

__all__ = ["finish_run", "evaluate", "judge", "write_outputs", "rerender_report"]


def judge(record: RunRecord, analysis: Analysis) -> tuple[Verdict, list[str]]:
    """The final verdict of a loaded run (see :func:`runner.analysis.run_verdict.run_verdict`)."""
    return run_verdict(record.run, record.samples, analysis, complete=record.complete)


def evaluate(record: RunRecord, settings: AnalysisSettings | None = None) -> tuple[Analysis, dict[str, Any]]:
    """Analyse a loaded run record; returns the analysis and the summary (pure).

    A run judged as it went (run.json's ``decision`` has an ``alpha``) is analysed at the
    alpha its sequential plan allows at the look where it stopped, and says so in its reasons.
    """
    settings = settings or record.profile.analysis
    decision = record.run.get("decision") or {}
    if isinstance(decision.get("alpha"), (int, float)):
        settings = at_look(settings, float(decision["alpha"]))
    analysis = analyse(record.samples, settings, runtime=record.runtime_name)
    verdict, reasons = judge(record, analysis)
    if decision.get("plan") and verdict is not Verdict.ERROR:
        stopped = stopping_reason(decision, verdict)
        if stopped:
            reasons = reasons + [stopped]
    return analysis, build_summary(record, analysis, verdict=verdict, reasons=reasons)


def finish_run(
    path: str | Path, *, overrides: dict[str, Any] | None = None, history: str | Path | None = None
) -> dict[str, Any]:
    """Analyse a run folder, write summary.json, junit.xml and report.html, record the run in the
    history (``history``: database path overriding the profile's), and return the summary."""
    ensure_reduced(Path(path))  # reads a memray capture once; later calls reuse memray/reduced.json
    record = RunRecord.load(path)
    settings = record.profile.analysis
    if overrides:
        settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    analysis, summary = evaluate(record, settings)
    summary = redact_data(summary)  # secrets never reach summary.json, the report or the terminal
    folder = RunFolder(Path(path))
    return write_outputs(folder, _redacted(record), summary, history=history)


def _redacted(record: RunRecord) -> RunRecord:
    """The record as reporters may show it: profile and meta without secrets (samples untouched)."""
    profile = Profile.from_dict(redact_data(record.profile.to_dict()))
    return replace(record, profile=profile, meta=redact_data(record.meta), run=redact_data(record.run))


# --- outputs: summary.json, junit.xml, report.html, run history ----------------------


def _previous_runs(
    record: RunRecord, summary: dict[str, Any], history_option: str | Path | None
) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
    """Open the history database and compare this run with the previous runs of its profile.

    Returns the open database (or ``None``), the summary's ``trend`` part, and the previous
    rows (oldest first). A history that cannot be used is a note, never a failed run.
    """
    from .errors import SoakError
    from .history import History, find_regressions, resolve_path

    settings = record.profile.history
    if not settings.record and history_option is None:
        return None, {}, []
    path = resolve_path(history_option, settings.path)
    try:
        db = History(path)
        previous = db.runs(
            summary.get("profile"),
            limit=settings.trend_runs - 1,
            exclude=record.folder,
            before=summary.get("started_at"),
        )
    except SoakError as exc:
        return None, {"database": str(path), "error": str(exc), "regressions": []}, []
    trend = {
        "database": str(path),
        "previous_runs": len(previous),
        "regressions": find_regressions(summary.get("metrics") or {}, previous),
        "fail_on_regression": settings.fail_on_regression,
    }
    return db, trend, previous


def write_outputs(
    folder: RunFolder, record: RunRecord, summary: dict[str, Any], *, history: str | Path | None = None
) -> dict[str, Any]:
    """Write summary.json, junit.xml and report.html of a redacted record; record the run in the history.

    A regression flagged against the history is a note (and fails the run, exit 1, when
    ``history.fail_on_regression`` is set and the run would otherwise pass).
    """
    import sqlite3

    from .history import entry_from_summary, target_revision
    from .report.html import LOG_TAIL_LINES
    from .report.junit import render_junit

    db, trend, previous = _previous_runs(record, summary, history)
    if trend:
        summary = dict(summary, trend=trend)
        messages = [r["message"] for r in trend.get("regressions", [])]
        if trend.get("error"):
            summary["notes"] = list(summary.get("notes", [])) + [f"run history not updated: {trend['error']}"]
        elif messages and trend.get("fail_on_regression") and summary["verdict"] == Verdict.PASS.value:
            summary.update(
                verdict=Verdict.LEAK.value,
                exit_code=Verdict.LEAK.exit_code,
                reasons=[f"regression: {m}" for m in messages] + list(summary.get("reasons", [])),
            )
        elif messages:
            summary["notes"] = list(summary.get("notes", [])) + [f"regression: {m}" for m in messages]
    rows: list[dict[str, Any]] = []
    if db is not None:
        try:
            with db:
                db.record(entry_from_summary(summary, record.folder, revision=target_revision()))
                this = db.get(record.folder)
            rows = previous + ([this] if this else [])
        except sqlite3.Error as exc:
            summary["notes"] = list(summary.get("notes", [])) + [f"run history not updated: {db.path}: {exc}"]
    write_json(folder.summary, summary)
    folder.junit.write_text(render_junit(summary), encoding="utf-8")
    log_lines = [
        redact_text(line) for line in tail(folder.target_log, LOG_TAIL_LINES)
    ]  # the target's own words may hold secrets
    folder.report.write_text(render_report(record, summary, log_tail=log_lines, trend_runs=rows), encoding="utf-8")
    return summary


def rerender_report(path: str | Path) -> Path:
    """Write report.html again from a run folder: its saved summary.json (the verdict as judged,
    with its trend) when there is one, the history rows of its profile (read only), the log tail."""
    import json

    from .errors import SoakError
    from .history import History
    from .report.html import LOG_TAIL_LINES

    record = RunRecord.load(path)
    folder = RunFolder(Path(path))
    try:
        summary = json.loads(folder.summary.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        summary = redact_data(evaluate(record)[1])
    rows: list[dict[str, Any]] = []
    database = (summary.get("trend") or {}).get("database")
    if database:
        try:
            with History(database, create=False) as db:
                rows = db.runs(
                    summary.get("profile"), limit=record.profile.history.trend_runs, before=summary.get("started_at")
                )
        except SoakError:
            rows = []
    log_lines = [redact_text(line) for line in tail(folder.target_log, LOG_TAIL_LINES)]
    folder.report.write_text(
        render_report(_redacted(record), summary, log_tail=log_lines, trend_runs=rows), encoding="utf-8"
    )
    return folder.report
