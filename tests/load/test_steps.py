"""Declarative steps: validation messages, templates, matchers, and the profile keys around them (no network)."""

from __future__ import annotations

import json

import pytest

from runner.errors import ProfileError
from runner.load.steps import (
    Exchange,
    JsonFields,
    Regex,
    Repeat,
    Substring,
    Template,
    compile_steps,
    render_json,
    validate_steps,
)
from runner.profile import load_profile, parse_profile

TARGET = {"command": "{python} -m runner.targets.chat --port {port}"}


def profile(**sections):
    return parse_profile({"target": dict(TARGET), **sections})


def test_templates_render_fields_modulo_and_leave_json_braces_alone():
    fields = {"user_id": 13, "n": 2, "i": 0, "token": "abc"}
    assert Template("room-{user_id%10}/{n}/{token}").render(fields) == "room-3/2/abc"
    assert Template('{"raw": {user_id}}').render(fields) == '{"raw": 13}'
    first, second = Template("{random}").render(fields), Template("{random}").render(fields)
    assert len(first) == 16 and first != second
    assert render_json({"id": "{user_id}", "name": "u{user_id}", "tags": ["{token}", 1]}, fields) == {
        "id": 13,
        "name": "u13",
        "tags": ["abc", 1],
    }


def test_matchers():
    fields = {"user_id": 7, "n": 0, "i": 1}
    assert Substring(Template("user-{user_id}")).matches("hello user-7!", fields)
    assert not Substring(Template("user-{user_id}")).matches("hello user-8!", fields)
    regex = Regex(Template(r"^hi \d+ from user-{user_id}$"))
    assert regex.matches("hi 42 from user-7", fields) and not regex.matches("hi x from user-7", fields)
    assert Regex(Template("a.b")).matches(b"a-b", fields)  # bytes are decoded; the pattern is a real regex
    matcher = JsonFields((("type", "message"), ("from.id", "{user_id}"), ("seq", "{i}")))
    assert matcher.matches(json.dumps({"type": "message", "from": {"id": 7}, "seq": 1}), fields)
    assert matcher.matches(json.dumps({"type": "message", "from": {"id": "7"}, "seq": "1"}), fields)
    assert not matcher.matches(json.dumps({"type": "message", "from": {"id": 8}, "seq": 1}), fields)
    assert not matcher.matches("not json", fields)
    assert not matcher.matches(json.dumps({"type": "message"}), fields)


def test_regex_placeholders_are_substituted_escaped():
    regex = Regex(Template("^{token}$"))
    assert regex.matches("a.b", {"token": "a.b"})
    assert not regex.matches("axb", {"token": "a.b"})


def test_steps_compile_to_named_exchanges_repeat_wait_and_close():
    steps = compile_steps(
        validate_steps(
            [
                {
                    "name": "auth",
                    "send_json": {"type": "auth"},
                    "expect_json": {"type": "welcome", "user": {"id": 1}},
                    "timeout": "2s",
                },
                {"repeat": 3, "steps": [{"send": "x{i}", "expect": "x{i}"}]},
                {"wait": "250ms"},
                {"send": "bye"},
                {"close": True},
            ]
        )
    )
    auth, repeat, wait, bye, close = steps
    assert isinstance(auth, Exchange) and auth.name == "auth" and auth.timeout == 2.0
    assert isinstance(auth.expect, JsonFields) and ("user.id", 1) in auth.expect.expected
    assert isinstance(repeat, Repeat) and repeat.times == 3 and repeat.steps[0].name == "step 2.1"
    assert wait.seconds == 0.25 and bye.name == "step 4" and bye.expect is None and close.name == "close"


@pytest.mark.parametrize(
    "steps, message",
    [
        ([{"sned": "x"}], "scenario.steps step 1: unknown key 'sned' (did you mean 'send'?)"),
        ([], "the list of steps is empty"),
        ([{"name": "a"}], "the step does nothing"),
        ([{"send": "x", "wait": "1s"}], "send and wait cannot be in one step"),
        ([{"expect": "a", "expect_regex": "b"}], "expect and expect_regex in one step"),
        ([{"send": "x", "timeout": "1s"}], "timeout applies to an expect"),
        ([{"expect_regex": "(unclosed"}], "is not a regular expression"),
        ([{"repeat": 0, "steps": [{"send": "x"}]}], "repeat: expected a whole number of at least 1"),
        ([{"repeat": 2, "steps": [{"send": "x", "bogus": 1}]}], "scenario.steps step 1.1: unknown key 'bogus'"),
        ([{"steps": [{"send": "x"}]}], "'steps' belongs to a repeat block"),
        ([{"close": False}], "write close = true"),
        ([{"wait": "soon"}], "not a duration"),
        ([{"send": "{user_id%}"}], "broken placeholder"),
        ([{"expect_json": {}}], "expected a table of fields"),
        ("send hi", "expected a list of step tables"),
    ],
)
def test_bad_steps_are_one_line_profile_errors(steps, message):
    with pytest.raises(ProfileError) as caught:
        profile(scenario={"steps": steps})
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_identity_and_tls_keys_are_validated(tmp_path):
    with pytest.raises(ProfileError, match=r"load.headers: expected a table"):
        profile(load={"headers": "Authorization: x"})
    with pytest.raises(ProfileError, match=r"load.subprotocols: expected a list"):
        profile(load={"subprotocols": [1]})
    with pytest.raises(ProfileError, match=r"load.credentials: file 'nope.csv' does not exist"):
        profile(load={"credentials": "nope.csv"})
    with pytest.raises(ProfileError, match=r"target.ca_bundle: file"):
        parse_profile({"target": {**TARGET, "url": "wss://127.0.0.1:{port}/", "ca_bundle": "missing.pem"}})
    with pytest.raises(ProfileError, match=r"target.insecure_tls is set but target.url .* is not a wss:// URL"):
        parse_profile({"target": {**TARGET, "insecure_tls": True}})
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    with pytest.raises(ProfileError, match="exclude each other"):
        parse_profile(
            {"target": {**TARGET, "url": "wss://127.0.0.1:{port}/", "ca_bundle": str(ca), "insecure_tls": True}}
        )
    script = tmp_path / "s.py"
    script.write_text("def scenario(conn, ctx): pass\n")
    with pytest.raises(ProfileError, match="scenario.steps and scenario.file exclude each other"):
        profile(scenario={"steps": [{"send": "x"}], "file": str(script)})


def test_relative_files_are_found_next_to_the_profile(tmp_path):
    (tmp_path / "creds.csv").write_text("username,token\nalice,s3cret-a\nbob,s3cret-b\n")
    (tmp_path / "p.toml").write_text(
        '[target]\ncommand = "{python} -m runner.targets.chat --port {port}"\n'
        '[load]\ncredentials = "creds.csv"\nheaders = { Authorization = "Bearer {token}" }\n'
    )
    loaded = load_profile(tmp_path / "p.toml")
    assert loaded.load.credentials == str(tmp_path / "creds.csv")
