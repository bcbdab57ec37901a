"""Synthetic, seeded series with known truths (slopes, noise, sawtooth, steps, plateaus): the verdict must follow."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest

from runner.analysis import Verdict, analyse
from runner.analysis.model import MetricResult
from runner.analysis.verdict import combine
from runner.profile import AnalysisSettings

RATE = 500.0  # connections closed per second
INTERVAL = 0.5  # seconds between samples


def run(
    shape: Callable[[np.ndarray], np.ndarray],
    *,
    metric: str = "rss",
    cycles: int = 20_000,
    noise: float = 0.0,
    walk: float = 0.0,
    seed: int = 1,
    base: float = 50e6,
    drain: Callable[[float], float] | None = None,
    extra: dict[str, Callable[[np.ndarray], np.ndarray]] | None = None,
) -> list[dict]:
    """Samples of a run: baseline, steady churn (``shape(closed)`` + white and random-walk noise), cooldown.

    ``drain(level_at_end)`` gives the idle level after every connection closed (default: unchanged).
    ``extra`` adds other metrics (e.g. fds) as functions of closed connections.
    """
    rng = np.random.default_rng(seed)
    n = int(cycles / (RATE * INTERVAL)) + 1
    closed = np.arange(n) * RATE * INTERVAL
    values = base + shape(closed) + rng.normal(0, noise, n) + np.cumsum(rng.normal(0, walk, n))
    samples = [{"t": -i * INTERVAL, "phase": "baseline", "closed": 0, "open": 0, metric: base} for i in range(6, 0, -1)]
    for i, (c, v) in enumerate(zip(closed, values, strict=True)):
        sample = {"t": i * INTERVAL, "phase": "steady", "closed": int(c), "open": 50, metric: float(v)}
        for name, fn in (extra or {}).items():
            sample[name] = float(fn(np.array([c]))[0])
        samples.append(sample)
    end = float(values[-1])
    after = drain(end) if drain else end
    for i in range(6):
        sample = {"t": (n + i) * INTERVAL, "phase": "cooldown", "closed": int(closed[-1]), "open": 0, metric: after}
        for name, fn in (extra or {}).items():
            sample[name] = float(fn(np.array([closed[-1]]))[0]) if name not in ("fds", "threads") else sample.get(name)
        samples.append(sample)
    return samples


def flat(c: np.ndarray) -> np.ndarray:
    return np.zeros_like(c)


def linear(per_connection: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda c: per_connection * c


def warmup(total: float = 35e6, scale: float = 1500.0) -> Callable[[np.ndarray], np.ndarray]:
    """A clean Python server: RSS climbs ~35 MB over its first ~4,000 cycles, then levels off."""
    return lambda c: total * (1 - np.exp(-c / scale))


SETTINGS = AnalysisSettings()


def verdict_of(samples: list[dict], metric: str = "rss", settings: AnalysisSettings = SETTINGS) -> MetricResult:
    return analyse(samples, settings).metrics[metric]


# --- memory tiers ------------------------------------------------------------------------------


def test_flat_noisy_series_passes():
    result = verdict_of(run(flat, noise=200_000))
    assert result.verdict is Verdict.PASS
    assert result.ci_low <= 0 <= result.ci_high


def test_leak_of_2kb_per_connection_is_found_with_its_size():
    result = verdict_of(run(linear(2048), noise=200_000))
    assert result.verdict is Verdict.LEAK
    assert result.ci_low <= 2048 <= result.ci_high
    assert result.ci_high - result.ci_low < 200
    assert "grew 2.0 KB per connection (95% CI" in result.reason and "did not slow down" in result.reason
    assert result.slope_per_hour == pytest.approx(result.slope_per_connection * RATE * 3600, rel=0.01)


def test_clean_python_warmup_of_35mb_is_not_a_leak():
    """The measured shape: a naive first-vs-last or least-squares slope calls this 1.7 KB/connection."""
    samples = run(warmup(), cycles=20_000, noise=100_000)
    first_vs_last = (samples[-7]["rss"] - samples[6]["rss"]) / 20_000
    assert first_vs_last > 1024  # the naive method would call it a leak
    result = verdict_of(samples)
    assert result.verdict is Verdict.PASS, result.reason
    assert result.details["warmup_cycles"] > 0


def test_warmup_still_running_is_not_a_leak():
    """A short run that ends while the warm-up is still slowing down: never LEAK."""
    result = verdict_of(run(warmup(scale=4000), cycles=6_000, noise=50_000))
    assert result.verdict is not Verdict.LEAK, result.reason


def test_leak_behind_a_warmup_is_found():
    result = verdict_of(run(lambda c: warmup()(c) + 2048 * c, noise=100_000))
    assert result.verdict is Verdict.LEAK
    assert 1800 < result.slope_per_connection < 2300


@pytest.mark.parametrize("seed", range(5))
def test_random_walk_without_trend_is_never_a_leak(seed):
    """Strongly autocorrelated noise: a plain Sen interval would be far too narrow."""
    result = verdict_of(run(flat, walk=300_000, seed=seed, cycles=5_000))
    assert result.verdict is not Verdict.LEAK, result.reason
    assert result.details["autocorrelation_factor"] >= 1


def test_heap_gc_sawtooth_is_not_a_leak():
    sawtooth = lambda c: 3e6 * ((c % 1000) / 1000)  # noqa: E731 - garbage piles up, a collection frees it
    short = verdict_of(run(sawtooth, metric="heap", noise=1_000), "heap")
    assert short.verdict is not Verdict.LEAK, short.reason  # a 3 MB tooth hides 32 B x 20K cycles
    long = verdict_of(run(sawtooth, metric="heap", noise=1_000, cycles=100_000), "heap")
    assert long.verdict is Verdict.PASS, long.reason


def test_heap_leak_under_a_gc_sawtooth_is_found():
    sawtooth = lambda c: 3e6 * ((c % 1000) / 1000) + 256 * c  # noqa: E731
    result = verdict_of(run(sawtooth, metric="heap", noise=1_000), "heap")
    assert result.verdict is Verdict.LEAK, result.reason
    assert 200 < result.slope_per_connection < 320


@pytest.mark.parametrize("full_at", [0.25, 0.5, 0.75])
def test_bounded_cache_that_fills_is_not_a_leak(full_at):
    cycles = 20_000
    cache = lambda c: 2048 * np.minimum(c, full_at * cycles)  # noqa: E731
    result = verdict_of(run(cache, metric="heap", cycles=cycles, noise=2_000), "heap")
    assert result.verdict is not Verdict.LEAK, result.reason
    if full_at <= 0.5:
        assert result.verdict is Verdict.PASS, result.reason


def test_fragmentation_steps_that_level_off_are_not_a_leak():
    steps = lambda c: 4e6 * np.minimum(np.floor(c / 2500), 4)  # noqa: E731 - arenas added in steps, then no more
    result = verdict_of(run(steps, noise=50_000))
    assert result.verdict is not Verdict.LEAK, result.reason


def test_a_growing_staircase_is_a_leak():
    """One 400 KB arena per 250 connections, forever: a leak even though it moves in steps."""
    steps = lambda c: 400_000 * np.floor(c / 250)  # noqa: E731
    result = verdict_of(run(steps, noise=20_000))
    assert result.verdict is Verdict.LEAK, result.reason


def test_heap_that_returns_after_drain_is_not_a_leak():
    """Growth tied to open connections (a backlog), given back once they all closed."""
    samples = run(linear(512), metric="heap", noise=1_000, drain=lambda end: 50e6 + 10_000)
    result = verdict_of(samples, "heap")
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.details["drain"]["returned"] is True
    assert "returned" in result.reason


def test_heap_leak_kept_after_drain_is_a_leak():
    result = verdict_of(run(linear(512), metric="heap", noise=1_000), "heap")
    assert result.verdict is Verdict.LEAK
    assert result.details["drain"]["returned"] is False


def test_slope_near_the_budget_is_inconclusive_with_an_estimate():
    result = verdict_of(run(linear(1200), noise=3_000_000, cycles=5_000))
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.cycles_needed is not None and result.cycles_needed > 0
    assert "more connection cycles would decide it" in result.reason


def test_too_few_connections_is_inconclusive_and_says_how_many_more():
    samples = run(linear(2048), cycles=100)
    analysis = analyse(samples, SETTINGS)
    assert analysis.verdict is Verdict.INCONCLUSIVE
    assert analysis.metrics["rss"].cycles_needed is not None


def test_per_hour_budget_tightens_the_verdict():
    samples = run(linear(100), noise=10_000)
    assert verdict_of(samples).verdict is Verdict.PASS  # 100 B/connection is within the 1 KB RSS budget
    hourly = AnalysisSettings(budget_bytes_per_hour=10e6)  # but 100 B x 1.8M connections/hour = 180 MB/hour
    result = verdict_of(samples, settings=hourly)
    assert result.verdict is Verdict.LEAK
    assert "per-hour budget 9.5 MB per hour" in result.reason


def test_long_run_is_thinned_and_still_right():
    samples = run(linear(1500), noise=300_000, cycles=2_000_000)  # 8,000 samples
    result = verdict_of(samples)
    assert result.verdict is Verdict.LEAK
    assert result.samples_used <= 600


# --- count tiers -------------------------------------------------------------------------------


def counts(
    fds: Callable[[np.ndarray], np.ndarray],
    threads: Callable[[np.ndarray], np.ndarray],
    *,
    fds_after: float,
    threads_after: float,
) -> list[dict]:
    samples = run(flat, noise=10_000, cycles=10_000, extra={"fds": fds, "threads": threads})
    for s in samples:
        if s["phase"] == "baseline":
            s["fds"], s["threads"] = 7, 3
        elif s["phase"] == "cooldown":
            s["fds"], s["threads"] = fds_after, threads_after
    return samples


def test_fd_leak_is_found_regardless_of_memory():
    samples = counts(lambda c: 57 + np.floor(c / 50), lambda c: np.full_like(c, 3), fds_after=7 + 200, threads_after=3)
    analysis = analyse(samples, SETTINGS)
    assert analysis.metrics["rss"].verdict is Verdict.PASS
    assert analysis.metrics["fds"].verdict is Verdict.LEAK
    assert analysis.metrics["threads"].verdict is Verdict.PASS
    assert analysis.verdict is Verdict.LEAK and any(r.startswith("fds") for r in analysis.reasons)


def test_small_fd_leak_is_found_by_the_drain_check():
    """One fd per 200 connections is under the per-connection budget, but it is never given back."""
    samples = counts(lambda c: 57 + np.floor(c / 200), lambda c: np.full_like(c, 3), fds_after=7 + 50, threads_after=3)
    result = analyse(samples, SETTINGS).metrics["fds"]
    assert result.verdict is Verdict.LEAK
    assert "still held after every connection closed" in result.reason


def test_thread_pool_that_fills_once_is_not_a_leak():
    pool = lambda c: np.where(c < 500, 3 + c / 500 * 32, 35)  # noqa: E731 - an executor growing to its max
    samples = counts(lambda c: np.full_like(c, 57), pool, fds_after=7, threads_after=35)
    result = analyse(samples, SETTINGS).metrics["threads"]
    assert result.verdict is Verdict.PASS, result.reason


def test_thread_leak_is_found():
    samples = counts(lambda c: np.full_like(c, 57), lambda c: 3 + np.floor(c / 50), fds_after=7, threads_after=203)
    assert analyse(samples, SETTINGS).metrics["threads"].verdict is Verdict.LEAK


# --- the combination rule ----------------------------------------------------------------------


def _result(name: str, verdict: Verdict) -> MetricResult:
    return MetricResult(name=name, unit="bytes", verdict=verdict, reason=f"{name} {verdict.value}")


def test_any_leak_is_a_leak():
    verdict, reasons, _ = combine({"heap": _result("heap", Verdict.PASS), "rss": _result("rss", Verdict.LEAK)})
    assert verdict is Verdict.LEAK and reasons == ["rss leak"]


def test_heap_pass_outweighs_undecided_process_memory():
    verdict, _, notes = combine({"heap": _result("heap", Verdict.PASS), "rss": _result("rss", Verdict.INCONCLUSIVE)})
    assert verdict is Verdict.PASS and "allocator noise" in notes[0]


def test_undecided_without_heap_is_inconclusive():
    verdict, reasons, _ = combine({"rss": _result("rss", Verdict.INCONCLUSIVE), "fds": _result("fds", Verdict.PASS)})
    assert verdict is Verdict.INCONCLUSIVE and reasons == ["rss inconclusive"]


def test_no_steady_samples():
    analysis = analyse([{"t": 0, "phase": "baseline", "closed": 0, "rss": 1}], SETTINGS)
    assert analysis.verdict is Verdict.INCONCLUSIVE and not analysis.metrics


def test_unbounded_interval_is_written_as_null():
    result = MetricResult(
        name="rss",
        unit="bytes",
        verdict=Verdict.INCONCLUSIVE,
        reason="r",
        ci_low=float("-inf"),
        ci_high=float("inf"),
        details={"late": [1.0, float("nan")]},
    )
    data = result.to_dict()
    assert data["ci_low"] is None and data["ci_high"] is None and data["details"]["late"] == [1.0, None]
