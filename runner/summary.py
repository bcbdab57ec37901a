"""summary.json: the contract other tools read (pure: built from a run record and its analysis).

Schema history (``schema_version``):
    1 - verdict, reasons, metrics, load, sites, target, run.
    2 - trend (added by runner.finish after the run history was consulted): ``database``,
        ``previous_runs``, ``regressions`` (list of {metric, slope_per_connection, ci_low,
        baseline, baseline_spread, baseline_runs, budget_per_connection, message}),
        ``fail_on_regression``; or ``database`` and ``error`` when the history was unusable.
        Absent when the history is off (history.record = false).
    3 - load: ``server_closes`` (connections the server closed with a close frame while their
        user held them or waited), ``resets`` (ended by FIN/RST without a close frame), and
        ``server_endings`` (list of {ending, count}, e.g. "server_close 1011 keepalive ping
        timeout"); these connections left the open count when the server ended them.
        ``lost_workers`` (list of {worker, pid, why, open_connections_lost}): load workers that
        died during the run, which went on with the others; the verdict's reasons say so.
        ``ramp`` ({asked_connections, peak_open, behind}, or null when the steady phase was not reached).
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
    endings = (record.run.get("load_generator") or {}).get("endings") or {}
    return {
        "connections_opened": last.get("opened", 0),
        "connections_closed": last.get("closed", 0),
        "peak_concurrent": max((s.get("open", 0) for s in samples), default=0),
        "cycles_per_second": cycles_per_second,
        "requests": total.get("requests"),
        "errors": errors,
        "latency_ms": latency,
        # load workers that died or went silent; the run went on with the others (see run.json)
        "lost_workers": list((record.run.get("load_generator") or {}).get("lost_workers") or []),
        # asked connections against the most open at once; behind = the ramp never reached 95%
        "ramp": (record.run.get("load_generator") or {}).get("ramp"),
        "server_closes": last.get("server_closes", 0),
        "resets": last.get("resets", 0),
        "server_endings": [
            {"ending": key, "count": count}
            for key, count in sorted(endings.items(), key=lambda kv: -kv[1])
        ],
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
    }
