"""The target of a run: started, attached by pid, or reached by URL; memray, the runtime probe, the samplers.

Everything here that learns about the target is written to meta.json through the one writer
(:mod:`runner.run.meta`).
"""

from __future__ import annotations

import functools
import os
from typing import Any
from urllib.parse import urlsplit

import psutil

from ..errors import UsageError
from ..load.client import WebSocketClient
from ..redact import redact_command
from ..sampling.memray_attach import attach as memray_attach
from ..sampling.memray_attach import detach as memray_detach
from ..sampling.memray_capture import MemrayFiles
from ..sampling.memray_run import (
    MEMORY_INTERVAL_MS,
    MEMRAY_STARTUP_FACTOR,
    checkpoint_interval,
    plan_memray,
    request_freeze,
)
from ..sampling.process import TreeSampler
from ..sampling.runtimes import prepare_launch, runtime_of_process
from ..sampling.sources import (
    CgroupSource,
    MetricsUrlSource,
    ProcessSource,
    PrometheusSource,
    SourceSampler,
    resolve_cgroup,
)
from ..target import AttachedTarget, RemoteTarget, StartedTarget, free_port, substitute
from .meta import update_meta
from .state import Interrupted, RunState

__all__ = ["TargetSetup", "probe", "url_port"]


class TargetSetup(RunState):
    """Start or attach the target, track it (memray, runtime probe) and build its samplers."""

    def _start_target(self) -> str:
        """Start the target (or attach to --pid, or reach a URL-only server) and return the URL the load goes to."""
        target = self.profile.target
        if target.pid is None and target.command is None:
            assert target.url is not None
            remote = RemoteTarget(target.url)
            self.target = remote
            update_meta(
                self.folder, target={"command": None, "url": target.url, "pid": None, "memray": False, "remote": True}
            )
            through = ", ".join(self._source_kinds())
            self.progress.note(f"target {target.url}: nothing started, sampled through {through}")
            remote.wait_ready(
                functools.partial(self._handshake, target.url),
                target.ready_timeout,
                cancelled=self.state.interrupted.is_set,
            )
            if self.state.interrupted.is_set():
                raise Interrupted()
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
                self.runtime.open(attached.pid, started=False, runtime=runtime, serving_port=url_port(url))
            return url
        assert target.command is not None and target.url is not None
        port = free_port() if any("{port}" in p for p in target.command) else None
        self.port = port
        argv = substitute(target.command, port=port)
        url = target.url.replace("{port}", str(port)) if port is not None else target.url
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        memray_plan = plan_memray(
            target,
            argv,
            self.folder.path,
            sampling_interval=self.profile.sampling.interval,
            max_bytes=self._memray_max_bytes(),
        )
        if memray_plan.note:
            self._note(memray_plan.note)
        launch = prepare_launch(memray_plan.argv, env) if target.runtime_heap and not memray_plan.tracked else None
        for message in launch.notes if launch else []:
            self._note(message)
        started = StartedTarget(
            launch.argv if launch else memray_plan.argv, self.folder.target_log, env=launch.env if launch else env
        )
        self.target = started
        update_meta(
            self.folder, target={"command": argv, "url": url, "pid": started.pid, "memray": memray_plan.tracked}
        )
        self.progress.note(f"target started (pid {started.pid}): {' '.join(redact_command(argv))}")
        probe = functools.partial(self._handshake, url)
        ready_timeout = self.profile.target.ready_timeout * (MEMRAY_STARTUP_FACTOR if memray_plan.tracked else 1)
        started.wait_ready(probe, ready_timeout, cancelled=self.state.interrupted.is_set)
        if self.state.interrupted.is_set():
            raise Interrupted()
        if memray_plan.tracked:
            request_freeze(self.folder.path)
        if launch is not None and launch.runtime is not None:
            self.runtime.open(started.pid, started=True, runtime=launch.runtime, serving_port=url_port(url))
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
        addresses = {
            s.kind: getattr(s, "url", None) or str(getattr(s, "path", "")) for s in sources if s.kind != "process"
        }
        update_meta(
            self.folder, sampling={"sources": [s.kind for s in sources], "timeout": timeout, "addresses": addresses}
        )
        return SourceSampler(sources, timeout=timeout)

    def _handshake(self, url: str) -> None:
        """One WebSocket handshake and close (with the scenario's identity and TLS when it has them)."""
        if self.scenario is not None:
            self.scenario.probe(url)
        else:
            probe(url)

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
        update_meta(
            self.folder,
            target={"command": command, "url": url, "pid": attached.pid, "memray": tracked, "attached": True},
        )
        if tracked:
            self._note(
                f"memray attached to pid {attached.pid} while it ran: allocations made before the attach are not seen"
            )
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


def url_port(url: str) -> int | None:
    """The port a ws:// or wss:// URL names (its scheme's default when none is given)."""
    parts = urlsplit(url)
    try:
        return parts.port or (443 if parts.scheme == "wss" else 80)
    except ValueError:
        return None


def probe(url: str) -> None:
    """One plain WebSocket handshake and close: the readiness probe."""
    client = WebSocketClient(url, timeout=2.0)
    try:
        client.connect()
        client.close()
    finally:
        client.abort()
