"""The watchdog in-process: it kills the group and the listed processes, and never a recycled pid."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from runner import watchdog

pytestmark = pytest.mark.faults

SLEEPER = [
    sys.executable,
    "-S",
    "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)",
]


def test_watchdog_kills_the_group_and_listed_escaped_processes(monkeypatch):
    leader = subprocess.Popen(SLEEPER, start_new_session=True)
    escaped = subprocess.Popen(SLEEPER, start_new_session=True)  # its own session: only the list reaches it
    bystander = subprocess.Popen(SLEEPER, start_new_session=True)  # listed with a wrong start time: a recycled pid
    try:
        lines = (f"{escaped.pid} {watchdog.start_time(escaped.pid)}\n{bystander.pid} 1\ngarbage line\n").encode()
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(lines)))
        assert watchdog.main(["watchdog", str(leader.pid)]) == 0
        assert leader.wait(timeout=10) == -9
        assert escaped.wait(timeout=10) == -9
        assert bystander.poll() is None
    finally:
        for proc in (leader, escaped, bystander):
            proc.kill()
            proc.wait()


def test_start_time_of_a_missing_process_is_none():
    assert watchdog.start_time(2**22 + 7) is None
    assert watchdog.start_time(1) is not None


def test_watchdog_forgets_dead_pids_past_its_limit(monkeypatch):
    leader = subprocess.Popen(SLEEPER, start_new_session=True)
    try:
        dead = "".join(f"{pid} 123\n" for pid in range(2**22 + 1, 2**22 + watchdog.PRUNE_AT + 3))
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(dead.encode())))
        assert watchdog.main(["watchdog", str(leader.pid)]) == 0
        assert leader.wait(timeout=10) == -9
    finally:
        leader.kill()
        leader.wait()
