"""The Node heap probe against real node processes and their real inspector (no load generator).

A small churn driver opens and closes WebSocket connections to the bundled server
(examples/node/echo.js); the probe's checkpoints must see the live heap grow by what the
leak keeps, its sites must name the leaking function, and nothing of the inspector may
be left listening afterwards, whether the probe started the server or attached by pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from runner.load.client import WebSocketClient
from runner.sampling.runtimes import (
    ProbeUnavailable,
    open_probe,
    prepare_launch,
    runtime_of_command,
    runtime_of_process,
)
from runner.sampling.runtimes import node as node_probe
from runner.sampling.runtimes.guard import start_guard
from runner.target import free_port, wait_for_port
from runner.watchdog import close_inspector
from tests.conftest import ROOT, stop_process

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (.ci/run installs it)")

ECHO = str(ROOT / "examples" / "node" / "echo.js")


def _listening(pid: int) -> set[int]:
    return {c.laddr.port for c in psutil.Process(pid).net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}


def _churn(port: int, connections: int) -> None:
    for _ in range(connections):
        client = WebSocketClient(f"ws://127.0.0.1:{port}/", timeout=10)
        try:
            client.connect()
            client.send("hello")
            assert client.recv(timeout=10) == "hello"
            client.close()
        finally:
            client.abort()


class NodeServer:
    """examples/node/echo.js started as the run would start it (prepare_launch), or plainly."""

    def __init__(self, *args: str, probed: bool = True) -> None:
        self.port = free_port()
        argv = ["node", ECHO, "--port", str(self.port), *args]
        env = dict(os.environ)
        if probed:
            plan = prepare_launch(argv, env)
            argv, env = plan.argv, plan.env
        self.process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, timeout=60)

    def stop(self) -> None:
        stop_process(self.process)


@pytest.fixture
def leaky() -> Iterator[NodeServer]:
    server = NodeServer("--leak", "user-state")
    yield server
    server.stop()


def test_launch_plans_open_the_inspector_on_loopback_only():
    plan = prepare_launch(["node", "server.js", "--port", "1"], {"A": "1"})
    assert plan.argv == ["node", "--inspect=127.0.0.1:0", "server.js", "--port", "1"] and plan.runtime == "node"
    npm = prepare_launch(["npm", "start"], {"NODE_OPTIONS": "--max-old-space-size=512"})
    assert npm.argv == ["npm", "start"] and npm.env["NODE_OPTIONS"] == "--max-old-space-size=512 --inspect=127.0.0.1:0"
    assert prepare_launch(["python3", "-m", "x"], {}).runtime is None
    assert runtime_of_command(["/usr/bin/node", "x.js"]) == "node" and runtime_of_command(["java", "X"]) != "node"
    own = prepare_launch(["node", "--inspect=9230", "s.js"], {})
    assert own.argv == ["node", "--inspect=9230", "s.js"] and own.notes


def test_checkpoints_see_the_leak_and_sites_name_the_leaking_function(leaky):
    probe = open_probe(leaky.process.pid, started=True, runtime="node", serving_port=leaky.port)
    try:
        probe.start()
        first = probe.checkpoint()
        assert first.heap > 1_000_000 and first.native is not None and first.gc_seconds > 0
        _churn(leaky.port, 600)
        second = probe.checkpoint()
        per_connection = (second.heap - first.heap) / 600
        assert 1000 < per_connection < 5000, per_connection  # ~2.2 KB of user state each
        by_function = {site.function: site for site in second.sites}
        grown = sum(s.live_bytes for s in second.sites if s.function in ("rememberUser", "serveConnection"))
        assert "rememberUser" in by_function or "serveConnection" in by_function, [s.function for s in second.sites[:5]]
        assert grown > 0.4 * 600 * 2000, grown
        site = by_function.get("rememberUser") or by_function["serveConnection"]
        assert site.location.endswith(("echo.js:44", "echo.js:72")), site.location  # 1-based first line of the function
        assert any("echo.js" in frame for frame in site.stack)
    finally:
        notes = probe.close()
    assert not notes, notes
    assert _listening(leaky.process.pid) == {leaky.port}  # the inspector is gone, the server still serves
    _churn(leaky.port, 1)


def test_snapshot_diff_names_a_listener_left_on_a_global_emitter():
    server = NodeServer("--leak", "listener")
    try:
        probe = open_probe(server.process.pid, started=True, runtime="node", serving_port=server.port)
        try:
            probe.start()
            probe.checkpoint()
            probe.steady_started()
            _churn(server.port, 400)
            probe.checkpoint()
            end = probe._snapshot(keep_graph=True)
            groups = node_probe.diff_groups(probe._steady_groups or {}, end["groups"], end.get("graph"))
        finally:
            probe.close()
    finally:
        server.stop()
    line = next(i for i, text in enumerate(Path(ECHO).read_text().splitlines(), 1) if "bus.on('broadcast'" in text)
    listener = next((g for g in groups if g["group"].endswith(f"echo.js:{line}")), None)
    assert listener is not None, [g["group"] for g in groups]  # the closure, by the line that added it
    assert listener["count_delta"] >= 380
    chain = listener.get("retainers") or []
    assert "EventEmitter._events" in chain and any(step.endswith(".broadcast") for step in chain), chain


def test_attach_by_pid_opens_and_closes_the_inspector_of_a_running_server():
    if node_probe.port_in_use(9229):
        pytest.skip("port 9229 is in use here: SIGUSR1 could not open an inspector")
    server = NodeServer("--leak", "last-seen", probed=False)
    try:
        before = _listening(server.process.pid)
        assert runtime_of_process(server.process.pid) == "node"
        probe = open_probe(server.process.pid, started=False)
        try:
            assert _listening(server.process.pid) - before  # SIGUSR1 opened it
            probe.start()
            first = probe.checkpoint()
            _churn(server.port, 300)
            second = probe.checkpoint()
            assert second.heap > first.heap
        finally:
            assert probe.close() == []
        assert _listening(server.process.pid) == before
        _churn(server.port, 1)
    finally:
        server.stop()


def test_a_killed_runner_leaves_no_inspector_open():
    """The watchdog that probe starts for an inspector it opened closes it when the runner dies."""
    server = NodeServer()
    try:
        inspector = node_probe._find_inspector(node_probe._node_tree(server.process.pid))[0]
        close_inspector(inspector.url)
        deadline = time.monotonic() + 30
        while inspector.port in _listening(server.process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _listening(server.process.pid) == {server.port}
        # and the real watchdog process, whose runner "died" (pipe closed without "done")
        other = NodeServer()
        try:
            inspector = node_probe._find_inspector(node_probe._node_tree(other.process.pid))[0]
            watchdog = start_guard("--close-inspector", inspector.url.encode())
            assert watchdog is not None and watchdog.stdin is not None
            watchdog.stdin.close()
            watchdog.wait(timeout=30)
            deadline = time.monotonic() + 30
            while inspector.port in _listening(other.process.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _listening(other.process.pid) == {other.port}
        finally:
            other.stop()
    finally:
        server.stop()


def test_failures_are_one_line_notes(monkeypatch: pytest.MonkeyPatch):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        with pytest.raises(ProbeUnavailable, match="is not node") as info:
            node_probe.open_probe(sleeper.pid, started=False)
        assert "\n" not in str(info.value)
        assert sleeper.poll() is None  # no SIGUSR1 was sent to it
    finally:
        sleeper.kill()
        sleeper.wait()
    # the port SIGUSR1 would open is taken: refused before any signal
    blocker = psutil.Popen(
        [
            "node",
            "-e",
            "require('net').createServer().listen(0,'127.0.0.1',function(){"
            "console.log(this.address().port)}); setInterval(()=>{},1000)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(blocker.stdout.readline())
        server = subprocess.Popen(
            ["node", f"--inspect-port={port}", ECHO, "--port", str(free_port())],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.5)
            with pytest.raises(ProbeUnavailable, match=f"port {port}.*already in use"):
                open_probe(server.pid, started=False)
        finally:
            stop_process(server)
    finally:
        blocker.send_signal(signal.SIGTERM)
        blocker.wait(timeout=10)
    # a started command whose inspector never listens (a node that refuses --inspect): a note, not a hang
    quiet = subprocess.Popen(["node", "-e", "setInterval(()=>{},1000)"])
    try:
        monkeypatch.setattr(node_probe, "INSPECTOR_WAIT", 1.0)
        with pytest.raises(ProbeUnavailable, match="did not listen"):
            open_probe(quiet.pid, started=True, runtime="node")
    finally:
        quiet.kill()
        quiet.wait()
