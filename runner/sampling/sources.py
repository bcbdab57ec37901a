"""Where a sample's values come from when the server is not (only) a local process.

A server in a container, on a staging host or in a cluster cannot be sampled with psutil,
but it usually says what a leak verdict needs itself, in its runtime's standard metric
names. Each source here reads one such place and returns a :class:`Reading`:

- ``metrics_url``: the server's own Prometheus/OpenMetrics endpoint, parsed with
  ``prometheus_client``'s parser; standard runtime series are mapped to rss, fds, threads
  and heap (:data:`STANDARD_SERIES`), others are named in the profile.
- ``prometheus``: PromQL instant queries (``/api/v1/query``) against a Prometheus server.
- ``cgroup``: a container's memory from its cgroup (v2 ``memory.current``/``memory.stat``,
  v1 ``memory.usage_in_bytes``/``memory.stat``), its processes, threads and fds.
- ``process``: the psutil tree sampler (:class:`~runner.sampling.process.TreeSampler`).

:class:`SourceSampler` reads all of them at each sample, concurrently and each within a
short timeout (the run is gevent-patched, so sockets yield), so a slow endpoint costs one
sample's value, never the sampling loop. A value that is not there is ``None`` with the
reason recorded (an error of the source, or a series that is absent); nothing is
interpolated.
"""

from __future__ import annotations

import json
import math
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import gevent
from prometheus_client.parser import text_string_to_metric_families

from ..errors import UsageError
from .process import TreeSampler
from .selectors import parse_selector

__all__ = [
    "CGROUP_ROOT",
    "CgroupSource",
    "MetricsUrlSource",
    "PrometheusSource",
    "ProcessSource",
    "Reading",
    "STANDARD_SERIES",
    "SourceSampler",
    "parse_selector",
    "resolve_cgroup",
]

#: Where cgroups are mounted (v2 unified, or the v1 controllers below it).
CGROUP_ROOT = Path("/sys/fs/cgroup")

#: Largest body read from an endpoint (a /metrics page of a big server is a few hundred KB).
MAX_BODY_BYTES = 16 * 1024 * 1024

#: The standard runtime series each metric is taken from when the profile names none; the
#: first one the endpoint exports wins (all of its series matching the labels are summed:
#: a JVM reports its heap per memory pool). Whether a heap series means *live* heap is
#: decided by runner.analysis.sources, from the runtimes' documentation.
STANDARD_SERIES: dict[str, tuple[str, ...]] = {
    "rss": ("process_resident_memory_bytes",),
    "fds": ("process_open_fds",),
    "threads": ("go_threads", "jvm_threads_current", "jvm_threads_live_threads"),
    "heap": (
        "go_gc_heap_live_bytes",
        "nodejs_heap_size_used_bytes",
        'jvm_memory_used_bytes{area="heap"}',
        'jvm_memory_bytes_used{area="heap"}',
        "go_memstats_heap_inuse_bytes",
    ),
}


@dataclass
class Reading:
    """What one source said at one sample."""

    #: metric -> value; ``None``: the source answered but has no such series right now.
    values: dict[str, float | None] = field(default_factory=dict)
    #: metric -> the series (name, query or file) the value came from.
    series: dict[str, str] = field(default_factory=dict)
    #: The source could not be read at all (every value it owns is then a gap).
    error: str | None = None
    #: Figures shown but not judged (a cgroup's total and page-cache memory).
    extra: dict[str, float] = field(default_factory=dict)


class HttpStatusError(OSError):
    """An answer other than 200; ``body`` is its start (Prometheus explains a bad query there)."""

    def __init__(self, message: str, body: bytes) -> None:
        super().__init__(message)
        self.body = body


def _http_get(url: str, timeout: float) -> bytes:
    """The body of a plain GET; raises OSError/ValueError with a one-line reason."""
    headers = {"Accept": "text/plain, application/json", "User-Agent": "soak-runner"}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # http(s) only: checked by the profile
            body = response.read(MAX_BODY_BYTES + 1)
    except urllib.error.HTTPError as exc:
        try:
            body = exc.read(4096)
        except OSError:
            body = b""
        raise HttpStatusError(f"HTTP {exc.code} {exc.reason}", body) from None
    except urllib.error.URLError as exc:
        raise OSError(str(exc.reason)) from None
    if len(body) > MAX_BODY_BYTES:
        raise ValueError(f"the answer is larger than {MAX_BODY_BYTES // (1024 * 1024)} MB")
    return body


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, TimeoutError) or "timed out" in text:
        return "timed out"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class MetricsUrlSource:
    """The server's own /metrics page, scraped at each sample."""

    kind = "metrics_url"

    def __init__(self, url: str, names: Mapping[str, str] | None = None, *, timeout: float = 1.0) -> None:
        self.url = url
        self.timeout = timeout
        named = dict(names or {})
        #: metric -> candidate selectors, in order (a profile's name replaces the standard ones).
        self.candidates: dict[str, tuple[str, ...]] = {
            metric: (named[metric],) if metric in named else STANDARD_SERIES.get(metric, ())
            for metric in dict.fromkeys([*STANDARD_SERIES, *named])
        }
        self._parsed = {sel: parse_selector(sel) for sels in self.candidates.values() for sel in sels}
        #: Metrics the profile named: a missing series is a gap from the first sample on.
        self.declared = tuple(named)

    @property
    def provides(self) -> tuple[str, ...]:
        return tuple(self.candidates)

    def read(self) -> Reading:
        try:
            text = _http_get(self.url, self.timeout).decode("utf-8", errors="replace")
            families = text_string_to_metric_families(text)
            samples = [(s.name, s.labels, s.value) for family in families for s in family.samples]
        except (OSError, ValueError, UnicodeError) as exc:
            return Reading(values=dict.fromkeys(self.candidates), error=_describe(exc))
        if not samples and text.strip():
            return Reading(values=dict.fromkeys(self.candidates), error="the page holds no metrics")
        reading = Reading()
        for metric, selectors in self.candidates.items():
            reading.values[metric] = None
            for selector in selectors:
                name, labels = self._parsed[selector]
                matches = [v for n, lab, v in samples if n == name and all(lab.get(k) == w for k, w in labels.items())]
                matches = [v for v in matches if math.isfinite(v)]
                if matches:
                    reading.values[metric] = float(sum(matches))
                    reading.series[metric] = selector
                    break
        return reading


class PrometheusSource:
    """PromQL instant queries against a Prometheus server, one per metric, at each sample."""

    kind = "prometheus"

    def __init__(self, url: str, queries: Mapping[str, str], *, timeout: float = 1.0) -> None:
        self.url = url.rstrip("/")
        self.queries = dict(queries)
        self.timeout = timeout
        self.declared = tuple(self.queries)

    @property
    def provides(self) -> tuple[str, ...]:
        return tuple(self.queries)

    def query(self, promql: str) -> float | None:
        """The value of an instant query (a vector's series summed); None when it has no series."""
        address = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            answer = json.loads(_http_get(address, self.timeout))
        except HttpStatusError as exc:
            try:
                explained = json.loads(exc.body)
            except ValueError:
                raise exc from None
            raise ValueError(f"query {promql!r} failed: {explained.get('error') or exc}") from None
        except json.JSONDecodeError:
            raise ValueError("the answer is not JSON (is sampling.prometheus.url a Prometheus server?)") from None
        if not isinstance(answer, dict) or answer.get("status") != "success":
            error = answer.get("error") if isinstance(answer, dict) else None
            raise ValueError(f"query {promql!r} failed: {error or 'no success status'}")
        data = answer.get("data") or {}
        kind, result = data.get("resultType"), data.get("result")
        if kind == "scalar" and isinstance(result, list):
            values = [float(result[1])]
        elif kind == "vector":
            values = [float(series["value"][1]) for series in result or []]
        else:
            raise ValueError(f"query {promql!r} gives a {kind}, not an instant vector or a scalar")
        values = [v for v in values if math.isfinite(v)]
        return float(sum(values)) if values else None

    def read(self) -> Reading:
        reading = Reading()
        for metric, promql in self.queries.items():
            try:
                reading.values[metric] = self.query(promql)
            except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
                return Reading(values=dict.fromkeys(self.queries), error=_describe(exc))
            reading.series[metric] = promql
        return reading


def resolve_cgroup(spec: str, root: Path = CGROUP_ROOT) -> Path:
    """The cgroup folder for a path (absolute, or relative to the cgroup root) or a container id.

    A container id (or its prefix, at least 12 hex digits) is looked up by the folder names
    container engines use (``docker-<id>.scope``, ``libpod-<id>.scope``, ``docker/<id>``).
    """
    path = Path(spec)
    candidates = [path] if path.is_absolute() else [root / spec, root / "memory" / spec]
    for candidate in candidates:
        if _accounts_memory(candidate):
            return candidate
    if re.fullmatch(r"[0-9a-f]{12,64}", spec):
        found = _find_container(spec, root)
        if found is not None:
            return found
        raise UsageError(
            f"sampling.cgroup: no cgroup of a container {spec!r} under {root}",
            hint="give the cgroup's path, e.g. /sys/fs/cgroup/system.slice/docker-<id>.scope",
        )
    raise UsageError(
        f"sampling.cgroup: {spec!r} is not a cgroup with memory accounting "
        "(no memory.current or memory.usage_in_bytes)",
        hint="give a folder under /sys/fs/cgroup, or a container id",
    )


def _accounts_memory(folder: Path) -> bool:
    """A cgroup folder with memory accounting: v2 ``memory.current`` or v1 ``memory.usage_in_bytes``."""
    return folder.is_dir() and ((folder / "memory.current").exists() or (folder / "memory.usage_in_bytes").exists())


def _find_container(container: str, root: Path, max_depth: int = 6) -> Path | None:
    """A bounded walk of the cgroup tree for a folder named after ``container``."""
    pending = [(root, 0)]
    while pending:
        folder, depth = pending.pop()
        try:
            entries = [entry for entry in os.scandir(folder) if entry.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        for entry in entries:
            path = Path(entry.path)
            if container in entry.name and _accounts_memory(path):
                return path
            if depth < max_depth:
                pending.append((Path(entry.path), depth + 1))
    return None


def _stat_file(path: Path) -> dict[str, int]:
    values = {}
    for line in path.read_text().splitlines():
        key, _, number = line.partition(" ")
        if number.strip().isdigit():
            values[key] = int(number)
    return values


class CgroupSource:
    """A container's memory, processes, threads and fds from its cgroup (same host).

    rss is the cgroup's anonymous memory (heap, stacks: what a leak grows); the total it is
    charged (``memory.current``, with page cache and kernel memory) and its page cache are
    recorded beside it as ``cgroup_memory`` and ``cgroup_file``.
    """

    kind = "cgroup"
    provides = ("rss", "fds", "threads", "procs")
    declared = ("rss",)

    def __init__(self, path: Path) -> None:
        self.path = path
        self.v2 = (path / "memory.current").exists()

    def read(self) -> Reading:
        try:
            if self.v2:
                stat = _stat_file(self.path / "memory.stat")
                current = int((self.path / "memory.current").read_text())
                anon, cache = stat.get("anon"), stat.get("file")
                rss_series = "memory.stat anon"
            else:
                stat = _stat_file(self.path / "memory.stat")
                current = int((self.path / "memory.usage_in_bytes").read_text())
                anon = stat.get("total_rss", stat.get("rss"))
                cache = stat.get("total_cache", stat.get("cache"))
                rss_series = "memory.stat total_rss"
            pids = [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except (OSError, ValueError) as exc:
            return Reading(values=dict.fromkeys(self.provides), error=_describe(exc))
        reading = Reading(
            values={"rss": float(anon) if anon is not None else None, "procs": float(len(pids))},
            series={"rss": rss_series, "procs": "cgroup.procs"},
        )
        reading.extra["cgroup_memory"] = float(current)
        if cache is not None:
            reading.extra["cgroup_file"] = float(cache)
        threads_file = self.path / ("cgroup.threads" if self.v2 else "tasks")
        try:
            reading.values["threads"] = float(len(threads_file.read_text().split()))
            reading.series["threads"] = threads_file.name
        except OSError:
            reading.values["threads"] = None
        fds = 0
        try:
            for pid in pids:
                fds += len(os.listdir(f"/proc/{pid}/fd"))
            reading.values["fds"] = float(fds)
            reading.series["fds"] = "/proc/PID/fd of cgroup.procs"
        except FileNotFoundError:  # a process ended between the two reads: this sample has no fd count
            reading.values["fds"] = None
        except OSError:  # another uid, or the container's pids are not this host's
            reading.values["fds"] = None
        return reading


class ProcessSource:
    """psutil's view of a local process tree (the default source)."""

    kind = "process"
    provides = ("rss", "uss", "fds", "threads", "cpu", "procs")
    declared = ("rss", "fds", "threads")

    def __init__(self, sampler: TreeSampler) -> None:
        self.sampler = sampler
        self.gone = False

    def read(self) -> Reading:
        values = self.sampler.sample()
        if values is None:
            self.gone = True
            return Reading(values=dict.fromkeys(self.provides), error="the process is gone")
        return Reading(values={k: (None if values.get(k) is None else float(values[k])) for k in self.provides})


Source = MetricsUrlSource | PrometheusSource | CgroupSource | ProcessSource

#: Sample fields that stay whole numbers when they come from a source (JSON stays as before).
_INTEGER_FIELDS = {"rss", "uss", "fds", "threads", "procs", "heap"}


class SourceSampler:
    """Reads every source at each sample and merges them into one sample's metric fields.

    Each metric is owned by one source for the whole run: the first source (in the
    profile's order) that gave it a value at the first sample, else the first that could.
    So a series never switches between two sources mid-run; a source that fails later
    leaves a gap (``None``), recorded with the reason in ``source_errors``.
    """

    def __init__(self, sources: Sequence[Source], *, timeout: float, spawn: Callable[..., Any] = gevent.spawn) -> None:
        self.sources = list(sources)
        self.timeout = timeout
        self._spawn = spawn
        self.owners: dict[str, str] | None = None
        #: Metrics whose source has given a value, or was told to: from then on a missing value is a gap.
        self._expected: set[str] = {m for source in self.sources for m in source.declared}
        process = [s for s in self.sources if isinstance(s, ProcessSource)]
        self.process: ProcessSource | None = process[0] if process else None

    @property
    def seen_pids(self) -> set[int]:
        return self.process.sampler.seen_pids if self.process is not None else set()

    def _read_all(self) -> dict[str, Reading]:
        """Every source read concurrently; one not done within the timeout is a timed-out read."""
        jobs = [(source, self._spawn(source.read)) for source in self.sources]
        gevent.joinall([job for _, job in jobs], timeout=self.timeout)
        readings: dict[str, Reading] = {}
        for source, job in jobs:
            if job.ready() and job.successful():
                readings[source.kind] = job.value
            else:
                if job.ready():
                    error = _describe(job.exception) if job.exception is not None else "no answer"
                else:
                    job.kill(block=False)
                    error = f"no answer within {self.timeout:g}s"
                readings[source.kind] = Reading(values=dict.fromkeys(source.provides), error=error)
        return readings

    def _decide_owners(self, readings: Mapping[str, Reading]) -> dict[str, str]:
        owners: dict[str, str] = {}
        for source in self.sources:  # first: a source that gave a value
            for metric, value in readings[source.kind].values.items():
                if value is not None:
                    owners.setdefault(metric, source.kind)
        for source in self.sources:  # then: the first that could
            for metric in source.provides:
                owners.setdefault(metric, source.kind)
        return owners

    def sample(self) -> dict[str, Any] | None:
        """The metric fields of one sample, with ``sources``/``series``/``source_errors``; None when a
        sampled local process is gone (the run notices and ends)."""
        readings = self._read_all()
        if self.process is not None and self.process.gone:
            return None
        if self.owners is None:
            self.owners = self._decide_owners(readings)
        sample: dict[str, Any] = dict.fromkeys(("rss", "uss", "fds", "threads", "cpu", "heap"))
        sample["procs"] = 0
        series: dict[str, str] = {}
        for metric, kind in self.owners.items():
            reading = readings[kind]
            value = reading.values.get(metric)
            if value is not None:
                self._expected.add(metric)
            sample[metric] = int(value) if value is not None and metric in _INTEGER_FIELDS else value
            if metric in reading.series:
                series[metric] = reading.series[metric]
        if sample["procs"] is None:
            sample["procs"] = 0
        sample["sources"] = {m: k for m, k in self.owners.items() if m in self._expected and m not in ("procs", "cpu")}
        if series:
            sample["series"] = series
        errors = {kind: r.error for kind, r in readings.items() if r.error}
        if errors:
            sample["source_errors"] = errors
        for reading in readings.values():
            sample.update(reading.extra)
        return sample
