"""Charts: decimation keeps what matters, every chart is SVG text with ids unique to it."""

from __future__ import annotations

import re

import numpy as np

from runner.report import charts


def _samples(n: int, *, heap: bool = True) -> list[dict]:
    out = []
    for i in range(n):
        phase = "baseline" if i < n // 10 else "steady" if i < n * 9 // 10 else "cooldown"
        closed = max(0, i - n // 10) * 5 if phase != "baseline" else 0
        out.append(
            {
                "t": i * 0.5,
                "phase": phase,
                "closed": closed,
                "opened": closed + 10,
                "open": 10 if phase == "steady" else 0,
                "rss": 50e6 + 2000 * closed,
                "uss": 40e6 + 2000 * closed,
                "heap": (10e6 + 1900 * closed) if heap else None,
                "fds": 12,
                "threads": 3,
                "lat": {"WS connect": [1.0, 2.0, 3.0 + i % 7]} if phase == "steady" else None,
            }
        )
    return out


def test_decimate_bounds_points_and_keeps_a_single_spike():
    x = np.arange(100_000, dtype=float)
    y = np.zeros_like(x)
    y[54_321] = 1e9  # one sample out of 100,000
    y[77_777] = -5.0
    xs, ys = charts.decimate(x, y, buckets=300)
    assert len(xs) <= 600
    assert 1e9 in ys and -5.0 in ys
    assert np.all(np.diff(xs) >= 0)  # still in time order


def test_decimate_leaves_short_series_alone_and_drops_nan():
    xs, ys = charts.decimate([0, 1, 2, 3], [1.0, float("nan"), 3.0, 4.0])
    assert list(xs) == [0, 2, 3] and list(ys) == [1.0, 3.0, 4.0]


def test_bucket_reduce_takes_the_worst_per_bucket():
    x = np.arange(10_000, dtype=float)
    y = np.ones_like(x)
    y[5000] = 99.0
    xs, ys = charts.bucket_reduce(x, y, np.max, buckets=100)
    assert len(xs) == 100 and ys.max() == 99.0 and (ys == 1.0).sum() == 99


def test_every_chart_is_svg_with_ids_prefixed_by_its_name():
    samples = _samples(400)
    phases = [
        {"name": "baseline", "start": 0, "end": 20},
        {"name": "steady", "start": 20, "end": 180},
        {"name": "cooldown", "start": 180, "end": None},
    ]
    metrics = {
        "rss": {
            "slope_per_connection": 2000.0,
            "ci_low": 1900.0,
            "ci_high": 2100.0,
            "window": [100, 1500],
            "verdict": "leak",
        }
    }
    trend = [
        {
            "started_at": f"2026-11-{d:02d}",
            "verdict": "pass",
            "metrics": {
                "rss": {
                    "slope_per_connection": 10.0 * d,
                    "ci_low": 5.0,
                    "ci_high": 30.0 * d,
                    "budget_per_connection": 1024,
                }
            },
        }
        for d in range(1, 5)
    ]
    result = charts.all_charts(samples, phases, metrics, trend)
    assert set(result) == {"memory", "slope", "connections", "latency", "resources", "trend"}
    for name, svg in result.items():
        assert svg is not None, name
        assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
        ids = re.findall(r'\bid="([^"]+)"', svg)
        assert ids and all(i.startswith(f"{name}-") for i in ids), name
        for ref in re.findall(r"url\(#([^)]+)\)", svg):
            assert ref in ids  # every clip-path points at an element of the same chart
    assert "GB" in result["memory"] or "MB" in result["memory"]  # human units on the axis
    assert "fit: 2.0 KB/conn" in result["slope"]


def test_missing_data_gives_no_chart():
    assert charts.memory_chart([], []) is None
    assert charts.latency_chart(_samples(50, heap=False)[:5], []) is None  # baseline only: no latency
    assert charts.trend_chart([{"metrics": {}}]) is None  # one run is no trend
    no_memory = [
        {"t": i, "phase": "steady", "closed": i, "open": 1, "rss": None, "uss": None, "heap": None} for i in range(10)
    ]
    assert charts.memory_chart(no_memory, []) is None and charts.slope_chart(no_memory, {}) is None
    assert charts.resources_chart(no_memory, []) is None


def test_units_read_like_people_write_them():
    assert charts.format_bytes_axis(512) == "512 B"
    assert charts.format_bytes_axis(1536) == "1.5 KB"
    assert charts.format_bytes_axis(-3 * 2**20) == "-3.0 MB"
    assert charts._count_axis(12_000) == "12k" and charts._count_axis(1_500_000) == "1.5M"
    assert charts._time_unit(100) == (1.0, "seconds") and charts._time_unit(12 * 3600)[1] == "hours"
