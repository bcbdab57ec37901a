"""Start, wait for, and stop the server under test, together with every process it forks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import psutil

from .errors import TargetError, UsageError
from .watchdog import PRUNE_AT, start_time

__all__ = [
    "free_port",
    "port_in_use",
    "wait_for_port",
    "substitute",
    "StartedTarget",
    "AttachedTarget",
    "RemoteTarget",
    "TargetOutcome",
    "tail",
]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 15.0, host: str = "127.0.0.1") -> None:
    """Return once something accepts TCP connections on ``host:port``; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"nothing listens on port {port} after {timeout:g}s") from None
            time.sleep(0.05)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def substitute(parts: Sequence[str], *, port: int | None, python: str = sys.executable) -> list[str]:
    """The command with ``{port}`` and ``{python}`` replaced."""
    values = {"python": python, "port": "" if port is None else str(port)}
    return [part.format(**values) for part in parts]


def tail(path: Path, lines: int = 20) -> list[str]:
    """The last ``lines`` lines of a text file (empty when it does not exist)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return data.splitlines()[-lines:]


def _load_prctl():  # type: ignore[no-untyped-def]
    """libc's ``prctl``, looked up once in the parent (never import or load libraries after fork)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PR_SET_PDEATHSIG = 1
_PRCTL = _load_prctl()


def _die_with_parent() -> None:
    """In the forked child, before exec: ask Linux to SIGKILL the target when the runner dies.

    A runner killed with SIGKILL (the OOM killer, a CI timeout) cannot stop its target;
    without this the target would run on, orphaned, holding its port and its memory.
    (Linux ties this to the thread that started the target: the runner's main thread.)
    """
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


_WATCHDOG_SCRIPT = str(Path(__file__).with_name("watchdog.py"))


def _start_watchdog(group: int) -> subprocess.Popen[bytes] | None:
    """Start :mod:`runner.watchdog` for the target's process group (None where it cannot run)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return subprocess.Popen(
            [sys.executable, "-S", _WATCHDOG_SCRIPT, str(group)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # neither Ctrl-C nor the target's group signals reach it
        )
    except OSError:
        return None


@dataclass
class TargetOutcome:
    """How the target ended: the ``target`` part of summary.json."""

    pid: int | None
    exit_code: int | None = None
    signal: str | None = None
    crashed: bool = False
    started_by_runner: bool = True
    log_tail: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "pid": self.pid,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "crashed": self.crashed,
            "started_by_runner": self.started_by_runner,
            "log_tail": self.log_tail,
        }


class StartedTarget:
    """A target the runner started, in its own session so its whole tree can be stopped."""

    def __init__(self, argv: list[str], log_path: Path, *, env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "ab")
        try:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # Ctrl-C at the terminal reaches the runner only
                preexec_fn=_die_with_parent if _PRCTL is not None else None,
            )
        except FileNotFoundError:
            self._log.close()
            raise UsageError(
                f"target command not found: {argv[0]!r}", hint="check target.command or --target"
            ) from None
        except PermissionError:
            self._log.close()
            raise UsageError(f"target command is not executable: {argv[0]!r}", hint="check its permissions") from None
        self.pid = self.process.pid
        self._known_pids: set[int] = {self.pid}
        self.stopped_by_runner = False
        self._watchdog = _start_watchdog(self.pid)
        self._tell_watchdog({self.pid})

    def remember(self, pids: set[int]) -> None:
        """Pids seen in the target's tree while sampling, to stop them even if re-parented."""
        new = pids - self._known_pids
        self._known_pids |= pids
        if new:
            self._tell_watchdog(new)
        if (
            len(self._known_pids) > PRUNE_AT
        ):  # a target that forks per connection: forget the dead, as the watchdog does
            self._known_pids = {pid for pid in self._known_pids if psutil.pid_exists(pid)} | {self.pid}

    def _tell_watchdog(self, pids: set[int]) -> None:
        if self._watchdog is None or self._watchdog.stdin is None:
            return
        lines = "".join(f"{pid} {started}\n" for pid in sorted(pids) if (started := start_time(pid)) is not None)
        try:
            self._watchdog.stdin.write(lines.encode())
            self._watchdog.stdin.flush()
        except (OSError, ValueError):  # the watchdog is gone: the runner's own cleanup still applies
            self._watchdog = None

    def _release_watchdog(self) -> None:
        """Close the pipe (the watchdog then kills any leftover of the tree and exits)."""
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is None:
            return
        try:
            if watchdog.stdin is not None:
                watchdog.stdin.close()
            watchdog.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            watchdog.kill()

    def poll(self) -> int | None:
        return self.process.poll()

    def wait_ready(self, probe, timeout: float, *, cancelled=None) -> None:  # type: ignore[no-untyped-def]
        """Wait until ``probe()`` succeeds; fail at once if the target exits, else after ``timeout``.

        ``cancelled()`` returning true (Ctrl-C while a slow target starts) ends the wait early;
        the caller decides what that means.
        """
        deadline = time.monotonic() + timeout
        last_error = "no answer"
        while not (cancelled is not None and cancelled()):
            code = self.poll()
            if code is not None:
                raise TargetError(
                    f"the target exited before it was ready ({_describe_exit(code)})",
                    hint=f"see {self.log_path}",
                    log_tail=tail(self.log_path),
                )
            try:
                probe()
                return
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
                last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if time.monotonic() >= deadline:
                raise TargetError(
                    f"the target did not accept a WebSocket handshake within {timeout:g}s (last error: {last_error})",
                    hint="raise target.ready_timeout, or check target.url and the log",
                    log_tail=tail(self.log_path),
                )
            time.sleep(0.1)

    def _tree(self) -> list[psutil.Process]:
        procs = []
        for pid in self._known_pids:
            try:
                procs.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                continue
        try:
            procs += psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        unique = {p.pid: p for p in procs}
        return list(unique.values())

    def stop(self, grace: float) -> None:
        """SIGTERM the target, SIGKILL whatever of its tree is left after ``grace`` seconds."""
        self.stopped_by_runner = self.poll() is None
        tree = [p for p in self._tree() if p.pid != self.pid]
        if self.poll() is None:
            try:
                self.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        for proc in tree:  # children that did not go with their parent
            try:
                proc.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(tree, timeout=min(grace, 3.0)) if tree else ([], [])
        if self.poll() is None:
            self.process.kill()
        try:  # the target runs in its own session: its process group is all of it
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for proc in alive:
            try:
                proc.kill()
            except psutil.Error:
                pass
        if alive:
            psutil.wait_procs(alive, timeout=5)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._release_watchdog()
        self._log.close()

    def outcome(self) -> TargetOutcome:
        code = self.poll()
        crashed = code is not None and not self.stopped_by_runner
        exit_code = code
        sig = None
        if code is not None and code < 0:
            sig = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            exit_code = 128 - code
        return TargetOutcome(
            pid=self.pid,
            exit_code=exit_code,
            signal=sig,
            crashed=crashed,
            started_by_runner=True,
            log_tail=tail(self.log_path) if crashed else tail(self.log_path, 5),
        )


class AttachedTarget:
    """An already running process, sampled by pid; never started or stopped by the runner."""

    def __init__(self, pid: int) -> None:
        if not psutil.pid_exists(pid):
            raise UsageError(f"no process with pid {pid}", hint="check --pid")
        self.pid = pid
        self.process = psutil.Process(pid)

    def poll(self) -> int | None:
        try:
            running = self.process.is_running() and self.process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            running = False
        return None if running else -1

    def remember(self, pids: set[int]) -> None:
        pass

    def stop(self, grace: float) -> None:
        pass

    def listening_ports(self) -> list[int]:
        """TCP ports this process (tree) listens on, to guess the URL for ``--pid`` runs."""
        ports = set()
        for proc in [self.process, *self.process.children(recursive=True)]:
            try:
                for conn in proc.net_connections(kind="tcp"):
                    if conn.status == psutil.CONN_LISTEN and conn.laddr:
                        ports.add(conn.laddr.port)
            except psutil.Error:
                continue
        return sorted(ports)

    def outcome(self) -> TargetOutcome:
        gone = self.poll() is not None
        return TargetOutcome(pid=self.pid, crashed=gone, started_by_runner=False)


class RemoteTarget:
    """A server known only by its URL (in a container, on another host, in a cluster).

    Nothing is started, stopped or watched as a process: its metrics come from the
    sampling sources, and it is ready when it accepts a WebSocket handshake.
    """

    pid: int | None = None

    def __init__(self, url: str) -> None:
        self.url = url

    def poll(self) -> int | None:
        return None

    def remember(self, pids: set[int]) -> None:
        pass

    def stop(self, grace: float) -> None:
        pass

    def wait_ready(self, probe, timeout: float, *, cancelled=None) -> None:  # type: ignore[no-untyped-def]
        """Wait until ``probe()`` (a handshake) succeeds, else fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        last_error = "no answer"
        while not (cancelled is not None and cancelled()):
            try:
                probe()
                return
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
                last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if time.monotonic() >= deadline:
                raise TargetError(
                    f"{self.url} did not accept a WebSocket handshake within {timeout:g}s (last error: {last_error})",
                    hint="check target.url and that the server is up, or raise target.ready_timeout",
                )
            time.sleep(0.2)

    def outcome(self) -> TargetOutcome:
        return TargetOutcome(pid=None, started_by_runner=False)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
