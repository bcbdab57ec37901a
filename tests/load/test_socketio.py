"""protocol = "socket.io" against the bundled python-socketio chat server, for real."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any, Iterator

import pytest

from runner.load.channel import Channel
from runner.load.client import WebSocketClient
from runner.load.scenario import ScenarioConnection, build_plan
from runner.profile import parse_profile
from tests.conftest import ROOT, free_port, soak, stop_process, wait_for_port
from tests.load.conftest import RecordingUser

JOIN = {
    "name": "join",
    "emit_ack": ["join", {"room": "room-{user_id%10}"}],
    "expect_args": {"0.room": "room-{user_id%10}"},
}
SAY = {
    "name": "say",
    "emit": ["say", {"room": "room-{user_id%10}", "text": "hi {n}"}],
    "expect_event": "message",
    "expect_args": {"0.text": "hi {n}", "0.from": "{user_id}"},
}


class SocketIOServer:
    """runner.targets.socketio_chat (python-socketio under uvicorn) in a subprocess on 127.0.0.1."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runner.targets.socketio_chat", "--port", str(self.port), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(self.port, timeout=60)
        except BaseException:
            self.stop()
            raise
        self.url = f"ws://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        stop_process(self.process)

    def stats(self) -> dict[str, Any]:
        """The server's own view: connected sessions, room members, disconnects by reason."""
        plan = plan_for(self.url)
        channel = Channel(plan.client(self.url, {"user_id": 0}), plan.session({"user_id": 0}))
        channel.connect()
        try:
            return ScenarioConnection(channel, 10).call("stats")[0]
        finally:
            channel.close()

    def wait_for_disconnects(self, total: int) -> dict[str, int]:
        """The disconnect reasons once ``total`` sessions (besides the stats queries) have ended."""
        deadline = time.monotonic() + 30
        while True:
            reasons = self.stats()["disconnects"]
            reasons["client disconnect"] = reasons.get("client disconnect", 0) - self._queries
            self._queries += 1
            if sum(reasons.values()) >= total or time.monotonic() > deadline:
                return {k: v for k, v in reasons.items() if v}
            time.sleep(0.2)

    _queries = 0


def plan_for(url: str, steps: list[dict[str, Any]] | None = None, **extra: Any):
    scenario = {"protocol": "socket.io", "auth": {"token": "tok-{user_id}"}, **extra.pop("scenario", {})}
    if steps:
        scenario["steps"] = steps
    return build_plan(parse_profile({"target": {"url": url}, "load": extra, "scenario": scenario}))


@pytest.fixture
def sio_server() -> Iterator[SocketIOServer]:
    server = SocketIOServer("--ping-interval", "1", "--ping-timeout", "1")
    yield server
    server.stop()


def test_handshake_events_and_acks_are_one_request_each(sio_server):
    plan = plan_for(
        sio_server.url, [JOIN, SAY, {"name": "stats", "emit_ack": ["stats"], "expect_args": {"0.members": 1}}]
    )
    user = RecordingUser()
    for _ in range(2):
        plan.run_cycle(user, url=sio_server.url)
    assert user.outcome() == {"connect": None, "join": None, "say": None, "stats": None, "close": None}
    assert [r["name"] for r in user.requests] == ["connect", "join", "say", "stats", "close"] * 2
    assert user.counters.opened == user.counters.closed == 2 and user.counters.errors == 0
    # the close left the namespace (41) before the closing handshake: a client disconnect to the server
    assert sio_server.wait_for_disconnects(2) == {"client disconnect": 2}


def test_a_wrong_expectation_fails_its_step_naming_what_came(sio_server):
    steps = [
        JOIN,
        {"name": "wrong", "emit_ack": ["join", {"room": "x"}], "expect_args": {"0.room": "y"}},
        {"name": "never", "emit": ["leave", {"room": "x"}]},
    ]
    user = RecordingUser()
    plan_for(sio_server.url, steps).run_cycle(user, url=sio_server.url)
    outcome = user.outcome()
    assert outcome["join"] is None
    assert outcome["wrong"] == 'wrong: the ack of \'join\' with 0.room = "y" came as \'[{"room":"x","members":1}]\''
    assert "never" not in outcome and "close" not in outcome and user.counters.errors == 1
    user = RecordingUser()
    plan_for(sio_server.url, [{"name": "nothing", "expect_event": "nope", "timeout": "300ms"}]).run_cycle(
        user, url=sio_server.url
    )
    assert user.outcome()["nothing"] == "nothing: no event 'nope' within 0.3s; nothing came"


def test_a_refused_namespace_is_a_failed_connect_naming_the_servers_message(sio_server):
    user = RecordingUser()
    plan_for(sio_server.url, [JOIN], scenario={"auth": {"token": "stolen-{user_id}"}}).run_cycle(
        user, url=sio_server.url
    )
    assert user.outcome() == {"connect": "Socket.IO namespace / refused: invalid token"}
    assert user.counters.opened == 0 and user.counters.errors == 1


def test_heartbeats_are_answered_through_a_wait_and_the_hold(sio_server):
    """The server pings every second and drops a client that is silent for one more: waits and holds of 3 s survive."""
    # the control: a client that speaks Socket.IO but never reads (so never answers a ping) is dropped
    silent = WebSocketClient(sio_server.url.rstrip("/") + "/socket.io/?EIO=4&transport=websocket", timeout=10)
    silent.connect()
    assert silent.recv().startswith("0{")
    silent.send("40" + json.dumps({"token": "tok-silent"}))
    plan = plan_for(sio_server.url, [JOIN, {"wait": "3s"}, SAY], hold="3s")
    user = RecordingUser()
    plan.run_cycle(user, url=sio_server.url)
    assert user.outcome() == {"connect": None, "join": None, "say": None, "close": None}
    endings = sio_server.wait_for_disconnects(2)
    # ours left cleanly; the silent one was dropped by the server (Socket.IO's ping timeout, or the
    # transport's own keepalive closing first: either way the server, not the client, ended it)
    assert endings.pop("client disconnect", 0) == 1, endings
    assert sum(endings.values()) == 1 and set(endings) <= {"ping timeout", "transport close"}, endings
    silent.abort()


def test_drop_fraction_drops_without_leaving_the_namespace(sio_server):
    plan = plan_for(sio_server.url, [JOIN], drop_fraction=0.5)
    user = RecordingUser()
    for _ in range(4):
        plan.run_cycle(user, url=sio_server.url)
    assert [r["name"] for r in user.requests if r["name"] in ("close", "drop")] == ["close", "drop"] * 2
    reasons = sio_server.wait_for_disconnects(4)
    assert reasons.get("client disconnect") == 2 and sum(reasons.values()) == 4, (
        reasons
    )  # the drops: transport close/error


def test_code_scenario_emits_calls_and_receives_events(sio_server, tmp_path):
    (tmp_path / "sio.py").write_text(
        "def scenario(conn, ctx):\n"
        "    room = f'room-{ctx.user_id}'\n"
        "    with ctx.step('join'):\n"
        "        ack = conn.call('join', {'room': room})\n"
        "        assert ack[0]['room'] == room, ack\n"
        "    ctx.sleep(2.5)  # longer than ping interval + timeout: answered meanwhile\n"
        "    with ctx.step('say'):\n"
        "        conn.emit('say', {'room': room, 'text': 'hey'})\n"
        "        assert conn.recv_event('message', timeout=5)[0]['text'] == 'hey'\n"
    )
    plan = plan_for(sio_server.url, scenario={"file": str(tmp_path / "sio.py")})
    user = RecordingUser()
    plan.run_cycle(user, url=sio_server.url)
    assert user.outcome() == {"connect": None, "join": None, "say": None, "close": None}
    assert sio_server.wait_for_disconnects(1) == {"client disconnect": 1}


def test_socketio_profile_gives_per_step_statistics(tmp_path):
    out = tmp_path / "sio"
    result = soak(
        "run",
        str(ROOT / "profiles" / "socketio.toml"),
        "--users",
        "20",
        "--spawn-rate",
        "20",
        "--duration",
        "6s",
        "--no-memray",
        "--quiet",
        "--out",
        str(out),
    )
    assert result.returncode != 3, result.stdout + result.stderr
    stats = json.loads((out / "locust_stats.json").read_text())
    by_name = {entry["name"]: entry for entry in stats["requests"]}
    for step in ("connect", "join", "say", "close"):
        assert by_name[step]["requests"] > 30, (step, by_name.get(step))
        assert by_name[step]["failures"] == 0, stats["errors"]
    summary = json.loads((out / "summary.json").read_text())
    assert {"join", "say"} <= set(summary["load"]["latency_ms"])


def _join_line() -> int:
    source = (ROOT / "runner" / "targets" / "socketio_chat.py").read_text().splitlines()
    return next(i for i, text in enumerate(source, start=1) if "Member(user, room, bytearray(" in text)


@pytest.mark.slow
def test_socketio_leaky_profile_is_a_leak_naming_the_join_line(tmp_path):
    """`make soak PROFILE=profiles/socketio-leaky.toml`, shortened: LEAK, and memray names ChatRooms.join."""
    out = tmp_path / "leaky"
    result = soak(
        "run",
        str(ROOT / "profiles" / "socketio-leaky.toml"),
        "--duration",
        "20s",
        "--quiet",
        "--out",
        str(out),
        timeout=300,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdict"] == "leak" and summary["load"]["errors"] == 0
    join = f"runner/targets/socketio_chat.py:{_join_line()}"
    site = next((s for s in summary["sites"] if s["location"] == join), None)
    assert site is not None and site["function"] == "join", summary["sites"][:3]
    assert 3500 < site["bytes_per_connection"] < 6000  # 4096 B bytearray + the member object and its dict entry
    assert f"leak site: {join}" in result.stdout
