"""Re-analyse a saved run folder with new thresholds, without re-running it.

Rewrites summary.json and report.html in RUN_DIR and exits with the verdict's code.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from ..profile import _number, _significance  # the profile's own validation, same messages

__all__ = ["AnalyzeCommand", "OPTIONS"]

#: (option, metavar, [analysis] key, validator, help) of every threshold `soak analyze` can override.
OPTIONS: tuple[tuple[str, str, str, Callable[[Any, str], Any], str], ...] = (
    (
        "--budget",
        "BYTES",
        "budget_bytes_per_connection",
        _number(float, minimum=0),
        "heap bytes per connection a run may keep (default 32)",
    ),
    (
        "--rss-budget",
        "BYTES",
        "rss_budget_bytes_per_connection",
        _number(float, minimum=0),
        "RSS/USS bytes per connection a run may keep (default 1024)",
    ),
    (
        "--budget-per-hour",
        "BYTES",
        "budget_bytes_per_hour",
        _number(float, minimum=0),
        "bytes per hour of steady churn any memory metric may grow (default: no hourly limit)",
    ),
    ("--alpha", "A", "alpha", _significance, "significance level of the trend test and intervals (default 0.05)"),
    (
        "--min-cycles",
        "N",
        "min_cycles",
        _number(int, minimum=1),
        "fewest closed connections for a verdict (default 200)",
    ),
)


class AnalyzeCommand:
    """Re-analyse a saved run (new thresholds, new method) without re-running it.

    Every threshold is the [analysis] key of the profile the run was made with, unless
    overridden here. summary.json and report.html are rewritten; the exit code is the verdict's.
    """

    def prepare_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a folder made by `soak run`")
        for option, metavar, key, _, text in OPTIONS:
            parser.add_argument(option, metavar=metavar, dest=key, help=f"{text} [analysis.{key}]")
        parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
        parser.add_argument(
            "--history",
            metavar="PATH",
            type=Path,
            help="run history database to record the run in (default: the profile's)",
        )

    def run(self, args: argparse.Namespace) -> int:
        from ..finish import finish_run
        from .run import print_verdict

        overrides: dict[str, Any] = {}
        for option, _, key, convert, _ in OPTIONS:
            value = getattr(args, key)
            if value is not None:
                overrides[key] = convert(value, option)
        summary = finish_run(args.run_dir, overrides=overrides, history=args.history)
        if not args.quiet:
            print_verdict(summary, args.run_dir)
        return int(summary["exit_code"])
