"""A real soak of the bundled leaky server (real Locust, psutil, 127.0.0.1) ends with a
report that says what leaked and how fast, a failing junit.xml, and a row in the history."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from runner.finish import finish_run
from runner.history import History
from tests.conftest import soak

PROFILE = """
name = "e2e-report"
[target]
command = "{python} -m runner.targets.leaky --port {port} --leak-bytes 4096"
memray = false
[load]
users = 30
spawn_rate = 30
duration = "12s"
[phases]
baseline = "2s"
drain = "5s"
cooldown = "2s"
[history]
path = "HISTORY"
"""


@pytest.mark.slow  # ~50 s of real churn; the default suite covers the same outputs from saved run folders
def test_real_leaky_run_report_junit_and_history(tmp_path):
    history = tmp_path / "history.sqlite"
    profile = tmp_path / "e2e.toml"
    profile.write_text(PROFILE.replace("HISTORY", str(history)))
    out = tmp_path / "run"
    result = soak("run", str(profile), "--out", str(out), "--quiet")
    assert result.returncode == 1, result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdict"] == "leak" and summary["schema_version"] >= 2
    assert summary["trend"]["database"] == str(history) and summary["trend"]["previous_runs"] == 0

    suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
    assert suite.get("name") == "soak e2e-report" and int(suite.get("failures")) >= 1
    failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert any(name.startswith(("rss", "uss")) for name in failed)

    html = (out / "report.html").read_text()
    banner = html[html.index('<header class="banner leak"') : html.index("</header>")]
    assert "per connection" in banner
    assert "listening on ws://127.0.0.1:" in html  # the target's log, at the end
    assert all(f'id="{chart}-' in html for chart in ("memory", "slope", "connections", "latency", "resources"))

    with History(history) as db:
        (row,) = db.runs("e2e-report")
    assert row["verdict"] == "leak" and row["cycles"] == summary["load"]["connections_closed"] > 200
    assert row["metrics"]["rss"]["slope_per_connection"] == summary["metrics"]["rss"]["slope_per_connection"]

    # re-judging the folder (what `soak analyze` does) keeps one history row for it
    assert finish_run(out)["verdict"] == "leak"
    with History(history) as db:
        assert len(db.runs("e2e-report")) == 1
