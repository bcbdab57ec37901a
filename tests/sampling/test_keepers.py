"""What keeps a leak: real servers (tests/servers/) under memray, their containers, tasks and sites named."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from runner.analysis.keepers import grows, keeper_lines, keepers_summary
from runner.analysis.sites import coverage_note, site_meaning
from runner.sampling import memray_launch
from runner.sampling.memray_attach import attach_payload, detach_payload
from runner.sampling.memray_capture import MemrayFiles, ensure_reduced, read_checkpoints
from runner.sampling.memray_run import request_chain, request_freeze
from tests.conftest import ROOT, Server, free_port, soak, stop_process, wait_for_port
from tests.sampling._harness import TrackedTarget

PROFILE = """
name = "keepers-{name}"
[target]
command = "{{python}} tests/servers/{name}.py --port {{port}}{args}"
memray = true
{extra}
[load]
users = 20
spawn_rate = 40
duration = "{duration}"
messages = 1
[phases]
baseline = "1s"
drain = "4s"
cooldown = "1s"
"""


def _soak(tmp_path: Path, name: str, *, duration: str = "20s", args: str = "", extra: str = "") -> tuple[object, dict]:
    profile = tmp_path / f"{name}.toml"
    profile.write_text(PROFILE.format(name=name, duration=duration, args=args, extra=extra), encoding="utf-8")
    out = tmp_path / "run"
    result = soak("run", str(profile), "--out", str(out), "--quiet", timeout=400)
    return result, json.loads((out / "summary.json").read_text())


def _in_range(value: float, truth: float) -> bool:
    return 0.5 * truth <= value <= 1.5 * truth


# --- pure: what counts as growing ------------------------------------------------------


def test_a_leak_grows_and_a_cache_that_fills_and_stops_does_not():
    x = np.arange(0, 3000, 100, dtype=float)
    assert grows(x, x * 1.0)["per_connection"] == pytest.approx(1.0)
    assert grows(x, np.minimum(x, 1500.0)) is None  # fills over half the window, then stops
    assert grows(x, np.full_like(x, 300.0)) is None  # already full
    assert grows(x, 20 + (x % 7)) is None  # the connections open right now: no trend
    assert grows(x[:4], x[:4]) is None  # too few points


def test_keepers_summary_names_growing_containers_and_tasks_only():
    walls = [float(i) for i in range(30)]
    samples = [{"wall": w, "phase": "steady", "closed": 100 * w} for w in walls]
    keepers = {
        "walls": walls,
        "full": [i % 5 == 0 for i in range(30)],
        "containers": {
            "app.LISTENERS": {"type": "list", "file": "app.py", "lengths": [100 * w for w in walls]},
            "app.CACHE": {"type": "dict", "file": "app.py", "lengths": [min(100 * w, 300) for w in walls]},
            "app.OPEN": {"type": "set", "file": "app.py", "lengths": [20 + i % 3 for i in range(30)]},
        },
        "tasks": {"heartbeat at app.py:41": {"waiting_at": "app.py:44", "counts": [100 * w for w in walls]}},
        "threads": {},
        "census_walls": walls[::5],
        "census": {"app.Session": [100 * w for w in walls[::5]], "dict": [300 * w for w in walls[::5]]},
        "chain": {"type": "app.Session", "path": ["app.LISTENERS[17]", "<lambda> at app.py:53", "Session"]},
    }
    out = keepers_summary(keepers, samples)
    assert [c["name"] for c in out["containers"]] == ["app.LISTENERS"]
    assert out["containers"][0]["text"] == "app.LISTENERS (list) grows 1.00 items per connection"
    assert out["tasks"][0]["text"] == (
        "asyncio tasks alive grow 1.00 per connection (coroutine heartbeat at app.py:41, waiting at app.py:44)"
    )
    assert [o["type"] for o in out["objects"]] == ["app.Session"]  # builtin plumbing is not named
    assert out["chain"]["text"] == "app.LISTENERS[17] -> <lambda> at app.py:53 -> Session"
    assert not out["thin"]
    lines = keeper_lines(out)
    assert lines[0].startswith("kept by: app.LISTENERS") and lines[-1].startswith("chain: ")
    assert keepers_summary(None, samples) is None


def test_site_sentences_and_the_coverage_note():
    where = ".venv/lib/python3.11/site-packages/websockets/server.py:590"
    library = site_meaning(where, "parse", library=True, approximate=False)
    assert library.startswith("websockets allocates these (parse) for every connection")
    assert "your code keeps" in library
    assert "approximate because" in site_meaning("app.py:3", "handler", library=False, approximate=True)
    note = coverage_note([{"share": 0.1}, {"share": 0.2}], python_allocators=False)
    assert note is not None and "explain 30%" in note and "memray_python_allocators = true" in note
    assert coverage_note([{"share": 0.7}], python_allocators=False) is None


# --- real servers -------------------------------------------------------------------------


def test_listener_leak_names_the_list_the_line_and_the_chain(tmp_path):
    result, summary = _soak(tmp_path, "listener")
    assert result.returncode == 1, result.stdout + result.stderr
    keepers = summary["keepers"]
    container = keepers["containers"][0]
    assert container["name"] == "listener.LISTENERS" and container["type"] == "list", keepers
    assert 0.9 <= container["per_connection"] <= 1.1
    assert "kept by: listener.LISTENERS (list) grows " in result.stdout, result.stdout
    assert "chain: listener.LISTENERS[" in result.stdout
    assert summary["schema_version"] >= 3
    assert keepers["checkpoints"] >= 8, keepers  # about one a second: they no longer stretch as the leak grows
    sites = {s["location"]: s for s in summary["sites"]}
    assert "tests/servers/listener.py:16" in sites, list(sites)  # the 1 KB scratch buffer, a user line
    assert _in_range(sites["tests/servers/listener.py:16"]["bytes_per_connection"], 1024 + 57)
    assert any(s["library"] and "websockets allocates these" in s["meaning"] for s in summary["sites"])
    chain = keepers["chain"]
    assert chain is not None and chain["path"][0].startswith("listener.LISTENERS["), keepers
    assert chain["path"][1:] == ["<lambda> at tests/servers/listener.py:17", "ServerConnection"], chain
    if keepers["objects"]:  # counted at full collections only: a 20 s run may have too few of them
        assert keepers["objects"][0]["type"].endswith("<lambda> at tests/servers/listener.py:17"), keepers["objects"]
    assert "listener.LISTENERS" in (tmp_path / "run" / "report.html").read_text(encoding="utf-8")


def test_clean_server_whose_cache_fills_names_nothing(tmp_path):
    target = TrackedTarget(tmp_path, ["tests.servers.cache"], checkpoint_interval=0.5).start()
    try:
        samples = target.churn(1500)
        request_chain(tmp_path)
        deadline = time.monotonic() + 60
        while '"event":"chain"' not in target.files.keepers.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        target.stop()
    reduced = ensure_reduced(tmp_path, flamegraph=False)
    raw = reduced["keepers"]
    assert max(v or 0 for v in raw["containers"]["cache.CACHE"]["lengths"]) == 300  # measured, and full
    assert raw["chain"] is not None or '"event":"chain"' in target.files.keepers.read_text()
    out = keepers_summary(raw, samples)
    assert out["containers"] == [] and out["tasks"] == [] and out["threads"] == [], out
    assert out["chain"] is None, out


#: A server that runs what it finds in ``attach.py``/``detach.py`` the way memray's injector runs the
#: attach payload (exec of its source inside the live process), so the payload's session is tested
#: without gdb; the gdb path itself is covered by tests/sampling/test_memray_attach.py.
INJECTED = (
    "import os, runpy, sys, threading, time\n"
    "def agent(folder):\n"
    "    for name in ('attach', 'detach'):\n"
    "        path = os.path.join(folder, name + '.py')\n"
    "        while not os.path.exists(path):\n"
    "            time.sleep(0.05)\n"
    "        try:\n"
    "            exec(compile(open(path).read(), path, 'exec'), {'__name__': '_soak_runner_payload'})\n"
    "        finally:\n"
    "            open(path + '.done', 'w').close()\n"
    "threading.Thread(target=agent, args=(sys.argv[1],), daemon=True).start()\n"
    "script = sys.argv[3]\n"
    "sys.argv = [script, '--port', sys.argv[2]]\n"
    "runpy.run_path(script, run_name='__main__')\n"
)


def _wait_for(path: Path, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_the_attach_payload_measures_keepers_like_the_launcher(tmp_path):
    """The --pid payload builds the launcher's own session: the same keepers, the same chain."""
    files = MemrayFiles(tmp_path)
    files.root.mkdir()
    port = free_port()
    script = str(Path(__file__).resolve().parent.parent / "servers" / "listener.py")
    process = subprocess.Popen(
        [sys.executable, "-c", INJECTED, str(tmp_path), str(port), script],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=60)
        options = {
            "capture": str(files.capture),
            "checkpoints": str(files.checkpoints),
            "control": str(files.control),
            "checkpoint_interval": 0.5,
            "memory_interval_ms": 50,
            "max_bytes": None,
            "python_allocators": False,
        }
        (tmp_path / "attach.py").write_text(attach_payload(memray_launch.__file__, options), encoding="utf-8")
        _wait_for(tmp_path / "attach.py.done", "the payload did not run")
        request_freeze(tmp_path)
        target = TrackedTarget(tmp_path, [], port=port)
        samples = target.churn(1500, min_seconds=12)  # >= 24 checkpoints of churn, however fast the machine
        request_chain(tmp_path)
        deadline = time.monotonic() + 60
        while '"event":"chain"' not in files.keepers.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        (tmp_path / "detach.py").write_text(detach_payload(), encoding="utf-8")
        _wait_for(tmp_path / "detach.py.done", "the detach payload did not run")
        assert process.poll() is None  # the server lives on
    finally:
        stop_process(process)
    assert read_checkpoints(files.checkpoints)["events"]["end"]["reason"] == "detach"
    reduced = ensure_reduced(tmp_path, flamegraph=False)
    out = keepers_summary(reduced["keepers"], samples)
    assert out["containers"][0]["name"] == "listener.LISTENERS", out
    assert out["chain"]["path"][0].startswith("listener.LISTENERS["), out["chain"]


@pytest.mark.slow
def test_heartbeat_task_per_connection_is_named(tmp_path):
    result, summary = _soak(tmp_path, "heartbeat", duration="25s")
    assert result.returncode == 1, result.stdout + result.stderr
    task = summary["keepers"]["tasks"][0]
    assert task["coroutine"] == "heartbeat at tests/servers/heartbeat.py:9", summary["keepers"]
    assert 0.9 <= task["per_connection"] <= 1.1
    assert "asyncio tasks alive grow " in result.stdout
    chain = summary["keepers"]["chain"]  # bounded search: may be absent on a loaded machine; right when given
    assert chain is None or chain["path"][0] == "asyncio task heartbeat at tests/servers/heartbeat.py:9", chain
    assert summary["sites"], "the heap leaked: sites never vanish"


@pytest.mark.slow
def test_sessions_dict_is_named_with_its_buffer_line(tmp_path):
    result, summary = _soak(tmp_path, "sessions", duration="25s")
    assert result.returncode == 1, result.stdout + result.stderr
    assert summary["keepers"]["containers"][0]["name"] == "sessions.SESSIONS", summary["keepers"]
    assert any(o["type"] == "__main__.Session" for o in summary["keepers"]["objects"]), summary["keepers"]["objects"]
    buffer = next(s for s in summary["sites"] if s["location"] == "tests/servers/sessions.py:16")
    assert _in_range(buffer["bytes_per_connection"], 1024 + 57)


@pytest.mark.slow
@pytest.mark.parametrize("size", [64, 200, 2048, 8192])
def test_small_bytes_per_connection_in_range_with_python_allocators(tmp_path, size):
    result, summary = _soak(
        tmp_path, "smallbytes", duration="25s", args=f" --bytes {size}", extra="memray_python_allocators = true"
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert summary["keepers"]["containers"][0]["name"] == "smallbytes.AUDIT"
    site = next(s for s in summary["sites"] if s["location"] == "tests/servers/smallbytes.py:13")
    assert _in_range(site["bytes_per_connection"], size + 33 + 8), site  # bytes header, the list's slot


ATTACH_PROFILE = """
name = "keepers-attach"
[load]
users = 20
spawn_rate = 40
duration = "20s"
messages = 1
[phases]
baseline = "1s"
drain = "4s"
cooldown = "1s"
"""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed (apt-get install gdb)")
def test_attached_by_pid_names_the_list_too(tmp_path):
    server = Server("tests.servers.listener")
    try:
        profile = tmp_path / "attach.toml"
        profile.write_text(ATTACH_PROFILE, encoding="utf-8")
        out = tmp_path / "run"
        result = soak("run", str(profile), "--pid", str(server.process.pid), "--out", str(out), "--quiet", timeout=400)
        assert result.returncode == 1, result.stdout + result.stderr
        summary = json.loads((out / "summary.json").read_text())
        assert summary["keepers"]["containers"][0]["name"] == "listener.LISTENERS", summary["keepers"]
        assert "kept by: listener.LISTENERS (list) grows " in result.stdout
        assert server.process.poll() is None  # attached, never stopped
    finally:
        server.stop()
