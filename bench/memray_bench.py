"""What memray costs a soak: churn rate and target CPU with and without it, capture size, analysis time.

Two copies of the same bundled target run at once: one plain, one under soak's memray
launcher (runner/sampling/memray_launch.py, exactly as ``soak run`` starts it), plus
optionally a third with ``--python-allocators`` (every object allocation traced). One
asyncio ``websockets`` client process churns each in turn (connect -> one echo -> close
at a fixed concurrency), rounds in A-B-B-A order so a noisy shared machine hurts every
contender alike. Reported per contender: cycles/s, the target's CPU seconds per 1,000
connections (user + system, from psutil), and for memray: capture bytes per 1,000
connections while running (the disk cost) and after the compression at exit, then the
time soak takes to reduce the capture (``ensure_reduced``) and to render the flame graph.

    .venv/bin/python bench/memray_bench.py [--target runner.targets.echo] [--seconds 10] [--rounds 2]
        [--concurrency 20] [--python-allocators]

Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runner.sampling.memray_capture import MemrayFiles, ensure_reduced, render_flamegraph  # noqa: E402
from runner.sampling.memray_launch import launcher_argv  # noqa: E402
from runner.sampling.memray_run import MEMORY_INTERVAL_MS, request_freeze  # noqa: E402
from runner.target import free_port, wait_for_port  # noqa: E402

__all__ = ["main"]

_CLIENT = r"""
import asyncio, json, sys, time
from websockets.asyncio.client import connect
url, concurrency, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
counts = {"cycles": 0, "errors": 0}
async def user(deadline):
    while time.monotonic() < deadline:
        try:
            async with connect(url, compression=None, ping_interval=None, open_timeout=10) as ws:
                await ws.send("x" * 64)
                await ws.recv()
            counts["cycles"] += 1
        except Exception:
            counts["errors"] += 1
async def main():
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(user(deadline) for _ in range(concurrency)))
t0 = time.monotonic(); asyncio.run(main())
print(json.dumps({**counts, "seconds": time.monotonic() - t0}))
"""


def _wait_port(port: int, timeout: float = 120.0) -> None:
    try:
        wait_for_port(port, timeout=timeout)
    except TimeoutError as exc:
        raise SystemExit(str(exc)) from None


@dataclass
class Contender:
    name: str
    module: str
    folder: Path | None = None  # a run folder when tracked by memray
    python_allocators: bool = False
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    cycles: int = 0
    seconds: float = 0.0
    errors: int = 0
    cpu: float = 0.0
    capture_growth: list[tuple[int, int]] = field(default_factory=list)  # (connections, bytes)

    def start(self) -> None:
        args = ["-m", self.module, "--port", str(self.port)]
        argv = [sys.executable, *args]
        if self.folder is not None:
            files = MemrayFiles(self.folder)
            files.root.mkdir(parents=True, exist_ok=True)
            argv = launcher_argv(
                sys.executable,
                args,
                capture=str(files.capture),
                checkpoints=str(files.checkpoints),
                control=str(files.control),
                checkpoint_interval=1.0,
                memory_interval_ms=MEMORY_INTERVAL_MS,
                max_bytes=None,
                python_allocators=self.python_allocators,
            )
        self.process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ready(self) -> None:
        _wait_port(self.port)
        if self.folder is not None:
            request_freeze(self.folder)

    def cpu_seconds(self) -> float:
        assert self.process is not None
        times = psutil.Process(self.process.pid).cpu_times()
        return times.user + times.system

    def capture_bytes(self) -> int:
        return MemrayFiles(self.folder).capture.stat().st_size if self.folder is not None else 0

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _round(contender: Contender, concurrency: int, seconds: float) -> None:
    before = contender.cpu_seconds()
    done = subprocess.run(
        [sys.executable, "-c", _CLIENT, f"ws://127.0.0.1:{contender.port}/", str(concurrency), str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    contender.cpu += contender.cpu_seconds() - before
    contender.cycles += result["cycles"]
    contender.errors += result["errors"]
    contender.seconds += result["seconds"]
    if contender.folder is not None:
        contender.capture_growth.append((contender.cycles, contender.capture_bytes()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--target", default="runner.targets.echo", help="bundled target module (default: the clean echo server)"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=2, help="A-B-B-A rounds per contender pair")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument(
        "--python-allocators", action="store_true", help="add a contender tracing every Python object allocation"
    )
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="soak-memray-bench-"))
    contenders = [Contender("plain", args.target), Contender("memray", args.target, folder=work / "memray")]
    if args.python_allocators:
        contenders.append(Contender("memray+pyalloc", args.target, folder=work / "pyalloc", python_allocators=True))
    try:
        for c in contenders:
            c.start()
        for c in contenders:
            c.ready()
        time.sleep(2)
        for r in range(args.rounds):
            order = contenders if r % 2 == 0 else list(reversed(contenders))
            for c in order:
                _round(c, args.concurrency, args.seconds)
    finally:
        for c in contenders:
            c.stop()

    plain = contenders[0]
    base_rate = plain.cycles / plain.seconds
    base_cpu = plain.cpu / plain.cycles * 1000
    print(
        f"target {args.target}, concurrency {args.concurrency}, {args.rounds} x {args.seconds:g}s rounds per "
        "contender (A-B-B-A)"
    )
    print(f"{'contender':<16}{'cycles/s':>10}{'rate ratio':>12}{'CPU s/1k conn':>15}{'CPU ratio':>11}{'errors':>8}")
    for c in contenders:
        rate = c.cycles / c.seconds
        cpu = c.cpu / c.cycles * 1000
        print(f"{c.name:<16}{rate:>10.1f}{base_rate / rate:>12.2f}{cpu:>15.3f}{cpu / base_cpu:>11.2f}{c.errors:>8}")
    for c in contenders[1:]:
        assert c.folder is not None
        (n0, b0), (n1, b1) = c.capture_growth[0], c.capture_growth[-1]
        growth = (b1 - b0) / max(n1 - n0, 1) * 1000
        final = c.capture_bytes()
        began = time.perf_counter()
        reduced = ensure_reduced(c.folder, flamegraph=False)
        reduce_s = time.perf_counter() - began
        files = MemrayFiles(c.folder)
        began = time.perf_counter()
        failure = render_flamegraph(files.capture, files.flamegraph)
        flame_s = time.perf_counter() - began
        assert reduced is not None
        per_k = 1000 / c.cycles
        print(
            f"{c.name}: capture {growth / 1e6:.2f} MB per 1,000 connections while running, "
            f"{final / c.cycles * 1000 / 1e6:.2f} MB per 1,000 after compression at exit ({final / 1e6:.1f} MB for "
            f"{c.cycles} connections); "
            f"reduce {reduce_s:.1f}s ({reduce_s * per_k:.2f}s per 1,000 connections), flame graph {flame_s:.1f}s "
            f"({files.flamegraph.stat().st_size / 1e6 if not failure else 0:.1f} MB); "
            f"GC checkpoint median {reduced.get('gc_ms_median')} ms"
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
