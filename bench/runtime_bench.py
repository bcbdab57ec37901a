"""What the runtime heap tier costs a Node server: CPU per 1,000 connections with and without it.

Two copies of the bundled Node server (examples/node/echo.js) run at once: one plain, one
with its inspector opened and probed exactly as ``soak run`` does it (prepare_launch,
open_probe, start, then checkpoints paced by :func:`runner.sampling.runtimes.tier.next_interval`
in a thread of their own for the whole benchmark). One asyncio ``websockets`` client process
(bench/memray_bench.py's) churns each in turn, rounds in A-B-B-A order so a noisy shared
machine hurts both alike. Reported per contender: cycles/s and the server's CPU seconds per
1,000 connections (user + system, psutil); for the probed one, the checkpoints taken, the
seconds they took (the server is paused for the forced GC and the profile) and that time's
share of wall time.

    .venv/bin/python bench/runtime_bench.py [--seconds 15] [--rounds 2] [--concurrency 20] [--leak user-state]
    .venv/bin/python bench/runtime_bench.py --runtime jvm   # the bundled Java server, the JVM probe

Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from memray_bench import _CLIENT  # noqa: E402  (the same churn client as the memray benchmark)

from runner.sampling.runtimes import ProbeUnavailable, RuntimeProbe, open_probe, prepare_launch  # noqa: E402
from runner.sampling.runtimes.tier import next_interval  # noqa: E402
from runner.target import free_port, wait_for_port  # noqa: E402

__all__ = ["main"]

ECHO = str(ROOT / "examples" / "node" / "echo.js")
JAVA_SERVER = str(ROOT / "runner" / "targets" / "java" / "Server.java")


@dataclass
class Contender:
    name: str
    probed: bool
    leak: str | None = None
    runtime: str = "node"  # or "jvm": the bundled Java server (any --leak value turns on its leak)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    probe: RuntimeProbe | None = None
    cycles: int = 0
    errors: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    checkpoints: int = 0
    gc_seconds: float = 0.0
    started: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        if self.runtime == "jvm":
            argv = ["java", JAVA_SERVER, "--port", str(self.port)] + (["--leak"] if self.leak else [])
        else:
            argv = ["node", ECHO, "--port", str(self.port)] + (["--leak", self.leak] if self.leak else [])
        env = dict(os.environ)
        if self.probed:
            plan = prepare_launch(argv, env)
            argv, env = plan.argv, plan.env
        self.process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, timeout=120)  # `java File.java` compiles first
        if self.probed:
            self.probe = open_probe(self.process.pid, started=True, runtime=self.runtime, serving_port=self.port)
            self.probe.start()
            self.started = time.monotonic()
            self._thread = threading.Thread(target=self._checkpoints, daemon=True)
            self._thread.start()

    def _checkpoints(self) -> None:
        assert self.probe is not None
        while not self._stop.is_set():
            try:
                point = self.probe.checkpoint()
            except ProbeUnavailable as exc:
                print(f"  probe stopped: {exc}", file=sys.stderr)
                return
            self.checkpoints += 1
            self.gc_seconds += point.gc_seconds
            self._stop.wait(next_interval(point.gc_seconds))

    def cpu_seconds(self) -> float:
        assert self.process is not None
        times = psutil.Process(self.process.pid).cpu_times()
        return times.user + times.system

    def stop(self) -> float:
        """Stop; returns the probed one's wall time with the tier on."""
        wall = time.monotonic() - self.started if self.started else 0.0
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        if self.probe is not None:
            for note in self.probe.close():
                print(f"  {note}", file=sys.stderr)
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
        return wall


def _churn(contender: Contender, seconds: float, concurrency: int) -> None:
    before = contender.cpu_seconds()
    out = subprocess.run(
        [sys.executable, "-c", _CLIENT, f"ws://127.0.0.1:{contender.port}/", str(concurrency), str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=True,
    )
    contender.cpu += contender.cpu_seconds() - before
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    contender.cycles += figures["cycles"]
    contender.errors += figures["errors"]
    contender.seconds += figures["seconds"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="churn per round and contender")
    parser.add_argument("--rounds", type=int, default=2, help="A-B-B-A rounds")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument(
        "--leak", default=None, help="a leak of examples/node/echo.js for both servers (e.g. user-state)"
    )
    parser.add_argument(
        "--runtime",
        choices=("node", "jvm"),
        default="node",
        help="node: examples/node/echo.js; jvm: runner/targets/java/Server.java",
    )
    args = parser.parse_args(argv)
    plain = Contender(args.runtime, False, args.leak, args.runtime)
    probed = Contender(f"{args.runtime} + heap tier", True, args.leak, args.runtime)
    try:
        plain.start()
        probed.start()
        for round_ in range(args.rounds):
            order = (plain, probed) if round_ % 2 == 0 else (probed, plain)
            for contender in order:
                _churn(contender, args.seconds, args.concurrency)
    finally:
        wall = probed.stop()
        plain.stop()
    print(
        f"{'server':<20} {'cycles/s':>9} {'CPU s per 1,000 conn':>21} {'errors':>7} "
        f"{'checkpoints':>12} {'GC s':>6} {'GC share':>9}"
    )
    for c in (plain, probed):
        per_thousand = c.cpu / max(c.cycles, 1) * 1000
        share = f"{c.gc_seconds / wall:.1%}" if c.probed and wall else "-"
        print(
            f"{c.name:<20} {c.cycles / max(c.seconds, 1e-9):>9.0f} {per_thousand:>21.3f} {c.errors:>7} "
            f"{c.checkpoints if c.probed else '-':>12} {c.gc_seconds if c.probed else 0:>6.2f} {share:>9}"
        )
    overhead = (probed.cpu / max(probed.cycles, 1)) / max(plain.cpu / max(plain.cycles, 1), 1e-12) - 1
    print(f"heap tier: {overhead:+.1%} server CPU per connection")
    return 0


if __name__ == "__main__":
    sys.exit(main())
