"""The Locust user's echo loop, run by `soak run` against a real echo server on 127.0.0.1."""

from __future__ import annotations

import json

from runner.results import read_samples
from tests.conftest import soak

PROFILE = """
name = "connections-per-user"
[target]
command = "{python} -m runner.targets.echo --port {port}"
memray = false
[load]
users = 4
spawn_rate = 100
duration = "5s"
connections_per_user = 3
messages = 1
hold = "2s"
[phases]
baseline = "0s"
drain = "10s"
cooldown = "1s"
[sampling]
interval = "0.25s"
uss = false
"""


def test_each_user_holds_its_connections_together(tmp_path):
    """4 users x 3 connections: 12 open at once (never more), each connect/echo/close counted, all closed at the end."""
    profile = tmp_path / "cpu.toml"
    profile.write_text(PROFILE)
    out = tmp_path / "run"
    result = soak("run", str(profile), "--out", str(out), "--quiet", timeout=180)
    assert result.returncode in (0, 4), result.stdout + result.stderr
    samples = list(read_samples(out / "samples.jsonl"))
    assert max(s["open"] for s in samples) == 12
    assert max(s["fds"] for s in samples) >= min(s["fds"] for s in samples) + 12  # the server held them too
    last = samples[-1]
    assert last["open"] == 0 and last["closed"] == last["opened"] >= 12 and last["errors"] == 0
    stats = {entry["name"]: entry for entry in json.loads((out / "locust_stats.json").read_text())["requests"]}
    assert stats["connect"]["requests"] == stats["echo"]["requests"] == stats["close"]["requests"] == last["closed"]
    assert not any(entry["failures"] for entry in stats.values())


def test_connections_per_user_refuses_a_scenario(tmp_path):
    profile = tmp_path / "bad.toml"
    profile.write_text(PROFILE + '[scenario]\nsteps = [{ send = "hi" }]\n')
    result = soak("run", str(profile), "--out", str(tmp_path / "run"), "--quiet", timeout=60)
    assert result.returncode == 2
    assert "load.connections_per_user applies to the plain echo loop" in result.stderr
    assert "Traceback" not in result.stderr
