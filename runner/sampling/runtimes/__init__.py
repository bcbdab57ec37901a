"""Runtime heap probes: a garbage-collected server's own account of its live heap.

RSS of a GC'd runtime (V8, HotSpot) is not retention: the runtime grows its heap lazily
and gives memory back late, so a clean server's RSS climbs for thousands of connections.
The runtime itself can say what is live after a full collection, from outside the process:
Node through its inspector (Chrome DevTools Protocol), the JVM through the HotSpot attach
socket. A probe does that for one server process; the run calls it at paced checkpoints
and the analysis judges its ``heap`` series with the heap budget, like memray's.

Contract (every probe module implements it; the run knows nothing runtime-specific):

- :func:`prepare_launch` may change a command the run is about to start (Node:
  ``--inspect=127.0.0.1:0``) and says which runtime it is.
- :func:`open_probe` connects to a running process (started or ``--pid``) and returns a
  :class:`RuntimeProbe`, or raises :class:`ProbeUnavailable` whose message is the one-line
  note the run records before going on with psutil alone.
- ``probe.start()`` before the load (e.g. start the sampling heap profiler);
  ``probe.steady_started()`` when steady churn begins (e.g. a first heap snapshot; may do nothing);
  ``probe.checkpoint()`` forces a full GC and reads the heap (and per-site live bytes);
  ``probe.finish()`` at the end of the steady phase returns extras for the report (a
  snapshot diff, a retainer chain, JFR's old objects); ``probe.close()`` leaves nothing
  enabled in the server (inspector closed, sampling stopped) and never raises.

Dispatch: :data:`RUNTIME_MODULES` names one module per runtime; each defines
``handles_command(argv) -> bool`` (a command it can start probed), ``handles_executable(path)
-> bool`` (a running process's program), ``prepare_launch(argv, env) -> LaunchPlan`` and
``open_probe(pid, *, started, serving_port=None) -> RuntimeProbe``. A module that is not
there (yet) is skipped, so a runtime plugs in by adding its module and its line.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol, Sequence

import psutil

__all__ = [
    "Checkpoint",
    "LaunchPlan",
    "ProbeUnavailable",
    "RUNTIME_MODULES",
    "RuntimeProbe",
    "RuntimeSite",
    "open_probe",
    "prepare_launch",
    "runtime_of_command",
    "runtime_of_process",
]

#: One module per runtime (see the module docstring for what it defines).
RUNTIME_MODULES = {
    "node": "runner.sampling.runtimes.node",
    "jvm": "runner.sampling.runtimes.jvm",
}


class ProbeUnavailable(Exception):
    """The runtime cannot be probed; the message is one line saying why and what to do."""


@dataclass(frozen=True, kw_only=True)
class RuntimeSite:
    """Live bytes attributed to one place at one checkpoint.

    ``location`` is ``file:line`` (1-based) for a function, or a class name for a JVM
    histogram entry; ``count`` is live instances where the runtime gives them.
    """

    location: str
    function: str
    live_bytes: int
    count: int | None = None
    stack: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    """The heap right after a forced full collection."""

    heap: int  # live heap bytes after GC
    native: int | None = None  # memory the runtime reports outside its heap (Node arrayBuffers+external, JVM direct)
    sites: tuple[RuntimeSite, ...] = ()
    gc_seconds: float = 0.0  # how long the collection and the reading took (paces the checkpoints)


class RuntimeProbe(Protocol):
    runtime: str  # "node" | "jvm"

    def start(self) -> None: ...

    def steady_started(self) -> None: ...

    def checkpoint(self) -> Checkpoint: ...

    def finish(self) -> dict[str, Any]: ...

    def close(self) -> list[str]: ...


@dataclass(frozen=True)
class LaunchPlan:
    """A command about to be started, as the probe wants it started."""

    argv: list[str]
    env: dict[str, str]
    runtime: str | None = None  # None: no runtime probe for this command
    notes: list[str] = field(default_factory=list)


def _module(runtime: str) -> ModuleType | None:
    """The probe module of ``runtime``, or None when it is not part of this installation."""
    name = RUNTIME_MODULES.get(runtime)
    if name is None:
        return None
    try:
        return importlib.import_module(name)  # by name: a module per runtime, imported only when used
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        return None


def runtime_of_command(argv: Sequence[str]) -> str | None:
    """The runtime whose probe can start ``argv`` (``"node"`` for ``node server.js`` or ``npm start``), or None."""
    for runtime in RUNTIME_MODULES:
        module = _module(runtime)
        if module is not None and module.handles_command(argv):
            return runtime
    return None


def runtime_of_process(pid: int) -> str | None:
    """The runtime of a running process, judged by its executable, or None."""
    try:
        proc = psutil.Process(pid)
        exe = proc.exe() or proc.name()
    except psutil.Error:
        return None
    for runtime in RUNTIME_MODULES:
        module = _module(runtime)
        if module is not None and module.handles_executable(exe):
            return runtime
    return None


def prepare_launch(argv: Sequence[str], env: dict[str, str]) -> LaunchPlan:
    """The command (and environment) to start so that its runtime can be probed."""
    runtime = runtime_of_command(argv)
    module = _module(runtime) if runtime else None
    if module is None:
        return LaunchPlan(list(argv), dict(env))
    plan: LaunchPlan = module.prepare_launch(argv, env)
    return plan


def open_probe(pid: int, *, started: bool, runtime: str | None = None, serving_port: int | None = None) -> RuntimeProbe:
    """A probe of process ``pid`` (``runtime`` from :func:`prepare_launch`, or detected from the executable).

    ``serving_port``: the port the load goes to, so a wrapper's child that serves it is the
    one probed (npm runs node, which runs the server). ProbeUnavailable says why not.
    """
    runtime = runtime or runtime_of_process(pid)
    module = _module(runtime) if runtime else None
    if module is None:
        raise ProbeUnavailable(f"process {pid}: no runtime heap probe for this program")
    probe: RuntimeProbe = module.open_probe(pid, started=started, serving_port=serving_port)
    return probe
