"""Capacity: concurrent connections held with < 1% errors, and client memory per held connection.

Runs ``soak run PROFILE`` (default profiles/capacity-50k.toml: 50,000 users, 3 Locust
workers, the 4-process SO_REUSEPORT target, source addresses spread over 127.0.0.x) and,
beside it, samples the RSS of the load processes (the soak runner and its workers) with
psutil. Client memory per held connection = (load RSS at the peak of open connections -
load RSS before the ramp) / open connections at that peak.

    .venv/bin/python bench/load_capacity.py [PROFILE] [--users N] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import psutil

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent


def _load_processes(runner: psutil.Process) -> list[psutil.Process]:
    """The runner (Locust master or in-process users) and its Locust worker processes."""
    procs = [runner]
    for child in runner.children(recursive=True):
        try:
            cmdline = child.cmdline()
        except psutil.Error:
            continue
        if "runner" in cmdline and "worker" in cmdline:
            procs.append(child)
    return procs


def _rss(procs: list[psutil.Process]) -> int:
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total


def _last_sample(path: Path) -> dict | None:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", nargs="?", default=str(ROOT / "profiles" / "capacity-50k.toml"))
    parser.add_argument("--users", help="override load.users")
    parser.add_argument("--duration", help="override load.duration")
    parser.add_argument("--out", type=Path, default=Path("/tmp/soak-capacity"))
    args = parser.parse_args(argv)
    command = [sys.executable, "-m", "runner", "run", args.profile, "--out", str(args.out), "--overwrite", "--quiet"]
    if args.users:
        command += ["--users", args.users]
    if args.duration:
        command += ["--duration", args.duration]
    started = time.monotonic()
    run = subprocess.Popen(command, cwd=ROOT)
    runner = psutil.Process(run.pid)
    baseline_rss = None
    peak = {"open": 0, "rss": 0, "t": 0.0}
    target_pid = None
    while run.poll() is None:
        time.sleep(1.0)
        if target_pid is None:
            try:
                target_pid = json.loads((args.out / "meta.json").read_text()).get("target", {}).get("pid")
            except (OSError, ValueError):
                pass
        sample = _last_sample(args.out / "samples.jsonl")
        try:
            procs = _load_processes(runner)
        except psutil.Error:
            continue
        rss = _rss(procs)
        if sample is None or target_pid is None:
            continue
        if sample.get("phase") == "baseline":
            baseline_rss = rss  # workers started, no users yet
        if sample.get("open", 0) > peak["open"]:
            peak = {"open": sample["open"], "rss": rss, "t": time.monotonic() - started, "processes": len(procs)}
    summary = json.loads((args.out / "summary.json").read_text())
    run_json = json.loads((args.out / "run.json").read_text())
    load = summary["load"]
    requests = load.get("requests") or 0
    errors = load.get("errors") or 0
    print(f"profile {args.profile}: exit code {run.returncode}, verdict {summary['verdict']}")
    print(f"peak concurrent connections (samples): {load['peak_concurrent']}")
    print(
        f"connections opened {load['connections_opened']}, closed {load['connections_closed']}, "
        f"Locust requests {requests}, failures {errors} ({100.0 * errors / max(requests, 1):.3f}%)"
    )
    if baseline_rss is not None and peak["open"]:
        per_conn = (peak["rss"] - baseline_rss) / peak["open"]
        print(
            f"load processes ({peak.get('processes')}): RSS {baseline_rss / 1e6:.0f} MB before the ramp, "
            f"{peak['rss'] / 1e6:.0f} MB at {peak['open']} open -> {per_conn / 1024:.1f} KB per held connection"
        )
    print(f"load generator: {json.dumps(run_json.get('load_generator'))}")
    for note in summary.get("notes", []):
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
