"""soak-runner: prove that a WebSocket server does not leak under connection churn.

The public API; everything else is private and may change.
"""

from .analysis import Analysis, MetricResult, Verdict, analyse
from .errors import (
    LoadError,
    ProfileError,
    RunError,
    RunFolderError,
    SoakError,
    TargetError,
    UsageError,
)
from .finish import finish_run
from .profile import Profile, load_profile, parse_profile
from .results import RunRecord

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


def run_soak(*args, **kwargs):  # type: ignore[no-untyped-def]
    """Run one soak; see :func:`runner.orchestrator.run_soak`.

    Imported lazily: the orchestrator imports Locust, which monkey-patches the standard
    library for gevent, and that must not happen just because ``runner`` was imported.
    """
    from .orchestrator import run_soak as _run_soak

    return _run_soak(*args, **kwargs)
