"""The sans-I/O client against real servers on 127.0.0.1 (blocking sockets here; gevent in runs)."""

from __future__ import annotations

import socket
import threading

import pytest

from runner.load.client import ConnectionClosedError, HandshakeError, WebSocketClient
from tests.conftest import free_port


def test_handshake_echo_and_clean_close(echo_server):
    client = WebSocketClient(echo_server.url, timeout=5)
    client.connect()
    assert client.open and client.response is not None and client.response.status_code == 101
    client.send("hello")
    assert client.recv() == "hello"
    client.send(b"\x00\x01")
    assert client.recv() == b"\x00\x01"
    big = "x" * 200_000
    client.send(big)
    assert client.recv() == big
    client.close()
    assert client.sock is None and not client.open
    assert client.protocol.close_rcvd is not None and client.protocol.close_rcvd.code == 1000


def test_ping_is_answered_by_the_protocol(echo_server):
    client = WebSocketClient(echo_server.url, timeout=5)
    client.connect()
    client.ping(b"abc")
    client.send("after ping")
    assert client.recv() == "after ping"
    client.close()


def test_refused_connection():
    client = WebSocketClient(f"ws://127.0.0.1:{free_port()}/", timeout=2)
    with pytest.raises(ConnectionRefusedError):
        client.connect()


def _silent_server(accept_only: bool):
    """A TCP server that accepts and then never answers (or answers HTTP 403)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    conns = []

    def serve():
        conn, _ = listener.accept()
        conns.append(conn)
        if not accept_only:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    return listener, conns


def test_timeout_when_the_server_never_answers():
    listener, conns = _silent_server(accept_only=True)
    client = WebSocketClient(f"ws://127.0.0.1:{listener.getsockname()[1]}/", timeout=0.3)
    with pytest.raises(TimeoutError):
        client.connect()
    client.abort()
    listener.close()


def test_rejected_handshake():
    listener, _ = _silent_server(accept_only=False)
    client = WebSocketClient(f"ws://127.0.0.1:{listener.getsockname()[1]}/", timeout=3)
    with pytest.raises(HandshakeError, match="403"):
        client.connect()
    listener.close()


def test_server_initiated_close_and_recv_timeout(echo_server):
    from websockets.sync.server import serve

    port = free_port()

    def closer(ws):
        ws.recv()
        ws.close(4000, "bye")

    server = serve(closer, "127.0.0.1", port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = WebSocketClient(f"ws://127.0.0.1:{port}/", timeout=5)
        client.connect()
        with pytest.raises(TimeoutError):
            client.recv(timeout=0.2)
        client.send("x")
        with pytest.raises(ConnectionClosedError, match="4000"):
            client.recv()
        client.close()
    finally:
        server.shutdown()


def _serve(handler):
    """A websockets sync server in a thread, for tests that need the server to act."""
    from websockets.sync.server import serve

    server = serve(handler, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"ws://127.0.0.1:{server.socket.getsockname()[1]}/"


def _open_fds() -> int:
    import os

    return len(os.listdir("/proc/self/fd"))


def test_one_fd_and_no_thread_per_connection(echo_server):
    # Count only what these clients can own: sockets to this server, and threads that
    # did not exist before (other tests' server threads may still be winding down).
    before_threads, before_fds = set(threading.enumerate()), _open_fds()
    clients = [WebSocketClient(echo_server.url, timeout=5) for _ in range(20)]
    for client in clients:
        client.connect()
    assert len(_sockets_to(echo_server.port)) == 20
    assert _open_fds() - before_fds <= 20  # no socketpair or pipe beside each socket
    assert not set(threading.enumerate()) - before_threads
    for client in clients:
        client.close()
    assert _sockets_to(echo_server.port) == []


def _sockets_to(port: int) -> list:
    import psutil

    return [c for c in psutil.Process().net_connections(kind="tcp") if c.raddr and c.raddr.port == port and c.fd != -1]


def test_no_compression_unless_asked_and_headers_are_sent():
    seen = {}

    def handler(ws):
        seen["extensions"] = ws.request.headers.get("Sec-WebSocket-Extensions")
        seen["token"] = ws.request.headers.get("X-Token")
        ws.send("ok")

    server, url = _serve(handler)
    try:
        client = WebSocketClient(url, timeout=5, headers={"X-Token": "abc"})
        client.connect()
        assert client.recv() == "ok"
        client.close()
    finally:
        server.shutdown()
    assert seen == {"extensions": None, "token": "abc"}


def test_server_ping_is_answered_while_receiving():
    def handler(ws):
        pong = ws.ping(b"are you there")
        ws.send("pong received" if pong.wait(3) else "no pong")
        ws.recv()

    server, url = _serve(handler)
    try:
        client = WebSocketClient(url, timeout=5)
        client.connect()
        assert client.recv() == "pong received"
        client.close()
    finally:
        server.shutdown()


def test_source_address_is_bound():
    def handler(ws):
        ws.send(ws.remote_address[0])

    server, url = _serve(handler)
    try:
        client = WebSocketClient(url, timeout=5, source_address="127.0.0.3")
        client.connect()
        assert client.recv() == "127.0.0.3"
        client.close()
    finally:
        server.shutdown()


def test_fragmented_message_is_reassembled():
    def handler(ws):
        ws.send(["frag", "mented"])  # one text message in two frames

    server, url = _serve(handler)
    try:
        client = WebSocketClient(url, timeout=5)
        client.connect()
        assert client.recv() == "fragmented"
        client.close()
    finally:
        server.shutdown()
