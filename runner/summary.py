"""summary.json: the contract other tools read (pure: built from a run record and its analysis).

Schema history (``schema_version``):
    1 - verdict, reasons, metrics, load, sites, target, run.
    2 - trend (added by runner.finish after the run history was consulted): ``database``,
        ``previous_runs``, ``regressions`` (list of {metric, slope_per_connection, ci_low,
        baseline, baseline_spread, baseline_runs, budget_per_connection, message}),
        ``fail_on_regression``; or ``database`` and ``error`` when the history was unusable.
        Absent when the history is off (history.record = false).
    3 - ``stop_reason``: why the steady phase ended ("leak" or "pass": decided early by the
        looks of runner.analysis.sequential; "max_duration", "duration", "interrupted",
        "error"); ``decided_after_cycles``: closed steady connections at the deciding look
        (None when no look decided); ``decision``: the look plan (times, alphas), the looks
        taken (t, cycles, verdict per tier) and the alpha of the final verdict, or None.
"""

from __future__ import annotations

from typing import Any

from .analysis import Analysis, Verdict
from .results import RunRecord
from .sampling.memray_sites import leak_sites, memray_summary

__all__ = ["SCHEMA_VERSION", "build_summary", "load_figures"]

SCHEMA_VERSION = 3


def load_figures(record: RunRecord) -> dict[str, Any]:
    """The ``load`` part of the summary: what the load generator achieved."""
    samples = record.samples
    last = samples[-1] if samples else {}
    steady = [s for s in samples if s.get("phase") == "steady"]
    cycles_per_second = None
    if len(steady) >= 2 and steady[-1]["t"] > steady[0]["t"]:
        cycles_per_second = round((steady[-1]["closed"] - steady[0]["closed"]) / (steady[-1]["t"] - steady[0]["t"]), 2)
    stats = record.locust_stats
    latency = {}
    for entry in stats.get("requests", []):
        latency[entry["name"]] = {k: entry.get(k) for k in ("p50_ms", "p95_ms", "p99_ms", "avg_ms", "max_ms")}
    total = stats.get("total", {})
    errors = total.get("failures", last.get("errors", 0))
    return {
        "connections_opened": last.get("opened", 0),
        "connections_closed": last.get("closed", 0),
        "peak_concurrent": max((s.get("open", 0) for s in samples), default=0),
        "cycles_per_second": cycles_per_second,
        "requests": total.get("requests"),
        "errors": errors,
        "latency_ms": latency,
        "errors_by_kind": [
            {"name": e.get("name"), "error": e.get("error"), "occurrences": e.get("occurrences")} for e in stats.get("errors", [])
        ],
    }


def _heap_budget(record: RunRecord, analysis: Analysis) -> float:
    """The heap budget the analysis used (``soak analyze --budget`` included), for each site's over_budget."""
    heap = analysis.metrics.get("heap")
    if heap is not None and heap.budget_per_connection is not None:
        return float(heap.budget_per_connection)
    return record.profile.analysis.budget_bytes_per_connection


def build_summary(record: RunRecord, analysis: Analysis, *, verdict: Verdict | None = None, reasons: list[str] | None = None) -> dict[str, Any]:
    """summary.json's content. ``verdict``/``reasons`` override the analysis (run errors)."""
    run = record.run
    target = dict(run.get("target") or {"pid": record.meta.get("target", {}).get("pid"), "exit_code": None, "crashed": False})
    final = verdict or analysis.verdict
    return {
        "schema_version": SCHEMA_VERSION,
        "verdict": final.value,
        "exit_code": final.exit_code,
        "reasons": reasons if reasons is not None else analysis.reasons,
        "notes": list(record.meta.get("notes", [])) + list(run.get("notes", [])) + list((record.memray or {}).get("notes", [])) + list(analysis.notes),
        "profile": record.profile.name,
        "started_at": record.meta.get("started_at"),
        "ended_at": run.get("ended_at"),
        "interrupted": bool(run.get("interrupted", False)),
        "complete": record.complete,
        "metrics": {name: result.to_dict() for name, result in analysis.metrics.items()},
        "load": load_figures(record),
        "sites": leak_sites(record.memray, record.samples, budget=_heap_budget(record, analysis)) if record.memray else list(run.get("sites", [])),
        "memray": memray_summary(record.memray),
        "target": target,
        "phases": run.get("phases", []),
        **_stopping(run),
    }


def _stopping(run: dict[str, Any]) -> dict[str, Any]:
    """``stop_reason``, ``decided_after_cycles`` and ``decision`` (run folders older than them: derived or None)."""
    decision = run.get("decision")
    if isinstance(decision, dict) and decision.get("stop_reason"):
        reason = decision["stop_reason"]
    else:
        failed = "error" if run.get("error") else ("duration" if run else None)
        reason = "interrupted" if run.get("interrupted") else failed
    plan = decision if isinstance(decision, dict) and decision.get("plan") else None
    return {
        "stop_reason": reason,
        "decided_after_cycles": plan.get("decided_after_cycles") if plan else None,
        "decision": plan,
    }
