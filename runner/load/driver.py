"""Runs Locust headless in library mode and exposes what the run needs of it.

Two shapes behind one interface:

* in-process (``plan.distributed`` false): a Locust ``LocalRunner`` in the runner's own
  process; the users' :class:`LoadCounters` are read directly;
* distributed: a Locust master (bound to 127.0.0.1 unless configured) plus ``plan.workers``
  local worker processes (``python -m runner worker --master ...``) and any remote workers
  expected; each worker's counters reach the master in its ``report_to_master`` payload and
  are summed by :class:`WorkerCounters`.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import gevent
import locust  # noqa: F401  (monkey-patches the standard library for gevent first)
from locust.env import Environment
from locust.rpc import Message
from locust.runners import STATE_MISSING, LocalRunner, MasterRunner
from locust.stats import StatsEntry

from ..errors import LoadError
from ..profile import LoadSettings
from ..target import free_port
from .capacity import LoadPlan
from .counters import LoadCounters
from .cpu import cpu_reading
from .distributed import MSG_CONFIG, MSG_HELLO, MSG_READY, REPORT_KEY, WorkerCounters
from .user import make_user_class

__all__ = ["LoadDriver", "stats_to_dict", "trim_per_second_counts", "watch_stopping"]


class LoadDriver:
    """Locust users churning WebSocket connections against one URL, in this process or in workers."""

    def __init__(
        self,
        url: str,
        settings: LoadSettings,
        *,
        stop_timeout: float,
        plan: LoadPlan | None = None,
        log_dir: Path | None = None,
        scenario: Any = None,
        profile_data: dict[str, Any] | None = None,
    ) -> None:
        """``scenario`` drives in-process users; workers rebuild it from ``profile_data`` (Profile.to_dict())."""
        self.url = url
        self.settings = settings
        self.plan = plan or LoadPlan(
            users=settings.users, workers=settings.workers, remote_workers=settings.remote_workers
        )
        self.stop_timeout = stop_timeout
        self._processes: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []
        self._log_paths: list[Path] = []
        self._ready: set[str] = set()
        self._worker_errors: list[str] = []
        #: Load workers that died or went silent during the run: the run goes on with the others.
        self.lost_workers: list[dict[str, Any]] = []
        self._notes: list[str] = []
        self._node_pids: dict[int, str] = {}  # worker pid -> Locust node id (from its ready message)
        self._silent: set[str] = set()
        #: Users the load aims at: the profile's, less the share of workers lost on the way.
        self.target_users = settings.users
        self.profile_data = profile_data
        self._start_greenlet: gevent.Greenlet | None = None
        self.counters: LoadCounters | WorkerCounters
        if not self.plan.distributed:
            self.counters = LoadCounters()
            # scenario: runner.load.scenario.ScenarioPlan (steps, identity, TLS) or None for the echo loop
            user_class = make_user_class(
                url, settings, self.counters, source_addresses=self.plan.source_addresses, scenario=scenario
            )
            self.environment = Environment(user_classes=[user_class], stop_timeout=stop_timeout, catch_exceptions=True)
            self.runner: LocalRunner | MasterRunner = self.environment.create_local_runner()
            watch_stopping(self.environment, user_class)
            return
        self.counters = WorkerCounters()
        placeholder = make_user_class(url, settings, LoadCounters())  # the master only needs the class name
        self.environment = Environment(user_classes=[placeholder], stop_timeout=stop_timeout, catch_exceptions=True)
        self.master_host = settings.master_bind
        self.master_port = settings.master_port or free_port(
            "127.0.0.1" if self.master_host in ("*", "0.0.0.0", "") else self.master_host
        )
        try:
            self.runner = self.environment.create_master_runner(
                master_bind_host=self.master_host, master_bind_port=self.master_port
            )
        except Exception as exc:  # zmq raises its own error types for a taken port or a bad address
            raise LoadError(
                f"the Locust master cannot listen on {self.master_host}:{self.master_port}: {exc}",
                hint="set load.master_bind/master_port",
            ) from None
        self.runner.register_message(MSG_HELLO, self._on_hello)
        self.runner.register_message(MSG_READY, self._on_ready)
        self.environment.events.worker_report.add_listener(self._on_worker_report)
        self._spawn_local_workers(log_dir)

    # --- distributed plumbing ----------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "load": dataclasses.asdict(self.settings),
            "source_addresses": list(self.plan.source_addresses),
            "stop_timeout": self.stop_timeout,
            "profile": self.profile_data,
        }

    def _on_hello(self, environment: Environment, msg: Any, **_: Any) -> None:
        self.runner.send_message(MSG_CONFIG, self._config(), client_id=msg.node_id)

    def _on_ready(self, environment: Environment, msg: Any, **_: Any) -> None:
        error = (msg.data or {}).get("error")
        if error:
            self._worker_errors.append(str(error))
        else:
            self._ready.add(msg.node_id)
            pid = (msg.data or {}).get("pid")
            if isinstance(pid, int):
                self._node_pids[pid] = msg.node_id

    def _on_worker_report(self, client_id: str, data: dict[str, Any]) -> None:
        report = data.get(REPORT_KEY)
        if report is not None and isinstance(self.counters, WorkerCounters):
            self.counters.update(client_id, report)

    def _spawn_local_workers(self, log_dir: Path | None) -> None:
        connect = "127.0.0.1" if self.master_host in ("*", "0.0.0.0", "") else self.master_host
        command = [
            sys.executable,
            "-m",
            "runner",
            "worker",
            "--master",
            f"{connect}:{self.master_port}",
            "--parent-pid",
            str(os.getpid()),
        ]
        for index in range(self.plan.workers):
            if log_dir is not None:
                path = Path(log_dir) / f"worker-{index + 1}.log"
                log: IO[bytes] | int = open(path, "wb")
                self._logs.append(log)  # type: ignore[arg-type]
                self._log_paths.append(path)
            else:
                log = subprocess.DEVNULL
            self._processes.append(
                subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=dict(os.environ, PYTHONUNBUFFERED="1"),
                )
            )

    @property
    def expected_workers(self) -> int:
        return self.plan.workers + self.plan.remote_workers if self.plan.distributed else 0

    def ready(self) -> bool:
        """True when every expected worker has taken the run's configuration (always, in-process)."""
        return not self.plan.distributed or len(self._ready) >= self.expected_workers

    def waiting_for(self) -> str:
        """Which workers are missing, for the error when they never come."""
        where = f"{self.master_host}:{self.master_port}"
        return f"{len(self._ready)} of {self.expected_workers} workers joined the master at {where}"

    # --- the run's interface -------------------------------------------------

    def start(self) -> None:
        """Start spawning users at the profile's spawn rate (returns at once)."""
        if self.plan.distributed:
            # MasterRunner.start blocks until every spawn message is dispatched.
            self._start_greenlet = gevent.spawn(
                self.runner.start, self.settings.users, spawn_rate=self.settings.spawn_rate
            )
        else:
            self.runner.start(self.settings.users, spawn_rate=self.settings.spawn_rate)

    @property
    def ramped(self) -> bool:
        return self.runner.user_count >= self.target_users

    def stop_users(self) -> gevent.Greenlet:
        """Ask every user to finish its current cycle and stop; returns the stopping greenlet."""
        if self._start_greenlet is not None:
            self._start_greenlet.kill(block=False)
        return gevent.spawn(self.runner.stop)

    def generator_cpu(self) -> dict[str, tuple[float, float]]:
        """(clock, cumulative CPU seconds) of each process that runs users (see SaturationTracker)."""
        if isinstance(self.counters, WorkerCounters):
            return self.counters.cpu_readings()
        return {"local": cpu_reading()}

    def check(self) -> None:
        """Raise :class:`LoadError` when the users crash on something other than the network, or a worker dies."""
        if self._worker_errors:
            raise LoadError(f"a load worker could not take the run's configuration: {self._worker_errors[0]}")
        exceptions = self.runner.exceptions
        if exceptions:
            first = next(iter(exceptions.values()))
            raise LoadError(
                f"the load generator failed: {first['msg']}", hint="see locust_stats.json for the traceback"
            )
        self._watch_silent_workers()
        lost_pids = {w["pid"] for w in self.lost_workers}
        for index, process in enumerate(self._processes):
            code = process.poll()
            if code is None or process.pid in lost_pids:
                continue
            last = _last_line(self._log_paths[index]) if index < len(self._log_paths) else ""
            why = f"load worker {index + 1} (pid {process.pid}) exited with code {code}" + (f": {last}" if last else "")
            if not self._lose_worker(index, process.pid, why):
                raise LoadError(why, hint=f"see worker-{index + 1}.log in the run folder")

    def _watch_silent_workers(self) -> None:
        """Note a worker whose heartbeats stopped reaching the master (Locust marks it missing)."""
        if not self.plan.distributed:
            return
        if not isinstance(self.runner, MasterRunner):
            return
        for node_id, node in list(self.runner.clients.items()):
            if node.state == STATE_MISSING and node_id not in self._silent:
                self._silent.add(node_id)
                self._notes.append(f"load worker {node_id} went silent (no heartbeat reached the master for 3 s)")

    def _lose_worker(self, index: int, pid: int, why: str) -> bool:
        """Go on without a dead worker (its connections died with it); False when none is left."""
        alive = [p for p in self._processes if p.poll() is None]
        if not alive and not self.plan.remote_workers:
            return False
        node_id = self._node_pids.get(pid)
        lost_open = self.counters.lose(node_id) if isinstance(self.counters, WorkerCounters) and node_id else 0
        self.lost_workers.append({"worker": index + 1, "pid": pid, "why": why, "open_connections_lost": lost_open})
        # Locust does not hand a lost worker's users to the others (rebalancing is off), so the
        # others keep their own share, within the fds each holds: the load now aims at that share.
        alive_workers = len(alive) + self.plan.remote_workers
        self.target_users = max(1, self.settings.users * alive_workers // max(1, self.expected_workers))
        self._notes.append(
            f"{why}; the run went on with the other workers and {self.target_users} users "
            f"({lost_open} of its connections ended with it; its counts up to then are kept)"
        )
        return True

    def take_notes(self) -> list[str]:
        """Notes about the load since the previous call (a lost or silent worker)."""
        notes, self._notes = self._notes, []
        return notes

    def quit(self) -> None:
        """Stop everything, workers included; never raises."""
        try:
            if isinstance(self.runner, MasterRunner):
                # Locust's master forgets a worker that reported "stopped" and sends it no quit;
                # such a worker would wait for heartbeats through the drain before it gave up.
                for node_id in self._ready:
                    if node_id not in self.runner.clients:
                        self.runner.server.send_to_client(Message("quit", None, node_id))
        except Exception:  # noqa: BLE001 - quitting must not mask the run's outcome
            pass
        try:
            self.runner.quit()
        except Exception:  # noqa: BLE001 - quitting must not mask the run's outcome
            pass
        for process in self._processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for log in self._logs:
            log.close()

    def trim_statistics(self) -> None:
        """Forget Locust's per-second counts older than a minute (see :func:`trim_per_second_counts`)."""
        trim_per_second_counts(self.environment.stats)

    def stats(self) -> dict:
        return stats_to_dict(self.environment)


def _last_line(path: Path) -> str:
    """The last non-empty line of a worker's log (why it stopped), shortened."""
    try:
        lines = [
            line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()
        ]
    except OSError:
        return ""
    return lines[-1][-200:] if lines else ""


def watch_stopping(environment: Environment, user_class: Any) -> None:
    """Let held connections close as soon as the load stops (and hold again on the next start)."""
    environment.events.test_stopping.add_listener(lambda **_: user_class.stopping.set())
    environment.events.test_start.add_listener(lambda **_: user_class.stopping.clear())


def _entry(entry: StatsEntry) -> dict:
    return {
        "name": entry.name,
        "method": entry.method,
        "requests": entry.num_requests,
        "failures": entry.num_failures,
        "avg_ms": round(entry.avg_response_time, 3),
        "min_ms": round(entry.min_response_time or 0, 3),
        "max_ms": round(entry.max_response_time, 3),
        "p50_ms": entry.get_response_time_percentile(0.5),
        "p95_ms": entry.get_response_time_percentile(0.95),
        "p99_ms": entry.get_response_time_percentile(0.99),
    }


def stats_to_dict(environment: Environment) -> dict:
    """Locust's final statistics as plain data (its CSV files are not final at exit)."""
    stats = environment.stats
    runner = environment.runner
    return {
        "requests": [_entry(e) for e in sorted(stats.entries.values(), key=lambda e: (e.method or "", e.name))],
        "total": _entry(stats.total),
        "errors": [
            {"method": e.method, "name": e.name, "error": str(e.error), "occurrences": e.occurrences}
            for e in stats.errors.values()
        ],
        "exceptions": [
            {"count": e["count"], "msg": e["msg"], "traceback": e["traceback"]}
            for e in (runner.exceptions.values() if runner else [])
        ],
    }


#: Seconds of Locust's per-second request counts kept (its current-RPS figures look at the last 12).
PER_SECOND_COUNTS_KEPT = 60


def trim_per_second_counts(stats: Any, keep: int = PER_SECOND_COUNTS_KEPT) -> None:
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
