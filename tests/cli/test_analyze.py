"""`soak analyze RUN_DIR [thresholds]` re-judges a saved run folder, and the recorded real series
of bench/data/ keep their verdicts (clean stays clean; a synthetic leak on top of them is found)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from runner.analysis import Verdict, analyse
from runner.cli import main
from runner.profile import AnalysisSettings, parse_profile
from runner.results import RunFolder, write_json
from tests.analysis.test_verdict import linear, run
from tests.conftest import ROOT, soak

BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))
import detect  # noqa: E402  (bench/detect.py: the replay helpers)


def make_run_folder(path: Path, samples: list[dict]) -> Path:
    """A complete run folder as `soak run` leaves it, with the given samples."""
    profile = parse_profile({"target": {"command": "{python} -m runner.targets.echo --port {port}"}}, name="synthetic")
    folder = RunFolder(path)
    folder.create()
    write_json(folder.meta, {"profile": profile.to_dict(), "started_at": "2026-11-28T00:00:00Z"})
    folder.samples.write_text("".join(json.dumps(s) + "\n" for s in samples))
    write_json(folder.run, {"phases": [], "target": {"pid": 1, "exit_code": 0, "crashed": False}})
    return path


def summary(path: Path) -> dict:
    return json.loads((path / "summary.json").read_text())


def test_analyze_rejudges_with_new_thresholds(tmp_path):
    folder = make_run_folder(tmp_path / "run", run(linear(2048), noise=200_000))
    leak = soak("analyze", str(folder), "--quiet")  # the real command, once
    assert leak.returncode == 1, leak.stderr
    assert summary(folder)["metrics"]["rss"]["verdict"] == "leak"
    assert main(["analyze", str(folder), "--rss-budget", "100000", "--quiet"]) == 0
    assert summary(folder)["verdict"] == "pass"


def test_analyze_per_hour_budget(tmp_path):
    folder = make_run_folder(tmp_path / "run", run(linear(100), noise=10_000))
    assert main(["analyze", str(folder), "--quiet"]) == 0
    assert main(["analyze", str(folder), "--budget-per-hour", "10000000", "--quiet"]) == 1
    assert "per-hour budget" in summary(folder)["reasons"][0]


@pytest.mark.parametrize(
    "args, message",
    [(["--alpha", "0.7"], "--alpha: must be below 0.5"), (["--rss-budget", "lots"], "--rss-budget: expected a number")],
)
def test_analyze_bad_threshold_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    folder = make_run_folder(tmp_path / "run", run(linear(100), cycles=2_000))
    assert main(["analyze", str(folder), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err


# --- recorded real series (bench/data/, made by `python bench/detect.py record`) -----------------

CLEAN = [name for name in detect.CLEAN_BASES if (detect.DATA / f"{name}.jsonl").exists()]


@pytest.mark.skipif(not CLEAN, reason="no recorded clean series in bench/data/")
@pytest.mark.parametrize("name", CLEAN)
def test_recorded_clean_server_is_not_a_leak(name):
    analysis = analyse(detect.load_samples(name), AnalysisSettings())
    assert analysis.verdict is not Verdict.LEAK, analysis.reasons


@pytest.mark.skipif(not CLEAN, reason="no recorded clean series in bench/data/")
@pytest.mark.parametrize("name", CLEAN)
def test_whole_connection_leak_on_a_recorded_clean_server_is_found_within_5k_cycles(name):
    base = detect.load_samples(name)
    window = detect.replay_samples(
        base,
        metric="rss",
        cycles=5_000,
        start_at_beginning=True,
        leak_bytes=8192,
        every=1,
        rng=np.random.default_rng(0),
    )
    assert window is not None
    added = window[-1]["rss"] - next(
        s["rss"] for s in base if s["closed"] == window[-1]["closed"] and s["phase"] == "steady"
    )
    origin = next(s["closed"] for s in base if s["phase"] == "steady")  # the window starts at the first steady sample
    assert added == pytest.approx(8192 * (window[-1]["closed"] - origin))
    result = analyse(window, AnalysisSettings()).metrics["rss"]
    assert result.verdict is Verdict.LEAK, result.reason
    assert result.ci_low < 8192 * 1.2 and result.ci_high > 8192 * 0.8
