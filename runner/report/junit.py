"""junit.xml: the verdict as test results, so CI systems show a leak as a failed test (pure).

One ``<testsuite>`` per run, named after the profile:

- one test case per judged metric (``rss bytes per connection`` ...): a ``<failure>``
  when the metric leaks (message = the metric's reason), ``<skipped>`` when the data
  could not decide (the exit code, 4, still fails the pipeline), passed otherwise;
- ``run completed``: an ``<error>`` when the run itself failed (target died, never
  started, load generator failed), with the reasons;
- one ``<metric> trend`` case per regression flagged against the run history: a
  ``<failure>`` when ``history.fail_on_regression`` made it fail the run, otherwise a
  passed case whose ``<system-err>`` carries the warning.

Every string comes from :func:`runner.redact.redact_text` and has the characters XML
cannot hold removed; ElementTree does the escaping.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any, Mapping

from ..redact import redact_text

__all__ = ["render_junit"]

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _text(value: Any) -> str:
    """Outside text made safe for XML and free of secrets."""
    return _NOT_XML.sub("\ufffd", redact_text(str(value)))


def _duration(summary: Mapping[str, Any]) -> float:
    phases = [p for p in summary.get("phases") or [] if p.get("start") is not None]
    if not phases:
        return 0.0
    end = phases[-1].get("end") if phases[-1].get("end") is not None else phases[-1]["start"]
    return max(0.0, float(end) - float(phases[0]["start"]))


def render_junit(summary: Mapping[str, Any]) -> str:
    """The JUnit XML document of one run's summary."""
    profile = _text(summary.get("profile") or "run")
    classname = f"soak.{profile}"
    cases: list[ET.Element] = []
    counts = {"failures": 0, "errors": 0, "skipped": 0}

    run_case = ET.Element("testcase", name="run completed", classname=classname, time=f"{_duration(summary):.3f}")
    if summary.get("verdict") == "error":
        reasons = summary.get("reasons") or ["the run failed"]
        error = ET.SubElement(run_case, "error", message=_text(reasons[0]), type="run_error")
        error.text = "\n".join(_text(r) for r in reasons)
        counts["errors"] += 1
    out = ET.SubElement(run_case, "system-out")
    load = summary.get("load") or {}
    lines = [f"verdict: {summary.get('verdict')}"] + [f"reason: {_text(r)}" for r in summary.get("reasons") or []]
    lines += [f"note: {_text(n)}" for n in summary.get("notes") or []]
    lines.append(
        f"connections closed: {load.get('connections_closed')}, peak open: {load.get('peak_concurrent')}, errors: "
        f"{load.get('errors')}"
    )
    out.text = "\n".join(lines)
    cases.append(run_case)

    for name, metric in (summary.get("metrics") or {}).items():
        case = ET.Element(
            "testcase",
            name=f"{_text(name)} bytes per connection"
            if metric.get("unit", "bytes") == "bytes"
            else f"{_text(name)} per connection",
            classname=classname,
            time="0",
        )
        reason = _text(metric.get("reason") or metric.get("verdict"))
        if metric.get("verdict") == "leak":
            failure = ET.SubElement(case, "failure", message=reason, type="leak")
            failure.text = _figures(metric)
            counts["failures"] += 1
        elif metric.get("verdict") in ("inconclusive", "error"):
            ET.SubElement(case, "skipped", message=reason)
            counts["skipped"] += 1
        else:
            ET.SubElement(case, "system-out").text = reason
        cases.append(case)

    trend = summary.get("trend") or {}
    for regression in trend.get("regressions") or []:
        case = ET.Element("testcase", name=f"{_text(regression.get('metric'))} trend", classname=classname, time="0")
        message = _text(regression.get("message"))
        if trend.get("fail_on_regression"):
            ET.SubElement(case, "failure", message=message, type="regression").text = message
            counts["failures"] += 1
        else:
            ET.SubElement(case, "system-err").text = f"warning: {message}"
        cases.append(case)

    suite = ET.Element(
        "testsuite",
        name=f"soak {profile}",
        tests=str(len(cases)),
        failures=str(counts["failures"]),
        errors=str(counts["errors"]),
        skipped=str(counts["skipped"]),
        time=f"{_duration(summary):.3f}",
        timestamp=_text(summary.get("started_at") or ""),
    )
    suite.extend(cases)
    suites = ET.Element(
        "testsuites",
        name="soak-runner",
        tests=str(len(cases)),
        failures=str(counts["failures"]),
        errors=str(counts["errors"]),
        skipped=str(counts["skipped"]),
        time=f"{_duration(summary):.3f}",
    )
    suites.append(suite)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def _figures(metric: Mapping[str, Any]) -> str:
    keys = (
        "slope_per_connection",
        "ci_low",
        "ci_high",
        "budget_per_connection",
        "slope_per_hour",
        "samples_used",
        "window",
    )
    return "\n".join(f"{key}: {metric.get(key)}" for key in keys if key in metric)
