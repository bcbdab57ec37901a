"""Statistical building blocks of the leak verdict: pure functions over numpy arrays.

Memory series of a server under churn are short, noisy and strongly autocorrelated
(a heap that grows stays grown), so every estimate here is robust and corrected for
autocorrelation:

- :func:`mann_kendall` - the Mann-Kendall trend test with the Hamed-Rao (1998) variance
  correction (``pymannkendall.hamed_rao_modification_test``). Its variance inflation
  ``n / n*`` says how many independent observations the series is really worth.
- :func:`theil_sen` - Theil-Sen slope (``scipy.stats.theilslopes``) whose confidence
  interval is widened by that same ``n / n*``: Sen's interval assumes independent
  residuals and is far too narrow on autocorrelated data otherwise.
- :func:`trim_warmup` - a data-driven warm-up cut (MSER on a robust line).
- :func:`thin` - bin a long series to a bounded number of points (Theil-Sen is O(n^2)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pymannkendall
from scipy import stats

__all__ = [
    "Slope",
    "Trend",
    "theil_sen",
    "mann_kendall",
    "trim_warmup",
    "thin",
    "cycles_to_decide",
    "MAX_POINTS",
    "TRIM_POINTS",
    "WARMUP_CANDIDATES",
]

#: Longest series handed to the O(n^2) estimators; longer ones are binned (median per bin).
MAX_POINTS = 600
#: Points the warm-up search scores each candidate cut on (every k-th sample).
TRIM_POINTS = 150
#: Fractions of the window (by sample index) tried as the end of warm-up; at most half is cut.
WARMUP_CANDIDATES = tuple(i / 20 for i in range(11))


@dataclass(frozen=True)
class Slope:
    """A Theil-Sen line with a two-sided confidence interval of its slope."""

    slope: float
    intercept: float
    low: float
    high: float


@dataclass(frozen=True)
class Trend:
    """Mann-Kendall with the Hamed-Rao correction.

    ``variance_factor`` is ``n / n*`` (>= 1): how much autocorrelation inflates the
    variance of the test statistic, and so of the Theil-Sen interval.
    """

    p_value: float
    z: float
    increasing: bool
    variance_factor: float


def _mk_variance(y: np.ndarray) -> float:
    """Variance of Mann-Kendall's S under independence, with the usual tie correction."""
    n = len(y)
    _, ties = np.unique(y, return_counts=True)
    return float((n * (n - 1) * (2 * n + 5) - np.sum(ties * (ties - 1) * (2 * ties + 5))) / 18.0)


def mann_kendall(y: np.ndarray, *, alpha: float) -> Trend:
    """Hamed-Rao corrected Mann-Kendall test of a series ordered in time.

    A constant series (e.g. a steady fd count) has no trend: p = 1, factor 1. The factor is
    clamped to [1, n]: never more confident than independent data, never below one sample.
    """
    y = np.asarray(y, dtype=float)
    n = len(y)
    if n < 3 or np.ptp(y) == 0:
        return Trend(p_value=1.0, z=0.0, increasing=False, variance_factor=1.0)
    base = _mk_variance(y)
    with np.errstate(invalid="ignore", divide="ignore"):
        result = pymannkendall.hamed_rao_modification_test(y, alpha=alpha)
        factor = float(result.var_s / base) if base > 0 else math.nan
        if not (math.isfinite(factor) and factor > 0):
            # All significant lags together can sum negative on short, trending series; Hamed
            # and Rao's fallback is to use the first few lags only.
            result = pymannkendall.hamed_rao_modification_test(y, alpha=alpha, lag=3)
            factor = float(result.var_s / base) if base > 0 else math.nan
    if not math.isfinite(factor) or factor < 1.0:
        factor = 1.0
    factor = min(factor, float(n))
    s = float(result.s)
    var_s = base * factor
    z = 0.0 if s == 0 else (s - math.copysign(1.0, s)) / math.sqrt(var_s)
    p = float(2 * stats.norm.sf(abs(z)))
    return Trend(p_value=p, z=z, increasing=z > 0, variance_factor=factor)


def theil_sen(x: np.ndarray, y: np.ndarray, *, alpha: float, variance_factor: float = 1.0) -> Slope:
    """Theil-Sen slope of ``y`` against ``x`` with a ``1 - alpha`` interval widened by ``variance_factor``.

    The widening is exact for Sen's interval: it is built from ``z * sqrt(Var S)``, so a
    variance ``k`` times larger is the same as asking scipy for the confidence level
    whose normal quantile is ``z * sqrt(k)``.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if np.ptp(y) == 0:
        return Slope(slope=0.0, intercept=float(y[0]), low=0.0, high=0.0)
    z = stats.norm.isf(alpha / 2) * math.sqrt(max(variance_factor, 1.0))
    confidence = min(1.0 - 2 * stats.norm.sf(z), 1.0 - 1e-12)
    result = stats.theilslopes(y, x, alpha=confidence)
    low, high = float(result.low_slope), float(result.high_slope)
    if not (math.isfinite(low) and math.isfinite(high)):
        low, high = -math.inf, math.inf
    return Slope(slope=float(result.slope), intercept=float(result.intercept), low=low, high=high)


def thin(
    x: np.ndarray, y: np.ndarray, t: np.ndarray, limit: int = MAX_POINTS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """At most ``limit`` points: runs of ``k`` consecutive samples binned, median ``y`` and mean ``x``/``t`` per bin.

    The median keeps a GC spike from moving a bin; binning in order keeps the time order
    the trend test needs. A last, partial bin is dropped (fewer than ``k`` samples at the end).
    """
    n = len(y)
    if n <= limit:
        return x, y, t
    k = int(math.ceil(n / limit))
    m = n // k
    shape = (m, k)
    return (
        x[: m * k].reshape(shape).mean(axis=1),
        np.median(y[: m * k].reshape(shape), axis=1),
        t[: m * k].reshape(shape).mean(axis=1),
    )


def trim_warmup(x: np.ndarray, y: np.ndarray, *, min_points: int, min_span: float) -> int:
    """Index where steady behaviour starts: MSER (White 1997) applied to a robust line.

    For each candidate cut (0 %, 5 %, ... 50 % of the samples) fit a Theil-Sen line to the
    rest and score ``mean |residual| / sqrt(points left)``. Warm-up curvature (a server
    filling its pools, a cache reaching its bound) inflates the residuals of a straight
    line, so cutting it lowers the score; cutting straight, noisy data only loses points,
    which raises it. The lowest score wins; ties go to the smaller cut.
    """
    n = len(y)
    # The cut only needs the shape: score it on at most TRIM_POINTS bins (Theil-Sen is O(n^2)).
    k = max(1, int(math.ceil(n / TRIM_POINTS)))
    best, best_score = 0, math.inf
    for fraction in WARMUP_CANDIDATES:
        cut = int(fraction * n)
        if n - cut < min_points or x[-1] - x[cut] < min_span:
            break
        xs, ys = x[cut::k], y[cut::k]
        if np.ptp(ys) == 0:
            score = 0.0
        else:
            fit = stats.theilslopes(ys, xs)
            score = float(np.mean(np.abs(ys - (fit.intercept + fit.slope * xs)))) / math.sqrt(len(ys))
        if score < best_score * (1 - 1e-9):
            best, best_score = cut, score
    return best


def cycles_to_decide(slope: Slope, budget: float, cycles: float) -> int | None:
    """Roughly how many more connection cycles would separate the interval from the budget.

    The half-width of the interval shrinks at least like ``1 / cycles`` when the sampling
    rate stays the same (a conservative rate: independent noise shrinks it like
    ``cycles ** -1.5``). ``None`` when the estimate sits on the budget: no run length decides it.
    """
    half = (slope.high - slope.low) / 2
    distance = abs(slope.slope - budget)
    if not (math.isfinite(half) and half > 0 and cycles > 0):
        return None
    if distance < 0.05 * half:
        return None
    needed = cycles * half / distance
    if needed <= cycles:
        # The interval is narrow enough already; what is missing is a late half that settles
        # (a slowing warm-up): a run about as long again shows whether it levels off.
        return int(math.ceil(cycles))
    return max(int(math.ceil(needed - cycles)), 1)
