"""Leak-slope analysis: pure functions from recorded samples to verdicts.

Nothing here starts a process, opens a socket, sleeps or reads a clock; the input is the
data a run recorded, the output is typed results (see :mod:`runner.analysis.model`).
"""

from .model import Analysis, MetricResult, Verdict
from .verdict import analyse, combine

__all__ = ["Analysis", "MetricResult", "Verdict", "analyse", "combine"]
