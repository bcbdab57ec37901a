"""The protocol presets' sans-I/O sessions, fed strings: no network."""

from __future__ import annotations

import json

import pytest

from runner.load.protocols import Incoming, ProtocolViolation
from runner.load.protocols.auto_reply import compile_rules, reply_to
from runner.load.protocols.graphql_ws import GraphQLWSSession
from runner.load.protocols.socketio import EVENT, Packet, SocketIOSession, decode, encode, socketio_url

OPEN = '0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}'


def test_socketio_url_gets_the_default_path_and_the_engineio_query():
    assert socketio_url("ws://h:1") == "ws://h:1/socket.io/?EIO=4&transport=websocket"
    assert socketio_url("ws://h:1/") == "ws://h:1/socket.io/?EIO=4&transport=websocket"
    assert socketio_url("wss://h/rt/?x=1&EIO=3") == "wss://h/rt/?x=1&EIO=4&transport=websocket"


def test_packets_round_trip():
    for packet, text in [
        (Packet(EVENT, "/", None, ["join", {"room": "r"}]), '42["join",{"room":"r"}]'),
        (Packet(EVENT, "/chat", 7, ["hi"]), '42/chat,7["hi"]'),
        (Packet(3, "/", 12, [{"ok": True}]), '4312[{"ok":true}]'),
        (Packet(1, "/"), "41"),
    ]:
        assert encode(packet) == text
        assert decode(text[1:]) == packet
    assert decode('51-["up",{"_placeholder":true,"num":0}]').attachments == 1
    with pytest.raises(ProtocolViolation, match="not JSON"):
        decode("2[oops")


def test_socketio_handshake_pings_events_acks_and_leave():
    session = SocketIOSession("/", {"token": "tok-1"})
    session.start()
    assert session.data_to_send() == []  # the server speaks first
    assert session.receive(OPEN) == [] and session.ping_interval == 25.0
    assert session.data_to_send() == ['40{"token":"tok-1"}']
    session.receive('40{"sid":"s1"}')
    assert session.ready and session.sid == "s1"
    session.receive("2")
    assert session.data_to_send() == ["3"]  # v4: the server pings, the client answers
    assert session.receive('42["joined",{"room":"r"}]') == [Incoming("event", "joined", [{"room": "r"}])]
    assert session.emit("join", [{"room": "r"}], ack=True) == 0
    assert session.emit("say", ["x"], ack=True) == 1
    assert session.data_to_send() == ['420["join",{"room":"r"}]', '421["say","x"]']
    assert session.receive('430[{"members":3}]') == [Incoming("ack", "0", [{"members": 3}])]
    assert session.receive('42/other,["not ours"]') == []
    session.leave()
    assert session.data_to_send() == ["41"] and session.ended


def test_socketio_refusal_names_the_servers_message_and_namespaces_are_prefixed():
    session = SocketIOSession("/admin")
    session.receive(OPEN)
    assert session.data_to_send() == ["40/admin,"]
    session.receive('44/admin,{"message":"invalid token"}')
    assert not session.ready and session.refusal == "invalid token"
    with pytest.raises(ProtocolViolation, match="unknown Engine.IO packet type"):
        session.receive("9")


def test_socketio_server_disconnect_ends_the_session():
    session = SocketIOSession()
    session.receive(OPEN)
    session.receive("40")
    session.receive("41")
    assert session.ended and "disconnected namespace /" in session.ended
    session.leave()
    assert session.data_to_send() == ["40"]  # only the CONNECT: a left namespace is not left twice


def test_graphql_ws_init_ping_subscribe_next_complete():
    session = GraphQLWSSession({"token": "tok-1"})
    session.start()
    assert [json.loads(m) for m in session.data_to_send()] == [
        {"type": "connection_init", "payload": {"token": "tok-1"}}
    ]
    session.receive('{"type":"connection_ack"}')
    assert session.ready
    session.receive('{"type":"ping","payload":{"t":1}}')
    assert [json.loads(m) for m in session.data_to_send()] == [{"type": "pong", "payload": {"t": 1}}]
    session.subscribe("s1", "subscription { x }", {"room": "r"})
    assert json.loads(session.data_to_send()[0]) == {
        "id": "s1",
        "type": "subscribe",
        "payload": {"query": "subscription { x }", "variables": {"room": "r"}},
    }
    with pytest.raises(ProtocolViolation, match="still active"):
        session.subscribe("s1", "subscription { x }")
    assert session.receive('{"id":"s1","type":"next","payload":{"data":{"x":1}}}') == [
        Incoming("next", "s1", {"data": {"x": 1}})
    ]
    assert session.receive('{"id":"s1","type":"complete"}') == [Incoming("complete", "s1", None)]
    assert "s1" not in session.active
    session.subscribe("s1", "subscription { x }")  # a completed id may be used again
    session.complete("s1")
    assert json.loads(session.data_to_send()[-1]) == {"id": "s1", "type": "complete"}
    with pytest.raises(ProtocolViolation, match="unknown graphql-transport-ws message type"):
        session.receive('{"type":"data"}')


def test_auto_reply_rules_answer_the_first_match_with_a_template():
    rules = compile_rules([{"match": "^ping$", "reply": "pong {user_id}"}, {"match": "hb", "reply": "ok"}])
    assert reply_to(rules, "ping", {"user_id": 3}) == "pong 3"
    assert reply_to(rules, "a hb b", {"user_id": 3}) == "ok"
    assert reply_to(rules, "pinging", {"user_id": 3}) is None
    assert reply_to(rules, b"ping", {"user_id": 3}) is None
