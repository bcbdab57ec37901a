"""Re-analyse a saved run folder with new thresholds, without re-running it.

Rewrites summary.json and report.html in RUN_DIR and exits with the verdict's code.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..profile import _number  # the profile's own validation of numbers


class AnalyzeCommand:
    """Re-analyse a saved run (new thresholds, new method) without re-running it."""

    def prepare_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a folder made by `soak run`")
        parser.add_argument("--budget", metavar="BYTES", help="bytes per connection a metric may grow (analysis.budget_bytes_per_connection)")
        parser.add_argument("--alpha", metavar="A", help="significance level (analysis.alpha)")
        parser.add_argument("--quiet", action="store_true", help="print nothing but errors")

    def run(self, args: argparse.Namespace) -> int:
        from ..finish import finish_run
        from .run import print_verdict

        overrides = {}
        if args.budget is not None:
            overrides["budget_bytes_per_connection"] = _number(float, minimum=0)(args.budget, "--budget")
        if args.alpha is not None:
            overrides["alpha"] = _number(float, minimum=0, exclusive=True)(args.alpha, "--alpha")
        summary = finish_run(args.run_dir, overrides=overrides)
        if not args.quiet:
            print_verdict(summary, args.run_dir)
        return int(summary["exit_code"])
