"""junit.xml: a leak is a failed test case whose message is the reason; secrets never appear."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from runner.report.junit import render_junit


def _summary(**over) -> dict:
    summary = {
        "verdict": "leak",
        "profile": "nightly",
        "started_at": "2026-11-28T12:00:00+00:00",
        "reasons": ["rss grew 2.0 KB per connection (95% CI 1.9 KB to 2.1 KB); budget 1.0 KB"],
        "notes": [],
        "load": {"connections_closed": 5000, "peak_concurrent": 200, "errors": 0},
        "phases": [{"name": "baseline", "start": 0.0, "end": 5.0}, {"name": "steady", "start": 5.0, "end": 65.5}],
        "metrics": {
            "rss": {
                "verdict": "leak",
                "unit": "bytes",
                "reason": "rss grew 2.0 KB per connection",
                "slope_per_connection": 2048.0,
            },
            "heap": {"verdict": "inconclusive", "unit": "bytes", "reason": "heap cannot be told from its budget yet"},
            "fds": {"verdict": "pass", "unit": "count", "reason": "fds stayed flat"},
        },
    }
    summary.update(over)
    return summary


def test_a_leak_is_a_failed_test_case_with_the_reason_as_message():
    root = ET.fromstring(render_junit(_summary()))
    suite = root.find("testsuite")
    assert suite.get("name") == "soak nightly" and suite.get("tests") == "4"
    assert (suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("1", "0", "1")
    assert float(suite.get("time")) == 65.5
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    failure = cases["rss bytes per connection"].find("failure")
    assert failure.get("message") == "rss grew 2.0 KB per connection" and failure.get("type") == "leak"
    assert "slope_per_connection: 2048.0" in failure.text
    assert cases["heap bytes per connection"].find("skipped") is not None
    assert cases["fds per connection"].find("failure") is None and cases["fds per connection"].find("skipped") is None
    assert cases["run completed"].find("error") is None


def test_a_run_error_is_an_error_case():
    root = ET.fromstring(
        render_junit(
            _summary(
                verdict="error", metrics={}, reasons=["the target died during the steady phase (killed by SIGKILL)"]
            )
        )
    )
    error = root.find("testsuite/testcase[@name='run completed']/error")
    assert error is not None and "SIGKILL" in error.get("message")
    assert root.get("errors") == "1" and root.get("failures") == "0"


def test_regression_fails_only_when_the_profile_says_so():
    regression = {
        "metric": "rss",
        "message": "rss per connection rose to 300 B (CI 280 B to 320 B) from 40 B in the previous 5 passing runs",
    }
    warn = ET.fromstring(
        render_junit(
            _summary(verdict="pass", metrics={}, trend={"regressions": [regression], "fail_on_regression": False})
        )
    )
    case = warn.find("testsuite/testcase[@name='rss trend']")
    assert case.find("failure") is None and "rose to 300 B" in case.find("system-err").text
    fail = ET.fromstring(
        render_junit(
            _summary(verdict="leak", metrics={}, trend={"regressions": [regression], "fail_on_regression": True})
        )
    )
    assert fail.find("testsuite/testcase[@name='rss trend']/failure").get("type") == "regression"


def test_outside_text_is_redacted_and_made_xml_safe():
    reason = "connect failed: wss://alice:hunter22@127.0.0.1:9/ws?token=abcdef123456 \x00\x1b[31m <b>&"
    text = render_junit(_summary(verdict="error", metrics={}, reasons=[reason], notes=["API_TOKEN=s3cr3tvalue"]))
    root = ET.fromstring(text)  # parses: control characters were replaced
    assert "hunter22" not in text and "abcdef123456" not in text and "s3cr3tvalue" not in text
    message = root.find("testsuite/testcase/error").get("message")
    assert "<b>&" in message  # escaped in the file, intact once parsed
