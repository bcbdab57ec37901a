"""``soak history``: the recorded runs, newest last, with bytes per connection per metric."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

__all__ = ["HistoryCommand", "format_table"]

_METRIC_ORDER = ("heap", "uss", "rss", "fds", "threads")


def _cell(metric: str, figures: dict[str, Any] | None) -> str:
    from ..units import format_bytes

    if not figures or figures.get("slope_per_connection") is None:
        return "-"
    value = figures["slope_per_connection"]
    return format_bytes(value) if metric in ("heap", "uss", "rss") else f"{value:.3g}"


def format_table(runs: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Header plus one row per run (pure).

    Columns: started, profile, revision, verdict, per-metric slopes, cycles, errors, flags.
    """
    metrics = [m for m in _METRIC_ORDER if any(m in (r.get("metrics") or {}) for r in runs)]
    header = (
        ["started (UTC)", "profile", "revision", "verdict"]
        + [f"{m}/conn" for m in metrics]
        + ["cycles", "errors", "flags"]
    )
    rows = [header]
    for run in runs:
        flags = ", ".join(f"{m} regressed" for m in run.get("regressions") or [])
        rows.append(
            [
                str(run.get("started_at") or "-")[:19].replace("T", " "),
                str(run.get("profile")),
                str(run.get("revision") or "-"),
                str(run.get("verdict")).upper(),
            ]
            + [_cell(m, (run.get("metrics") or {}).get(m)) for m in metrics]
            + [
                f"{run['cycles']:,}" if run.get("cycles") is not None else "-",
                str(run.get("errors") if run.get("errors") is not None else "-"),
                flags,
            ]
        )
    return rows


class HistoryCommand:
    """Show the run history: verdict and bytes per connection of the last runs, oldest first.

    The database is --history PATH, else $SOAK_HISTORY, else reports/history.sqlite.
    A run whose growth per connection rose significantly against the previous passing
    runs of its profile is flagged "regressed" even when it stayed under budget.
    """

    def prepare_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--profile", metavar="NAME", help="only runs of this profile")
        parser.add_argument(
            "--history",
            metavar="PATH",
            type=Path,
            help="history database (default $SOAK_HISTORY or reports/history.sqlite)",
        )
        parser.add_argument("--limit", metavar="N", default="20", help="the last N runs (default 20)")
        parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")

    def run(self, args: argparse.Namespace) -> int:
        from ..history import History, resolve_path
        from ..profile import _number

        limit = _number(int, minimum=1)(args.limit, "--limit")
        path = resolve_path(args.history)
        with History(path, create=False) as db:
            runs = db.runs(args.profile, limit=limit)
            profiles = db.profiles()
        if args.json:
            json.dump(runs, sys.stdout, indent=2)
            sys.stdout.write("\n")
            return 0
        if not runs:
            known = f"; recorded profiles: {', '.join(profiles)}" if profiles else ""
            print(f"no runs{f' of profile {args.profile!r}' if args.profile else ''} in {path}{known}")
            return 0
        _print_table(format_table(runs), title=f"{len(runs)} run{'s' if len(runs) != 1 else ''} from {path}")
        return 0


def _print_table(rows: list[list[str]], *, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_lines=False)
    numeric = {i for i, h in enumerate(rows[0]) if h.endswith("/conn") or h in ("cycles", "errors")}
    for index, heading in enumerate(rows[0]):
        table.add_column(heading, justify="right" if index in numeric else "left", no_wrap=index < 4)
    colours = {"PASS": "green", "LEAK": "red", "INCONCLUSIVE": "yellow", "ERROR": "magenta"}
    for row in rows[1:]:
        table.add_row(*row[:3], f"[{colours.get(row[3], 'white')}]{row[3]}[/]", *row[4:])
    Console(width=None if sys.stdout.isatty() else 160).print(table)
