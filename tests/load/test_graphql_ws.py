"""protocol = "graphql-ws" against the bundled Ariadne subscription server, for real."""

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

ROOM = "subscription ($room: String!) { room(name: $room) { kind room user text } }"
POST = "mutation ($room: String!, $text: String!) { post(room: $room, text: $text) }"
STATS = "query { stats { listeners pongs pingTimeouts } }"
SUBSCRIBE = {
    "name": "subscribe",
    "id": "room",
    "subscribe": ROOM,
    "variables": {"room": "room-{user_id%10}"},
    "expect_next": {"data.room.kind": "joined", "data.room.user": "u{user_id}"},
}
POST_STEP = {
    "name": "post",
    "id": "post-{n}",
    "subscribe": POST,
    "variables": {"room": "room-{user_id%10}", "text": "hi {n}"},
    "expect_next": {"data.post": True},
}
BROADCAST = {
    "name": "broadcast",
    "id": "room",
    "expect_next": {"data.room.text": "hi {n}", "data.room.user": "u{user_id}"},
}


class GraphQLServer:
    """runner.targets.graphql_subs (Ariadne under uvicorn) in a subprocess on 127.0.0.1."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runner.targets.graphql_subs", "--port", str(self.port), *args],
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
        plan = plan_for(self.url)
        channel = Channel(plan.client(self.url, {"user_id": 0}), plan.session({"user_id": 0}))
        channel.connect()
        try:
            conn = ScenarioConnection(channel, 10)
            conn.subscribe("stats", STATS)
            return conn.recv_next("stats")["data"]["stats"]
        finally:
            channel.close()

    def wait_for_listeners(self, count: int) -> dict[str, Any]:
        deadline = time.monotonic() + 30
        while True:
            stats = self.stats()
            if stats["listeners"] == count or time.monotonic() > deadline:
                return stats
            time.sleep(0.2)


def plan_for(url: str, steps: list[dict[str, Any]] | None = None, **load: Any):
    scenario: dict[str, Any] = {"protocol": "graphql-ws", "auth": {"token": load.pop("token", "tok-u{user_id}")}}
    if steps:
        scenario["steps"] = steps
    return build_plan(parse_profile({"target": {"url": url}, "load": load, "scenario": scenario}))


@pytest.fixture
def gql_server() -> Iterator[GraphQLServer]:
    server = GraphQLServer("--ping-interval", "1")
    yield server
    server.stop()


def test_subscribe_next_mutation_and_complete_are_one_request_each(gql_server):
    steps = [SUBSCRIBE, POST_STEP, BROADCAST, {"name": "complete", "complete": "room"}]
    user = RecordingUser()
    for _ in range(2):
        plan_for(gql_server.url, steps).run_cycle(user, url=gql_server.url)
    assert user.outcome() == {
        "connect": None,
        "subscribe": None,
        "post": None,
        "broadcast": None,
        "complete": None,
        "close": None,
    }
    assert user.counters.opened == user.counters.closed == 2 and user.counters.errors == 0
    assert gql_server.wait_for_listeners(0)["listeners"] == 0  # the clean server disposed both subscriptions


def test_refused_init_and_a_failed_subscription_name_the_servers_answer(gql_server):
    user = RecordingUser()
    plan_for(gql_server.url, [SUBSCRIBE], token="stolen").run_cycle(user, url=gql_server.url)
    assert user.outcome() == {
        "connect": "graphql-transport-ws connection_init refused: "
        "closed by server (code 4403, Forbidden: invalid token)"
    }
    user = RecordingUser()
    plan_for(gql_server.url, [{"name": "bad", "subscribe": "subscription { nope }", "expect_next": {}}]).run_cycle(
        user, url=gql_server.url
    )
    assert user.outcome()["bad"].startswith("bad: subscription '1' failed: ")
    assert "Cannot query field" in user.outcome()["bad"]


def test_a_server_that_does_not_speak_the_subprotocol_fails_the_connect(open_chat_server):
    user = RecordingUser()
    plan_for(open_chat_server.url, [SUBSCRIBE]).run_cycle(user, url=open_chat_server.url)
    assert "did not accept the subprotocol graphql-transport-ws" in user.outcome()["connect"]


def test_pings_are_answered_through_a_wait_and_the_hold(gql_server):
    """The server pings every second and closes (4408) a connection that left a ping unanswered."""
    silent = WebSocketClient(gql_server.url, timeout=10, subprotocols=["graphql-transport-ws"])
    silent.connect()
    silent.send(json.dumps({"type": "connection_init", "payload": {"token": "tok-silent"}}))
    user = RecordingUser()
    plan_for(gql_server.url, [SUBSCRIBE, {"wait": "3s"}, POST_STEP, BROADCAST], hold="3s").run_cycle(
        user, url=gql_server.url
    )
    assert user.outcome() == {"connect": None, "subscribe": None, "post": None, "broadcast": None, "close": None}
    stats = gql_server.stats()
    assert stats["pongs"] >= 4 and stats["pingTimeouts"] == 1, stats  # ours answered; the silent control was closed
    silent.abort()


def test_code_scenario_subscribes_and_receives(gql_server, tmp_path):
    (tmp_path / "gql.py").write_text(
        "ROOM = 'subscription ($r: String!) { room(name: $r) { kind text } }'\n"
        "def scenario(conn, ctx):\n"
        "    with ctx.step('subscribe'):\n"
        "        conn.subscribe('room', ROOM, {'r': 'lobby'})\n"
        "        assert conn.recv_next('room')['data']['room']['kind'] == 'joined'\n"
        "    ctx.sleep(2.5)\n"
        "    conn.subscribe('p', 'mutation { post(room: \"lobby\", text: \"yo\") }')\n"
        "    with ctx.step('broadcast'):\n"
        "        assert conn.recv_next('room')['data']['room']['text'] == 'yo'\n"
        "    conn.complete('room')\n"
    )
    plan = build_plan(
        parse_profile(
            {
                "target": {"url": gql_server.url},
                "scenario": {
                    "protocol": "graphql-ws",
                    "auth": {"token": "tok-{user_id}"},
                    "file": str(tmp_path / "gql.py"),
                },
            }
        )
    )
    user = RecordingUser()
    plan.run_cycle(user, url=gql_server.url)
    assert user.outcome() == {"connect": None, "subscribe": None, "broadcast": None, "close": None}


def test_graphql_profile_gives_per_step_statistics(tmp_path):
    out = tmp_path / "gql"
    result = soak(
        "run",
        str(ROOT / "profiles" / "graphql.toml"),
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
    for step in ("connect", "subscribe", "post", "broadcast", "close"):
        assert by_name[step]["requests"] > 20, (step, by_name.get(step))
        assert by_name[step]["failures"] == 0, stats["errors"]


@pytest.mark.slow
def test_graphql_leaky_profile_is_a_leak_naming_the_listener_line(tmp_path):
    """`make soak PROFILE=profiles/graphql-leaky.toml`, shortened: LEAK, and memray names Broker.add."""
    source = (ROOT / "runner" / "targets" / "graphql_subs.py").read_text().splitlines()
    line = next(i for i, text in enumerate(source, start=1) if "listener = Listener(user, room, asyncio.Queue(" in text)
    out = tmp_path / "leaky"
    result = soak(
        "run",
        str(ROOT / "profiles" / "graphql-leaky.toml"),
        "--duration",
        "30s",
        "--quiet",
        "--out",
        str(out),
        timeout=400,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdict"] == "leak" and summary["load"]["errors"] == 0
    top = summary["sites"][0]
    assert top["location"] == f"runner/targets/graphql_subs.py:{line}" and top["function"] == "add", summary["sites"][
        :3
    ]
    assert 4096 < top["bytes_per_connection"] < 9000  # 4096 B of state + the listener, its queue and dict entry
