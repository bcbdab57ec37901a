"""`soak run` on the bundled Java servers at the JVM's default heap, end to end.

Real Locust, a real JVM started as `java Server.java`, the runtime heap tier attached
over HotSpot's attach socket: the clean server passes on its heap after GC although its
RSS grows; the leaky one is LEAK, naming ``Server$ConnState`` (and, with JFR, the line
that allocates it) at the bytes per connection it really keeps.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT, soak

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="needs a JDK (.ci/run installs one)")

SOURCE = ROOT / "runner" / "targets" / "java" / "Server.java"
#: Live heap one leaked connection keeps: ConnState (40 B) + its 1 KB buffer (1,040 B) + the peer
#: string (~80 B) + the map's node and Long key (~56 B); the probe test measures 1.1-1.3 KB.
TRUTH = 1200

PROFILE = """
name = "{name}"
[target]
command = "java {source} --port {{port}}{leak}"
ready_timeout = "120s"
[load]
users = 20
spawn_rate = 40
duration = "25s"
messages = 1
[phases]
baseline = "2s"
drain = "10s"
cooldown = "2s"
[analysis]
budget_bytes_per_connection = 64
rss_budget_bytes_per_connection = 1024
"""


def _run(tmp_path: Path, leak: bool) -> tuple[int, dict, str]:
    name = "java-leaky" if leak else "java"
    profile = tmp_path / f"{name}.toml"
    profile.write_text(PROFILE.format(name=name, source=SOURCE, leak=" --leak" if leak else ""), encoding="utf-8")
    out = tmp_path / "run"
    result = soak("run", str(profile), "--out", str(out), "--quiet", timeout=400, cwd=tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    return result.returncode, summary, result.stdout + result.stderr


@pytest.mark.slow  # ~50 s; the leaky run below stays in the default suite
def test_clean_java_server_passes_on_its_heap_at_the_default_heap(tmp_path: Path) -> None:
    code, summary, output = _run(tmp_path, leak=False)
    assert code == 0, output
    assert summary["verdict"] == "pass", summary["reasons"]
    assert summary["runtime"]["enabled"] and summary["runtime"]["runtime"] == "jvm", summary.get("runtime")
    heap = summary["metrics"]["heap"]
    assert heap["samples_used"] >= 6, heap
    assert not any(s.get("class") == "Server$ConnState" for s in summary["sites"]), summary["sites"]
    assert all(s["class"] == s["location"] for s in summary["sites"])


def test_leaky_java_server_is_leak_naming_the_class_its_line_and_bytes(tmp_path: Path) -> None:
    code, summary, output = _run(tmp_path, leak=True)
    assert code == 1, output
    assert summary["verdict"] == "leak", summary["reasons"]
    state = next((s for s in summary["sites"] if s.get("class") == "Server$ConnState"), None)
    assert state is not None, summary["sites"]
    assert state["runtime"] == "jvm"
    assert "leak site: Server$ConnState" in output, output
    assert 0.5 * TRUTH <= state["bytes_per_connection"] <= 1.5 * TRUTH, state
    if state.get("allocated_at"):  # JFR sampled the leak (likely, not certain, in a short run)
        lines = SOURCE.read_text().splitlines()
        allocating = {
            f"Server.java:{i + 1}"
            for i, line in enumerate(lines)
            if "new ConnState(" in line or "new byte[1024]" in line
        }
        assert state["allocated_at"] in allocating, state
        assert state["root"] == "static field Server.STATES", state
        assert not any(frame.split()[0].split(".")[0].isdigit() for frame in state["stack"]), state  # no lambda frames
    heap = summary["metrics"]["heap"]
    assert heap["slope_per_connection"] > 0.5 * TRUTH, heap
