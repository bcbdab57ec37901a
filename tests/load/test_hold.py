"""Held connections stay true: pings answered while a user holds, a server's close or reset seen when it happens.

Unit level: one client watched on the gevent hub against a real websockets server in a
thread. Run level: ``soak run`` holds connections against the bundled echo server with
keepalive pings shorter than the hold (they must survive), and with an idle timeout
shorter than the hold (the open count must follow the server's own sockets).
"""

from __future__ import annotations

import json
import socket
import threading
import time

import gevent
from websockets.sync.server import serve
from websockets.utils import accept_key

from runner.load.client import RESET, SERVER_CLOSE, WebSocketClient
from runner.load.counters import LoadCounters
from runner.results import read_samples
from tests.conftest import free_port, soak


def _wait_for(condition, timeout: float = 20.0) -> bool:
    """Run the gevent hub (the watchers live there) until ``condition()`` or the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        gevent.sleep(0.02)
    return condition()


class _Server:
    """A websockets sync server in a thread whose handler the test drives per connection."""

    def __init__(self, handler, **options) -> None:
        self.port = free_port()
        self.server = serve(handler, "127.0.0.1", self.port, **options)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"ws://127.0.0.1:{self.port}/"

    def close(self) -> None:
        self.server.shutdown()


def _connected(url: str) -> tuple[WebSocketClient, LoadCounters]:
    client = WebSocketClient(url, timeout=10)
    client.connect()
    counters = LoadCounters()
    counters.opened += 1
    return client, counters


def test_a_close_frame_during_the_hold_is_seen_when_it_comes():
    go = threading.Event()

    def handler(ws):
        go.wait(30)
        ws.close(4000, "bye now")

    server = _Server(handler)
    try:
        client, counters = _connected(server.url)
        client.watch(counters.server_ended)
        assert counters.open == 1
        go.set()
        assert _wait_for(lambda: counters.open == 0)
        assert client.ending is not None and client.ending.kind == SERVER_CLOSE
        assert (client.ending.code, client.ending.reason) == (4000, "bye now")
        assert client.sock is None  # released at once
        assert (counters.server_closes, counters.resets) == (1, 0)
        assert counters.endings == {"server_close 4000 bye now": 1}
    finally:
        server.close()


def test_pings_are_answered_while_held():
    """The server's pings get their pongs while nobody reads: the protocol's auto-pong is really sent."""
    pongs: list[bool] = []
    done = threading.Event()

    def handler(ws):
        for _ in range(3):
            pongs.append(ws.ping(b"are you there").wait(10))
        done.set()
        ws.recv()  # until the client closes

    server = _Server(handler, ping_interval=None)
    try:
        client, counters = _connected(server.url)
        client.watch(counters.server_ended)
        assert _wait_for(done.is_set)
        assert pongs == [True, True, True]
        assert client.ending is None and counters.open == 1
        client.unwatch()
        client.send("still here")  # the connection works after the hold
        client.close()
    finally:
        server.close()


def test_a_tcp_reset_during_the_hold_is_a_reset():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []

    def accept_and_answer():
        conn, _ = listener.accept()
        request = conn.recv(65536).decode()
        lines = request.split("\r\n")
        key = next(line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("sec-websocket-key"))

        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n".encode()
        )
        accepted.append(conn)

    thread = threading.Thread(target=accept_and_answer, daemon=True)
    thread.start()
    try:
        client, counters = _connected(f"ws://127.0.0.1:{listener.getsockname()[1]}/")
        thread.join(10)
        client.watch(counters.server_ended)
        conn = accepted[0]
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # close = RST
        conn.close()
        assert _wait_for(lambda: counters.open == 0)
        assert client.ending is not None and client.ending.kind == RESET
        assert (counters.server_closes, counters.resets) == (0, 1)
    finally:
        listener.close()


PROFILE = """
name = "hold"
[target]
command = "{{python}} -m runner.targets.echo --port {{port}} {server_options}"
memray = false
[load]
users = {users}
spawn_rate = 100
duration = "{duration}"
messages = 1
hold = "{hold}"
[phases]
baseline = "1s"
drain = "15s"
cooldown = "0.5s"
[sampling]
interval = "0.25s"
uss = false
"""


def _run(tmp_path, name: str, **values) -> tuple[dict, list[dict], dict]:
    profile = tmp_path / f"{name}.toml"
    profile.write_text(PROFILE.format(**values))
    out = tmp_path / name
    result = soak("run", str(profile), "--out", str(out), "--quiet", timeout=240)
    assert result.returncode in (0, 4), result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    stats = {entry["name"]: entry for entry in json.loads((out / "locust_stats.json").read_text())["requests"]}
    return summary, list(read_samples(out / "samples.jsonl")), stats


def _open_against_server_sockets(samples: list[dict]) -> tuple[float, float]:
    """Mean open connections in the steady phase: ours, and the server's sockets beyond its baseline."""
    baseline_fds = min(s["fds"] for s in samples if s["phase"] == "baseline")
    steady = [s for s in samples if s["phase"] == "steady"]
    ours = sum(s["open"] for s in steady) / len(steady)
    servers = sum(s["fds"] - baseline_fds for s in steady) / len(steady)
    return ours, servers


def test_held_connections_outlive_the_servers_ping_interval_and_timeout(tmp_path):
    """Server pings every 0.5 s, closes after 0.5 s without a pong; each connection is held 4 s: none is lost."""
    summary, samples, stats = _run(
        tmp_path, "pings", server_options="--ping-interval 0.5 --ping-timeout 0.5", users=20, duration="6s", hold="4s"
    )
    load = summary["load"]
    assert summary["schema_version"] >= 3
    assert load["connections_opened"] >= 20
    assert load["server_closes"] == 0 and load["resets"] == 0, load["server_endings"]
    assert stats["close"]["requests"] == stats["connect"]["requests"] and not stats["close"]["failures"]
    ours, servers = _open_against_server_sockets(samples)
    assert ours > 15  # held most of the time
    assert abs(ours - servers) <= 0.05 * 20 + 1, (ours, servers)  # and the server held them too (pongs came)


def test_the_open_count_follows_the_servers_sockets_when_it_closes_idle_connections(tmp_path):
    """Idle timeout 1.5 s, hold 5 s: the server ends every connection mid-hold, and "open" drops with it."""
    users = 60
    summary, samples, stats = _run(
        tmp_path, "idle", server_options="--idle-timeout 1.5", users=users, duration="12s", hold="5s"
    )
    load = summary["load"]
    assert load["server_closes"] >= users and load["resets"] == 0
    assert load["server_endings"][0]["ending"] == "server_close 1001 idle timeout"
    assert load["connections_closed"] == load["connections_opened"]
    assert "close" not in stats or not stats["close"]["failures"]  # nothing left to fail at the end of the hold
    ours, servers = _open_against_server_sockets(samples)
    # the server holds each connection ~1.5 s of every ~5 s cycle: about 30% of the users on average
    assert servers < 0.6 * users
    assert abs(ours - servers) <= 0.05 * users + 1, (ours, servers)
