"""Load profiles: TOML (plus command-line overrides) -> a typed, validated :class:`Profile`.

A profile is plain data. Parsing never touches the network or starts anything; every
mistake is raised as :class:`~runner.errors.ProfileError` with a one-line message that
names the key and says how to fix it.
"""

from __future__ import annotations

import math
import shlex
import string
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from .errors import ProfileError, did_you_mean
from .units import format_duration, parse_duration

__all__ = [
    "Profile",
    "TargetSettings",
    "LoadSettings",
    "PhaseSettings",
    "SamplingSettings",
    "AnalysisSettings",
    "ScenarioSettings",
    "HistorySettings",
    "load_profile",
    "parse_profile",
    "PLACEHOLDERS",
    "AUTO",
]

#: Placeholders a target command or URL may use.
PLACEHOLDERS = ("port", "python")


@dataclass(frozen=True, kw_only=True)
class TargetSettings:
    """How to start (or find) the server under test."""

    #: Command line with ``{port}`` / ``{python}`` placeholders, as a list of arguments.
    command: tuple[str, ...] | None = None
    #: WebSocket URL the load connects to; may use ``{port}``.
    url: str | None = None
    #: Run a Python target under memray; ``None`` means "yes when the command starts with {python}".
    memray: bool | None = None
    #: Size cap of the memray capture in MB: tracking stops there (noted), psutil goes on.
    memray_max_mb: float | None = 2048.0
    #: Trace every Python object allocation (memray's trace_python_allocators): exact sites
    #: for leaks of small (< 512 B) objects, at about 1.7x the CPU and 35x the capture of default memray.
    memray_python_allocators: bool = False
    #: Read a garbage-collected server's live heap from its runtime (Node inspector, JVM attach):
    #: a forced GC at paced checkpoints; the series leads the verdict. False: psutil (and memray) only.
    runtime_heap: bool = True
    ready_timeout: float = 20.0
    #: Grace period between SIGTERM and SIGKILL when stopping the target.
    stop_timeout: float = 10.0
    #: Sample an already running process instead of starting one.
    pid: int | None = None
    #: wss:// only: PEM file of the CA(s) that signed the server's certificate (verification stays on).
    ca_bundle: str | None = None
    #: wss:// only: do not verify the server's certificate at all (self-signed test servers); noted in the summary.
    insecure_tls: bool = False

    @property
    def is_python(self) -> bool:
        """True when the command is run by the runner's own interpreter."""
        return self.command is not None and len(self.command) > 0 and self.command[0] == "{python}"


@dataclass(frozen=True, kw_only=True)
class LoadSettings:
    """The churn each simulated user produces, and how many of them."""

    users: int = 200
    spawn_rate: float = 100.0
    #: Length of the steady churn phase; with ``duration = "auto"`` this is ``max_duration``
    #: and :attr:`until_decided` is set.
    duration: float = 120.0
    #: ``duration = "auto"``: the steady phase ends as soon as the verdict is decided
    #: (runner.analysis.sequential), at ``max_duration`` at the latest.
    until_decided: bool = False
    #: Longest steady phase of an ``auto`` run: it then stops with what it has.
    max_duration: float = 1800.0
    #: No early stop before this much steady churn (a server known to warm up for a while).
    min_duration: float = 0.0
    #: Stop the steady phase as soon as a leak is established; ``None``: on for ``auto``, off otherwise.
    stop_on_leak: bool | None = None
    workers: int = 0
    messages: int = 2
    message_bytes: int = 64
    hold: float = 0.0
    think: float = 0.0
    #: Connections each user opens one after another and holds together (echo loop only):
    #: one greenlet per user, so many connections per user cost the generator less memory.
    connections_per_user: int = 1
    #: Share of connections dropped without the WebSocket close handshake (the socket is just
    #: closed, as when a tab is killed or a phone loses its network): a server that cleans up
    #: only on a clean close leaks on exactly these. Spread evenly, not at random.
    drop_fraction: float = 0.0
    #: Timeout of one connect, one echo round trip, or one close handshake.
    timeout: float = 10.0
    #: Per-user identity (see runner.load.scenario): handshake headers, query parameters,
    #: subprotocols and Origin, templated with {user_id}, {n}, {random} and credentials columns.
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    subprotocols: tuple[str, ...] = ()
    origin: str | None = None
    #: CSV file of per-user credentials (header row = field names); user k gets row k mod rows.
    credentials: str | None = None
    #: Locust workers expected to join from other machines with ``soak worker --master HOST:PORT``.
    remote_workers: int = 0
    #: Client source addresses: "auto" (spread over 127.0.0.x when one address would run out
    #: of ports, loopback targets only), "off", or a list of addresses of this machine.
    source_addresses: str | tuple[str, ...] = "auto"
    #: Where the Locust master listens for workers (loopback unless remote workers must reach it).
    master_bind: str = "127.0.0.1"
    #: Port of the Locust master; 0 picks a free one.
    master_port: int = 0
    #: Longest wait for every expected worker to connect before the run fails.
    worker_timeout: float = 60.0

    @property
    def looks(self) -> bool:
        """True when the steady phase is re-judged as it runs (``auto``, or a fixed run with stop_on_leak)."""
        return self.until_decided or bool(self.stop_on_leak)

    @property
    def planned(self) -> str:
        """The steady phase as a profile writes it: ``auto (at most 30m)`` or ``2m``."""
        if self.until_decided:
            return f"auto (at most {format_duration(self.max_duration)})"
        return format_duration(self.duration)


@dataclass(frozen=True, kw_only=True)
class PhaseSettings:
    """Idle phases around the churn."""

    baseline: float = 5.0
    #: Longest wait for every connection to close once the load stops.
    drain: float = 10.0
    #: Idle sampling after the drain, for the drain check.
    cooldown: float = 5.0


@dataclass(frozen=True, kw_only=True)
class SamplingSettings:
    interval: float = 0.5
    #: Also sample USS (reads /proc/PID/smaps; costs more on big processes).
    uss: bool = True
    #: Where the metrics come from, in order of precedence (see runner.sampling.sources):
    #: "process", "metrics_url", "prometheus", "cgroup". Empty: the configured ones of the
    #: last three, else "process" (a started target or --pid).
    source: tuple[str, ...] = ()
    #: The server's own Prometheus/OpenMetrics endpoint (http://; may use {port}).
    metrics_url: str | None = None
    #: metric (rss, uss, fds, threads, heap) -> series name on metrics_url, e.g. my_rss_bytes or name{label="v"}.
    metrics: dict[str, str] = field(default_factory=dict)
    #: A Prometheus server and one PromQL instant query per metric: {url = "http://...", queries = {rss = "..."}}.
    prometheus: dict[str, Any] | None = None
    #: A container's cgroup on this host: a folder under /sys/fs/cgroup, or a container id.
    cgroup: str | None = None
    #: Longest wait for one source's answer at a sample; None: the sampling interval (at most 2 s).
    timeout: float | None = None

    @property
    def remote_sources(self) -> tuple[str, ...]:
        """The non-process sources the profile configures, in the default order."""
        configured = {"metrics_url": self.metrics_url, "prometheus": self.prometheus, "cgroup": self.cgroup}
        return tuple(kind for kind, value in configured.items() if value)

    def sources_for(self, *, local: bool) -> tuple[str, ...]:
        """The sources a run uses: the profile's list, else the configured remote ones, else process."""
        if self.source:
            return self.source
        return self.remote_sources or (("process",) if local else ())

    @property
    def read_timeout(self) -> float:
        return self.timeout if self.timeout is not None else min(max(self.interval, 0.2), 2.0)


@dataclass(frozen=True, kw_only=True)
class AnalysisSettings:
    """Thresholds of the leak verdict."""

    budget_bytes_per_connection: float = 32.0
    #: Budget of the process-level metrics (RSS, USS): the allocator hands memory out in
    #: pages and arenas, so a per-connection figure below this is noise, not evidence.
    #: Small leaks are the heap tier's job (memray).
    rss_budget_bytes_per_connection: float = 1024.0
    #: Largest tolerated growth per hour of steady churn; ``None`` disables this check.
    budget_bytes_per_hour: float | None = None
    #: Significance level of the trend test and the confidence intervals.
    alpha: float = 0.05
    #: Fewest closed connections in the analysed window before a verdict other than inconclusive.
    min_cycles: int = 200
    #: A heap series from metrics_url or prometheus means live heap (objects that survived the
    #: last collection), so the heap budget applies. None: decided by the series' documented
    #: meaning (runner.analysis.sources); a heap that counts uncollected garbage gets the RSS budget.
    metrics_heap_live: bool | None = None
    #: Significance of the deceleration check (a cache or warm-up levelling off), ``None``: ``alpha``.
    #: A run judged at looks analyses at a stricter ``alpha``; this keeps the check that protects a
    #: levelling server from a false LEAK at the profile's level (not a profile key).
    deceleration_alpha: float | None = None


@dataclass(frozen=True, kw_only=True)
class ScenarioSettings:
    """What each connection does instead of the echo loop (see runner.load.scenario)."""

    #: Declarative steps, validated and normalised by runner.load.steps.validate_steps.
    steps: tuple[dict[str, Any], ...] = ()
    #: A Python file whose ``function`` receives (connection, context) once per connection.
    file: str | None = None
    function: str = "scenario"
    #: A protocol preset the connections speak (runner.load.protocols): "socket.io" or "graphql-ws".
    protocol: str | None = None
    #: Socket.IO namespace the connections join.
    namespace: str = "/"
    #: Socket.IO CONNECT auth / graphql-ws connection_init payload: a table of templates.
    auth: dict[str, Any] | None = None
    #: Heartbeats of protocols without a preset: ({"match": regex, "reply": template}, ...).
    auto_reply: tuple[dict[str, str], ...] = ()

    @property
    def configured(self) -> bool:
        return bool(self.steps) or self.file is not None or self.protocol is not None


@dataclass(frozen=True, kw_only=True)
class HistorySettings:
    """The run history (see runner.history): where runs are recorded and how the trend is judged."""

    #: Record this run in the history database.
    record: bool = True
    #: SQLite file; ``None``: $SOAK_HISTORY, else reports/history.sqlite (relative to the working folder).
    path: str | None = None
    #: Past runs of the same profile shown in the report's trend chart.
    trend_runs: int = 20
    #: A significant rise of bytes per connection against the previous passing runs fails the run (exit 1).
    fail_on_regression: bool = False


@dataclass(frozen=True, kw_only=True)
class Profile:
    """A resolved, validated load profile."""

    name: str
    source: str | None = None
    target: TargetSettings = field(default_factory=TargetSettings)
    load: LoadSettings = field(default_factory=LoadSettings)
    phases: PhaseSettings = field(default_factory=PhaseSettings)
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)
    scenario: ScenarioSettings = field(default_factory=ScenarioSettings)
    history: HistorySettings = field(default_factory=HistorySettings)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for saving into a run folder (``meta.json``)."""
        data = asdict(self)
        if data["target"]["command"] is not None:
            data["target"]["command"] = list(data["target"]["command"])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Profile":
        """Inverse of :meth:`to_dict`; unknown keys (from newer versions) are ignored."""
        sections = _SECTION_CLASSES
        kwargs: dict[str, Any] = {"name": data.get("name", "run"), "source": data.get("source")}
        for section, klass in sections.items():
            values = dict(data.get(section) or {})
            known = {f.name for f in fields(klass)}
            values = {k: v for k, v in values.items() if k in known}
            if section == "target" and values.get("command") is not None:
                values["command"] = tuple(values["command"])
            for key in ("subprotocols", "steps", "source", "auto_reply"):
                if isinstance(values.get(key), list):
                    values[key] = tuple(values[key])
            kwargs[section] = klass(**values)
        return cls(**kwargs)


# --- validation -----------------------------------------------------------------------


def _printable(key: str) -> str:
    """A key as typed, or its repr when it holds control characters (messages stay one line)."""
    return key if key.isprintable() else repr(key)


def _number(kind: type, *, minimum: float | None = None, exclusive: bool = False) -> Callable[[Any, str], Any]:
    def convert(value: Any, key: str) -> Any:
        if isinstance(value, bool):
            raise ProfileError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, str):
            try:
                value = kind(value.strip())
            except ValueError:
                raise ProfileError(
                    f"{key}: expected {'a whole number' if kind is int else 'a number'}, got {value!r}"
                ) from None
        if kind is int and isinstance(value, float):
            if not value.is_integer():
                raise ProfileError(f"{key}: expected a whole number, got {value!r}")
            value = int(value)
        if not isinstance(value, (int, float)):
            raise ProfileError(f"{key}: expected a number, got {type(value).__name__}")
        if not math.isfinite(value):
            raise ProfileError(f"{key}: expected a finite number, got {value!r}")
        if minimum is not None and (value <= minimum if exclusive else value < minimum):
            bound = f"greater than {minimum:g}" if exclusive else f"at least {minimum:g}"
            raise ProfileError(f"{key}: must be {bound}, got {value!r}")
        return kind(value)

    return convert


def _optional(convert: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    def inner(value: Any, key: str) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "off")):
            return None
        return convert(value, key)

    return inner


def _boolean(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return value.strip().lower() in ("true", "yes", "on", "1")
    raise ProfileError(f"{key}: expected true or false, got {value!r}")


def _duration(value: Any, key: str) -> float:
    return parse_duration(value, key=key)


def _positive_duration(value: Any, key: str) -> float:
    seconds = parse_duration(value, key=key)
    if seconds <= 0:
        raise ProfileError(f"{key}: must be longer than zero, got {value!r}")
    return seconds


#: The word that makes load.duration "run until decided".
AUTO = "auto"


def _steady_duration(value: Any, key: str) -> float | str:
    """A positive duration, or ``"auto"`` (run until the verdict is decided)."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        return _positive_duration(value, key)
    except ProfileError as exc:
        hint = exc.hint or 'write a duration such as 10m, or "auto" to stop once decided'
        raise ProfileError(f'{exc.message}, or "auto"', hint=hint) from None


def _placeholders(text: str, key: str) -> set[str]:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise ProfileError(
            f"{key}: {text!r} has a broken placeholder ({exc})",
            hint="write {port} or {python}; double a brace to keep it",
        ) from None
    unknown = names - set(PLACEHOLDERS)
    if unknown:
        name = sorted(unknown)[0]
        raise ProfileError(f"{key}: unknown placeholder {{{name}}}", hint="only {port} and {python} are substituted")
    return names


def _command(value: Any, key: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            parts = shlex.split(value)
        except ValueError as exc:
            raise ProfileError(f"{key}: cannot split {value!r} into arguments ({exc})") from None
    elif isinstance(value, (list, tuple)) and all(isinstance(p, str) for p in value):
        parts = list(value)
    else:
        raise ProfileError(f"{key}: expected a string or a list of strings, got {type(value).__name__}")
    if not parts or not parts[0].strip():
        raise ProfileError(
            f"{key}: the command is empty", hint='for example "{python} -m runner.targets.echo --port {port}"'
        )
    for part in parts:
        _placeholders(part, key)
    return tuple(parts)


def _url(value: Any, key: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProfileError(f"{key}: expected a ws:// or wss:// URL, got {type(value).__name__}")
    _placeholders(value, key)
    probe = value.replace("{port}", "1")
    try:
        parts = urlsplit(probe)
        port = parts.port
    except ValueError as exc:
        raise ProfileError(f"{key}: {value!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("ws", "wss"):
        raise ProfileError(f"{key}: {value!r} is not a WebSocket URL", hint="it must start with ws:// or wss://")
    if not parts.hostname:
        raise ProfileError(f"{key}: {value!r} has no host", hint="for example ws://127.0.0.1:{port}/")
    del port
    return value


def _significance(value: Any, key: str) -> float:
    """A significance level: strictly between 0 and 0.5 (0.05 gives 95% intervals)."""
    level = _number(float, minimum=0, exclusive=True)(value, key)
    if level >= 0.5:
        raise ProfileError(
            f"{key}: must be below 0.5, got {value!r}", hint="0.05 gives 95% confidence intervals, 0.01 gives 99%"
        )
    return level


def _fraction(value: Any, key: str) -> float:
    """A share from 0 to 1 inclusive."""
    share = _number(float, minimum=0)(value, key)
    if share > 1:
        raise ProfileError(
            f"{key}: must be between 0 and 1, got {value!r}", hint="0.1 drops one connection in ten, 1 drops them all"
        )
    return share


def _string(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ProfileError(f"{key}: expected a non-empty string, got {value!r}")
    return value


def _string_table(value: Any, key: str) -> dict[str, str]:
    """A table of names to text values (headers, query parameters)."""
    if not isinstance(value, dict):
        raise ProfileError(
            f'{key}: expected a table such as {{ Authorization = "Bearer {{token}}" }}, got {type(value).__name__}'
        )
    table: dict[str, str] = {}
    for name, item in value.items():
        if not isinstance(item, (str, int, float)) or isinstance(item, bool):
            raise ProfileError(f"{key}.{name}: expected a text value, got {type(item).__name__}")
        table[str(name)] = str(item)
    return table


def _string_list(value: Any, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ProfileError(f'{key}: expected a list of non-empty strings such as ["chat.v1"], got {value!r}')
    return tuple(value)


def _source_addresses(value: Any, key: str) -> str | tuple[str, ...]:
    """``"auto"``, ``"off"``, or a list of IP addresses to connect from."""
    import ipaddress

    if isinstance(value, str) and value.strip().lower() in ("auto", "off"):
        return value.strip().lower()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ProfileError(
            f'{key}: expected "auto", "off" or a list of addresses such as ["10.0.0.5", "10.0.0.6"], got {value!r}'
        )
    for item in value:
        try:
            ipaddress.ip_address(str(item))
        except ValueError:
            raise ProfileError(
                f"{key}: {item!r} is not an IP address", hint='write addresses such as "127.0.0.2", or "auto"'
            ) from None
    return tuple(str(item) for item in value)


#: Kinds of [sampling] source.
SOURCE_KINDS = ("process", "metrics_url", "prometheus", "cgroup")
#: Metrics a metrics_url series or a PromQL query may give.
SOURCE_METRICS = ("rss", "uss", "fds", "threads", "heap")


def _sources(value: Any, key: str) -> tuple[str, ...]:
    """One source kind or a list of them, each once."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items or not all(isinstance(v, str) for v in items):
        raise ProfileError(
            f'{key}: expected a source or a list of sources such as ["metrics_url"], got {value!r}',
            hint=f"sources: {', '.join(SOURCE_KINDS)}",
        )
    for item in items:
        if item not in SOURCE_KINDS:
            raise ProfileError(f"{key}: unknown source {item!r}", hint=did_you_mean(item, SOURCE_KINDS, what="sources"))
    if len(set(items)) != len(items):
        raise ProfileError(f"{key}: {value!r} names a source twice")
    return tuple(items)


def _http_url(value: Any, key: str, *, placeholders: bool = True) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ProfileError(f'{key}: expected an http:// URL such as "http://127.0.0.1:{{port}}/metrics", got {value!r}')
    if placeholders:
        _placeholders(value, key)
    elif "{" in value:
        raise ProfileError(f"{key}: {value!r} cannot use placeholders", hint="write the real address")
    try:
        parts = urlsplit(value.replace("{port}", "1"))
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ProfileError(f"{key}: {value!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProfileError(
            f"{key}: {value!r} is not an http:// or https:// URL with a host", hint="for example http://127.0.0.1:9090"
        )
    return value


def _metric_names(value: Any, key: str) -> dict[str, str]:
    """[sampling.metrics]: metric -> series selector on metrics_url."""
    from .sampling.selectors import parse_selector

    if not isinstance(value, dict):
        raise ProfileError(f'{key}: expected a table such as {{ rss = "my_rss_bytes" }}, got {type(value).__name__}')
    names: dict[str, str] = {}
    for metric, selector in value.items():
        if metric not in SOURCE_METRICS:
            raise ProfileError(
                f"unknown profile key {key}.{_printable(metric)}", hint=did_you_mean(metric, list(SOURCE_METRICS))
            )
        if not isinstance(selector, str):
            raise ProfileError(f"{key}.{metric}: expected a series name, got {type(selector).__name__}")
        try:
            parse_selector(selector)
        except ValueError as exc:
            raise ProfileError(f"{key}.{metric}: {exc}") from None
        names[metric] = selector
    return names


def _prometheus(value: Any, key: str) -> dict[str, Any] | None:
    """{url = "http://...", queries = {metric = "PromQL", ...}}."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ProfileError(
            f'{key}: expected a table such as {{ url = "http://127.0.0.1:9090", queries = {{ rss = "..." }} }}'
        )
    for name in value:
        if name not in ("url", "queries"):
            raise ProfileError(
                f"unknown profile key {key}.{_printable(name)}", hint=did_you_mean(name, ["url", "queries"])
            )
    if "url" not in value:
        raise ProfileError(f"{key}.url is missing", hint="the Prometheus server's address, e.g. http://127.0.0.1:9090")
    url = _http_url(value["url"], f"{key}.url", placeholders=False)
    queries = value.get("queries")
    if not isinstance(queries, dict) or not queries:
        raise ProfileError(
            f'{key}.queries: expected a table of PromQL queries such as {{ rss = "process_resident_memory_bytes" }}'
        )
    checked: dict[str, str] = {}
    for metric, query in queries.items():
        if metric not in SOURCE_METRICS:
            raise ProfileError(
                f"unknown profile key {key}.queries.{_printable(metric)}",
                hint=did_you_mean(metric, list(SOURCE_METRICS)),
            )
        checked[metric] = _string(query, f"{key}.queries.{metric}")
    return {"url": url, "queries": checked}


def _scenario_steps(value: Any, key: str) -> tuple[dict[str, Any], ...]:
    from .load.steps import validate_steps  # pure: no Locust, no gevent, no ssl (imported before the gevent patching)

    return validate_steps(value, key)


def _protocol(value: Any, key: str) -> str:
    from .load.protocols import PRESETS  # pure, like the steps

    if value not in PRESETS:
        raise ProfileError(
            f"{key}: unknown protocol {value!r}",
            hint=f"valid: {', '.join(repr(p) for p in PRESETS)}; without a preset leave it out",
        )
    return str(value)


def _namespace(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ProfileError(f'{key}: expected a Socket.IO namespace such as "/" or "/chat", got {value!r}')
    return value


def _json_table(value: Any, key: str) -> dict[str, Any]:
    import json

    if not isinstance(value, dict):
        raise ProfileError(
            f'{key}: expected a table such as {{ token = "tok-{{user_id}}" }}, got {type(value).__name__}'
        )
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ProfileError(f"{key}: cannot be written as JSON ({exc})") from None
    return value


def _auto_reply(value: Any, key: str) -> tuple[dict[str, str], ...]:
    from .load.protocols.auto_reply import validate_rules

    return validate_rules(value, key)


_SCHEMA: dict[str, dict[str, Callable[[Any, str], Any]]] = {
    "target": {
        "command": _command,
        "url": _url,
        "memray": _optional(_boolean),
        "memray_max_mb": _optional(_number(float, minimum=1)),
        "memray_python_allocators": _boolean,
        "runtime_heap": _boolean,
        "ready_timeout": _positive_duration,
        "stop_timeout": _duration,
        "pid": _optional(_number(int, minimum=1)),
        "ca_bundle": _optional(_string),
        "insecure_tls": _boolean,
    },
    "load": {
        "users": _number(int, minimum=1),
        "spawn_rate": _number(float, minimum=0, exclusive=True),
        "duration": _steady_duration,
        "max_duration": _positive_duration,
        "min_duration": _duration,
        "stop_on_leak": _optional(_boolean),
        "workers": _number(int, minimum=0),
        "messages": _number(int, minimum=0),
        "message_bytes": _number(int, minimum=0),
        "hold": _duration,
        "think": _duration,
        "connections_per_user": _number(int, minimum=1),
        "drop_fraction": _fraction,
        "timeout": _positive_duration,
        "headers": _string_table,
        "query": _string_table,
        "subprotocols": _string_list,
        "origin": _optional(_string),
        "credentials": _optional(_string),
        "remote_workers": _number(int, minimum=0),
        "source_addresses": _source_addresses,
        "master_bind": _string,
        "master_port": _number(int, minimum=0),
        "worker_timeout": _positive_duration,
    },
    "phases": {"baseline": _duration, "drain": _duration, "cooldown": _duration},
    "sampling": {
        "interval": _positive_duration,
        "uss": _boolean,
        "source": _sources,
        "metrics_url": _optional(_http_url),
        "metrics": _metric_names,
        "prometheus": _prometheus,
        "cgroup": _optional(_string),
        "timeout": _optional(_positive_duration),
    },
    "analysis": {
        "budget_bytes_per_connection": _number(float, minimum=0),
        "rss_budget_bytes_per_connection": _number(float, minimum=0),
        "budget_bytes_per_hour": _optional(_number(float, minimum=0)),
        "alpha": _significance,
        "min_cycles": _number(int, minimum=1),
        "metrics_heap_live": _optional(_boolean),
    },
    "scenario": {
        "steps": _scenario_steps,
        "file": _optional(_string),
        "function": _string,
        "protocol": _optional(_protocol),
        "namespace": _namespace,
        "auth": _optional(_json_table),
        "auto_reply": _auto_reply,
    },
    "history": {
        "record": _boolean,
        "path": _optional(_string),
        "trend_runs": _number(int, minimum=2),
        "fail_on_regression": _boolean,
    },
}
_TOP_LEVEL = {"name": _string}

_SECTION_CLASSES = {
    "target": TargetSettings,
    "load": LoadSettings,
    "phases": PhaseSettings,
    "sampling": SamplingSettings,
    "analysis": AnalysisSettings,
    "scenario": ScenarioSettings,
    "history": HistorySettings,
}


def merge_overrides(data: dict[str, Any], overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A copy of ``data`` with ``overrides`` (``{section: {key: value}}``) laid over it; ``None`` values are skipped."""
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for section, values in overrides.items():
        for key, value in values.items():
            if value is None:
                continue
            table = merged.setdefault(section, {})
            if not isinstance(table, dict):
                raise ProfileError(f"[{section}] must be a table")
            table[key] = value
    return merged


def parse_profile(
    data: dict[str, Any],
    *,
    name: str = "run",
    source: str | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> Profile:
    """Validate plain profile data (as read from TOML) and return a :class:`Profile`."""
    if not isinstance(data, dict):
        raise ProfileError("the profile must be a TOML table")
    if overrides:
        data = merge_overrides(data, overrides)
    for key, value in data.items():
        if key in _TOP_LEVEL:
            continue
        if key not in _SCHEMA:
            raise ProfileError(f"unknown profile key {key!r}", hint=did_you_mean(key, list(_SCHEMA) + list(_TOP_LEVEL)))
        if not isinstance(value, dict):
            raise ProfileError(f"{key!r} must be a table such as [{key}], got {type(value).__name__}")
    if "name" in data:
        name = _string(data["name"], "name")

    sections: dict[str, Any] = {}
    for section, schema in _SCHEMA.items():
        table = data.get(section, {})
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key not in schema:
                raise ProfileError(
                    f"unknown profile key {section}.{_printable(key)}", hint=did_you_mean(key, list(schema))
                )
            values[key] = schema[key](value, f"{section}.{key}")
        sections[section] = _SECTION_CLASSES[section](**values)

    target: TargetSettings = sections["target"]
    target = _complete_target(target)
    sections["target"] = target
    _check_sampling(target, sections["sampling"])
    sections["load"] = _resolve_duration(sections["load"])
    _check_echo_only_keys(sections["load"], sections["scenario"])
    _check_protocol(sections["scenario"])
    _resolve_files(sections, source)
    return Profile(name=name, source=source, **sections)


def _check_sampling(target: TargetSettings, sampling: SamplingSettings) -> None:
    """Cross-key checks of [sampling] sources against [target]."""
    local = target.command is not None or target.pid is not None
    configured = set(sampling.remote_sources)
    for kind in sampling.source:
        if kind == "process" and not local:
            raise ProfileError(
                "sampling.source names process but there is no local process to sample",
                hint="start one with target.command, pass --pid, or sample metrics_url, prometheus or cgroup",
            )
        if kind != "process" and kind not in configured:
            raise ProfileError(
                f"sampling.source names {kind} but sampling.{kind} is not set",
                hint=f"set sampling.{kind}, or drop it from sampling.source",
            )
    if sampling.metrics and not sampling.metrics_url:
        raise ProfileError(
            "sampling.metrics names series but sampling.metrics_url is not set", hint="set sampling.metrics_url"
        )
    if sampling.metrics_url and "{port}" in sampling.metrics_url and target.command is None:
        raise ProfileError(
            "sampling.metrics_url uses {port} but there is no target.command to give it a port",
            hint="write the real port in the URL",
        )


#: [load] keys the plain echo loop honours and a scenario does not: key -> how a scenario does it.
_ECHO_ONLY_KEYS = {
    "connections_per_user": "open the extra connections in a scenario file",
}


def _resolve_duration(load: LoadSettings) -> LoadSettings:
    """``duration = "auto"`` becomes ``until_decided`` with ``max_duration`` as the planned length."""
    from dataclasses import replace

    if load.duration != AUTO:
        return replace(load, stop_on_leak=bool(load.stop_on_leak))
    if load.min_duration >= load.max_duration:
        raise ProfileError(
            f"load.min_duration ({format_duration(load.min_duration)}) must be shorter than load.max_duration "
            f"({format_duration(load.max_duration)})",
            hint="raise load.max_duration or lower load.min_duration",
        )
    stop_on_leak = True if load.stop_on_leak is None else load.stop_on_leak
    return replace(load, duration=load.max_duration, until_decided=True, stop_on_leak=stop_on_leak)


def _check_echo_only_keys(load: LoadSettings, scenario: ScenarioSettings) -> None:
    """Refuse a [load] key that a scenario would silently ignore."""
    if not scenario.configured:
        return
    defaults = LoadSettings()
    for key, instead in _ECHO_ONLY_KEYS.items():
        if getattr(load, key) != getattr(defaults, key):
            raise ProfileError(
                f"load.{key} applies to the plain echo loop, not to a scenario", hint=f"drop load.{key}, or {instead}"
            )


def _check_protocol(scenario: ScenarioSettings) -> None:
    """The steps speak the preset's protocol; preset keys need a preset; auto_reply is for runs without one."""
    from .load.steps import check_protocol

    check_protocol(scenario.steps, scenario.protocol)
    if scenario.namespace != "/" and scenario.protocol != "socket.io":
        raise ProfileError(
            "scenario.namespace is a Socket.IO namespace",
            hint='add protocol = "socket.io", or remove namespace',
        )
    if scenario.auth is not None and scenario.protocol is None:
        raise ProfileError(
            "scenario.auth is the handshake payload of a protocol preset, and no protocol is set",
            hint='add protocol = "socket.io" or "graphql-ws"; plain auth goes in headers or a step',
        )
    if scenario.auto_reply and scenario.protocol is not None:
        raise ProfileError(
            f"scenario.auto_reply is for protocols without a preset; {scenario.protocol} answers its own heartbeats",
            hint="remove [[scenario.auto_reply]], or remove protocol",
        )


def _resolve_files(sections: dict[str, Any], source: str | None) -> None:
    """Make the file keys absolute (relative to the profile's folder) and check they exist; TLS cross-checks."""
    from dataclasses import replace

    base = Path(source).resolve().parent if source else Path.cwd()

    def resolve(value: str | None, key: str, hint: str) -> str | None:
        if value is None:
            return None
        path = Path(value).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise ProfileError(f"{key}: file {value!r} does not exist (looked in {path.parent})", hint=hint)
        return str(path)

    target: TargetSettings = sections["target"]
    ca_bundle = resolve(
        target.ca_bundle, "target.ca_bundle", "give the PEM file of the CA that signed the server's certificate"
    )
    if target.insecure_tls and ca_bundle:
        raise ProfileError(
            "target.ca_bundle and target.insecure_tls exclude each other",
            hint="verify with the CA bundle, or turn verification off, not both",
        )
    if (ca_bundle or target.insecure_tls) and target.url is not None and not target.url.startswith("wss://"):
        which = "target.ca_bundle" if ca_bundle else "target.insecure_tls"
        raise ProfileError(
            f"{which} is set but target.url {target.url!r} is not a wss:// URL",
            hint="use a wss:// URL or drop the TLS option",
        )
    sections["target"] = replace(target, ca_bundle=ca_bundle)
    load: LoadSettings = sections["load"]
    sections["load"] = replace(
        load,
        credentials=resolve(
            load.credentials, "load.credentials", "a CSV file whose first row names the fields, e.g. username,token"
        ),
    )
    scenario: ScenarioSettings = sections["scenario"]
    if scenario.steps and scenario.file:
        raise ProfileError(
            "scenario.steps and scenario.file exclude each other",
            hint="describe the steps in the profile or in a Python file, not both",
        )
    sections["scenario"] = replace(
        scenario, file=resolve(scenario.file, "scenario.file", "a Python file with a function scenario(conn, ctx)")
    )


def _complete_target(target: TargetSettings) -> TargetSettings:
    """Cross-key checks of [target], and the default URL of a started target."""
    from dataclasses import replace

    if target.command is None and target.url is None and target.pid is None:
        raise ProfileError(
            "nothing to soak: the profile has no target.command, target.url or pid",
            hint='set target.command (e.g. "{python} -m runner.targets.echo --port {port}") '
            "or pass --target/--url/--pid",
        )
    command_fields = (
        set().union(*(_placeholders(p, "target.command") for p in target.command)) if target.command else set()
    )
    url = target.url
    if target.command is not None and url is None:
        if "port" not in command_fields:
            raise ProfileError(
                "target.url is missing and target.command has no {port} placeholder",
                hint="add {port} where the server takes its port, or set target.url",
            )
        url = "ws://127.0.0.1:{port}/"
    if url is not None and "{port}" in url:
        if target.command is None:
            raise ProfileError(
                "target.url uses {port} but there is no target.command to give it a port",
                hint="write the real port in the URL",
            )
        if "port" not in command_fields:
            raise ProfileError(
                "target.url uses {port} but target.command never receives it",
                hint="add {port} to the command (e.g. --port {port}) or write a fixed port in both",
            )
    if target.pid is not None and target.command is not None:
        raise ProfileError(
            "--pid and target.command exclude each other",
            hint="sample a running server by pid, or let soak start one, not both",
        )
    return replace(target, url=url)


def load_profile(path: str | Path | None, *, overrides: dict[str, dict[str, Any]] | None = None) -> Profile:
    """Read a TOML profile (or none) and apply command-line ``overrides``."""
    data: dict[str, Any] = {}
    name = "run"
    source = None
    if path is not None:
        file = Path(path)
        if not file.exists():
            raise ProfileError(
                f"profile {str(file)!r} does not exist", hint="check the path, or see profiles/ for examples"
            )
        if file.is_dir():
            raise ProfileError(f"profile {str(file)!r} is a folder, not a TOML file")
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ProfileError(f"cannot read profile {str(file)!r}: {exc}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ProfileError(f"profile {str(file)!r} is not valid TOML: {exc}") from None
        name = file.stem
        source = str(file)
    return parse_profile(data, name=name, source=source, overrides=overrides)
