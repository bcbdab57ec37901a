"""The run: the only place that owns the clock and the phases.

baseline (idle) -> ramp -> steady churn -> drain (load stops, connections close) -> cooldown.
Samples stream to disk as they are taken; whatever happens (target crash, Ctrl-C, a load
generator failure), the load is stopped, the target is stopped, and the run folder is
finished so ``soak analyze`` and ``soak report`` can work from it.
"""

from __future__ import annotations

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
from urllib.parse import urlsplit

import gevent
import gevent.event
import psutil

from .errors import LoadError, SoakError, TargetError, UsageError
from .finish import finish_run
from .load import driver as _driver_module  # noqa: F401  (import Locust, i.e. gevent patching, first)
from .load.capacity import LoadPlan, cpu_check, is_loopback_host, plan_load, read_port_range
from .load.client import WebSocketClient
from .load.counters import latency_summary
from .load.cpu import SaturationTracker
from .load.distributed import WorkerCounters
from .load.driver import LoadDriver
from .load.responsiveness import LoopLag
from .load.scenario import ScenarioPlan, build_plan
from .load.worker import raise_fd_limit
from .looks import Looks
from .profile import Profile
from .progress import Progress
from .redact import redact_command, redact_data
from .results import FORMAT_VERSION, RunFolder, SampleWriter, write_json
from .sampling.memray_attach import attach as memray_attach
from .sampling.memray_attach import detach as memray_detach
from .sampling.memray_capture import MemrayFiles
from .sampling.memray_run import (
    MEMORY_INTERVAL_MS,
    MEMRAY_STARTUP_FACTOR,
    checkpoint_interval,
    plan_memray,
    request_chain,
    request_freeze,
)
from .sampling.process import TreeSampler
from .sampling.runtimes import prepare_launch, runtime_of_process
from .sampling.runtimes.tier import RuntimeTier
from .sampling.sources import (
    CgroupSource,
    MetricsUrlSource,
    ProcessSource,
    PrometheusSource,
    SourceSampler,
    resolve_cgroup,
)
from .target import AttachedTarget, RemoteTarget, StartedTarget, free_port, port_in_use, substitute

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


#: A ramp that had fewer than this share of the asked connections open at once fell behind.
RAMP_BEHIND = 0.95


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

    versions: dict[str, str | None] = {}
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
                for note in self.driver.take_notes():  # a worker lost or silent: the run goes on
                    self._note(note)
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
            self.runtime.close(wait=2.0)  # an attached server must not keep an inspector open
            os._exit(130)

    # --- sampling --------------------------------------------------------------------

    def _sample_loop(self) -> None:
        assert self.sampler is not None and self.writer is not None
        interval = self.profile.sampling.interval
        next_tick = time.monotonic()
        while True:
            started = time.monotonic()
            # In a thread: reading /proc for a tree of processes that hold tens of thousands of
            # sockets takes long enough to stall this loop, which answers the workers' heartbeats.
            metrics = gevent.get_hub().threadpool.apply(self.sampler.sample)
            sample_seconds = time.monotonic() - started
            counters = self.driver.counters if self.driver else None
            sample = {
                "t": round(self.now(), 3),
                "wall": round(time.time(), 3),
                "phase": self.state.phase,
                **(counters.snapshot() if counters else {"opened": 0, "closed": 0, "open": 0, "errors": 0}),
                **(metrics or {"rss": None, "uss": None, "fds": None, "threads": None, "cpu": None, "procs": 0}),
                "heap": (metrics or {}).get("heap"),  # a runtime heap from metrics; memray's is joined later
            }
            if counters:
                latencies = latency_summary(counters.take_latencies())
                if latencies:
                    sample["lat"] = latencies
            if self.driver is not None:
                for process, (clock, cpu_seconds) in self.driver.generator_cpu().items():
                    self.saturation.feed(process, clock, cpu_seconds, self.state.phase)
                sample["load_cpu"] = self.saturation.current  # busiest load process, % of one core
            sample["loop_lag"] = self.loop_lag.take()  # longest stall of this loop since the last line (s)
            if isinstance(counters, WorkerCounters):
                # the same in the slowest worker, and how late the master's heartbeats reached a worker
                sample["worker_loop_lag"], sample["heartbeat_lag"] = counters.take_loop_lag()
            sample["sample_s"] = round(sample_seconds, 3)  # what reading the target's processes took
            self.writer.write(sample)
            self.last_sample = sample
            for kind, error in sample.get("source_errors", {}).items():
                if kind not in self._failed_sources:
                    self._failed_sources.add(kind)
                    self._note(f"sampling: {kind} could not be read ({error}); its values are gaps (null) "
                               "while it fails, counted in the summary")
            self.peak_open = max(self.peak_open, int(sample.get("open") or 0))
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
            if self.driver is None:
                continue
            counters = self.driver.counters
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
        if target.pid is None and target.command is None:
            assert target.url is not None
            remote = RemoteTarget(target.url)
            self.target = remote
            meta = _read_json(self.folder.meta)
            meta["target"] = {"command": None, "url": target.url, "pid": None, "memray": False, "remote": True}
            write_json(self.folder.meta, redact_data(meta))
            through = ", ".join(self._source_kinds())
            self.progress.note(f"target {target.url}: nothing started, sampled through {through}")
            remote.wait_ready(functools.partial(self._handshake, target.url), target.ready_timeout,
                              cancelled=self.state.interrupted.is_set)
            if self.state.interrupted.is_set():
                raise _Interrupted()
            return target.url
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
            runtime = runtime_of_process(attached.pid) if target.runtime_heap else None
            if runtime is not None:
                self.runtime.open(attached.pid, started=False, runtime=runtime, serving_port=_url_port(url))
            return url
        assert target.command is not None and target.url is not None
        port = free_port() if any("{port}" in p for p in target.command) else None
        self.port = port
        argv = substitute(target.command, port=port)
        url = target.url.replace("{port}", str(port)) if port is not None else target.url
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        memray_plan = plan_memray(target, argv, self.folder.path, sampling_interval=self.profile.sampling.interval,
                                  max_bytes=self._memray_max_bytes())
        if memray_plan.note:
            self._note(memray_plan.note)
        launch = prepare_launch(memray_plan.argv, env) if target.runtime_heap and not memray_plan.tracked else None
        for message in launch.notes if launch else []:
            self._note(message)
        started = StartedTarget(launch.argv if launch else memray_plan.argv, self.folder.target_log,
                                env=launch.env if launch else env)
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
        if launch is not None and launch.runtime is not None:
            self.runtime.open(started.pid, started=True, runtime=launch.runtime, serving_port=_url_port(url))
        return url

    def _source_kinds(self) -> tuple[str, ...]:
        target = self.profile.target
        return self.profile.sampling.sources_for(local=target.command is not None or target.pid is not None)

    def _make_sampler(self) -> SourceSampler:
        """The sources of [sampling] (psutil, the server's /metrics, Prometheus, a cgroup), read together."""
        sampling = self.profile.sampling
        timeout = sampling.read_timeout
        sources: list[Any] = []
        for kind in self._source_kinds():
            if kind == "process":
                assert self.target is not None and self.target.pid is not None
                tree = TreeSampler(self.target.pid, uss=sampling.uss, interval=sampling.interval)
                sources.append(ProcessSource(tree))
            elif kind == "metrics_url":
                assert sampling.metrics_url is not None
                url = sampling.metrics_url
                if self.port is not None:
                    url = url.replace("{port}", str(self.port))
                sources.append(MetricsUrlSource(url, sampling.metrics, timeout=timeout))
            elif kind == "prometheus":
                assert sampling.prometheus is not None
                prometheus = sampling.prometheus
                sources.append(PrometheusSource(prometheus["url"], prometheus["queries"], timeout=timeout))
            elif kind == "cgroup":
                assert sampling.cgroup is not None
                sources.append(CgroupSource(resolve_cgroup(sampling.cgroup)))
        meta = _read_json(self.folder.meta)
        addresses = {s.kind: getattr(s, "url", None) or str(getattr(s, "path", ""))
                     for s in sources if s.kind != "process"}
        meta["sampling"] = {"sources": [s.kind for s in sources], "timeout": timeout, "addresses": addresses}
        write_json(self.folder.meta, redact_data(meta))
        return SourceSampler(sources, timeout=timeout)

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
        if self.memray_session != "attached" or self.target is None or self.target.pid is None:
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
            self.sampler = self._make_sampler()
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
            self.loop_lag.start()
            workers.append(gevent.spawn(self._sample_loop))
            workers.append(gevent.spawn(self._progress_loop))
            self.runtime.start()  # before the load: the heap profiler samples from here on
            steady = self.profile.load.duration
            workers.append(gevent.spawn(self.runtime.loop, lambda: self.state.phase, steady_seconds=steady))
            self.enter("baseline")
            self.wait(self.profile.phases.baseline)
            self.enter("ramp")
            driver = self.driver
            driver.start()
            ramp_limit = self.profile.load.users / self.profile.load.spawn_rate * 3 + 30
            if not self.wait(ramp_limit, until=lambda: driver.ramped):
                self.notes.append(f"ramp did not reach {self.profile.load.users} users within {ramp_limit:.0f}s")
            self.enter("steady")
            self.runtime.steady_started()
            self._steady()
            self.runtime.finish()
            self._judge_ramp()
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
            self.runtime.close()
            self.loop_lag.stop()
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
            "runtime": self.runtime.record(),
            "load_generator": {
                **self.saturation.to_dict(),
                **self.loop_lag.to_dict(),
                "lost_workers": list(self.driver.lost_workers) if self.driver is not None else [],
                "ramp": self.ramp,
                "workers": self.load_plan.workers if self.load_plan else 0,
                "remote_workers": self.load_plan.remote_workers if self.load_plan else 0,
                "source_addresses": list(self.load_plan.source_addresses) if self.load_plan else [],
                # how the server ended connections during holds and waits (see LoadCounters.endings)
                "endings": dict(self.driver.counters.endings) if self.driver is not None else {},
            },
        }

    def _steady(self) -> None:
        """Steady churn for load.duration, or until a look decides the verdict (runner.looks)."""
        if not self.profile.load.looks:
            self.wait(self.profile.load.duration)
            return
        start = self.state.phases[-1]["start"]
        self.looks = Looks(self.profile, self.folder, clock=lambda: self.now() - start, progress=self.progress,
                           runtime=lambda: self.runtime.name)
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
    def _judge_ramp(self) -> None:
        """Mark a run whose load never had the asked connections open at once (CPU, a short hold, the server).

        Judged only when users hold their connections (load.hold): without a hold a user is
        between connections part of the time, and with a think time part of the users are.
        """
        load = self.profile.load
        connections = load.connections_per_user if self.scenario is None else 1
        asked = int(load.users * connections * (load.hold / (load.hold + load.think) if load.hold else 1.0))
        behind = bool(load.hold) and self.peak_open < RAMP_BEHIND * asked
        self.ramp = {"asked_connections": asked, "peak_open": self.peak_open, "behind": behind}
        if behind:
            self._note(
                f"the ramp fell behind: at most {self.peak_open} of the {asked} asked connections were open at once "
                f"({100.0 * self.peak_open / asked:.0f}%); figures per connection hold, figures of concurrency do not "
                "(see the pre-check notes, the load_cpu column and the loop_lag columns of samples.jsonl)"
            )

    def _drain(self, *, allow_interrupt: bool = True, quick: bool = False) -> None:
        """Stop the users, wait for their connections to close, then idle through the cooldown."""
        if self.driver is None:
            return
        self.enter("drain")
        request_chain(self.folder.path)  # memray: what keeps the leak, found while it is still held
        stopping = self.driver.stop_users()
        drain = min(self.profile.phases.drain, 5.0) if quick else self.profile.phases.drain
        counters = self.driver.counters
        try:
            closed = self.wait(drain, until=lambda: stopping.dead and counters.open == 0, allow_interrupt=allow_interrupt)
            if not closed:
                self.notes.append(f"{counters.open} connections were still open {drain:g}s after the load stopped")
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


def _url_port(url: str) -> int | None:
    """The port a ws:// or wss:// URL names (its scheme's default when none is given)."""
    parts = urlsplit(url)
    try:
        return parts.port or (443 if parts.scheme == "wss" else 80)
    except ValueError:
        return None


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
    local = target.command is not None or target.pid is not None
    if not profile.sampling.sources_for(local=local):
        raise UsageError("target.url alone gives nothing to sample: soak neither starts nor sees the server",
                         hint="add sampling.metrics_url (or --metrics-url), sampling.prometheus or sampling.cgroup, "
                              "or pass --target/--pid")
    if profile.sampling.cgroup and "cgroup" in profile.sampling.sources_for(local=local):
        resolve_cgroup(profile.sampling.cgroup)  # a cgroup that is not there is exit 2
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


def _cpu_notes(profile: Profile, plan: LoadPlan) -> list[str]:
    """The CPU and memory pre-check (see runner.load.capacity.cpu_check) for this machine, now."""
    from urllib.parse import urlsplit

    load = profile.load
    url = (profile.target.url or "ws://127.0.0.1/").replace("{port}", "1")
    try:
        load_average: float | None = os.getloadavg()[0]
    except OSError:
        load_average = None
    return cpu_check(
        plan,
        connections_per_user=load.connections_per_user,
        spawn_rate=load.spawn_rate,
        hold=load.hold,
        think=load.think,
        duration=load.duration,
        cpus=os.cpu_count() or 1,
        load_average=load_average,
        target_local=profile.target.command is not None or is_loopback_host(urlsplit(url).hostname or ""),
        available_memory=psutil.virtual_memory().available,
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
    for note in _cpu_notes(profile, load_plan):  # before anything starts: what the cores cannot do
        progress.note(note)
        run.notes.append(note)
    try:
        run_data = run.execute()
    except SoakError:
        progress.close()
        raise
    write_json(folder.run, redact_data(run_data))
    summary = finish_run(folder.path)
    return RunResult(folder=folder.path, summary=summary)


