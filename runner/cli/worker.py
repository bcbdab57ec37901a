"""Join a soak run's Locust master as a load worker (for loads one machine cannot generate).

The master (``soak run`` with load.remote_workers > 0 and load.master_bind set to an address
this machine can reach) sends the URL and the load settings; this process churns
connections until the master ends the run.
"""

from __future__ import annotations

import argparse

from ..errors import UsageError

__all__ = ["WorkerCommand", "parse_master"]

DEFAULT_MASTER_PORT = 5557


def parse_master(text: str) -> tuple[str, int]:
    """``HOST[:PORT]`` -> (host, port); a UsageError names what is wrong."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep:
        host, port_text = text.strip(), str(DEFAULT_MASTER_PORT)
    host = host.strip("[]")
    if not host:
        raise UsageError(f"--master {text!r} has no host", hint="write HOST[:PORT], e.g. --master 10.0.0.5:5557")
    try:
        port = int(port_text)
    except ValueError:
        raise UsageError(
            f"--master {text!r}: {port_text!r} is not a port number",
            hint="write HOST[:PORT], e.g. --master 10.0.0.5:5557",
        ) from None
    if not 0 < port < 65536:
        raise UsageError(f"--master {text!r}: port {port} is out of range 1-65535")
    return host, port


class WorkerCommand:
    """Join a soak run's Locust master as a load worker.

    The master sends the URL and load settings; this process churns connections until
    the master ends the run. Start `soak run` with load.remote_workers set first.
    """

    def prepare_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--master",
            required=True,
            metavar="HOST[:PORT]",
            help=f"the soak run's Locust master (default port {DEFAULT_MASTER_PORT})",
        )
        parser.add_argument(
            "--config-timeout",
            type=float,
            default=120.0,
            metavar="SECONDS",
            help="give up when the master sends no run within this time (default 120)",
        )
        parser.add_argument(
            "--parent-pid", type=int, default=None, help=argparse.SUPPRESS
        )  # local workers: end with the runner

    def run(self, args: argparse.Namespace) -> int:
        host, port = parse_master(args.master)
        from ..load.worker import WorkerOptions, run_worker  # imports Locust (gevent patching) only here

        return run_worker(
            WorkerOptions(
                master_host=host, master_port=port, config_timeout=args.config_timeout, parent_pid=args.parent_pid
            )
        )
