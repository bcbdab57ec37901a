"""Profile keys of "run until decided": load.duration = "auto", max_duration, min_duration, stop_on_leak."""

from __future__ import annotations

import pytest

from runner.errors import ProfileError
from runner.profile import Profile, parse_profile
from tests.conftest import soak

MINIMAL = {"target": {"command": "{python} -m runner.targets.echo --port {port}"}}


def _load(**keys: object) -> Profile:
    return parse_profile({**MINIMAL, "load": keys})


def test_auto_plans_max_duration_and_stops_on_leak_by_default():
    load = _load(duration="auto", max_duration="10m", min_duration="30s").load
    assert load.until_decided and load.looks and load.stop_on_leak is True
    assert load.duration == load.max_duration == 600 and load.min_duration == 30
    assert load.planned == "auto (at most 10m)"
    assert _load(duration="AUTO").load.max_duration == 1800  # a release-check default


def test_a_fixed_duration_looks_only_with_stop_on_leak():
    assert not _load(duration="90s").load.looks
    load = _load(duration="8h", stop_on_leak=True).load
    assert load.looks and not load.until_decided and load.duration == 28800
    assert _load(duration="auto", stop_on_leak=False).load.stop_on_leak is False


def test_the_keys_round_trip_through_a_run_folder():
    profile = _load(duration="auto", max_duration="5m")
    assert Profile.from_dict(profile.to_dict()).load == profile.load


@pytest.mark.parametrize(
    "keys, message",
    [
        ({"duration": "sometimes"}, "load.duration: 'sometimes' is not a duration, or \"auto\""),
        ({"duration": "auto", "max_duration": "0s"}, "load.max_duration: must be longer than zero"),
        ({"duration": "auto", "min_duration": "20m", "max_duration": "10m"}, "load.min_duration (20m) must be shorter"),
        ({"duration": "auto", "min_duration": "-1s"}, "load.min_duration"),
        ({"stop_on_leak": "maybe"}, "load.stop_on_leak: expected true or false"),
        ({"max_duartion": "5m"}, "unknown profile key load.max_duartion"),
    ],
)
def test_bad_values_name_the_key(keys, message):
    with pytest.raises(ProfileError) as caught:
        _load(**keys)
    assert message in str(caught.value)


def test_a_bad_value_on_the_command_line_is_one_line_and_exit_2():
    result = soak("run", "--target", "{python} -m runner.targets.echo --port {port}", "--duration", "soon")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "load.duration" in lines[0] and '"auto"' in lines[0], result.stderr
    assert "Traceback" not in result.stderr
