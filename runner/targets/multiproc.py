"""A multi-process WebSocket echo server: N worker processes share one port with SO_REUSEPORT.

One process holds at most ~19.9K sockets here (hard fd limit 20,000), so 50K concurrent
connections need several server processes, exactly as they need several load workers.
The parent starts ``--workers`` children, each binding the same port with SO_REUSEPORT
(the kernel spreads new connections across them), forwards SIGTERM/SIGINT to them, and
exits non-zero if a child dies on its own. The soak sampler covers the whole process
tree, so RSS and fds are the sums over the workers.

``--leak-bytes N`` makes every worker keep N bytes per connection forever (a leak spread
over processes, for testing the verdict on a multi-process server); 0 (default) is clean.

    python -m runner.targets.multiproc --port 8765 --workers 4
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import signal
import subprocess
import sys
import time
from typing import Any, Sequence

from websockets.asyncio.server import ServerConnection, serve

from ._serve import PING_INTERVAL, PING_TIMEOUT, add_keepalive_arguments, keepalive

__all__ = ["main", "serve_worker"]

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Linux: get SIGTERM when the parent dies, so no worker outlives the server."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent's SIGTERM forwarding still applies
        pass


async def serve_worker(host: str, port: int, leak_bytes: int, options: dict[str, Any] | None = None) -> None:
    """One worker: an echo server on a SO_REUSEPORT socket until SIGTERM or SIGINT."""
    kept: list[bytearray] = []  # only with --leak-bytes: the deliberate leak

    async def echo(websocket: ServerConnection) -> None:
        if leak_bytes:
            kept.append(bytearray(leak_bytes))
        async for message in websocket:
            await websocket.send(message)

    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: None if stop.done() else stop.set_result(None))
    # backlog: a 50K ramp arrives in bursts; compression off as in the other bundled targets.
    # keepalive pings on, websockets' defaults unless --ping-interval/--ping-timeout say otherwise
    options = options if options is not None else {"ping_interval": PING_INTERVAL, "ping_timeout": PING_TIMEOUT}
    async with serve(echo, host, port, reuse_port=True, backlog=4096, compression=None, max_queue=16, **options):
        print("ready", flush=True)  # tells the supervisor this worker's socket is bound
        await stop


def _supervise(args: argparse.Namespace) -> int:
    command = [
        sys.executable,
        "-m",
        "runner.targets.multiproc",
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--leak-bytes",
        str(args.leak_bytes),
        "--child",
        "--ping-interval",
        str(args.ping_interval or 0),
        "--ping-timeout",
        str(args.ping_timeout or 0),
    ]
    children = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(args.workers)]
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:  # announce only once every worker has bound the port
        if child.stdout is None or child.stdout.readline().strip() != "ready":
            forward(signal.SIGTERM, None)
            print(f"worker pid {child.pid} did not start", file=sys.stderr, flush=True)
            for other in children:
                other.wait()
            return 1
        child.stdout.close()
    print(
        f"listening on ws://{args.host}:{args.port}/ with {args.workers} worker processes "
        f"(pids {', '.join(str(c.pid) for c in children)})",
        flush=True,
    )
    exit_code = 0
    while any(child.poll() is None for child in children):
        dead = [c for c in children if c.poll() is not None]
        if dead and not stopping:
            print(
                f"worker pid {dead[0].pid} exited with code {dead[0].returncode}; stopping the others",
                file=sys.stderr,
                flush=True,
            )
            exit_code = 1
            forward(signal.SIGTERM, None)
        time.sleep(0.2)
    return exit_code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True, help="TCP port every worker listens on")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 2, help="server processes (default: one per CPU)"
    )
    parser.add_argument(
        "--leak-bytes", type=int, default=0, help="bytes kept forever per connection (default 0: clean)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    add_keepalive_arguments(parser)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.child:
        _die_with_parent()
        asyncio.run(serve_worker(args.host, args.port, args.leak_bytes, keepalive(args)))
        return 0
    return _supervise(args)


if __name__ == "__main__":
    sys.exit(main())
