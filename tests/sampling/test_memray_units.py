"""The memray pieces that need no target: command building, frame choice, joins, slopes."""

from __future__ import annotations

import os
import sys
import sysconfig

import pytest

from runner.analysis.sites import join_heap, leak_sites, memray_summary
from runner.profile import parse_profile
from runner.sampling.memray_capture import MemrayFiles, ensure_reduced, read_checkpoints, user_frame
from runner.sampling.memray_launch import UnsupportedCommand, launcher_argv, split_python_args
from runner.sampling.memray_run import plan_memray, request_freeze


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-m", "pkg.server", "--port", "1"], ([], "module", "pkg.server", ["--port", "1"])),
        (["-u", "-mpkg.server"], (["-u"], "module", "pkg.server", [])),
        (["server.py", "-m", "x"], ([], "path", "server.py", ["-m", "x"])),
        (["-B", "-c", "print(1)", "a"], (["-B"], "code", "print(1)", ["a"])),
    ],
)
def test_python_arguments_are_split_like_the_interpreter_does(args, expected):
    assert split_python_args(args) == expected


@pytest.mark.parametrize("args", [["-X", "dev", "-m", "x"], ["-O", "s.py"], ["-"], [], ["-m"]])
def test_unsupported_python_arguments_are_refused(args):
    with pytest.raises(UnsupportedCommand):
        split_python_args(args)


def test_launcher_command_keeps_the_target_arguments_after_a_separator(tmp_path):
    argv = launcher_argv(
        "/usr/bin/python3",
        ["-m", "app", "--port", "9"],
        capture="c.bin",
        checkpoints="c.jsonl",
        control="ctl",
        checkpoint_interval=1.0,
        memory_interval_ms=50,
        max_bytes=10,
        python_allocators=True,
    )
    assert argv[0] == "/usr/bin/python3" and argv[1].endswith("memray_launch.py")
    assert argv[argv.index("--") + 1 :] == ["-m", "app", "--port", "9"]
    assert {"--max-bytes", "--python-allocators", "--control"} <= set(argv)


def _target(command, **extra):
    return parse_profile({"target": {"command": command, "url": "ws://127.0.0.1:{port}/", **extra}}).target


def test_plan_wraps_a_python_target_and_skips_others_with_a_note(tmp_path):
    plan = plan_memray(
        _target("{python} -m app --port {port}"),
        [sys.executable, "-m", "app", "--port", "5"],
        tmp_path,
        sampling_interval=0.5,
        max_bytes=None,
    )
    assert plan.tracked and plan.note is None and plan.argv[-4:] == ["-m", "app", "--port", "5"]
    assert "--python-allocators" not in plan.argv
    exact = plan_memray(
        _target("{python} -m app --port {port}", memray_python_allocators=True),
        [sys.executable, "-m", "app"],
        tmp_path,
        sampling_interval=0.5,
        max_bytes=None,
    )
    assert "--python-allocators" in exact.argv
    assert (tmp_path / "memray").is_dir()
    request_freeze(tmp_path)
    assert "freeze" in MemrayFiles(tmp_path).control.read_text()

    node = plan_memray(
        _target("node server.js --port {port}"), ["node", "server.js"], tmp_path, sampling_interval=0.5, max_bytes=None
    )
    assert not node.tracked and node.argv == ["node", "server.js"] and "memray skipped" in node.note
    forced = plan_memray(
        _target("node s.js --port {port}", memray=True),
        ["node", "s.js"],
        tmp_path,
        sampling_interval=0.5,
        max_bytes=None,
    )
    assert not forced.tracked and "Python targets" in forced.note
    off = plan_memray(
        _target("{python} -m app --port {port}", memray=False),
        [sys.executable, "-m", "app"],
        tmp_path,
        sampling_interval=0.5,
        max_bytes=None,
    )
    assert not off.tracked and off.note is None
    odd = plan_memray(
        _target("{python} -X dev -m app --port {port}"),
        [sys.executable, "-X", "dev", "-m", "app"],
        tmp_path,
        sampling_interval=0.5,
        max_bytes=None,
    )
    assert not odd.tracked and "-X" in odd.note


def test_profile_accepts_a_capture_cap_and_refuses_nonsense():
    assert _target("{python} -m app --port {port}", memray_max_mb=100).memray_max_mb == 100
    from runner.errors import ProfileError

    with pytest.raises(ProfileError, match="memray_max_mb"):
        _target("{python} -m app --port {port}", memray_max_mb=0)


def test_user_frame_skips_library_frames_and_falls_back_to_the_innermost():
    stdlib = sysconfig.get_paths()["stdlib"]
    library = (os.path.realpath(stdlib) + os.sep,)
    lib = ("send", os.path.join(stdlib, "asyncio", "x.py"), 10)
    mine = ("handler", "/srv/app/server.py", 42)
    frame, user = user_frame([lib, ("<lambda>", "<frozen importlib._bootstrap>", 1), mine], library)
    assert frame == mine and user == [mine]
    assert user_frame([lib], library) == (lib, [])
    assert user_frame([], library)[0][0] == "(no Python stack)"


def test_join_heap_fills_the_nearest_sample_only():
    samples = [{"t": i, "wall": 100.0 + i, "closed": i * 10, "phase": "steady", "heap": None} for i in range(5)]
    joined = join_heap(samples, [[101.2, 500], [103.9, 700], [150.0, 1]])
    assert [s["heap"] for s in joined] == [None, 500, None, None, 700]
    assert samples[1]["heap"] is None  # the input is not modified
    assert join_heap([], [[1.0, 2]]) == []


def _synthetic(per_connection: float, noise: float = 0.0):
    samples = [
        {"wall": 1000.0 + i, "closed": 100 * i, "phase": "steady" if 2 <= i <= 40 else "baseline"} for i in range(43)
    ]
    points = [1000.0 + i for i in range(43)]
    live = [int(5000 + per_connection * 100 * i + (noise if i % 2 else -noise)) for i in range(43)]
    flat = [3000 + (i % 3) for i in range(43)]
    heap = [[p, 10_000 + int(per_connection * 100 * i)] for i, p in enumerate(points)]
    reduced = {
        "points": points,
        "heap": heap,
        "sites": [
            {"location": "app.py:9", "function": "cache", "stack": ["app.py:9 cache"], "live": flat},
            {"location": "app.py:3", "function": "on_connect", "stack": ["app.py:3 on_connect"], "live": live},
        ],
        "notes": [],
        "status": "complete",
    }
    return reduced, samples


def test_leak_sites_give_bytes_per_connection_largest_first():
    reduced, samples = _synthetic(512.0, noise=50)
    sites = leak_sites(reduced, samples, budget=32)
    assert [s["location"] for s in sites] == ["app.py:3"]  # the flat site is not listed
    site = sites[0]
    assert site["bytes_per_connection"] == pytest.approx(512, rel=0.05)
    assert site["over_budget"] and site["share"] == pytest.approx(1.0, rel=0.05)
    assert site["live_bytes_end"] == reduced["sites"][1]["live"][-1]


def test_leak_sites_need_a_steady_window():
    reduced, samples = _synthetic(512.0)
    for s in samples:
        s["phase"] = "baseline"
    assert leak_sites(reduced, samples, budget=32) == []
    assert leak_sites({"points": [], "sites": []}, samples, budget=32) == []


def test_memray_summary_reports_status_and_files():
    assert memray_summary(None) == {"enabled": False, "notes": []}
    summary = memray_summary({"status": "capped", "flamegraph": "memray/flamegraph.html", "notes": ["n"]})
    assert summary["enabled"] and summary["status"] == "capped" and summary["flamegraph"] == "memray/flamegraph.html"


def test_a_damaged_capture_is_a_note_not_a_crash(tmp_path):
    files = MemrayFiles(tmp_path)
    files.root.mkdir()
    files.capture.write_bytes(b"not a memray capture at all" * 10)
    files.checkpoints.write_text('{"event":"start","wall":1}\n{"wall":2,"gc":0}\n{torn', encoding="utf-8")
    log = read_checkpoints(files.checkpoints)
    assert log["walls"] == [2.0] and "start" in log["events"]
    reduced = ensure_reduced(tmp_path)
    assert reduced["status"] == "unreadable" and "could not be read" in reduced["notes"][0]
    assert files.reduced.exists() and ensure_reduced(tmp_path) == reduced  # cached
    assert ensure_reduced(tmp_path / "nothing") is None


def _folder(tmp_path, procs: int):
    import json

    (tmp_path / "meta.json").write_text(json.dumps({"profile": {"name": "x"}}), encoding="utf-8")
    samples = [
        {"t": i, "wall": 100.0 + i, "phase": "steady", "closed": i, "procs": procs, "heap": None} for i in range(4)
    ]
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples), encoding="utf-8")
    (tmp_path / "memray").mkdir()
    reduced = {"heap": [[101.0, 5], [103.0, 7]], "notes": [], "sites": [], "points": [], "status": "complete"}
    (tmp_path / "memray" / "reduced.json").write_text(json.dumps(reduced), encoding="utf-8")


def test_run_record_joins_the_heap_of_a_single_process_target(tmp_path):
    from runner.results import RunRecord

    _folder(tmp_path, procs=1)
    record = RunRecord.load(tmp_path)
    assert [s["heap"] for s in record.samples] == [None, 5, None, 7]
    assert record.memray["status"] == "complete" and record.memray["notes"] == []


def test_run_record_leaves_out_the_heap_of_a_multi_process_target(tmp_path):
    from runner.results import RunRecord

    _folder(tmp_path, procs=3)
    record = RunRecord.load(tmp_path)
    assert all(s["heap"] is None for s in record.samples)
    assert "3 processes" in record.memray["notes"][0]


def test_launcher_tracks_a_target_in_this_process(tmp_path, monkeypatch):
    """The launcher's main() end to end in-process (a subprocess hides it from coverage)."""
    import signal

    from runner.sampling import memray_launch

    files = MemrayFiles(tmp_path)
    files.root.mkdir()
    files.control.write_text("freeze\n", encoding="utf-8")
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])
    previous = signal.getsignal(signal.SIGTERM)
    code = "import sys, time\nkept = [bytearray(1000) for _ in range(200)]\ntime.sleep(0.6)\nsys.exit(3)\n"
    try:
        with pytest.raises(SystemExit) as exit_info:
            memray_launch.main(
                [
                    "--capture",
                    str(files.capture),
                    "--checkpoints",
                    str(files.checkpoints),
                    "--control",
                    str(files.control),
                    "--checkpoint-interval",
                    "0.1",
                    "--memory-interval-ms",
                    "10",
                    "--max-bytes",
                    str(10**9),
                    "--",
                    "-u",
                    "-c",
                    code,
                ]
            )
    finally:
        signal.signal(signal.SIGTERM, previous)
        import gc

        gc.unfreeze()  # the launcher froze this test process's heap: give it back to the collector
    assert exit_info.value.code == 3
    log = read_checkpoints(files.checkpoints)
    assert log["events"]["end"]["reason"] == "exit 3" and "frozen" in log["events"] and log["walls"]
    reduced = ensure_reduced(tmp_path, flamegraph=False)
    assert reduced["status"] == "complete"
    assert any(s["location"] == "<string>:2" for s in reduced["sites"])
    with pytest.raises(SystemExit, match="expected OPTIONS"):
        memray_launch.main(["--capture", "x"])
    with pytest.raises(SystemExit, match="not supported"):
        memray_launch.main(["--capture", "c", "--checkpoints", "k", "--control", "x", "--", "-X", "dev", "-m", "x"])
