"""A real target under the memray launcher, churned by a plain websockets client (no Locust).

Cheaper than a whole ``soak run`` (no Locust, no flame graph), yet every part that
matters to attribution is real: the launcher, memray's tracker, the target's event loop,
the capture reader. The churn records its own samples (wall time, closed connections,
phase), which is all :func:`runner.analysis.sites.leak_sites` needs.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

from runner.sampling.memray_capture import MemrayFiles
from runner.sampling.memray_launch import launcher_argv
from runner.sampling.memray_run import request_freeze
from tests.conftest import free_port, wait_for_port


@dataclass
class TrackedTarget:
    folder: Path
    module_args: list[str]
    checkpoint_interval: float = 0.5
    max_bytes: int | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def files(self) -> MemrayFiles:
        return MemrayFiles(self.folder)

    def start(self) -> "TrackedTarget":
        self.files.root.mkdir(parents=True, exist_ok=True)
        argv = launcher_argv(
            sys.executable,
            ["-m", *self.module_args, "--port", str(self.port)],
            capture=str(self.files.capture),
            checkpoints=str(self.files.checkpoints),
            control=str(self.files.control),
            checkpoint_interval=self.checkpoint_interval,
            memory_interval_ms=20,
            max_bytes=self.max_bytes,
        )
        log = open(self.folder / "target.log", "wb")
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        wait_for_port(self.port, timeout=90)
        request_freeze(self.folder)
        return self

    def start_code(self, code: str, args: list[str], ready: Path) -> "TrackedTarget":
        """Run ``python -c CODE ARGS`` under the launcher; ready when it creates ``ready``."""
        self.files.root.mkdir(parents=True, exist_ok=True)
        argv = launcher_argv(
            sys.executable,
            ["-c", code, *args],
            capture=str(self.files.capture),
            checkpoints=str(self.files.checkpoints),
            control=str(self.files.control),
            checkpoint_interval=self.checkpoint_interval,
            memory_interval_ms=20,
            max_bytes=self.max_bytes,
        )
        log = open(self.folder / "target.log", "wb")
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert self.process.poll() is None, (self.folder / "target.log").read_text()
            assert time.monotonic() < deadline, "the script did not start"
            time.sleep(0.05)
        return self

    def churn(self, connections: int, *, idle: float = 1.5, min_seconds: float = 0.0) -> list[dict[str, Any]]:
        """Idle, then ``connections`` connect/echo/close cycles, then idle; the samples.

        ``min_seconds`` spreads the cycles over at least that long, so a fast machine still gives
        the target's checkpoints enough points of the churn (a slow one simply takes longer).
        """
        samples: list[dict[str, Any]] = []
        closed = 0

        def sample(phase: str) -> None:
            samples.append(
                {"t": len(samples), "wall": time.time(), "phase": phase, "closed": closed, "opened": closed, "open": 0}
            )

        deadline = time.monotonic() + idle
        while time.monotonic() < deadline:
            sample("baseline")
            time.sleep(0.1)
        url = f"ws://127.0.0.1:{self.port}/"
        last = 0.0
        began = time.monotonic()
        for i in range(connections):
            ahead = began + min_seconds * i / connections - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            with connect(url, open_timeout=10, close_timeout=10) as ws:
                ws.send("x" * 64)
                ws.recv(timeout=10)
            closed += 1
            if time.monotonic() - last > 0.1:
                sample("steady")
                last = time.monotonic()
        sample("steady")
        deadline = time.monotonic() + idle
        while time.monotonic() < deadline:
            sample("cooldown")
            time.sleep(0.1)
        return samples

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
