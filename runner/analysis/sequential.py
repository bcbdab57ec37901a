"""Run until decided: the steady phase re-judged at planned looks, stopped once the verdict is certain.

A verdict checked at many looks is not a 5% test: with each look a new chance of a false
LEAK (or a false PASS), the error rate over the whole run grows with the number of looks.
This module keeps it at ``alpha`` with **alpha spending by the union bound** over a look
schedule fixed before the run:

- :func:`plan_looks` places the looks on a geometric grid of steady-phase time (10 s, then
  each look 25% later than the previous, at least 5 s and at most 10 min apart, the last one
  exactly at the planned end), so a run of 30 minutes has about two dozen looks and a
  decision is taken at most a quarter of its age late.
- Half of ``alpha`` is kept for the last look (a run that goes the whole way is judged
  almost as it is today); the other half is split evenly over the interim looks (a
  Pocock-shaped split: early looks, where a certain leak should stop, get as much as late
  ones). By the union bound the chance of any false verdict over all looks is at most the
  sum of the per-look alphas, ``alpha``, whatever the correlation between looks.
- Each look is the same analysis as ``soak analyze`` (:func:`runner.analysis.verdict.analyse`)
  with that look's alpha: the trend test, the Theil-Sen interval and the late half's interval
  all at the stricter level; only the deceleration check, which protects a levelling server
  from a false LEAK, stays at the profile's alpha (:func:`at_look`). :func:`decide` is the
  only decision; the run only calls it.

A look is decided when the analysis says LEAK and the run has churned at least
:data:`MIN_LEAK_CYCLES` connections (a leak is established: a warm-up, a filling cache or a GC
period had room to level off), or PASS with every passing metric's late-half interval within
its budget too (the server is not growing now).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from ..profile import AnalysisSettings
from .model import Analysis, Verdict
from .verdict import analyse

__all__ = [
    "LookPlan",
    "Decision",
    "plan_looks",
    "decide",
    "steady_cycles",
    "at_look",
    "FIRST_LOOK",
    "LOOK_RATIO",
    "MIN_SPACING",
    "MAX_SPACING",
    "FINAL_SHARE",
    "MIN_DECISION_SAMPLES",
    "MIN_LEAK_CYCLES",
    "STOP_REASONS",
    "stopping_reason",
    "replay_looks",
]

#: Seconds of steady churn before the first look.
FIRST_LOOK = 10.0
#: Each look this much later than the previous one (steady-phase time)...
LOOK_RATIO = 1.25
#: ...but at least this many seconds after it...
MIN_SPACING = 5.0
#: ...and at most this many (a nightly of 8 h still looks every 10 minutes).
MAX_SPACING = 600.0
#: Share of alpha kept for the last planned look; the rest is split over the interim looks.
FINAL_SHARE = 0.5
#: Fewest samples each deciding metric's analysed window needs before a look may stop on it:
#: with fewer, the late half is too short to show a warm-up or a filling cache slowing down (a
#: transient still rising reads as a leak) or a start-up dip levelling off (it reads as a PASS).
MIN_DECISION_SAMPLES = 20
#: Fewest steady connections before a look may stop on LEAK. Within fewer, a warm-up pool, a
#: cache still filling or a GC period as long as the window is, sample for sample, a leak: the
#: fixed-window benchmark (bench/detect.py table) measured 91-99% false LEAK for a GC sawtooth
#: and up to 31% for a filling cache at 1K cycles, and 0-2% on every decoy from 5K cycles on.
MIN_LEAK_CYCLES = 5_000
#: Why a steady phase ended: decided early (leak, pass), or its planned length ran out.
STOP_REASONS = ("leak", "pass", "max_duration", "duration", "interrupted", "error")


@dataclass(frozen=True)
class LookPlan:
    """Planned looks: seconds into the steady phase, and the alpha each look may spend."""

    times: tuple[float, ...]
    alphas: tuple[float, ...]
    alpha: float

    @property
    def count(self) -> int:
        return len(self.times)

    def spent(self, look: int) -> float:
        """Alpha spent by looks 0..look (never more than the total)."""
        return min(self.alpha, math.fsum(self.alphas[: look + 1]))

    def to_dict(self) -> dict[str, Any]:
        return {"times": list(self.times), "alphas": list(self.alphas), "alpha": self.alpha}


@dataclass(frozen=True)
class Decision:
    """The verdict at one look and whether it ends the steady phase."""

    look: int
    alpha: float
    analysis: Analysis
    decided: bool
    #: Closed connections of the steady phase analysed at this look.
    cycles: int
    #: Verdict per metric at this look (for the terminal panel and the report).
    tiers: dict[str, str] = field(default_factory=dict)

    @property
    def verdict(self) -> Verdict:
        return self.analysis.verdict

    def to_dict(self) -> dict[str, Any]:
        return {
            "look": self.look,
            "alpha": self.alpha,
            "verdict": self.verdict.value,
            "decided": self.decided,
            "cycles": self.cycles,
            "tiers": dict(self.tiers),
        }


def plan_looks(*, max_duration: float, alpha: float, min_duration: float = 0.0) -> LookPlan:
    """The look schedule of a steady phase of at most ``max_duration`` seconds (pure).

    Looks start at ``max(min_duration, FIRST_LOOK)`` and grow geometrically; the last is at
    ``max_duration``. A phase shorter than the first look has one look, at its end, with all of alpha.
    """
    first = max(min_duration, FIRST_LOOK)
    times: list[float] = []
    t = first
    while t < max_duration - MIN_SPACING / 2:
        times.append(round(t, 3))
        t = min(max(t * LOOK_RATIO, t + MIN_SPACING), t + MAX_SPACING)
    times.append(round(max_duration, 3))
    if len(times) == 1:
        return LookPlan(times=tuple(times), alphas=(alpha,), alpha=alpha)
    interim = alpha * (1 - FINAL_SHARE) / (len(times) - 1)
    return LookPlan(times=tuple(times), alphas=tuple([interim] * (len(times) - 1) + [alpha * FINAL_SHARE]), alpha=alpha)


def at_look(settings: AnalysisSettings, alpha: float) -> AnalysisSettings:
    """The analysis settings of a look: ``alpha`` for the evidence, the profile's alpha for the
    deceleration check (a stricter level must not weaken what protects a levelling server)."""
    return replace(settings, alpha=alpha, deceleration_alpha=settings.deceleration_alpha or settings.alpha)


def steady_cycles(samples: Sequence[Mapping[str, Any]]) -> int:
    """Connections closed during the steady phase of ``samples``."""
    closed = [s["closed"] for s in samples if s.get("phase") == "steady" and s.get("closed") is not None]
    return int(closed[-1] - closed[0]) if closed else 0


def _late_within_budget(analysis: Analysis) -> bool:
    """Every passing metric's late-half interval lies within its budget (it is not growing now)."""
    for result in analysis.metrics.values():
        if result.verdict is not Verdict.PASS:
            continue
        late_high = result.details.get("late_ci_high")
        budget = result.budget_per_connection
        if late_high is None or budget is None or not late_high <= budget:
            return False
    return True


def decide(
    samples: Sequence[Mapping[str, Any]],
    settings: AnalysisSettings,
    plan: LookPlan,
    look: int,
    *,
    stop_on_leak: bool = True,
    stop_on_pass: bool = True,
    runtime: str | None = None,
) -> Decision:
    """The verdict on the samples so far at look ``look`` of ``plan``, and whether it is decided (pure).

    The analysis is :func:`~runner.analysis.verdict.analyse` with ``alpha`` replaced by the
    look's share. LEAK decides when ``stop_on_leak`` and the steady phase closed at least
    :data:`MIN_LEAK_CYCLES` connections; PASS decides when ``stop_on_pass`` and every passing
    metric's late half is within budget as well. Either needs :data:`MIN_DECISION_SAMPLES`
    samples in each deciding metric's window.
    """
    alpha = plan.alphas[look]
    analysis = analyse(samples, at_look(settings, alpha), runtime=runtime)
    cycles = steady_cycles(samples)
    deciding = [r for r in analysis.metrics.values() if r.verdict is analysis.verdict]
    enough = bool(deciding) and all(r.samples_used >= MIN_DECISION_SAMPLES for r in deciding)
    decided = enough and (
        (stop_on_leak and analysis.verdict is Verdict.LEAK and cycles >= MIN_LEAK_CYCLES)
        or (stop_on_pass and analysis.verdict is Verdict.PASS and _late_within_budget(analysis))
    )
    tiers = {name: result.verdict.value for name, result in analysis.metrics.items()}
    return Decision(look=look, alpha=alpha, analysis=analysis, decided=decided, cycles=cycles, tiers=tiers)


def stopping_reason(decision: Mapping[str, Any], verdict: Verdict) -> str | None:
    """The sentence a summary adds about how the steady phase ended (``decision`` from run.json)."""
    plan = decision.get("plan") or {}
    looks = len(plan.get("times") or [])
    reason = decision.get("stop_reason")
    alpha = decision.get("alpha")
    level = f"alpha {alpha:.2g}" if isinstance(alpha, (int, float)) else "its alpha"
    method = f"alpha spent over {looks} planned looks (union bound, total {plan.get('alpha', 0):g})"
    cycles = decision.get("decided_after_cycles")
    if reason in ("leak", "pass") and cycles is not None:
        at = f"after {cycles:,} connections at look {decision.get('look', 0) + 1} of {looks}"
        if verdict.value != reason:  # the whole record (every checkpoint, the drain) did not confirm the look
            return (
                f"a look judged {reason.upper()} {at} and ended the steady phase, but the whole record, judged "
                f"at {level}, does not confirm it: raise load.min_duration or use a fixed load.duration"
            )
        return f"decided {at}: the verdict is the same analysis at {level}, {method}"
    if reason == "max_duration":
        if verdict is Verdict.INCONCLUSIVE:
            return f"no verdict was certain by load.max_duration ({looks} looks); judged at {level}, {method}"
        return f"the verdict became certain only at load.max_duration; judged at {level}, {method}"
    if reason == "duration":
        return f"the steady phase ran its planned length with stop_on_leak; judged at {level}, {method}"
    return None


def replay_looks(
    samples: Sequence[Mapping[str, Any]],
    settings: AnalysisSettings,
    plan: LookPlan,
    *,
    stop_on_leak: bool = True,
    stop_on_pass: bool = True,
) -> list[Decision]:
    """The looks a run would have taken over recorded ``samples``, up to the first decided one (pure).

    Look ``k`` sees the samples up to ``plan.times[k]`` seconds after the first steady sample,
    as the run does; the benchmark and the tests replay recorded series through this.
    """
    steady = [s for s in samples if s.get("phase") == "steady"]
    if not steady:
        return []
    start = float(steady[0]["t"])
    decisions = []
    for look, at in enumerate(plan.times):
        prefix = [s for s in samples if float(s["t"]) - start <= at]  # nothing after the look: no drain yet
        decision = decide(prefix, settings, plan, look, stop_on_leak=stop_on_leak, stop_on_pass=stop_on_pass)
        decisions.append(decision)
        if decision.decided:
            break
    return decisions
