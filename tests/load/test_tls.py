"""wss:// against a local server with a certificate from a throw-away CA: verify by default, CA bundle, insecure."""

from __future__ import annotations

import json
import ssl
import textwrap
import threading

import gevent
import pytest
from websockets.sync.server import serve

from runner.errors import ProfileError
from runner.load.client import WebSocketClient
from runner.load.counters import LoadCounters
from runner.load.scenario import build_plan, make_ssl_context
from runner.profile import parse_profile
from tests.conftest import free_port, soak
from tests.load.conftest import RecordingUser

AUTH = [
    {
        "name": "auth",
        "send_json": {"type": "auth", "user": "u{user_id}", "token": "t"},
        "expect_json": {"type": "welcome"},
    }
]


def tls_profile(url: str, **target):
    return parse_profile({"target": {"url": url, **target}, "scenario": {"steps": AUTH}})


def test_verification_is_on_by_default_and_the_ca_bundle_makes_it_pass(tls_chat_server, certificates):
    default = WebSocketClient(tls_chat_server.url, timeout=5)  # the system's CAs do not know ours
    with pytest.raises(ssl.SSLCertVerificationError):
        default.connect()
    default.abort()

    plan = build_plan(tls_profile(tls_chat_server.url, ca_bundle=str(certificates.ca)))
    assert plan is not None and plan.ssl_context is not None and plan.ssl_context.verify_mode is ssl.CERT_REQUIRED
    assert plan.ssl_context.check_hostname  # a CA bundle adds trust; it never turns host name checks off
    assert plan.notes == []
    user = RecordingUser()
    plan.run_cycle(user, url=tls_chat_server.url)
    assert user.outcome() == {"connect": None, "auth": None, "close": None}


def test_insecure_is_explicit_and_noted(tls_chat_server):
    plan = build_plan(tls_profile(tls_chat_server.url, insecure_tls=True))
    assert plan.ssl_context.verify_mode is ssl.CERT_NONE
    assert any("TLS certificate verification was OFF" in note for note in plan.notes)
    plan.probe(tls_chat_server.url)  # no error: verification is off


def test_a_bad_ca_bundle_is_a_profile_error(tmp_path):
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate\n")
    with pytest.raises(ProfileError, match="target.ca_bundle: cannot load"):
        build_plan(tls_profile("wss://127.0.0.1:1/", ca_bundle=str(bogus)))


@pytest.mark.slow
def test_wss_soak_with_the_ca_option(tmp_path, certificates):
    profile = tmp_path / "wss.toml"
    profile.write_text(
        textwrap.dedent(
            f"""\
            [target]
            command = "{{python}} -m runner.targets.chat --port {{port}} --certfile {certificates.cert} --keyfile "
                "{certificates.key}"
            url = "wss://127.0.0.1:{{port}}/"
            ca_bundle = "{certificates.ca}"
            [load]
            users = 10
            spawn_rate = 10
            duration = "5s"
            [phases]
            baseline = "1s"
            cooldown = "1s"
            [[scenario.steps]]
            name = "auth"
            send_json = {{ type = "auth", user = "u{{user_id}}", token = "t" }}
            expect_json = {{ type = "welcome" }}
            """
        )
    )
    out = tmp_path / "run"
    result = soak("run", str(profile), "--no-memray", "--quiet", "--out", str(out))
    assert result.returncode != 3, result.stdout + result.stderr
    stats = {e["name"]: e for e in json.loads((out / "locust_stats.json").read_text())["requests"]}
    assert stats["connect"]["requests"] > 20 and stats["connect"]["failures"] == 0
    assert stats["auth"]["failures"] == 0
    summary = json.loads((out / "summary.json").read_text())
    assert not any("verification was OFF" in note for note in summary["notes"])

    insecure = tmp_path / "insecure.toml"
    insecure.write_text(
        profile.read_text().replace(f'ca_bundle = "{certificates.ca}"', "insecure_tls = true").replace('"5s"', '"2s"')
    )
    out2 = tmp_path / "run2"
    result = soak("run", str(insecure), "--no-memray", "--quiet", "--out", str(out2))
    assert result.returncode != 3, result.stdout + result.stderr
    notes = json.loads((out2 / "summary.json").read_text())["notes"]
    assert any("TLS certificate verification was OFF" in note for note in notes), notes


def test_a_held_wss_connection_answers_pings_and_sees_the_servers_close(certificates):
    """The hold watcher reads TLS records in a greenlet (decrypting may wait): pongs go out, the close comes in."""
    pongs: list[bool] = []

    def handler(ws):
        for _ in range(3):
            pongs.append(ws.ping(b"hold on").wait(10))
        ws.close(4001, "enough")

    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(certificates.cert, certificates.key)
    port = free_port()
    server = serve(handler, "127.0.0.1", port, ssl=server_context, ping_interval=None)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        context = make_ssl_context(ca_bundle=str(certificates.ca))
        client = WebSocketClient(f"wss://127.0.0.1:{port}/", timeout=10, ssl_context=context)
        client.connect()
        counters = LoadCounters(opened=1)
        client.watch(counters.server_ended)
        for _ in range(500):
            if counters.open == 0:
                break
            gevent.sleep(0.02)
        assert pongs == [True, True, True]
        assert counters.open == 0 and counters.endings == {"server_close 4001 enough": 1}
    finally:
        server.shutdown()
