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
  ``probe.checkpoint()`` forces a full GC and reads the heap (and per-site live bytes);
  ``probe.finish()`` at the end of the steady phase returns extras for the report (a
  snapshot diff, a retainer chain, JFR's old objects); ``probe.close()`` leaves nothing
  enabled in the server (inspector closed, sampling stopped) and never raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

__all__ = ["Checkpoint", "LaunchPlan", "ProbeUnavailable", "RuntimeProbe", "RuntimeSite", "open_probe", "prepare_launch"]


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


def prepare_launch(argv: Sequence[str], env: dict[str, str]) -> LaunchPlan:
    """The command (and environment) to start so that its runtime can be probed."""
    if jvm.handles_command(argv):
        return jvm.prepare_launch(argv, env)
    return LaunchPlan(list(argv), dict(env))


def open_probe(pid: int, *, started: bool, runtime: str | None = None) -> RuntimeProbe:
    """A probe of process ``pid`` (``runtime`` from :func:`prepare_launch`, or detected from the executable)."""
    if runtime == "jvm" or (runtime is None and jvm.is_jvm(pid)):
        return jvm.open_probe(pid, started=started)
    raise ProbeUnavailable(f"process {pid}: no runtime heap probe for this program")


from . import jvm  # noqa: E402 - the probe modules import the contract above
