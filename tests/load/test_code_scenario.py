"""Scenarios written in Python: named steps in Locust's statistics, the user's traceback for their bugs."""

from __future__ import annotations

import json
import textwrap

import pytest

from runner.load.scenario import ScenarioFileError, build_plan
from runner.profile import load_profile, parse_profile
from tests.conftest import soak
from tests.load.conftest import RecordingUser

GOOD = '''\
"""The documented example (docs/profiles.md): auth, join, one broadcast, leave - against runner.targets.chat."""


def scenario(conn, ctx):
    me = f"user-{ctx.user_id}"
    with ctx.step("auth"):
        conn.send_json({"type": "auth", "user": me, "token": ctx.render("tok-{user_id}-{n}")})
        assert conn.recv_json()["type"] == "welcome"
    room = f"room-{ctx.user_id % 5}"
    with ctx.step("join"):
        conn.send_json({"type": "join", "room": room})
        while conn.recv_json(timeout=5) != {"type": "joined", "room": room, "user": me, "members": ANY}:
            pass
    with ctx.step("broadcast"):
        conn.send_json({"type": "say", "room": room, "text": "hi"})
        while True:
            message = conn.recv_json(timeout=5)
            if message["type"] == "message" and message["from"] == me:
                break
    with ctx.step("leave"):
        conn.send_json({"type": "leave", "room": room})
        while conn.recv_json(timeout=5)["type"] != "left":
            pass


class _Any:
    def __eq__(self, other):
        return True


ANY = _Any()
'''

BUGGY = """\
def helper(ctx):
    return ctx.usr_id  # the bug: a typo


def scenario(conn, ctx):
    conn.send_json({"type": "auth", "user": "u", "token": "t"})
    conn.recv()
    conn.send(str(helper(ctx)))
"""


def _profile(tmp_path, body: str, **scenario) -> str:
    script = tmp_path / "my_scenario.py"
    script.write_text(body)
    profile = tmp_path / "code.toml"
    extra = "".join(f'{key} = "{value}"\n' for key, value in scenario.items())
    profile.write_text(
        textwrap.dedent(
            """\
            [target]
            command = "{python} -m runner.targets.chat --port {port}"
            [load]
            users = 20
            spawn_rate = 20
            duration = "6s"
            [phases]
            baseline = "1s"
            cooldown = "1s"
            [scenario]
            file = "my_scenario.py"
            """
        )
        + extra
    )
    return str(profile)


def test_code_scenario_steps_against_a_real_server(tmp_path, open_chat_server):
    from runner.profile import load_profile

    plan = build_plan(load_profile(_profile(tmp_path, GOOD)))
    user = RecordingUser()
    plan.run_cycle(user, url=open_chat_server.url)
    assert user.outcome() == dict.fromkeys(["connect", "auth", "join", "broadcast", "leave", "close"])


def test_a_failed_assertion_is_a_failed_step_not_a_bug(tmp_path, open_chat_server):
    from runner.profile import load_profile

    body = GOOD.replace(
        'assert conn.recv_json()["type"] == "welcome"', 'assert conn.recv_json()["type"] == "goodbye", "no goodbye"'
    )
    plan = build_plan(load_profile(_profile(tmp_path, body)))
    user = RecordingUser()
    plan.run_cycle(user, url=open_chat_server.url)
    assert user.outcome() == {"connect": None, "auth": "no goodbye"}  # the cycle ends at the failed step
    assert user.counters.errors == 1 and user.counters.closed == 1


@pytest.mark.slow
def test_code_scenario_soak_reports_each_step(tmp_path):
    out = tmp_path / "run"
    result = soak("run", _profile(tmp_path, GOOD), "--no-memray", "--quiet", "--out", str(out))
    assert result.returncode != 3, result.stdout + result.stderr
    stats = {e["name"]: e for e in json.loads((out / "locust_stats.json").read_text())["requests"]}
    for step in ("connect", "auth", "join", "broadcast", "leave", "close"):
        assert stats[step]["requests"] > 20 and stats[step]["failures"] == 0, (step, stats.get(step))


def test_a_bug_in_the_scenario_stops_the_run_with_the_users_traceback_and_exit_3(tmp_path):
    out = tmp_path / "run"
    result = soak("run", _profile(tmp_path, BUGGY), "--no-memray", "--quiet", "--out", str(out))
    assert result.returncode == 3, result.stdout + result.stderr
    script = tmp_path / "my_scenario.py"
    err = result.stderr
    assert f"soak: the scenario in {script} raised an exception (your code, not soak-runner's):" in err
    user_tb = err.split("(your code, not soak-runner's):", 1)[1]
    assert f'File "{script}", line 8, in scenario' in user_tb
    assert f'File "{script}", line 2, in helper' in user_tb
    assert "return ctx.usr_id  # the bug: a typo" in user_tb
    assert "AttributeError: 'ScenarioContext' object has no attribute 'usr_id'" in user_tb
    assert "runner/load" not in user_tb.split("AttributeError")[0]
    assert err.count("Traceback") == 1, "only the user's traceback, once"
    reason = (
        "the load generator failed: the scenario raised AttributeError: "
        "'ScenarioContext' object has no attribute 'usr_id' at my_scenario.py:2 in helper"
    )
    assert reason in result.stdout + result.stderr
    exceptions = json.loads((out / "locust_stats.json").read_text())["exceptions"]
    assert exceptions and f'File "{script}", line 2, in helper' in exceptions[0]["traceback"]
    assert "runner/load" not in exceptions[0]["traceback"]


def test_a_scenario_file_that_cannot_load_is_exit_2_with_its_line(tmp_path):
    result = soak("run", _profile(tmp_path, "def scenario(conn, ctx)\n    pass\n"), "--quiet", timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "scenario file my_scenario.py cannot be loaded: SyntaxError" in lines[0] and "my_scenario.py:1" in lines[0]


@pytest.mark.parametrize(
    "body, message",
    [
        (
            "def run(conn, ctx):\n    pass\n",
            "has no function 'scenario' (define def scenario(conn, ctx), or set scenario.function (functions in the "
            "file: run))",
        ),
        (
            "import json\nVALUE = json.loads('{')\n",
            "cannot be loaded: JSONDecodeError: Expecting property name enclosed in double quotes: line 1 column 2 "
            "(char 1) at my_scenario.py:2 in <module>",
        ),
        (
            "import no_such_module_here\n",
            "cannot be loaded: ModuleNotFoundError: No module named 'no_such_module_here' at my_scenario.py:1 in "
            "<module>",
        ),
    ],
)
def test_load_errors_name_the_users_line(tmp_path, body, message):
    with pytest.raises(ScenarioFileError) as caught:
        build_plan(load_profile(_profile(tmp_path, body)))
    assert message in str(caught.value) and caught.value.exit_code == 2


def test_parse_profile_keeps_function_name(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("def run(conn, ctx):\n    conn.send('x')\n")
    profile = parse_profile(
        {"target": {"command": "x --port {port}"}, "scenario": {"file": str(script), "function": "run"}}
    )
    plan = build_plan(profile)
    assert plan is not None and plan.code is not None and plan.code.__name__ == "run" and plan.steps == ()


def test_abort_ends_the_connection_without_a_closing_handshake(tmp_path):
    import threading

    from websockets.exceptions import ConnectionClosedError

    from runner.profile import load_profile
    from tests.conftest import threaded_server

    endings: list[str] = []

    def handler(ws):
        try:
            for message in ws:
                ws.send(message)
            endings.append("clean")
        except ConnectionClosedError:
            endings.append("dropped")

    body = (
        "def scenario(conn, ctx):\n    conn.send('x')\n    assert conn.recv() == 'x'\n"
        "    if ctx.n == 0:\n        conn.abort()\n"
    )
    plan = build_plan(load_profile(_profile(tmp_path, body)))
    user = RecordingUser()
    with threaded_server(handler) as url:
        plan.run_cycle(user, url=url)  # aborts
        plan.run_cycle(user, url=url)  # returns: the runner closes cleanly
        for _ in range(50):
            if len(endings) == 2:
                break
            threading.Event().wait(0.1)
    assert endings == ["dropped", "clean"]
    assert user.counters.errors == 0 and user.counters.closed == 2
