"""Render report.html again from a saved run folder (summary.json, junit.xml and the history are left as they are)."""

from __future__ import annotations

import argparse
from pathlib import Path


class ReportCommand:
    """Write report.html again from a saved run folder."""

    def prepare_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a folder made by `soak run`")

    def run(self, args: argparse.Namespace) -> int:
        from ..finish import rerender_report

        print(f"report: {rerender_report(args.run_dir)}")
        return 0
