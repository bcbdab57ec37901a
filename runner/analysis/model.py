"""The typed results of an analysis."""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Verdict", "MetricResult", "Analysis", "METRICS", "MEMORY_METRICS", "EXIT_CODES"]

#: Metrics the analysis looks at, in report order.
METRICS = ("heap", "native", "uss", "rss", "fds", "threads")
#: ``native``: what a GC runtime reports outside its heap (Node Buffers/external), judged with the RSS budget.
MEMORY_METRICS = ("heap", "native", "uss", "rss")


class Verdict(str, enum.Enum):
    PASS = "pass"
    LEAK = "leak"
    INCONCLUSIVE = "inconclusive"
    ERROR = "error"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self]


EXIT_CODES = {Verdict.PASS: 0, Verdict.LEAK: 1, Verdict.ERROR: 3, Verdict.INCONCLUSIVE: 4}


@dataclass(frozen=True, kw_only=True)
class MetricResult:
    """The verdict on one metric, with the figures behind it."""

    name: str
    unit: str  # "bytes" or "count"
    verdict: Verdict
    reason: str
    slope_per_connection: float | None = None
    slope_per_hour: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    budget_per_connection: float | None = None
    intercept: float | None = None
    #: Closed-connection range of the analysed window (for charts: the fitted line).
    window: tuple[int, int] | None = None
    samples_used: int = 0
    #: When INCONCLUSIVE: roughly how many more connection cycles would decide it (None: unknown).
    cycles_needed: int | None = None
    #: Figures behind the verdict: warm-up cut, trend p-value, late-half slope, drain check.
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data; an unbounded interval end (too little data) becomes ``None``."""
        data = _finite(asdict(self))
        data["verdict"] = self.verdict.value
        data["window"] = list(self.window) if self.window else None
        return data


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (JSON has no infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


@dataclass(frozen=True, kw_only=True)
class Analysis:
    """The overall verdict and the per-metric results it was drawn from."""

    verdict: Verdict
    reasons: list[str]
    metrics: dict[str, MetricResult]
    notes: list[str] = field(default_factory=list)
    #: When INCONCLUSIVE: the most cycles any undecided metric needs (None: unknown or decided).
    cycles_needed: int | None = None

    @property
    def exit_code(self) -> int:
        return self.verdict.exit_code
