"""report.html: one self-contained page (inline CSS and SVG) rendered from Jinja templates.

:func:`render_report` takes the run's plain data (the loaded run record, its summary,
the tail of the target's log, history rows) and returns HTML text; it opens no file.
Every string from the outside world (target output, error messages, command lines,
URLs, profile values) is redacted here with :mod:`runner.redact` and escaped by Jinja's
autoescaping; only the SVG markup matplotlib produced is inserted as markup.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jinja2
import markupsafe

from ..analysis.keepers import keeper_lines
from ..redact import redact_data, redact_text
from ..results import RunRecord
from ..units import format_bytes
from .charts import all_charts

__all__ = ["render_report", "LOG_TAIL_LINES", "TREND_TABLE_RUNS"]

#: Lines of the target's log shown at the end of the report.
LOG_TAIL_LINES = 60
#: Past runs listed in the trend table (the chart shows all it is given).
TREND_TABLE_RUNS = 10

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("runner.report", "templates"),
    autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
    # Summary fields are added by several parts of the runner over time: a missing one renders
    # as "-" (every filter below treats undefined as None) instead of breaking the report.
    undefined=jinja2.ChainableUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _missing(value: Any) -> bool:
    return value is None or isinstance(value, jinja2.Undefined)


def _bytes(value: Any) -> str:
    return "-" if _missing(value) else format_bytes(value)


def _per_connection(value: float | None, unit: str = "bytes") -> str:
    if _missing(value):
        return "-"
    return format_bytes(value) if unit == "bytes" else f"{value:.3g}"


def _count(value: Any) -> str:
    if _missing(value):
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def _ms(value: Any) -> str:
    return "-" if _missing(value) else f"{float(value):,.1f} ms"


def _duration(seconds: Any) -> str:
    if _missing(seconds):
        return "-"
    from ..units import format_duration

    return format_duration(float(round(float(seconds))))  # whole seconds: "44s", "1h30m"


_ENV.filters.update(bytes=_bytes, per_connection=_per_connection, count=_count, ms=_ms, duration=_duration)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """``section.key = value`` rows of nested plain data (the resolved profile)."""
    rows = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows.extend(_flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            rows.append((name, " ".join(str(v) for v in value)))
        else:
            rows.append((name, "" if value is None else str(value)))
    return rows


def _run_seconds(phases: Sequence[Mapping[str, Any]]) -> float | None:
    timed = [p for p in phases if p.get("start") is not None]
    if not timed:
        return None
    end = timed[-1].get("end")
    return None if end is None else float(end) - float(timed[0]["start"])


def _key_metric(metrics: Mapping[str, Mapping[str, Any]]) -> tuple[str, Mapping[str, Any]] | None:
    """The metric the banner leads with: a leaking one first, else the most exact memory metric."""
    for wanted in ("leak", "inconclusive", None):
        for name in ("heap", "uss", "rss", "fds", "threads"):
            metric = metrics.get(name)
            if metric and (wanted is None or metric.get("verdict") == wanted):
                return name, metric
    return next(iter(metrics.items()), None)


def render_report(
    record: RunRecord,
    summary: Mapping[str, Any],
    analysis: Any = None,
    *,
    log_tail: Sequence[str] = (),
    trend_runs: Sequence[Mapping[str, Any]] = (),
) -> str:
    """The HTML report of one run.

    ``summary`` is summary.json's content (its ``metrics`` carry every figure shown);
    ``analysis`` is accepted for callers that still pass it and is not needed.
    ``log_tail`` are the last lines of target.log; ``trend_runs`` are history rows of
    the same profile, oldest first, ending with this run.
    """
    del analysis  # summary["metrics"] holds the same figures as plain data
    safe_summary = redact_data(dict(summary))
    metrics = safe_summary.get("metrics") or {}
    phases = summary.get("phases") or []
    drawn = all_charts(
        record.samples, phases, summary.get("metrics") or {}, trend_runs, decision=summary.get("decision")
    )
    charts = {name: (markupsafe.Markup(svg) if svg else None) for name, svg in drawn.items()}
    meta = record.meta or {}
    environment = redact_data(meta.get("environment") or {})
    target_meta = redact_data(meta.get("target") or {})
    command = target_meta.get("command")
    memray = summary.get("memray") or {}
    context = {
        "summary": safe_summary,
        "metrics": metrics,
        "key_metric": _key_metric(metrics),
        "load": safe_summary.get("load") or {},
        "sites": (safe_summary.get("sites") or [])[:20],
        "keepers": safe_summary.get("keepers") or {},
        "keeper_lines": keeper_lines(safe_summary.get("keepers")),
        "flamegraph": redact_text(str(memray["flamegraph"])) if memray.get("flamegraph") else None,
        "memray": redact_data(dict(memray)),
        "runtime": redact_data(dict(summary.get("runtime") or {})),
        "charts": charts,
        "run_seconds": _run_seconds(phases),
        "locust": redact_data(record.locust_stats or {}),
        "profile_rows": _flatten(redact_data(record.profile.to_dict())),
        "environment": environment,
        "versions": environment.get("versions") or {},
        "target_command": " ".join(command) if isinstance(command, list) else command,
        "target_url": target_meta.get("url"),
        "argv": " ".join(redact_data(meta.get("argv") or [])),
        "log_tail": [redact_text(line) for line in list(log_tail)[-LOG_TAIL_LINES:]],
        "trend": safe_summary.get("trend") or {},
        "trend_runs": [redact_data(dict(run)) for run in list(trend_runs)[-TREND_TABLE_RUNS:]],
    }
    return _ENV.get_template("report.html.j2").render(**context)
