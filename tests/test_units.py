"""runner.units: the one parser and formatter of durations and sizes."""

from __future__ import annotations

import math

import pytest

from runner.errors import ProfileError
from runner.units import format_bytes, format_duration, format_eta, parse_duration


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("90s", 90),
        ("10m", 600),
        ("8h", 28800),
        ("1h30m", 5400),
        ("500ms", 0.5),
        ("0.5s", 0.5),
        (30, 30),
        ("2.5", 2.5),
        ("1d", 86400),
    ],
)
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["10 minutes", "abc", "", "-5s", "5x", True, [1], "m"])
def test_bad_durations_name_the_key(text):
    with pytest.raises(ProfileError, match="load.duration"):
        parse_duration(text, key="load.duration")


def test_format_duration_round_trips():
    for seconds in (0.5, 59, 90, 3600, 5400):
        assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value, text",
    [
        (0, "0 B"),
        (0.32, "0.32 B"),
        (32, "32 B"),
        (2049, "2.0 KB"),
        (1536, "1.5 KB"),
        (-6, "-6 B"),
        (3.2 * 2**30, "3.2 GB"),
        (2**41, "2.0 TB"),
        (None, "-"),
        (math.inf, "unbounded"),
        (-math.inf, "-unbounded"),
    ],
)
def test_format_bytes(value, text):
    assert format_bytes(value) == text


def test_format_eta_picks_a_unit_a_person_reads():
    assert [format_eta(s) for s in (0.2, 40, 720, 12600)] == ["1 s", "40 s", "12 min", "3.5 h"]
