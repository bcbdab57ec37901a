"""Before anything starts: checks that need the machine, the capacity and CPU pre-checks, the environment.

Every mistake found here is a one-line error (exit 2) before a run folder is made; what the
machine cannot do at the asked load is a note the run carries.
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from ..errors import UsageError
from ..load.capacity import LoadPlan, cpu_check, is_loopback_host, plan_load, read_port_range
from ..load.worker import raise_fd_limit
from ..profile import Profile
from ..sampling.sources import resolve_cgroup
from ..target import port_in_use, substitute

__all__ = ["preflight", "plan_load_for", "cpu_notes", "raise_fd_limits", "environment"]


def preflight(profile: Profile) -> None:
    """Checks that need the machine but start nothing: a clear error before any folder is made."""
    target = profile.target
    local = target.command is not None or target.pid is not None
    if not profile.sampling.sources_for(local=local):
        raise UsageError(
            "target.url alone gives nothing to sample: soak neither starts nor sees the server",
            hint="add sampling.metrics_url (or --metrics-url), sampling.prometheus or sampling.cgroup, "
            "or pass --target/--pid",
        )
    if profile.sampling.cgroup and "cgroup" in profile.sampling.sources_for(local=local):
        resolve_cgroup(profile.sampling.cgroup)  # a cgroup that is not there is exit 2
    if target.command is not None:
        program = substitute(target.command[:1], port=None)[0]
        if shutil.which(program) is None and not Path(program).exists():
            raise UsageError(f"target command not found: {program!r}", hint="check target.command or --target")
        if "{port}" not in " ".join(target.command) and target.url is not None:
            parts = urlsplit(target.url)
            if parts.hostname in ("127.0.0.1", "localhost") and parts.port and port_in_use(parts.port):
                raise UsageError(
                    f"port {parts.port} is already in use, so the target cannot listen on it",
                    hint="stop whatever holds it, or use {port} to get a free one",
                )


def plan_load_for(profile: Profile) -> LoadPlan:
    """The capacity pre-check against this machine's fd limit and port range (see runner.load.capacity)."""
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


def cpu_notes(profile: Profile, plan: LoadPlan) -> list[str]:
    """The CPU and memory pre-check (see runner.load.capacity.cpu_check) for this machine, now."""
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


def raise_fd_limits() -> tuple[int, int]:
    """Soft and hard fd limits after raising the soft one (every connection's socket is an fd)."""
    return raise_fd_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def environment(fd_limit: tuple[int, int]) -> dict[str, Any]:
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
