"""A first, honest leak verdict: Theil-Sen slope of each metric against closed connections."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

from ..profile import AnalysisSettings
from .model import MEMORY_METRICS, METRICS, Analysis, MetricResult, Verdict

__all__ = ["analyse", "COUNT_BUDGET_PER_CONNECTION"]

#: fds and threads: more than one per hundred connections that is never given back is a leak.
COUNT_BUDGET_PER_CONNECTION = 0.01
#: Fraction of the steady window (by closed connections) treated as warm-up.
WARMUP_FRACTION = 0.25
MIN_SAMPLES = 8


def _fmt_bytes(value: float) -> str:
    sign = "-" if value < 0 else ""
    value = abs(value)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{sign}{value:.0f} {unit}" if unit == "B" else f"{sign}{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _fmt(value: float, unit: str) -> str:
    return _fmt_bytes(value) if unit == "bytes" else f"{value:.3g}"


def _metric(name: str, samples: Sequence[Mapping[str, Any]], settings: AnalysisSettings) -> MetricResult | None:
    unit = "bytes" if name in MEMORY_METRICS else "count"
    if name == "heap":
        budget = settings.budget_bytes_per_connection
    elif unit == "bytes":
        budget = max(settings.budget_bytes_per_connection, settings.rss_budget_bytes_per_connection)
    else:
        budget = COUNT_BUDGET_PER_CONNECTION
    steady = [s for s in samples if s.get("phase") == "steady" and s.get(name) is not None]
    if not steady:
        return None
    closed = np.array([s["closed"] for s in steady], dtype=float)
    start = closed[0] + WARMUP_FRACTION * (closed[-1] - closed[0])
    keep = closed >= start
    x = closed[keep]
    y = np.array([s[name] for s in steady], dtype=float)[keep]
    t = np.array([s["t"] for s in steady], dtype=float)[keep]
    cycles = int(x[-1] - x[0]) if len(x) else 0
    base = dict(name=name, unit=unit, budget_per_connection=budget, samples_used=int(len(x)))
    if len(x) < MIN_SAMPLES or cycles < settings.min_cycles or np.ptp(x) == 0:
        return MetricResult(
            **base,
            verdict=Verdict.INCONCLUSIVE,
            reason=f"{name}: only {cycles} connections closed in the analysed window; at least {settings.min_cycles} are needed",
        )
    slope, intercept, low, high = stats.theilslopes(y, x, alpha=1 - settings.alpha)
    hours = (t[-1] - t[0]) / 3600.0
    per_hour = float(slope * cycles / hours) if hours > 0 else None
    level = int(round(100 * (1 - settings.alpha)))
    figures = f"{_fmt(slope, unit)} per connection ({level}% CI {_fmt(low, unit)} to {_fmt(high, unit)}); budget {_fmt(budget, unit)}"
    if low > budget:
        verdict, reason = Verdict.LEAK, f"{name} grew {figures}"
    elif high <= budget:
        verdict, reason = Verdict.PASS, f"{name} stayed flat: {figures}"
    else:
        verdict, reason = Verdict.INCONCLUSIVE, f"{name} cannot be told from its budget yet: {figures}"
    return MetricResult(
        **base,
        verdict=verdict,
        reason=reason,
        slope_per_connection=float(slope),
        slope_per_hour=per_hour,
        ci_low=float(low),
        ci_high=float(high),
        intercept=float(intercept),
        window=(int(x[0]), int(x[-1])),
    )


def analyse(samples: Sequence[Mapping[str, Any]], settings: AnalysisSettings) -> Analysis:
    """The verdict on a run's samples."""
    results = {}
    for name in METRICS:
        result = _metric(name, samples, settings)
        if result is not None:
            results[name] = result
    if not results:
        return Analysis(
            verdict=Verdict.INCONCLUSIVE,
            reasons=["no samples were taken during steady churn, so there is nothing to analyse"],
            metrics={},
        )
    leaks = [r for r in results.values() if r.verdict is Verdict.LEAK]
    unsure = [r for r in results.values() if r.verdict is Verdict.INCONCLUSIVE]
    if leaks:
        return Analysis(verdict=Verdict.LEAK, reasons=[r.reason for r in leaks], metrics=results)
    if unsure:
        return Analysis(verdict=Verdict.INCONCLUSIVE, reasons=[r.reason for r in unsure], metrics=results)
    return Analysis(verdict=Verdict.PASS, reasons=["no metric grew with connections: " + "; ".join(r.reason for r in results.values())], metrics=results)
