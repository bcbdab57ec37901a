"""Run until decided, end to end: real soaks with ``--duration auto`` that stop as soon as the verdict is certain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.cli import main
from tests.conftest import soak

#: Small maxima: the runs must decide well before them, and the tests stay short when they do.
PROFILE = """\
[target]
command = "{{python}} -m runner.targets.{module} --port {{port}}{args}"
memray = {memray}
[load]
users = 40
spawn_rate = 40
duration = "auto"
max_duration = "{max_duration}"
[phases]
baseline = "2s"
drain = "10s"
cooldown = "2s"
[sampling]
interval = "0.5s"
"""


def _run(tmp_path: Path, module: str, args: str, max_duration: str, *, memray: bool) -> tuple[int, dict, str]:
    """One real soak of a bundled target with the profile above; (exit code, summary.json, output)."""
    profile = tmp_path / f"{module}.toml"
    text = PROFILE.format(module=module, args=args, max_duration=max_duration, memray=str(memray).lower())
    profile.write_text(text, encoding="utf-8")
    out = tmp_path / "run"
    result = soak("run", str(profile), "--out", str(out), timeout=600)
    summary = json.loads((out / "summary.json").read_text())
    return result.returncode, summary, result.stdout + result.stderr


def _steady_seconds(summary: dict) -> float:
    steady = next(p for p in summary["phases"] if p["name"] == "steady")
    return steady["end"] - steady["start"]


def test_a_leak_stops_the_steady_phase_early_with_leak(tmp_path):
    # psutil's tiers see 2 KB per connection; without memray the test stays short
    code, summary, output = _run(tmp_path, "leaky", " --leak-bytes 2048", "150s", memray=False)
    assert code == 1, output
    assert summary["verdict"] == "leak"
    assert summary["stop_reason"] == "leak"
    assert summary["decided_after_cycles"] > 0
    assert _steady_seconds(summary) < 150 - 5, "the steady phase ran to its maximum"
    assert any(r.startswith("decided after ") and "alpha" in r for r in summary["reasons"]), summary["reasons"]
    decision = summary["decision"]
    assert decision["looks"][-1]["decided"] and decision["looks"][-1]["verdict"] == "leak"
    assert decision["alpha"] == decision["plan"]["alphas"][decision["look"]] < decision["plan"]["alpha"]
    assert "decided: LEAK after" in output
    # soak analyze re-judges the folder at the look's alpha: the same verdict, the same sentence
    assert main(["analyze", str(tmp_path / "run"), "--quiet"]) == 1
    again = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert again["reasons"][-1] == summary["reasons"][-1] and again["stop_reason"] == "leak"


@pytest.mark.slow  # the default suite covers this path elsewhere; make test-slow runs it
def test_a_clean_server_stops_with_pass_before_its_maximum(tmp_path):
    # the heap (memray, live through the looks) is what lets a clean Python server PASS early
    code, summary, output = _run(tmp_path, "echo", "", "240s", memray=True)
    assert code == 0, output
    assert summary["verdict"] == "pass"
    assert summary["stop_reason"] == "pass"
    assert summary["decided_after_cycles"] > 0
    assert _steady_seconds(summary) < 240 - 5
    assert summary["decision"]["looks"][-1]["tiers"]["heap"] == "pass"
