"""The JVM probe against real JVMs started by the tests (the bundled plain-JDK WebSocket server).

Every test talks to a real HotSpot over its attach socket; churn is made with the project's
own WebSocket client. The server is compiled once per session (``javac``), which keeps each
JVM start to about a second instead of compiling the source at every launch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from runner.load.client import WebSocketClient
from runner.sampling.runtimes import ProbeUnavailable, open_probe, prepare_launch
from runner.sampling.runtimes.jvm import AttachClient, JvmProbe, find_jvm, is_jvm
from tests.conftest import ROOT, free_port, soak, stop_process, wait_for_port

SOURCE = ROOT / "runner" / "targets" / "java" / "Server.java"

pytestmark = pytest.mark.skipif(
    shutil.which("java") is None or shutil.which("javac") is None,
    reason="needs a JDK (java and javac); .ci/run installs default-jdk-headless",
)


@pytest.fixture(scope="session")
def classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("java-classes")
    subprocess.run(["javac", "-g", "-d", str(out), str(SOURCE)], check=True, timeout=300)
    return out


class Jvm:
    """One bundled Java server, started in its own working folder (where the attach file goes)."""

    def __init__(self, classes: Path, cwd: Path, *args: str, jvm_options: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            ["java", *jvm_options, "-cp", str(classes), "Server", "--port", str(self.port), *args],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(self.port, timeout=120)
        except BaseException:
            self.stop()
            raise
        self.pid = self.process.pid
        self.url = f"ws://127.0.0.1:{self.port}/"

    def churn(self, connections: int) -> None:
        """Open, echo once and close ``connections`` connections, one after another."""
        for i in range(connections):
            client = WebSocketClient(self.url, timeout=30)
            client.connect()
            client.send(f"hello {i}")
            assert client.recv(timeout=30) == f"hello {i}"
            client.close()

    def stop(self) -> None:
        stop_process(self.process)


@pytest.fixture
def leaky(classes: Path, tmp_path: Path) -> Iterator[Jvm]:
    server = Jvm(classes, tmp_path, "--leak")
    yield server
    server.stop()


def _count(checkpoint, name: str) -> int:  # type: ignore[no-untyped-def]
    return sum(site.count or 0 for site in checkpoint.sites if site.location == name)


def test_prepare_launch_names_the_jvm_and_leaves_the_command_alone() -> None:
    plan = prepare_launch(["/usr/bin/java", "Server.java", "--port", "1"], {"A": "1"})
    assert plan.runtime == "jvm" and plan.argv == ["/usr/bin/java", "Server.java", "--port", "1"]
    assert prepare_launch([sys.executable, "-m", "x"], {}).runtime is None


def test_histogram_gives_heap_after_gc_and_classes_and_connstate_rises_one_per_connection(leaky: Jvm) -> None:
    assert is_jvm(leaky.pid)
    probe = open_probe(leaky.pid, started=True)
    try:
        assert probe.runtime == "jvm"
        leaky.churn(30)  # warm-up: the first connections load classes and fill caches
        first = probe.checkpoint()
        names = {site.location for site in first.sites}
        assert {"java.lang.String", "[B", "java.lang.Class"} <= names
        assert first.heap == sum(site.live_bytes for site in first.sites)  # the Total line is the rows' sum
        assert 1_000_000 < first.heap < 200_000_000
        assert first.gc_seconds > 0
        before = _count(first, "Server$ConnState")
        leaky.churn(150)
        second = probe.checkpoint()
        assert _count(second, "Server$ConnState") - before == 150
        per_connection = (second.heap - first.heap) / 150
        assert 700 < per_connection < 3000, per_connection  # ~1.2 KB: the state, its 1 KB buffer, the map node
    finally:
        assert probe.close() is not None


def test_clean_server_keeps_no_connstate(classes: Path, tmp_path: Path) -> None:
    server = Jvm(classes, tmp_path)
    try:
        probe = open_probe(server.pid, started=True)
        server.churn(60)
        deadline = time.monotonic() + 60
        while _count(probe.checkpoint(), "Server$ConnState") and time.monotonic() < deadline:
            time.sleep(0.2)  # the server thread of the last connection may still be closing
        assert _count(probe.checkpoint(), "Server$ConnState") == 0
        probe.close()
    finally:
        server.stop()


def test_jfr_names_the_allocating_line_and_the_static_root_and_close_stops_the_recording(
    classes: Path, tmp_path: Path
) -> None:
    if shutil.which("jfr") is None and not Path(os.path.realpath(shutil.which("java") or "")).with_name("jfr").exists():
        pytest.skip("this JDK has no jfr tool; the probe says so in a note (tested below)")
    # Small fixed TLABs make JFR sample often enough that 400 connections surely leave old
    # objects (at the default sizes a sample lands on the leak about once per 1,000 connections).
    server = Jvm(classes, tmp_path, "--leak", jvm_options=("-XX:TLABSize=2k", "-XX:-ResizeTLAB"))
    try:
        probe = open_probe(server.pid, started=True)
        assert isinstance(probe, JvmProbe)
        probe.start()
        assert probe.recording and probe.recording in probe.client.jcmd("JFR.check")
        probe.checkpoint()
        server.churn(400)
        probe.checkpoint()
        assert probe.growing_classes()[0] == "Server$ConnState"
        extras = probe.finish()
        found = {c["class"]: c for c in extras["jfr"]["classes"]}
        state = found["Server$ConnState"]
        source = SOURCE.read_text().splitlines()
        allocating = [i + 1 for i, line in enumerate(source) if "new byte[1024]" in line or "new ConnState(" in line]
        assert state["location"] in {f"Server.java:{n}" for n in allocating}, state
        assert state["root"] == "static field Server.STATES", state
        assert any("Server.serve" in frame for frame in state["stack"]), state
        notes = probe.close()
        assert not any("not stopped" in note for note in notes), notes
        assert probe.recording not in probe.client.jcmd("JFR.check")
        assert not list(Path("/proc", str(server.pid), "root", "tmp").glob(f"{probe.recording}*"))
        assert server.process.poll() is None
    finally:
        server.stop()


def test_attach_disabled_is_one_line_and_the_jvm_is_untouched(classes: Path, tmp_path: Path) -> None:
    server = Jvm(classes, tmp_path, jvm_options=("-XX:+DisableAttachMechanism",))
    try:
        with pytest.raises(ProbeUnavailable, match="DisableAttachMechanism") as caught:
            open_probe(server.pid, started=True)
        assert "\n" not in str(caught.value)
        assert server.process.poll() is None
        assert not (tmp_path / f".attach_pid{server.pid}").exists()
    finally:
        server.stop()


def test_a_jvm_with_reduced_signal_usage_is_probed_without_a_signal(classes: Path, tmp_path: Path) -> None:
    # -Xrs: HotSpot does not handle SIGQUIT, and opens its attach socket at start-up instead
    server = Jvm(classes, tmp_path, jvm_options=("-Xrs",))
    try:
        probe = open_probe(server.pid, started=True)
        assert probe.checkpoint().heap > 0
        probe.close()
        assert server.process.poll() is None
    finally:
        server.stop()


def test_a_java_named_program_that_does_not_catch_sigquit_is_not_signalled(tmp_path: Path) -> None:
    # SIGQUIT kills a process that does not handle it: a program called java without a JVM's handler
    fake = tmp_path / "java"
    shutil.copy(os.path.realpath(sys.executable), fake)
    sleeper = subprocess.Popen([str(fake), "-c", "import time; time.sleep(120)"])
    try:
        deadline = time.monotonic() + 60
        while os.path.basename(os.readlink(f"/proc/{sleeper.pid}/exe")) != "java" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert is_jvm(sleeper.pid)
        with pytest.raises(ProbeUnavailable, match="does not handle SIGQUIT"):
            AttachClient(sleeper.pid)
        assert sleeper.poll() is None
        assert not list(tmp_path.glob(".attach_pid*")) and not Path(f"/tmp/.attach_pid{sleeper.pid}").exists()
    finally:
        stop_process(sleeper)


def test_a_process_that_is_not_a_jvm_is_refused_and_not_signalled() -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        assert not is_jvm(sleeper.pid)
        with pytest.raises(ProbeUnavailable, match="no runtime heap probe"):
            open_probe(sleeper.pid, started=False)
        with pytest.raises(ProbeUnavailable, match="is not a JVM"):
            open_probe(sleeper.pid, started=False, runtime="jvm")
        assert sleeper.poll() is None  # no SIGQUIT reached it (it would have died)
    finally:
        stop_process(sleeper)


def test_a_launcher_script_is_followed_to_its_only_java_child(classes: Path, tmp_path: Path) -> None:
    port = free_port()
    shell = subprocess.Popen(["sh", "-c", f"java -cp {classes} Server --port {port}; exit 0"], cwd=tmp_path)
    try:
        wait_for_port(port, timeout=120)
        pid, note = find_jvm(shell.pid)
        assert pid != shell.pid and is_jvm(pid) and note and str(shell.pid) in note
        probe = open_probe(pid, started=True)
        assert probe.checkpoint().heap > 0
        probe.close()
    finally:
        for child in psutil.Process(shell.pid).children(recursive=True):
            child.terminate()
        stop_process(shell)


def test_a_gone_socket_is_a_one_line_error_not_a_hang(leaky: Jvm) -> None:
    client = AttachClient(leaky.pid)
    leaky.stop()
    with pytest.raises(ProbeUnavailable) as caught:
        client.jcmd("GC.heap_info", timeout=5)
    assert "\n" not in str(caught.value)


def test_a_jvm_the_run_did_not_start_has_its_recording_stopped_by_the_watchdog_if_the_runner_dies(leaky: Jvm) -> None:
    probe = open_probe(leaky.pid, started=False)
    assert isinstance(probe, JvmProbe)
    probe.start()
    assert probe.recording and probe.recording in probe.client.jcmd("JFR.check")
    guard = probe._guard
    assert guard is not None and guard.stdin is not None
    guard.stdin.close()  # what the runner's death does to the pipe: no "done" came
    guard.wait(timeout=60)
    assert probe.recording not in probe.client.jcmd("JFR.check")
    assert not any("not stopped" in note for note in probe.close())  # already stopped: close is quiet
    assert leaky.process.poll() is None


def test_soak_run_by_pid_of_a_jvm_leaves_no_recording(leaky: Jvm, tmp_path: Path) -> None:
    profile = tmp_path / "short.toml"
    profile.write_text(
        'name = "jvm-pid"\n[load]\nusers = 5\nspawn_rate = 10\nduration = "6s"\n'
        '[phases]\nbaseline = "1s"\ndrain = "3s"\ncooldown = "1s"\n',
        encoding="utf-8",
    )
    out = tmp_path / "run"
    result = soak(
        "run", str(profile), "--pid", str(leaky.pid), "--url", leaky.url, "--out", str(out), "--quiet", timeout=300
    )
    assert result.returncode in (0, 1, 4), result.stdout + result.stderr  # a short run may be inconclusive
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runtime"]["checkpoints"] >= 2, summary["runtime"]
    assert summary["runtime"]["enabled"] and summary["runtime"]["runtime"] == "jvm", summary["runtime"]
    assert "soak-runner" not in AttachClient(leaky.pid).jcmd("JFR.check")
    assert leaky.process.poll() is None  # an attached server is never stopped by the run
