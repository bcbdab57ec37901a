"""summary.json: the contract other tools read (pure: built from a run record and its analysis).

Schema history (``schema_version``):
    1 - verdict, reasons, metrics, load, sites, target, run.
    2 - trend (added by runner.finish after the run history was consulted): ``database``,
        ``previous_runs``, ``regressions`` (list of {metric, slope_per_connection, ci_low,
        baseline, baseline_spread, baseline_runs, budget_per_connection, message}),
        ``fail_on_regression``; or ``database`` and ``error`` when the history was unusable.
        Absent when the history is off (history.record = false).
    3 - keepers (memray targets only, else absent): what keeps the memory, measured in the
        target at the GC checkpoints: ``containers`` (module-level containers growing per
        connection: name, type, file, per_connection, ci_low, ci_high, items_end, text),
        ``tasks`` (live asyncio tasks by coroutine: coroutine, waiting_at, per_connection,
        alive_end, text), ``threads``, ``objects`` (types and functions whose count grew per
        connection), ``chain`` ({type, path, text}: a back-reference path from a module
        global), ``checkpoints``, ``full_checkpoints``, ``thin``, ``notes``. Each site gains
        ``library`` (no user frame on its stack), ``approximate`` and ``meaning`` (a sentence).
"""

from __future__ import annotations

from typing import Any

from .analysis import Analysis, Verdict
from .analysis.keepers import keepers_summary
from .results import RunRecord
from .sampling.memray_sites import coverage_note, leak_sites, memray_summary

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


def _keepers(record: RunRecord) -> dict[str, Any]:
    """``{"keepers": ...}`` for a run measured in the target, else nothing (the key stays absent)."""
    keepers = keepers_summary((record.memray or {}).get("keepers"), record.samples)
    return {} if keepers is None else {"keepers": keepers}


def build_summary(record: RunRecord, analysis: Analysis, *, verdict: Verdict | None = None, reasons: list[str] | None = None) -> dict[str, Any]:
    """summary.json's content. ``verdict``/``reasons`` override the analysis (run errors)."""
    run = record.run
    target = dict(run.get("target") or {"pid": record.meta.get("target", {}).get("pid"), "exit_code": None, "crashed": False})
    final = verdict or analysis.verdict
    if record.memray:
        sites = leak_sites(record.memray, record.samples, budget=_heap_budget(record, analysis))
    else:
        sites = list(run.get("sites", []))
    exact = bool((record.memray or {}).get("python_allocators"))
    coverage = coverage_note(sites, python_allocators=exact) if final is Verdict.LEAK else None
    return {
        "schema_version": SCHEMA_VERSION,
        "verdict": final.value,
        "exit_code": final.exit_code,
        "reasons": reasons if reasons is not None else analysis.reasons,
        "notes": list(record.meta.get("notes", [])) + list(run.get("notes", []))
        + list((record.memray or {}).get("notes", [])) + list(analysis.notes) + ([coverage] if coverage else []),
        "profile": record.profile.name,
        "started_at": record.meta.get("started_at"),
        "ended_at": run.get("ended_at"),
        "interrupted": bool(run.get("interrupted", False)),
        "complete": record.complete,
        "metrics": {name: result.to_dict() for name, result in analysis.metrics.items()},
        "load": load_figures(record),
        "sites": sites,
        "memray": memray_summary(record.memray),
        **_keepers(record),
        "target": target,
        "phases": run.get("phases", []),
    }
