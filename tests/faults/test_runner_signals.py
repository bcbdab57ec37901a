"""The runner is interrupted: SIGINT/SIGTERM finish the run properly, a second Ctrl-C stops at
once, SIGKILL leaves a folder ``soak analyze`` can read; nothing is left running in any case."""

from __future__ import annotations

import ipaddress
import json
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.faults.conftest import ROOT, assert_nothing_left

pytestmark = pytest.mark.faults

#: The issue's promise: an interrupted run has finished its report and exited within this.
EXIT_WITHIN = 30


def _listening(pid: int) -> list[psutil._common.addr]:
    """Listening TCP addresses of the runner process and its Locust workers (not the target)."""
    runner = psutil.Process(pid)
    target_sessions = set()
    addresses = []
    for proc in [runner, *runner.children(recursive=True)]:
        try:
            if proc.pid != pid and proc.cmdline()[:1] and "faulty" in " ".join(proc.cmdline()):
                target_sessions.add(proc.pid)
                continue
            addresses += [c.laddr for c in proc.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            continue
    return addresses


@pytest.mark.parametrize(
    "sig", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)], ids=["SIGINT", "SIGTERM"]
)
def test_interrupt_finishes_the_report_and_leaves_nothing(soak_run, sig):
    soak = soak_run("", load={"users": 10, "spawn_rate": 10, "duration": "10m"})
    soak.wait_for_phase("steady")
    # nothing the runner opened listens beyond loopback (no Locust web UI, no open master port)
    for address in _listening(soak.process.pid):
        assert ipaddress.ip_address(address.ip).is_loopback, address
    soak.process.send_signal(sig)
    code, stdout, stderr = soak.wait(timeout=EXIT_WITHIN)
    assert "Traceback" not in stderr, stderr
    assert "interrupted" in stderr
    summary = soak.summary()
    assert summary["interrupted"] is True and summary["complete"] is True
    assert summary["verdict"] in ("inconclusive", "leak") and code == summary["exit_code"]
    assert any("interrupted" in r for r in summary["reasons"])
    assert summary["target"]["crashed"] is False
    assert summary["load"]["connections_closed"] > 0
    assert "interrupted" in (soak.out / "report.html").read_text(encoding="utf-8")  # the report says so too
    run = json.loads((soak.out / "run.json").read_text())
    assert run["interrupted"] is True
    samples = soak.samples()
    assert samples[-1]["open"] == 0 or any(s["phase"] == "drain" for s in samples)
    assert_nothing_left(soak)


@pytest.mark.slow
def test_second_ctrl_c_stops_at_once_and_the_folder_is_still_readable(soak_run):
    # a target that ignores SIGTERM: the first Ctrl-C would wait its whole stop_timeout
    soak = soak_run(
        "--ignore-sigterm", load={"users": 10, "spawn_rate": 10, "duration": "10m"}, target={"stop_timeout": "10m"}
    )
    soak.wait_for_phase("steady")
    soak.process.send_signal(signal.SIGINT)
    soak.wait_for_line("fault: ignoring SIGTERM")  # the runner is now stopping the target
    soak.process.send_signal(signal.SIGINT)
    code, stdout, stderr = soak.wait(timeout=EXIT_WITHIN)
    assert code == 130, stderr
    assert "stopping at once" in stderr
    assert_nothing_left(soak)
    assert soak.samples()
    again = subprocess.run(
        [sys.executable, "-m", "runner", "analyze", str(soak.out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert again.returncode in (1, 4), again.stderr
    assert (soak.out / "report.html").exists()


@pytest.mark.slow
@pytest.mark.parametrize("helpers", ["--children 1", "--children 1 --escape"], ids=["in-group", "escaped"])
def test_sigkilled_runner_takes_its_target_along_and_leaves_an_analysable_folder(soak_run, helpers):
    soak = soak_run(helpers, load={"users": 10, "spawn_rate": 10, "duration": "10m"}, interval="0.2s")
    soak.wait_for_phase("steady")
    time.sleep(1.0)  # a few samples, so the runner has seen (and told its watchdog about) the helper
    target = soak.target_pid()
    assert target and psutil.pid_exists(target)
    soak.process.send_signal(signal.SIGKILL)
    soak.wait(timeout=EXIT_WITHIN)
    # the target dies with the runner (PR_SET_PDEATHSIG); the watchdog kills its group and
    # every process the runner saw in its tree, including helpers that left the session
    assert_nothing_left(soak)
    assert not (soak.out / "run.json").exists()
    result = subprocess.run(
        [sys.executable, "-m", "runner", "analyze", str(soak.out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode in (1, 4), result.stdout + result.stderr
    summary = soak.summary()
    assert summary["complete"] is False
    assert any("stopped before the run finished" in r for r in summary["reasons"])


@pytest.mark.slow
def test_ctrl_c_while_a_slow_target_starts_does_not_wait_out_ready_timeout(soak_run):
    soak = soak_run("--never-ready", target={"ready_timeout": "10m"})
    soak.wait_for_line("fault: starting up forever")
    soak.process.send_signal(signal.SIGINT)
    code, stdout, stderr = soak.wait(timeout=EXIT_WITHIN)
    assert "Traceback" not in stderr, stderr
    summary = soak.summary()
    assert summary["interrupted"] is True and code == summary["exit_code"] == 4
    assert_nothing_left(soak)
