"""The run: the only place that owns the clock and the phases.

baseline (idle) -> ramp -> steady churn -> drain (load stops, connections close) -> cooldown.
Samples stream to disk as they are taken; whatever happens (target crash, Ctrl-C, a load
generator failure), the load is stopped, the target is stopped, and the run folder is
finished so ``soak analyze`` and ``soak report`` can work from it.
"""

from __future__ import annotations

from .load import driver as _driver_module  # noqa: F401  (import Locust, i.e. gevent patching, first)

import functools
import os
import platform
import resource
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import gevent
import gevent.event
import psutil

from .errors import LoadError, SoakError, TargetError, UsageError
from .finish import finish_run
from .load.capacity import LoadPlan, plan_load, read_port_range
from .load.client import WebSocketClient
from .load.cpu import SaturationTracker
from .load.counters import latency_summary
from .load.driver import LoadDriver
from .load.scenario import ScenarioPlan, build_plan
from .load.worker import raise_fd_limit
from .looks import Looks
from .profile import Profile
from .progress import Progress
from .redact import redact_command, redact_data
from .results import FORMAT_VERSION, RunFolder, SampleWriter, write_json
from .sampling.memray_attach import attach as memray_attach, detach as memray_detach
from .sampling.memray_capture import MemrayFiles
from .sampling.memray_run import MEMORY_INTERVAL_MS, MEMRAY_STARTUP_FACTOR, checkpoint_interval, plan_memray, request_freeze
from .sampling.process import TreeSampler
from .target import AttachedTarget, StartedTarget, free_port, port_in_use, substitute

__all__ = ["run_soak", "RunResult", "default_run_dir"]


@dataclass
class RunResult:
    folder: Path
    summary: dict[str, Any]

    @property
    def exit_code(self) -> int:
        return int(self.summary["exit_code"])


#: Longest wait, after a second Ctrl-C, for a memray detach already under way (gdb takes ~1 s).
DETACH_WAIT = 10.0


class _Interrupted(Exception):
    pass


class _TargetDied(Exception):
    pass


def default_run_dir(profile: Profile, root: Path = Path("reports")) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in profile.name) or "run"
    return root / f"{stamp}-{safe}"


def _raise_fd_limit() -> tuple[int, int]:
    """Soft and hard fd limits after raising the soft one (every connection's socket is an fd)."""
    return raise_fd_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def _environment(fd_limit: tuple[int, int]) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("soak-runner", "locust", "websockets", "memray", "psutil", "gevent", "numpy", "scipy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "fd_limit": {"soft": fd_limit[0], "hard": fd_limit[1]},
        "versions": versions,
    }


@dataclass
class _State:
    phase: str = "starting"
    phases: list[dict[str, Any]] = field(default_factory=list)
    interrupts: int = 0
    interrupted: gevent.event.Event = field(default_factory=gevent.event.Event)


class _Run:
    """One soak run; :func:`run_soak` is its public face."""

    def __init__(self, profile: Profile, folder: RunFolder, progress: Progress, scenario: ScenarioPlan | None = None) -> None:
        self.profile = profile
        #: Scenario, identity and TLS of the load and the readiness probe (None: plain echo over ws://).
        self.scenario = scenario
        self.folder = folder
        self.progress = progress
        self.state = _State()
        self.t0 = time.monotonic()
        self.target: StartedTarget | AttachedTarget | None = None
        self.driver: LoadDriver | None = None
        self.sampler: TreeSampler | None = None
        self.writer: SampleWriter | None = None
        self.notes: list[str] = list(scenario.notes) if scenario is not None else []
        self.last_sample: dict[str, Any] = {}
        #: Processes and source addresses of the load (set by run_soak from the capacity pre-check).
        self.load_plan: LoadPlan | None = None
        #: Load-generator CPU per process, in windows; a saturated generator is noted.
        self.saturation = SaturationTracker()
        #: memray on a --pid target: "attached" once attached here, "detaching" while the detach runs, else None.
        self.memray_session: str | None = None
        self.memray_detached = gevent.event.Event()
        self._memray_wake: Callable[[], None] | None = None
        #: The steady phase's looks when it is re-judged as it runs (load.duration = "auto", stop_on_leak).
        self.looks: Looks | None = None

    # --- clock and phases ------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic() - self.t0

    def enter(self, phase: str) -> None:
        if self.state.phases:
            self.state.phases[-1]["end"] = round(self.now(), 3)
        self.state.phase = phase
        self.state.phases.append({"name": phase, "start": round(self.now(), 3), "end": None})
        self.progress.note(f"phase {phase} (t={self.now():.0f}s)")

    def wait(self, seconds: float, *, until: Callable[[], bool] | None = None, allow_interrupt: bool = True) -> bool:
        """Sleep up to ``seconds``; True when ``until()`` became true first."""
        deadline = time.monotonic() + seconds
        while True:
            if allow_interrupt and self.state.interrupted.is_set():
                raise _Interrupted()
            if self.target is not None and self.target.poll() is not None:
                raise _TargetDied()
            if self.driver is not None:
                self.driver.check()
            if until is not None and until():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            gevent.sleep(min(0.1, remaining))

    # --- signals ---------------------------------------------------------------------

    def _on_signal(self) -> None:
        self.state.interrupts += 1
        if self.state.interrupts == 1:
            self.progress.note("interrupted: stopping the load and the target, then writing the report (press Ctrl-C again to stop at once)")
            self.state.interrupted.set()
        else:
            self.progress.note("stopping at once; the samples taken so far are in " + str(self.folder.path))
            if isinstance(self.target, StartedTarget):
                self.target.stop(grace=0)
            # an attached server keeps serving: do not leave it tracked (nor kill soak mid-detach)
            if self.memray_session == "detaching":
                self.memray_detached.wait(timeout=DETACH_WAIT)
            else:
                self._detach_memray()
            os._exit(130)

    # --- sampling --------------------------------------------------------------------

    def _sample_loop(self) -> None:
        assert self.sampler is not None and self.writer is not None
        interval = self.profile.sampling.interval
        next_tick = time.monotonic()
        while True:
            metrics = self.sampler.sample()
            counters = self.driver.counters if self.driver else None
            sample = {
                "t": round(self.now(), 3),
                "wall": round(time.time(), 3),
                "phase": self.state.phase,
                **(counters.snapshot() if counters else {"opened": 0, "closed": 0, "open": 0, "errors": 0}),
                **(metrics or {"rss": None, "uss": None, "fds": None, "threads": None, "cpu": None, "procs": 0}),
                "heap": None,
            }
            if counters:
                latencies = latency_summary(counters.take_latencies())
                if latencies:
                    sample["lat"] = latencies
            if self.driver is not None:
                for process, (clock, cpu_seconds) in self.driver.generator_cpu().items():
                    self.saturation.feed(process, clock, cpu_seconds, self.state.phase)
                sample["load_cpu"] = self.saturation.current  # busiest load process, % of one core
            self.writer.write(sample)
            self.last_sample = sample
            if self.target is not None:
                self.target.remember(self.sampler.seen_pids)
            if metrics is None:
                return  # the target is gone; the main loop notices
            next_tick += interval
            delay = next_tick - time.monotonic()
            if delay < 0:  # fell behind (a slow sample): skip ticks rather than burst
                next_tick = time.monotonic()
                delay = 0
            gevent.sleep(delay)

    def _progress_loop(self) -> None:
        previous = (self.now(), 0)
        while True:
            gevent.sleep(1.0)
            counters = self.driver.counters if self.driver else None
            if counters is None:
                continue
            _trim_per_second_counts(self.driver.environment.stats)
            now = self.now()
            rate = (counters.closed - previous[1]) / max(now - previous[0], 1e-9)
            previous = (now, counters.closed)
            remaining = None
            if self.state.phase == "steady" and self.state.phases:
                remaining = max(0.0, self.profile.load.duration - (now - self.state.phases[-1]["start"]))
            self.progress.update(
                {
                    "phase": self.state.phase,
                    "elapsed": now,
                    "remaining": remaining,
                    "open": counters.open,
                    "closed": counters.closed,
                    "rate": rate,
                    "errors": counters.errors,
                    "rss": self.last_sample.get("rss"),
                }
            )

    # --- the run ---------------------------------------------------------------------

    def _note(self, message: str) -> None:
        """A one-line note for the terminal now and for the summary and report later."""
        self.notes.append(message)
        self.progress.note(message)

    def _start_target(self) -> str:
        target = self.profile.target
        if target.pid is not None:
            attached = AttachedTarget(target.pid)
            self.target = attached
            url = target.url
            if url is None:
                ports = attached.listening_ports()
                if len(ports) != 1:
                    raise UsageError(
                        f"cannot tell which URL process {target.pid} serves (listening ports: {ports or 'none'})",
                        hint="pass --url",
                    )
                url = f"ws://127.0.0.1:{ports[0]}/"
                self.notes.append(f"--pid {target.pid}: load goes to {url} (its only listening port)")
            self._attach_memray(attached, url)
            return url
        assert target.command is not None and target.url is not None
        port = free_port() if any("{port}" in p for p in target.command) else None
        argv = substitute(target.command, port=port)
        url = target.url.replace("{port}", str(port)) if port is not None else target.url
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        memray_plan = plan_memray(target, argv, self.folder.path, sampling_interval=self.profile.sampling.interval,
                                  max_bytes=self._memray_max_bytes())
        if memray_plan.note:
            self._note(memray_plan.note)
        started = StartedTarget(memray_plan.argv, self.folder.target_log, env=env)
        self.target = started
        meta = _read_json(self.folder.meta)
        meta["target"] = {"command": argv, "url": url, "pid": started.pid, "memray": memray_plan.tracked}
        write_json(self.folder.meta, redact_data(meta))
        self.progress.note(f"target started (pid {started.pid}): {' '.join(redact_command(argv))}")
        probe = functools.partial(self._handshake, url)
        ready_timeout = self.profile.target.ready_timeout * (MEMRAY_STARTUP_FACTOR if memray_plan.tracked else 1)
        started.wait_ready(probe, ready_timeout, cancelled=self.state.interrupted.is_set)
        if self.state.interrupted.is_set():
            raise _Interrupted()
        if memray_plan.tracked:
            request_freeze(self.folder.path)
        return url

    def _handshake(self, url: str) -> None:
        """One WebSocket handshake and close (with the scenario's identity and TLS when it has them)."""
        if self.scenario is not None:
            self.scenario.probe(url)
        else:
            _probe(url)

    def _memray_max_bytes(self) -> int | None:
        max_mb = self.profile.target.memray_max_mb
        return int(max_mb * 1e6) if max_mb is not None else None

    def _attach_memray(self, attached: AttachedTarget, url: str) -> None:
        """Track a --pid target with memray when the profile allows it (a note says why not)."""
        target = self.profile.target
        tracked = False
        if target.memray is not False:
            self._memray_wake = functools.partial(self._handshake, url)
            self.progress.note(f"attaching memray to pid {attached.pid}")
            result = memray_attach(
                attached.pid,
                MemrayFiles(self.folder.path),
                checkpoint_interval=checkpoint_interval(self.profile.sampling.interval),
                memory_interval_ms=MEMORY_INTERVAL_MS,
                max_bytes=self._memray_max_bytes(),
                python_allocators=target.memray_python_allocators,
                wake=self._memray_wake,  # gdb gets in when the server does something
            )
            tracked = result.tracked
            self.memray_session = "attached" if tracked else None
            if result.note:
                self._note(result.note)
        try:
            command: list[str] | None = attached.process.cmdline()
        except psutil.Error:
            command = None
        meta = _read_json(self.folder.meta)
        meta["target"] = {"command": command, "url": url, "pid": attached.pid, "memray": tracked, "attached": True}
        write_json(self.folder.meta, redact_data(meta))
        if tracked:
            self._note(f"memray attached to pid {attached.pid} while it ran: allocations made before the attach are not seen")
            request_freeze(self.folder.path)  # the target already serves: freeze its start-up heap now

    def _detach_memray(self) -> None:
        """Stop the --pid target's tracking session, so its capture is finalised (never raises)."""
        if self.memray_session != "attached" or self.target is None:
            return
        self.memray_session = "detaching"
        try:
            note = memray_detach(self.target.pid, wake=self._memray_wake)
        finally:
            self.memray_session = None
            self.memray_detached.set()
        if note:
            self._note(note)

    def execute(self) -> dict[str, Any]:
        """Carry out the run; returns the ``run.json`` content (never raises for target/load faults)."""
        error: dict[str, Any] | None = None
        interrupted = False
        handlers = [gevent.signal_handler(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)]
        workers = []
        try:
            self.enter("starting")
            url = self._start_target()
            assert self.target is not None
            self.sampler = TreeSampler(self.target.pid, uss=self.profile.sampling.uss, interval=self.profile.sampling.interval)
            self.writer = SampleWriter(self.folder.samples)
            self.driver = LoadDriver(
                url,
                self.profile.load,
                stop_timeout=self.profile.phases.drain,
                scenario=self.scenario,
                plan=self.load_plan,
                log_dir=self.folder.path,
                profile_data=self.profile.to_dict(),
            )
            if not self.wait(self.profile.load.worker_timeout, until=self.driver.ready):
                raise LoadError(
                    f"load workers missing after {self.profile.load.worker_timeout:g}s: {self.driver.waiting_for()}",
                    hint="start the remote ones with `soak worker --master HOST:PORT`, or raise load.worker_timeout",
                )
            workers.append(gevent.spawn(self._sample_loop))
            workers.append(gevent.spawn(self._progress_loop))
            self.enter("baseline")
            self.wait(self.profile.phases.baseline)
            self.enter("ramp")
            self.driver.start()
            ramp_limit = self.profile.load.users / self.profile.load.spawn_rate * 3 + 30
            if not self.wait(ramp_limit, until=lambda: self.driver.ramped):
                self.notes.append(f"ramp did not reach {self.profile.load.users} users within {ramp_limit:.0f}s")
            self.enter("steady")
            self._steady()
            self._drain()
        except _Interrupted:
            interrupted = True
            self._drain(allow_interrupt=False, quick=True)
        except _TargetDied:
            error = {"kind": "target_died", "message": "the target died during the " + self.state.phase + " phase"}
            self._drain(allow_interrupt=False, quick=True)
        except TargetError as exc:
            error = {"kind": "target_error", "message": str(exc), "log_tail": exc.log_tail}
        except LoadError as exc:
            error = {"kind": "load_error", "message": str(exc)}
            self._drain(allow_interrupt=False, quick=True)
        finally:
            if self.state.phases:
                self.state.phases[-1]["end"] = round(self.now(), 3)
            for worker in workers:
                worker.kill(block=True, timeout=5)
            if self.driver is not None:
                self.driver.quit()
                write_json(self.folder.locust_stats, redact_data(self.driver.stats()))
            self._detach_memray()
            if self.target is not None:
                self.target.stop(self.profile.target.stop_timeout)
            if self.writer is not None:
                self.writer.close()
            for handler in handlers:
                handler.cancel()
            self.progress.close()
        saturated = self.saturation.note()
        if saturated:
            self.notes.append(saturated)
        outcome = self.target.outcome().to_dict() if self.target is not None else {"pid": None, "exit_code": None, "crashed": False}
        if error and error["kind"] == "target_error":
            outcome["log_tail"] = error.get("log_tail", [])
        return {
            "format": FORMAT_VERSION,
            "ended_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "phases": self.state.phases,
            "interrupted": interrupted,
            "error": error,
            "target": outcome,
            "notes": self.notes + (self.looks.notes if self.looks else []),
            "decision": self._decision(interrupted, error),
            "samples": self.writer.count if self.writer else 0,
            "load_generator": {
                **self.saturation.to_dict(),
                "workers": self.load_plan.workers if self.load_plan else 0,
                "remote_workers": self.load_plan.remote_workers if self.load_plan else 0,
                "source_addresses": list(self.load_plan.source_addresses) if self.load_plan else [],
            },
        }

    def _steady(self) -> None:
        """Steady churn for load.duration, or until a look decides the verdict (runner.looks)."""
        if not self.profile.load.looks:
            self.wait(self.profile.load.duration)
            return
        start = self.state.phases[-1]["start"]
        self.looks = Looks(self.profile, self.folder, clock=lambda: self.now() - start, progress=self.progress)
        planned = f"steady churn: {self.profile.load.planned}, judged at {self.looks.plan.count} planned looks"
        self.progress.note(planned)
        judge = gevent.spawn(self.looks.loop)
        try:
            self.wait(self.profile.load.duration, until=self.looks.is_decided)
        finally:
            judge.kill(block=False)

    def _decision(self, interrupted: bool, error: dict[str, Any] | None) -> dict[str, Any]:
        """run.json's ``decision``: why the steady phase ended (and, with looks, the alpha of the final verdict)."""
        if interrupted or error:
            reason = "interrupted" if interrupted else "error"
        else:
            reason = self.looks.stop_reason() if self.looks else "duration"
        return self.looks.record(reason) if self.looks is not None else {"stop_reason": reason}

    def _drain(self, *, allow_interrupt: bool = True, quick: bool = False) -> None:
        """Stop the users, wait for their connections to close, then idle through the cooldown."""
        if self.driver is None:
            return
        self.enter("drain")
        stopping = self.driver.stop_users()
        drain = min(self.profile.phases.drain, 5.0) if quick else self.profile.phases.drain
        try:
            closed = self.wait(drain, until=lambda: stopping.dead and self.driver.counters.open == 0, allow_interrupt=allow_interrupt)
            if not closed:
                self.notes.append(f"{self.driver.counters.open} connections were still open {drain:g}s after the load stopped")
            if not quick:
                self.enter("cooldown")
                self.wait(self.profile.phases.cooldown, allow_interrupt=allow_interrupt)
        except _TargetDied:
            if not quick:
                raise
        except LoadError as exc:
            if not quick:
                raise
            # a quick drain follows a fault that is already recorded: a load failure now
            # (the dead worker is still dead) must not keep the run from being finished
            self.notes.append(f"while stopping the load: {exc}")
        finally:
            stopping.kill(block=False)


#: Seconds of Locust's per-second request counts kept (its current-RPS figures look at the last 12).
PER_SECOND_COUNTS_KEPT = 60


def _trim_per_second_counts(stats: Any, keep: int = PER_SECOND_COUNTS_KEPT) -> None:
    """Drop Locust's per-second request counts older than ``keep`` seconds.

    Locust keeps ``num_reqs_per_sec`` and ``num_fail_per_sec`` for every second of a run and
    every request name: about 1.3 MB an hour, the one thing in the runner that grew in the
    30-minute self-soak (bench/selfsoak.py). Nothing soak reports reads seconds that old.
    """
    for entry in [*stats.entries.values(), stats.total]:
        for counts in (entry.num_reqs_per_sec, entry.num_fail_per_sec):
            if len(counts) > keep:
                horizon = max(counts) - keep
                for second in [s for s in counts if s < horizon]:
                    del counts[second]


def _probe(url: str) -> None:
    client = WebSocketClient(url, timeout=2.0)
    try:
        client.connect()
        client.close()
    finally:
        client.abort()


def _read_json(path: Path) -> dict[str, Any]:
    import json

    return json.loads(path.read_text(encoding="utf-8"))


def _preflight(profile: Profile) -> None:
    """Checks that need the machine but start nothing: a clear error before any folder is made."""
    target = profile.target
    if target.command is not None:
        program = substitute(target.command[:1], port=None)[0]
        if shutil.which(program) is None and not Path(program).exists():
            raise UsageError(f"target command not found: {program!r}", hint="check target.command or --target")
        if "{port}" not in " ".join(target.command) and target.url is not None:
            from urllib.parse import urlsplit

            parts = urlsplit(target.url)
            if parts.hostname in ("127.0.0.1", "localhost") and parts.port and port_in_use(parts.port):
                raise UsageError(
                    f"port {parts.port} is already in use, so the target cannot listen on it",
                    hint="stop whatever holds it, or use {port} to get a free one",
                )


def _plan_load(profile: Profile) -> LoadPlan:
    """The capacity pre-check against this machine's fd limit and port range (see runner.load.capacity)."""
    from urllib.parse import urlsplit

    load = profile.load
    url = (profile.target.url or "ws://127.0.0.1/").replace("{port}", "1")
    return plan_load(
        users=load.users,
        workers=load.workers,
        remote_workers=load.remote_workers,
        target_host=urlsplit(url).hostname or "127.0.0.1",
        fd_limit=resource.getrlimit(resource.RLIMIT_NOFILE)[1],  # the soft limit is raised to this
        port_range=read_port_range(),
        source_addresses=load.source_addresses,
        cpus=os.cpu_count() or 1,
        connections_per_user=load.connections_per_user,
    )


def run_soak(profile: Profile, *, out: Path | None = None, overwrite: bool = False, progress: Progress | None = None) -> RunResult:
    """Run one soak end to end and finish its folder (summary.json, report.html)."""
    progress = progress or Progress()
    _preflight(profile)
    scenario = build_plan(profile)  # loads a scenario file: its errors are exit 2, before anything starts
    load_plan = _plan_load(profile)  # fds and ports: "50000 users need at least 3 workers ..." is exit 2
    folder = RunFolder(Path(out) if out else default_run_dir(profile))
    folder.create(overwrite=overwrite)
    fd_limit = _raise_fd_limit()
    write_json(
        folder.meta,
        redact_data(
            {
                "format": FORMAT_VERSION,
                "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "argv": sys.argv,
                "profile": profile.to_dict(),
                "environment": _environment(fd_limit),
                "target": {},
            }
        ),
    )
    run = _Run(profile, folder, progress, scenario)
    run.load_plan = load_plan
    run.notes.extend(load_plan.notes)
    try:
        run_data = run.execute()
    except SoakError:
        progress.close()
        raise
    write_json(folder.run, redact_data(run_data))
    summary = finish_run(folder.path)
    return RunResult(folder=folder.path, summary=summary)


