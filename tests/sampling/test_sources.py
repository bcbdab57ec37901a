"""The remote sampling sources against real endpoints: a prometheus_client page, a failing page,
a real Prometheus server, a cgroup made here."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from runner.errors import UsageError
from runner.sampling.selectors import parse_selector
from runner.sampling.sources import (
    CGROUP_ROOT,
    CgroupSource,
    MetricsUrlSource,
    PrometheusSource,
    resolve_cgroup,
)
from tests.conftest import Server, stop_process

from ._remote import FaultyMetrics, prometheus_binary, prometheus_server, wait_for_series


def test_selectors_name_and_labels():
    assert parse_selector("process_resident_memory_bytes") == ("process_resident_memory_bytes", {})
    assert parse_selector('jvm_memory_used_bytes{area="heap", id="G1 Old Gen"}') == (
        "jvm_memory_used_bytes",
        {"area": "heap", "id": "G1 Old Gen"},
    )
    for bad in ("", "1abc", "x{area=heap}", "x{"):
        with pytest.raises(ValueError):
            parse_selector(bad)


@pytest.fixture(scope="module")
def metrics_server():
    server = Server("runner.targets.metrics_echo")
    yield server
    server.stop()


def test_standard_series_are_mapped_and_named_series_override(metrics_server):
    url = f"http://127.0.0.1:{metrics_server.port}/metrics"
    reading = MetricsUrlSource(url).read()
    assert reading.error is None
    assert reading.series["rss"] == "process_resident_memory_bytes" and reading.values["rss"] > 1e6
    assert reading.series["fds"] == "process_open_fds" and reading.values["fds"] >= 3
    assert reading.values["heap"] is None and reading.values["threads"] is None  # Python exports neither
    names = {"threads": "echo_sessions", "heap": 'python_gc_objects_collected_total{generation="0"}'}
    named = MetricsUrlSource(url, names).read()
    assert named.values["threads"] == 0.0 and named.series["threads"] == "echo_sessions"
    assert named.values["heap"] is not None and named.values["heap"] >= 0
    missing = MetricsUrlSource(url, {"rss": "no_such_series"}).read()
    assert missing.error is None and missing.values["rss"] is None


def test_scrape_failures_are_errors_not_values(metrics_server):
    upstream = f"http://127.0.0.1:{metrics_server.port}/metrics"
    schedule = {"garbage": range(1, 2), "slow": range(2, 3), "down": range(3, 4)}
    faulty = FaultyMetrics(upstream, schedule, slow_seconds=2.0)
    try:
        source = MetricsUrlSource(faulty.url, timeout=0.5)
        assert source.read().error is None
        garbage = source.read()
        assert garbage.error and "ValueError" in garbage.error and garbage.values["rss"] is None
        slow = source.read()
        assert slow.error == "timed out"
        closed = source.read()  # the endpoint goes away while answering this one
        assert closed.error is not None
        deadline = time.monotonic() + 10
        while "refused" not in ((refused := source.read()).error or "").lower() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert refused.error and "refused" in refused.error.lower(), refused.error
        deadline = time.monotonic() + 30
        while (back := source.read()).error is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert back.error is None and back.values["rss"] is not None
    finally:
        faulty.stop()
    gone = MetricsUrlSource(faulty.url, timeout=0.5).read()
    assert gone.error is not None


@pytest.mark.skipif(
    prometheus_binary() is None,
    reason="the prometheus binary is not installed (Debian package prometheus; .ci/run installs it)",
)
def test_promql_queries_against_a_real_prometheus(metrics_server):
    with prometheus_server([f"127.0.0.1:{metrics_server.port}"]) as prometheus:
        wait_for_series(prometheus, 'process_resident_memory_bytes{job="soak"}')
        source = PrometheusSource(
            prometheus,
            {
                "rss": 'process_resident_memory_bytes{job="soak"}',
                "fds": 'sum(process_open_fds{job="soak"})',
                "heap": "no_such_series",
            },
        )
        reading = source.read()
        assert reading.error is None, reading.error
        assert reading.values["rss"] > 1e6 and reading.values["fds"] >= 3
        assert reading.values["heap"] is None  # absent: a gap, not an error
        broken = PrometheusSource(prometheus, {"rss": "sum(("}).read()
        assert broken.error and "failed" in broken.error
    assert PrometheusSource(prometheus, {"rss": "up"}, timeout=0.5).read().error is not None  # the server is gone


def _make_cgroup() -> Path:
    """A new cgroup with memory accounting, or skip saying why.

    cgroup v2: a child of the root (/sys/fs/cgroup). cgroup v1: a child of this process's
    own memory cgroup, so the test stays inside whatever limits the machine puts on it.
    """
    name = f"soak-test-{uuid.uuid4().hex[:24]}"
    controllers = CGROUP_ROOT / "cgroup.controllers"
    if controllers.exists():
        if "memory" not in controllers.read_text().split():
            pytest.skip(f"cgroup v2 at {CGROUP_ROOT} has no memory controller")
        parent = CGROUP_ROOT
    else:
        own = [
            line.split(":", 2)[2]
            for line in Path("/proc/self/cgroup").read_text().splitlines()
            if line.split(":", 2)[1] == "memory"
        ]
        if not own or not (CGROUP_ROOT / "memory").is_dir():
            pytest.skip(f"neither cgroup v2 at {CGROUP_ROOT} nor a v1 memory controller at {CGROUP_ROOT / 'memory'}")
        parent = CGROUP_ROOT / "memory" / own[0].lstrip("/")
    group = parent / name
    try:
        group.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot create a cgroup under {parent}: {exc}")
    if controllers.exists() and not (group / "memory.current").exists():
        try:
            (CGROUP_ROOT / "cgroup.subtree_control").write_text("+memory")
        except OSError:
            pass
    if not ((group / "memory.current").exists() or (group / "memory.usage_in_bytes").exists()):
        group.rmdir()
        pytest.skip(f"the memory controller does not account for new cgroups under {parent}")
    return group


#: A process that allocates (and touches) 20 MB once it is in its cgroup (v1 charges memory where it is allocated).
_ALLOCATE_WHEN_TOLD = (
    "import sys, time; sys.stdin.readline(); x = b'\\x01' * 20_000_000; print('ok', flush=True); time.sleep(120)"
)


def test_cgroup_memory_threads_fds_of_a_process_moved_into_it():
    group = _make_cgroup()
    process = subprocess.Popen(
        [sys.executable, "-c", _ALLOCATE_WHEN_TOLD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        (group / "cgroup.procs").write_text(str(process.pid))
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write("go\n")
        process.stdin.flush()
        assert process.stdout.readline().strip() == "ok"
        assert resolve_cgroup(str(group)) == group
        assert resolve_cgroup(str(group.relative_to(CGROUP_ROOT))) == group
        assert resolve_cgroup(group.name.removeprefix("soak-test-")) == group  # found by "container id"
        source = CgroupSource(group)
        reading = source.read()
        assert reading.error is None, reading.error
        assert reading.values["rss"] >= 15e6, reading  # the bytes are anonymous memory charged to the group
        assert reading.values["procs"] == 1 and reading.values["threads"] >= 1 and reading.values["fds"] >= 3
        assert reading.extra["cgroup_memory"] >= reading.values["rss"]
    finally:
        stop_process(process)
        _remove_cgroup(group)
    with pytest.raises(UsageError, match="sampling.cgroup"):
        resolve_cgroup(str(group))


def _remove_cgroup(group: Path) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            group.rmdir()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_unknown_cgroup_and_container_are_usage_errors():
    with pytest.raises(UsageError, match="not a cgroup"):
        resolve_cgroup("/nonexistent/cgroup")
    with pytest.raises(UsageError, match="no cgroup of a container"):
        resolve_cgroup("0123456789abcdef0123")
    assert os.path.isdir("/proc")
