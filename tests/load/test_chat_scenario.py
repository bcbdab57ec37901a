"""The chat scenario against the bundled chat server: per-step statistics, identity, the join-path leak."""

from __future__ import annotations

import json

import pytest

from runner.errors import ProfileError
from runner.load.client import HandshakeError, WebSocketClient
from runner.load.scenario import build_plan
from runner.profile import load_profile, parse_profile
from tests.conftest import ROOT, soak
from tests.load.conftest import RecordingUser

SHORT = ("--users", "30", "--spawn-rate", "30", "--duration", "8s", "--no-memray", "--quiet")
STEPS = ("auth", "join", "broadcast", "leave")


def chat_plan(**load):
    data = load_profile(ROOT / "profiles" / "chat.toml").to_dict()
    raw = {"target": {"command": data["target"]["command"]}, "load": {"headers": data["load"]["headers"], **load}}
    steps = __import__("tomllib").loads((ROOT / "profiles" / "chat.toml").read_text())["scenario"]["steps"]
    return build_plan(parse_profile({**raw, "scenario": {"steps": steps}}))


def test_one_cycle_runs_every_step_with_the_users_templated_header(chat_server):
    plan = chat_plan()
    user = RecordingUser()
    for _ in range(2):  # two connections of one user: {n} changes, {user_id} does not
        plan.run_cycle(user, url=chat_server.url)
    assert user.outcome() == {"connect": None, **dict.fromkeys(STEPS), "close": None}
    assert [r["name"] for r in user.requests].count("broadcast") == 4
    assert user.counters.opened == user.counters.closed == 2 and user.counters.errors == 0


def test_the_header_really_reaches_the_server(chat_server):
    # without the header the server refuses the handshake ...
    bare = WebSocketClient(chat_server.url, timeout=5)
    with pytest.raises(HandshakeError, match="401"):
        bare.connect()
    # ... and a header templated for another user fails the auth step: the welcome echoes what arrived
    plan = chat_plan(headers={"X-Soak-User": "someone-else-{user_id}"})
    user = RecordingUser()
    plan.run_cycle(user, url=chat_server.url)
    outcome = user.outcome()
    assert outcome["connect"] is None
    assert 'auth: no a JSON message with type = "welcome", header = "user-{user_id}" within 5s' in outcome["auth"]
    assert "join" not in outcome and user.counters.errors == 1


def test_unknown_placeholders_are_profile_errors():
    with pytest.raises(
        ProfileError, match=r"unknown placeholder \{token\}.*available: \{i\}, \{n\}, \{random\}, \{user_id\}"
    ):
        build_plan(
            parse_profile(
                {"target": {"command": "x --port {port}"}, "load": {"headers": {"Authorization": "Bearer {token}"}}}
            )
        )


def test_credentials_csv_fill_the_identity_and_stay_out_of_error_messages(chat_server, tmp_path):
    (tmp_path / "creds.csv").write_text("username,token\nalice,s3cret-alice-token\nbob,s3cret-bob-token\n")
    profile = parse_profile(
        {
            "target": {"command": "x --port {port}"},
            "load": {"credentials": str(tmp_path / "creds.csv"), "headers": {"X-Soak-User": "{username}"}},
            "scenario": {
                "steps": [
                    {
                        "name": "auth",
                        "send_json": {"type": "auth", "user": "{username}", "token": "{token}"},
                        "expect_json": {"type": "welcome", "header": "{username}"},
                    },
                    {
                        "name": "wrong",
                        "send_json": {"type": "say", "room": "none"},
                        "expect": "{token}",
                        "timeout": "300ms",
                    },
                ]
            },
        }
    )
    plan = build_plan(profile)
    alice, bob = RecordingUser(), RecordingUser()
    plan.run_cycle(alice, url=chat_server.url)
    plan.run_cycle(bob, url=chat_server.url)
    assert alice.outcome()["auth"] is None and bob.outcome()["auth"] is None
    failure = bob.outcome()["wrong"]
    assert "no a message containing '{token}' within 0.3s; 1 other message(s) came" in failure
    assert "s3cret" not in failure


def test_chat_profile_gives_per_step_statistics(tmp_path):
    out = tmp_path / "chat"
    result = soak("run", str(ROOT / "profiles" / "chat.toml"), *SHORT, "--out", str(out))
    assert result.returncode != 3, result.stdout + result.stderr
    stats = json.loads((out / "locust_stats.json").read_text())
    by_name = {entry["name"]: entry for entry in stats["requests"]}
    for step in ("connect", *STEPS, "close"):
        assert by_name[step]["requests"] > 50, (step, by_name.get(step))
        assert by_name[step]["failures"] == 0, stats["errors"]
    assert (
        by_name["broadcast"]["requests"] >= 2 * by_name["leave"]["requests"] - 60
    )  # repeat = 2 (minus cycles cut by the drain)
    summary = json.loads((out / "summary.json").read_text())
    assert set(STEPS) <= set(summary["load"]["latency_ms"])
    # (no verdict here: 8 s of churn is too short to judge; test_clean_chat_is_not_a_leak does, slowly)
    meta = (out / "meta.json").read_text()
    assert "tok-" not in (out / "summary.json").read_text()
    assert "Bearer tok" not in meta, "the Authorization template must not be stored in clear"


@pytest.mark.slow  # the default suite covers this path elsewhere; make test-slow runs it
def test_chat_leaky_profile_is_a_leak(tmp_path):
    out = tmp_path / "leaky"
    result = soak(
        "run",
        str(ROOT / "profiles" / "chat-leaky.toml"),
        *SHORT[:4],
        "--duration",
        "12s",
        "--no-memray",
        "--quiet",
        "--out",
        str(out),
    )
    assert result.returncode == 1, result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdict"] == "leak"
    assert summary["load"]["errors"] == 0
    rss = summary["metrics"]["rss"]
    assert rss["verdict"] == "leak" and rss["slope_per_connection"] > 2048  # 4 KB filed per join, never removed


@pytest.mark.slow
def test_chat_leaky_with_memray_names_the_join_line(tmp_path):
    """`make soak PROFILE=profiles/chat-leaky.toml`, shortened: memray attributes the growth to join()."""
    source = (ROOT / "runner" / "targets" / "chat.py").read_text().splitlines()
    line = next(i for i, text in enumerate(source, start=1) if "MemberProfile(user, room, bytearray(" in text)
    out = tmp_path / "leaky-memray"
    result = soak(
        "run",
        str(ROOT / "profiles" / "chat-leaky.toml"),
        "--duration",
        "30s",
        "--memray",
        "--quiet",
        "--out",
        str(out),
        timeout=400,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["heap"]["verdict"] == "leak"
    top = summary["sites"][0]
    assert top["location"] == f"runner/targets/chat.py:{line}" and top["function"] == "join", summary["sites"][:3]
    assert 3500 < top["bytes_per_connection"] < 6000  # 4096 B bytearray + the profile object and its dict entry
    assert f"leak site: runner/targets/chat.py:{line}" in result.stdout


@pytest.mark.slow
def test_clean_chat_is_not_a_leak(tmp_path):
    """The clean variant, run as long as its profile says (60 s, memray on): the join path frees what it files."""
    out = tmp_path / "clean"
    result = soak("run", str(ROOT / "profiles" / "chat.toml"), "--quiet", "--out", str(out), timeout=500)
    assert result.returncode in (0, 4), result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["load"]["errors"] == 0
    assert not any(
        site["location"].startswith("runner/targets/chat.py") and site.get("over_budget") for site in summary["sites"]
    )
