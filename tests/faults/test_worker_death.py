"""A Locust worker dies in a distributed run: the run stops with exit 3 and says so; never hangs."""

from __future__ import annotations

import ipaddress
import signal

import psutil
import pytest

from tests.faults.conftest import assert_nothing_left

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def _workers(runner_pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(runner_pid).children() if "worker" in p.cmdline() and "runner" in p.cmdline()]


def test_a_worker_killed_mid_run_stops_the_run_with_exit_3(soak_run):
    soak = soak_run("", load={"users": 20, "spawn_rate": 20, "duration": "10m", "workers": 2})
    soak.wait_for_phase("steady", timeout=120)
    workers = _workers(soak.process.pid)
    assert len(workers) == 2
    # the master's port (and everything else of the runner) listens on loopback only
    listening = [c.laddr for c in psutil.Process(soak.process.pid).net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
    assert listening and all(ipaddress.ip_address(a.ip).is_loopback for a in listening), listening
    workers[0].send_signal(signal.SIGKILL)
    code, stdout, stderr = soak.wait(timeout=120)  # the run is 10 minutes long: it must not go on, nor hang
    assert code == 3, stdout + stderr
    assert "Traceback" not in stderr
    summary = soak.summary()
    assert summary["verdict"] == "error"
    assert any(f"pid {workers[0].pid}" in r and "exited" in r for r in summary["reasons"]), summary["reasons"]
    assert not workers[1].is_running() or workers[1].status() == psutil.STATUS_ZOMBIE
    assert_nothing_left(soak)
