"""Secret redaction: what is masked, what is left alone (false positives mangle reports)."""

from __future__ import annotations

import json

import pytest

from runner.redact import (
    MASK,
    is_secret_name,
    known_secrets,
    redact_command,
    redact_data,
    redact_text,
    redact_url,
)


@pytest.mark.parametrize(
    "name",
    [
        "API_TOKEN",
        "GITHUB_TOKEN",
        "db_password",
        "PGPASSWORD",
        "X-Api-Key",
        "apiKey",
        "AWS_SECRET_ACCESS_KEY",
        "session_id",
        "Authorization",
        "Cookie",
        "client_secret",
        "X-Amz-Signature",
        "private_key",
        "DB_PWD",
    ],
)
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    ["MONKEY", "author", "keyboard", "PWD", "OLDPWD", "PATH", "HOME", "users", "port", "duration", "SSH_AUTH_SOCK"],
)
def test_names_that_are_not_secret(name):
    assert not is_secret_name(name)


@pytest.mark.parametrize(
    "url, expected",
    [
        ("wss://alice:hunter2@chat.example/ws", "wss://***@chat.example/ws"),
        ("ws://127.0.0.1:8080/ws?token=abc123&room=7", "ws://127.0.0.1:8080/ws?token=***&room=7"),
        ("wss://h/x?X-Amz-Signature=deadbeef&X-Amz-Date=1", "wss://h/x?X-Amz-Signature=***&X-Amz-Date=1"),
        ("ws://127.0.0.1:{port}/", "ws://127.0.0.1:{port}/"),
        ("ws://127.0.0.1:9/?room=1", "ws://127.0.0.1:9/?room=1"),
    ],
)
def test_redact_url(url, expected):
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    "text, secret",
    [
        ("connecting to wss://bob:pa55word@host/ws", "pa55word"),
        ("GET /ws?access_token=eyJhbGciOi HTTP/1.1", "eyJhbGciOi"),
        ("Authorization: Bearer abcdef123456", "abcdef123456"),
        ("api_token=s3cr3tvalue", "s3cr3tvalue"),
        ('config {"password": "hunter22", "port": 1}', "hunter22"),
        ("server --api-key k3yk3yk3y --port 80", "k3yk3yk3y"),
        ("export SECRET_KEY='x9x9x9x9'", "x9x9x9x9"),
        ("DB_PASSWORD = swordfish", "swordfish"),
    ],
)
def test_redact_text_masks_secrets(text, secret):
    redacted = redact_text(text, secrets=())
    assert secret not in redacted and MASK in redacted


@pytest.mark.parametrize(
    "text",
    [
        "the target died during the steady phase (killed by SIGKILL)",
        "rss grew 2.2 KB per connection (95% CI 2.2 KB to 2.2 KB); budget 1.0 KB",
        "leak site: app/session.py:42 keeps 2048 B per connection",
        "listening on ws://127.0.0.1:52065/",
        "author: me, MONKEY=1, key_count 5, session state kept",
        "auth.go:17 make_session",
    ],
)
def test_redact_text_leaves_ordinary_text_alone(text):
    assert redact_text(text, secrets=()) == text


def test_known_secret_values_are_masked_wherever_they_appear():
    env = {"MY_API_TOKEN": "tok-0123456789", "PATH": "/usr/bin", "SHORT_TOKEN": "abc", "PWD": "/work/main"}
    secrets = known_secrets(env)
    assert secrets == {"tok-0123456789"}
    assert (
        redact_text("the server echoed tok-0123456789 back in /work/main", secrets=secrets)
        == "the server echoed *** back in /work/main"
    )


def test_known_secrets_default_to_this_process_environment(monkeypatch):
    monkeypatch.setenv("SOAK_TEST_SECRET", "zz-top-secret-value")
    assert "zz-top-secret-value" in known_secrets()
    assert "zz-top-secret-value" not in redact_text("log: zz-top-secret-value")


def test_redact_command_masks_flag_values_in_the_next_argument():
    argv = ["/usr/bin/server", "--port", "8080", "--token", "abc", "--password=pw", "--url", "wss://u:p@h/"]
    assert redact_command(argv) == [
        "/usr/bin/server",
        "--port",
        "8080",
        "--token",
        MASK,
        "--password=***",
        "--url",
        "wss://***@h/",
    ]


def test_redact_data_walks_json_and_keeps_numbers_and_structure():
    data = {
        "verdict": "error",
        "exit_code": 3,
        "reasons": ["the last line of its log: password=hunter22"],
        "target": {"command": ["srv", "--secret", "s"], "pid": 12, "crashed": True, "log_tail": ["Bearer abcdefgh12"]},
        "headers": {"Authorization": "Basic dXNlcjpwYXNz", "X-Room": "7"},
        "metrics": {"rss": {"slope_per_connection": 12.5, "ci_low": None}},
    }
    redacted = redact_data(data)
    text = json.dumps(redacted)
    for secret in ("hunter22", '"s"', "abcdefgh12", "dXNlcjpwYXNz"):
        assert secret not in text
    assert redacted["exit_code"] == 3 and redacted["target"]["pid"] == 12 and redacted["target"]["crashed"] is True
    assert redacted["metrics"] == data["metrics"]
    assert redacted["headers"]["X-Room"] == "7"
