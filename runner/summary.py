"""summary.json: the contract other tools read (pure: built from a run record and its analysis).

Schema history (``schema_version``):
    1 - verdict, reasons, metrics, load, sites, target, run.
    2 - trend (added by runner.finish after the run history was consulted): ``database``,
        ``previous_runs``, ``regressions`` (list of {metric, slope_per_connection, ci_low,
        baseline, baseline_spread, baseline_runs, budget_per_connection, message}),
        ``fail_on_regression``; or ``database`` and ``error`` when the history was unusable.
        Absent when the history is off (history.record = false).
    3 - runtime (a GC runtime's own heap probe): ``enabled``, ``runtime`` ("node" | "jvm"),
        ``checkpoints``, ``gc_seconds``, ``gc_share``, ``snapshot_diff`` ({why, connections,
        groups: [{group, count_delta, bytes_delta, bytes_per_connection, count_per_connection,
        retainers}]} or null), ``notes``; ``sites`` entries from it carry ``runtime`` (and
        ``instances_per_connection`` where the runtime counts instances); metric ``native``.
        JVM sites (``location`` is the class) add ``class``, ``shallow_bytes_per_connection``
        and ``retained`` (how ``bytes_per_connection`` was credited), and with JFR
        ``allocated_at`` (``Server.java:77``), ``root``, ``chain``; JDK classes ``held_by`` /
        ``credited_to``.
        keepers (memray targets only, else absent): what keeps the memory, measured in the
        target at the GC checkpoints: ``containers`` (module-level containers growing per
        connection: name, type, file, per_connection, ci_low, ci_high, items_end, text),
        ``tasks`` (live asyncio tasks by coroutine: coroutine, waiting_at, per_connection,
        alive_end, text), ``threads``, ``objects`` (types and functions whose count grew per
        connection), ``chain`` ({type, path, text}: a back-reference path from a module
        global), ``checkpoints``, ``full_checkpoints``, ``thin``, ``notes``. Each site gains
        ``library`` (no user frame on its stack), ``approximate`` and ``meaning`` (a sentence).
        ``metrics.<name>.source`` (``process``, ``metrics_url``, ``prometheus``, ``cgroup``;
        ``memray`` for memray's heap, ``runtime`` for a runtime probe's heap and native memory, its
        series naming the runtime), ``metrics.<name>.series`` (series name, PromQL query or
        cgroup file; null for psutil), ``metrics.<name>.gaps`` ({samples, gaps, errors, stale,
        absent}: null values while its source was read; ``errors`` when the source failed,
        ``stale`` when it answered without a series it had given, ``absent`` without one it
        never gave; null for psutil), and ``sources`` (per source: reads, errors,
        reasons = the most frequent error messages with their counts).
        ``stop_reason``: why the steady phase ended ("leak" or "pass": decided early by the
        looks of runner.analysis.sequential; "max_duration", "duration", "interrupted",
        "error"); ``decided_after_cycles``: closed steady connections at the deciding look
        (None when no look decided); ``decision``: the look plan (times, alphas), the looks
        taken (t, cycles, verdict per tier) and the alpha of the final verdict, or None.
        load: ``server_closes`` (connections the server closed with a close frame while their
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
from .analysis.keepers import keepers_summary
from .analysis.runtime import runtime_sites, runtime_summary
from .analysis.sites import coverage_note, leak_sites, memray_summary
from .analysis.sources import source_figures
from .results import RunRecord

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
            {"ending": key, "count": count} for key, count in sorted(endings.items(), key=lambda kv: -kv[1])
        ],
        "errors_by_kind": [
            {"name": e.get("name"), "error": e.get("error"), "occurrences": e.get("occurrences")}
            for e in stats.get("errors", [])
        ],
    }


def _heap_budget(record: RunRecord, analysis: Analysis) -> float:
    """The heap budget the analysis used (``soak analyze --budget`` included), for each site's over_budget."""
    heap = analysis.metrics.get("heap")
    if heap is not None and heap.budget_per_connection is not None:
        return float(heap.budget_per_connection)
    return record.profile.analysis.budget_bytes_per_connection


def _sites(record: RunRecord, analysis: Analysis) -> list[dict[str, Any]]:
    """Sites that grew per connection: memray's, else the runtime probe's, else what run.json holds."""
    if record.memray:
        return leak_sites(record.memray, record.samples, budget=_heap_budget(record, analysis))
    if record.runtime:
        return runtime_sites(
            record.runtime, record.samples, budget=_heap_budget(record, analysis), finish=record.runtime_finish
        )
    return list(record.run.get("sites", []))


def _keepers(record: RunRecord) -> dict[str, Any]:
    """``{"keepers": ...}`` for a run measured in the target, else nothing (the key stays absent)."""
    keepers = keepers_summary((record.memray or {}).get("keepers"), record.samples)
    return {} if keepers is None else {"keepers": keepers}


def metric_sources(record: RunRecord, analysis: Analysis) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per analysed metric: where it came from and its gaps; per source: its reads and errors."""
    origins, sources = source_figures(record.samples)
    out: dict[str, dict[str, Any]] = {}
    for name in analysis.metrics:
        origin = origins.get(name)
        if name == "heap" and record.memray and (origin is None or origin["source"] == "process"):
            out[name] = {"source": "memray", "series": None, "gaps": None}
        elif name in ("heap", "native") and record.runtime and (origin is None or origin["source"] == "process"):
            out[name] = {"source": "runtime", "series": record.runtime.get("runtime"), "gaps": None}
        elif origin is None:
            out[name] = {"source": "process", "series": None, "gaps": None}
        else:
            gaps = {
                "samples": origin["values"] + origin["gaps"],
                **{key: origin[key] for key in ("gaps", "errors", "stale", "absent")},
            }
            remote = origin["source"] != "process"
            out[name] = {"source": origin["source"], "series": origin["series"], "gaps": gaps if remote else None}
    return out, sources


def build_summary(
    record: RunRecord, analysis: Analysis, *, verdict: Verdict | None = None, reasons: list[str] | None = None
) -> dict[str, Any]:
    """summary.json's content. ``verdict``/``reasons`` override the analysis (run errors)."""
    run = record.run
    target = dict(
        run.get("target") or {"pid": record.meta.get("target", {}).get("pid"), "exit_code": None, "crashed": False}
    )
    final = verdict or analysis.verdict
    sites = _sites(record, analysis)
    coverage = None
    if record.memray and final is Verdict.LEAK:
        coverage = coverage_note(sites, python_allocators=bool(record.memray.get("python_allocators")))
    origins, sources = metric_sources(record, analysis)
    return {
        "schema_version": SCHEMA_VERSION,
        "verdict": final.value,
        "exit_code": final.exit_code,
        "reasons": reasons if reasons is not None else analysis.reasons,
        "notes": list(record.meta.get("notes", []))
        + list(run.get("notes", []))
        + list((record.memray or {}).get("notes", []))
        + list(analysis.notes)
        + ([coverage] if coverage else []),
        "profile": record.profile.name,
        "started_at": record.meta.get("started_at"),
        "ended_at": run.get("ended_at"),
        "interrupted": bool(run.get("interrupted", False)),
        "complete": record.complete,
        "metrics": {name: {**result.to_dict(), **origins.get(name, {})} for name, result in analysis.metrics.items()},
        "sources": sources,
        "load": load_figures(record),
        "sites": sites,
        "memray": memray_summary(record.memray),
        "runtime": runtime_summary(record.runtime, record.runtime_finish, run.get("runtime"), record.samples),
        **_keepers(record),
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
