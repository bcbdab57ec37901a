"""[[scenario.auto_reply]]: heartbeats of a protocol without a preset, answered during steps, waits and the hold."""

from __future__ import annotations

import threading
from typing import Any

from websockets.exceptions import ConnectionClosed

from runner.load.scenario import build_plan
from runner.profile import parse_profile
from tests.conftest import threaded_server
from tests.load.conftest import RecordingUser


class Heartbeats:
    """A server that sends "ping" every 0.2 s and echoes everything but "pong", which it counts."""

    def __init__(self) -> None:
        self.pings = 0
        self.pongs: list[str] = []

    def handler(self, ws: Any) -> None:
        closed = threading.Event()

        def beat() -> None:
            while not closed.wait(0.2):
                try:
                    ws.send("ping")
                    self.pings += 1
                except ConnectionClosed:
                    return

        threading.Thread(target=beat, daemon=True).start()
        try:
            for message in ws:
                if str(message).startswith("pong"):
                    self.pongs.append(str(message))
                else:
                    ws.send(f"echo {message}")
        except ConnectionClosed:
            pass
        finally:
            closed.set()


def _plan(url: str, rules: list[dict[str, str]] | None, **scenario: Any):
    if rules:
        scenario["auto_reply"] = rules
    return build_plan(parse_profile({"target": {"url": url}, "load": {"hold": "1s"}, "scenario": scenario}))


STEPS = [
    {"name": "hello", "send": "hello", "expect": "echo hello"},
    {"wait": "1s"},
    {"name": "again", "send": "again {user_id}", "expect_regex": "^echo again"},
]


def test_rules_answer_heartbeats_in_steps_waits_and_the_hold():
    server = Heartbeats()
    with threaded_server(server.handler) as url:
        user = RecordingUser()
        _plan(url, [{"match": "^ping$", "reply": "pong {user_id}"}], steps=STEPS).run_cycle(user, url=url)
    assert user.outcome() == {"connect": None, "hello": None, "again": None, "close": None}
    # ~2 s of pings at 0.2 s: nearly all answered, with the templated reply
    assert len(server.pongs) >= 5 and len(server.pongs) >= server.pings - 2, (server.pings, server.pongs)
    assert set(server.pongs) == {"pong 1"}


def test_without_rules_nothing_answers_and_a_code_scenario_never_sees_a_heartbeat(tmp_path):
    server = Heartbeats()
    with threaded_server(server.handler) as url:
        user = RecordingUser()
        _plan(url, None, steps=STEPS).run_cycle(user, url=url)
        assert user.outcome()["again"] is None and server.pings >= 5 and server.pongs == []
        (tmp_path / "hb.py").write_text(
            "def scenario(conn, ctx):\n"
            "    ctx.sleep(0.5)\n"
            "    conn.send('x')\n"
            "    with ctx.step('echo'):\n"
            "        assert conn.recv(timeout=5) == 'echo x'  # the pings in between were answered, not returned\n"
        )
        user = RecordingUser()
        _plan(url, [{"match": "^ping$", "reply": "pong"}], file=str(tmp_path / "hb.py")).run_cycle(user, url=url)
    assert user.outcome() == {"connect": None, "echo": None, "close": None}
    assert len(server.pongs) >= 3


def test_messages_that_come_during_a_wait_still_reach_the_next_expect():
    server = Heartbeats()
    steps = [{"send": "early"}, {"wait": "1s"}, {"name": "late", "expect": "echo early", "timeout": "2s"}]
    with threaded_server(server.handler) as url:
        user = RecordingUser()
        _plan(url, [{"match": "^ping$", "reply": "pong"}], steps=steps).run_cycle(user, url=url)
    assert user.outcome()["late"] is None and len(server.pongs) >= 3
