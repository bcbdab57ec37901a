"""report.html: what leaked, how fast and where, at the top; outside text escaped and redacted."""

from __future__ import annotations

import json
import re

import pytest

from bench.report_bench import synthetic_run
from runner.finish import finish_run
from runner.report import render_report
from runner.results import RunRecord

SITE = {
    "location": "myapp/sessions.py:40",
    "function": "make_session",
    "bytes_per_connection": 2040.0,
    "live_bytes_end": 3_000_000,
    "share": 0.97,
}
LOG = [
    "listening on ws://127.0.0.1:40000/",
    "<script>alert('pwned')</script>",
    "connecting to wss://bob:hunter22@db.internal/feed?token=abc123secret",
    "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig",
]


@pytest.fixture(scope="module")
def leaky_folder(tmp_path_factory):
    """A synthetic leaking run, finished once (analysis, summary, junit, report, history) for the module."""
    tmp = tmp_path_factory.mktemp("html")
    folder = synthetic_run(
        tmp / "run", samples=1200, leak_bytes=2048, log_lines=LOG, sites=[SITE], profile_name="release"
    )
    summary = finish_run(folder, history=tmp / "h.sqlite")
    assert summary["verdict"] == "leak"
    return folder


def test_report_of_a_leak_says_what_how_fast_and_where(leaky_folder):
    html = (leaky_folder / "report.html").read_text()
    banner = html[html.index('<header class="banner leak"') : html.index("</header>")]
    assert "LEAK" in banner and "per connection" in banner  # how fast, in the first sentence
    assert "myapp/sessions.py:40" in banner and "make_session" in banner  # where
    top = html[: html.index('id="charts"')]
    assert re.search(
        r"class=\"card leak\">\s*<div class=\"label\">\w+ per connection</div>\s*<div class=\"value\">2\.0 KB", top
    )
    for section in ("memory-", "slope-", "connections-", "latency-", "resources-"):
        assert f'id="{section}' in html  # every chart is inline SVG
    assert "WS connect" in html and "Resolved profile" in html and "fd limit" in html
    assert "97.0%" in html  # the site's share


def test_outside_text_is_escaped_and_secrets_redacted(leaky_folder):
    html = (leaky_folder / "report.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;alert(" in html  # shown as text
    for secret in ("hunter22", "abc123secret", "eyJhbGciOiJIUzI1NiJ9"):
        assert secret not in html
    assert "wss://***@db.internal" in html


def test_the_page_references_nothing_outside_itself(leaky_folder):
    html = (leaky_folder / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I)
    assert not re.search(r"@import|url\(\s*['\"]?https?:", html, re.I)
    assert "default-src 'none'" in html  # and the browser is told to load nothing


def test_flamegraph_link_when_memray_made_one(leaky_folder):
    record = RunRecord.load(leaky_folder)
    summary = {
        "verdict": "leak",
        "reasons": ["heap grew"],
        "profile": "p",
        "metrics": {},
        "load": {},
        "sites": [SITE],
        "target": {"pid": 1},
        "phases": [],
        "memray": {"flamegraph": "memray/flamegraph.html"},
    }
    html = render_report(_without_samples(record), summary)
    assert '<a href="memray/flamegraph.html">' in html


def test_a_run_without_samples_still_renders(tmp_path):
    folder = synthetic_run(tmp_path / "empty", samples=0, log_lines=[])
    (folder / "run.json").write_text(
        json.dumps(
            {
                "error": {"kind": "target_error", "message": "the target did not start: exit code 1"},
                "target": {"pid": 1, "exit_code": 1, "crashed": False},
                "phases": [],
            }
        )
    )
    summary = finish_run(folder, history=tmp_path / "h.sqlite")
    html = (folder / "report.html").read_text()
    assert summary["verdict"] == "error" and "ERROR" in html and "did not start" in html
    assert "No memory samples were recorded." in html


def _without_samples(record: RunRecord) -> RunRecord:
    from dataclasses import replace

    return replace(record, samples=record.samples[:50])


def test_soak_report_and_analyze_rewrite_from_the_folder(leaky_folder, tmp_path, capsys):
    from runner.cli import main
    from runner.history import History

    (leaky_folder / "report.html").unlink()
    assert main(["report", str(leaky_folder)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {leaky_folder / 'report.html'}"
    html = (leaky_folder / "report.html").read_text()
    assert '<header class="banner leak"' in html and "&lt;script&gt;" in html
    other = tmp_path / "other.sqlite"
    assert main(["analyze", str(leaky_folder), "--quiet", "--history", str(other)]) == 1
    with History(other) as db:
        assert [r["verdict"] for r in db.runs("release")] == ["leak"]


def test_no_sites_says_why(leaky_folder):
    record = _without_samples(RunRecord.load(leaky_folder))
    base = {
        "reasons": ["rss grew"],
        "profile": "p",
        "metrics": {},
        "load": {},
        "sites": [],
        "target": {"pid": 1},
        "phases": [],
    }
    tracked = render_report(record, {**base, "verdict": "leak", "memray": {"enabled": True, "status": "complete"}})
    assert "no Python allocation site grew per connection" in tracked and "outside the Python heap" in tracked
    untracked = render_report(record, {**base, "verdict": "leak"})
    assert "not tracked with memray" in untracked
