"""Real memray on the bundled targets: the leaking line, in bytes per connection."""

from __future__ import annotations

import signal
import time

import pytest

from runner.analysis.sites import join_heap, leak_sites
from runner.sampling.memray_capture import ensure_reduced, read_checkpoints
from tests.sampling._harness import TrackedTarget

LEAK_BYTES = 2048
BUDGET = 32.0


# `soak run` on the leaky target (tests/sampling/test_memray_soak.py) covers this in the default suite
@pytest.mark.slow
def test_leaky_target_names_the_leaking_line(tmp_path):
    target = TrackedTarget(tmp_path, ["runner.targets.leaky", "--leak-bytes", str(LEAK_BYTES)]).start()
    try:
        samples = target.churn(1200, min_seconds=10)  # enough checkpoints, however fast the machine
    finally:
        code = target.stop()
    assert code == 0  # the bundled target stops cleanly on SIGTERM; the launcher passes its code on
    log = read_checkpoints(target.files.checkpoints)
    assert log["events"]["end"]["reason"] == "exit"
    assert "frozen" in log["events"]

    reduced = ensure_reduced(tmp_path, flamegraph=False)
    assert reduced is not None and reduced["status"] == "complete"
    sites = leak_sites(reduced, samples, budget=BUDGET)
    assert sites, "no site grew with connections"
    top = sites[0]
    assert top["location"].endswith("runner/targets/leaky.py:26"), sites[:3]
    assert top["function"] in ("__init__", "make_session")
    assert any("make_session" in frame for frame in top["stack"]) and any("handler" in frame for frame in top["stack"])
    assert 0.5 * LEAK_BYTES <= top["bytes_per_connection"] <= 1.5 * LEAK_BYTES
    assert top["over_budget"] is True
    assert top["live_bytes_end"] >= 1000 * LEAK_BYTES  # every session is still held at the end
    assert top["share"] is not None and 0.5 < top["share"] <= 1.2

    joined = join_heap(samples, reduced["heap"])
    heap = [(s["closed"], s["heap"]) for s in joined if s.get("heap") is not None and s["phase"] == "steady"]
    assert len(heap) >= 5
    (c0, h0), (c1, h1) = heap[0], heap[-1]
    assert (h1 - h0) / (c1 - c0) > 0.5 * LEAK_BYTES  # the heap metric carries the leak too


def test_clean_target_has_no_site_over_budget(tmp_path):
    target = TrackedTarget(tmp_path, ["runner.targets.echo"]).start()
    try:
        samples = target.churn(800)
    finally:
        target.stop()
    reduced = ensure_reduced(tmp_path, flamegraph=False)
    assert reduced is not None and reduced["status"] == "complete"
    assert reduced["sites"], "the capture should hold allocation sites (the server's own start-up at least)"
    sites = leak_sites(reduced, samples, budget=BUDGET)
    assert all(not s["over_budget"] for s in sites), sites
    assert all(s["bytes_per_connection"] <= BUDGET for s in sites), sites


#: A target with no SIGTERM handler of its own, that keeps 1000 bytes per tick and says it is ready.
NO_HANDLER = (
    "import sys, time\n"
    "kept = []\n"
    "def grow():\n"
    "    kept.append(bytearray(1000))\n"
    "open(sys.argv[1], 'w').close()\n"
    "while True:\n"
    "    grow()\n"
    "    time.sleep(0.005)\n"
)


def _run_script(tmp_path, sig: int) -> tuple[int, TrackedTarget]:
    ready = tmp_path / "ready"
    target = TrackedTarget(tmp_path, [], checkpoint_interval=0.2)
    target.start_code(NO_HANDLER, [str(ready)], ready)
    deadline = time.monotonic() + 60  # a few checkpoints, however slow the machine is today
    while len(read_checkpoints(target.files.checkpoints)["walls"]) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    return target.stop(sig), target


def test_sigterm_without_a_handler_finalises_the_capture(tmp_path, monkeypatch):
    code, target = _run_script(tmp_path, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM  # the launcher's handler: SystemExit, so tracking ends cleanly
    log = read_checkpoints(target.files.checkpoints)
    assert log["events"]["end"]["reason"] == f"exit {128 + signal.SIGTERM}"
    reduced = ensure_reduced(tmp_path, flamegraph=False)
    assert reduced["status"] == "complete" and reduced["heap"]
    grow = [s for s in reduced["sites"] if s["function"] == "grow"]
    assert grow and grow[0]["location"].endswith(":4") and grow[0]["live"][-1] > grow[0]["live"][0]

    # a capture too big to render gets a note that says how to render it by hand
    import runner.sampling.memray_capture as capture_module

    monkeypatch.setattr(capture_module, "FLAMEGRAPH_MAX_BYTES", 1)
    target.files.reduced.unlink()
    again = ensure_reduced(tmp_path, flamegraph=True)
    assert again["flamegraph"] is None and any("memray flamegraph --temporal" in n for n in again["notes"])


def test_sigkill_leaves_a_readable_capture_with_a_note(tmp_path):
    code, target = _run_script(tmp_path, signal.SIGKILL)
    assert code == -signal.SIGKILL
    log = read_checkpoints(target.files.checkpoints)
    assert "end" not in log["events"]
    reduced = ensure_reduced(tmp_path, flamegraph=False)  # must not raise, whatever the file holds
    assert reduced is not None
    assert reduced["status"] in ("incomplete", "unreadable")
    assert any("incomplete" in note or "could not be read" in note for note in reduced["notes"])
    if reduced["status"] == "incomplete":
        assert reduced["heap"], "an unfinalised capture still has its memory snapshots"


#: Cyclic garbage only (1 MB of it, with the target's own GC off), then idle: nothing leaks.
CYCLIC_GARBAGE = (
    "import gc, sys, time\n"
    "gc.disable()\n"
    "def garbage():\n"
    "    node = {'payload': bytearray(2000)}\n"
    "    node['self'] = node\n"
    "open(sys.argv[1], 'w').close()\n"
    "for _ in range(500):\n"
    "    garbage()\n"
    "    time.sleep(0.002)\n"
    "open(sys.argv[2], 'w').close()\n"
    "while True:\n"
    "    time.sleep(0.05)\n"
)


def test_cyclic_garbage_is_not_a_leak_at_checkpoints(tmp_path):
    ready, done = tmp_path / "ready", tmp_path / "done"
    target = TrackedTarget(tmp_path, [], checkpoint_interval=0.5)
    target.start_code(CYCLIC_GARBAGE, [str(ready), str(done)], ready)
    deadline = time.monotonic() + 60
    while not done.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    after = len(read_checkpoints(target.files.checkpoints)["walls"])
    while len(read_checkpoints(target.files.checkpoints)["walls"]) < after + 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    target.stop()
    reduced = ensure_reduced(tmp_path, flamegraph=False)
    import memray

    reader = memray.FileReader(str(target.files.capture))
    raw = [s.heap for s in reader.get_memory_snapshots()]
    reader.close()
    # memray saw the uncollected garbage pile up between checkpoints (the test is not vacuous) ...
    assert max(raw) - min(raw[len(raw) // 4 :]) > 200_000
    # ... yet at the checkpoints it is gone: neither the heap nor the site grows
    heap = [value for _, value in reduced["heap"]]
    assert heap[-1] - min(heap) < 100_000, heap
    site = [s for s in reduced["sites"] if s["function"] == "garbage"]
    # (a pymalloc arena the garbage opened may stay charged to its site, at a constant 1 MiB)
    assert not site or max(site[0]["live"][-3:]) - min(site[0]["live"]) < 100_000, site[0]["live"]


def test_size_cap_stops_tracking_and_the_target_runs_on(tmp_path):
    ready = tmp_path / "ready"
    target = TrackedTarget(tmp_path, [], checkpoint_interval=0.2, max_bytes=1)
    target.start_code(NO_HANDLER, [str(ready)], ready)
    deadline = time.monotonic() + 60
    while "capped" not in read_checkpoints(target.files.checkpoints)["events"] and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    assert target.process.poll() is None  # the tracker was closed from the checkpoint thread; the target lives on
    code = target.stop()
    assert code == 128 + signal.SIGTERM
    events = read_checkpoints(target.files.checkpoints)["events"]
    assert events["end"]["reason"] == "capped"
    reduced = ensure_reduced(tmp_path, flamegraph=False)
    assert reduced["status"] == "capped"
    assert any("size cap" in note for note in reduced["notes"])
