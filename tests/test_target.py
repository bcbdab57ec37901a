from __future__ import annotations

import sys
import textwrap
import time

import psutil
import pytest

from runner.errors import TargetError, UsageError
from runner.target import AttachedTarget, StartedTarget, free_port, port_in_use, substitute, tail

FORKING_SERVER = textwrap.dedent(
    """
    import os, signal, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)   # a stubborn parent: needs SIGKILL
    for _ in range(2):
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            time.sleep(600)
            os._exit(0)
    print("children forked", flush=True)
    time.sleep(600)
    """
)


def test_substitute_placeholders():
    assert substitute(["{python}", "-m", "x", "--port={port}"], port=1234, python="/py") == [
        "/py",
        "-m",
        "x",
        "--port=1234",
    ]


def test_free_port_is_free():
    port = free_port()
    assert not port_in_use(port)


def test_stop_kills_the_whole_tree_even_when_it_ignores_sigterm(tmp_path):
    target = StartedTarget([sys.executable, "-c", FORKING_SERVER], tmp_path / "target.log")
    deadline = time.monotonic() + 10
    while "children forked" not in (tmp_path / "target.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    children = psutil.Process(target.pid).children(recursive=True)
    assert len(children) == 2
    target.stop(grace=0.5)
    for proc in [*children]:
        assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    assert target.poll() is not None
    outcome = target.outcome()
    assert not outcome.crashed and outcome.signal == "SIGKILL"


def test_target_that_exits_at_once_fails_without_waiting(tmp_path):
    target = StartedTarget(
        [sys.executable, "-c", "import sys; print('boom: bad flag'); sys.exit(7)"], tmp_path / "t.log"
    )
    started = time.monotonic()
    with pytest.raises(TargetError, match="exited before it was ready .exit code 7") as info:
        target.wait_ready(lambda: (_ for _ in ()).throw(ConnectionRefusedError()), timeout=30)
    assert time.monotonic() - started < 10
    assert any("boom: bad flag" in line for line in info.value.log_tail)
    target.stop(grace=1)


def test_target_never_ready_times_out_with_its_log(tmp_path):
    target = StartedTarget(
        [sys.executable, "-c", "print('starting slowly', flush=True); import time; time.sleep(60)"], tmp_path / "t.log"
    )
    try:
        _wait_for_log(tmp_path / "t.log", "starting slowly")  # a loaded machine may take seconds to start Python
        with pytest.raises(TargetError, match="did not accept a WebSocket handshake within 0.5s") as info:
            target.wait_ready(lambda: (_ for _ in ()).throw(ConnectionRefusedError("refused")), timeout=0.5)
    finally:
        target.stop(grace=1)
    assert info.value.log_tail == ["starting slowly"]
    assert tail(tmp_path / "t.log") == ["starting slowly"]


def _wait_for_log(path, text, timeout=60.0):
    deadline = time.monotonic() + timeout
    while text not in (path.read_text() if path.exists() else ""):
        assert time.monotonic() < deadline, f"{text!r} never appeared in {path}"
        time.sleep(0.05)


def test_crash_is_reported_with_its_signal(tmp_path):
    target = StartedTarget(
        [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"], tmp_path / "t.log"
    )
    target.process.wait(timeout=10)
    target.stop(grace=1)
    outcome = target.outcome()
    assert outcome.crashed and outcome.signal == "SIGKILL" and outcome.exit_code == 137


def test_missing_command_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        StartedTarget(["/nonexistent/server"], tmp_path / "t.log")


def test_attached_target_finds_its_listening_port(echo_server):
    attached = AttachedTarget(echo_server.process.pid)
    assert attached.listening_ports() == [echo_server.port]
    assert attached.poll() is None
    attached.stop(1)  # never stops a process it did not start
    assert echo_server.process.poll() is None
    with pytest.raises(UsageError, match="no process"):
        AttachedTarget(2**22 + 12345)
