"""Render report.html again from a saved run folder (summary.json is left as it is)."""

from __future__ import annotations

import argparse
from pathlib import Path


class ReportCommand:
    """Write report.html again from a saved run folder."""

    def prepare_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a folder made by `soak run`")

    def run(self, args: argparse.Namespace) -> int:
        from ..finish import evaluate
        from ..report import render_report
        from ..results import RunFolder, RunRecord

        record = RunRecord.load(args.run_dir)
        analysis, summary = evaluate(record)
        folder = RunFolder(args.run_dir)
        folder.report.write_text(render_report(record, summary, analysis), encoding="utf-8")
        print(f"report: {folder.report}")
        return 0
