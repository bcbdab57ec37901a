"""The release and nightly profiles: valid, long enough, every key explained; the CI template."""

from __future__ import annotations

import re

from runner.profile import load_profile
from tests.conftest import ROOT


def test_release_and_nightly_profiles_parse_with_the_intended_lengths():
    release = load_profile(ROOT / "profiles" / "release.toml")
    nightly = load_profile(ROOT / "profiles" / "nightly.toml")
    total = release.phases.baseline + release.load.duration + release.phases.drain + release.phases.cooldown
    assert 15 * 60 <= total <= 35 * 60  # at most: it runs until decided
    assert release.load.until_decided and release.load.min_duration >= 60
    assert nightly.load.duration >= 3600
    assert release.history.fail_on_regression is True and nightly.history.record is True


def test_every_key_of_the_long_profiles_is_commented():
    for name in ("release", "nightly"):
        lines = (ROOT / "profiles" / f"{name}.toml").read_text().splitlines()
        for index, line in enumerate(lines):
            if re.match(r"^\s*[a-z_]+\s*=", line):
                previous = lines[index - 1].strip() if index else ""
                assert "#" in line or previous.startswith("#"), f"{name}.toml: {line!r} has no comment"


def test_nightly_workflow_template_runs_the_profile_and_publishes_junit():
    text = (ROOT / ".github" / "workflows" / "nightly-soak.yml").read_text()
    assert "schedule:" in text and "cron:" in text
    assert "soak run profiles/nightly.toml" in text
    assert "upload-artifact" in text and "junit.xml" in text
    assert "SOAK_HISTORY" in text and 'exit "$code"' in text
