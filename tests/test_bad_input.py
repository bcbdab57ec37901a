"""Bad input is refused with one clear line and exit code 2, never a traceback.

Profile mistakes are checked in-process through :func:`runner.cli.main` (they fail before the
run package, i.e. Locust, is imported); mistakes that need the machine (a port in use, an
unsafe --out, more users than the machine can hold) run the real ``soak`` command.
The profile parser is fuzzed with hypothesis: no input makes it raise anything but ProfileError.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.cli import main
from runner.errors import ProfileError
from runner.profile import _SCHEMA, load_profile, parse_profile
from runner.units import parse_duration
from tests.conftest import ROOT

ECHO = '"{python} -m runner.targets.echo --port {port}"'


def _refused(capsys, argv: list[str]) -> str:
    """Run ``soak ARGV`` in-process; assert exit 2 and one ``soak: error:`` line; return it."""
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured.out + captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("soak: error: ") and "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize(
    "toml, message",
    [
        (f"[target]\ncommand = {ECHO}\n[load]\nuser = 5\n", "unknown profile key load.user (did you mean 'users'?)"),
        (f"[target]\ncommand = {ECHO}\n[lood]\nusers = 5\n", "unknown profile key 'lood' (did you mean 'load'?)"),
        (f"[target]\ncommand = {ECHO}\nredy_timeout = '5s'\n", "did you mean 'ready_timeout'?"),
        (f"[target]\ncommand = {ECHO}\n[load]\nusers = 'many'\n", "load.users: expected a whole number, got 'many'"),
        (f"[target]\ncommand = {ECHO}\n[load]\nusers = 2.5\n", "load.users: expected a whole number"),
        (f"[target]\ncommand = {ECHO}\n[load]\nusers = -3\n", "load.users: must be at least 1"),
        (f"[target]\ncommand = {ECHO}\n[load]\nspawn_rate = 0\n", "load.spawn_rate: must be greater than 0"),
        (
            f"[target]\ncommand = {ECHO}\n[load]\nduration = '10 minutes'\n",
            "load.duration: '10 minutes' is not a duration",
        ),
        (f"[target]\ncommand = {ECHO}\n[load]\nduration = '-5m'\n", "load.duration"),
        (f"[target]\ncommand = {ECHO}\n[load]\nduration = true\n", "load.duration: expected a duration"),
        (f"[target]\ncommand = {ECHO}\n[sampling]\ninterval = '0s'\n", "sampling.interval: must be longer than zero"),
        (f"[target]\ncommand = {ECHO}\nmemray = 'perhaps'\n", "target.memray: expected true or false"),
        (
            f"[target]\ncommand = {ECHO}\nurl = 'http://127.0.0.1:{{port}}/'\n",
            "is not a WebSocket URL (it must start with ws:// or wss://)",
        ),
        (f"[target]\ncommand = {ECHO}\nurl = 'ws:///nohost'\n", "has no host"),
        ("[target]\ncommand = 'myserver --listen 8080'\n", "target.command has no {port} placeholder"),
        ("[target]\ncommand = 'myserver --port {prot}'\n", "unknown placeholder {prot}"),
        ("[target]\ncommand = ''\n", "the command is empty"),
        ("[target]\ncommand = 42\n", "expected a string or a list of strings"),
        ("[target]\nurl = 'ws://127.0.0.1:{port}/'\n", "there is no target.command to give it a port"),
        ("load = 5\n", "'load' must be a table"),
        ("[load]\nusers = 5\n", "nothing to soak"),
        (
            f"[target]\ncommand = {ECHO}\n[scenario]\nprotocol = 'socketio'\n",
            "scenario.protocol: unknown protocol 'socketio' (valid: 'socket.io', 'graphql-ws'; "
            "without a preset leave it out)",
        ),
        (
            f"[target]\ncommand = {ECHO}\n[[scenario.steps]]\nemit = ['join', {{ room = 'r' }}]\n",
            'scenario.steps step 1: emit needs [scenario] protocol = "socket.io" (no protocol is set)',
        ),
        (
            f"[target]\ncommand = {ECHO}\n[scenario]\nprotocol = 'socket.io'\n"
            "[[scenario.steps]]\nemit = [{ room = 'r' }]\n",
            "scenario.steps step 1.emit: expected a list whose first item is the event name, got [{'room': 'r'}]",
        ),
        (
            f"[target]\ncommand = {ECHO}\n[scenario]\nprotocol = 'socket.io'\n[[scenario.steps]]\nemit = 42\n",
            "scenario.steps step 1.emit: expected a list whose first item is the event name",
        ),
        (
            f"[target]\ncommand = {ECHO}\n[scenario]\nprotocol = 'socket.io'\n[[scenario.steps]]\nsend = 'hi'\n",
            "scenario.steps step 1: send is a plain WebSocket message, but the run speaks socket.io",
        ),
        (
            f"[target]\ncommand = {ECHO}\n[scenario]\nprotocol = 'graphql-ws'\n[[scenario.steps]]\nemit_ack = ['x']\n",
            'emit_ack needs [scenario] protocol = "socket.io" (the run speaks graphql-ws)',
        ),
        (
            f"[target]\ncommand = {ECHO}\n[scenario]\nprotocol = 'socket.io'\n"
            "[[scenario.steps]]\nexpect_args = { a = 1 }\n",
            "scenario.steps step 1: expect_args belongs to expect_event or emit_ack",
        ),
        (
            f"[target]\ncommand = {ECHO}\n[scenario]\nnamespace = '/chat'\n",
            "scenario.namespace is a Socket.IO namespace",
        ),
        (
            f"[target]\ncommand = {ECHO}\n[scenario]\nauth = {{ token = 'x' }}\n",
            "scenario.auth is the handshake payload of a protocol preset",
        ),
        (
            f"[target]\ncommand = {ECHO}\n[scenario]\nprotocol = 'socket.io'\nauth = {{ token = '{{tok}}' }}\n",
            "placeholder {tok} in '{tok}'",
        ),
        (
            f"[target]\ncommand = {ECHO}\n[[scenario.auto_reply]]\nmatch = '(ping'\nreply = 'pong'\n",
            "scenario.auto_reply rule 1.match: '(ping' is not a regular expression",
        ),
        (
            f"[target]\ncommand = {ECHO}\n[scenario]\nprotocol = 'graphql-ws'\n"
            "[[scenario.auto_reply]]\nmatch = 'ping'\nreply = 'pong'\n",
            "scenario.auto_reply is for protocols without a preset; graphql-ws answers its own heartbeats",
        ),
    ],
)
def test_bad_profile_is_one_line_naming_the_key(capsys, tmp_path, toml, message):
    path = tmp_path / "bad.toml"
    path.write_text(toml, encoding="utf-8")
    line = _refused(capsys, ["run", str(path)])
    assert message in line


def test_profile_that_is_not_toml(capsys, tmp_path):
    path = tmp_path / "profile.toml"
    path.write_text("users: 200\nduration: 10m\n", encoding="utf-8")
    assert "is not valid TOML" in _refused(capsys, ["run", str(path)])


def test_profile_that_is_a_folder_or_binary(capsys, tmp_path):
    assert "is a folder" in _refused(capsys, ["run", str(tmp_path)])
    binary = tmp_path / "x.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert "x.toml" in _refused(capsys, ["run", str(binary)])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--users", "abc"], "load.users: expected a whole number, got 'abc'"),
        (["--spawn-rate", "-1"], "load.spawn_rate: must be greater than 0"),
        (["--duration", "forever"], "not a duration"),
        (["--workers", "-2"], "load.workers: must be at least 0"),
        (["--url", "wss://"], "has no host"),
    ],
)
def test_bad_command_line_values(capsys, args, message):
    assert message in _refused(capsys, ["run", "--target", "{python} -m runner.targets.echo --port {port}", *args])


def test_analyze_refuses_bad_input(capsys, tmp_path):
    assert "not a run folder" in _refused(capsys, ["analyze", str(tmp_path)])
    (tmp_path / "meta.json").write_text("{not json", encoding="utf-8")
    assert "cannot read" in _refused(capsys, ["analyze", str(tmp_path)])


def test_secrets_in_a_refused_value_are_not_printed(capsys):
    line = _refused(
        capsys, ["run", "--target", "x --port {port}", "--url", "http://admin:hunter22@127.0.0.1:{port}/?token=abc123"]
    )
    assert "hunter22" not in line and "abc123" not in line and "not a WebSocket URL" in line


# --- mistakes that need the machine: the real command -----------------------------------------


def _one_line_exit_2(process: subprocess.Popen[str]) -> str:
    stdout, stderr = process.communicate(timeout=180)
    assert process.returncode == 2, stdout + stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("soak: error: "), stderr
    return lines[0]


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )


def test_machine_level_refusals(tmp_path):
    """Port in use, unsafe --out, more users than the machine can hold: real soak processes, side by side."""
    echo = ["--target", "{python} -m runner.targets.echo --port {port}", "--no-memray"]
    victim = tmp_path / "victim"
    victim.mkdir()
    link = tmp_path / "link"
    link.symlink_to(victim)
    previous = tmp_path / "previous"
    previous.mkdir()
    (previous / "meta.json").write_text("{}", encoding="utf-8")
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work", encoding="utf-8")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        runs = {
            "port": _start(
                "run",
                "--target",
                f"{sys.executable} -m runner.targets.echo --port {port}",
                "--url",
                f"ws://127.0.0.1:{port}/",
                "--out",
                str(tmp_path / "a"),
            ),
            "symlink": _start("run", *echo, "--out", str(link)),
            "previous": _start("run", *echo, "--out", str(previous)),
            "precious": _start("run", *echo, "--out", str(precious), "--overwrite"),
            "capacity": _start("run", *echo, "--users", "5000000", "--out", str(tmp_path / "b")),
        }
        try:
            lines = {name: _one_line_exit_2(process) for name, process in runs.items()}
        finally:
            for process in runs.values():
                if process.poll() is None:
                    process.kill()
                    process.wait()
    assert f"port {port} is already in use" in lines["port"]
    assert not (tmp_path / "a").exists()  # refused before any folder is made
    assert "is a symbolic link" in lines["symlink"] and not any(victim.iterdir())
    assert "already holds a run" in lines["previous"] and (previous / "meta.json").read_text() == "{}"
    assert "holds no run" in lines["precious"] and (precious / "thesis.tex").exists()
    assert "5000000 users" in lines["capacity"] and not (tmp_path / "b").exists()


# --- fuzzing the profile parser -----------------------------------------------------------------

_KEYS = sorted({key for table in _SCHEMA.values() for key in table} | set(_SCHEMA) | {"name", "command", "url"})
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(
        ["10s", "1h30m", "0", "-1s", "{port}", "{python}", "ws://127.0.0.1:{port}/", "{", "}", "5 minutes"]
    ),
)
_keys = st.one_of(st.sampled_from(_KEYS), st.text(max_size=12))
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=4)),
    max_leaves=12,
)
_profiles = st.dictionaries(
    st.one_of(st.sampled_from(sorted(_SCHEMA) + ["name"]), st.text(max_size=8)),
    st.one_of(st.dictionaries(_keys, _values, max_size=6), _values),
    max_size=6,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_profiles)
def test_fuzz_parse_profile_raises_only_profile_errors(data):
    try:
        profile = parse_profile(data)
    except ProfileError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert profile.load.users >= 1 and profile.load.duration > 0
        assert profile.target.command or profile.target.url or profile.target.pid


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=20), st.integers(), st.floats(), st.booleans(), st.none(), st.lists(st.integers(), max_size=2)
    )
)
def test_fuzz_parse_duration(value):
    try:
        seconds = parse_duration(value)
    except ProfileError:
        return
    assert seconds >= 0 and seconds == seconds and seconds != float("inf")


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_fuzz_profile_files(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.toml"
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        try:
            load_profile(path)
        except ProfileError:
            pass


def test_fuzzed_toml_that_parses_still_goes_through_validation():
    """A sanity check of the fuzz harness: valid TOML with a wrong type is a ProfileError."""
    with pytest.raises(ProfileError):
        parse_profile(tomllib.loads("[load]\nusers = [1, 2]\n[target]\ncommand = 'x {port}'\n"))
