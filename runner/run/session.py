"""The run: the only place that owns the clock and the phases.

baseline (idle) -> ramp -> steady churn -> drain (load stops, connections close) -> cooldown.
Samples stream to disk as they are taken; whatever happens (target crash, Ctrl-C, a load
generator failure), the load is stopped, the target is stopped, and the run folder is
finished so ``soak analyze`` and ``soak report`` can work from it.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import gevent

from ..errors import LoadError, SoakError, TargetError
from ..finish import finish_run
from ..load.driver import LoadDriver
from ..load.scenario import build_plan
from ..looks import Looks
from ..profile import Profile
from ..progress import Progress
from ..redact import redact_data
from ..results import FORMAT_VERSION, RunFolder, SampleWriter, write_json
from ..sampling.memray_run import request_chain
from ..target import StartedTarget
from .loops import Loops
from .meta import write_meta
from .preflight import cpu_notes, environment, plan_load_for, preflight, raise_fd_limits
from .state import Interrupted, TargetDied
from .target_setup import TargetSetup

__all__ = ["run_soak", "RunResult", "default_run_dir", "Session"]


@dataclass
class RunResult:
    """A finished run: its folder and its summary (summary.json's content)."""

    folder: Path
    summary: dict[str, Any]

    @property
    def exit_code(self) -> int:
        return int(self.summary["exit_code"])


#: Longest wait, after a second Ctrl-C, for a memray detach already under way (gdb takes ~1 s).
DETACH_WAIT = 10.0

#: A ramp that had fewer than this share of the asked connections open at once fell behind.
RAMP_BEHIND = 0.95


def default_run_dir(profile: Profile, root: Path = Path("reports")) -> Path:
    """``reports/<UTC time>-<profile name>``."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in profile.name) or "run"
    return root / f"{stamp}-{safe}"


class Session(TargetSetup, Loops):
    """One soak run: phases, signals and the outcome; :func:`run_soak` is its public face."""

    # --- clock and phases ------------------------------------------------------------

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
                raise Interrupted()
            if self.target is not None and self.target.poll() is not None:
                raise TargetDied()
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
            self.progress.note(
                "interrupted: stopping the load and the target, then writing the report (press Ctrl-C again to stop "
                "at once)"
            )
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
        except Interrupted:
            interrupted = True
            self._drain(allow_interrupt=False, quick=True)
        except TargetDied:
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
        outcome = (
            self.target.outcome().to_dict()
            if self.target is not None
            else {"pid": None, "exit_code": None, "crashed": False}
        )
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
        self.looks = Looks(
            self.profile,
            self.folder,
            clock=lambda: self.now() - start,
            progress=self.progress,
            runtime=lambda: self.runtime.name,
        )
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

    def _drain_sampled(self) -> bool:
        """True once a sample of the drain phase with no connection open is on disk (the record shows the drain)."""
        return self.sampler is None or (self.last_sample.get("phase") == "drain" and self.last_sample.get("open") == 0)

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
            closed = self.wait(
                drain,
                until=lambda: stopping.dead and counters.open == 0 and self._drain_sampled(),
                allow_interrupt=allow_interrupt,
            )
            if not closed:
                self.notes.append(f"{counters.open} connections were still open {drain:g}s after the load stopped")
            if not quick:
                self.enter("cooldown")
                self.wait(self.profile.phases.cooldown, allow_interrupt=allow_interrupt)
        except TargetDied:
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


def run_soak(
    profile: Profile, *, out: Path | None = None, overwrite: bool = False, progress: Progress | None = None
) -> RunResult:
    """Run one soak end to end and finish its folder (summary.json, report.html)."""
    progress = progress or Progress()
    preflight(profile)
    scenario = build_plan(profile)  # loads a scenario file: its errors are exit 2, before anything starts
    load_plan = plan_load_for(profile)  # fds and ports: "50000 users need at least 3 workers ..." is exit 2
    folder = RunFolder(Path(out) if out else default_run_dir(profile))
    folder.create(overwrite=overwrite)
    fd_limit = raise_fd_limits()
    write_meta(
        folder,
        {
            "format": FORMAT_VERSION,
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "argv": sys.argv,
            "profile": profile.to_dict(),
            "environment": environment(fd_limit),
            "target": {},
        },
    )
    run = Session(profile, folder, progress, scenario)
    run.load_plan = load_plan
    run.notes.extend(load_plan.notes)
    for note in cpu_notes(profile, load_plan):  # before anything starts: what the cores cannot do
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
