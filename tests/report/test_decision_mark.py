"""A run whose looks decided its verdict: summary.json says why it stopped, the charts mark the look."""

from __future__ import annotations

import io
from pathlib import Path

from runner.analysis import analyse
from runner.analysis.sequential import decide, plan_looks
from runner.profile import parse_profile
from runner.progress import Progress, format_running
from runner.report import charts
from runner.results import RunRecord
from runner.summary import SCHEMA_VERSION, build_summary
from tests.analysis.test_verdict import linear, run
from tests.report.test_charts import _samples

PHASES = [
    {"name": "baseline", "start": 0.0, "end": 10.0},
    {"name": "steady", "start": 10.0, "end": 90.0},
    {"name": "cooldown", "start": 90.0, "end": 100.0},
]
DECISION = {
    "stop_reason": "leak",
    "alpha": 0.001,
    "look": 5,
    "decided_after_cycles": 400,
    "plan": {"times": [10, 15, 20, 25, 31, 39, 80], "alphas": [0.004] * 6 + [0.025], "alpha": 0.05},
    "looks": [{"look": 5, "t": 39.0, "cycles": 400, "verdict": "leak", "decided": True, "tiers": {"rss": "leak"}}],
}


def _record(run: dict) -> RunRecord:
    profile = parse_profile({"target": {"command": "{python} -m runner.targets.echo --port {port}"}}, name="t")
    return RunRecord(folder=Path("."), profile=profile, meta={}, samples=_samples(200), run=run)


def test_the_decision_is_marked_on_the_time_and_slope_charts():
    samples = _samples(200)
    marked = charts.all_charts(samples, PHASES, {}, decision=DECISION)
    plain = charts.all_charts(samples, PHASES, {})
    for name in ("memory", "slope", "connections"):
        assert marked[name] is not None and "decided" in marked[name], name
        assert plain[name] is not None and "decided" not in plain[name], name
    undecided = dict(DECISION, stop_reason="max_duration", decided_after_cycles=None)
    assert "decided" not in (charts.all_charts(samples, PHASES, {}, decision=undecided)["memory"] or "")


def test_summary_says_why_the_steady_phase_stopped():
    record = _record({"phases": PHASES, "decision": DECISION, "target": {"pid": 1, "exit_code": 0, "crashed": False}})
    summary = build_summary(record, analyse(record.samples, record.profile.analysis))
    assert SCHEMA_VERSION == 3 and summary["schema_version"] == 3
    assert summary["stop_reason"] == "leak" and summary["decided_after_cycles"] == 400
    assert summary["decision"]["plan"]["alpha"] == 0.05
    fixed = build_summary(
        _record({"phases": PHASES, "decision": {"stop_reason": "duration"}}),
        analyse(record.samples, record.profile.analysis),
    )
    assert fixed["stop_reason"] == "duration" and fixed["decided_after_cycles"] is None and fixed["decision"] is None
    analysis = analyse(record.samples, record.profile.analysis)
    older = build_summary(_record({"phases": PHASES, "interrupted": True}), analysis)
    assert older["stop_reason"] == "interrupted"


def test_the_terminal_shows_the_running_verdict_per_tier_and_the_decision():
    plan = plan_looks(max_duration=120, alpha=0.05)
    stream = io.StringIO()
    progress = Progress(stream, interactive=False)
    undecided = decide(run(linear(2048), noise=20_000, cycles=4_000), record_settings(), plan, 0)
    progress.look(undecided, plan.count)
    decided = decide(run(linear(2048), noise=20_000, cycles=20_000), record_settings(), plan, 3)
    progress.look(decided, plan.count)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith(f"look 1/{plan.count}: undecided (leak) - ") and "rss leak" in lines[0]
    assert lines[1] == format_running(progress.running or {})
    assert lines[1].startswith("decided after 20,000 connections: LEAK")


def record_settings():
    return _record({}).profile.analysis
