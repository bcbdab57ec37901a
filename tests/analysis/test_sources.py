"""Pure parts of the remote sources: the profile's [sampling] keys, the heap budget rule, gap counts."""

from __future__ import annotations

import numpy as np
import pytest

from runner.analysis import analyse
from runner.analysis.sources import HEAP_TIER, RSS_TIER, heap_tier, source_figures
from runner.errors import ProfileError
from runner.profile import AnalysisSettings, parse_profile

URL = {"url": "ws://127.0.0.1:9/"}


def test_sampling_sources_parse_and_default_to_what_is_configured():
    profile = parse_profile(
        {
            "target": URL,
            "sampling": {
                "metrics_url": "http://127.0.0.1:9/metrics",
                "metrics": {"rss": "my_rss_bytes", "heap": 'jvm_memory_used_bytes{area="heap"}'},
                "prometheus": {
                    "url": "http://127.0.0.1:9090",
                    "queries": {"rss": 'sum(process_resident_memory_bytes{job="x"})'},
                },
                "cgroup": "/sys/fs/cgroup/system.slice/x.scope",
                "timeout": "300ms",
            },
        }
    )
    sampling = profile.sampling
    assert sampling.sources_for(local=False) == ("metrics_url", "prometheus", "cgroup")
    assert sampling.read_timeout == pytest.approx(0.3)
    started = parse_profile({"target": {"command": "srv --port {port}"}})
    assert started.sampling.sources_for(local=True) == ("process",)
    both = parse_profile(
        {
            "target": {"command": "srv --port {port}"},
            "sampling": {"source": ["process", "metrics_url"], "metrics_url": "http://127.0.0.1:{port}/metrics"},
        }
    )
    assert both.sampling.sources_for(local=True) == ("process", "metrics_url")
    again = type(profile).from_dict(profile.to_dict())  # meta.json round trip
    assert again.sampling == sampling


@pytest.mark.parametrize(
    "sampling, message",
    [
        ({"source": "psutil"}, "sampling.source: unknown source 'psutil'"),
        ({"source": ["metrics_url"]}, "sampling.source names metrics_url but sampling.metrics_url is not set"),
        (
            {"source": ["process"], "metrics_url": "http://h/metrics"},
            "sampling.source names process but there is no local process",
        ),
        ({"metrics_url": "ws://h/metrics"}, "sampling.metrics_url: 'ws://h/metrics' is not an http:// or https:// URL"),
        (
            {"metrics_url": "http://127.0.0.1:{port}/metrics"},
            "sampling.metrics_url uses {port} but there is no target.command",
        ),
        ({"metrics_url": "http://h/m", "metrics": {"rsss": "x"}}, "unknown profile key sampling.metrics.rsss"),
        (
            {"metrics_url": "http://h/m", "metrics": {"rss": "bad name"}},
            "sampling.metrics.rss: 'bad name' is not a series name",
        ),
        ({"metrics": {"rss": "x"}, "cgroup": "x"}, "sampling.metrics names series but sampling.metrics_url is not set"),
        ({"prometheus": {"queries": {"rss": "up"}}}, "sampling.prometheus.url is missing"),
        ({"prometheus": {"url": "http://h:9090"}}, "sampling.prometheus.queries: expected a table of PromQL queries"),
        (
            {"prometheus": {"url": "http://h:9090", "queries": {"memory": "up"}}},
            "unknown profile key sampling.prometheus.queries.memory",
        ),
        ({"prometheus": {"url": "http://h:9090", "query": {}}}, "unknown profile key sampling.prometheus.query"),
    ],
)
def test_bad_sampling_keys_are_one_line_errors_naming_the_key(sampling, message):
    with pytest.raises(ProfileError) as caught:
        parse_profile({"target": URL, "sampling": sampling})
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_heap_tier_follows_the_runtimes_documentation():
    assert heap_tier(None, None) == (HEAP_TIER, None)  # memray / a runtime probe: after a collection
    assert heap_tier("process", None)[0] == HEAP_TIER
    assert heap_tier("metrics_url", "go_gc_heap_live_bytes")[0] == HEAP_TIER
    assert heap_tier("prometheus", 'sum(jvm_memory_pool_collection_used_bytes{pool="G1 Old Gen"})')[0] == HEAP_TIER
    for series in ("go_memstats_heap_inuse_bytes", "nodejs_heap_size_used_bytes", 'jvm_memory_used_bytes{area="heap"}'):
        tier, why = heap_tier("metrics_url", series)
        assert tier == RSS_TIER and "garbage not yet collected" in why
    tier, why = heap_tier("metrics_url", "my_heap_bytes")
    assert tier == RSS_TIER and "metrics_heap_live" in why
    assert heap_tier("metrics_url", "my_heap_bytes", declared_live=True)[0] == HEAP_TIER
    assert heap_tier("metrics_url", "go_gc_heap_live_bytes", declared_live=False)[0] == RSS_TIER


def _samples(series: str, per_connection: float, source: str = "metrics_url") -> list[dict]:
    rng = np.random.default_rng(7)
    samples = [{"t": i * 0.5, "phase": "baseline", "closed": 0, "open": 0, "heap": 10_000_000} for i in range(6)]
    for i in range(80):
        closed = i * 100
        samples.append(
            {
                "t": 3 + i * 0.5,
                "phase": "steady",
                "closed": closed,
                "open": 40,
                "heap": int(10_000_000 + per_connection * closed + rng.normal(0, 2000)),
                "sources": {"heap": source},
                "series": {"heap": series},
            }
        )
    return samples


def test_a_heap_that_counts_garbage_gets_the_rss_budget():
    settings = AnalysisSettings()  # heap budget 32 B, RSS budget 1 KB
    garbage = analyse(_samples("nodejs_heap_size_used_bytes", 300), settings).metrics["heap"]
    assert garbage.budget_per_connection == settings.rss_budget_bytes_per_connection
    assert garbage.verdict.value == "pass" and "RSS budget" in garbage.reason
    live = analyse(_samples("go_gc_heap_live_bytes", 300), settings).metrics["heap"]
    assert live.budget_per_connection == settings.budget_bytes_per_connection and live.verdict.value == "leak"
    declared = analyse(_samples("my_heap_bytes", 300), AnalysisSettings(metrics_heap_live=True)).metrics["heap"]
    assert declared.verdict.value == "leak"


def test_gaps_are_counted_by_cause():
    samples = [
        {"phase": "baseline", "rss": 1, "sources": {"rss": "metrics_url"}, "series": {"rss": "r"}},
        {
            "phase": "steady",
            "rss": None,
            "sources": {"rss": "metrics_url"},
            "source_errors": {"metrics_url": "timed out"},
        },
        {"phase": "steady", "rss": None, "sources": {"rss": "metrics_url"}},
        {"phase": "steady", "rss": 3, "uss": None, "sources": {"rss": "metrics_url", "uss": "process"}},
        {"phase": "steady", "fds": None, "sources": {"fds": "prometheus"}},
    ]
    metrics, sources = source_figures(samples)
    assert metrics["rss"] == {
        "source": "metrics_url",
        "series": "r",
        "values": 2,
        "gaps": 2,
        "errors": 1,
        "stale": 1,
        "absent": 0,
    }
    assert metrics["uss"]["gaps"] == 0  # psutil skips USS on purpose
    assert metrics["fds"]["absent"] == 1 and metrics["fds"]["stale"] == 0
    assert sources["metrics_url"] == {"reads": 4, "errors": 1, "reasons": {"timed out": 1}}
