"""A Locust worker dies in a distributed run: the run goes on with the others and is marked; with none left it
stops with exit 3 and says so; never hangs."""

from __future__ import annotations

import ipaddress
import json
import signal

import psutil
import pytest

from tests.faults.conftest import assert_nothing_left

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def _workers(runner_pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(runner_pid).children() if "worker" in p.cmdline() and "runner" in p.cmdline()]


def test_a_worker_killed_mid_run_is_marked_and_the_run_goes_on_with_the_other(soak_run):
    soak = soak_run("", load={"users": 20, "spawn_rate": 20, "duration": "20s", "workers": 2, "hold": "1s"})
    soak.wait_for_phase("steady", timeout=120)
    workers = _workers(soak.process.pid)
    assert len(workers) == 2
    # the master's port (and everything else of the runner) listens on loopback only
    connections = psutil.Process(soak.process.pid).net_connections(kind="tcp")
    listening = [c.laddr for c in connections if c.status == psutil.CONN_LISTEN]
    assert listening and all(ipaddress.ip_address(a.ip).is_loopback for a in listening), listening
    workers[0].send_signal(signal.SIGKILL)
    code, stdout, stderr = soak.wait(timeout=240)  # degraded, not dead: the run ends on its own
    assert code in (0, 4), stdout + stderr
    assert "Traceback" not in stderr
    summary = soak.summary()
    assert summary["verdict"] != "error"
    lost = summary["load"]["lost_workers"]
    assert [w["pid"] for w in lost] == [workers[0].pid] and "exited" in lost[0]["why"]
    assert any(r.startswith("marked: 1 load worker") for r in summary["reasons"]), summary["reasons"]
    assert any(f"pid {workers[0].pid}" in n for n in summary["notes"]), summary["notes"]
    # the survivor churned on after the loss with its own 10 users (not handed the dead one's too),
    # and every connection ended up counted closed
    assert summary["load"]["connections_closed"] == summary["load"]["connections_opened"] > 0
    samples = [json.loads(line) for line in (soak.out / "samples.jsonl").read_text().splitlines()]
    killed_at = next(s["t"] for s in samples if s["open"] <= 12 and s["phase"] == "steady")
    later = [s["open"] for s in samples if s["phase"] == "steady" and s["t"] > killed_at + 5]
    assert later and max(later) <= 11, later
    assert_nothing_left(soak)


def test_the_run_stops_with_exit_3_when_every_worker_is_dead(soak_run):
    soak = soak_run("", load={"users": 20, "spawn_rate": 20, "duration": "10m", "workers": 2})
    soak.wait_for_phase("steady", timeout=120)
    workers = _workers(soak.process.pid)
    assert len(workers) == 2
    for worker in workers:
        worker.send_signal(signal.SIGKILL)
    code, stdout, stderr = soak.wait(timeout=120)  # the run is 10 minutes long: it must not go on, nor hang
    assert code == 3, stdout + stderr
    assert "Traceback" not in stderr
    summary = soak.summary()
    assert summary["verdict"] == "error"
    assert any("exited" in r for r in summary["reasons"]), summary["reasons"]
    assert_nothing_left(soak)
