"""The statistical building blocks, on seeded series whose answer is known."""

from __future__ import annotations

import numpy as np
import pymannkendall
import pytest

from runner.analysis.stats import Slope, cycles_to_decide, mann_kendall, theil_sen, thin, trim_warmup


def ar1(n: int, phi: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros(n)
    for i in range(1, n):
        out[i] = phi * out[i - 1] + rng.normal()
    return out


def test_white_noise_has_no_trend_and_no_inflation():
    y = np.random.default_rng(0).normal(size=300)
    trend = mann_kendall(y, alpha=0.05)
    assert trend.p_value > 0.05
    assert trend.variance_factor < 1.5


def test_autocorrelated_noise_inflates_the_variance():
    y = ar1(300, 0.9, seed=1)
    trend = mann_kendall(y, alpha=0.05)
    assert trend.variance_factor > 1.5
    # the uncorrected test would (wrongly) be far more confident
    plain = pymannkendall.original_test(y)
    assert trend.p_value > plain.p


def test_our_p_value_matches_pymannkendall_when_it_is_defined():
    rng = np.random.default_rng(5)
    y = np.arange(200) * 0.05 + ar1(200, 0.5, seed=5) + rng.normal(size=200)
    ours = mann_kendall(y, alpha=0.05)
    theirs = pymannkendall.hamed_rao_modification_test(y)
    assert ours.p_value == pytest.approx(theirs.p, rel=1e-6, abs=1e-12)
    assert ours.increasing


def test_constant_series_has_no_trend():
    trend = mann_kendall(np.full(50, 7.0), alpha=0.05)
    assert trend.p_value == 1.0 and not trend.increasing


def test_theil_sen_recovers_a_slope_and_widens_for_autocorrelation():
    rng = np.random.default_rng(2)
    x = np.arange(200) * 250.0
    y = 1e6 + 300 * x + rng.normal(0, 20_000, 200)
    plain = theil_sen(x, y, alpha=0.05)
    wide = theil_sen(x, y, alpha=0.05, variance_factor=9)
    assert plain.low < 300 < plain.high
    assert wide.low < plain.low and wide.high > plain.high
    assert wide.slope == plain.slope


def test_theil_sen_of_a_constant_is_exactly_zero():
    fit = theil_sen(np.arange(10.0), np.full(10, 3.0), alpha=0.05)
    assert (fit.slope, fit.low, fit.high) == (0.0, 0.0, 0.0)


def test_warmup_is_cut_from_a_saturating_curve_and_not_from_a_line():
    x = np.arange(200) * 100.0
    rng = np.random.default_rng(3)
    line = 5 * x + rng.normal(0, 1000, 200)
    curve = 3e6 * (1 - np.exp(-x / 2000)) + rng.normal(0, 1000, 200)
    assert trim_warmup(x, line, min_points=8, min_span=200) <= 20
    assert trim_warmup(x, curve, min_points=8, min_span=200) >= 50


def test_thin_keeps_order_and_bounds_the_size():
    x = np.arange(5000.0)
    y = x * 2
    xs, ys, ts = thin(x, y, x, limit=100)
    assert len(xs) == len(ys) == len(ts) == 100
    assert np.all(np.diff(xs) > 0) and np.all(np.diff(ys) > 0)
    same = thin(x[:50], y[:50], x[:50], limit=100)
    assert len(same[0]) == 50


def test_cycles_to_decide():
    # half-width 100 around an estimate 50 away from the budget: about twice as many cycles
    assert cycles_to_decide(Slope(slope=1074, intercept=0, low=974, high=1174), 1024, 10_000) == 10_000
    # already narrow enough (a slowing warm-up): a run as long again
    assert cycles_to_decide(Slope(slope=2000, intercept=0, low=1900, high=2100), 1024, 10_000) == 10_000
    # on the budget: no run length decides it
    assert cycles_to_decide(Slope(slope=1024, intercept=0, low=900, high=1150), 1024, 10_000) is None
    assert cycles_to_decide(Slope(slope=10, intercept=0, low=-np.inf, high=np.inf), 1024, 10_000) is None
