"""What the JVM heap probe costs: attaching, GC.class_histogram, GC.heap_info, GC.run at growing live heaps.

Starts the bundled leaky Java server (`java runner/targets/java/Server.java --leak`, default
heap), churns sequential connections with the project's WebSocket client, and times each
command over the attach socket (median of 5), then one `jcmd` call for comparison.
Run from the checkout: `.venv/bin/python bench/jvm_probe_costs.py [CONNECTIONS ...]`.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from runner.load.client import WebSocketClient
from runner.sampling.runtimes.jvm import open_jvm_probe
from runner.target import free_port, wait_for_port

__all__ = ["main"]


def _churn(port: int, count: int) -> None:
    for _ in range(count):
        client = WebSocketClient(f"ws://127.0.0.1:{port}/")
        client.connect()
        client.send("x")
        client.recv(10)
        client.close()


def main(steps: list[int]) -> None:
    port = free_port()
    server = subprocess.Popen(
        ["java", "runner/targets/java/Server.java", "--port", str(port), "--leak"], stdout=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, timeout=120)
        began = time.perf_counter()
        probe = open_jvm_probe(server.pid)
        print(f"attach (trigger file + SIGQUIT + socket): {1000 * (time.perf_counter() - began):.0f} ms")
        done = 0
        for target in steps:
            _churn(port, target - done)
            done = target
            histogram, info = [], []
            for _ in range(5):
                point = probe.checkpoint()
                histogram.append(point.gc_seconds)
                began = time.perf_counter()
                probe.client.jcmd("GC.heap_info")
                info.append(time.perf_counter() - began)
            began = time.perf_counter()
            probe.client.jcmd("GC.run")
            run = time.perf_counter() - began
            with open(f"/proc/{server.pid}/status", encoding="ascii") as fh:
                rss = int(fh.read().split("VmRSS:")[1].split()[0]) * 1024
            slowest = 1000 * max(histogram)
            print(
                f"connections {done:6d}: heap after GC {point.heap / 1e6:6.1f} MB, RSS {rss / 1e6:6.1f} MB, "
                f"GC.class_histogram median {1000 * statistics.median(histogram):.0f} ms (max {slowest:.0f}), "
                f"GC.heap_info {1000 * statistics.median(info):.1f} ms, GC.run {1000 * run:.0f} ms",
                flush=True,
            )
        began = time.perf_counter()
        subprocess.run(["jcmd", str(server.pid), "GC.heap_info"], capture_output=True, check=False)
        print(f"jcmd GC.heap_info (for comparison): {1000 * (time.perf_counter() - began):.0f} ms")
        probe.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [0, 1000, 10000, 30000, 60000])
