"""Detection benchmark of the leak verdict: end-to-end runs against a corpus of known truths,
plus many cheap replicates made by replaying recorded real series with synthetic leaks added.

    python bench/detect.py record [--only NAME ...]   # end-to-end soaks of bench/targets/corpus.py (~20 min)
    python bench/detect.py table [--replicates N]     # the table, from bench/data/ only (a few minutes)
    python bench/detect.py looks [--replicates N]     # run until decided: the replay with the runner's looks
    python bench/detect.py attribution [--only NAME]  # soak the Python leak shapes under memray (~15 min)

``attribution`` soaks the servers of tests/servers/ (a closure listener on a module-level
list, a dict of sessions, an asyncio task per connection, small ``bytes`` of 64 B to 8 KB)
under memray and keeps, per shape and size, what the run named: the container or task that
keeps the memory, and the allocating line with its bytes per connection against the truth
(``bench/data/attribution.json``); ``table`` prints it when that file is there.

``record`` runs ``soak run`` (real Locust, real psutil, 127.0.0.1 only) once per corpus
case and keeps a compact copy of each run's samples (plus the server's own traced-heap
series, read after a full GC like memray's checkpoints) in ``bench/data/``. ``table`` never
starts a server. It re-analyses those recorded runs with the current analysis (the
end-to-end table), then replays the clean recordings: windows of 1K, 5K and 20K connection
cycles (half from the first steady sample, so the real warm-up is in; half at random
offsets; sampled every 0.2 s as recorded or every 0.4 s) with a synthetic leak of known
size added (detection rates), or with a benign decoy shape scaled to the window (a cache
full at 25 % of the run, a warm-up, a GC sawtooth, fragmentation steps: false alarms).
Everything is seeded; the same data gives the same tables.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runner.analysis import Verdict, analyse  # noqa: E402
from runner.analysis.sequential import plan_looks, replay_looks  # noqa: E402
from runner.profile import AnalysisSettings  # noqa: E402

__all__ = [
    "CASES",
    "Case",
    "SHAPES",
    "Shape",
    "attribution",
    "attribution_table",
    "replay_samples",
    "heap_samples",
    "main",
]

DATA = ROOT / "bench" / "data"
CORPUS = ROOT / "bench" / "targets" / "corpus.py"
KEEP = ("t", "phase", "opened", "closed", "open", "rss", "uss", "fds", "threads")


@dataclass(frozen=True)
class Case:
    """One end-to-end corpus run with a known truth."""

    name: str
    args: str
    truth: str  # "leak" or "pass"
    duration: str
    note: str


CASES = [
    Case("clean-a", "--kind clean", "pass", "240s", "clean echo (replay base)"),
    Case("clean-b", "--kind clean", "pass", "240s", "clean echo (replay base)"),
    Case("clean-long-a", "--kind clean", "pass", "300s", "clean echo, long (replay base; heap read without a GC)"),
    Case("clean-long-b", "--kind clean", "pass", "300s", "clean echo, long (replay base; heap read without a GC)"),
    Case(
        "clean-gc-long-a",
        "--kind clean",
        "pass",
        "420s",
        "clean echo, long, heap after a GC (replay base of run-until-decided)",
    ),
    Case("warmup", "--kind warmup --entries 2000", "pass", "120s", "one-time pool: 8 KB x first 2K connections"),
    Case(
        "cache-25",
        "--kind cache --bytes 2048 --fill-seconds 30",
        "pass",
        "120s",
        "cache of 2 KB entries, full at 25% of the run",
    ),
    Case(
        "cache-50",
        "--kind cache --bytes 2048 --fill-seconds 60",
        "pass",
        "120s",
        "cache of 2 KB entries, full at 50% of the run",
    ),
    Case(
        "cache-75",
        "--kind cache --bytes 2048 --fill-seconds 90",
        "pass",
        "120s",
        "cache of 2 KB entries, full at 75% of the run",
    ),
    Case("gc", "--kind gc --bytes 2048 --every 2000", "pass", "120s", "cyclic garbage, GC every 2K connections"),
    Case("frag", "--kind frag --entries 5000", "pass", "120s", "odd-sized buffers in a bounded ring"),
    Case("leak-py-64", "--kind leak-py --bytes 64", "leak", "120s", "64 B Python objects per connection"),
    Case("leak-py-256", "--kind leak-py --bytes 256", "leak", "60s", "256 B per connection"),
    Case("leak-py-1k", "--kind leak-py --bytes 1024", "leak", "60s", "1 KB per connection"),
    Case("leak-py-8k", "--kind leak-py --bytes 8192", "leak", "30s", "8 KB per connection"),
    Case("leak-native-1k", "--kind leak-native --bytes 1024", "leak", "60s", "1 KB ctypes malloc per connection"),
    Case("leak-native-8k", "--kind leak-native --bytes 8192", "leak", "30s", "8 KB ctypes malloc per connection"),
    Case(
        "leak-sparse-1k",
        "--kind leak-sparse --bytes 1024 --every 100",
        "leak",
        "60s",
        "100 KB once every 100 connections",
    ),
    Case("leak-fd", "--kind leak-fd --every 50", "leak", "40s", "one fd never closed per 50 connections"),
    Case("leak-thread", "--kind leak-thread --every 50", "leak", "40s", "one thread never ended per 50 connections"),
]

PROFILE = """\
[target]
command = {command!r}
memray = false
[load]
users = 50
spawn_rate = 50
duration = "{duration}"
[phases]
baseline = "3s"
drain = "10s"
cooldown = "3s"
[sampling]
interval = "0.2s"
uss = false
"""


# --- recording (end to end; the only part that starts processes) ---------------------------


def record(cases: Sequence[Case]) -> None:
    """Soak each case once and keep its compact samples and heap series in bench/data/."""
    DATA.mkdir(parents=True, exist_ok=True)
    for case in cases:
        with tempfile.TemporaryDirectory(prefix="soak-bench-") as tmp:
            heap_log = Path(tmp) / "heap.jsonl"
            command = f"{{python}} {CORPUS} --port {{port}} {case.args} --heap-log {heap_log}"
            profile = Path(tmp) / "profile.toml"
            profile.write_text(PROFILE.format(command=command, duration=case.duration), encoding="utf-8")
            out = Path(tmp) / "run"
            started = time.monotonic()
            result = subprocess.run(
                [sys.executable, "-m", "runner", "run", str(profile), "--out", str(out)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=600,
            )
            elapsed = time.monotonic() - started
            lines = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines() if line.strip()]
            compact = [{k: s.get(k) for k in KEEP} for s in lines]
            (DATA / f"{case.name}.jsonl").write_text(
                "".join(json.dumps(s, separators=(",", ":")) + "\n" for s in compact)
            )
            if heap_log.exists():
                shutil.copy(heap_log, DATA / f"{case.name}.heap.jsonl")
            print(
                f"{case.name}: exit {result.returncode} in {elapsed:.0f} s, {len(compact)} samples, "
                f"{compact[-1]['closed'] if compact else 0} connections",
                flush=True,
            )


# --- attribution (memray: which line, which container, how many bytes) ----------------------

ATTRIBUTION = DATA / "attribution.json"
ATTRIBUTION_PROFILE = """\
[target]
command = {command!r}
memray = true
memray_python_allocators = {exact}
[load]
users = 20
spawn_rate = 40
duration = "{duration}"
messages = 1
[phases]
baseline = "1s"
drain = "5s"
cooldown = "1s"
"""


@dataclass(frozen=True)
class Shape:
    """One Python leak shape with its truth: the keeper to name, the line and its bytes per connection."""

    name: str
    server: str
    args: str
    keeper: str  # a container name, or "task <coroutine label>"
    line: str | None  # the allocating user line, when the leak has one
    truth: float | None  # its bytes per connection
    exact: bool = False  # memray_python_allocators
    duration: str = "45s"


SHAPES = [
    Shape("listener", "listener", "", "listener.LISTENERS", "tests/servers/listener.py:16", 1024 + 57),
    Shape("sessions", "sessions", "", "sessions.SESSIONS", "tests/servers/sessions.py:16", 1024 + 57),
    Shape("heartbeat", "heartbeat", "", "task heartbeat at tests/servers/heartbeat.py:9", None, None),
    *[
        Shape(
            f"bytes-{n}", "smallbytes", f"--bytes {n}", "smallbytes.AUDIT", "tests/servers/smallbytes.py:13", n + 33 + 8
        )
        for n in (64, 200, 2048, 8192)
    ],
    *[
        Shape(
            f"bytes-{n}-exact",
            "smallbytes",
            f"--bytes {n}",
            "smallbytes.AUDIT",
            "tests/servers/smallbytes.py:13",
            n + 33 + 8,
            exact=True,
        )
        for n in (64, 200, 2048, 8192)
    ],
]


def attribution(shapes: Sequence[Shape]) -> None:
    """Soak each shape under memray; keep what it named in bench/data/attribution.json."""
    DATA.mkdir(parents=True, exist_ok=True)
    results = json.loads(ATTRIBUTION.read_text()) if ATTRIBUTION.exists() else {}
    for shape in shapes:
        with tempfile.TemporaryDirectory(prefix="soak-attribution-") as tmp:
            command = f"{{python}} tests/servers/{shape.server}.py --port {{port}} {shape.args}".strip()
            profile = Path(tmp) / "profile.toml"
            profile.write_text(
                ATTRIBUTION_PROFILE.format(command=command, exact=str(shape.exact).lower(), duration=shape.duration),
                encoding="utf-8",
            )
            out = Path(tmp) / "run"
            subprocess.run(
                [sys.executable, "-m", "runner", "run", str(profile), "--out", str(out), "--quiet"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=900,
            )
            summary = json.loads((out / "summary.json").read_text())
        keepers = summary.get("keepers") or {}
        named = [c["name"] for c in keepers.get("containers", [])] + [
            f"task {t['coroutine']}" for t in keepers.get("tasks", [])
        ]
        site = next((s for s in summary.get("sites", []) if s["location"] == shape.line), None)
        heap = (summary.get("metrics") or {}).get("heap") or {}
        results[shape.name] = {
            "verdict": summary["verdict"],
            "keeper_named": shape.keeper in named,
            "named": named[:3],
            "chain": (keepers.get("chain") or {}).get("text"),
            "site_bytes": site["bytes_per_connection"] if site else None,
            "site_approximate": bool(site and site.get("approximate")),
            "truth": shape.truth,
            "heap_per_connection": heap.get("slope_per_connection"),
            "checkpoints": keepers.get("checkpoints"),
            "connections": summary["load"]["connections_closed"],
            "exact": shape.exact,
        }
        print(f"{shape.name}: {results[shape.name]}", flush=True)
        ATTRIBUTION.write_text(json.dumps(results, indent=1) + "\n")


def attribution_table() -> list[str]:
    """The attribution table from bench/data/attribution.json (empty when it was never recorded)."""
    if not ATTRIBUTION.exists():
        return []
    results = json.loads(ATTRIBUTION.read_text())
    lines = [
        "| shape | python allocators | verdict | keeper named | line's bytes/conn (truth) | within ±50% | chain |",
        "|---|---|---|---|---|---|---|",
    ]
    for shape in SHAPES:
        r = results.get(shape.name)
        if r is None:
            continue
        if shape.truth is None:
            figure, within = "-", "-"
        elif r["site_bytes"] is None:
            figure, within = f"not named ({shape.truth:.0f})", "no"
        else:
            figure = f"{r['site_bytes']:.0f}{' approx.' if r['site_approximate'] else ''} ({shape.truth:.0f})"
            within = "yes" if 0.5 * shape.truth <= r["site_bytes"] <= 1.5 * shape.truth else "no"
        lines.append(
            f"| {shape.name} | {'on' if shape.exact else 'off'} | {r['verdict']} | "
            f"{'yes' if r['keeper_named'] else 'no'} | {figure} | {within} | {r['chain'] or '-'} |"
        )
    return lines


# --- loading --------------------------------------------------------------------------------


def load_samples(name: str) -> list[dict[str, Any]]:
    path = DATA / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def heap_samples(name: str) -> list[dict[str, Any]]:
    """The server's own traced-heap series as samples, phased by its closed-connection count.

    baseline: before the first connection closed; steady: until the count stops rising;
    cooldown: after the last connection closed (every connection is closed by then).
    """
    path = DATA / f"{name}.heap.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        return []
    final = rows[-1]["closed"]
    last_rise = max(i for i, r in enumerate(rows) if r["closed"] < final) + 1 if final else len(rows)
    samples = []
    for i, r in enumerate(rows):
        phase = "baseline" if r["closed"] == 0 else ("steady" if i <= last_rise else "cooldown")
        samples.append(
            {
                "t": r["t"],
                "phase": phase,
                "closed": r["closed"],
                "opened": r["closed"],
                "open": 0 if phase != "steady" else None,
                "heap": r["heap"],
            }
        )
    return samples


# --- replay (pure) ----------------------------------------------------------------------------


def replay_samples(
    base: Sequence[dict[str, Any]],
    *,
    metric: str,
    cycles: int,
    start_at_beginning: bool,
    leak_bytes: float,
    every: int,
    rng: np.random.Generator,
) -> list[dict[str, Any]] | None:
    """A window of ``cycles`` steady cycles from a recorded run with a synthetic leak added.

    The leak adds ``leak_bytes`` per closed connection, in steps of ``leak_bytes * every``
    once every ``every`` connections (``every=1``: continuous). ``None`` when the recording
    is too short for the window.
    """
    steady = [s for s in base if s.get("phase") == "steady" and s.get(metric) is not None]
    if not steady:
        return None
    closed = np.array([s["closed"] for s in steady], dtype=float)
    latest_start = closed[-1] - cycles
    if latest_start < closed[0]:
        return None
    first = closed[0] if start_at_beginning else rng.uniform(closed[0], latest_start)
    begin = int(np.searchsorted(closed, first))
    end = int(np.searchsorted(closed, closed[begin] + cycles, side="right"))
    origin = closed[begin]
    stride = int(rng.integers(1, 3))  # sampled every 0.2 s as recorded, or every 0.4 s
    window = []
    for s in steady[begin + int(rng.integers(0, stride)) : end : stride]:
        extra = leak_bytes * every * np.floor((s["closed"] - origin) / every)
        window.append({"t": s["t"], "phase": "steady", "closed": s["closed"], metric: s[metric] + extra})
    return window


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    cycles_to_verdict: int | None


def judge_metric(window: list[dict[str, Any]], metric: str, settings: AnalysisSettings, *, timed: bool) -> Outcome:
    """Verdict on ``metric`` alone and, when ``timed``, the fewest cycles (500, 1K, 2K, ... on a
    doubling grid) after which the same verdict was already reached."""
    result = analyse(window, settings).metrics.get(metric)
    verdict = result.verdict if result else Verdict.INCONCLUSIVE
    if verdict is Verdict.INCONCLUSIVE or not timed:
        return Outcome(verdict, None)
    origin = window[0]["closed"]
    total = window[-1]["closed"] - origin
    size = 500
    while size < total:
        prefix = [s for s in window if s["closed"] - origin <= size]
        partial = analyse(prefix, settings).metrics.get(metric)
        if partial is not None and partial.verdict is verdict:
            return Outcome(verdict, size)
        size *= 2
    return Outcome(verdict, int(total))


# --- tables -----------------------------------------------------------------------------------

LENGTHS = (1_000, 5_000, 20_000)
LEAK_SIZES = {"heap": (0, 64, 256, 1024, 8192), "heap-nogc": (0, 64, 256, 1024), "rss": (0, 1024, 2048, 8192)}
#: Clean recordings with the heap read after a full GC (like memray checkpoints).
CLEAN_BASES = ("clean-a", "clean-b")
#: Longer clean recordings (~23K cycles) whose heap was read without a GC first (a GC sawtooth of
#: ~1.5 MB every ~4K cycles stays in): the 20K-cycle windows, and the hard heap case.
LONG_BASES = ("clean-long-a", "clean-long-b")
#: Which recordings (and which of their series) each tier replays.
TIER_BASES = {
    "heap": (CLEAN_BASES, "heap"),
    "heap-nogc": (LONG_BASES, "heap"),
    "rss": (CLEAN_BASES + LONG_BASES, "rss"),
}


def _series(name: str, metric: str) -> list[dict[str, Any]]:
    return heap_samples(name) if metric == "heap" else load_samples(name)


def detection_table(replicates: int, settings: AnalysisSettings, seed: int) -> list[str]:
    """Detection rate per tier, leak size and run length; 0 B rows are the clean false-alarm rate."""
    rng = np.random.default_rng(seed)
    lines = [
        "| tier | leak per connection | shape | cycles | replicates | LEAK | INCONCLUSIVE | PASS | median cycles to "
        "verdict (20K runs) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for tier, sizes in LEAK_SIZES.items():
        names, metric = TIER_BASES[tier]
        bases = [b for b in (_series(name, metric) for name in names if (DATA / f"{name}.jsonl").exists()) if b]
        for size in sizes:
            for every, shape in (
                ((1, "every connection"), (100, "1 in 100")) if size in (1024,) else ((1, "every connection"),)
            ):
                for cycles in LENGTHS:
                    counts = {v: 0 for v in Verdict}
                    decided: list[int] = []
                    made = 0
                    for i in range(replicates):
                        base = bases[i % len(bases)]
                        window = replay_samples(
                            base,
                            metric=metric,
                            cycles=cycles,
                            start_at_beginning=i // len(bases) % 2 == 0,
                            leak_bytes=size,
                            every=every,
                            rng=rng,
                        )
                        if window is None:
                            continue
                        outcome = judge_metric(window, metric, settings, timed=cycles == LENGTHS[-1])
                        counts[outcome.verdict] += 1
                        made += 1
                        if outcome.cycles_to_verdict is not None:
                            decided.append(outcome.cycles_to_verdict)
                    if not made:
                        continue
                    median = f"{int(np.median(decided)):,}" if decided else "-"
                    lines.append(
                        f"| {tier} | {size} B | {shape} | {cycles:,} | {made} | {_pct(counts[Verdict.LEAK], made)} | "
                        f"{_pct(counts[Verdict.INCONCLUSIVE], made)} | {_pct(counts[Verdict.PASS], made)} | {median} |"
                    )
    return lines


def _decoy_shapes() -> dict[str, Any]:
    """Benign shapes, as bytes added at relative position ``u`` (0..1) of the window and ``closed``.

    Magnitudes follow the corpus: the warm-up pool is 8 KB x 2,000 connections, cache entries
    are 2 KB, a GC tooth is 3 MB every 1,000 connections, fragmentation adds four 1 MB steps
    in the first 30 % of the run and then no more.
    """
    return {
        "warm-up 16 MB": lambda u, c, n: 16e6 * (1 - np.exp(-u / 0.05)),
        "cache full at 25%": lambda u, c, n: 2048 * n * np.minimum(u, 0.25),
        "cache full at 50%": lambda u, c, n: 2048 * n * np.minimum(u, 0.50),
        "cache full at 75%": lambda u, c, n: 2048 * n * np.minimum(u, 0.75),
        "GC sawtooth 3 MB / 1K": lambda u, c, n: 3e6 * ((c % 1000) / 1000),
        "fragmentation steps": lambda u, c, n: 1e6 * ((u >= 0.05) + (u >= 0.1) + (u >= 0.2) + (u >= 0.3)),
    }


def decoy_table(replicates: int, settings: AnalysisSettings, seed: int) -> list[str]:
    """False-alarm rate of each benign decoy shape laid on recorded clean series, per tier and length.

    A decoy is defined relative to the run ("a cache full at 25 % of the run"), so each
    replicate is a window of recorded clean noise (half from the first steady sample, with the
    real warm-up) with the decoy shape scaled to that window.
    """
    rng = np.random.default_rng(seed + 1)
    lines = [
        "| decoy | tier | cycles | replicates | false LEAK | INCONCLUSIVE | PASS |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for decoy, shape in _decoy_shapes().items():
        for tier in ("heap", "rss"):
            names, metric = TIER_BASES[tier]
            bases = [b for b in (_series(name, metric) for name in names if (DATA / f"{name}.jsonl").exists()) if b]
            for cycles in LENGTHS:
                counts = {v: 0 for v in Verdict}
                made = 0
                for i in range(replicates):
                    window = replay_samples(
                        bases[i % len(bases)],
                        metric=metric,
                        cycles=cycles,
                        start_at_beginning=i // len(bases) % 2 == 0,
                        leak_bytes=0,
                        every=1,
                        rng=rng,
                    )
                    if window is None:
                        continue
                    origin = window[0]["closed"]
                    for sample in window:
                        c = sample["closed"] - origin
                        sample[metric] += float(shape(c / cycles, c, cycles))
                    result = analyse(window, settings).metrics.get(metric)
                    counts[result.verdict if result else Verdict.INCONCLUSIVE] += 1
                    made += 1
                if made:
                    lines.append(
                        f"| {decoy} | {metric} | {cycles:,} | {made} | {_pct(counts[Verdict.LEAK], made)} | "
                        f"{_pct(counts[Verdict.INCONCLUSIVE], made)} | {_pct(counts[Verdict.PASS], made)} |"
                    )
    return lines


#: Recorded runs kept although no CASES entry makes them any more: an earlier corpus sized the
#: cache by entries, and this shared machine churned so slowly that the "50 %" cache filled at
#: 83 % of its run and the "75 %" one never filled. Within their runs they are still growing.
EXTRA_RUNS = (
    Case("cache-at-83", "", "growing", "", "cache of 2 KB entries, full at 83% of the run"),
    Case("cache-never-full", "", "growing", "", "cache of 2 KB entries, still filling at the end"),
)


def end_to_end_table(settings: AnalysisSettings) -> list[str]:
    """Each recorded corpus run re-analysed whole: process tiers from psutil, heap from its trace."""
    lines = [
        "| case | truth | cycles | overall (psutil tiers) | rss | uss | fds | threads | heap (traced) |",
        "| --- | --- | ---: | --- | --- | --- | --- | --- | --- |",
    ]
    for case in CASES + list(EXTRA_RUNS):
        if not (DATA / f"{case.name}.jsonl").exists():
            continue
        samples = load_samples(case.name)
        analysis = analyse(samples, settings)
        heap = analyse(heap_samples(case.name), settings).metrics.get("heap")
        cells = []
        for metric in ("rss", "uss", "fds", "threads"):
            m = analysis.metrics.get(metric)
            cells.append(_cell(m))
        cycles = samples[-1]["closed"] if samples else 0
        mark = analysis.verdict.value.upper()
        lines.append(
            f"| {case.name} ({case.note}) | {case.truth.upper()} | {cycles:,} | {mark} | "
            + " | ".join(cells)
            + f" | {_cell(heap)} |"
        )
    return lines


def _cell(metric: Any) -> str:
    if metric is None:
        return "-"
    slope = metric.slope_per_connection
    figure = "" if slope is None else (f" {slope:.0f} B/c" if metric.unit == "bytes" else f" {slope:.3f}/c")
    return f"{metric.verdict.value}{figure}"


def _pct(count: int, total: int) -> str:
    return f"{100 * count / total:.0f}%"


# --- run until decided: replay with the runner's looks -----------------------------------------

#: Longest replay window per tier (its max_duration is the window's time at the recorded churn).
LOOK_WINDOWS = {"heap": 10_000, "heap-long": 20_000, "heap-nogc": 20_000, "rss": 10_000}
LOOK_SIZES = {
    "heap": (0, 64, 256, 1024, 8192),
    "heap-long": (0, 64),
    "heap-nogc": (0, 64, 256, 1024),
    "rss": (0, 1024, 2048, 8192),
}
#: Recorded clean series with the heap after a full GC and at least ~20K steady cycles.
LONG_GC_BASES = ("clean-gc-long-a",)
LOOK_BASES = {**TIER_BASES, "heap-long": (LONG_GC_BASES, "heap")}
#: The targets the table is read against: (tier, leak bytes, cycles, share decided LEAK within them).
LOOK_TARGETS = {("heap", 1024): (1_000, 0.95), ("heap-long", 64): (20_000, 0.90), ("heap", 0): (5_000, 0.90)}


@dataclass(frozen=True)
class LookOutcome:
    """Where a replayed run stopped: its verdict, the cycles and seconds of steady churn, the look."""

    verdict: Verdict
    decided: bool
    cycles: int
    seconds: float
    looks: int
    planned: int


def run_looks(window: list[dict[str, Any]], settings: AnalysisSettings) -> LookOutcome:
    """Replay one window as an ``auto`` run whose max_duration is the window's length in time."""
    span = window[-1]["t"] - window[0]["t"]
    plan = plan_looks(max_duration=span, alpha=settings.alpha)
    decisions = replay_looks(window, settings, plan)
    last = decisions[-1]
    t_look = plan.times[last.look]
    return LookOutcome(
        verdict=last.verdict,
        decided=last.decided,
        cycles=last.cycles,
        seconds=t_look,
        looks=len(decisions),
        planned=plan.count,
    )


def _bases(tier: str) -> list[list[dict[str, Any]]]:
    names, metric = LOOK_BASES[tier]
    return [b for b in (_series(name, metric) for name in names if (DATA / f"{name}.jsonl").exists()) if b]


def looks_table(replicates: int, settings: AnalysisSettings, seed: int) -> list[str]:
    """Detection with the runner's looks: stop rate per verdict, cycles and minutes to the decision."""
    rng = np.random.default_rng(seed + 2)
    lines = [
        "| tier | leak per connection | max cycles (looks) | replicates | decided LEAK | decided PASS | "
        "INCONCLUSIVE at max "
        "| median cycles to decision | median minutes at recorded churn | target |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for tier, sizes in LOOK_SIZES.items():
        bases = _bases(tier)
        metric = LOOK_BASES[tier][1]
        cycles = LOOK_WINDOWS[tier]
        for size in sizes:
            outcomes = []
            for i in range(replicates):
                window = (
                    replay_samples(
                        bases[i % len(bases)],
                        metric=metric,
                        cycles=cycles,
                        start_at_beginning=i // len(bases) % 2 == 0,
                        leak_bytes=size,
                        every=1,
                        rng=rng,
                    )
                    if bases
                    else None
                )
                if window is not None:
                    outcomes.append(run_looks(window, settings))
            if not outcomes:
                continue
            made = len(outcomes)
            leak = [o for o in outcomes if o.decided and o.verdict is Verdict.LEAK]
            passed = [o for o in outcomes if o.decided and o.verdict is Verdict.PASS]
            undecided = made - len(leak) - len(passed)
            truth = leak if size else passed
            median = f"{int(np.median([o.cycles for o in truth])):,}" if truth else "-"
            minutes = f"{np.median([o.seconds for o in truth]) / 60:.1f}" if truth else "-"
            target = ""
            if (tier, size) in LOOK_TARGETS:
                within, share = LOOK_TARGETS[(tier, size)]
                hit = sum(1 for o in truth if o.cycles <= within) / made
                target = f"{100 * hit:.0f}% decided within {within:,} (target {100 * share:.0f}%)"
            looks = max(o.planned for o in outcomes)
            lines.append(
                f"| {tier} | {size} B | {cycles:,} ({looks} looks) | {made} | {_pct(len(leak), made)} | "
                f"{_pct(len(passed), made)} | {_pct(undecided, made)} | {median} | {minutes} | {target} |"
            )
    return lines


def looks_decoy_table(replicates: int, settings: AnalysisSettings, seed: int) -> list[str]:
    """False LEAK over all looks of the benign decoys, each scaled to the whole window (its max_duration)."""
    rng = np.random.default_rng(seed + 3)
    lines = [
        "| decoy | tier | max cycles | replicates | false LEAK (over all looks) | decided PASS | INCONCLUSIVE at max |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for decoy, shape in _decoy_shapes().items():
        for tier in ("heap", "rss"):
            bases = _bases(tier)
            metric = LOOK_BASES[tier][1]
            cycles = LOOK_WINDOWS[tier]
            outcomes = []
            for i in range(replicates):
                window = (
                    replay_samples(
                        bases[i % len(bases)],
                        metric=metric,
                        cycles=cycles,
                        start_at_beginning=i // len(bases) % 2 == 0,
                        leak_bytes=0,
                        every=1,
                        rng=rng,
                    )
                    if bases
                    else None
                )
                if window is None:
                    continue
                origin = window[0]["closed"]
                for sample in window:
                    c = sample["closed"] - origin
                    sample[metric] += float(shape(c / cycles, c, cycles))
                outcomes.append(run_looks(window, settings))
            if outcomes:
                made = len(outcomes)
                leak = sum(1 for o in outcomes if o.verdict is Verdict.LEAK)  # stopped on LEAK, or LEAK at max
                passed = sum(1 for o in outcomes if o.decided and o.verdict is Verdict.PASS)
                lines.append(
                    f"| {decoy} | {metric} | {cycles:,} | {made} | {_pct(leak, made)} | {_pct(passed, made)} | "
                    f"{_pct(made - leak - passed, made)} |"
                )
    return lines


def looks_corpus_table(settings: AnalysisSettings) -> list[str]:
    """Each recorded corpus run replayed as an ``auto`` run (max_duration = its recorded steady phase)."""
    lines = [
        "| case | truth | recorded cycles | psutil tiers: stop verdict | at cycles | heap (traced): stop verdict | "
        "at cycles |",
        "| --- | --- | ---: | --- | ---: | --- | ---: |",
    ]
    for case in CASES + list(EXTRA_RUNS):
        if not (DATA / f"{case.name}.jsonl").exists():
            continue
        cells = []
        for samples in (load_samples(case.name), heap_samples(case.name)):
            steady = [s for s in samples if s.get("phase") == "steady"]
            if len(steady) < 2:
                cells += ["-", "-"]
                continue
            outcome = run_looks(steady, settings)
            mark = outcome.verdict.value.upper() if outcome.decided else f"{outcome.verdict.value} (at max)"
            cells += [mark, f"{outcome.cycles:,}"]
        cycles = load_samples(case.name)[-1]["closed"]
        lines.append(f"| {case.name} ({case.note}) | {case.truth.upper()} | {cycles:,} | " + " | ".join(cells) + " |")
    return lines


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="soak every corpus case end to end and keep its series in bench/data/")
    rec.add_argument("--only", nargs="*", default=None, help="case names to record (default: all)")
    att = sub.add_parser("attribution", help="soak the Python leak shapes under memray: keeper, line, bytes")
    att.add_argument("--only", nargs="*", default=None, help="shape names (default: all)")
    tab = sub.add_parser("table", help="the detection tables, from bench/data/ only")
    tab.add_argument("--replicates", type=int, default=50, help="replicates per detection cell (default 50)")
    tab.add_argument("--decoy-replicates", type=int, default=100, help="replicates per decoy cell (default 100)")
    tab.add_argument("--seed", type=int, default=3)
    lk = sub.add_parser("looks", help="run until decided: replay with the runner's looks, from bench/data/ only")
    lk.add_argument("--replicates", type=int, default=40, help="replicates per cell (default 40)")
    lk.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.command == "record":
        chosen = [c for c in CASES if args.only is None or c.name in args.only]
        record(chosen)
        return 0
    if args.command == "attribution":
        attribution([s for s in SHAPES if args.only is None or s.name in args.only])
        print("\n".join(attribution_table()))
        return 0
    settings = AnalysisSettings()
    started = time.perf_counter()
    if args.command == "looks":
        print("## Run until decided: detection (synthetic leak on recorded clean series, the runner's looks)\n")
        print("\n".join(looks_table(args.replicates, settings, args.seed)))
        print()
        print("## Run until decided: the recorded corpus runs replayed with the looks\n")
        print("\n".join(looks_corpus_table(settings)))
        print("\n## Run until decided: benign decoys, false LEAK over all looks\n")
        print("\n".join(looks_decoy_table(args.replicates, settings, args.seed)))
        print(f"\n(analysis time: {time.perf_counter() - started:.0f} s)")
        return 0
    print("## End to end (each corpus run once, re-analysed from bench/data/)\n")
    print("\n".join(end_to_end_table(settings)))
    print("\n## Replay: detection rate (synthetic leak added to recorded clean series)\n")
    print("\n".join(detection_table(args.replicates, settings, args.seed)))
    print("\n## Replay: benign decoys (decoy shapes laid on recorded clean series)\n")
    print("\n".join(decoy_table(args.decoy_replicates, settings, args.seed)))
    if ATTRIBUTION.exists():
        print("\n## Attribution: what keeps the memory, and the line's bytes per connection (memray)\n")
        print("\n".join(attribution_table()))
    print(f"\n(analysis time: {time.perf_counter() - started:.0f} s for all tables)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
