"""The Locust user's echo loop, run by `soak run` against a real echo server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import threading

import pytest
from websockets.exceptions import ConnectionClosedError

from runner.results import read_samples
from tests.conftest import soak, threaded_server

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


def test_drop_fraction_ends_that_share_without_a_closing_handshake(tmp_path):
    """drop_fraction = 0.25: every 4th connection of a user just vanishes; the server sees exactly those as unclean."""
    endings = {"clean": 0, "dropped": 0}
    lock = threading.Lock()

    def handler(ws):
        try:
            for message in ws:
                ws.send(message)
            ending = "clean"
        except ConnectionClosedError:
            ending = "dropped"
        with lock:
            endings[ending] += 1

    profile = tmp_path / "drop.toml"
    profile.write_text(
        "[target]\nmemray = false\n"
        '[load]\nusers = 2\nspawn_rate = 50\nduration = "3s"\nmessages = 1\ndrop_fraction = 0.25\n'
        '[phases]\nbaseline = "0s"\ndrain = "10s"\ncooldown = "0.5s"\n'
        '[sampling]\ninterval = "0.5s"\nuss = false\n'
    )
    out = tmp_path / "run"
    with threaded_server(handler) as url:  # in this process, so the run samples this process (--pid)
        result = soak(
            "run", str(profile), "--url", url, "--pid", str(os.getpid()), "--out", str(out), "--quiet", timeout=120
        )
    assert result.returncode in (0, 4), result.stdout + result.stderr
    stats = {entry["name"]: entry for entry in json.loads((out / "locust_stats.json").read_text())["requests"]}
    drops, closes = stats["drop"]["requests"], stats["close"]["requests"]
    assert drops >= 10 and not stats["drop"]["failures"]
    assert (endings["dropped"], endings["clean"]) == (drops, closes)
    assert abs(drops - (drops + closes) / 4) <= 2  # evenly: one in four per user, not at random


LEAKS_ONLY_ON_DROP = """
name = "leak-on-drop"
[target]
command = "{python} -m runner.targets.leaky --port {port} --leak-bytes 4096 --leak-on-drop-only"
memray = true
[load]
users = 20
spawn_rate = 40
duration = "20s"
messages = 1
drop_fraction = 0.5
[phases]
baseline = "1s"
drain = "5s"
cooldown = "1s"
"""


@pytest.mark.slow  # the default suite covers this path elsewhere; make test-slow runs it
def test_a_leak_on_the_drop_path_only_is_found_with_drops(tmp_path):
    """The server cleans up after a clean close only: half the connections dropped leak half of 4 KB each."""
    profile = tmp_path / "drop-leak.toml"
    profile.write_text(LEAKS_ONLY_ON_DROP)
    out = tmp_path / "run"
    result = soak("run", str(profile), "--out", str(out), "--quiet", timeout=400)
    assert result.returncode == 1, result.stdout + result.stderr
    top = json.loads((out / "summary.json").read_text())["sites"][0]
    assert top["location"] == "runner/targets/leaky.py:26"
    assert 1024 <= top["bytes_per_connection"] <= 3072  # ~2048: the dropped half only, not all 4096
