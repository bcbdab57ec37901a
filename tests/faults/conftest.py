"""Fault tests: the real runner (``python -m runner``) against real misbehaving servers on 127.0.0.1.

Every test leaves the machine as it found it; :func:`assert_nothing_left` checks the process
table for the target, the helpers it forked, and anything carrying the test's marker.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Run as a script, not ``-m runner.targets.faulty``: importing the ``runner`` package
#: (numpy, scipy, matplotlib) takes seconds on a busy machine, and the faults are about timing.
FAULTY = ROOT / "runner" / "targets" / "faulty.py"

#: Short phases so a fault test costs seconds, not minutes.
FAST_PHASES = {"baseline": "1s", "drain": "3s", "cooldown": "1s"}


def write_profile(
    path: Path,
    command: str,
    *,
    load: dict[str, Any] | None = None,
    target: dict[str, Any] | None = None,
    phases: dict[str, str] | None = None,
    interval: str = "0.25s",
) -> Path:
    """A TOML profile for a fault run (values are written with ``json.dumps``, valid TOML for these types)."""
    load = {"users": 10, "spawn_rate": 10, "duration": "5m", **(load or {})}
    target = {"command": command, "memray": False, **(target or {})}
    lines = ['name = "fault"', "[target]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in target.items()]
    lines += ["[load]"] + [f"{k} = {json.dumps(v)}" for k, v in load.items()]
    lines += ["[phases]"] + [f"{k} = {json.dumps(v)}" for k, v in {**FAST_PHASES, **(phases or {})}.items()]
    lines += ["[sampling]", f"interval = {json.dumps(interval)}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass
class Soak:
    """One ``soak run`` started as a real subprocess (so signals and exit codes are real)."""

    process: subprocess.Popen[str]
    out: Path
    marker: str

    def wait(self, timeout: float) -> tuple[int, str, str]:
        stdout, stderr = self.process.communicate(timeout=timeout)
        return self.process.returncode, stdout, stderr

    def wait_for_phase(self, phase: str, timeout: float = 60.0) -> None:
        """Block until the run's samples show ``phase`` (the run is really in it)."""
        deadline = time.monotonic() + timeout
        samples = self.out / "samples.jsonl"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the runner ended (exit {self.process.returncode}) before phase {phase}")
            if samples.exists() and f'"phase":"{phase}"' in samples.read_text(encoding="utf-8", errors="replace"):
                return
            time.sleep(0.1)
        raise AssertionError(f"phase {phase} not reached within {timeout}s")

    def wait_for_line(self, text: str, timeout: float = 60.0) -> None:
        """Block until the target's log holds ``text``."""
        deadline = time.monotonic() + timeout
        log = self.out / "target.log"
        while time.monotonic() < deadline:
            if log.exists() and text in log.read_text(encoding="utf-8", errors="replace"):
                return
            if self.process.poll() is not None:
                raise AssertionError(
                    f"the runner ended (exit {self.process.returncode}) before the target said {text!r}"
                )
            time.sleep(0.1)
        raise AssertionError(f"the target did not say {text!r} within {timeout}s")

    def summary(self) -> dict[str, Any]:
        return json.loads((self.out / "summary.json").read_text(encoding="utf-8"))

    def samples(self) -> list[dict[str, Any]]:
        lines = (self.out / "samples.jsonl").read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def target_pid(self) -> int | None:
        meta = json.loads((self.out / "meta.json").read_text(encoding="utf-8"))
        return meta.get("target", {}).get("pid")

    def helper_pids(self) -> list[int]:
        log = self.out / "target.log"
        text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
        return [int(pid) for pid in re.findall(r"helper pid (\d+)", text)]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def start_soak(
    tmp_path: Path,
    fault_args: str = "",
    *,
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
    **profile: Any,
) -> Soak:
    """``soak run`` of the faulty target with ``fault_args``; the marker tags every process of this test."""
    marker = f"fault-{uuid.uuid4().hex[:12]}"
    command = f"{{python}} {FAULTY} --port {{port}} --say {marker} {fault_args}"
    path = write_profile(tmp_path / "profile.toml", command, **profile)
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", "run", str(path), "--out", str(out), *(extra or [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    return Soak(process=process, out=out, marker=marker)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def assert_nothing_left(soak: Soak, timeout: float = 10.0) -> None:
    """No target, no forked helper, no process with the test's marker, once the runner is gone."""
    pids = [p for p in [soak.target_pid(), *soak.helper_pids()] if p]
    deadline = time.monotonic() + timeout
    while True:
        left = [pid for pid in pids if _alive(pid)]
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if soak.marker in " ".join(proc.info["cmdline"] or []) and proc.status() != psutil.STATUS_ZOMBIE:
                    left.append(proc.pid)
            except psutil.Error:
                continue
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for pid in set(left):  # never leak them into the next test, then fail
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass
    assert not left, f"processes left behind: {sorted(set(left))}"


@pytest.fixture
def soak_run(tmp_path: Path):
    """Start fault soaks; whatever happens in the test, the runner is killed and checked for leftovers."""
    started: list[Soak] = []

    def start(fault_args: str = "", **kwargs: Any) -> Soak:
        folder = tmp_path / f"soak{len(started)}"
        folder.mkdir()
        soak = start_soak(folder, fault_args, **kwargs)
        started.append(soak)
        return soak

    yield start
    for soak in started:
        soak.kill()


__all__ = ["Soak", "start_soak", "write_profile", "assert_nothing_left", "FAST_PHASES", "signal"]
