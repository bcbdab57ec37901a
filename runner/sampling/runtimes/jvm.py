"""The JVM probe: HotSpot's dynamic attach socket, spoken from Python (no ``jcmd``).

``jcmd`` starts a JVM of its own for every call (0.8-1.9 s here); the protocol it speaks
is a few bytes on a Unix socket, so this module speaks it directly:

- The JVM listens on ``/tmp/.java_pid<PID>`` once its attach listener runs. It starts it
  on SIGQUIT when a file ``.attach_pid<PID>`` exists in its working folder (or /tmp), so
  the probe creates that file, sends SIGQUIT, waits (bounded) for the socket and removes
  the file again. ``<PID>`` is the pid in the JVM's own pid namespace, and both paths are
  reached through ``/proc/<pid>/root`` and ``/proc/<pid>/cwd``, so a containerised JVM
  works too. SIGQUIT kills a process that does not catch it, so the probe first checks
  that the process is a JVM, catches SIGQUIT (not ``-Xrs``) and runs as our user.
- A request is ``1\\0jcmd\\0<command>\\0\\0\\0`` (protocol 1, the ``jcmd`` operation, three
  arguments); the reply is a status line (``0`` = done) then the command's output, until
  the JVM closes the connection. One connection per command, each with a timeout.

At each checkpoint ``GC.class_histogram`` runs a full collection and lists live instances
and shallow bytes per class: its total is the heap after GC, its rows the sites. Where JFR
is present, ``start()`` records ``jdk.OldObjectSample`` only (with path-to-gc-roots), and
``finish()`` dumps it and reads it with the JDK's ``jfr`` tool: the allocating line and the
root that keeps the growing classes. ``close()`` stops the recording.

Native memory: direct buffers are not reachable through the attach socket without Native
Memory Tracking (off by default; ``-XX:NativeMemoryTracking=summary`` turns it on). When
NMT is on, ``native`` is its committed ``Other`` category (where JDK 17 accounts direct
ByteBuffers); otherwise ``None``, with a note.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import psutil

from ...analysis.jvm_heap import (
    ClassHistogram,
    class_provenance,
    is_user_class,
    parse_class_histogram,
    parse_old_objects,
)
from . import Checkpoint, LaunchPlan, ProbeUnavailable, RuntimeSite
from .guard import release_guard, start_guard

__all__ = [
    "AttachClient",
    "JvmProbe",
    "find_jvm",
    "is_jvm",
    "handles_command",
    "handles_executable",
    "prepare_launch",
    "open_probe",
    "open_jvm_probe",
    "ATTACH_TIMEOUT",
    "CALL_TIMEOUT",
]

#: Longest wait for the attach socket after SIGQUIT.
ATTACH_TIMEOUT = 10.0
#: Longest wait for one command's reply (a histogram of a large heap takes a while).
CALL_TIMEOUT = 60.0
#: Longest run of the ``jfr`` tool over the dumped recording.
JFR_TOOL_TIMEOUT = 120.0
#: Growing classes whose allocation site and root ``finish()`` looks up.
TOP_CLASSES = 5
_SIGQUIT_BIT = 1 << (signal.SIGQUIT - 1)
_DISABLE_ATTACH = "-XX:+DisableAttachMechanism"
_OPTION_VARS = ("JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS", "_JAVA_OPTIONS")
_NMT_OTHER = re.compile(r"-\s+Other \(reserved=\d+KB, committed=(\d+)KB\)")


def is_jvm(pid: int) -> bool:
    """True when process ``pid`` runs a HotSpot JVM: its program is ``java`` or it maps a libjvm."""
    try:
        if os.path.basename(os.readlink(f"/proc/{pid}/exe")) == "java":
            return True
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as fh:
            return any(line.rstrip().endswith("/libjvm.so") for line in fh)
    except OSError:
        return False


def handles_command(argv: Sequence[str]) -> bool:
    """A command whose program is ``java`` (``java Server.java``, ``java -jar app.jar``)."""
    return bool(argv) and os.path.basename(argv[0]) == "java"


def handles_executable(path: str) -> bool:
    """A running process whose program is ``java``."""
    return os.path.basename(path) == "java"


def prepare_launch(argv: Sequence[str], env: dict[str, str]) -> LaunchPlan:
    """The JVM needs no change to its command: attach is dynamic, and nothing is enabled before it is used."""
    return LaunchPlan(list(argv), dict(env), runtime="jvm")


def _listens_on(pid: int, port: int) -> bool:
    try:
        return any(
            c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
            for c in psutil.Process(pid).net_connections(kind="inet")
        )
    except psutil.Error:
        return False


def find_jvm(pid: int, serving_port: int | None = None) -> tuple[int, str | None]:
    """``pid`` when it is a JVM, else the JVM among its descendants (a launcher script, mvn exec).

    With several JVMs the one listening on ``serving_port`` is taken. Returns the pid and a
    note when it is not ``pid`` itself; ProbeUnavailable when there is none, or several and
    none of them serves (the run does not guess).
    """
    if is_jvm(pid):
        return pid, None
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        raise ProbeUnavailable(f"process {pid} is gone; no JVM to attach to") from None
    jvms = [c.pid for c in children if is_jvm(c.pid)]
    if len(jvms) > 1 and serving_port is not None:
        jvms = [j for j in jvms if _listens_on(j, serving_port)] or jvms
    if len(jvms) == 1:
        return jvms[0], f"JVM: probing java process {jvms[0]}, a child of {pid}"
    if jvms:
        raise ProbeUnavailable(
            f"process {pid} has {len(jvms)} java processes ({', '.join(map(str, jvms[:4]))}); "
            "pass --pid of the one that serves to get its heap"
        )
    raise ProbeUnavailable(f"process {pid} is not a JVM (no java executable, no libjvm.so mapped)")


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as fh:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in fh)}


def _openj9(pid: int) -> bool:
    """An Eclipse OpenJ9 JVM (its own attach API; SIGQUIT makes it write a javacore file)."""
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as fh:
            return any("libj9vm" in line for line in fh)
    except OSError:
        return False


def _attach_disabled(pid: int) -> bool:
    """Whether the JVM was told -XX:+DisableAttachMechanism (command line or the option variables)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            if _DISABLE_ATTACH.encode() in fh.read():
                return True
        with open(f"/proc/{pid}/environ", "rb") as fh:
            for entry in fh.read().split(b"\0"):
                name, _, value = entry.partition(b"=")
                if name.decode(errors="replace") in _OPTION_VARS and _DISABLE_ATTACH.encode() in value:
                    return True
    except OSError:
        pass
    return False


class AttachClient:
    """HotSpot's attach protocol to one JVM; each :meth:`jcmd` is one connection with a timeout."""

    def __init__(self, pid: int, *, attach_timeout: float = ATTACH_TIMEOUT, call_timeout: float = CALL_TIMEOUT) -> None:
        self.pid = pid
        self.call_timeout = call_timeout
        try:
            status = _status(pid)
        except OSError:
            raise ProbeUnavailable(f"process {pid} is gone; no JVM to attach to") from None
        self.nspid = int(status.get("NSpid", str(pid)).split()[-1])
        self.root = f"/proc/{pid}/root"
        self.socket_path = f"{self.root}/tmp/.java_pid{self.nspid}"
        uid = int(status.get("Uid", "0 0").split()[1])
        if os.geteuid() not in (0, uid):
            raise ProbeUnavailable(
                f"JVM {pid} runs as uid {uid}, the runner as uid {os.geteuid()}: HotSpot accepts "
                "attach only from its own user; run soak as that user for its heap"
            )
        if not os.path.exists(self.socket_path):
            self._trigger(pid, status, attach_timeout)

    def _trigger(self, pid: int, status: dict[str, str], timeout: float) -> None:
        """Make the JVM open its attach socket: the ``.attach_pid`` file, then SIGQUIT; bounded wait."""
        if _openj9(pid):
            raise ProbeUnavailable(
                f"JVM {pid} is OpenJ9, not HotSpot: its attach protocol is not spoken here; "
                "run the soak on a HotSpot JDK (OpenJDK, Temurin) for the heap tier"
            )
        if _attach_disabled(pid):
            raise ProbeUnavailable(
                f"JVM {pid} was started with {_DISABLE_ATTACH}: its heap cannot be read; "
                "remove that option to get the heap tier"
            )
        if not int(status.get("SigCgt", "0"), 16) & _SIGQUIT_BIT:
            raise ProbeUnavailable(
                f"JVM {pid} does not handle SIGQUIT (-Xrs, or still starting): attaching would "
                "kill it; start it without -Xrs for the heap tier"
            )
        trigger, present = None, False
        for folder in (f"/proc/{pid}/cwd", f"{self.root}/tmp"):
            candidate = f"{folder}/.attach_pid{self.nspid}"
            try:
                with open(candidate, "x"):
                    pass
                trigger, present = candidate, True
                break
            except FileExistsError:
                present = True  # someone else (jcmd) is attaching right now; their file serves us too
                break
            except OSError:
                continue
        if not present:  # without the file SIGQUIT only prints a thread dump into the server's output
            raise ProbeUnavailable(
                f"JVM {pid}: cannot create its attach trigger file (.attach_pid{self.nspid}) in "
                "its working folder or /tmp; its heap is not read, RSS still is"
            )
        try:
            os.kill(pid, signal.SIGQUIT)
            deadline = time.monotonic() + timeout
            while not os.path.exists(self.socket_path):
                if time.monotonic() >= deadline:
                    raise ProbeUnavailable(
                        f"JVM {pid} opened no attach socket within {timeout:g}s (attach disabled, a private /tmp, "
                        "or the JVM is stuck); its heap is not read, RSS still is"
                    )
                time.sleep(0.02)
        except ProcessLookupError:
            raise ProbeUnavailable(f"JVM {pid} is gone; no heap to read") from None
        finally:
            if trigger:
                try:
                    os.unlink(trigger)
                except OSError:
                    pass

    def jcmd(self, command: str, *, timeout: float | None = None) -> str:
        """Run one diagnostic command (as ``jcmd <pid> <command>`` would); its output text.

        ProbeUnavailable with one line on a refused connection, a timeout or a non-zero status.
        """
        limit = self.call_timeout if timeout is None else timeout
        request = b"1\0jcmd\0" + command.encode() + b"\0\0\0"
        chunks = []
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(limit)
                sock.connect(self.socket_path)
                sock.sendall(request)
                deadline = time.monotonic() + limit
                while True:
                    sock.settimeout(max(0.01, deadline - time.monotonic()))
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
        except TimeoutError:
            raise ProbeUnavailable(f"JVM {self.pid}: {command.split()[0]} did not answer within {limit:g}s") from None
        except OSError as exc:
            raise ProbeUnavailable(
                f"JVM {self.pid}: attach socket refused {command.split()[0]} "
                f"({exc.strerror or exc}); is the JVM still running?"
            ) from None
        text = b"".join(chunks).decode("utf-8", errors="replace")
        status, _, output = text.partition("\n")
        if status.strip() != "0":
            first = (output.strip().splitlines() or [status.strip() or "no reply"])[0]
            raise ProbeUnavailable(f"JVM {self.pid}: {command.split()[0]} failed: {first[:200]}")
        return output


def _jfr_tool(pid: int) -> Path | None:
    """The ``jfr`` tool next to the target's own java (through its root), else one on PATH."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe = ""
    for candidate in (Path(exe).with_name("jfr"), Path(f"/proc/{pid}/root{exe}").with_name("jfr")):
        if exe and candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("jfr")
    return Path(found) if found else None


class JvmProbe:
    """The heap tier of one JVM: histograms at checkpoints, JFR old objects at the end."""

    runtime = "jvm"

    def __init__(self, pid: int, client: AttachClient, notes: Iterable[str] = (), *, started: bool = True) -> None:
        self.pid = pid
        self.client = client
        self.started = started  # a JVM the run did not start outlives it: a watchdog guards the recording
        self._guard: subprocess.Popen[bytes] | None = None
        self.notes: list[str] = list(notes)
        self.recording: str | None = None
        self.first: ClassHistogram | None = None
        self.last: ClassHistogram | None = None
        self.nmt = False
        self.checked_nmt = False
        self.closed = False

    def start(self) -> None:
        """Start a JFR recording of old-object samples (where the JVM has JFR); a note otherwise."""
        name = f"soak-runner-{secrets.token_hex(4)}"
        try:
            self.client.jcmd(
                f"JFR.start name={name} settings=none +jdk.OldObjectSample#enabled=true "
                "+jdk.OldObjectSample#stackTrace=true +jdk.OldObjectSample#cutoff=infinity path-to-gc-roots=true"
            )
        except ProbeUnavailable as exc:
            self.notes.append(f"JFR: no old-object recording ({exc}); classes are named, allocating lines are not")
            return
        self.recording = name
        if not self.started:
            self._guard = start_guard(
                "--stop-jfr", json.dumps({"socket": self.client.socket_path, "recording": name}).encode()
            )

    def steady_started(self) -> None:
        """Nothing to do: the first checkpoint is the baseline of the class growth."""

    def checkpoint(self) -> Checkpoint:
        """Full GC and class histogram: the heap after GC and live bytes per class."""
        began = time.perf_counter()
        histogram = parse_class_histogram(self.client.jcmd("GC.class_histogram"))
        native = self._native()
        spent = time.perf_counter() - began
        if self.first is None:
            self.first = histogram
        self.last = histogram
        sites = tuple(
            RuntimeSite(location=e.name, function="", live_bytes=e.bytes, count=e.instances) for e in histogram.entries
        )
        return Checkpoint(heap=histogram.total_bytes, native=native, sites=sites, gc_seconds=spent)

    def _native(self) -> int | None:
        """NMT's committed ``Other`` memory (direct buffers) when NMT is on; None otherwise (noted once)."""
        if self.checked_nmt and not self.nmt:
            return None
        try:
            text = self.client.jcmd("VM.native_memory summary")
        except ProbeUnavailable:
            text = ""
        match = _NMT_OTHER.search(text)
        if not self.checked_nmt:
            self.checked_nmt = True
            self.nmt = match is not None
            if not self.nmt:
                self.notes.append(
                    "JVM: direct buffer memory not read (Native Memory Tracking is off; "
                    "-XX:NativeMemoryTracking=summary turns it on); RSS stands for native memory"
                )
        return int(match.group(1)) * 1024 if match else None

    def growing_classes(self, limit: int = TOP_CLASSES) -> list[str]:
        """User classes whose shallow bytes grew most between the first and the last checkpoint."""
        if self.first is None or self.last is None:
            return []
        before = self.first.by_name()
        growth = {e.name: e.bytes - (before[e.name].bytes if e.name in before else 0) for e in self.last.entries}
        ranked = sorted((n for n, g in growth.items() if g > 0 and is_user_class(n)), key=lambda n: -growth[n])
        return ranked[:limit]

    def finish(self) -> dict[str, Any]:
        """Dump the JFR recording and name, for the top growing classes, the allocating line and the root."""
        if self.recording is None:
            return {}
        tool = _jfr_tool(self.pid)
        if tool is None:
            self.notes.append("JFR: no jfr tool next to the JVM's java nor on PATH; allocating lines not read")
            return {}
        inner = f"/tmp/{self.recording}.jfr"  # as the JVM sees it; we read it through its root
        outer = Path(f"{self.client.root}{inner}")
        try:
            self.client.jcmd(f"JFR.dump name={self.recording} filename={inner}")
            done = subprocess.run(
                [str(tool), "print", "--json", "--events", "OldObjectSample", str(outer)],
                capture_output=True,
                timeout=JFR_TOOL_TIMEOUT,
                check=False,
            )
            if done.returncode != 0:
                raise ProbeUnavailable(f"jfr print failed: {done.stderr.decode(errors='replace').strip()[:200]}")
            samples = parse_old_objects(json.loads(done.stdout))
        except (ProbeUnavailable, subprocess.TimeoutExpired, ValueError, OSError) as exc:
            self.notes.append(f"JFR: old objects not read ({str(exc).splitlines()[0][:200]})")
            return {}
        finally:
            try:
                outer.unlink()
            except OSError:
                pass
        found = [p for p in (class_provenance(name, samples) for name in self.growing_classes()) if p]
        # paths (object's class first, then its holders): what retained_per_connection credits owners with
        return {"jfr": {"samples": len(samples), "classes": found, "paths": [list(s.path) for s in samples]}}

    def close(self) -> list[str]:
        """Stop the JFR recording (nothing stays enabled in the JVM); the notes gathered. Never raises."""
        stopped = True
        if not self.closed and self.recording is not None:
            try:
                self.client.jcmd(f"JFR.stop name={self.recording}", timeout=15.0)
            except ProbeUnavailable as exc:
                if "Could not find" not in str(exc):
                    stopped = False
                    self.notes.append(f"JFR: recording {self.recording} not stopped ({exc})")
            except Exception as exc:  # noqa: BLE001 - close never raises, whatever went wrong
                stopped = False
                self.notes.append(f"JFR: recording not stopped ({type(exc).__name__}: {exc})")
        release_guard(self._guard, undone=stopped)
        self._guard = None
        self.closed = True
        return list(self.notes)


def open_jvm_probe(pid: int, serving_port: int | None = None, *, started: bool = True) -> JvmProbe:
    """A probe of the JVM ``pid`` (or the JVM child that serves); ProbeUnavailable with a one-line reason."""
    target, note = find_jvm(pid, serving_port)
    client = AttachClient(target)
    return JvmProbe(target, client, [note] if note else [], started=started)


def open_probe(pid: int, *, started: bool, serving_port: int | None = None) -> JvmProbe:
    """The runtime contract's entry point; a JVM the run did not start gets a watchdog for its recording."""
    return open_jvm_probe(pid, serving_port, started=started)
