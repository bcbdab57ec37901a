"""Attach memray to a Python server that is already running (``soak run --pid``).

Why not ``memray attach``: its payload starts a bare ``memray.Tracker``. A soak needs the
launcher's session (:mod:`runner.sampling.memray_launch`): the GC checkpoints, without
which cyclic garbage looks like a leak, the ``freeze`` control file and the size cap. So
this module uses memray's control channel only (``_DebuggerCommand``: gdb, or lldb,
injects a small library into the target, which connects back to us, runs the Python
source we send and returns the ``repr`` of any exception) and sends its own payload:
exec the launcher's source into a fresh namespace, build its ``_Session`` with the same
options the launcher takes, start it, keep it as ``memray._soak_runner_session`` and
register an atexit hook that finalises the capture if the server exits while attached.
:func:`detach` sends the payload that stops that session.

memray only sees allocations made after the attach: the heap series starts small (what
was allocated since), which is fine for a slope. Only the given pid is tracked; its children (if any) are
measured by psutil only.

Every failure is a one-line note (the run goes on with psutil metrics), built by the pure
:func:`explain_failure` from memray's error text or the payload's exception; no traceback
reaches the user.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import psutil

from . import memray_launch
from .memray_capture import MemrayFiles

__all__ = [
    "AttachResult",
    "attach",
    "detach",
    "attach_payload",
    "detach_payload",
    "explain_failure",
    "python_process_problem",
    "children_note",
    "PAYLOAD_TIMEOUT",
]

#: Seconds to wait for the debugger to get in, and then again for the payload's answer
#: (gdb took ~1 s here; starting a tracker ~0.1 s).
PAYLOAD_TIMEOUT = 30.0
#: How often ``wake`` is called while the debugger waits for the target to do something.
WAKE_INTERVAL = 0.5
#: Seconds a debugger interrupted with SIGINT gets to detach and exit.
DEBUGGER_EXIT_WAIT = 15.0
#: How the error text of an unanswered payload starts (the session may have started anyway).
PAYLOAD_TIMED_OUT = "timed out waiting for the payload's answer"
#: What a note ends with: the run continues without memray.
_FALLBACK = "psutil metrics only"
#: Interpreter executables memray can attach to (CPython builds: python, python3, python3.11d ...).
_PYTHON_EXE = re.compile(r"^python(\d+(\.\d+)?)?[a-z]*(\.exe)?$")


@dataclass(frozen=True)
class AttachResult:
    """Whether memray now tracks the process, and a note for the run when not (or with a caveat)."""

    tracked: bool
    note: str | None = None


def _session_options(
    files: MemrayFiles,
    *,
    checkpoint_interval: float,
    memory_interval_ms: int,
    max_bytes: int | None,
    python_allocators: bool,
) -> dict[str, Any]:
    """The launcher's command-line options as ``argparse.Namespace`` keywords (absolute paths)."""
    return {
        "capture": str(files.capture.resolve()),
        "checkpoints": str(files.checkpoints.resolve()),
        "control": str(files.control.resolve()),
        "checkpoint_interval": float(checkpoint_interval),
        "memory_interval_ms": int(memory_interval_ms),
        "max_bytes": None if max_bytes is None else int(max_bytes),
        "python_allocators": bool(python_allocators),
    }


#: Payload prelude: stop the soak session this process holds, if any (True when there was one).
#: memray allows one tracker at a time, so an attach replaces a session left by a killed run.
_STOP_SESSION = """\
import argparse
import atexit

import memray


def _soak_runner_stop(reason):
    session = getattr(memray, "_soak_runner_session", None)
    memray._soak_runner_session = None
    hook = getattr(memray, "_soak_runner_atexit", None)
    if hook is not None:
        atexit.unregister(hook)
        memray._soak_runner_atexit = None
    if session is None:
        return False
    try:
        session.stop(reason)
    finally:
        session.log.close()
    return True

"""


def attach_payload(launcher: str, options: dict[str, Any]) -> str:
    """The Python source run inside the target to start a soak tracking session.

    ``launcher`` is the absolute path of memray_launch.py; ``options`` are the keywords of
    the ``argparse.Namespace`` its ``_Session`` takes. A session left by an earlier run
    that did not detach (it crashed) is stopped first; memray allows one tracker at a time.
    Any exception comes back to the runner as its ``repr`` (memray's injector does that).
    """
    return (
        _STOP_SESSION
        + f"""\
_soak_runner_stop("replaced")

_launcher = {launcher!r}
_namespace = {{"__name__": "_soak_runner_memray_launch", "__file__": _launcher}}
try:  # an OSError's repr drops the file name: send its str, which names the file
    with open(_launcher, encoding="utf-8") as _fh:
        exec(compile(_fh.read(), _launcher, "exec"), _namespace)
    _session = _namespace["_Session"](argparse.Namespace(**{options!r}))
    try:
        _session.start()
    except BaseException:
        _session.log.close()
        raise
except OSError as _exc:
    raise RuntimeError(f"{{type(_exc).__name__}}: {{_exc}}") from None
memray._soak_runner_session = _session


def _soak_runner_stop_at_exit(session=_session):
    session.stop("exit")
    session.log.close()


atexit.register(_soak_runner_stop_at_exit)
memray._soak_runner_atexit = _soak_runner_stop_at_exit
"""
    )


def detach_payload() -> str:
    """The Python source run inside the target to stop the soak session (finalises the capture)."""
    return (
        _STOP_SESSION
        + """\
if not _soak_runner_stop("detach"):
    raise RuntimeError("no soak-runner memray session is active in this process")
"""
    )


def explain_failure(text: str, *, pid: int, action: str = "attach") -> str:
    """One line saying why memray could not ``action`` (attach/detach) ``pid``, and what to do.

    ``text`` is memray's error message (debugger missing, ptrace refused, timed out ...) or
    the ``repr`` of the exception the payload raised inside the target.
    """
    lowered = text.lower()
    head = (
        f"memray skipped: cannot attach to pid {pid}"
        if action == "attach"
        else f"memray: could not detach from pid {pid}"
    )
    tail = f" ({_FALLBACK})" if action == "attach" else ""
    if "cannot find a supported" in lowered or "no gdb" in lowered:
        return f"{head}: needs gdb: apt-get install gdb, or --no-memray{tail}"
    if "does not exist" in lowered or "no such process" in lowered:
        return f"{head}: the process exited{tail}"
    refused = re.search(r"(?:Permission denied|Operation not permitted): '([^']+)'", text)
    if "permissionerror" in lowered or refused:  # the payload was refused a file, not gdb the process
        what = f"access to {refused.group(1)}" if refused else "access to a file"
        return (
            f"{head}: the server process was refused {what}: run soak as the server's user, or --out a folder that "
            f"user can write{tail}"
        )
    if "failed to attach a debugger" in lowered or "ptrace" in lowered or "operation not permitted" in lowered:
        why = "the process belongs to another user" if "different user" in lowered else "Operation not permitted"
        return (
            f"{head}: ptrace refused ({why}): set /proc/sys/kernel/yama/ptrace_scope to 0, "
            f"give soak CAP_SYS_PTRACE, or run soak as the server's user or root{tail}"
        )
    if "python 3.7 or newer" in lowered:
        return f"{head}: it is not running a Python interpreter memray can attach to{tail}"
    if "memray shared library" in lowered:
        return f"{head}: the server cannot load memray's injector library (installed for another user?){tail}"
    if "memray" in lowered and ("no module named" in lowered or "importerror" in lowered):
        return (
            f"{head}: memray is not importable in the server's Python environment: pip install memray there, or "
            f"--no-memray{tail}"
        )
    if "timed out" in lowered or "timeout" in lowered:
        return (
            f"{head}: the process did not run the attach code in time (idle, stopped, in another container, or "
            f"never releasing the GIL?){tail}"
        )
    if "more than one tracker" in lowered:
        return f"{head}: another memray tracker is already active in it (stop it with `memray detach {pid}`){tail}"
    missing = re.search(r"No such file or directory: '([^']+)'", text)
    if missing:
        return (
            f"{head}: the server cannot see {missing.group(1)} (does it run in another container or mount "
            f"namespace?){tail}"
        )
    if "no soak-runner memray session" in lowered:
        return f"{head}: no soak-runner session was active (the server restarted?)"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "no error text")
    if len(first) > 200:
        first = first[:197] + "..."
    return f"{head}: {first}{tail}"


def python_process_problem(pid: int) -> str | None:
    """Why ``pid`` is not a process memray can attach to, or None when it looks like CPython.

    Looks at the executable, then ``argv[0]``, then the mapped libraries (an embedding
    server such as uWSGI maps libpython). When psutil may not look, None: gdb will tell.
    """
    if pid == os.getpid():
        return f"memray skipped: pid {pid} is soak itself ({_FALLBACK})"
    try:
        process = psutil.Process(pid)
        names = [os.path.basename(process.exe())]
        cmdline = process.cmdline()
        if cmdline:
            names.append(os.path.basename(cmdline[0]))
    except psutil.NoSuchProcess:
        return f"memray skipped: cannot attach to pid {pid}: the process exited ({_FALLBACK})"
    except psutil.Error:
        return None
    if any(_PYTHON_EXE.match(name) for name in names):
        return None
    try:
        if any("libpython" in os.path.basename(m.path) for m in process.memory_maps(grouped=True)):
            return None
    except psutil.Error:
        return None
    return f"memray skipped: pid {pid} ({names[0]}) is not a Python process ({_FALLBACK})"


def children_note(pid: int) -> str | None:
    """A note when ``pid`` has child processes: memray tracks the given pid only."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return None
    if not children:
        return None
    return (
        f"memray tracks pid {pid} only; its {len(children)} child process(es) are measured by psutil only (attach "
        "to a worker's pid to track it)"
    )


def _open_channel(
    pid: int, *, timeout: float, wake: Callable[[], None] | None
) -> tuple[socket.socket | None, str | None]:
    """Inject memray's control channel into ``pid``: (the connected socket, None) or (None, why not).

    gdb lets the injector in only when a thread of the target calls malloc, a PyMem
    function or checks for signals. An idle server may do none of that for a long time,
    so ``wake`` (a connection to the server, say) is called every :data:`WAKE_INTERVAL`
    seconds meanwhile, and after ``timeout`` seconds the debugger is interrupted with
    SIGINT: gdb then removes its breakpoints and detaches, leaving the target as it was
    (a killed gdb would leave breakpoints behind that kill the target at its next malloc).
    """
    try:
        from memray._errors import MemrayCommandError
        from memray.commands.attach import _DebuggerCommand
    except (ImportError, AttributeError) as exc:
        return None, f"this memray version cannot attach to a running process ({type(exc).__name__}: {exc})"
    outcome: dict[str, Any] = {}

    def inject() -> None:
        command = _DebuggerCommand()
        try:
            method = command.resolve_debugger("gdb" if shutil.which("gdb") else "auto")
            outcome["client"] = command.inject_control_channel(method, pid)
        except MemrayCommandError as exc:
            outcome["error"] = str(exc) or type(exc).__name__
        except (OSError, AttributeError, TypeError) as exc:  # an API change or a socket problem: still one line
            outcome["error"] = f"{type(exc).__name__}: {exc}"

    worker = threading.Thread(target=inject, name="soak-memray-inject", daemon=True)
    worker.start()
    deadline = time.monotonic() + timeout
    while worker.is_alive() and time.monotonic() < deadline:
        if wake is not None:
            try:
                wake()
            except Exception:  # noqa: BLE001 - waking is a courtesy; the deadline bounds the wait anyway
                pass
        worker.join(min(WAKE_INTERVAL, max(0.0, deadline - time.monotonic())))
    if worker.is_alive():
        _interrupt_debuggers(pid)
        worker.join(DEBUGGER_EXIT_WAIT)
        if "client" not in outcome:  # (the injection may have won the race: then it is used)
            return None, f"timed out after {timeout:g}s waiting for the debugger to get into the process"
    if "client" in outcome:
        return outcome["client"], None
    return None, outcome.get("error", "the debugger did not finish")


def _interrupt_debuggers(pid: int) -> None:
    """SIGINT the gdb/lldb that this process started against ``pid`` (they detach cleanly)."""
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return
    for child in children:
        try:
            argv = child.cmdline()
            if os.path.basename(argv[0]) in ("gdb", "lldb") and str(pid) in argv:
                child.send_signal(signal.SIGINT)
        except (psutil.Error, IndexError):
            continue


def _inject(pid: int, payload: str, *, timeout: float, wake: Callable[[], None] | None = None) -> str | None:
    """Run ``payload`` inside ``pid`` through memray's control channel; None on success, else the error text."""
    client, error = _open_channel(pid, timeout=timeout, wake=wake)
    if client is None:
        return error
    with client:
        try:
            client.settimeout(timeout)
            client.sendall(payload.encode("utf-8"))
            client.shutdown(socket.SHUT_WR)
            chunks = []
            while True:
                chunk = client.recv(4096)
                if not chunk:
                    break
                chunks.append(chunk)
        except socket.timeout:
            return f"{PAYLOAD_TIMED_OUT} after {timeout:g}s"
        except OSError as exc:
            return f"the control channel failed ({type(exc).__name__}: {exc})"
    answer = b"".join(chunks).decode("utf-8", errors="replace").strip()
    return answer or None


def attach(
    pid: int,
    files: MemrayFiles,
    *,
    checkpoint_interval: float,
    memory_interval_ms: int,
    max_bytes: int | None,
    python_allocators: bool = False,
    timeout: float = PAYLOAD_TIMEOUT,
    wake: Callable[[], None] | None = None,
) -> AttachResult:
    """Start the launcher's tracking session inside the running process ``pid``.

    The capture and the checkpoint log go to ``files`` (the run folder's ``memray/``),
    exactly as for a target started under the launcher, so the capture is read the same
    way. ``wake`` is called while the debugger waits for the target to do something (see
    :func:`_open_channel`); ``timeout`` bounds that wait and the payload's answer, each.
    Never raises for the ordinary failures: the result's note says why not.
    """
    problem = python_process_problem(pid)
    if problem:
        return AttachResult(False, problem)
    files.root.mkdir(parents=True, exist_ok=True)
    _hand_over(files.root, pid)
    options = _session_options(
        files,
        checkpoint_interval=checkpoint_interval,
        memory_interval_ms=memory_interval_ms,
        max_bytes=max_bytes,
        python_allocators=python_allocators,
    )
    error = _inject(pid, attach_payload(os.path.abspath(memray_launch.__file__), options), timeout=timeout, wake=wake)
    if error is None:
        return AttachResult(True, children_note(pid))
    if error.startswith(PAYLOAD_TIMED_OUT):
        _inject(pid, detach_payload(), timeout=timeout, wake=wake)  # the session may have started after all
    _discard(files)
    return AttachResult(False, explain_failure(error, pid=pid))


def detach(pid: int, *, timeout: float = PAYLOAD_TIMEOUT, wake: Callable[[], None] | None = None) -> str | None:
    """Stop the session :func:`attach` started (the capture is finalised); a note on failure."""
    try:
        running = psutil.Process(pid).is_running()
    except psutil.Error:
        running = False
    if not running:
        return (
            f"memray: pid {pid} exited while attached; its capture was finalised by its exit hook, or read up to "
            "its last record"
        )
    error = _inject(pid, detach_payload(), timeout=timeout, wake=wake)
    return None if error is None else explain_failure(error, pid=pid, action="detach")


def _hand_over(folder: Path, pid: int) -> None:
    """Let a server of another user write its capture: soak run as root gives it ``folder``.

    The session runs inside the server, with the server's user id, and creates the capture
    and checkpoint files itself. Root can still read and add to the folder afterwards.
    Without root (or when the server is root too) nothing changes; a refusal comes back
    from the payload as a PermissionError and becomes a note.
    """
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return
    try:
        uids, gids = psutil.Process(pid).uids(), psutil.Process(pid).gids()
        if uids.effective != 0:
            os.chown(folder, uids.effective, gids.effective)
    except (psutil.Error, OSError):
        pass


def _discard(files: MemrayFiles) -> None:
    """Remove what a failed attach may have left, so the run is not read as a tracked one."""
    for path in (files.capture, files.checkpoints, files.control):
        path.unlink(missing_ok=True)
    try:
        files.root.rmdir()
    except OSError:
        pass
