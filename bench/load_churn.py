"""Churn efficiency of the load generator, side by side with the bare asyncio ``websockets`` client.

Every contender runs in its own fresh process against the SAME server (a dependency-free
Node echo server, bench/echo_server.js) at the SAME concurrency, one after the other,
twice in alternating order (the machine is shared and noisy). A cycle is
connect -> one echo round trip -> close. Reported per contender: cycles/s and the
load generator's own CPU time per cycle (user + system of its process).

    .venv/bin/python bench/load_churn.py [--concurrency 50] [--seconds 10] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from runner.target import free_port, wait_for_port

__all__ = ["main"]

HERE = Path(__file__).resolve().parent

#: Each contender is a small program run with ``python -c URL CONCURRENCY SECONDS``. It churns
#: for 1 s of warm-up plus SECONDS, and reports the cycles and its own CPU time (user + system)
#: inside the measured window only, as one JSON line.
_WINDOW = r"""
import json, resource, time
WARMUP = 1.0
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
def mark(counts):
    return {"t": time.monotonic(), "cpu": cpu(), "cycles": counts["cycles"], "errors": counts["errors"]}
def report(a, b):
    print(json.dumps({"cycles": b["cycles"] - a["cycles"], "errors": b["errors"] - a["errors"],
                      "elapsed": b["t"] - a["t"], "cpu": b["cpu"] - a["cpu"]}))
"""

_ASYNCIO = (
    _WINDOW
    + r"""
import asyncio, sys
from websockets.asyncio.client import connect
url, concurrency, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
payload = "x" * 64
counts = {"cycles": 0, "errors": 0}
async def user(deadline):
    while time.monotonic() < deadline:
        try:
            async with connect(url, compression=None, ping_interval=None) as ws:
                await ws.send(payload)
                assert await ws.recv() == payload
            counts["cycles"] += 1
        except Exception:
            counts["errors"] += 1
async def main():
    deadline = time.monotonic() + WARMUP + seconds
    users = [asyncio.create_task(user(deadline)) for _ in range(concurrency)]
    await asyncio.sleep(WARMUP)
    a = mark(counts)
    await asyncio.sleep(seconds)
    b = mark(counts)
    await asyncio.gather(*users)
    report(a, b)
asyncio.run(main())
"""
)

_GEVENT = (
    r"""
from gevent import monkey; monkey.patch_all()
"""
    + _WINDOW
    + r"""
import gevent, sys
from runner.load.client import WebSocketClient
url, concurrency, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
payload = "x" * 64
counts = {"cycles": 0, "errors": 0}
def user(deadline):
    while time.monotonic() < deadline:
        client = WebSocketClient(url, timeout=10)
        try:
            client.connect(); client.send(payload)
            assert client.recv() == payload
            client.close()
            counts["cycles"] += 1
        except Exception:
            counts["errors"] += 1
        finally:
            client.abort()
deadline = time.monotonic() + WARMUP + seconds
users = [gevent.spawn(user, deadline) for _ in range(concurrency)]
gevent.sleep(WARMUP)
a = mark(counts)
gevent.sleep(seconds)
b = mark(counts)
gevent.joinall(users)
report(a, b)
"""
)

_LOCUST = (
    r"""
import locust
"""
    + _WINDOW
    + r"""
import gevent, sys
from runner.load.driver import LoadDriver
from runner.profile import LoadSettings
url, concurrency, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
settings = LoadSettings(users=concurrency, spawn_rate=10000, messages=1, message_bytes=64)
driver = LoadDriver(url, settings, stop_timeout=5)
class Counts(dict):
    def __getitem__(self, key):
        return driver.counters.closed if key == "cycles" else driver.counters.errors
counts = Counts()
driver.start()
gevent.sleep(WARMUP)
a = mark(counts)
gevent.sleep(seconds)
b = mark(counts)
driver.stop_users().join(timeout=10)
driver.quit()
report(a, b)
"""
)

CONTENDERS = {
    "asyncio websockets (bare)": _ASYNCIO,
    "soak client, bare gevent": _GEVENT,
    "soak client via Locust user": _LOCUST,
}


def _wait_for_port(port: int, timeout: float = 10.0) -> None:
    try:
        wait_for_port(port, timeout=timeout)
    except TimeoutError:
        raise SystemExit(f"the echo server never listened on port {port}") from None


def _run(program: str, url: str, concurrency: int, seconds: float) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", program, url, str(concurrency), str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        cwd=HERE.parent,
    )
    if out.returncode != 0:
        raise SystemExit(f"contender failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    node = shutil.which("node")
    if node is None:
        raise SystemExit("bench-load needs node (for bench/echo_server.js)")
    port = free_port()
    server = subprocess.Popen([node, str(HERE / "echo_server.js"), str(port)], stdout=subprocess.DEVNULL)
    try:
        _wait_for_port(port)
        url = f"ws://127.0.0.1:{port}/"
        totals = {name: {"cycles": 0, "errors": 0, "elapsed": 0.0, "cpu": 0.0} for name in CONTENDERS}
        names = list(CONTENDERS)
        for round_ in range(args.rounds):
            for name in names if round_ % 2 == 0 else reversed(names):
                result = _run(CONTENDERS[name], url, args.concurrency, args.seconds)
                for key in totals[name]:
                    totals[name][key] += result[key]
        print(
            f"concurrency {args.concurrency}, {args.rounds} x {args.seconds:g}s per contender, one echo of 64 B per "
            "cycle, node echo server"
        )
        base = totals[names[0]]
        base_rate = base["cycles"] / base["elapsed"]
        print(f"{'contender':32} {'cycles/s':>9} {'CPU ms/cycle':>13} {'errors':>7} {'vs bare':>8}")
        for name, t in totals.items():
            rate = t["cycles"] / t["elapsed"]
            cpu_ms = 1000.0 * t["cpu"] / max(t["cycles"], 1)
            print(f"{name:32} {rate:9.0f} {cpu_ms:13.3f} {t['errors']:7d} {rate / base_rate:7.2f}x")
    finally:
        server.terminate()
        server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
