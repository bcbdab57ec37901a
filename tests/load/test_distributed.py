"""Distributed load: a Locust master with 2 worker processes, against a real target on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from runner.cli.worker import parse_master
from runner.errors import EXIT_USAGE, UsageError
from runner.load.cpu import SaturationTracker
from runner.load.distributed import WorkerCounters, master_heartbeat_timeout, sample_latencies
from runner.load.responsiveness import LoopLag
from tests.conftest import ROOT, free_port, soak, threaded_server

PROFILE = """
name = "distributed"
[target]
command = "{python} -m runner.targets.echo --port {port}"
memray = false
[load]
users = 12
spawn_rate = 50
duration = "4s"
workers = 1
remote_workers = 1
master_port = {master_port}
messages = 1
[phases]
baseline = "0s"
drain = "10s"
cooldown = "1s"
[sampling]
interval = "0.5s"
uss = false
"""


@pytest.mark.slow  # the default suite covers this path elsewhere; make test-slow runs it
def test_two_workers_counters_add_up(tmp_path):
    """One local worker started by the run, one joined by hand with `soak worker --master`."""
    master_port = free_port()
    profile = tmp_path / "distributed.toml"
    profile.write_text(PROFILE.replace("{master_port}", str(master_port)))
    out = tmp_path / "run"
    worker_log = open(tmp_path / "remote-worker.log", "wb")
    remote = subprocess.Popen(
        [sys.executable, "-m", "runner", "worker", "--master", f"127.0.0.1:{master_port}"],
        cwd=ROOT,
        stdout=worker_log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ),
    )
    try:
        result = soak("run", str(profile), "--out", str(out), "--quiet", timeout=240)
        assert remote.wait(timeout=60) == 0  # the master told it to quit
    finally:
        if remote.poll() is None:
            remote.kill()
        worker_log.close()
    assert result.returncode in (0, 4), result.stdout + result.stderr
    run = json.loads((out / "run.json").read_text())
    assert run["error"] is None
    assert (run["load_generator"]["workers"], run["load_generator"]["remote_workers"]) == (1, 1)
    assert run["load_generator"]["processes"] == 2  # both workers reported CPU readings
    assert (out / "worker-1.log").exists()
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    last = samples[-1]
    assert last["open"] == 0 and last["opened"] == last["closed"] > 0
    # Our counters travel in report_to_master payloads; Locust's statistics by its own path.
    # Were one worker's counters lost, opened would be about half of the successful connects.
    stats = json.loads((out / "locust_stats.json").read_text())
    by_name = {entry["name"]: entry for entry in stats["requests"]}
    connects = by_name["connect"]["requests"] - by_name["connect"]["failures"]
    assert last["opened"] == connects
    assert max(s["open"] for s in samples) <= 12
    assert any(s.get("load_cpu") is not None for s in samples)
    # the master's and the workers' loops are watched, and the master's heartbeats reached the workers
    assert all("loop_lag" in s and "sample_s" in s for s in samples)
    reported = [s for s in samples if "heartbeat_lag" in s]
    assert reported and all(s["heartbeat_lag"] < 30 and s["worker_loop_lag"] < 30 for s in reported)
    assert run["load_generator"]["lost_workers"] == [] and run["load_generator"]["peak_loop_lag_s"] >= 0


def test_worker_counters_sum_and_keep_the_latest_report():
    counters = WorkerCounters()
    counters.update(
        "a",
        {"opened": 5, "closed": 3, "errors": 1, "lat": {"connect": [1.0, 2.0]}, "cpu_clock": 1.0, "cpu_seconds": 0.5},
    )
    counters.update("b", {"opened": 7, "closed": 7, "errors": 0, "lat": {"connect": [3.0]}})
    counters.update(
        "a", {"opened": 6, "closed": 6, "errors": 1, "lat": {}, "server_closes": 2, "endings": {"server_close 1001": 2}}
    )
    counters.update(
        "b", {"opened": 7, "closed": 7, "errors": 0, "resets": 1, "endings": {"server_close 1001": 1, "reset EPIPE": 1}}
    )
    assert counters.snapshot() == {"opened": 13, "closed": 13, "open": 0, "errors": 1, "server_closes": 2, "resets": 1}
    assert counters.endings == {"server_close 1001": 3, "reset EPIPE": 1}
    assert counters.take_latencies() == {"connect": [1.0, 2.0, 3.0]}
    assert counters.take_latencies() == {}
    assert counters.cpu_readings() == {"a": (1.0, 0.5)}


def test_master_address_parsing():
    assert parse_master("10.0.0.5:6000") == ("10.0.0.5", 6000)
    assert parse_master("loadbox") == ("loadbox", 5557)
    assert parse_master("[::1]:7000") == ("::1", 7000)
    for bad in (":5557", "host:http", "host:70000"):
        with pytest.raises(UsageError):
            parse_master(bad)


def test_worker_command_rejects_a_bad_master():
    result = soak("worker", "--master", "host:notaport", timeout=60)
    assert result.returncode == EXIT_USAGE
    assert "is not a port number" in result.stderr and "Traceback" not in result.stderr


def test_saturation_is_judged_over_windows_of_the_loaded_phases():
    tracker = SaturationTracker(window=5.0)
    assert tracker.feed("w1", 0.0, 0.0, "ramp") is None
    assert tracker.feed("w1", 2.0, 1.9, "ramp") is None  # a busy instant is not a window
    assert tracker.feed("w1", 5.0, 2.0, "ramp") == 40.0
    assert tracker.feed("w1", 10.0, 6.8, "steady") == 96.0
    tracker.feed("w2", 0.0, 0.0, "cooldown")
    tracker.feed("w2", 6.0, 6.0, "cooldown")  # not judged: the load had stopped
    assert tracker.saturated and tracker.peak == 96.0 and tracker.hot_windows == 1
    assert "load generator saturated" in tracker.note()
    quiet = SaturationTracker()
    quiet.feed("local", 0.0, 0.0, "steady")
    quiet.feed("local", 6.0, 3.0, "steady")
    assert not quiet.saturated and quiet.note() is None and quiet.to_dict()["peak_cpu_percent"] == 50.0


def test_a_local_worker_ends_with_the_runner_that_started_it():
    """No orphans: a worker started with --parent-pid gets SIGTERM when that process dies."""
    import signal
    import time

    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, subprocess, sys, time\n"
            "w = subprocess.Popen([sys.executable, '-m', 'runner', 'worker', '--master', '127.0.0.1:9',"
            " '--parent-pid', str(os.getpid())])\n"
            "print(w.pid, flush=True)\n"
            "time.sleep(600)\n",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    worker_pid = int(parent.stdout.readline())
    try:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _alive(worker_pid):
            time.sleep(0.2)
        assert not _alive(worker_pid)
    finally:
        if _alive(worker_pid):
            os.kill(worker_pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_worker_reports_carry_a_bounded_sample_of_latencies():
    many = {"connect": [float(i) for i in range(5000)], "echo": [1.0, 2.0]}
    sampled = sample_latencies(many, limit=300)
    assert len(sampled["connect"]) == 300 and set(sampled["connect"]) <= set(many["connect"])
    assert sampled["echo"] == [1.0, 2.0]


def test_user_ids_do_not_repeat_across_workers(tmp_path):
    """{user_id} is offset by worker: 6 users on 2 workers send 6 different ids in their handshake header."""
    seen: list[str] = []

    def handler(ws):
        seen.append(ws.request.headers["X-User-Id"])
        for message in ws:
            ws.send(message)

    profile = tmp_path / "ids.toml"
    profile.write_text(
        "[target]\nmemray = false\n"
        '[load]\nusers = 6\nspawn_rate = 50\nduration = "3s"\nworkers = 2\nmessages = 1\nhold = "0.2s"\n'
        'headers = { X-User-Id = "{user_id}" }\n'
        '[phases]\nbaseline = "0s"\ndrain = "10s"\ncooldown = "0s"\n'
        '[sampling]\ninterval = "0.5s"\nuss = false\n'
    )
    with threaded_server(handler) as url:  # in this process, so the run samples this process (--pid)
        result = soak(
            "run",
            str(profile),
            "--url",
            url,
            "--pid",
            str(os.getpid()),
            "--out",
            str(tmp_path / "run"),
            "--quiet",
            timeout=240,
        )
    assert result.returncode in (0, 4), result.stdout + result.stderr
    ids = {int(value) for value in seen}
    assert len(ids) == 6, sorted(ids)
    assert sorted(i // 1_000_000 for i in ids) == [0, 0, 0, 1, 1, 1]  # worker 0 and worker 1, three users each


def test_a_lost_workers_open_connections_are_closed_with_it():
    counters = WorkerCounters()
    counters.update("a", {"opened": 10, "closed": 4})
    counters.update("b", {"opened": 5, "closed": 5})
    assert counters.open == 6
    assert counters.lose("a") == 6 and counters.lose("nobody") == 0
    assert counters.snapshot()["open"] == 0 and counters.opened == 15


def test_loop_lag_keeps_the_longest_stall_per_take_and_counts_stalls():
    lag = LoopLag()
    for lateness in (0.01, 0.3, -0.2, 0.05):
        lag.record(lateness)
    assert lag.take() == 0.3 and lag.take() == 0.0
    lag.record(2.5)
    assert lag.to_dict() == {"peak_loop_lag_s": 2.5, "loop_stalls": 1, "stall_threshold_s": 1.0}


def test_the_master_heartbeat_wait_covers_the_drain():
    assert master_heartbeat_timeout(0.0) == 60.0
    assert master_heartbeat_timeout(180.0) == 240.0


@pytest.mark.slow
def test_workers_outlive_a_drain_and_cooldown_longer_than_locusts_heartbeat_timeout(tmp_path):
    """After "stop", Locust's worker stops reading the master for stop_timeout (the drain): with 60 s + of drain
    and cooldown the workers used to give the master up ("Didn't get heartbeat from master in over 60s")."""
    profile = tmp_path / "long-drain.toml"
    profile.write_text(
        '[target]\ncommand = "{python} -m runner.targets.echo --port {port}"\nmemray = false\n'
        '[load]\nusers = 4\nspawn_rate = 10\nduration = "3s"\nmessages = 1\nhold = "1s"\nworkers = 1\n'
        '[phases]\nbaseline = "0s"\ndrain = "90s"\ncooldown = "70s"\n[sampling]\ninterval = "0.5s"\nuss = false\n'
    )
    out = tmp_path / "run"
    result = soak("run", str(profile), "--out", str(out), "--quiet", timeout=400)
    assert result.returncode in (0, 4), result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["load"]["lost_workers"] == [], summary["load"]["lost_workers"]
    assert "Didn't get heartbeat" not in (out / "worker-1.log").read_text()
