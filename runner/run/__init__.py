"""The run, split by reason to change.

- :mod:`.session`       the clock, the phases, signals, the outcome (``run_soak``)
- :mod:`.target_setup`  start, attach or reach the target; memray, the runtime probe, the samplers
- :mod:`.loops`         the sampling loop (samples.jsonl) and the progress panel
- :mod:`.preflight`     checks before anything starts: the machine, capacity, CPU, the environment
- :mod:`.meta`          the one writer of meta.json
- :mod:`.state`         what every part of a run shares

Importing this package imports Locust (gevent's monkey-patching): the CLI imports it only to run.
"""

from __future__ import annotations

from ..load import driver as _driver  # noqa: F401  (Locust, i.e. gevent's patching, before anything else)
from .session import RunResult, default_run_dir, run_soak

__all__ = ["run_soak", "RunResult", "default_run_dir"]
