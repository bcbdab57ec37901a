"""Synthetic, seeded series with known slopes: the verdict must follow the truth."""

from __future__ import annotations

import numpy as np

from runner.analysis import Verdict, analyse
from runner.profile import AnalysisSettings


def series(per_connection: float, *, noise: float = 50_000, n: int = 200, rate: float = 500.0, seed: int = 1, warmup: float = 0.0):
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        closed = int(i * rate * 0.5)
        warm = warmup * (1 - np.exp(-closed / 2000.0))
        rss = 50e6 + warm + per_connection * closed + rng.normal(0, noise)
        samples.append({"t": i * 0.5, "phase": "steady", "closed": closed, "opened": closed, "open": 0, "rss": rss, "fds": 10, "threads": 2})
    return samples


def test_clean_series_passes():
    analysis = analyse(series(0), AnalysisSettings())
    assert analysis.metrics["rss"].verdict is Verdict.PASS
    assert analysis.verdict is Verdict.PASS


def test_leak_of_2kb_per_connection_is_found():
    analysis = analyse(series(2048), AnalysisSettings())
    rss = analysis.metrics["rss"]
    assert rss.verdict is Verdict.LEAK
    assert 1900 < rss.slope_per_connection < 2200
    assert analysis.verdict is Verdict.LEAK and "per connection" in analysis.reasons[0]


def test_too_few_connections_is_inconclusive():
    analysis = analyse(series(2048, n=10, rate=10), AnalysisSettings())
    assert analysis.verdict is Verdict.INCONCLUSIVE


def test_no_steady_samples():
    analysis = analyse([{"t": 0, "phase": "baseline", "closed": 0, "rss": 1}], AnalysisSettings())
    assert analysis.verdict is Verdict.INCONCLUSIVE and not analysis.metrics
