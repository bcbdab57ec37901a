"""memray attached by pid to a running Python server (`soak run --pid`): real gdb, real memray, real servers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import memray
import psutil
import pytest

from runner.sampling import memray_launch
from runner.sampling.memray_attach import (
    AttachResult,
    attach,
    attach_payload,
    children_note,
    detach,
    detach_payload,
    explain_failure,
    python_process_problem,
)
from runner.sampling.memray_capture import MemrayFiles, read_checkpoints
from tests.conftest import ROOT, Server, gdb_injection_problem, soak, stop_process

needs_gdb = pytest.mark.skipif(
    shutil.which("gdb") is None, reason="gdb is not installed (apt-get install gdb): memray cannot attach without it"
)
#: A real attach (memray's gdb injection) needs gdb able to call into a process here.
needs_gdb_injection = pytest.mark.skipif(gdb_injection_problem() is not None, reason=str(gdb_injection_problem()))

SHORT = """
name = "attach-{name}"
[load]
users = {users}
spawn_rate = 40
duration = "{duration}"
messages = 1
[phases]
baseline = "1s"
drain = "3s"
cooldown = "1s"
"""


def _profile(tmp_path: Path, name: str, *, users: int, duration: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(SHORT.format(name=name, users=users, duration=duration), encoding="utf-8")
    return path


@needs_gdb_injection
def test_soak_attached_by_pid_tracks_the_heap_and_names_the_leaking_line(tmp_path):
    server = Server("runner.targets.leaky", "--leak-bytes", "2048")
    try:
        out = tmp_path / "run"
        result = soak(
            "run",
            str(_profile(tmp_path, "leaky", users=20, duration="12s")),
            "--pid",
            str(server.process.pid),
            "--out",
            str(out),
            "--quiet",
            timeout=300,
        )
        assert result.returncode == 1, result.stdout + result.stderr
        assert "leak site: runner/targets/leaky.py:26 in __init__" in result.stdout, result.stdout
        assert server.process.poll() is None  # attached, never stopped by soak

        summary = json.loads((out / "summary.json").read_text())
        assert summary["memray"]["enabled"] and summary["memray"]["status"] == "complete", summary["memray"]
        assert summary["sites"][0]["location"] == "runner/targets/leaky.py:26"
        assert 1024 <= summary["sites"][0]["bytes_per_connection"] <= 3072
        assert summary["metrics"]["heap"]["slope_per_connection"] > 512, summary["metrics"]["heap"]
        assert not any("memray skipped" in note for note in summary["notes"]), summary["notes"]
        assert (
            f"memray attached to pid {server.process.pid} while it ran: allocations made before the attach are not seen"
            in summary["notes"]
        )
        meta = json.loads((out / "meta.json").read_text())
        assert meta["target"]["memray"] is True and meta["target"]["attached"] is True
        assert meta["target"]["pid"] == server.process.pid
        log = read_checkpoints(out / "memray" / "checkpoints.jsonl")
        assert log["events"]["start"]["pid"] == server.process.pid
        assert log["events"]["end"]["reason"] == "detach"  # detached at the end: the capture is finalised
        assert "frozen" in log["events"]
    finally:
        server.stop()


@needs_gdb
def test_without_gdb_on_path_the_run_completes_on_psutil_with_a_note(tmp_path):
    server = Server("runner.targets.leaky", "--leak-bytes", "2048")
    empty = tmp_path / "bin"
    empty.mkdir()
    try:
        out = tmp_path / "run"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "runner",
                "run",
                str(_profile(tmp_path, "nogdb", users=10, duration="3s")),
                "--pid",
                str(server.process.pid),
                "--out",
                str(out),
                "--quiet",
            ],
            capture_output=True,
            text=True,
            timeout=240,
            cwd=ROOT,
            env={**os.environ, "PATH": str(empty)},
        )
        assert result.returncode in (0, 1, 4), result.stdout + result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        summary = json.loads((out / "summary.json").read_text())
        assert summary["verdict"] in ("pass", "leak", "inconclusive")
        assert summary["load"]["connections_closed"] > 0
        assert summary["memray"]["enabled"] is False
        assert "heap" not in summary["metrics"]
        notes = [n for n in summary["notes"] if "memray skipped" in n]
        assert len(notes) == 1 and "needs gdb: apt-get install gdb, or --no-memray" in notes[0], summary["notes"]
        assert not (out / "memray").exists()
        assert server.process.poll() is None
    finally:
        server.stop()


@needs_gdb
@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to make a real ptrace refusal (attach as nobody to root's server)",
)
def test_ptrace_refused_by_another_user_gives_the_ptrace_note():
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable]
    readable = subprocess.run(
        [*as_nobody, "-c", "import runner.sampling.memray_attach"],
        capture_output=True,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("COVERAGE")},
    )
    if readable.returncode != 0:
        pytest.skip(
            "user nobody cannot read this checkout or its .venv (a private folder), "
            "so no process of another user can run the attach from it"
        )
    server = Server("runner.targets.echo")
    folder = Path(tempfile.mkdtemp(prefix="soak-attach-nobody-"))
    try:
        folder.chmod(0o777)
        code = textwrap.dedent(
            f"""
            from pathlib import Path
            from runner.sampling.memray_attach import attach
            from runner.sampling.memray_capture import MemrayFiles
            result = attach({server.process.pid}, MemrayFiles(Path({str(folder)!r})), checkpoint_interval=1.0,
                            memory_interval_ms=50, max_bytes=None)
            print(result.tracked, result.note)
            """
        )
        env = {
            k: v for k, v in os.environ.items() if not k.startswith("COVERAGE")
        }  # nobody cannot write root's data file
        env["HOME"] = str(folder)
        done = subprocess.run([*as_nobody, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("False memray skipped: cannot attach to pid"), done.stdout
        assert "ptrace refused (the process belongs to another user)" in done.stdout
        assert "/proc/sys/kernel/yama/ptrace_scope" in done.stdout and "CAP_SYS_PTRACE" in done.stdout
        assert not (folder / "memray").exists()  # a failed attach leaves nothing to be read as a capture
        assert server.process.poll() is None
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_payloads_start_replace_stop_and_finalise_sessions(tmp_path):
    """The payloads run as memray's injector runs them (fresh globals), in a real Python process."""
    folders = [tmp_path / name for name in ("first", "second", "third")]
    options = []
    for folder in folders:
        files = MemrayFiles(folder)
        files.root.mkdir(parents=True)
        options.append(
            {
                "capture": str(files.capture),
                "checkpoints": str(files.checkpoints),
                "control": str(files.control),
                "checkpoint_interval": 0.2,
                "memory_interval_ms": 20,
                "max_bytes": None,
                "python_allocators": False,
            }
        )
    launcher = os.path.abspath(memray_launch.__file__)
    script = textwrap.dedent(
        """
        import json, sys, time
        payloads = json.loads(sys.stdin.read())

        def inject(source):
            try:
                exec(compile(source, "_memray_attach_hook.py", "exec"), {"__builtins__": __builtins__})
                return ""
            except BaseException as exc:
                return repr(exc)

        print(json.dumps(inject(payloads["first"])))
        kept = [bytearray(4096) for _ in range(50)]
        time.sleep(0.5)
        print(json.dumps(inject(payloads["second"])))  # a session left by a crashed run is replaced
        time.sleep(0.3)
        print(json.dumps(inject(payloads["detach"])))
        print(json.dumps(inject(payloads["detach"])))  # nothing left to detach
        print(json.dumps(inject(payloads["third"])))  # still attached when the process exits
        """
    )
    payloads = {
        "first": attach_payload(launcher, options[0]),
        "second": attach_payload(launcher, options[1]),
        "third": attach_payload(launcher, options[2]),
        "detach": detach_payload(),
    }
    done = subprocess.run(
        [sys.executable, "-c", script], input=json.dumps(payloads), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert answers[:3] == ["", "", ""], answers
    assert "no soak-runner memray session" in answers[3]
    assert "no soak-runner session was active" in explain_failure(answers[3], pid=1, action="detach")
    assert answers[4] == ""
    ends = [read_checkpoints(MemrayFiles(folder).checkpoints)["events"] for folder in folders]
    assert [e["end"]["reason"] for e in ends] == ["replaced", "detach", "exit"]
    assert all(e["start"]["pid"] == ends[0]["start"]["pid"] for e in ends)
    with memray.FileReader(
        str(MemrayFiles(folders[0]).capture)
    ) as reader:  # finalised (an unfinalised one ends at its start)
        assert reader.metadata.end_time > reader.metadata.start_time


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "Cannot find a supported lldb or gdb executable and sys.remote_exec is not available.",
            "needs gdb: apt-get install gdb, or --no-memray",
        ),
        ("Cannot find a supported gdb executable.", "needs gdb: apt-get install gdb, or --no-memray"),
        (
            "Failed to attach a debugger to the process.\nYou most likely do not have permission to trace the process.",
            "ptrace refused (Operation not permitted): set /proc/sys/kernel/yama/ptrace_scope to 0, give soak "
            "CAP_SYS_PTRACE, or run soak as the server's user or root",
        ),
        ("ptrace: Operation not permitted.", "ptrace refused (Operation not permitted)"),
        (
            "Failed to attach a debugger to the process.\nThe given process ID is owned by a different user.",
            "ptrace refused (the process belongs to another user)",
        ),
        ("Failed to attach a debugger to the process.\nThe given process ID does not exist.", "the process exited"),
        (
            "The process does not seem to be running Python 3.7 or newer.",
            "not running a Python interpreter memray can attach to",
        ),
        (
            "ModuleNotFoundError(\"No module named 'memray'\")",
            "memray is not importable in the server's Python environment: pip install memray there",
        ),
        (
            "ImportError('cannot import name Tracker from memray')",
            "memray is not importable in the server's Python environment",
        ),
        ("Timed out waiting for connection from pid 42", "did not run the attach code in time"),
        ("timed out after 30s waiting for the payload's answer", "did not run the attach code in time"),
        (
            "RuntimeError('No more than one Tracker instance can be active at the same time')",
            "another memray tracker is already active in it (stop it with `memray detach 42`)",
        ),
        (
            "RuntimeError(\"PermissionError: [Errno 13] Permission denied: '/srv/run/memray/checkpoints.jsonl'\")",
            "the server process was refused access to /srv/run/memray/checkpoints.jsonl: run soak as the server's user",
        ),
        (
            "RuntimeError(\"PermissionError: [Errno 1] Operation not permitted: '/srv/run/memray/capture.bin'\")",
            "the server process was refused access to /srv/run/memray/capture.bin",
        ),
        ("PermissionError(13, 'Permission denied')", "the server process was refused access to a file"),
        (
            "The target process couldn't open the memray shared library.\nThis can occur ...",
            "cannot load memray's injector library",
        ),
        (
            'RuntimeError("FileNotFoundError: [Errno 2] No such file or directory: '
            "'/work/runner/sampling/memray_launch.py'\")",
            "the server cannot see /work/runner/sampling/memray_launch.py (does it run in another container or "
            "mount namespace?)",
        ),
        ("ValueError('something new')", "ValueError('something new')"),
        ("", "no error text"),
    ],
)
def test_error_text_becomes_one_line_note(text, expected):
    note = explain_failure(text, pid=42)
    assert note.startswith("memray skipped: cannot attach to pid 42: ")
    assert expected in note
    assert note.endswith("(psutil metrics only)")
    assert "\n" not in note and "Traceback" not in note


def test_long_unknown_errors_are_cut_and_detach_notes_say_detach():
    note = explain_failure("x" * 500 + "\nsecond line", pid=7, action="detach")
    assert note.startswith("memray: could not detach from pid 7: ") and note.endswith("...")
    assert len(note) < 300 and "second line" not in note


def test_non_python_processes_are_refused_before_any_debugger(tmp_path):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        problem = python_process_problem(sleeper.pid)
        assert problem == f"memray skipped: pid {sleeper.pid} (sleep) is not a Python process (psutil metrics only)"
        result = attach(
            sleeper.pid, MemrayFiles(tmp_path), checkpoint_interval=1.0, memory_interval_ms=50, max_bytes=None
        )
        assert result == AttachResult(False, problem)
        assert not (tmp_path / "memray").exists()
    finally:
        stop_process(sleeper)
    assert "is soak itself" in (python_process_problem(os.getpid()) or "")
    assert "the process exited" in (python_process_problem(sleeper.pid) or "")
    assert detach(sleeper.pid).startswith(f"memray: pid {sleeper.pid} exited while attached")


def test_python_processes_pass_and_children_are_noted():
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; subprocess.run(['sleep', '60'])"])
    try:
        process = psutil.Process(parent.pid)
        for _ in range(400):  # the child appears once the interpreter has started
            if process.children():
                break
            time.sleep(0.05)
        assert python_process_problem(parent.pid) is None
        note = children_note(parent.pid)
        assert (
            note == f"memray tracks pid {parent.pid} only; its 1 child process(es) are measured by psutil only (attach "
            "to a worker's pid to track it)"
        )
    finally:
        for child in psutil.Process(parent.pid).children(recursive=True):
            child.kill()
        stop_process(parent)


def _python_without_memray(tmp_path: Path, body: str) -> tuple[subprocess.Popen, Path]:
    """A real Python process that cannot import memray (-S: no site-packages), once it runs ``body``."""
    ready = tmp_path / "ready"
    code = f"import pathlib, time\npathlib.Path({str(ready)!r}).touch()\n{body}"
    process = subprocess.Popen([sys.executable, "-S", "-c", code])
    for _ in range(600):
        if ready.exists():
            break
        time.sleep(0.05)
    return process, ready


@needs_gdb_injection
def test_a_server_without_memray_in_its_environment_gets_the_install_note(tmp_path):
    # allocates: gdb gets in
    busy = "for _ in range(2400):\n    time.sleep(0.05)\n    scratch = [bytearray(64) for _ in range(10)]"
    process, _ = _python_without_memray(tmp_path, busy)
    try:
        result = attach(
            process.pid, MemrayFiles(tmp_path / "run"), checkpoint_interval=1.0, memory_interval_ms=50, max_bytes=None
        )
        assert result.tracked is False
        assert result.note == (
            f"memray skipped: cannot attach to pid {process.pid}: memray is not importable in the server's Python "
            "environment: "
            "pip install memray there, or --no-memray (psutil metrics only)"
        )
        assert not (tmp_path / "run" / "memray").exists()
        assert process.poll() is None  # the injection left it running
    finally:
        stop_process(process)


@needs_gdb_injection
def test_an_idle_process_times_out_and_the_debugger_leaves_it_unharmed(tmp_path):
    """No allocation, no signal check: gdb never gets in. It is interrupted and detaches cleanly."""
    body = "time.sleep(6)\nkept = [bytearray(100) for _ in range(1000)]\nprint('done', flush=True)"
    process, _ = _python_without_memray(tmp_path, body)
    woken = []
    try:
        result = attach(
            process.pid,
            MemrayFiles(tmp_path / "run"),
            checkpoint_interval=1.0,
            memory_interval_ms=50,
            max_bytes=None,
            timeout=2.0,
            wake=lambda: woken.append(1),
        )
        assert result.tracked is False
        assert "the process did not run the attach code in time (idle, stopped" in (result.note or ""), result.note
        assert len(woken) >= 2  # the run's wake-up (a handshake to the server) was tried meanwhile
        assert not (tmp_path / "run" / "memray").exists()
        # a debugger killed instead would leave breakpoints in malloc: the allocation after the sleep would SIGTRAP it
        assert process.wait(timeout=60) == 0
        assert not [p for p in psutil.Process().children(recursive=True) if p.name() in ("gdb", "lldb")]
    finally:
        stop_process(process)
