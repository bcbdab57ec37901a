"""The bundled multi-process target: SO_REUSEPORT workers behind one port, stopped as one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from runner.load.client import WebSocketClient
from tests.conftest import ROOT, free_port


def _start(*args: str) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "runner.targets.multiproc", "--port", str(port), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()  # printed once every worker has bound the port
    assert "listening on ws://127.0.0.1:" in line, process.stderr.read()
    return process, port


def test_workers_share_the_port_and_stop_together():
    process, port = _start("--workers", "2")
    try:
        children = psutil.Process(process.pid).children()
        assert len(children) == 2
        serving = set()
        for _ in range(40):  # SO_REUSEPORT spreads connections by hash: both workers answer
            client = WebSocketClient(f"ws://127.0.0.1:{port}/", timeout=10)
            client.connect()
            client.send("ping")
            assert client.recv() == "ping"
            local_port = client.sock.getsockname()[1]
            serving.update(
                c.pid for c in children for conn in c.net_connections() if conn.raddr and conn.raddr.port == local_port
            )
            client.close()
        assert len(serving) == 2
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert not any(child.is_running() and child.status() != psutil.STATUS_ZOMBIE for child in children)
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.slow
def test_a_dead_worker_stops_the_server_with_an_error():
    process, _ = _start("--workers", "2")
    try:
        victim = psutil.Process(process.pid).children()[0]
        os.kill(victim.pid, signal.SIGKILL)
        assert process.wait(timeout=30) == 1
        assert f"worker pid {victim.pid} exited" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.slow
def test_leak_bytes_are_kept_per_connection():
    process, port = _start("--workers", "1", "--leak-bytes", "200000")
    try:
        child = psutil.Process(process.pid).children()[0]
        before = child.memory_info().rss
        for _ in range(30):
            client = WebSocketClient(f"ws://127.0.0.1:{port}/", timeout=10)
            client.connect()
            client.close()
        time.sleep(0.2)
        assert child.memory_info().rss - before > 30 * 200_000 * 0.8  # zero-filled, but touched by bytearray()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
