"""Where each metric came from, what its gaps were, and which budget a runtime heap gets (pure).

Samples taken through [sampling] sources carry ``sources`` (metric -> ``process``,
``metrics_url``, ``prometheus`` or ``cgroup``), ``series`` (metric -> the series name,
PromQL query or cgroup file) and, when a source could not be read, ``source_errors``
(source -> reason). A missing value is ``null`` in the sample, never interpolated; these
functions count the gaps and say why they happened.

The heap rule: a heap from memray or a runtime probe is live heap (measured after a
collection) and is judged with the heap budget. A heap series from a server's metrics is
judged with the heap budget only when the runtime documents it as live heap; a series that
counts garbage not yet collected rises and falls with the collector's pacing, as RSS does,
and gets the RSS tier's budget:

- ``go_gc_heap_live_bytes`` (Go runtime/metrics ``/gc/heap/live:bytes``, "heap memory
  occupied by live objects that were marked by the previous GC"): live.
- ``go_memstats_heap_inuse_bytes`` (MemStats.HeapInuse: bytes in spans that hold at least
  one object, "including unreachable objects the GC has not yet freed"; HeapAlloc likewise): not live.
- ``nodejs_heap_size_used_bytes`` (prom-client, V8's ``heapUsed`` from
  ``process.memoryUsage()``: used heap, garbage not yet collected included): not live.
- ``jvm_memory_used_bytes{area="heap"}`` / ``jvm_memory_bytes_used`` (MemoryMXBean /
  MemoryPoolMXBean ``getUsage().used``: everything allocated in the pools, dead objects
  included): not live. ``jvm_memory_pool_collection_used_bytes`` (``getCollectionUsage()``:
  the pool right after the last collection) is live.
- Python's client exports no heap series (``python_gc_objects_collected_total`` counts
  collected objects, not bytes).

``[analysis] metrics_heap_live = true`` declares a custom series live (false: never).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

__all__ = [
    "HEAP_TIER",
    "LIVE_HEAP_SERIES",
    "NOT_LIVE_HEAP_SERIES",
    "RSS_TIER",
    "heap_tier",
    "metric_origin",
    "source_figures",
]

#: The budget tiers a heap series can get.
HEAP_TIER = "heap"
RSS_TIER = "rss"

#: Series names documented as live heap (after the last collection).
LIVE_HEAP_SERIES = ("go_gc_heap_live_bytes", "jvm_memory_pool_collection_used_bytes")
#: Series names documented as counting garbage not yet collected.
NOT_LIVE_HEAP_SERIES = (
    "go_memstats_heap_inuse_bytes",
    "go_memstats_heap_alloc_bytes",
    "nodejs_heap_size_used_bytes",
    "jvm_memory_used_bytes",
    "jvm_memory_bytes_used",
)
#: Sources whose heap is a runtime's metric rather than a measurement after a collection.
METRIC_SOURCES = ("metrics_url", "prometheus")


def metric_origin(samples: Sequence[Mapping[str, Any]], name: str) -> tuple[str | None, str | None]:
    """(source, series) of metric ``name``: the last sample that says where it came from."""
    for sample in reversed(samples):
        sources = sample.get("sources")
        if sources and name in sources:
            return sources[name], (sample.get("series") or {}).get(name)
    return None, None


def _series_name(series: str) -> str:
    """The metric name in a series selector or a simple PromQL query (``sum(x{a="b"})`` -> ``x``)."""
    text = series
    for char in "{[":
        text = text.split(char, 1)[0]
    if "(" in text:
        text = text.rsplit("(", 1)[-1]
    return text.strip()


def heap_tier(source: str | None, series: str | None, declared_live: bool | None = None) -> tuple[str, str | None]:
    """Which budget a heap series gets: (HEAP_TIER or RSS_TIER, a sentence saying why, or None).

    None for the sentence: the ordinary case (a heap measured after a collection).
    """
    if source not in METRIC_SOURCES:
        return HEAP_TIER, None
    name = _series_name(series or "")
    if declared_live is True:
        return HEAP_TIER, (
            f"heap from {source} ({series}) is declared live heap (analysis.metrics_heap_live): the heap budget applies"
        )
    if declared_live is None and any(name == live for live in LIVE_HEAP_SERIES):
        return HEAP_TIER, (
            f"heap from {source} ({series}) is live heap after the last collection: the heap budget applies"
        )
    if declared_live is False:
        why = "analysis.metrics_heap_live is false"
    elif name in NOT_LIVE_HEAP_SERIES:
        why = "that series includes garbage not yet collected"
    else:
        why = "soak does not know whether that series is live heap (set analysis.metrics_heap_live if it is)"
    return RSS_TIER, f"heap from {source} ({series}) is judged with the RSS budget: {why}"


def source_figures(samples: Sequence[Mapping[str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Per metric (source, series, values, gaps) and per source (reads, errors, the reasons).

    A gap is a sample (after the first value or the first declared one) whose value is null:
    ``errors`` of them because the source could not be read, ``stale`` because it answered
    without a series it had given before (it went away), ``absent`` because it answered
    without a series it never gave (a name or query that matches nothing, yet).
    """
    metrics: dict[str, dict[str, Any]] = {}
    sources: dict[str, dict[str, Any]] = {}
    for sample in samples:
        if sample.get("phase") == "starting":
            continue
        failed = sample.get("source_errors") or {}
        present = sample.get("sources") or {}
        for kind in set(present.values()) | set(failed):
            entry = sources.setdefault(kind, {"reads": 0, "errors": 0, "reasons": {}})
            entry["reads"] += 1
            if kind in failed:
                entry["errors"] += 1
                reason = str(failed[kind])
                entry["reasons"][reason] = entry["reasons"].get(reason, 0) + 1
        for name, kind in present.items():
            entry = metrics.setdefault(
                name,
                {
                    "source": kind,
                    "series": None,
                    "values": 0,
                    **dict.fromkeys(("gaps", "errors", "stale", "absent"), 0),
                },
            )
            series = (sample.get("series") or {}).get(name)
            if series:
                entry["series"] = series
            if sample.get(name) is not None:
                entry["values"] += 1
            elif kind != "process":  # psutil reads USS only every n-th sample on purpose: not a gap
                entry["gaps"] += 1
                entry["errors" if kind in failed else "stale" if entry["values"] else "absent"] += 1
    for entry in sources.values():
        entry["reasons"] = dict(sorted(entry["reasons"].items(), key=lambda item: -item[1])[:5])
    return metrics, sources
