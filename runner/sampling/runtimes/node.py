"""Node's own account of its live heap, through its inspector (Chrome DevTools Protocol).

A started node target gets ``--inspect=127.0.0.1:0`` (or ``NODE_OPTIONS`` when it is
started by npm, npx, yarn or a ``#!/usr/bin/env node`` script); a running one (``--pid``)
opens its inspector on SIGUSR1 once its executable is checked to be node. In both cases
the port is found from the process's own listening sockets, confirmed by ``/json/list``,
never assumed. One CDP session serves the whole run:

- ``start()``: ``HeapProfiler.startSampling`` (32 KiB interval, live objects only: both
  ``includeObjectsCollectedBy*GC`` false, else it reports cumulative allocations);
- ``checkpoint()``: a full GC (``HeapProfiler.getSamplingProfile`` runs one itself, so no
  ``HeapProfiler.collectGarbage`` is added while sampling: one collection per checkpoint),
  the sampling profile flattened to live bytes per function, then ``Runtime.getHeapUsage``
  (the live heap) and ``process.memoryUsage()`` (``external``, which includes
  ``arrayBuffers``: Buffer memory the JS heap does not hold);
- ``finish()``: when native memory grew or the sampled functions explain less than half
  of the heap's growth, a heap-snapshot diff between the start and the end of the steady
  phase, by constructor and closure location, with one retainer chain from a root;
- ``close()``: sampling stopped, the inspector closed (nothing stays listening).

Honest limits: a function's ``lineNumber`` is where the function starts, not the
allocating line; V8 may inline a small function into its caller, so its bytes are credited
to the caller; Buffer backing stores are invisible to the sampler (only ``external`` and
the snapshot diff see them). The inspector URL (its UUID is the only thing between it and
a remote shell) is never written to shared outputs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import AbstractSet, Any, Iterator, Sequence

import psutil

from ...load.client import WebSocketClient, WebSocketError
from ...target import port_in_use
from ...watchdog import CLOSE_INSPECTOR
from . import Checkpoint, LaunchPlan, ProbeUnavailable, RuntimeSite
from .guard import release_guard, start_guard

__all__ = [
    "CdpSession",
    "NodeProbe",
    "NODE_EXECUTABLES",
    "NODE_WRAPPERS",
    "SAMPLING_INTERVAL",
    "handles_command",
    "handles_executable",
    "is_node_executable",
    "launch_kind",
    "open_probe",
    "prepare_launch",
]

#: Program names that are node itself: the inspector flag goes on their command line.
NODE_EXECUTABLES = ("node", "nodejs")
#: Programs that start node themselves: the flag goes into NODE_OPTIONS, which their node children inherit.
NODE_WRAPPERS = ("npm", "npx", "yarn", "pnpm", "tsx", "ts-node", "nodemon")
#: HeapProfiler.startSampling interval in bytes: nearly free, fine enough for per-connection state.
SAMPLING_INTERVAL = 32768
#: The inspector flag: loopback only, a port chosen by the system.
INSPECT_FLAG = "--inspect=127.0.0.1:0"
#: Longest wait for the inspector to listen (after start-up, or after SIGUSR1).
INSPECTOR_WAIT = 10.0
#: Longest single CDP call (a full GC of a large heap takes seconds; a snapshot longer).
CALL_TIMEOUT = 60.0
#: Functions kept per checkpoint (largest first): the rest are too small to matter per connection.
MAX_CHECKPOINT_SITES = 400
#: User frames kept in a site's stack.
MAX_STACK = 8
#: finish(): native growth above this, or heap growth above it with sites explaining < half, takes the snapshot diff.
SNAPSHOT_MIN_GROWTH = 1 << 20
#: Snapshot groups reported, and nodes a retainer search may visit.
SNAPSHOT_GROUPS = 10
RETAINER_SEARCH_LIMIT = 2_000_000


def is_node_executable(path: str) -> bool:
    """True for ``node``, ``nodejs``, ``/usr/bin/node``, ``node20``..."""
    name = os.path.basename(path)
    return any(name == n or re.fullmatch(re.escape(n) + r"[\d.]+", name) for n in NODE_EXECUTABLES)


def _shebang_node(path: str) -> bool:
    """A script whose ``#!`` line runs node (``#!/usr/bin/env node``)."""
    try:
        with open(path, "rb") as fh:
            first = fh.readline(200)
    except OSError:
        return False
    return first.startswith(b"#!") and any(
        is_node_executable(word) for word in first[2:].decode(errors="replace").split()
    )


def launch_kind(argv: Sequence[str]) -> str | None:
    """``"direct"`` (node itself), ``"wrapper"`` (starts node: npm, a node script), or None."""
    if not argv:
        return None
    program = argv[0]
    if is_node_executable(program):
        return "direct"
    name = os.path.basename(program)
    if name in NODE_WRAPPERS:
        return "wrapper"
    resolved = program if os.sep in program else shutil.which(program)
    if resolved and _shebang_node(resolved):
        return "wrapper"
    return None


def prepare_launch(argv: Sequence[str], env: dict[str, str]) -> LaunchPlan:
    """``argv`` with the inspector opened on a loopback port the system chooses."""
    kind = launch_kind(argv)
    if kind is None:
        return LaunchPlan(list(argv), dict(env))
    out_env = dict(env)
    options = out_env.get("NODE_OPTIONS", "")
    if any(a.startswith("--inspect") for a in argv) or "--inspect" in options:
        return LaunchPlan(
            list(argv),
            out_env,
            runtime="node",
            notes=["node heap probe: the command opens its own inspector; the probe uses it where it listens"],
        )
    if kind == "direct":
        return LaunchPlan([argv[0], INSPECT_FLAG, *argv[1:]], out_env, runtime="node")
    out_env["NODE_OPTIONS"] = f"{options} {INSPECT_FLAG}".strip()
    return LaunchPlan(list(argv), out_env, runtime="node")


# --- the inspector's whereabouts --------------------------------------------------------


def _loopback_listening(proc: psutil.Process) -> set[tuple[str, int]]:
    try:
        return {
            (c.laddr.ip, c.laddr.port)
            for c in proc.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr
        }
    except psutil.Error:
        return set()


def _debugger_url(host: str, port: int, timeout: float = 2.0) -> str | None:
    """The ``webSocketDebuggerUrl`` that ``GET /json/list`` gives on ``host:port``, or None."""
    address = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    url = f"http://{'[' + address + ']' if ':' in address else address}:{port}/json/list"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback only
            data = json.loads(response.read(1 << 16))
    except (OSError, ValueError, urllib.error.URLError):
        return None
    if isinstance(data, list):
        for entry in data:
            if isinstance(entry, dict) and str(entry.get("webSocketDebuggerUrl", "")).startswith("ws://"):
                return str(entry["webSocketDebuggerUrl"])
    return None


@dataclass(frozen=True)
class _Inspector:
    pid: int
    host: str
    port: int
    url: str  # ws://host:port/UUID: never printed


def _find_inspector(
    procs: Sequence[psutil.Process], skip: AbstractSet[tuple[int, int]] = frozenset()
) -> list[_Inspector]:
    """The inspectors among ``procs``' loopback listening sockets (``skip``: (pid, port) known not to be one)."""
    found = []
    for proc in procs:
        for host, port in sorted(_loopback_listening(proc)):
            if (proc.pid, port) in skip:
                continue
            url = _debugger_url(host, port)
            if url is not None:
                found.append(_Inspector(proc.pid, host, port, url))
    return found


def _node_tree(pid: int) -> list[psutil.Process]:
    """``pid`` and its descendants that run node, the root first."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return []
    out = []
    for proc in procs:
        try:
            if is_node_executable(proc.exe() or proc.name()):
                out.append(proc)
        except psutil.Error:
            continue
    return out


def _pick(inspectors: list[_Inspector], serving_port: int | None) -> _Inspector:
    """The inspector of the node process that serves the load (npm's own node is not it)."""
    if serving_port is not None:
        for inspector in inspectors:
            try:
                ports = {port for _, port in _loopback_listening(psutil.Process(inspector.pid))}
            except psutil.Error:
                continue
            if serving_port in ports:
                return inspector
    return inspectors[-1]  # the deepest: a wrapper's child


def _inspect_port(proc: psutil.Process) -> int:
    """The port SIGUSR1 opens (``--inspect-port``/``--inspect=[host:]port``, also in NODE_OPTIONS), default 9229."""
    words: list[str] = []
    try:
        words += proc.cmdline()
    except psutil.Error:
        pass
    try:
        words += proc.environ().get("NODE_OPTIONS", "").split()
    except psutil.Error:
        pass
    port = 9229
    for word in words:
        match = re.fullmatch(r"--inspect(?:-port|-brk|-wait)?=(?:[^:]*:)?(\d+)", word)
        if match:
            port = int(match.group(1))
    return port


# --- CDP --------------------------------------------------------------------------------


class CdpSession:
    """One Chrome DevTools Protocol session: requests with ids, events set aside.

    Runs on :class:`~runner.load.client.WebSocketClient` (gevent sockets inside the run,
    plain sockets in tests). Not re-entrant: ``busy`` is true while a call waits, so a
    closer knows to open a session of its own.
    """

    def __init__(self, url: str, *, timeout: float = CALL_TIMEOUT) -> None:
        self.client = WebSocketClient(url, timeout=timeout, max_size=None)
        self.client.connect()
        self._next = 0
        self.busy = False
        self.broken = False
        self.events: list[dict[str, Any]] = []

    def call(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float = CALL_TIMEOUT, on_event: Any = None
    ) -> dict[str, Any]:
        """The ``result`` of ``method``; ProbeUnavailable on an error reply, a timeout or a closed session."""
        if self.broken:
            raise ProbeUnavailable(f"node heap probe: the inspector session is gone ({method} not sent)")
        self._next += 1
        ident = self._next
        self.busy = True
        try:
            self.client.send(json.dumps({"id": ident, "method": method, "params": params or {}}))
            deadline = time.monotonic() + timeout
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                message = json.loads(self.client.recv(timeout=remaining))
                if message.get("id") == ident:
                    if "error" in message:
                        raise ProbeUnavailable(
                            f"node heap probe: {method} failed: {message['error'].get('message', 'error')}"
                        )
                    return dict(message.get("result") or {})
                if on_event is not None and "method" in message:
                    on_event(message)
        except (TimeoutError, socket.timeout):
            self.broken = True
            raise ProbeUnavailable(f"node heap probe: {method} got no answer within {timeout:g}s") from None
        except (OSError, WebSocketError, ValueError) as exc:
            self.broken = True
            raise ProbeUnavailable(
                f"node heap probe: the inspector session failed during {method} ({type(exc).__name__})"
            ) from None
        finally:
            self.busy = False

    def send_only(self, method: str, params: dict[str, Any] | None = None) -> None:
        """Send without waiting for the answer (closing the inspector drops the session first)."""
        self._next += 1
        self.client.send(json.dumps({"id": self._next, "method": method, "params": params or {}}))

    def close(self) -> None:
        try:
            self.client.abort()
        except Exception:  # noqa: BLE001 - closing must not raise
            pass


# --- the sampling profile, flattened ----------------------------------------------------


def _display_url(url: str) -> str:
    path = url[len("file://") :] if url.startswith("file://") else url
    if path.startswith("/"):
        try:
            rel = os.path.relpath(path)
        except ValueError:
            return path
        return path if rel.startswith("..") else rel
    return path


def _is_user_frame(frame: dict[str, Any]) -> bool:
    url = frame.get("url") or ""
    return bool(url) and not url.startswith(("node:", "internal/")) and not url.startswith("file:///node:")


def _is_user_location(location: str) -> bool:
    """A site in the server's own code (not node's internals, not native)."""
    return not location.startswith(("node:", "internal/", "(native)"))


def _frame_text(frame: dict[str, Any]) -> tuple[str, str]:
    """(``file:line`` 1-based, function name) of a call frame."""
    line = int(frame.get("lineNumber", -1))
    place = _display_url(frame.get("url") or "")
    location = f"{place}:{line + 1}" if place and line >= 0 else (place or "(native)")
    return location, frame.get("functionName") or "(anonymous)"


def flatten_profile(head: dict[str, Any], *, limit: int = MAX_CHECKPOINT_SITES) -> list[RuntimeSite]:
    """Live bytes per innermost user function of a sampling heap profile (pure).

    A sample inside a builtin or node's own code (``String.prototype.repeat``, ``node:events``)
    is credited to the innermost user frame above it: that is the code that asked for the
    memory. With no user frame at all it stays with the innermost frame that has a name.
    """
    totals: dict[tuple[str, str], list[Any]] = {}
    stack: list[tuple[dict[str, Any], Iterator[dict[str, Any]]]] = [(head, iter(head.get("children") or ()))]
    frames: list[dict[str, Any]] = [head.get("callFrame") or {}]
    _credit(head, frames, totals)
    while stack:
        _, children = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            frames.pop()
            continue
        frames.append(child.get("callFrame") or {})
        _credit(child, frames, totals)
        stack.append((child, iter(child.get("children") or ())))
    sites = [
        RuntimeSite(location=location, function=function, live_bytes=int(size), stack=tuple(best_stack))
        for (location, function), (size, best_stack, _) in totals.items()
    ]
    sites.sort(key=lambda s: s.live_bytes, reverse=True)
    return sites[:limit]


def _credit(node: dict[str, Any], frames: list[dict[str, Any]], totals: dict[tuple[str, str], list[Any]]) -> None:
    size = int(node.get("selfSize") or 0)
    if size <= 0:
        return
    user = [f for f in reversed(frames) if _is_user_frame(f)]
    if user:
        key = _frame_text(user[0])
    else:
        named = [f for f in reversed(frames) if f.get("functionName") or f.get("url")]
        key = _frame_text(named[0]) if named else ("(native)", "(root)")
    entry = totals.setdefault(key, [0, (), 0])
    entry[0] += size
    if size > entry[2]:  # the stack that carries most of the site's bytes
        entry[1] = tuple(" ".join(reversed(_frame_text(f))) for f in user[:MAX_STACK])
        entry[2] = size


# --- the probe --------------------------------------------------------------------------


@dataclass
class _History:
    """What finish() needs to decide on a snapshot diff: the checkpoints' heap, native and site totals."""

    heap: list[int] = field(default_factory=list)
    native: list[int] = field(default_factory=list)
    sites: list[int] = field(default_factory=list)


class NodeProbe:
    """The inspector session of one node process (see the module docstring)."""

    runtime = "node"

    def __init__(self, inspector: _Inspector, *, opened_here: bool, notes: Sequence[str] = ()) -> None:
        self.pid = inspector.pid
        self.port = inspector.port
        self._url = inspector.url
        #: True when this probe opened the inspector (SIGUSR1 or the launch flag): it closes it again.
        self.opened_here = opened_here
        self.notes = list(notes)
        self.session: CdpSession | None = None
        self.sampling = False
        self.closed = False
        self._history = _History()
        self._steady_groups: dict[str, Any] | None = None
        self._steady_wall: float | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        try:
            self.session = CdpSession(self._url)
        except (OSError, WebSocketError) as exc:
            raise ProbeUnavailable(
                f"node heap probe: cannot connect to the inspector of pid {self.pid} ({type(exc).__name__})"
            ) from None
        if opened_here:
            self._watchdog = start_guard("--close-inspector", self._url.encode())  # a killed runner closes it too

    def _call(self, method: str, params: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        if self.session is None:
            raise ProbeUnavailable("node heap probe: closed")
        return self.session.call(method, params, **kwargs)

    def start(self) -> None:
        """Start the sampling heap profiler (live objects only)."""
        self._call("HeapProfiler.enable")
        self._call(
            "HeapProfiler.startSampling",
            {
                "samplingInterval": SAMPLING_INTERVAL,
                "includeObjectsCollectedByMajorGC": False,
                "includeObjectsCollectedByMinorGC": False,
            },
        )
        self.sampling = True

    def checkpoint(self) -> Checkpoint:
        """A full GC, then the live heap, Buffer/external memory and live bytes per function."""
        began = time.monotonic()
        sites: tuple[RuntimeSite, ...] = ()
        if self.sampling:  # getSamplingProfile runs the full GC itself: one collection per checkpoint, not two
            profile = self._call("HeapProfiler.getSamplingProfile").get("profile") or {}
            sites = tuple(flatten_profile(profile.get("head") or {}))
        else:
            self._call("HeapProfiler.collectGarbage")
        usage = self._call("Runtime.getHeapUsage")
        memory = self._memory_usage()
        heap = int(usage.get("usedSize") or 0)
        native = int(memory["external"]) if memory.get("external") is not None else None
        self._history.heap.append(heap)
        self._history.native.append(native or 0)
        self._history.sites.append(sum(s.live_bytes for s in sites if _is_user_location(s.location)))
        return Checkpoint(heap=heap, native=native, sites=sites, gc_seconds=time.monotonic() - began)

    def _memory_usage(self) -> dict[str, Any]:
        reply = self._call(
            "Runtime.evaluate", {"expression": "JSON.stringify(process.memoryUsage())", "returnByValue": True}
        )
        try:
            return dict(json.loads(reply["result"]["value"]))
        except (KeyError, TypeError, ValueError):
            return {}

    def steady_started(self) -> None:
        """Mark the start of steady churn: the heap snapshot diff (if finish() wants one) starts here."""
        self._steady_wall = time.time()
        self._steady_index = len(self._history.heap)
        try:
            self._steady_groups = self._snapshot(keep_graph=False)["groups"]
        except ProbeUnavailable as exc:
            self.notes.append(str(exc))

    def finish(self) -> dict[str, Any]:
        """At the end of steady churn: the snapshot diff, when the sampled sites cannot explain the growth."""
        extras: dict[str, Any] = {"notes": self.notes}
        why = self._snapshot_reason()
        if why is None or self._steady_groups is None:
            return extras
        try:
            end = self._snapshot(keep_graph=True)
        except ProbeUnavailable as exc:
            self.notes.append(str(exc))
            return extras
        extras["snapshot_diff"] = {
            "why": why,
            "start_wall": self._steady_wall,
            "end_wall": end["wall"],
            "groups": diff_groups(self._steady_groups, end["groups"], end.get("graph")),
        }
        return extras

    def _snapshot_reason(self) -> str | None:
        start = getattr(self, "_steady_index", None)
        history = self._history
        if start is None or len(history.heap) - start < 2:
            return None
        native = history.native[-1] - history.native[start]
        heap = history.heap[-1] - history.heap[start]
        sites = history.sites[-1] - history.sites[start]
        if native > SNAPSHOT_MIN_GROWTH:
            return f"native (Buffer/external) memory grew {native} bytes over the steady phase"
        if heap > SNAPSHOT_MIN_GROWTH and sites < heap / 2:
            return f"the server's own functions explain {max(sites, 0)} of the heap's {heap} bytes of growth"
        return None

    def _snapshot(self, *, keep_graph: bool) -> dict[str, Any]:
        chunks: list[str] = []

        def collect(message: dict[str, Any]) -> None:
            if message.get("method") == "HeapProfiler.addHeapSnapshotChunk":
                chunks.append(message["params"]["chunk"])

        self._call(
            "HeapProfiler.takeHeapSnapshot",
            {"reportProgress": False, "treatGlobalObjectsAsRoots": True, "captureNumericValue": False},
            on_event=collect,
        )
        wall = time.time()
        try:
            snapshot = json.loads("".join(chunks))
        except ValueError:
            raise ProbeUnavailable("node heap probe: the heap snapshot could not be read") from None
        scripts = self._script_urls()
        return {"wall": wall, **summarise_snapshot(snapshot, scripts, keep_graph=keep_graph)}

    def _script_urls(self) -> dict[int, str]:
        """Script id -> url, from Debugger.scriptParsed (the Debugger is enabled only for this moment)."""
        urls: dict[int, str] = {}

        def collect(message: dict[str, Any]) -> None:
            if message.get("method") == "Debugger.scriptParsed":
                params = message.get("params") or {}
                if params.get("url"):
                    urls[int(params["scriptId"])] = params["url"]

        try:
            self._call("Debugger.enable", on_event=collect)
            self._call("Runtime.evaluate", {"expression": "1"}, on_event=collect)  # flush the events queued behind
            self._call("Debugger.disable", on_event=collect)
        except ProbeUnavailable:
            pass
        return urls

    def close(self) -> list[str]:
        """Stop sampling and close the inspector if this probe opened it; never raises. Returns notes."""
        if self.closed:
            return []
        self.closed = True
        notes: list[str] = []
        session = self.session
        try:
            if session is None or session.busy or session.broken:
                if session is not None:
                    session.close()
                session = CdpSession(self._url, timeout=5.0)  # another session: the sampler is per process
            if self.sampling:
                try:
                    session.call("HeapProfiler.stopSampling", timeout=10.0)
                except ProbeUnavailable as exc:
                    notes.append(str(exc))
                self.sampling = False
            if self.opened_here:
                session.send_only("Runtime.evaluate", {"expression": CLOSE_INSPECTOR, "includeCommandLineAPI": True})
                _wait_closed(self.pid, self.port)
        except (OSError, WebSocketError, ProbeUnavailable) as exc:
            notes.append(f"node heap probe: could not close the inspector of pid {self.pid} ({type(exc).__name__})")
        finally:
            if session is not None:
                session.close()
            self.session = None
        if self.opened_here and _listening(self.pid, self.port):
            notes.append(
                f"node heap probe: the inspector of pid {self.pid} is still listening on 127.0.0.1:{self.port}"
            )
        release_guard(self._watchdog, undone=not _listening(self.pid, self.port), timeout=10.0)
        self._watchdog = None
        return notes


def _listening(pid: int, port: int) -> bool:
    try:
        return any(p == port for _, p in _loopback_listening(psutil.Process(pid)))
    except psutil.Error:
        return False


def _wait_closed(pid: int, port: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while _listening(pid, port) and time.monotonic() < deadline:
        time.sleep(0.05)


# --- heap snapshots (pure over the parsed snapshot) --------------------------------------


def summarise_snapshot(snapshot: dict[str, Any], scripts: dict[int, str], *, keep_graph: bool) -> dict[str, Any]:
    """Objects grouped by constructor (closures by their source location): count and shallow bytes.

    ``keep_graph`` keeps what a retainer chain needs (node names, edges) for :func:`diff_groups`.
    """
    meta = snapshot["snapshot"]["meta"]
    node_fields: list[str] = meta["node_fields"]
    edge_fields: list[str] = meta["edge_fields"]
    node_types: list[str] = meta["node_types"][0]
    edge_types: list[str] = meta["edge_types"][0]
    strings: list[str] = snapshot["strings"]
    nodes: list[int] = snapshot["nodes"]
    width = len(node_fields)
    f_type, f_name, f_size, f_edges = (node_fields.index(k) for k in ("type", "name", "self_size", "edge_count"))
    f_id = node_fields.index("id")
    locations: dict[int, str] = {}
    loc = snapshot.get("locations") or []
    loc_fields = meta.get("location_fields") or ["object_index", "script_id", "line", "column"]
    lw = len(loc_fields)
    for i in range(0, len(loc), lw):
        index, script, line = loc[i], loc[i + 1], loc[i + 2]
        url = scripts.get(int(script))
        if url:
            locations[index // width] = f"{_display_url(url)}:{line + 1}"
    groups: dict[str, list[int]] = {}
    members: dict[str, list[int]] = {}
    count = len(nodes) // width
    for n in range(count):
        base = n * width
        kind = node_types[nodes[base + f_type]] if nodes[base + f_type] < len(node_types) else "?"
        if kind == "closure":
            where = locations.get(n)
            if where is None:
                continue
            key = f"{strings[nodes[base + f_name]] or '(anonymous)'}() at {where}"
        elif kind == "object":
            key = strings[nodes[base + f_name]] or "Object"
        elif kind in ("string", "concatenated string", "sliced string"):
            key = "(string)"
        elif kind == "array":
            key = "(array)"
        elif kind == "native":
            key = f"(native) {strings[nodes[base + f_name]]}"[:80]
        else:
            continue
        entry = groups.setdefault(key, [0, 0])
        entry[0] += 1
        entry[1] += nodes[base + f_size]
        if keep_graph:
            members.setdefault(key, []).append(n)
    result: dict[str, Any] = {"groups": {k: {"count": v[0], "bytes": v[1]} for k, v in groups.items()}}
    if keep_graph:
        result["graph"] = {
            "nodes": nodes,
            "width": width,
            "edges": snapshot["edges"],
            "edge_width": len(edge_fields),
            "f_edges": f_edges,
            "f_name": f_name,
            "f_type": f_type,
            "f_id": f_id,
            "strings": strings,
            "node_types": node_types,
            "edge_types": edge_types,
            "e_type": edge_fields.index("type"),
            "e_name": edge_fields.index("name_or_index"),
            "e_to": edge_fields.index("to_node"),
            "members": members,
        }
    return result


def diff_groups(
    start: dict[str, Any], end: dict[str, Any], graph: dict[str, Any] | None, *, limit: int = SNAPSHOT_GROUPS
) -> list[dict[str, Any]]:
    """The groups that gained most bytes between two snapshots, each with one retainer chain."""
    rows = []
    for key, after in end.items():
        before = start.get(key, {"count": 0, "bytes": 0})
        grown = after["bytes"] - before["bytes"]
        if grown > 0 and after["count"] > before["count"]:
            rows.append(
                {
                    "group": key,
                    "count_delta": after["count"] - before["count"],
                    "bytes_delta": grown,
                    "count_end": after["count"],
                    "bytes_end": after["bytes"],
                }
            )
    rows.sort(key=lambda r: r["bytes_delta"], reverse=True)
    closures = [r for r in rows if "() at " in r["group"]][: limit // 2]  # closures name the code that keeps them
    rows = rows[:limit] + [r for r in closures if r not in rows[:limit]]
    if graph is not None:
        paths = _retainer_paths(graph, [r["group"] for r in rows[:3]] + [r["group"] for r in closures[:3]])
        for row in rows:
            if row["group"] in paths:
                row["retainers"] = paths[row["group"]]
    return rows


def _retainer_paths(graph: dict[str, Any], groups: Sequence[str]) -> dict[str, list[str]]:
    """Shortest chain from the snapshot root to the newest member of each group (weak edges skipped)."""
    nodes, width, edges, ew = graph["nodes"], graph["width"], graph["edges"], graph["edge_width"]
    f_edges, e_type, e_to = graph["f_edges"], graph["e_type"], graph["e_to"]
    edge_types = graph["edge_types"]
    wanted: dict[int, str] = {}
    for group in groups:
        member_list = graph["members"].get(group) or []
        if member_list:
            wanted[member_list[-1]] = group  # the newest object of the group (snapshot order ~ allocation order)
    count = len(nodes) // width
    first_edge = [0] * (count + 1)
    total = 0
    for n in range(count):
        first_edge[n] = total
        total += nodes[n * width + f_edges] * ew
    first_edge[count] = total
    parent: dict[int, tuple[int, int]] = {0: (-1, -1)}
    queue = [0]
    found: dict[str, list[str]] = {}
    head = 0
    while head < len(queue) and len(found) < len(wanted) and head < RETAINER_SEARCH_LIMIT:
        n = queue[head]
        head += 1
        for e in range(first_edge[n], first_edge[n + 1], ew):
            kind = edge_types[edges[e + e_type]]
            if kind in ("weak", "shortcut"):
                continue
            to = edges[e + e_to] // width
            if to in parent:
                continue
            parent[to] = (n, e)
            queue.append(to)
            if to in wanted and wanted[to] not in found:
                found[wanted[to]] = _path_text(graph, parent, to)
    return found


def _path_text(graph: dict[str, Any], parent: dict[int, tuple[int, int]], node: int) -> list[str]:
    nodes, width, edges = graph["nodes"], graph["width"], graph["edges"]
    strings, edge_types, node_types = graph["strings"], graph["edge_types"], graph["node_types"]
    steps = []
    while True:
        up, e = parent[node]
        if up < 0:
            break
        kind = edge_types[edges[e + graph["e_type"]]]
        name_or_index = edges[e + graph["e_name"]]
        label = f"[{name_or_index}]" if kind in ("element", "hidden") else strings[name_or_index]
        holder = strings[nodes[up * width + graph["f_name"]]] or node_types[nodes[up * width + graph["f_type"]]]
        steps.append(f"{holder[:60]}.{label[:60]}")
        node = up
    steps.reverse()
    return steps[1:] if len(steps) > 1 else steps  # the synthetic root's own edge says nothing


# --- opening ----------------------------------------------------------------------------


def open_probe(pid: int, *, started: bool, serving_port: int | None = None) -> NodeProbe:
    """The probe of node process ``pid`` (or the node child of a started wrapper that serves ``serving_port``)."""
    if started:
        return _open_started(pid, serving_port)
    return _open_attached(pid)


def _open_started(pid: int, serving_port: int | None) -> NodeProbe:
    deadline = time.monotonic() + INSPECTOR_WAIT
    while True:
        procs = _node_tree(pid)
        inspectors = _find_inspector(procs)
        if inspectors:
            return NodeProbe(_pick(inspectors, serving_port), opened_here=True)
        if time.monotonic() >= deadline:
            if not procs:
                raise ProbeUnavailable(f"node heap probe: no node process found in the tree of pid {pid}")
            raise ProbeUnavailable(
                f"node heap probe: the inspector of pid {procs[-1].pid} did not listen within {INSPECTOR_WAIT:g}s "
                "(see target.log: a port in use, or --inspect refused)"
            )
        time.sleep(0.2)


def _open_attached(pid: int) -> NodeProbe:
    try:
        proc = psutil.Process(pid)
        exe = proc.exe() or proc.name()
    except psutil.AccessDenied:
        raise ProbeUnavailable(
            f"node heap probe: process {pid} belongs to another user; run soak as that user"
        ) from None
    except psutil.Error:
        raise ProbeUnavailable(f"node heap probe: no process {pid}") from None
    if not is_node_executable(exe):
        raise ProbeUnavailable(
            f"node heap probe: process {pid} is not node (its program is {os.path.basename(exe)}), "
            "so SIGUSR1 is not sent"
        )
    if proc.uids().real != os.getuid() and os.getuid() != 0:
        raise ProbeUnavailable(f"node heap probe: process {pid} belongs to another user; run soak as that user")
    try:
        words = proc.cmdline() + proc.environ().get("NODE_OPTIONS", "").split()
    except psutil.Error:
        words = []
    if "--disable-sigusr1" in words:
        raise ProbeUnavailable(
            f"node heap probe: process {pid} runs with --disable-sigusr1, so its inspector cannot be opened"
        )
    before = _find_inspector([proc])
    if before:  # already open (by its owner): use it, and leave it as found
        return NodeProbe(
            before[0],
            opened_here=False,
            notes=[f"node heap probe: pid {pid} already had its inspector open; it is left open after the run"],
        )
    port = _inspect_port(proc)
    if port and port_in_use(port):
        raise ProbeUnavailable(
            f"node heap probe: port {port}, where pid {pid} would open its inspector on SIGUSR1, is already in use; "
            "free it or start the server with --inspect-port=0"
        )
    listening = {(pid, p) for _, p in _loopback_listening(proc)}
    try:
        os.kill(pid, signal.SIGUSR1)
    except OSError as exc:
        raise ProbeUnavailable(f"node heap probe: cannot signal pid {pid} ({exc.strerror})") from None
    deadline = time.monotonic() + INSPECTOR_WAIT
    while time.monotonic() < deadline:
        found = _find_inspector([proc], skip=listening)
        if found:
            inspector = found[0]
            if not inspector.host.startswith("127.") and inspector.host != "::1":
                probe = NodeProbe(inspector, opened_here=True)
                probe.close()
                raise ProbeUnavailable(
                    f"node heap probe: pid {pid} opened its inspector on {inspector.host}, not loopback; "
                    "closed it again"
                )
            return NodeProbe(inspector, opened_here=True)
        time.sleep(0.1)
    raise ProbeUnavailable(
        f"node heap probe: pid {pid} did not open an inspector within {INSPECTOR_WAIT:g}s of SIGUSR1 "
        "(its own SIGUSR1 handler, or the inspector disabled)"
    )


def handles_command(argv: Sequence[str]) -> bool:
    """True when ``argv`` starts node (directly, or through npm, npx, yarn, a node script)."""
    return launch_kind(argv) is not None


handles_executable = is_node_executable
