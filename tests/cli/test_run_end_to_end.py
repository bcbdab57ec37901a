"""Real soaks of the bundled targets: real Locust, real psutil, real servers on 127.0.0.1."""

from __future__ import annotations

import json

import psutil
import pytest

from tests.conftest import soak

CONTRACT_METRIC_FIELDS = {"slope_per_connection", "slope_per_hour", "ci_low", "ci_high", "verdict"}
CONTRACT_LOAD_FIELDS = {"connections_opened", "connections_closed", "peak_concurrent", "cycles_per_second", "errors"}


def _children_of_pid(pid: int) -> list[int]:
    return [p.pid for p in psutil.process_iter() if p.ppid() == pid]


def _check_contract(summary: dict) -> None:
    assert summary["verdict"] in {"pass", "leak", "inconclusive", "error"}
    assert isinstance(summary["reasons"], list) and summary["reasons"]
    assert CONTRACT_LOAD_FIELDS <= set(summary["load"])
    assert {"pid", "exit_code", "crashed"} <= set(summary["target"])
    assert isinstance(summary["sites"], list)
    for metric in summary["metrics"].values():
        assert CONTRACT_METRIC_FIELDS <= set(metric)


def test_clean_target_does_not_leak(tmp_path):
    out = tmp_path / "clean"
    result = soak(
        "run",
        "--target",
        "{python} -m runner.targets.echo --port {port}",
        "--users",
        "40",
        "--spawn-rate",
        "40",
        "--duration",
        "25s",
        "--no-memray",
        "--out",
        str(out),
    )
    assert result.returncode in (0, 4), result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    _check_contract(summary)
    assert summary["verdict"] in ("pass", "inconclusive")
    assert summary["load"]["connections_closed"] > 1000
    assert summary["load"]["errors"] == 0
    assert summary["target"]["crashed"] is False
    assert "report: " in result.stdout and (out / "report.html").exists()
    assert (out / "target.log").read_text().startswith("listening on ws://127.0.0.1:")
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    phases = [s["phase"] for s in samples]
    assert {"baseline", "steady", "cooldown"} <= set(phases)
    assert samples[-1]["open"] == 0
    assert (
        not psutil.pid_exists(summary["target"]["pid"])
        or psutil.Process(summary["target"]["pid"]).status() == psutil.STATUS_ZOMBIE
    )


@pytest.mark.slow  # the default suite covers this path elsewhere; make test-slow runs it
def test_leaky_target_is_a_leak_with_exit_code_1(tmp_path):
    out = tmp_path / "leaky"
    result = soak(
        "run",
        "--target",
        "{python} -m runner.targets.leaky --port {port} --leak-bytes 4096",
        "--users",
        "40",
        "--spawn-rate",
        "40",
        "--duration",
        "25s",
        "--no-memray",
        "--out",
        str(out),
    )
    assert result.returncode == 1, result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    _check_contract(summary)
    assert summary["verdict"] == "leak"
    assert "per connection" in summary["reasons"][0]
    assert result.stdout.splitlines()[-1] == f"report: {out / 'report.html'}"
    # `soak analyze` reproduces the verdict from the folder alone
    again = soak("analyze", str(out))
    assert again.returncode == 1
    assert json.loads((out / "summary.json").read_text())["verdict"] == "leak"
    # ... and a huge budget turns it into a pass
    relaxed = soak("analyze", str(out), "--budget", "1000000")
    assert relaxed.returncode == 0, relaxed.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--target", "x --port {port}", "--users", "0"], "load.users: must be at least 1"),
        (["run", "--target", "x --port {port}", "--duration", "10 minutes"], "not a duration"),
        (["run", "--target", "x --port {port}", "--url", "http://127.0.0.1:{port}/"], "not a WebSocket URL"),
        (["run", "/nonexistent/profile.toml"], "does not exist"),
        (["run"], "nothing to soak"),
        (["run", "--target", "/nonexistent/server --port {port}"], "not found"),
        (["analyze", "/nonexistent/run"], "does not exist"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(args, message):
    result = soak(*args, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("soak: error: ") and message in lines[0]
