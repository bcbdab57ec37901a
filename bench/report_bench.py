"""Benchmark: report generation for a 12-hour run sampled every 0.5 s (86,400 samples).

Usage (``make bench-report``)::

    .venv/bin/python bench/report_bench.py [--samples 86400] [--interval 0.5]

Writes a synthetic run folder (a leaking server: RSS grows 300 B per connection; every
field a real run records, including per-interval latency percentiles and a target log),
then measures, each in a fresh child process so peak memory is that step's own:

- ``report``: render report.html and junit.xml from the loaded record and its summary
  (charts, templates) - the part budgeted at < 10 s and < 500 MB;
- ``finish``: the whole ``soak analyze`` path (load samples.jsonl, analysis, summary,
  junit, report, history).

Prints one line per step: wall seconds of the step, peak RSS (ru_maxrss) of the child, and
its peak before the step began (for ``report``: the 86,400 loaded samples and the analysis).
:func:`synthetic_run` is also used by the tests (a run folder without running anything).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["synthetic_run", "main"]

PHASES = (("baseline", 0.04), ("ramp", 0.01), ("steady", 0.9), ("drain", 0.02), ("cooldown", 0.03))


def synthetic_run(
    folder: Path,
    *,
    samples: int = 2000,
    interval: float = 0.5,
    leak_bytes: float = 300.0,
    cycles_per_second: float = 150.0,
    users: int = 200,
    heap: bool = True,
    profile_name: str = "synthetic",
    started_at: str = "2026-11-28T12:00:00+00:00",
    log_lines: list[str] | None = None,
    sites: list[dict[str, Any]] | None = None,
    seed: int = 5,
) -> Path:
    """Write a complete run folder (meta.json, samples.jsonl, run.json, locust_stats.json, target.log)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    total = samples * interval
    bounds, start = [], 0.0
    for name, share in PHASES:
        bounds.append({"name": name, "start": round(start, 3), "end": round(start + share * total, 3)})
        start += share * total
    closed = opened = 0.0
    with open(folder / "samples.jsonl", "w", encoding="utf-8") as fh:
        for index in range(samples):
            t = index * interval
            phase = next((p["name"] for p in bounds if p["start"] <= t < p["end"]), "cooldown")
            churning = phase in ("ramp", "steady")
            if churning:
                step = cycles_per_second * interval * rng.uniform(0.8, 1.2)
                closed += step
                opened = closed + users
            else:
                opened = closed
            open_now = int(opened - closed)
            noise = rng.gauss(0, 200_000)
            sample = {
                "t": round(t, 3),
                "wall": 1_795_000_000 + t,
                "phase": phase,
                "opened": int(opened),
                "closed": int(closed),
                "open": open_now,
                "errors": 0,
                "rss": int(60_000_000 + leak_bytes * closed + 20_000_000 * (1 - math.exp(-closed / 4000)) + noise),
                "uss": int(50_000_000 + leak_bytes * closed + noise),
                "heap": int(20_000_000 + leak_bytes * 0.9 * closed + rng.gauss(0, 20_000)) if heap else None,
                "fds": 12 + open_now,
                "threads": 4,
                "cpu": rng.uniform(20, 60),
                "procs": 1,
            }
            if churning:
                sample["lat"] = {
                    "WS connect": [
                        round(rng.uniform(1, 3), 3),
                        round(rng.uniform(4, 8), 3),
                        round(rng.uniform(8, 30), 3),
                    ],
                    "WS echo": [
                        round(rng.uniform(0.2, 0.6), 3),
                        round(rng.uniform(1, 2), 3),
                        round(rng.uniform(2, 9), 3),
                    ],
                    "WS close": [
                        round(rng.uniform(0.3, 0.8), 3),
                        round(rng.uniform(1, 3), 3),
                        round(rng.uniform(3, 12), 3),
                    ],
                }
            fh.write(json.dumps(sample, separators=(",", ":")) + "\n")
    profile = {
        "name": profile_name,
        "target": {"command": ["{python}", "-m", "myapp.server", "--port", "{port}"], "url": "ws://127.0.0.1:{port}/"},
        "load": {"users": users, "duration": bounds[2]["end"] - bounds[2]["start"]},
        "sampling": {"interval": interval},
    }
    meta = {
        "format": 1,
        "started_at": started_at,
        "argv": ["soak", "run", f"profiles/{profile_name}.toml"],
        "profile": profile,
        "environment": {
            "python": "3.11",
            "platform": "Linux",
            "machine": "x86_64",
            "cpus": 2,
            "fd_limit": {"soft": 20000, "hard": 20000},
            "versions": {"locust": "2.x"},
        },
        "target": {
            "command": [sys.executable, "-m", "myapp.server", "--port", "40000"],
            "url": "ws://127.0.0.1:40000/",
            "pid": 4242,
        },
    }
    (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    run = {
        "format": 1,
        "ended_at": started_at,
        "phases": bounds,
        "interrupted": False,
        "error": None,
        "target": {"pid": 4242, "exit_code": 0, "signal": None, "crashed": False},
        "notes": [],
        "samples": samples,
    }
    if sites is not None:
        run["sites"] = sites
    (folder / "run.json").write_text(json.dumps(run), encoding="utf-8")
    requests = int(closed)
    stats = {
        "requests": [
            {
                "name": name,
                "method": "WS",
                "requests": requests,
                "failures": 0,
                "avg_ms": 2.0,
                "min_ms": 0.1,
                "max_ms": 80.0,
                "p50_ms": 1.0,
                "p95_ms": 5.0,
                "p99_ms": 12.0,
            }
            for name in ("close", "connect", "echo")
        ],
        "total": {
            "name": "Aggregated",
            "method": "",
            "requests": 3 * requests,
            "failures": 0,
            "avg_ms": 2.0,
            "min_ms": 0.1,
            "max_ms": 80.0,
            "p50_ms": 1.0,
            "p95_ms": 5.0,
            "p99_ms": 12.0,
        },
        "errors": [],
        "exceptions": [],
    }
    (folder / "locust_stats.json").write_text(json.dumps(stats), encoding="utf-8")
    lines = log_lines if log_lines is not None else [f"connection {i} closed" for i in range(200)]
    (folder / "target.log").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


_CHILD = """
import json, resource, sys, time
from pathlib import Path
step, folder, history = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
if step == "report":
    from runner.finish import evaluate
    from runner.report import render_report
    from runner.report.junit import render_junit
    from runner.results import RunRecord
    record = RunRecord.load(folder)
    analysis, summary = evaluate(record)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the loaded record and its analysis
    started = time.perf_counter()
    html = render_report(record, summary, log_tail=(folder / "target.log").read_text().splitlines()[-60:])
    xml = render_junit(summary)
    seconds = time.perf_counter() - started
    size = len(html)
else:
    from runner.finish import finish_run
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the interpreter and its imports
    started = time.perf_counter()
    summary = finish_run(folder, history=history)
    seconds = time.perf_counter() - started
    size = (folder / "report.html").stat().st_size
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"step": step, "seconds": round(seconds, 2), "peak_rss_mb": round(peak / 2**20, 1),
                  "before_mb": round(before / 2**20, 1), "report_kb": round(size / 1024)}))
"""


def _measure(step: str, folder: Path, history: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, step, str(folder), str(history)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"bench step {step} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--samples", type=int, default=86_400, help="samples in the synthetic run (default 86400 = 12 h at 0.5 s)"
    )
    parser.add_argument("--interval", type=float, default=0.5, help="sampling interval in seconds")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="soak-bench-report-") as tmp:
        folder = synthetic_run(Path(tmp) / "run", samples=args.samples, interval=args.interval, profile_name="bench")
        size = (folder / "samples.jsonl").stat().st_size
        print(
            f"{args.samples} samples ({args.samples * args.interval / 3600:.1f} h at {args.interval:g} s), "
            f"samples.jsonl {size / 2**20:.1f} MB"
        )
        for step in ("report", "finish"):
            result = _measure(step, folder, Path(tmp) / "history.sqlite")
            label = (
                "report.html + junit.xml"
                if step == "report"
                else "whole soak analyze (load, analysis, outputs, history)"
            )
            print(
                f"{step:>7}: {result['seconds']:6.2f} s, peak RSS {result['peak_rss_mb']:6.1f} MB "
                f"({result['before_mb']:.0f} MB before the step), report {result['report_kb']} KB  ({label})"
            )
    return 0


if __name__ == "__main__":
    started = time.perf_counter()
    code = main()
    print(
        f"total {time.perf_counter() - started:.1f} s (peak RSS of this parent "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)"
    )
    sys.exit(code)
