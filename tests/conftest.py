"""Shared fixtures: real bundled WebSocket servers on 127.0.0.1, and the soak CLI as a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Runs made by the tests record their history in a throw-away database, never in the
# developer's reports/history.sqlite (subprocesses inherit the variable).
if "SOAK_HISTORY" not in os.environ:
    import tempfile

    os.environ["SOAK_HISTORY"] = str(Path(tempfile.mkdtemp(prefix="soak-test-history-")) / "history.sqlite")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


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
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def echo_server() -> Iterator[Server]:
    server = Server("runner.targets.echo")
    yield server
    server.stop()


def soak(*args: str, timeout: float = 240, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``soak ARGS`` as a real subprocess (the CLI patches the process for gevent)."""
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=cwd or ROOT,
    )
