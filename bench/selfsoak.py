"""Self-soak: does the runner itself leak? Soak the bundled echo server for a long time while
sampling the *runner's* own process, then judge the runner's memory with the project's own
leak-slope analysis (``soak analyze``, exactly as a target is judged).

    .venv/bin/python bench/selfsoak.py --duration 30m --out reports/selfsoak

Layout of ``--out``: ``inner/`` is the ordinary run folder of the soak the runner did;
``code/`` is the frozen copy of the runner package that ran (the working tree may change
during half an hour); the top folder is a run folder whose "target" is the runner process (pid, RSS, USS, fds,
threads), with the inner run's connection counters and phases, so ``soak analyze`` and
``soak report`` work on it. Exit code: the verdict's (0 pass, 1 leak, 3 error, 4 inconclusive).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from runner.profile import parse_profile
from runner.results import FORMAT_VERSION, RunFolder, SampleWriter, write_json
from runner.units import format_duration, parse_duration

__all__ = ["main", "sample_runner", "last_sample"]


def last_sample(path: Path) -> dict[str, Any]:
    """The last complete line of the inner run's ``samples.jsonl`` (``{}`` before the first)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 8192))
            lines = fh.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            sample = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(sample, dict) and "closed" in sample:
            return sample
    return {}


def sample_runner(process: psutil.Process) -> dict[str, Any] | None:
    """RSS, USS, fds and threads of the runner process alone (not its target child)."""
    try:
        with process.oneshot():
            return {
                "rss": process.memory_info().rss,
                "uss": process.memory_full_info().uss,
                "fds": process.num_fds(),
                "threads": process.num_threads(),
                "cpu": None,
                "procs": 1,
            }
    except psutil.Error:
        return None


def snapshot_code(folder: Path) -> Path:
    """Copy the ``runner`` package into ``folder`` and return it (for PYTHONPATH).

    A soak takes half an hour; the working tree may change meanwhile (templates are read
    lazily at the end). The soak and its verdict run this frozen copy instead.
    """
    source = Path(__file__).resolve().parent.parent / "runner"
    shutil.copytree(source, folder / "runner", ignore=shutil.ignore_patterns("__pycache__"))
    return folder.resolve()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", default="30m", help="steady churn of the inner soak (default 30m)")
    parser.add_argument("--users", type=int, default=20, help="concurrent connections (default 20)")
    parser.add_argument("--think", default="50ms", help="pause between connections of one user (default 50ms)")
    parser.add_argument("--interval", default="2s", help="sampling interval of the runner (default 2s)")
    parser.add_argument("--out", type=Path, default=None, help="folder (default reports/<UTC time>-selfsoak)")
    args = parser.parse_args(argv)
    duration = parse_duration(args.duration, key="--duration")
    interval = parse_duration(args.interval, key="--interval")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or Path("reports") / f"{stamp}-selfsoak"
    outer = RunFolder(out)
    outer.create()
    inner = RunFolder(out / "inner")
    profile_file = out / "inner.toml"
    profile_file.write_text(
        "\n".join(
            [
                'name = "selfsoak-inner"',
                "[target]",
                'command = "{python} -m runner.targets.echo --port {port}"',
                "memray = false",
                "[load]",
                f"users = {args.users}",
                f"spawn_rate = {args.users}",
                f'duration = "{format_duration(duration)}"',
                f'think = "{args.think}"',
                "[sampling]",
                'interval = "1s"',
                "",
            ]
        ),
        encoding="utf-8",
    )
    code_dir = snapshot_code(out / "code")
    env = dict(os.environ, PYTHONPATH=str(code_dir))
    command = [
        sys.executable,
        "-m",
        "runner",
        "run",
        str(profile_file.resolve()),
        "--out",
        str(inner.path.resolve()),
        "--quiet",
    ]
    log = open(out / "runner.log", "wb")
    runner = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=code_dir, env=env
    )
    process = psutil.Process(runner.pid)
    profile = parse_profile(
        {
            "target": {"pid": runner.pid, "url": "ws://127.0.0.1:1/"},
            "load": {"users": args.users, "duration": duration},
        },
        name="selfsoak",
    )
    t0 = time.monotonic()
    write_json(
        outer.meta,
        {
            "format": FORMAT_VERSION,
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "argv": sys.argv,
            "profile": profile.to_dict(),
            "environment": {"python": sys.version.split()[0], "cpus": os.cpu_count()},
            "target": {"command": command, "pid": runner.pid},
            "notes": ["the 'target' of this folder is the runner process itself; inner/ is the soak it ran"],
        },
    )
    previous_cpu: tuple[float, float] | None = None
    try:
        with SampleWriter(outer.samples) as writer:
            while runner.poll() is None:
                metrics = sample_runner(process)
                counters = last_sample(inner.samples)
                if metrics is not None:
                    now = time.monotonic()
                    try:
                        times = process.cpu_times()
                        cpu_now = times.user + times.system
                    except psutil.Error:
                        cpu_now = None
                    if previous_cpu is not None and cpu_now is not None and now > previous_cpu[0]:
                        metrics["cpu"] = round(100.0 * (cpu_now - previous_cpu[1]) / (now - previous_cpu[0]), 1)
                    if cpu_now is not None:
                        previous_cpu = (now, cpu_now)
                    writer.write(
                        {
                            "t": round(now - t0, 3),
                            "wall": round(time.time(), 3),
                            "phase": counters.get("phase", "starting"),
                            "opened": counters.get("opened", 0),
                            "closed": counters.get("closed", 0),
                            "open": counters.get("open", 0),
                            "errors": counters.get("errors", 0),
                            **metrics,
                            "heap": None,
                        }
                    )
                time.sleep(interval)
    except KeyboardInterrupt:
        runner.send_signal(signal.SIGINT)
    code = runner.wait()
    log.close()
    inner_run = json.loads(inner.run.read_text()) if inner.run.exists() else {}
    failed = code not in (0, 1, 4)
    write_json(
        outer.run,
        {
            "format": FORMAT_VERSION,
            "ended_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "phases": inner_run.get("phases", []),
            "interrupted": bool(inner_run.get("interrupted")),
            "error": {"kind": "runner_failed", "message": f"the inner soak exited with code {code}; see runner.log"}
            if failed
            else None,
            "target": {
                "pid": runner.pid,
                "exit_code": code,
                "signal": None,
                "crashed": failed,
                "started_by_runner": True,
                "log_tail": [],
            },
            "notes": [f"inner soak verdict exit code {code} (the echo server's own verdict)"],
        },
    )
    # judged by the snapshot too (``soak analyze``), so the verdict uses the code that ran
    analyze = subprocess.run(
        [sys.executable, "-m", "runner", "analyze", str(out.resolve()), "--quiet"],
        cwd=code_dir,
        env=env,
        capture_output=True,
        text=True,
    )
    if not outer.summary.exists():
        print(analyze.stderr, file=sys.stderr)
        return 3
    summary = json.loads(outer.summary.read_text(encoding="utf-8"))
    print(f"runner memory verdict: {summary['verdict'].upper()} - {summary['reasons'][0]}")
    for name, metric in summary["metrics"].items():
        print(f"  {name}: {metric['reason']}")
    print(
        f"inner soak exit code {code}; {summary['load']['connections_closed']} connections; "
        f"report: {out / 'report.html'}"
    )
    return int(summary["exit_code"])


if __name__ == "__main__":
    sys.exit(main())
