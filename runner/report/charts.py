"""Charts of one run as inline SVG text (matplotlib, Agg backend; no files, no network).

Every function takes plain data (sample dicts, phase dicts, metric result dicts) and
returns SVG markup, or ``None`` when there is nothing to draw. Long runs are decimated
before plotting: each series is cut into at most :data:`MAX_BUCKETS` time buckets and
only the minimum and the maximum of each bucket are kept (in time order), so a
12-hour run at 0.5 s (86,400 samples) draws as fast as a short one and keeps its
spikes, which plain every-n-th thinning would drop.
"""

from __future__ import annotations

import io
import re
from typing import Any, Iterable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

from ..units import format_bytes  # noqa: E402

# Text stays text (not glyph paths): smaller SVG, selectable labels, the page's own font.
matplotlib.rcParams["svg.fonttype"] = "none"
matplotlib.rcParams["svg.hashsalt"] = "soak-runner"  # stable ids: the same run renders the same page

__all__ = [
    "MAX_BUCKETS",
    "PHASE_COLOURS",
    "decimate",
    "bucket_reduce",
    "Columns",
    "format_bytes_axis",
    "memory_chart",
    "slope_chart",
    "connections_chart",
    "latency_chart",
    "resources_chart",
    "trend_chart",
    "all_charts",
    "DECISION_MARK",
]

#: Buckets per series after decimation (two points each: the bucket's min and max).
MAX_BUCKETS = 600

PHASE_COLOURS = {
    "starting": "#f4f4f4",
    "baseline": "#eeeeee",
    "ramp": "#fff3d6",
    "steady": "#ffffff",
    "drain": "#e3f0ff",
    "cooldown": "#eeeeee",
}
METRIC_COLOURS = {"rss": "#1f77b4", "uss": "#2ca02c", "heap": "#d62728", "fds": "#9467bd", "threads": "#8c564b"}
METRIC_LABELS = {"rss": "RSS", "uss": "USS", "heap": "heap after GC", "fds": "file descriptors", "threads": "threads"}
_WIDTH = 9.0  # inches at 100 dpi: 900 px, scaled down by CSS on narrow screens


# --- units -------------------------------------------------------------------------


def format_bytes_axis(value: float, _pos: int | None = None) -> str:
    """Tick label in binary units: ``512 B``, ``1.5 KB``, ``3.2 MB`` (matplotlib formatter signature)."""
    return format_bytes(value)


def _count_axis(value: float, _pos: int | None = None) -> str:
    """Tick label for counts: ``950``, ``12k``, ``1.2M``."""
    magnitude = abs(value)
    if magnitude >= 1e6:
        return f"{value / 1e6:.1f}M"
    if magnitude >= 1e4:
        return f"{value / 1e3:.0f}k"
    if magnitude >= 1e3:
        return f"{value / 1e3:.1f}k"
    return f"{value:.0f}"


def _bytes_unit(values: np.ndarray) -> tuple[float, str]:
    """Divisor and unit name so the largest of ``values`` reads as 1 to 1023 units (round ticks)."""
    finite = np.abs(values[~np.isnan(values)]) if len(values) else values
    largest = float(finite.max()) if len(finite) else 0.0
    divisor, unit = 1.0, "B"
    for name in ("KB", "MB", "GB", "TB"):
        if largest < divisor * 1024:
            break
        divisor, unit = divisor * 1024, name
    return divisor, unit


def _time_unit(span_seconds: float) -> tuple[float, str]:
    """Divisor and label for a time axis spanning ``span_seconds``."""
    if span_seconds >= 3 * 3600:
        return 3600.0, "hours"
    if span_seconds >= 300:
        return 60.0, "minutes"
    return 1.0, "seconds"


# --- decimation --------------------------------------------------------------------


def decimate(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, buckets: int = MAX_BUCKETS
) -> tuple[np.ndarray, np.ndarray]:
    """At most ``2 * buckets`` points of (x, y): the min and the max of each x bucket, in x order.

    Keeps peaks and troughs (a spike of one sample survives), unlike every-n-th thinning.
    ``x`` must be sorted ascending; NaN values of ``y`` are dropped first.
    """
    xs = np.asarray(x, dtype=float)
    ys = np.asarray(y, dtype=float)
    keep = ~np.isnan(ys)
    xs, ys = xs[keep], ys[keep]
    if len(xs) <= 2 * buckets:
        return xs, ys
    edges = np.linspace(xs[0], xs[-1], buckets + 1)
    index = np.clip(np.searchsorted(edges, xs, side="right") - 1, 0, buckets - 1)
    starts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])
    ends = np.r_[starts[1:], len(ys)]
    # position (within each bucket) of its min and max, to emit them in time order
    out_x = np.empty(2 * len(starts))
    out_y = np.empty(2 * len(starts))
    for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
        segment = ys[start:end]
        a, b = int(np.argmin(segment)), int(np.argmax(segment))
        first, second = (a, b) if a <= b else (b, a)
        out_x[2 * i], out_y[2 * i] = xs[start + first], segment[first]
        out_x[2 * i + 1], out_y[2 * i + 1] = xs[start + second], segment[second]
    return out_x, out_y


class Columns:
    """The numeric fields of the samples as float arrays (``None`` -> NaN), built in one pass.

    86,400 sample dicts cost about as much to walk as to draw, so :func:`all_charts` builds
    this once and every chart reads its arrays.
    """

    FIELDS = ("t", "closed", "open", "rss", "uss", "heap", "fds", "threads")

    def __init__(self, samples: Sequence[Mapping[str, Any]]) -> None:
        self.length = len(samples)
        rows = [[s.get(k) for k in self.FIELDS] for s in samples]
        try:
            table = np.array(rows, dtype=float).reshape(-1, len(self.FIELDS))
        except (TypeError, ValueError):  # a non-numeric value somewhere: convert field by field
            table = np.array(
                [[v if isinstance(v, (int, float)) else np.nan for v in row] for row in rows], dtype=float
            ).reshape(-1, len(self.FIELDS))
        self._arrays = {key: table[:, index] for index, key in enumerate(self.FIELDS)}
        self.phase = np.array([str(s.get("phase") or "") for s in samples], dtype=object)
        #: {request name: (t, p50, p99) arrays} from the samples' "lat" fields.
        self.latency = self._latency(samples)

    @staticmethod
    def _latency(samples: Sequence[Mapping[str, Any]]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        series: dict[str, tuple[list[Any], list[Any], list[Any]]] = {}
        for sample in samples:
            lat = sample.get("lat")
            if lat.__class__ is not dict:  # not isinstance(Mapping): this loop runs 86,400 times
                continue
            t = sample["t"]
            for name, values in lat.items():
                if values.__class__ not in (list, tuple) or len(values) < 3:
                    continue
                bucket = series.get(name)
                if bucket is None:
                    bucket = series[name] = ([], [], [])
                bucket[0].append(t)
                bucket[1].append(values[0])
                bucket[2].append(values[2] if values[2] is not None else values[0])
        out = {}
        for name, (ts, p50, p99) in series.items():
            try:
                arrays = (np.array(ts, dtype=float), np.array(p50, dtype=float), np.array(p99, dtype=float))
            except (TypeError, ValueError):
                continue
            keep = ~np.isnan(arrays[1])
            if keep.any():
                out[str(name)] = (
                    arrays[0][keep],
                    arrays[1][keep],
                    np.where(np.isnan(arrays[2]), arrays[1], arrays[2])[keep],
                )
        return out

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: str) -> np.ndarray:
        return self._arrays[key]


def _as_columns(samples: "Sequence[Mapping[str, Any]] | Columns") -> Columns:
    return samples if isinstance(samples, Columns) else Columns(samples)


def bucket_reduce(
    x: np.ndarray, y: np.ndarray, reduce: Any, buckets: int = MAX_BUCKETS
) -> tuple[np.ndarray, np.ndarray]:
    """One point per x bucket: the bucket's middle x and ``reduce`` (e.g. np.median, np.max) of its y.

    For noisy per-interval figures (latency percentiles) where a min/max envelope would
    only draw a solid band.
    """
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(xs) <= buckets:
        return xs, ys
    edges = np.linspace(xs[0], xs[-1], buckets + 1)
    index = np.clip(np.searchsorted(edges, xs, side="right") - 1, 0, buckets - 1)
    starts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])
    ends = np.r_[starts[1:], len(ys)]
    return (
        np.array([(xs[a] + xs[b - 1]) / 2 for a, b in zip(starts, ends, strict=True)]),
        np.array([float(reduce(ys[a:b])) for a, b in zip(starts, ends, strict=True)]),
    )


def _column(samples: "Sequence[Mapping[str, Any]] | Columns", key: str) -> np.ndarray:
    """One sample field as floats (``None`` -> NaN)."""
    return _as_columns(samples)[key]


# --- figure helpers ----------------------------------------------------------------


def _svg(fig: Any, name: str) -> str:
    """The figure as SVG markup, with ids made unique per chart (several SVGs share one page)."""
    buffer = io.StringIO()
    # fixed margins (set in _figure) instead of bbox_inches="tight": one draw instead of two
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r'id="([^"]+)"', lambda m: f'id="{name}-{m.group(1)}"', text)
    text = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{name}-{m.group(1)})", text)
    text = re.sub(r'xlink:href="#([^"]+)"', lambda m: f'xlink:href="#{name}-{m.group(1)}"', text)
    return text.replace("<svg ", f'<svg role="img" aria-label="{name} chart" ', 1)


def _figure(height: float = 3.0, ncols: int = 1, *, bottom: float = 0.5) -> tuple[Any, Any]:
    """A figure of ``ncols`` panels with fixed margins (inches converted to fractions)."""
    fig, axes = plt.subplots(1, ncols, figsize=(_WIDTH, height), dpi=100, squeeze=False)
    fig.subplots_adjust(
        left=1.0 / _WIDTH,
        right=1 - 0.8 / _WIDTH,
        bottom=bottom / height,
        top=1 - 0.32 / height,
        wspace=0.38 if ncols > 1 else 0.2,
    )
    return fig, axes


def _shade_phases(
    ax: Any, phases: Iterable[Mapping[str, Any]], end: float, divisor: float, *, label: bool = True, begin: float = 0.0
) -> None:
    """Background bands per phase, named along the top edge; the x axis spans ``begin``..``end``."""
    ax.set_xlim(begin / divisor, end / divisor)
    for phase in phases:
        start = phase.get("start")
        if start is None:
            continue
        if phase.get("name") == DECISION_MARK:
            _mark_decision(ax, start / divisor)
            continue
        stop: float = phase["end"] if phase.get("end") is not None else end
        ax.axvspan(
            start / divisor, stop / divisor, color=PHASE_COLOURS.get(phase.get("name", ""), "#ffffff"), lw=0, zorder=0
        )
        middle = (max(start, begin) + min(stop, end)) / 2
        wide_enough = (min(stop, end) - max(start, begin)) >= 0.04 * max(end - begin, 1e-9)
        if label and wide_enough and phase.get("name") not in ("starting", "steady"):
            ax.text(
                middle / divisor,
                1.0,
                str(phase.get("name")),
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="bottom",
                fontsize=7,
                color="#666666",
            )


#: Name of the pseudo-phase :func:`all_charts` adds at the look that decided the verdict.
DECISION_MARK = "decided"


def _mark_decision(ax: Any, x: float) -> None:
    """A vertical line where the looks decided the verdict and the steady phase stopped."""
    ax.axvline(x, color="#d62728", ls="--", lw=1.0, zorder=3)
    ax.text(x, 0.98, " decided", transform=ax.get_xaxis_transform(), ha="left", va="top", fontsize=7, color="#d62728")


def _decision_points(
    samples: "Columns", phases: Sequence[Mapping[str, Any]], decision: Mapping[str, Any] | None
) -> tuple[float, float] | None:
    """(seconds since start, connections closed) of the deciding look, or None when no look decided."""
    if not decision or decision.get("stop_reason") not in ("leak", "pass"):
        return None
    if decision.get("decided_after_cycles") is None:
        return None
    steady = next((p for p in phases if p.get("name") == "steady" and p.get("start") is not None), None)
    looks = decision.get("looks") or []
    if steady is None or not looks or looks[-1].get("t") is None:
        return None
    in_steady = samples.phase == "steady" if len(samples) else np.zeros(0, dtype=bool)
    closed = _column(samples, "closed")[in_steady]
    first = float(closed[0]) if len(closed) else 0.0
    return float(steady["start"]) + float(looks[-1]["t"]), first + float(decision["decided_after_cycles"])


def _time_axis(ax: Any, label: str) -> None:
    ax.set_xlabel(f"time since start ({label})")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=10, steps=[1, 2, 3, 5, 6, 10]))
    ax.grid(alpha=0.3)


# --- the charts --------------------------------------------------------------------


def memory_chart(samples: "Sequence[Mapping[str, Any]] | Columns", phases: Sequence[Mapping[str, Any]]) -> str | None:
    """RSS, USS and Python heap of the target's tree against time, phases shaded."""
    samples = _as_columns(samples)
    if not len(samples):
        return None
    t = _column(samples, "t")
    divisor, unit = _time_unit(float(t[-1] - t[0]))
    columns = {metric: _column(samples, metric) for metric in ("rss", "uss", "heap")}
    columns = {metric: values for metric, values in columns.items() if not np.isnan(values).all()}
    if not columns:
        return None
    scale, scale_unit = _bytes_unit(np.concatenate(list(columns.values())))
    fig, axes = _figure(3.2)
    ax = axes[0][0]
    _shade_phases(ax, phases, float(t[-1]), divisor, begin=float(t[0]))
    for metric, values in columns.items():
        xs, ys = decimate(t, values)
        ax.plot(xs / divisor, ys / scale, label=METRIC_LABELS[metric], color=METRIC_COLOURS[metric], lw=1.1)
    ax.set_ylabel(f"memory ({scale_unit})")
    _time_axis(ax, unit)
    ax.legend(loc="upper left", fontsize=8)
    return _svg(fig, "memory")


def slope_chart(
    samples: "Sequence[Mapping[str, Any]] | Columns",
    metrics: Mapping[str, Mapping[str, Any]],
    *,
    decided_at: float | None = None,
) -> str | None:
    """Each memory metric against cumulative closed connections, with the fitted slope and its CI band.

    The band is the pair of lines through the fit's pivot (the median point of the
    analysed window) with the lower and the upper slope of the confidence interval.
    """
    samples = _as_columns(samples)
    panels = [m for m in ("heap", "uss", "rss") if len(samples) and not np.isnan(samples[m]).all()]
    if not panels:
        return None
    closed = _column(samples, "closed")
    steady = np.isin(samples.phase, ["ramp", "steady"]) if len(samples) else np.zeros(0, dtype=bool)
    fig, axes = _figure(3.0, len(panels))
    for ax, metric in zip(axes[0], panels, strict=True):
        values = _column(samples, metric)
        mask = steady & ~np.isnan(values)
        if not mask.any():
            mask = ~np.isnan(values)
        order = np.argsort(closed[mask], kind="stable")
        scale, scale_unit = _bytes_unit(values[mask])
        xs, ys = decimate(closed[mask][order], values[mask][order] / scale, buckets=MAX_BUCKETS // 3)
        ax.plot(xs, ys, ".", ms=2, color=METRIC_COLOURS[metric], alpha=0.6, label="samples")
        result = metrics.get(metric) or {}
        window = result.get("window")
        slope = result.get("slope_per_connection")
        if window and slope is not None:
            lo_x, hi_x = float(window[0]), float(window[1])
            inside = mask & (closed >= lo_x) & (closed <= hi_x)
            if inside.any():
                pivot_x = float(np.median(closed[inside]))
                pivot_y = float(np.median(values[inside]))
                line_x = np.array([lo_x, hi_x])
                ax.plot(
                    line_x,
                    (pivot_y + slope * (line_x - pivot_x)) / scale,
                    color="#000000",
                    lw=1.4,
                    label=f"fit: {format_bytes_axis(slope)}/conn",
                )
                if result.get("ci_low") is not None and result.get("ci_high") is not None:
                    low = pivot_y + float(result["ci_low"]) * (line_x - pivot_x)
                    high = pivot_y + float(result["ci_high"]) * (line_x - pivot_x)
                    ax.fill_between(
                        line_x,
                        np.minimum(low, high) / scale,
                        np.maximum(low, high) / scale,
                        color="#000000",
                        alpha=0.15,
                        lw=0,
                        label="confidence band",
                    )
        ax.set_title(f"{METRIC_LABELS[metric]} ({result.get('verdict', 'not judged')})", fontsize=9)
        ax.set_ylabel(scale_unit)
        ax.xaxis.set_major_formatter(FuncFormatter(_count_axis))
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.set_xlabel("connections closed")
        ax.grid(alpha=0.3)
        if decided_at is not None:
            _mark_decision(ax, decided_at)
        ax.legend(loc="upper left", fontsize=7)
    return _svg(fig, "slope")


def connections_chart(
    samples: "Sequence[Mapping[str, Any]] | Columns", phases: Sequence[Mapping[str, Any]]
) -> str | None:
    """Open connections (left axis) and churn rate in closed connections per second (right axis)."""
    samples = _as_columns(samples)
    if len(samples) < 2:
        return None
    t = _column(samples, "t")
    divisor, unit = _time_unit(float(t[-1] - t[0]))
    fig, axes = _figure(2.8)
    ax = axes[0][0]
    _shade_phases(ax, phases, float(t[-1]), divisor, begin=float(t[0]))
    xs, ys = decimate(t, _column(samples, "open"))
    ax.plot(xs / divisor, ys, color="#1f77b4", lw=1.1, label="open connections")
    ax.set_ylabel("open connections")
    ax.yaxis.set_major_formatter(FuncFormatter(_count_axis))
    closed = _column(samples, "closed")
    # churn per bucket (not per sample) so the rate line is smooth and cheap to draw
    edges = np.linspace(t[0], t[-1], min(MAX_BUCKETS, len(t) - 1) + 1)
    at_edges = np.interp(edges, t, np.nan_to_num(closed))
    widths = np.diff(edges)
    rate = np.divide(np.diff(at_edges), widths, out=np.zeros_like(widths), where=widths > 0)
    right = ax.twinx()
    right.step(edges[1:] / divisor, rate, where="pre", color="#ff7f0e", lw=1.0, label="closed per second")
    right.set_ylabel("closed per second")
    right.yaxis.set_major_formatter(FuncFormatter(_count_axis))
    ax.set_ylim(bottom=0)
    right.set_ylim(bottom=0)
    _time_axis(ax, unit)
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize=8)
    return _svg(fig, "connections")


def latency_chart(samples: "Sequence[Mapping[str, Any]] | Columns", phases: Sequence[Mapping[str, Any]]) -> str | None:
    """p50 and p99 latency (ms) of each request kind (connect, echo, close) per sample interval.

    Long runs: per time bucket, the median of the p50s and the worst p99.
    """
    samples = _as_columns(samples)
    series = samples.latency
    if not series:
        return None
    t_all = _column(samples, "t")
    divisor, unit = _time_unit(float(t_all[-1] - t_all[0]))
    fig, axes = _figure(3.0)
    ax = axes[0][0]
    _shade_phases(ax, phases, float(t_all[-1]), divisor, begin=float(t_all[0]))
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    for index, (name, (times, p50, p99)) in enumerate(sorted(series.items())):
        colour = palette[index % len(palette)]
        xs, ys = bucket_reduce(times, p99, np.max, MAX_BUCKETS // 2)
        ax.plot(xs / divisor, ys, color=colour, lw=0.8, alpha=0.55, label=f"{name} p99")
        xs, ys = bucket_reduce(times, p50, np.median, MAX_BUCKETS // 2)
        ax.plot(xs / divisor, ys, color=colour, lw=1.2, label=f"{name} p50")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g} ms"))
    ax.set_ylabel("latency")
    _time_axis(ax, unit)
    ax.legend(loc="upper left", fontsize=7, ncol=3)
    return _svg(fig, "latency")


def resources_chart(
    samples: "Sequence[Mapping[str, Any]] | Columns", phases: Sequence[Mapping[str, Any]]
) -> str | None:
    """Open file descriptors (left axis) and threads (right axis) of the target's tree."""
    samples = _as_columns(samples)
    t = _column(samples, "t")
    fds, threads = _column(samples, "fds"), _column(samples, "threads")
    if len(t) == 0 or (np.isnan(fds).all() and np.isnan(threads).all()):
        return None
    divisor, unit = _time_unit(float(t[-1] - t[0]))
    fig, axes = _figure(2.6)
    ax = axes[0][0]
    _shade_phases(ax, phases, float(t[-1]), divisor, begin=float(t[0]))
    xs, ys = decimate(t, fds)
    ax.plot(xs / divisor, ys, color=METRIC_COLOURS["fds"], lw=1.1, label="file descriptors")
    ax.set_ylabel("file descriptors")
    ax.yaxis.set_major_formatter(FuncFormatter(_count_axis))
    right = ax.twinx()
    xs, ys = decimate(t, threads)
    right.plot(xs / divisor, ys, color=METRIC_COLOURS["threads"], lw=1.1, ls="--", label="threads")
    right.set_ylabel("threads")
    right.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, max(1.0, float(np.nanmax(fds)) if not np.isnan(fds).all() else 1.0) * 1.15)
    right.set_ylim(0, max(1.0, float(np.nanmax(threads)) if not np.isnan(threads).all() else 1.0) * 1.15)
    _time_axis(ax, unit)
    lines, more = ax.get_legend_handles_labels(), right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize=8)
    return _svg(fig, "resources")


def trend_chart(runs: Sequence[Mapping[str, Any]], metric_names: Sequence[str] = ("heap", "uss", "rss")) -> str | None:
    """Bytes per connection (with CI) of each memory metric over past runs of one profile, oldest first.

    ``runs`` are history rows (see :mod:`runner.history`): ``started_at``, ``verdict``,
    ``metrics`` {name: {slope_per_connection, ci_low, ci_high, budget_per_connection}}.
    """
    if len(runs) < 2:
        return None
    names = [
        m
        for m in metric_names
        if any((r.get("metrics") or {}).get(m, {}).get("slope_per_connection") is not None for r in runs)
    ]
    if not names:
        return None
    fig, axes = _figure(2.8, len(names), bottom=0.75)
    positions = np.arange(len(runs))
    labels = [str(r.get("started_at") or "")[:10] for r in runs]
    for ax, metric in zip(axes[0], names, strict=True):
        for pos, run in zip(positions, runs, strict=True):
            figures = (run.get("metrics") or {}).get(metric) or {}
            slope = figures.get("slope_per_connection")
            if slope is None:
                continue
            low = figures.get("ci_low", slope) if figures.get("ci_low") is not None else slope
            high = figures.get("ci_high", slope) if figures.get("ci_high") is not None else slope
            colour = {"pass": "#2e7d32", "leak": "#c62828"}.get(str(run.get("verdict")), "#ef6c00")
            ax.errorbar(
                [pos],
                [slope],
                yerr=[[max(slope - low, 0)], [max(high - slope, 0)]],
                fmt="o",
                ms=4,
                color=colour,
                capsize=2,
            )
        budget = next(
            (
                (r.get("metrics") or {}).get(metric, {}).get("budget_per_connection")
                for r in reversed(runs)
                if (r.get("metrics") or {}).get(metric, {}).get("budget_per_connection") is not None
            ),
            None,
        )
        if budget is not None:
            ax.axhline(budget, color="#c62828", lw=0.8, ls="--", label="budget")
            ax.legend(loc="upper left", fontsize=7)
        ax.axvspan(positions[-1] - 0.4, positions[-1] + 0.4, color="#fff3d6", lw=0, zorder=0)
        ax.set_title(f"{METRIC_LABELS[metric]} per connection", fontsize=9)
        ax.yaxis.set_major_formatter(FuncFormatter(format_bytes_axis))
        step = max(1, len(runs) // 6)
        ax.set_xticks(positions[::step], labels[::step], fontsize=7, rotation=30, ha="right")
        ax.grid(alpha=0.3)
    return _svg(fig, "trend")


def all_charts(
    samples: Sequence[Mapping[str, Any]],
    phases: Sequence[Mapping[str, Any]],
    metrics: Mapping[str, Mapping[str, Any]],
    trend_runs: Sequence[Mapping[str, Any]] = (),
    decision: Mapping[str, Any] | None = None,
) -> dict[str, str | None]:
    """Every chart of the report, by name (``None`` where the data is missing).

    ``decision`` (summary.json's): a run whose looks decided its verdict gets a vertical line at
    the deciding look on the time charts and at its connection count on the slope chart.
    """
    columns = Columns(samples)
    point = _decision_points(columns, phases, decision)
    if point is not None:
        phases = [*phases, {"name": DECISION_MARK, "start": point[0], "end": point[0]}]
    return {
        "memory": memory_chart(columns, phases),
        "slope": slope_chart(columns, metrics, decided_at=point[1] if point else None),
        "connections": connections_chart(columns, phases),
        "latency": latency_chart(columns, phases),
        "resources": resources_chart(columns, phases),
        "trend": trend_chart(trend_runs),
    }
