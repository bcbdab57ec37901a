"""The leak verdict: per-metric tiers over the recorded samples, and the rule that combines them.

For every metric (heap, uss, rss, fds, threads) the steady-churn samples are regressed
against cumulative closed connections, after a data-driven warm-up cut
(:func:`~runner.analysis.stats.trim_warmup`):

1. Mann-Kendall with the Hamed-Rao correction: is there a monotonic trend at all?
2. Theil-Sen slope per connection, its interval widened for autocorrelation.
3. Deceleration: the late half's slope against the whole window's. A cache that fills
   slows down; a leak keeps its pace.
4. Drain: after every connection closed, the metric against its idle baseline.
   Per-connection state must be gone: fds and threads back to baseline, heap close to it.

A metric LEAKs when its trend is significant, the whole interval lies above the budget,
the late half on its own still grows faster than the budget, and it did not slow down; it PASSes
when the interval lies within the budget (or it levelled off within budget); otherwise
it is INCONCLUSIVE, with an estimate of how many more cycles would decide it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..profile import AnalysisSettings
from ..units import format_bytes, format_eta
from .model import MEMORY_METRICS, METRICS, Analysis, MetricResult, Verdict
from .sources import HEAP_TIER, heap_tier, metric_origin
from .stats import Slope, Trend, cycles_to_decide, mann_kendall, theil_sen, thin, trim_warmup

__all__ = [
    "analyse",
    "COUNT_BUDGET_PER_CONNECTION",
    "COUNT_DRAIN_TOLERANCE",
    "DECELERATION_RATIO",
    "MIN_SAMPLES",
]

#: fds and threads: more than one per hundred connections that is never given back is a leak.
COUNT_BUDGET_PER_CONNECTION = 0.01
#: fds/threads still held after the drain, above the idle baseline, that a clean server may keep
#: (a lazily opened log file, a resolver thread); more than this and a growing count is a leak.
COUNT_DRAIN_TOLERANCE = 2
#: Slowing down must also be material: the late half at least 10% slower than the window.
#: (On a long, quiet series a 0.1% difference is "significant" and means nothing.)
DECELERATION_RATIO = 0.9
#: Fewest samples in the analysed window (and in its late half, doubled) for any verdict.
MIN_SAMPLES = 8


def _fmt(value: float, unit: str) -> str:
    if unit == "bytes":
        return format_bytes(value)
    return f"{value:.3g}" if math.isfinite(value) else ("unbounded" if value > 0 else "-unbounded")


@dataclass(frozen=True)
class _Series:
    """One metric's steady-churn samples, in time order."""

    x: np.ndarray  # cumulative closed connections
    y: np.ndarray  # the metric
    t: np.ndarray  # seconds


@dataclass(frozen=True)
class _Drain:
    baseline: float
    end: float
    cycles: int

    @property
    def residual(self) -> float:
        return self.end - self.baseline


def _steady(samples: Sequence[Mapping[str, Any]], name: str) -> _Series | None:
    rows = [
        (float(s["closed"]), float(s[name]), float(s["t"]))
        for s in samples
        if s.get("phase") == "steady" and s.get(name) is not None and s.get("closed") is not None
    ]
    if not rows:
        return None
    data = np.array(rows)
    x, y, t = thin(data[:, 0], data[:, 1], data[:, 2])
    return _Series(x=x, y=y, t=t)


def _drain(samples: Sequence[Mapping[str, Any]], name: str) -> _Drain | None:
    """Idle baseline before the load against the level once every connection closed."""
    before = [s[name] for s in samples if s.get("phase") == "baseline" and s.get(name) is not None]
    after = [
        s[name]
        for s in samples
        if s.get("phase") in ("drain", "cooldown") and s.get("open") == 0 and s.get(name) is not None
    ]
    if not before or not after:
        return None
    # The last few idle samples: by then the server has had every chance to release.
    tail = after[-max(1, min(len(after), 4)) :]
    closed = max((s.get("closed") or 0) for s in samples)
    return _Drain(baseline=float(np.median(before)), end=float(np.median(tail)), cycles=int(closed))


def _budget(name: str, settings: AnalysisSettings, tier: str = HEAP_TIER) -> float:
    if name == "heap" and tier == HEAP_TIER:
        return settings.budget_bytes_per_connection
    if name in MEMORY_METRICS:
        return max(settings.budget_bytes_per_connection, settings.rss_budget_bytes_per_connection)
    return COUNT_BUDGET_PER_CONNECTION


def _metric(name: str, samples: Sequence[Mapping[str, Any]], settings: AnalysisSettings) -> MetricResult | None:
    series = _steady(samples, name)
    if series is None:
        return None
    unit = "bytes" if name in MEMORY_METRICS else "count"
    source, series_name = metric_origin(samples, name)
    tier, tier_note = heap_tier(source, series_name, settings.metrics_heap_live) if name == "heap" else (None, None)
    budget = _budget(name, settings, tier or HEAP_TIER)
    drain = _drain(samples, name)
    x, y, t = series.x, series.y, series.t
    total_cycles = int(x[-1] - x[0]) if len(x) else 0
    if len(x) < MIN_SAMPLES or total_cycles < settings.min_cycles:
        return MetricResult(
            name=name,
            unit=unit,
            verdict=Verdict.INCONCLUSIVE,
            reason=(
                f"{name}: only {total_cycles} connections closed in {len(x)} samples of steady churn; "
                f"at least {settings.min_cycles} connections and {MIN_SAMPLES} samples are needed"
            ),
            budget_per_connection=budget,
            samples_used=int(len(x)),
            cycles_needed=max(settings.min_cycles - total_cycles, 1),
        )

    cut = trim_warmup(x, y, min_points=MIN_SAMPLES, min_span=settings.min_cycles)
    xw, yw, tw = x[cut:], y[cut:], t[cut:]
    cycles = float(xw[-1] - xw[0])
    hours = float(tw[-1] - tw[0]) / 3600.0
    per_hour_rate = cycles / hours if hours > 0 else None  # cycles per hour

    # The per-hour budget, when set, is a second ceiling: converted to bytes per connection
    # at this run's churn rate, the tighter of the two applies.
    hour_budget = None
    if unit == "bytes" and settings.budget_bytes_per_hour is not None and per_hour_rate:
        hour_budget = settings.budget_bytes_per_hour / per_hour_rate
    limit = min(budget, hour_budget) if hour_budget is not None else budget

    trend = mann_kendall(yw, alpha=settings.alpha)
    fit = theil_sen(xw, yw, alpha=settings.alpha, variance_factor=trend.variance_factor)
    late = xw >= xw[0] + cycles / 2
    late_fit: Slope | None = None
    late_trend: Trend | None = None
    if late.sum() >= MIN_SAMPLES // 2 and np.ptp(xw[late]) > 0:
        late_trend = mann_kendall(yw[late], alpha=settings.alpha)
        late_fit = theil_sen(xw[late], yw[late], alpha=settings.alpha, variance_factor=late_trend.variance_factor)
    # Slowing down: the late half's whole interval lies below the window's slope (and it is
    # materially slower). A leak keeps
    # its pace (this happens to it by chance about alpha/2 of the time, costing a LEAK an
    # INCONCLUSIVE, never a PASS); a warm-up or a filling cache bends over.
    # The check protects a levelling server: at a stricter alpha (a look) it must not get weaker.
    slowing_fit = late_fit
    slow_alpha = settings.deceleration_alpha
    if late_fit is not None and late_trend is not None and slow_alpha is not None and slow_alpha != settings.alpha:
        slowing_fit = theil_sen(xw[late], yw[late], alpha=slow_alpha, variance_factor=late_trend.variance_factor)
    decelerating = bool(
        late_fit is not None
        and slowing_fit is not None
        and fit.slope > 0
        and slowing_fit.high < fit.slope
        and late_fit.slope < DECELERATION_RATIO * fit.slope
    )

    level = f"{100 * (1 - settings.alpha):.3g}"
    if hour_budget is not None and hour_budget < budget and settings.budget_bytes_per_hour is not None:
        budget_text = (
            f"per-hour budget {format_bytes(settings.budget_bytes_per_hour)} per hour, "
            f"{_fmt(limit, unit)} per connection at this run's churn rate"
        )
    else:
        budget_text = f"budget {_fmt(limit, unit)}"
    per_conn = "per connection"
    figures = f"{_fmt(fit.slope, unit)} {per_conn} ({level}% CI {_fmt(fit.low, unit)} to {_fmt(fit.high, unit)})"
    if unit == "bytes" and per_hour_rate and fit.slope > 0:
        figures += f", {format_bytes(fit.slope * per_hour_rate)} per hour"
    significant = trend.increasing and trend.p_value < settings.alpha
    # A leak is growing now, not only on average: the late half on its own must clear the budget.
    still_growing = late_fit is None or late_fit.low > limit

    verdict: Verdict
    if significant and fit.low > limit and still_growing and not decelerating:
        verdict = Verdict.LEAK
        reason = f"{name} grew {figures} and did not slow down; {budget_text}"
    elif fit.high <= limit:
        verdict = Verdict.PASS
        reason = f"{name} stayed within budget: {figures}; {budget_text}"
    elif decelerating and late_fit is not None and late_fit.high <= limit:
        verdict = Verdict.PASS
        reason = (
            f"{name} grew {figures} but levelled off: the late half grew {_fmt(late_fit.slope, unit)} {per_conn} "
            f"(CI up to {_fmt(late_fit.high, unit)}); {budget_text}"
        )
    else:
        verdict = Verdict.INCONCLUSIVE
        if decelerating and late_fit is not None:
            why = f"it grew {figures} but is slowing down (late half {_fmt(late_fit.slope, unit)} {per_conn})"
        elif significant and fit.low > limit:
            late_slope = _fmt(late_fit.slope if late_fit else math.nan, unit)
            why = f"it grew {figures} but the late half grew only {late_slope} {per_conn}"
        else:
            why = f"{figures}"
        reason = f"{name} cannot be told from its budget yet: {why}; {budget_text}"

    # Drain: per-connection state must be released once every connection has closed.
    drain_details: dict[str, Any] | None = None
    if drain is not None:
        drain_details = {"baseline": drain.baseline, "end": drain.end, "residual": drain.residual}
        if unit == "count":
            kept = drain.residual > COUNT_DRAIN_TOLERANCE
            drain_details["returned"] = not kept
            if kept and significant and verdict is not Verdict.LEAK:
                verdict = Verdict.LEAK
                reason = (
                    f"{name} rose during churn and {drain.residual:.0f} were still held after every connection closed "
                    f"(baseline {drain.baseline:.0f}, after drain {drain.end:.0f})"
                )
            elif verdict is Verdict.PASS and kept:
                reason += (
                    f"; {drain.residual:.0f} more than at baseline after the drain, but it did not grow with churn"
                )
        elif name == "heap" and drain.cycles > 0:
            per_connection = drain.residual / drain.cycles
            drain_details["residual_per_connection"] = per_connection
            drain_details["returned"] = per_connection <= limit
            if verdict is Verdict.LEAK and per_connection <= limit:
                verdict = Verdict.INCONCLUSIVE
                reason = (
                    f"heap grew {figures} during churn but returned to within {_fmt(per_connection, unit)} {per_conn} "
                    f"of its baseline after the drain: growth tied to open connections, not kept per connection"
                )

    if tier_note:
        reason += f" ({tier_note})"
    needed = None
    if verdict is Verdict.INCONCLUSIVE:
        needed = cycles_to_decide(fit, limit, cycles)
        if needed is not None:
            reason += f"; about {needed:,} more connection cycles would decide it"
            if per_hour_rate:
                reason += f" (~{format_eta(needed / per_hour_rate * 3600)} at this run's rate)"
        else:
            reason += "; its estimate sits on the budget, so a longer run alone may not decide it"

    return MetricResult(
        name=name,
        unit=unit,
        verdict=verdict,
        reason=reason,
        slope_per_connection=fit.slope,
        slope_per_hour=fit.slope * per_hour_rate if per_hour_rate else None,
        ci_low=fit.low,
        ci_high=fit.high,
        budget_per_connection=limit,
        intercept=fit.intercept,
        window=(int(xw[0]), int(xw[-1])),
        samples_used=int(len(xw)),
        cycles_needed=needed,
        details={
            "warmup_cycles": int(xw[0] - x[0]),
            "trend_p_value": trend.p_value,
            "autocorrelation_factor": trend.variance_factor,
            "late_slope_per_connection": late_fit.slope if late_fit else None,
            "late_ci_low": late_fit.low if late_fit else None,
            "late_ci_high": late_fit.high if late_fit else None,
            "decelerating": decelerating,
            "drain": drain_details,
            "budget_per_hour": settings.budget_bytes_per_hour if unit == "bytes" else None,
            **({"budget_tier": tier, "budget_tier_reason": tier_note} if tier else {}),
        },
    )


def combine(results: Mapping[str, MetricResult], *, runtime: str | None = None) -> tuple[Verdict, list[str], list[str]]:
    """The overall verdict from the per-metric tiers: (verdict, reasons, notes).

    ``runtime`` names the garbage-collected runtime whose probe measured ``heap`` (and
    ``native``): "node", "jvm"; None for memray's Python heap or no heap at all.

    - Any LEAK is a LEAK: the heap, process memory and the fd/thread counts each catch
      leaks the others cannot (native memory, descriptors, threads).
    - The heap (memray) is exact; when it PASSes, an RSS/USS INCONCLUSIVE is allocator
      noise and does not hold the run back.
    - A GC runtime grows its heap lazily and returns memory late, so when its own heap tier
      ran and PASSes, RSS/USS growth alone is not a LEAK: it is the runtime's heap growing, not
      retention (the reasons say so). The native memory the runtime reports is judged as usual.
    - Otherwise any INCONCLUSIVE makes the run INCONCLUSIVE; else PASS.
    """
    notes: list[str] = []
    heap = results.get("heap")
    reasons_first: list[str] = []
    if runtime is not None and heap is not None and heap.verdict is Verdict.PASS:
        process = [r for r in results.values() if r.name in ("rss", "uss") and r.verdict is Verdict.LEAK]
        if process:
            native = results.get("native")
            native_text = (
                f"; the native memory it reports (Buffers, external) is judged on its own: {native.reason}"
                if native is not None
                else ""
            )
            reasons_first.append(
                f"{' and '.join(r.name for r in process)} grew with connections "
                f"({'; '.join(r.reason for r in process)}), but the {runtime} heap after a forced GC held "
                f"({heap.reason}): a garbage-collected runtime grows its heap lazily, so process memory alone is not "
                f"taken as a leak{native_text}"
            )
            results = {name: r for name, r in results.items() if r not in process}
    leaks = [r for r in results.values() if r.verdict is Verdict.LEAK]
    if leaks:
        return Verdict.LEAK, [r.reason for r in leaks] + reasons_first, notes
    unsure = [r for r in results.values() if r.verdict is Verdict.INCONCLUSIVE]
    if heap is not None and heap.verdict is Verdict.PASS and heap.details.get("budget_tier", HEAP_TIER) == HEAP_TIER:
        process = [r for r in unsure if r.name in ("rss", "uss")]
        if process:
            notes.append(
                "the heap stayed within budget, so process-level memory that could not be decided ("
                + ", ".join(r.name for r in process)
                + ") is taken as allocator noise"
            )
        unsure = [r for r in unsure if r.name not in ("rss", "uss")]
    if unsure:
        return Verdict.INCONCLUSIVE, [r.reason for r in unsure] + reasons_first, notes
    if reasons_first:
        others = "no other metric grew with connections: " + "; ".join(r.reason for r in results.values())
        return Verdict.PASS, reasons_first + [others], notes
    return Verdict.PASS, ["no metric grew with connections: " + "; ".join(r.reason for r in results.values())], notes


def analyse(
    samples: Sequence[Mapping[str, Any]], settings: AnalysisSettings, *, runtime: str | None = None
) -> Analysis:
    """The verdict on a run's samples (pure: no I/O, no clock); ``runtime``: see :func:`combine`."""
    results: dict[str, MetricResult] = {}
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
    verdict, reasons, notes = combine(results, runtime=runtime)
    needed = [r.cycles_needed for r in results.values() if r.verdict is Verdict.INCONCLUSIVE and r.cycles_needed]
    return Analysis(
        verdict=verdict,
        reasons=reasons,
        metrics=results,
        notes=notes,
        cycles_needed=max(needed) if verdict is Verdict.INCONCLUSIVE and needed else None,
    )
