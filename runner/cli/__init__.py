"""The ``soak`` command line: one module per subcommand, errors mapped to exit codes here only."""

from __future__ import annotations

import argparse
import sys
from typing import Protocol, Sequence

from ..errors import EXIT_RUN_ERROR, EXIT_USAGE, SoakError
from ..redact import redact_text
from . import analyze, history, report, run, worker

__all__ = ["main", "COMMANDS"]


class Command(Protocol):
    """A subcommand: its docstring is the --help text; it fills its parser and runs."""

    def prepare_parser(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


#: (name, command class) of every subcommand, in --help order.
COMMANDS: list[tuple[str, type[Command]]] = [
    ("run", run.RunCommand),
    ("analyze", analyze.AnalyzeCommand),
    ("report", report.ReportCommand),
    ("history", history.HistoryCommand),
    ("worker", worker.WorkerCommand),
]

EPILOG = """\
exit codes: 0 pass, 1 leak (or another threshold failed), 2 usage or profile error,
            3 run error (target did not start or died, load generator failed), 4 inconclusive

examples:
  soak run profiles/smoke.toml
  soak run --target "{python} -m runner.targets.leaky --port {port}" --users 100 --duration 1m
  soak run --target "node server.js --port {port}" --url "ws://127.0.0.1:{port}/ws"
  soak analyze reports/20261128T120000Z-smoke --budget 64
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="soak",
        description="Prove that a WebSocket server does not leak under connection churn.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from importlib.metadata import PackageNotFoundError, version

    try:
        parser.add_argument("--version", action="version", version=f"%(prog)s {version('soak-runner')}")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
        pass
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name, command_class in COMMANDS:
        command = command_class()
        doc = (command_class.__doc__ or "").strip()
        sub = subparsers.add_parser(
            name,
            help=doc.splitlines()[0] if doc else None,
            description=doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.prepare_parser(sub)
        sub.set_defaults(entry=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``soak`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.entry(args))
    except SoakError as exc:
        print(f"soak: error: {redact_text(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("soak: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_USAGE
    except Exception:  # a bug in soak-runner: keep the traceback, it is the bug report
        import traceback

        traceback.print_exc()
        print("soak: internal error (a bug in soak-runner; the traceback above helps fix it)", file=sys.stderr)
        return EXIT_RUN_ERROR
