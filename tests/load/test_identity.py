"""Per-user identity on the handshake: headers, cookies, query parameters, subprotocols and Origin reach the server."""

from __future__ import annotations

import threading
from typing import Any, Iterator

import pytest
from websockets.sync.server import serve

from runner.load.scenario import build_plan
from runner.profile import parse_profile
from tests.conftest import free_port
from tests.load.conftest import RecordingUser


@pytest.fixture
def recording_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A websockets server (thread) that records each handshake and echoes messages."""
    seen: list[dict[str, Any]] = []

    def handler(ws):
        request = ws.request
        seen.append({"path": request.path, "headers": dict(request.headers.raw_items()), "subprotocol": ws.subprotocol})
        for message in ws:
            ws.send(message)

    port = free_port()
    server = serve(handler, "127.0.0.1", port, subprotocols=["chat.v2", "chat.v1"])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"ws://127.0.0.1:{port}/socket?app=demo", seen
    finally:
        server.shutdown()


def test_identity_is_templated_per_user_and_reaches_the_server(recording_server, tmp_path):
    url, seen = recording_server
    (tmp_path / "users.csv").write_text("username,token,session\nalice,tok-alice-123,sess-a\nbob,tok-bob-456,sess-b\n")
    profile = parse_profile(
        {
            "target": {"url": url},
            "load": {
                "credentials": str(tmp_path / "users.csv"),
                "headers": {"Authorization": "Bearer {token}", "Cookie": "session={session}", "X-User-Id": "{user_id}"},
                "query": {"user": "{username}", "shard": "{user_id%2}"},
                "subprotocols": ["chat.v2"],
                "origin": "https://{username}.example.test",
                "messages": 1,
            },
        }
    )
    plan = build_plan(profile)
    users = [RecordingUser(), RecordingUser(), RecordingUser()]
    for user in users:
        plan.run_cycle(user, url=url)
    for user in users:  # identity only: the default echo loop runs, as steps
        assert user.outcome() == {"connect": None, "echo": None, "close": None}
    assert [s["path"] for s in seen] == [
        "/socket?app=demo&user=alice&shard=1",
        "/socket?app=demo&user=bob&shard=0",
        "/socket?app=demo&user=alice&shard=1",
    ]
    first, second, third = (s["headers"] for s in seen)
    assert first["Authorization"] == "Bearer tok-alice-123" and second["Authorization"] == "Bearer tok-bob-456"
    assert first["Cookie"] == "session=sess-a" and [h["X-User-Id"] for h in (first, second, third)] == ["1", "2", "3"]
    assert first["Origin"] == "https://alice.example.test"
    assert all(s["subprotocol"] == "chat.v2" for s in seen)


def test_no_identity_no_scenario_no_tls_means_no_plan():
    assert build_plan(parse_profile({"target": {"url": "ws://127.0.0.1:9/"}})) is None
