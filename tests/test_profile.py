from __future__ import annotations

import pytest

from runner.errors import ProfileError
from runner.profile import Profile, load_profile, parse_profile

MINIMAL = {"target": {"command": "{python} -m runner.targets.echo --port {port}"}}


def test_defaults_and_default_url():
    profile = parse_profile(MINIMAL, name="p")
    assert profile.target.command == ("{python}", "-m", "runner.targets.echo", "--port", "{port}")
    assert profile.target.url == "ws://127.0.0.1:{port}/"
    assert profile.target.is_python and profile.target.memray is None
    assert profile.load.users == 200 and profile.analysis.budget_bytes_per_connection == 32


def test_command_as_list_and_overrides():
    data = {"target": {"command": ["node", "server.js", "--port", "{port}"]}, "load": {"users": 10}}
    profile = parse_profile(data, overrides={"load": {"users": "25", "duration": "1m", "workers": None}})
    assert profile.load.users == 25 and profile.load.duration == 60
    assert not profile.target.is_python


def test_unknown_key_names_the_closest_valid_one():
    with pytest.raises(ProfileError, match=r"load\.userz.*did you mean 'users'"):
        parse_profile({**MINIMAL, "load": {"userz": 3}})
    with pytest.raises(ProfileError, match=r"unknown profile key 'lod'.*'load'"):
        parse_profile({**MINIMAL, "lod": {}})


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("load", "users", 0, "at least 1"),
        ("load", "users", -5, "at least 1"),
        ("load", "users", "many", "whole number"),
        ("load", "users", 1.5, "whole number"),
        ("load", "spawn_rate", 0, "greater than 0"),
        ("load", "duration", "10 minutes", "not a duration"),
        ("sampling", "interval", "0s", "longer than zero"),
        ("target", "memray", "maybe", "true or false"),
        ("analysis", "alpha", True, "number"),
    ],
)
def test_bad_values(section, key, value, message):
    data = {**MINIMAL, section: {**MINIMAL.get(section, {}), key: value}}
    with pytest.raises(ProfileError, match=message):
        parse_profile(data)


@pytest.mark.parametrize(
    "target, message",
    [
        ({"command": "x --port {port}", "url": "http://127.0.0.1:{port}/"}, "not a WebSocket URL"),
        ({"command": "server --port 9000", "url": "ws://127.0.0.1:{port}/"}, "never receives it"),
        ({"command": "server --port 9000"}, "no {port} placeholder"),
        ({"command": "server --port {prot}"}, "unknown placeholder {prot}"),
        ({"url": "ws://127.0.0.1:{port}/"}, "no target.command"),
        ({"command": ""}, "empty"),
        ({"command": "a 'b"}, "cannot split"),
        ({}, "nothing to soak"),
    ],
)
def test_target_cross_checks(target, message):
    with pytest.raises(ProfileError, match=message):
        parse_profile({"target": target})


def test_load_profile_file_errors(tmp_path):
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[load\nusers = 3")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile(bad)
    with pytest.raises(ProfileError, match="is a folder"):
        load_profile(tmp_path)


def test_bundled_profiles_parse():
    from tests.conftest import ROOT

    for path in sorted((ROOT / "profiles").glob("*.toml")):
        profile = load_profile(path)
        assert profile.name == path.stem or profile.name


def test_profile_round_trips_through_plain_data():
    profile = parse_profile(MINIMAL, name="rt", overrides={"analysis": {"budget_bytes_per_connection": 64}})
    again = Profile.from_dict(profile.to_dict())
    assert again == profile


def test_drop_fraction_is_a_share_for_the_echo_loop_and_scenarios():
    assert (
        parse_profile({"target": {"url": "ws://127.0.0.1:9/"}, "load": {"drop_fraction": 0.1}}).load.drop_fraction
        == 0.1
    )
    with pytest.raises(ProfileError, match=r"load.drop_fraction: must be between 0 and 1, got 1.5"):
        parse_profile({"target": {"url": "ws://127.0.0.1:9/"}, "load": {"drop_fraction": 1.5}})
    url = {"url": "ws://127.0.0.1:9/"}
    scenario = parse_profile({"target": url, "load": {"drop_fraction": 0.1}, "scenario": {"steps": [{"send": "hi"}]}})
    assert scenario.load.drop_fraction == 0.1
    with pytest.raises(ProfileError, match="load.connections_per_user applies to the plain echo loop"):
        parse_profile({"target": url, "load": {"connections_per_user": 2}, "scenario": {"protocol": "socket.io"}})
