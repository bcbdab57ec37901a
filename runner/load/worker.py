"""A Locust worker process: joins a master, takes the run's configuration from it, churns.

Started by the runner for local workers (``workers = K``) or by hand on another machine
(``soak worker --master HOST:PORT``). It needs no profile: the master sends the URL and
the load settings when the worker says hello (see :mod:`runner.load.distributed`).
"""

from __future__ import annotations

import logging
import os
import resource
import socket
import time
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.event
import locust  # noqa: F401  (monkey-patches the standard library for gevent first)
import locust.runners
from locust.env import Environment

from ..errors import LoadError
from ..profile import Profile
from .counters import LoadCounters
from .cpu import cpu_reading
from .distributed import (
    MSG_CONFIG,
    MSG_HELLO,
    MSG_READY,
    REPORT_INTERVAL,
    REPORT_KEY,
    master_heartbeat_timeout,
    sample_latencies,
)
from .driver import watch_stopping
from .responsiveness import LoopLag
from .user import make_user_class

__all__ = ["run_worker", "WorkerOptions", "raise_fd_limit", "die_with_parent"]


@dataclass(frozen=True)
class WorkerOptions:
    master_host: str
    master_port: int
    #: Give up when no configuration arrives from the master within this many seconds.
    config_timeout: float = 120.0
    #: Local workers: the runner's pid; the worker ends with it (no orphans holding sockets).
    parent_pid: int | None = None


def die_with_parent(parent_pid: int) -> None:
    """Linux: SIGTERM this process when ``parent_pid`` (its parent) dies; exit now if it already has."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:
        raise LoadError(f"the runner (pid {parent_pid}) that started this worker is gone")


#: {user_id} of worker N's users starts at N * this (one process holds < 20,000 users).
USER_IDS_PER_WORKER = 1_000_000


def raise_fd_limit() -> int:
    """Raise the soft fd limit to the hard one (every socket is an fd); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def _apply(user_class: type, configured: type) -> None:
    """Copy a freshly configured user class's settings onto the class Locust already knows."""
    for name, value in vars(configured).items():
        if not name.startswith("__"):
            setattr(user_class, name, value)


def run_worker(options: WorkerOptions) -> int:
    """Serve one master until it quits; returns the process exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if options.parent_pid is not None:
        die_with_parent(options.parent_pid)
    fd_limit = raise_fd_limit()
    locust.runners.WORKER_REPORT_INTERVAL = REPORT_INTERVAL
    counters = LoadCounters()
    # Locust spawns users by class name, so the class exists from the start and takes
    # the run's settings when the master sends them.
    user_class = make_user_class("ws://127.0.0.1:9/", Profile.from_dict({}).load, counters)
    environment = Environment(user_classes=[user_class], catch_exceptions=True)
    try:
        runner = environment.create_worker_runner(options.master_host, options.master_port)
    except (ConnectionError, OSError) as exc:
        raise LoadError(
            f"cannot join the Locust master at {options.master_host}:{options.master_port}: {exc}"
        ) from None
    configured = gevent.event.Event()

    def on_config(environment: Environment, msg: Any, **_: Any) -> None:
        data = msg.data
        try:
            settings = Profile.from_dict({"load": data["load"]}).load
            scenario = None
            if data.get("profile"):
                from .scenario import build_plan  # identity, TLS and scenario steps, as the master's

                scenario = build_plan(Profile.from_dict(data["profile"]))
                if scenario is not None:  # {user_id} stays unique across workers
                    scenario.user_id_offset = USER_IDS_PER_WORKER * runner.worker_index
            fresh = make_user_class(
                data["url"],
                settings,
                counters,
                source_addresses=tuple(data.get("source_addresses") or ()),
                scenario=scenario,
            )
        except Exception as exc:  # noqa: BLE001 - reported to the master, which fails the run with it
            runner.send_message(MSG_READY, {"pid": os.getpid(), "error": f"{type(exc).__name__}: {exc}"})
            return
        _apply(user_class, fresh)
        environment.stop_timeout = float(data.get("stop_timeout") or 0.0)
        locust.runners.MASTER_HEARTBEAT_TIMEOUT = master_heartbeat_timeout(environment.stop_timeout)
        configured.set()
        runner.send_message(MSG_READY, {"pid": os.getpid(), "fd_limit": fd_limit})

    loop_lag = LoopLag()  # stalls of this worker's loop, reported to the master (samples' worker_loop_lag)
    loop_lag.start()
    # How late the master's heartbeats come (1 s apart when it is responsive; Locust's
    # worker gives the master up after 60 s): fed by the heartbeat event, not a greenlet.
    heartbeat_lag = LoopLag()
    last_heartbeat = [time.monotonic()]

    def on_heartbeat(**_: Any) -> None:
        now = time.monotonic()
        heartbeat_lag.record(now - last_heartbeat[0] - locust.runners.HEARTBEAT_INTERVAL)
        last_heartbeat[0] = now

    def on_report(client_id: str, data: dict[str, Any]) -> None:
        clock, cpu_seconds = cpu_reading()
        data[REPORT_KEY] = {
            **counters.snapshot(),
            "endings": dict(counters.endings),
            "loop_lag": loop_lag.take(),
            "heartbeat_lag": heartbeat_lag.take(),
            "lat": sample_latencies(counters.take_latencies()),
            "cpu_clock": clock,
            "cpu_seconds": cpu_seconds,
            "pid": os.getpid(),
        }

    watch_stopping(environment, user_class)
    runner.register_message(MSG_CONFIG, on_config)
    environment.events.report_to_master.add_listener(on_report)
    environment.events.heartbeat_received.add_listener(on_heartbeat)
    runner.send_message(MSG_HELLO, {"pid": os.getpid(), "host": socket.gethostname()})
    if not configured.wait(timeout=options.config_timeout):
        runner.quit()
        raise LoadError(
            f"the master at {options.master_host}:{options.master_port} sent no configuration within "
            f"{options.config_timeout:g}s"
        )
    runner.greenlet.join()  # until the master says quit (or stops answering heartbeats)
    return 0
