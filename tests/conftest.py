"""Shared fixtures: real bundled WebSocket servers on 127.0.0.1, and the soak CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from runner.target import free_port, wait_for_port  # noqa: F401  (re-exported for the tests)

ROOT = Path(__file__).resolve().parent.parent

# Runs made by the tests record their history in a throw-away database, never in the
# developer's reports/history.sqlite (subprocesses inherit the variable).
if "SOAK_HISTORY" not in os.environ:
    import tempfile

    os.environ["SOAK_HISTORY"] = str(Path(tempfile.mkdtemp(prefix="soak-test-history-")) / "history.sqlite")


def stop_process(process: subprocess.Popen) -> None:
    """Terminate a test server, killing it when it does not go within 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Server:
    def __init__(self, module: str, *args: str) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, "--port", str(self.port), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            # generous: a loaded 2-core CI machine can take many seconds to import websockets
            wait_for_port(self.port, timeout=60)
        except BaseException:
            self.stop()
            raise
        self.url = f"ws://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        stop_process(self.process)


@contextmanager
def threaded_server(handler: Callable[[Any], None]) -> Iterator[str]:
    """A websockets sync server running ``handler`` in a thread of the test process; yields its URL.

    For tests that must see what the server saw (headers, how each connection ended);
    a run against it samples the test process itself (``--pid os.getpid()``).
    """
    from websockets.sync.server import serve

    port = free_port()
    server = serve(handler, "127.0.0.1", port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"ws://127.0.0.1:{port}/"
    finally:
        server.shutdown()


@pytest.fixture
def echo_server() -> Iterator[Server]:
    server = Server("runner.targets.echo")
    yield server
    server.stop()


def soak(
    *args: str, timeout: float = 240, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``soak ARGS`` as a real subprocess (the CLI patches the process for gevent)."""
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=cwd or ROOT,
    )


def gdb_injection_problem() -> str | None:
    """Why gdb cannot call a function inside a process on this machine (None when it can).

    memray's attach runs code in the server through gdb. Some sandboxes let gdb attach but
    not write the registers a call needs ("Couldn't write extended state status"); tests of a
    real attach skip there, saying so, instead of failing on the machine.
    """
    global _GDB_PROBLEM
    if _GDB_PROBLEM is not _UNKNOWN:
        return _GDB_PROBLEM  # type: ignore[return-value]
    import shutil
    import time

    if shutil.which("gdb") is None:
        _GDB_PROBLEM = "gdb is not installed (apt-get install gdb): memray cannot attach without it"
        return _GDB_PROBLEM
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.3)
        done = subprocess.run(
            ["gdb", "-p", str(sleeper.pid), "-batch", "-nx", "-ex", "call (int)getpid()"],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        answered = f"= {sleeper.pid}" in done.stdout
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        _GDB_PROBLEM = None if answered else f"gdb cannot call into a process on this machine ({last})"
    except (OSError, subprocess.TimeoutExpired) as exc:
        _GDB_PROBLEM = f"gdb cannot call into a process on this machine ({exc})"
    finally:
        sleeper.kill()
        sleeper.wait()
    return _GDB_PROBLEM


_UNKNOWN = object()
_GDB_PROBLEM: object = _UNKNOWN
