"""Run a soak: start the target, churn connections, sample its memory, and judge the slope.

PROFILE is a TOML file (see profiles/); options given here override its keys.
The run folder (default reports/<UTC time>-<profile>/) gets samples.jsonl as the run goes,
then summary.json, report.html and target.log. The exit code is the verdict's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..analysis.keepers import keeper_lines
from ..profile import AUTO, load_profile
from ..units import parse_duration


def _duration(text: str) -> str:
    if text.strip().lower() != AUTO:
        parse_duration(text, key="duration")  # fail early with the profile's own message
    return text


class RunCommand:
    """Run a soak against a WebSocket server and judge whether it leaks.

    PROFILE is a TOML file (see profiles/); options given here override its keys.
    The run folder (default reports/<UTC time>-<profile>/) gets samples.jsonl as the
    run goes, then summary.json, report.html and target.log. The exit code is the
    verdict's: 0 pass, 1 leak, 2 usage error, 3 run error, 4 inconclusive.
    """

    def prepare_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "profile",
            nargs="?",
            metavar="PROFILE",
            help="TOML load profile (optional with --target, --pid, or --url and --metrics-url)",
        )
        target = parser.add_argument_group("target")
        target.add_argument(
            "--target",
            metavar="CMD",
            help="command that starts the server; {port} and {python} are substituted, "
            'e.g. "{python} -m runner.targets.echo --port {port}"',
        )
        target.add_argument(
            "--url", metavar="URL", help="ws:// or wss:// URL to connect to (default ws://127.0.0.1:{port}/)"
        )
        target.add_argument(
            "--pid",
            type=int,
            metavar="PID",
            help="sample this already running server instead of starting one; a Python server also gets memray, "
            "attached with gdb (--no-memray skips it)",
        )
        target.add_argument(
            "--metrics-url",
            metavar="URL",
            help="the server's Prometheus /metrics page to sample (sampling.metrics_url; may use "
            "{port}); with --url alone, a complete run of a server soak cannot see as a process",
        )
        memray = target.add_mutually_exclusive_group()
        memray.add_argument(
            "--memray",
            dest="memray",
            action="store_true",
            default=None,
            help="track the Python target's heap with memray",
        )
        memray.add_argument("--no-memray", dest="memray", action="store_false", help="do not use memray")
        load = parser.add_argument_group("load")
        load.add_argument(
            "--users",
            metavar="N",
            help="concurrent users at steady state (each holds load.connections_per_user connections, 1 by default)",
        )
        load.add_argument("--spawn-rate", metavar="R", help="users started per second")
        load.add_argument(
            "--duration",
            metavar="DUR",
            help=(
                'length of the steady churn phase, e.g. 90s, 10m, 8h, or "auto": stop once the verdict is decided '
                "(at most load.max_duration)"
            ),
        )
        load.add_argument("--workers", metavar="K", help="Locust worker processes (0 = in-process)")
        output = parser.add_argument_group("output")
        output.add_argument(
            "--out", metavar="DIR", type=Path, help="run folder (default reports/<UTC time>-<profile>/)"
        )
        output.add_argument("--overwrite", action="store_true", help="replace the run in --out if it holds one")
        output.add_argument("--quiet", action="store_true", help="no progress output, only the verdict")
        output.add_argument(
            "--history",
            metavar="PATH",
            help="run history database (default: history.path, $SOAK_HISTORY, reports/history.sqlite)",
        )

    def run(self, args: argparse.Namespace) -> int:
        from ..progress import Progress

        overrides = {
            "target": {"command": args.target, "url": args.url, "pid": args.pid, "memray": args.memray},
            "load": {
                "users": args.users,
                "spawn_rate": args.spawn_rate,
                "duration": args.duration,
                "workers": args.workers,
            },
            "history": {"path": args.history},
            "sampling": {"metrics_url": args.metrics_url},
        }
        profile = load_profile(args.profile, overrides=overrides)
        from ..run import run_soak  # imports Locust (gevent patching) only when running

        progress = Progress(quiet=args.quiet)
        result = run_soak(profile, out=args.out, overwrite=args.overwrite, progress=progress)
        print_verdict(result.summary, result.folder)
        return result.exit_code


def print_verdict(summary: dict, folder: Path) -> None:
    """The last lines of a run: verdict, its reason, where the report is."""
    reasons = summary.get("reasons") or [""]
    print(f"verdict: {summary['verdict'].upper()} - {reasons[0]}")
    for reason in reasons[1:]:
        print(f"  - {reason}")
    sites = summary.get("sites", [])
    over = [site for site in sites if site.get("over_budget", True)]
    # sites under budget are named only when the run leaked (a leak spread over small sites)
    for site in over[:3] or (sites[:3] if summary["verdict"] == "leak" else []):
        where = f"{site['location']} in {site['function']}" if site.get("function") else site["location"]
        if site.get("allocated_at"):  # a JVM class: where JFR saw it allocated
            where = f"{site['location']} allocated at {site['allocated_at']} in {site.get('function') or '?'}"
        label = "leak site" if site in over else "grew at"
        held = f", held through {', '.join(site['held_by'])}" if site.get("held_by") else ""
        root = f" (root: {site['root']})" if site.get("root") else ""
        print(f"  {label}: {where} keeps {site['bytes_per_connection']:.0f} B per connection{held}{root}")
    if summary["verdict"] in ("leak", "error"):
        for line in keeper_lines(summary.get("keepers")):
            print(f"  {line}")
    print(f"report: {folder / 'report.html'}")
