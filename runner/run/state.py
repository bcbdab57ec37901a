"""What every part of one run shares: its settings, its folder, its clock state, what it started."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import gevent.event

from ..load.capacity import LoadPlan
from ..load.cpu import SaturationTracker
from ..load.driver import LoadDriver
from ..load.responsiveness import LoopLag
from ..load.scenario import ScenarioPlan
from ..looks import Looks
from ..profile import Profile
from ..progress import Progress
from ..results import RunFolder, SampleWriter
from ..sampling.runtimes.tier import RuntimeTier
from ..sampling.sources import SourceSampler
from ..target import AttachedTarget, RemoteTarget, StartedTarget

__all__ = ["Interrupted", "TargetDied", "PhaseState", "RunState"]


class Interrupted(Exception):
    """Ctrl-C or SIGTERM: the run stops its load and target and finishes its folder."""


class TargetDied(Exception):
    """The target exited during the run."""


@dataclass
class PhaseState:
    """The current phase, the phases so far, and the interrupt requests."""

    phase: str = "starting"
    phases: list[dict[str, Any]] = field(default_factory=list)
    interrupts: int = 0
    interrupted: gevent.event.Event = field(default_factory=gevent.event.Event)


class RunState:
    """The state of one run, shared by its target set-up, its loops and its session."""

    def __init__(
        self, profile: Profile, folder: RunFolder, progress: Progress, scenario: ScenarioPlan | None = None
    ) -> None:
        self.profile = profile
        #: Scenario, identity and TLS of the load and the readiness probe (None: plain echo over ws://).
        self.scenario = scenario
        self.folder = folder
        self.progress = progress
        self.state = PhaseState()
        self.t0 = time.monotonic()
        self.target: StartedTarget | AttachedTarget | RemoteTarget | None = None
        self.driver: LoadDriver | None = None
        self.sampler: SourceSampler | None = None
        #: The port given to a started target's {port} (also for sampling.metrics_url).
        self.port: int | None = None
        #: Sampling sources whose first failure has been noted (each is noted once).
        self._failed_sources: set[str] = set()
        self.writer: SampleWriter | None = None
        self.notes: list[str] = list(scenario.notes) if scenario is not None else []
        self.last_sample: dict[str, Any] = {}
        #: Most connections open at once so far (the ramp is judged against the asked connections).
        self.peak_open = 0
        #: Processes and source addresses of the load (set by run_soak from the capacity pre-check).
        self.load_plan: LoadPlan | None = None
        #: Load-generator CPU per process, in windows; a saturated generator is noted.
        self.saturation = SaturationTracker()
        #: Stalls of this process's gevent loop (the master answers worker heartbeats from it).
        self.loop_lag = LoopLag()
        #: Asked connections against the most open at once (set at the end of the steady phase).
        self.ramp: dict[str, Any] | None = None
        #: memray on a --pid target: "attached" once attached here, "detaching" while the detach runs, else None.
        self.memray_session: str | None = None
        self.memray_detached = gevent.event.Event()
        self._memray_wake: Callable[[], None] | None = None
        #: The runtime heap tier (Node inspector, JVM attach) of a garbage-collected target.
        self.runtime = RuntimeTier(folder.path, self._note)
        #: The steady phase's looks when it is re-judged as it runs (load.duration = "auto", stop_on_leak).
        self.looks: Looks | None = None

    def _note(self, message: str) -> None:
        """A one-line note for the terminal now and for the summary and report later."""
        self.notes.append(message)
        self.progress.note(message)

    def now(self) -> float:
        """Seconds since the run started (monotonic)."""
        return time.monotonic() - self.t0
