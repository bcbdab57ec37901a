"""Soaks of servers soak cannot see as a process: sampled only through their own /metrics page,
a real Prometheus server, or a cgroup made here. psutil is never used by these runs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Server, soak
from tests.sampling._remote import FaultyMetrics, prometheus_binary, prometheus_server, wait_for_series
from tests.sampling.test_sources import _make_cgroup, _remove_cgroup

#: Short phases: a 4 KB/connection leak shows in RSS within a few thousand cycles.
SHORT = """
[load]
users = 40
spawn_rate = 40
duration = "{duration}"
[phases]
baseline = "2s"
drain = "5s"
cooldown = "2s"
[sampling]
interval = "0.5s"
"""

LEAK_BYTES = "4096"


def _profile(tmp_path: Path, extra: str = "", duration: str = "12s") -> Path:
    path = tmp_path / "remote.toml"
    path.write_text(SHORT.format(duration=duration) + extra)
    return path


def _results(out: Path) -> tuple[dict, list[dict]]:
    summary = json.loads((out / "summary.json").read_text())
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return summary, samples


def _assert_no_psutil(samples: list[dict], source: str) -> None:
    assert all(s["uss"] is None and s["cpu"] is None for s in samples)  # psutil's figures: never taken
    steady = [s for s in samples if s["phase"] == "steady"]
    assert steady and all(s["sources"]["rss"] == source for s in steady)


@pytest.fixture
def leaky_metrics_server():
    server = Server("runner.targets.metrics_echo", "--leak-bytes", LEAK_BYTES)
    yield server
    server.stop()


def test_url_and_metrics_url_alone_find_a_leak_through_scrape_failures(tmp_path, leaky_metrics_server):
    """Nothing started or stopped; the page returns garbage, hangs, and goes away mid-run."""
    server = leaky_metrics_server
    faulty = FaultyMetrics(
        f"http://127.0.0.1:{server.port}/metrics",
        {"garbage": range(12, 15), "slow": range(15, 18), "down": range(18, 19)},
        slow_seconds=3.0,
    )
    out = tmp_path / "run"
    try:
        result = soak(
            "run", str(_profile(tmp_path)), "--url", server.url, "--metrics-url", faulty.url, "--out", str(out)
        )
    finally:
        faulty.stop()
    assert result.returncode == 1, result.stdout + result.stderr
    assert faulty.served["garbage"] == 3 and faulty.served["slow"] == 3 and faulty.served["down"] == 1
    assert server.process.poll() is None  # soak did not stop a server it did not start
    summary, samples = _results(out)
    assert summary["verdict"] == "leak" and summary["schema_version"] >= 3
    assert summary["metrics"]["rss"]["source"] == "metrics_url"
    assert summary["metrics"]["rss"]["series"] == "process_resident_memory_bytes"
    assert summary["target"]["pid"] is None and summary["target"]["started_by_runner"] is False
    _assert_no_psutil([s for s in samples if "source_errors" not in s], "metrics_url")
    failed = [s for s in samples if "source_errors" in s]
    assert all(s["rss"] is None for s in failed)  # a failed scrape is a gap, never an old value
    reasons = " | ".join(summary["sources"]["metrics_url"]["reasons"])
    assert "ValueError" in reasons  # garbage
    assert "timed out" in reasons or "no answer within" in reasons  # slow
    assert "refused" in reasons.lower()  # gone
    errors = summary["sources"]["metrics_url"]["errors"]
    assert errors == len(failed) >= 7
    assert summary["metrics"]["rss"]["gaps"]["errors"] >= 7
    assert any("sampling: metrics_url could not be read" in note for note in summary["notes"])
    report = (out / "report.html").read_text()
    assert "metrics_url" in report and "process_resident_memory_bytes" in report


@pytest.mark.slow
def test_clean_started_target_sampled_only_through_its_metrics_page(tmp_path):
    out = tmp_path / "run"
    result = soak(
        "run",
        str(_profile(tmp_path)),
        "--target",
        "{python} -m runner.targets.metrics_echo --port {port}",
        "--metrics-url",
        "http://127.0.0.1:{port}/metrics",
        "--no-memray",
        "--out",
        str(out),
    )
    assert result.returncode in (0, 4), result.stdout + result.stderr
    summary, samples = _results(out)
    assert summary["verdict"] in ("pass", "inconclusive")
    assert summary["metrics"]["rss"]["verdict"] != "leak" and summary["metrics"]["fds"]["verdict"] == "pass"
    assert {m["source"] for m in summary["metrics"].values()} == {"metrics_url"}
    _assert_no_psutil(samples, "metrics_url")
    assert summary["sources"]["metrics_url"]["errors"] == 0


def _prometheus_profile(tmp_path: Path, prometheus: str, duration: str) -> Path:
    return _profile(
        tmp_path,
        f"""
[sampling.prometheus]
url = "{prometheus}"
queries = {{ rss = 'process_resident_memory_bytes{{job="soak"}}', fds = 'sum(process_open_fds{{job="soak"}})' }}
""",
        duration=duration,
    )


def _prometheus_run(tmp_path: Path, leak_bytes: str) -> tuple[subprocess.CompletedProcess[str], dict, list[dict]]:
    server = Server("runner.targets.metrics_echo", "--leak-bytes", leak_bytes)
    out = tmp_path / "run"
    try:
        with prometheus_server([f"127.0.0.1:{server.port}"], scrape_interval="1s") as prometheus:
            wait_for_series(prometheus, 'process_resident_memory_bytes{job="soak"}')
            profile = _prometheus_profile(tmp_path, prometheus, "15s")
            result = soak("run", str(profile), "--url", server.url, "--out", str(out))
    finally:
        server.stop()
    summary, samples = _results(out)
    return result, summary, samples


needs_prometheus = pytest.mark.skipif(
    prometheus_binary() is None,
    reason="the prometheus binary is not installed (Debian package prometheus; .ci/run installs it)",
)


@pytest.mark.slow  # the default suite covers this path elsewhere; make test-slow runs it
@needs_prometheus
def test_leak_found_through_promql_queries_of_a_real_prometheus(tmp_path):
    result, summary, samples = _prometheus_run(tmp_path, LEAK_BYTES)
    assert result.returncode == 1, result.stdout + result.stderr
    assert summary["verdict"] == "leak" and summary["metrics"]["rss"]["verdict"] == "leak"
    assert summary["metrics"]["rss"]["source"] == "prometheus"
    assert summary["metrics"]["rss"]["series"] == 'process_resident_memory_bytes{job="soak"}'
    _assert_no_psutil(samples, "prometheus")


@pytest.mark.slow
@needs_prometheus
def test_clean_server_passes_through_promql_queries_of_a_real_prometheus(tmp_path):
    result, summary, samples = _prometheus_run(tmp_path, "0")
    assert result.returncode in (0, 4), result.stdout + result.stderr
    assert summary["metrics"]["rss"]["verdict"] != "leak" and summary["metrics"]["fds"]["verdict"] == "pass"
    _assert_no_psutil(samples, "prometheus")


def _cgroup_run(tmp_path: Path, leak_bytes: str) -> tuple[subprocess.CompletedProcess[str], dict, list[dict]]:
    group = _make_cgroup()
    server = Server("runner.targets.metrics_echo", "--leak-bytes", leak_bytes)
    out = tmp_path / "run"
    try:
        (group / "cgroup.procs").write_text(str(server.process.pid))
        result = soak("run", str(_profile(tmp_path, f'cgroup = "{group}"\n')), "--url", server.url, "--out", str(out))
    finally:
        server.stop()
        _remove_cgroup(group)
    summary, samples = _results(out)
    return result, summary, samples


@pytest.mark.slow
def test_leak_found_from_the_cgroup_of_a_server_alone(tmp_path):
    result, summary, samples = _cgroup_run(tmp_path, LEAK_BYTES)
    assert result.returncode == 1, result.stdout + result.stderr
    assert summary["metrics"]["rss"]["verdict"] == "leak" and summary["metrics"]["rss"]["source"] == "cgroup"
    assert summary["metrics"]["rss"]["series"].startswith("memory.stat")
    _assert_no_psutil(samples, "cgroup")
    assert all(s["procs"] == 1 for s in samples if s["phase"] == "steady")
    assert all(s["cgroup_memory"] >= s["rss"] for s in samples if s["phase"] == "steady")


@pytest.mark.slow
def test_clean_server_passes_from_its_cgroup_alone(tmp_path):
    result, summary, samples = _cgroup_run(tmp_path, "0")
    assert result.returncode in (0, 4), result.stdout + result.stderr
    assert summary["metrics"]["rss"]["verdict"] != "leak" and summary["metrics"]["fds"]["verdict"] == "pass"
    _assert_no_psutil(samples, "cgroup")


def test_a_url_alone_is_a_usage_error_naming_the_missing_source(tmp_path):
    result = soak("run", "--url", "ws://127.0.0.1:1/")
    assert result.returncode == 2
    assert "target.url alone gives nothing to sample" in result.stderr and "--metrics-url" in result.stderr
    assert "Traceback" not in result.stderr
    missing = soak("run", str(_profile(tmp_path, 'cgroup = "/nonexistent/group"\n')), "--url", "ws://127.0.0.1:1/")
    assert missing.returncode == 2 and "sampling.cgroup" in missing.stderr, missing.stderr
