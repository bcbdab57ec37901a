"""A WebSocket echo server that misbehaves on purpose: check your CI set-up (and ours) against faults.

Every fault a nightly soak meets in the wild, on demand:

- ``--exit-at-once CODE``      prints an error and exits before listening (a bad flag, a missing file).
- ``--never-ready``            prints a line and never listens (a stuck start-up).
- ``--exit-after S``           serves, then exits with ``--exit-code`` after S seconds (a crash).
- ``--kill-after S``           serves, then SIGKILLs itself after S seconds (the OOM killer).
- ``--leak-bytes B``           keeps B bytes per connection forever (memory rising before a death).
- ``--stall-after S``          after S seconds accepts TCP but never completes a handshake
                               and never answers a message again (a deadlock).
- ``--ignore-sigterm``         keeps serving through SIGTERM (only SIGKILL stops it).
- ``--children N``             forks N helper processes that ignore SIGTERM, and with
  ``--escape``                 puts them in their own session (they leave the process group).
- ``--say TEXT``               prints TEXT to its log at start, and
  ``--last-words TEXT``        prints TEXT just before a fault (log tails, escaping, redaction).

Run as ``python -m runner.targets.faulty --port PORT [fault options]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from typing import Any

__all__ = ["main", "build_parser"]

#: The per-connection state of ``--leak-bytes``: never removed.
KEPT: list[bytearray] = []

#: A helper that ignores SIGTERM and lives until SIGKILL (or 10 minutes, so nothing is immortal).
_STUBBORN_CHILD = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True, help="TCP port to listen on (127.0.0.1)")
    p.add_argument("--exit-at-once", type=int, metavar="CODE", help="exit with CODE before listening")
    p.add_argument("--never-ready", action="store_true", help="never listen")
    p.add_argument("--exit-after", type=float, metavar="S", help="exit with --exit-code after S seconds of serving")
    p.add_argument("--exit-code", type=int, default=70, help="exit code of --exit-after (default 70)")
    p.add_argument("--kill-after", type=float, metavar="S", help="SIGKILL itself after S seconds of serving")
    p.add_argument("--leak-bytes", type=int, default=0, metavar="B", help="bytes kept per connection, forever")
    p.add_argument("--stall-after", type=float, metavar="S", help="stop answering after S seconds of serving")
    p.add_argument("--ignore-sigterm", action="store_true", help="keep serving through SIGTERM")
    p.add_argument("--children", type=int, default=0, metavar="N", help="fork N helpers that ignore SIGTERM")
    p.add_argument("--escape", action="store_true", help="put the helpers in their own session")
    p.add_argument(
        "--api-token", metavar="TOKEN", help="accepted and ignored: a secret on the command line, for redaction checks"
    )
    p.add_argument("--say", action="append", default=[], metavar="TEXT", help="print TEXT at start (repeatable)")
    p.add_argument(
        "--last-words", action="append", default=[], metavar="TEXT", help="print TEXT just before a fault (repeatable)"
    )
    return p


def _last_words(args: argparse.Namespace) -> None:
    for text in args.last_words:
        print(text, flush=True)


async def _serve(args: argparse.Namespace) -> None:
    import asyncio

    from websockets.asyncio.server import ServerConnection, serve

    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    stalled = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        if sig == signal.SIGTERM and args.ignore_sigterm:
            loop.add_signal_handler(sig, lambda: print("fault: ignoring SIGTERM", flush=True))
            continue
        loop.add_signal_handler(sig, lambda: None if stop.done() else stop.set_result(None))

    async def handler(websocket: ServerConnection) -> None:
        if args.leak_bytes:
            KEPT.append(bytearray(args.leak_bytes))
        async for message in websocket:
            if stalled.is_set():
                await asyncio.Event().wait()  # never answer again
            await websocket.send(message)

    async def process_request(connection: Any, request: Any) -> None:
        if stalled.is_set():
            await asyncio.Event().wait()  # accept TCP, never finish the handshake
        return None

    def crash() -> None:
        print(f"fault: exiting with code {args.exit_code}", flush=True)
        _last_words(args)
        os._exit(args.exit_code)

    def kill() -> None:
        print("fault: killing myself with SIGKILL", flush=True)
        _last_words(args)
        os.kill(os.getpid(), signal.SIGKILL)

    def stall() -> None:
        print("fault: no longer answering", flush=True)
        stalled.set()

    async with serve(handler, "127.0.0.1", args.port, compression=None, process_request=process_request):
        print(f"listening on ws://127.0.0.1:{args.port}/", flush=True)
        if args.exit_after is not None:
            loop.call_later(args.exit_after, crash)
        if args.kill_after is not None:
            loop.call_later(args.kill_after, kill)
        if args.stall_after is not None:
            loop.call_later(args.stall_after, stall)
        await stop


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    for text in args.say:
        print(text, flush=True)
    if args.exit_at_once is not None:
        print(f"fault: refusing to start (exit code {args.exit_at_once})", flush=True)
        _last_words(args)
        sys.exit(args.exit_at_once)
    for _ in range(args.children):
        child = subprocess.Popen([sys.executable, "-c", _STUBBORN_CHILD], start_new_session=args.escape)
        print(f"helper pid {child.pid}", flush=True)
    if args.never_ready:
        print("fault: starting up forever", flush=True)
        time.sleep(600)  # bounded, so a leaked fixture ends by itself
        return
    import asyncio  # imported late: the faults before serving happen at once, even on a busy machine

    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
