"""The target misbehaves: crashes, is SIGKILLed, never starts, exits at once, stops answering, forks."""

from __future__ import annotations

import pytest

from tests.faults.conftest import assert_nothing_left

pytestmark = pytest.mark.faults


def _error_run_checks(code: int, stdout: str, stderr: str) -> None:
    assert code == 3, stdout + stderr
    assert "Traceback" not in stderr and "Traceback" not in stdout
    assert stdout.splitlines()[0].startswith("verdict: ERROR - ")


@pytest.mark.slow
def test_target_exiting_mid_run_is_an_error_with_its_exit_code_and_log(soak_run):
    soak = soak_run("--exit-after 4 --exit-code 70 --last-words 'panic: index out of range'")
    code, stdout, stderr = soak.wait(timeout=120)  # duration is 5m: the crash must end the run
    _error_run_checks(code, stdout, stderr)
    summary = soak.summary()
    assert summary["verdict"] == "error" and summary["exit_code"] == 3
    target = summary["target"]
    assert target["crashed"] is True and target["exit_code"] == 70 and target["signal"] is None
    assert "fault: exiting with code 70" in target["log_tail"]
    assert summary["reasons"][0].startswith("the target died during the ") and "(exit code 70)" in summary["reasons"][0]
    assert "the last line of its log: panic: index out of range" in summary["reasons"]
    assert "panic: index out of range" in stdout  # the reason reaches the terminal too
    # every sample up to the crash is kept, and charted
    samples = soak.samples()
    assert any(s["phase"] == "steady" and s["rss"] for s in samples)
    assert "<svg" in (soak.out / "report.html").read_text(encoding="utf-8")
    assert_nothing_left(soak)


@pytest.mark.slow
def test_target_sigkilled_while_its_memory_rises_says_so(soak_run):
    soak = soak_run("--leak-bytes 50000 --kill-after 6", load={"users": 20, "spawn_rate": 20})
    code, stdout, stderr = soak.wait(timeout=120)
    _error_run_checks(code, stdout, stderr)
    summary = soak.summary()
    target = summary["target"]
    assert target["crashed"] is True and target["signal"] == "SIGKILL" and target["exit_code"] == 137
    assert "(killed by SIGKILL)" in summary["reasons"][0]
    memory = [r for r in summary["reasons"] if "memory" in r or "RSS" in r]
    assert memory, summary["reasons"]
    assert summary["load"]["connections_closed"] > 0
    assert_nothing_left(soak)


@pytest.mark.slow
def test_a_clean_target_killed_is_not_blamed_on_memory(soak_run):
    soak = soak_run("--kill-after 5", load={"users": 5, "spawn_rate": 5, "think": "0.2s"})
    code, stdout, stderr = soak.wait(timeout=120)
    _error_run_checks(code, stdout, stderr)
    reasons = soak.summary()["reasons"]
    assert "(killed by SIGKILL)" in reasons[0]
    assert not any("leak" in r or "out of memory" in r for r in reasons), reasons
    assert_nothing_left(soak)


@pytest.mark.slow
def test_target_never_ready_fails_after_ready_timeout_with_its_log(soak_run):
    soak = soak_run("--never-ready", target={"ready_timeout": "5s"})
    code, stdout, stderr = soak.wait(timeout=60)
    _error_run_checks(code, stdout, stderr)
    summary = soak.summary()
    assert "did not accept a WebSocket handshake within 5s" in summary["reasons"][0]
    assert "the last line of its log: fault: starting up forever" in summary["reasons"]
    assert summary["target"]["crashed"] is False
    assert "fault: starting up forever" in summary["target"]["log_tail"]
    assert_nothing_left(soak)


@pytest.mark.slow  # the unit test in tests/test_target.py covers it in the default suite
def test_target_exiting_at_once_fails_at_once(soak_run):
    # ready_timeout is far longer than the wait below: the runner must not wait it out
    soak = soak_run("--exit-at-once 9 --last-words 'error: config.yaml not found'", target={"ready_timeout": "10m"})
    code, stdout, stderr = soak.wait(timeout=60)
    _error_run_checks(code, stdout, stderr)
    summary = soak.summary()
    assert "exited before it was ready (exit code 9)" in summary["reasons"][0]
    assert "the last line of its log: error: config.yaml not found" in summary["reasons"]
    assert_nothing_left(soak)


@pytest.mark.slow
def test_target_that_stops_answering_counts_timeouts_and_ends_on_time(soak_run):
    soak = soak_run(
        "--stall-after 3",
        load={"users": 10, "spawn_rate": 10, "duration": "6s", "timeout": "1s"},
        phases={"baseline": "0s", "drain": "3s", "cooldown": "0s"},
    )
    code, stdout, stderr = soak.wait(timeout=90)
    assert "Traceback" not in stderr, stderr
    summary = soak.summary()
    assert summary["load"]["errors"] > 0, summary["load"]
    kinds = " ".join(str(e["error"]) for e in summary["load"]["errors_by_kind"]).lower()
    assert "timed out" in kinds or "timeout" in kinds, summary["load"]["errors_by_kind"]
    assert summary["target"]["crashed"] is False
    assert code in (0, 1, 3, 4)
    assert_nothing_left(soak)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["", "--kill-after 4"], ids=["stopped-by-runner", "target-killed"])
def test_forked_helpers_that_ignore_sigterm_and_leave_the_session_are_stopped(soak_run, fault):
    soak = soak_run(
        f"--children 2 --escape {fault}",
        load={"users": 5, "spawn_rate": 5, "duration": "3s", "think": "0.1s"},
    )
    code, stdout, stderr = soak.wait(timeout=120)
    assert "Traceback" not in stderr, stderr
    assert len(soak.helper_pids()) == 2
    assert code == (3 if fault else code)
    assert_nothing_left(soak)
