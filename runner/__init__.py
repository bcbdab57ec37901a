"""soak-runner: prove that a WebSocket server does not leak under connection churn.

The public API; everything else is private and may change.

Names are imported on first use (PEP 562): ``python -m runner.targets.echo`` must not pay
for numpy, scipy, matplotlib and Jinja at every start, and importing runner.run
imports Locust, which monkey-patches the standard library for gevent.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .analysis import Analysis, MetricResult, Verdict, analyse
    from .errors import LoadError, ProfileError, RunError, RunFolderError, SoakError, TargetError, UsageError
    from .finish import finish_run
    from .profile import Profile, load_profile, parse_profile
    from .results import RunRecord
    from .run import run_soak

#: public name -> module that defines it
_EXPORTS = {
    "Analysis": "analysis",
    "MetricResult": "analysis",
    "Verdict": "analysis",
    "analyse": "analysis",
    "LoadError": "errors",
    "ProfileError": "errors",
    "RunError": "errors",
    "RunFolderError": "errors",
    "SoakError": "errors",
    "TargetError": "errors",
    "UsageError": "errors",
    "finish_run": "finish",
    "run_soak": "run",
    "Profile": "profile",
    "load_profile": "profile",
    "parse_profile": "profile",
    "RunRecord": "results",
}

__all__ = [
    "Analysis",
    "LoadError",
    "MetricResult",
    "Profile",
    "ProfileError",
    "RunError",
    "RunFolderError",
    "RunRecord",
    "SoakError",
    "TargetError",
    "UsageError",
    "Verdict",
    "analyse",
    "finish_run",
    "load_profile",
    "parse_profile",
    "run_soak",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'runner' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
