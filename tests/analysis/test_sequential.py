"""Run until decided, pure: the look plan, the decision at a look, and replays of synthetic and recorded series."""

from __future__ import annotations

import math
import sys

import pytest

from runner.analysis import Verdict
from runner.analysis.sequential import (
    FIRST_LOOK,
    MAX_SPACING,
    MIN_LEAK_CYCLES,
    MIN_SPACING,
    decide,
    plan_looks,
    replay_looks,
    stopping_reason,
)
from runner.profile import AnalysisSettings
from tests.analysis.test_verdict import flat, linear, run, warmup
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import detect  # noqa: E402  (bench/detect.py: the recorded series and their replay)

SETTINGS = AnalysisSettings()


# --- the plan ---------------------------------------------------------------------------------


@pytest.mark.parametrize("max_duration", [30.0, 120.0, 1800.0, 8 * 3600.0])
def test_the_plan_spends_exactly_alpha_over_looks_ending_at_the_maximum(max_duration):
    plan = plan_looks(max_duration=max_duration, alpha=0.05)
    assert math.isclose(sum(plan.alphas), 0.05) and plan.spent(plan.count - 1) <= 0.05
    assert plan.times[0] == FIRST_LOOK and plan.times[-1] == max_duration
    gaps = [b - a for a, b in zip(plan.times, plan.times[1:], strict=False)]
    assert all(0 < g <= MAX_SPACING + MIN_SPACING for g in gaps)
    assert plan.alphas[-1] == pytest.approx(0.025)  # half kept for the last look
    assert len(set(plan.alphas[:-1])) <= 1  # interim looks share the rest evenly


def test_a_30_minute_maximum_has_about_two_dozen_looks_and_min_duration_delays_the_first():
    assert 15 <= plan_looks(max_duration=1800, alpha=0.05).count <= 30
    assert plan_looks(max_duration=1800, alpha=0.05, min_duration=120).times[0] == 120
    single = plan_looks(max_duration=5, alpha=0.05)
    assert single.times == (5,) and single.alphas == (0.05,)


# --- the decision on synthetic series (test_verdict's generator: 500 connections a second) ----


def test_a_clear_leak_is_decided_early_at_the_looks_alpha():
    samples = run(linear(2048), noise=200_000, cycles=60_000)  # 120 s of steady churn
    plan = plan_looks(max_duration=120, alpha=0.05)
    looks = replay_looks(samples, SETTINGS, plan)
    last = looks[-1]
    assert last.decided and last.verdict is Verdict.LEAK
    assert last.look < plan.count // 2, f"decided only at look {last.look + 1} of {plan.count}"
    assert MIN_LEAK_CYCLES <= last.cycles < 30_000
    assert last.alpha == plan.alphas[last.look] < 0.05
    level = f"{100 * (1 - last.alpha):.3g}% CI"
    assert level != "95% CI" and level in last.analysis.metrics["rss"].reason  # names the level it was judged at


def test_a_clean_series_is_decided_pass_before_its_maximum():
    samples = run(flat, noise=200_000, cycles=60_000)
    plan = plan_looks(max_duration=120, alpha=0.05)
    looks = replay_looks(samples, SETTINGS, plan)
    assert looks[-1].decided and looks[-1].verdict is Verdict.PASS
    assert looks[-1].look < plan.count - 1
    assert all(d.verdict is not Verdict.LEAK for d in looks)


def test_a_leak_seen_in_too_few_connections_does_not_stop_the_run():
    samples = run(linear(2048), noise=20_000, cycles=4_000)
    plan = plan_looks(max_duration=600, alpha=0.05)
    decision = decide(samples, SETTINGS, plan, 0)
    assert decision.verdict is Verdict.LEAK and not decision.decided  # a warm-up would look the same


def test_a_warm_up_is_never_stopped_on_as_a_leak():
    samples = run(warmup(total=35e6, scale=1500), noise=100_000, cycles=60_000)
    looks = replay_looks(samples, SETTINGS, plan_looks(max_duration=120, alpha=0.05))
    assert not any(d.decided and d.verdict is Verdict.LEAK for d in looks), [d.to_dict() for d in looks]


def test_stop_on_pass_off_keeps_looking_and_stop_on_leak_off_never_stops_on_leak():
    plan = plan_looks(max_duration=120, alpha=0.05)
    clean = replay_looks(run(flat, noise=200_000, cycles=60_000), SETTINGS, plan, stop_on_pass=False)
    assert len(clean) == plan.count and not clean[-1].decided
    leak = replay_looks(run(linear(2048), noise=200_000, cycles=60_000), SETTINGS, plan, stop_on_leak=False)
    assert not any(d.decided for d in leak) and leak[-1].verdict is Verdict.LEAK


def test_the_stopping_reason_names_the_look_and_the_alpha():
    plan = plan_looks(max_duration=120, alpha=0.05)
    decision = {
        "stop_reason": "leak",
        "alpha": plan.alphas[3],
        "look": 3,
        "decided_after_cycles": 12_345,
        "plan": plan.to_dict(),
    }
    text = stopping_reason(decision, Verdict.LEAK)
    assert text is not None and "decided after 12,345 connections at look 4 of" in text and "alpha 0.0" in text
    at_max = dict(decision, stop_reason="max_duration", decided_after_cycles=None)
    undecided = stopping_reason(at_max, Verdict.INCONCLUSIVE)
    assert undecided is not None and "no verdict was certain by load.max_duration" in undecided
    # a look's LEAK that the whole record does not confirm is said to be so, never "decided"
    unconfirmed = stopping_reason(decision, Verdict.INCONCLUSIVE)
    assert unconfirmed is not None and unconfirmed.startswith("a look judged LEAK after 12,345 connections")
    assert "does not confirm it" in unconfirmed and "decided" not in unconfirmed


# --- recorded real series (bench/data/) -------------------------------------------------------

CLEAN = [n for n in detect.CLEAN_BASES if (detect.DATA / f"{n}.jsonl").exists()]
DECOYS = [
    c.name
    for c in detect.CASES
    if c.truth == "pass"
    and (detect.DATA / f"{c.name}.jsonl").exists()
    and c.name not in ("frag",)
    and not c.name.startswith("clean-long")
]


@pytest.mark.skipif(not CLEAN, reason="no recorded clean series in bench/data/")
@pytest.mark.parametrize("name", CLEAN)
def test_recorded_clean_server_is_decided_pass_on_every_tier(name):
    for samples in (detect.load_samples(name), detect.heap_samples(name)):
        steady = [s for s in samples if s.get("phase") == "steady"]
        looks = replay_looks(steady, SETTINGS, plan_looks(max_duration=steady[-1]["t"] - steady[0]["t"], alpha=0.05))
        assert looks[-1].decided and looks[-1].verdict is Verdict.PASS, [d.to_dict() for d in looks]


@pytest.mark.skipif(not DECOYS, reason="no recorded decoy runs in bench/data/")
@pytest.mark.parametrize("name", DECOYS)
def test_recorded_decoys_are_never_stopped_on_as_a_leak(name):
    """A warm-up pool, caches full at 25-75% of the run, a GC sawtooth: recorded runs, every look."""
    for samples in (detect.load_samples(name), detect.heap_samples(name)):
        steady = [s for s in samples if s.get("phase") == "steady"]
        looks = replay_looks(steady, SETTINGS, plan_looks(max_duration=steady[-1]["t"] - steady[0]["t"], alpha=0.05))
        assert not any(d.decided and d.verdict is Verdict.LEAK for d in looks), [d.to_dict() for d in looks]
