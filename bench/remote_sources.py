"""Verdicts of the bundled metrics_echo target (clean and leaky) from each remote source alone.

    python bench/remote_sources.py [--duration 30s] [--only metrics_url prometheus cgroup]

For each source the target is started here (not by soak), then ``soak run --url ...`` samples
it only through that source: its own /metrics page (``--metrics-url``), a real Prometheus
server (Debian's ``prometheus``, started on a free loopback port, scraping every second), or
a cgroup made for it (v2 child of /sys/fs/cgroup, or v1 child of this process's memory
cgroup). psutil is never used. Prints one markdown table row per run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runner.analysis.verdict import format_bytes  # noqa: E402
from tests.conftest import Server  # noqa: E402
from tests.sampling._remote import prometheus_binary, prometheus_server, wait_for_series  # noqa: E402

PROFILE = """
[load]
users = 40
spawn_rate = 40
duration = "{duration}"
[phases]
baseline = "3s"
drain = "5s"
cooldown = "3s"
[sampling]
interval = "0.5s"
{extra}
"""


def _run(folder: Path, extra: str, duration: str, url: str, *args: str) -> dict:
    profile = folder / "remote.toml"
    profile.write_text(PROFILE.format(duration=duration, extra=extra))
    out = folder / "run"
    command = [sys.executable, "-m", "runner", "run", str(profile), "--url", url, "--out", str(out), "--quiet", *args]
    subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    return json.loads((out / "summary.json").read_text())


def _cgroup() -> Path:
    import uuid

    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():
        parent = root
    else:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
        own = [line.split(":", 2)[2] for line in lines if line.split(":", 2)[1] == "memory"]
        parent = root / "memory" / own[0].lstrip("/")
    group = parent / f"soak-bench-{uuid.uuid4().hex[:12]}"
    group.mkdir()
    return group


def measure(source: str, leak_bytes: int, duration: str) -> dict:
    server = Server("runner.targets.metrics_echo", "--leak-bytes", str(leak_bytes))
    group: Path | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="soak-bench-remote-") as tmp:
            folder = Path(tmp)
            if source == "metrics_url":
                return _run(
                    folder, "", duration, server.url, "--metrics-url", f"http://127.0.0.1:{server.port}/metrics"
                )
            if source == "prometheus":
                with prometheus_server([f"127.0.0.1:{server.port}"], scrape_interval="1s") as prometheus:
                    wait_for_series(prometheus, 'process_resident_memory_bytes{job="soak"}')
                    extra = (
                        f'[sampling.prometheus]\nurl = "{prometheus}"\n'
                        "queries = { rss = 'process_resident_memory_bytes{job=\"soak\"}', "
                        "fds = 'sum(process_open_fds{job=\"soak\"})' }\n"
                    )
                    return _run(folder, extra, duration, server.url)
            group = _cgroup()
            (group / "cgroup.procs").write_text(str(server.process.pid))
            return _run(folder, f'cgroup = "{group}"', duration, server.url)
    finally:
        server.stop()
        if group is not None:
            group.rmdir()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", default="30s")
    parser.add_argument("--only", nargs="*", default=["metrics_url", "prometheus", "cgroup"])
    args = parser.parse_args()
    print("| source | target | verdict | rss per connection (95% CI) | fds | cycles | rss samples missing (why) |")
    print("|---|---|---|---|---|---|---|")
    for source in args.only:
        if source == "prometheus" and prometheus_binary() is None:
            print(f"| {source} | - | skipped: no prometheus binary | | | | |")
            continue
        for name, leak in (("clean", 0), ("leaky 4 KB/conn", 4096)):
            summary = measure(source, leak, args.duration)
            rss = summary["metrics"].get("rss", {})
            fds = summary["metrics"].get("fds", {})
            ci = "-"
            if rss.get("ci_low") is not None:
                low, high = format_bytes(rss["ci_low"]), format_bytes(rss["ci_high"])
                ci = f"{format_bytes(rss['slope_per_connection'])} ({low} to {high})"
            counts = rss.get("gaps") or {}
            why = ", ".join(f"{counts[k]} {k}" for k in ("errors", "stale", "absent") if counts.get(k))
            failures = summary["sources"].get(source, {}).get("reasons") or {}
            reasons = "; ".join(f"{reason} x{count}" for reason, count in failures.items())
            gaps = f"{counts.get('gaps', '-')}" + (f" ({why}{': ' + reasons if reasons else ''})" if why else "")
            verdict = f"{summary['verdict']} (exit {summary['exit_code']})"
            print(
                f"| {rss.get('source', source)} | {name} | {verdict} | {ci} | "
                f"{fds.get('verdict', '-')} | {summary['load']['connections_closed']} | {gaps} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
