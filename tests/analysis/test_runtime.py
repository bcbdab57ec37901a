"""Pure parts of the runtime heap tier over recorded data: checkpoints reduced and joined, site slopes, the RSS rule."""

from __future__ import annotations

import pytest

from runner.analysis.model import MetricResult, Verdict
from runner.analysis.runtime import reduce_checkpoints, runtime_sites, runtime_summary, snapshot_growth
from runner.analysis.sites import join_heap
from runner.analysis.verdict import combine
from runner.redact import redact_text
from runner.sampling.runtimes.tier import next_interval


def _samples(n: int = 120, rate: float = 100.0) -> list[dict]:
    """Baseline, then steady churn at ``rate`` connections a second, a sample every 0.5 s."""
    out = []
    for i in range(n):
        t = i * 0.5
        phase = "baseline" if i < 10 else "steady"
        closed = 0 if phase == "baseline" else int((t - 5) * rate)
        out.append({"t": t, "wall": 1000.0 + t, "phase": phase, "closed": closed, "open": 10, "heap": None})
    return out


def _checkpoints(samples: list[dict], per_connection: float, *, every: int = 4) -> list[dict]:
    lines = []
    for s in samples[::every]:
        leak = int(per_connection * s["closed"])
        lines.append(
            {
                "wall": s["wall"] + 0.01,
                "phase": s["phase"],
                "heap": 5_000_000 + leak,
                "native": 1_000_000,
                "gc_seconds": 0.05,
                "sites": [
                    ["app.js:10", "rememberUser", leak, None, ["rememberUser app.js:10"]],
                    ["app.js:3", "boot", 400_000, None],
                ],
            }
        )
    return lines


def test_checkpoints_reduce_to_series_aligned_with_their_points():
    samples = _samples()
    reduced = reduce_checkpoints(reversed(_checkpoints(samples, 2000)), "node")  # order of lines does not matter
    assert (
        reduced["runtime"] == "node" and len(reduced["points"]) == 30 and reduced["points"] == sorted(reduced["points"])
    )
    sites = {s["function"]: s for s in reduced["sites"]}
    assert len(sites["rememberUser"]["live"]) == 30 and sites["rememberUser"]["stack"] == ["rememberUser app.js:10"]
    assert "count" not in sites["boot"] and reduced["native"][0] == [reduced["points"][0], 1_000_000]


def test_heap_and_native_join_the_samples_nearest_in_time():
    samples = _samples()
    reduced = reduce_checkpoints(_checkpoints(samples, 2000), "node")
    joined = join_heap(join_heap(samples, reduced["heap"]), reduced["native"], field="native")
    with_heap = [s for s in joined if s["heap"] is not None]
    assert len(with_heap) == 30 and all(s.get("native") == 1_000_000 for s in with_heap)
    assert all(s.get("native") is None for s in joined if s["heap"] is None)


def test_runtime_sites_use_the_per_connection_slope_and_say_their_runtime():
    samples = _samples()
    reduced = reduce_checkpoints(_checkpoints(samples, 2000), "node")
    joined = join_heap(samples, reduced["heap"])
    sites = runtime_sites(reduced, joined, budget=32)
    assert [s["function"] for s in sites] == ["rememberUser"]  # boot does not grow
    assert sites[0]["bytes_per_connection"] == pytest.approx(2000, rel=0.02) and sites[0]["runtime"] == "node"
    assert (
        sites[0]["over_budget"]
        and sites[0]["location"] == "app.js:10"
        and sites[0]["share"] == pytest.approx(1, abs=0.05)
    )


def test_instance_counts_give_instances_per_connection():
    samples = _samples()
    lines = _checkpoints(samples, 100)
    for line in lines:
        line["sites"] = [
            ["Server$ConnState", "Server$ConnState", line["heap"] - 5_000_000, int((line["heap"] - 5_000_000) / 100)]
        ]
    reduced = reduce_checkpoints(lines, "jvm")
    site = runtime_sites(reduced, join_heap(samples, reduced["heap"]), budget=32)[0]
    assert site["instances_per_connection"] == pytest.approx(1.0, rel=0.02) and site["runtime"] == "jvm"


def test_snapshot_growth_is_per_connection_between_the_two_snapshots():
    samples = _samples()
    diff = {
        "why": "native grew",
        "start_wall": 1010.0,
        "end_wall": 1050.0,
        "groups": [{"group": "Buffer", "count_delta": 4000, "bytes_delta": 400_000, "retainers": ["a.b"]}],
    }
    growth = snapshot_growth(diff, samples)
    assert growth["connections"] == 4000
    assert growth["groups"][0]["bytes_per_connection"] == 100 and growth["groups"][0]["count_per_connection"] == 1
    summary = runtime_summary(
        reduce_checkpoints(_checkpoints(samples, 0), "node"), {"snapshot_diff": diff}, {"gc_share": 0.02}, samples
    )
    assert summary["enabled"] and summary["gc_share"] == 0.02 and summary["snapshot_diff"]["connections"] == 4000
    assert any("inline" in note for note in summary["notes"])
    assert runtime_summary(None, {}, None, samples) == {"enabled": False}


def _result(name: str, verdict: Verdict, slope: float = 0.0) -> MetricResult:
    return MetricResult(
        name=name,
        unit="bytes",
        verdict=verdict,
        reason=f"{name} {verdict.value} {slope:g} B per connection",
        slope_per_connection=slope,
    )


def test_rss_growth_alone_is_not_a_leak_when_the_runtime_heap_holds():
    results = {
        "heap": _result("heap", Verdict.PASS, 3),
        "native": _result("native", Verdict.PASS),
        "rss": _result("rss", Verdict.LEAK, 3700),
        "uss": _result("uss", Verdict.LEAK, 3600),
    }
    verdict, reasons, _ = combine(results, runtime="node")
    assert verdict is Verdict.PASS
    assert "node heap after a forced GC held" in reasons[0] and "rss" in reasons[0] and "lazily" in reasons[0]
    assert "native" in reasons[0]  # what else was judged, and how
    # without a runtime tier (memray's Python heap, or none) RSS growth stays a leak
    assert combine(results)[0] is Verdict.LEAK


def test_native_growth_the_runtime_reports_is_still_a_leak():
    results = {
        "heap": _result("heap", Verdict.PASS),
        "native": _result("native", Verdict.LEAK, 16384),
        "rss": _result("rss", Verdict.LEAK, 17000),
    }
    verdict, reasons, _ = combine(results, runtime="node")
    assert verdict is Verdict.LEAK and reasons[0].startswith("native leak")
    assert any("rss" in r for r in reasons)  # the reasons still say why RSS alone did not decide


def test_a_leaking_runtime_heap_is_a_leak_whatever_rss_says():
    results = {"heap": _result("heap", Verdict.LEAK, 2200), "rss": _result("rss", Verdict.PASS)}
    assert combine(results, runtime="node")[0] is Verdict.LEAK


def test_checkpoint_pacing_keeps_collections_to_a_few_percent():
    assert next_interval(0.03) == 1.5  # small heap: the floor
    assert next_interval(0.9) == pytest.approx(30.0)  # 0.9 s collections: 3% of 30 s
    assert next_interval(0.9, maximum=3.0) == 3.0 and next_interval(0.01, maximum=0.5) == 1.5


def test_inspector_session_ids_are_redacted():
    line = "Debugger listening on ws://127.0.0.1:35387/47d653c9-97fa-4979-a8f9-39fb026c4e7e"
    assert redact_text(line) == "Debugger listening on ws://127.0.0.1:35387/***"
