"""Real memray on the bundled targets: the leaking line, in bytes per connection."""

from __future__ import annotations

import signal

import pytest

from runner.sampling.memray_capture import ensure_reduced, read_checkpoints
from runner.sampling.memray_sites import join_heap, leak_sites
from tests.sampling._harness import TrackedTarget

LEAK_BYTES = 2048
BUDGET = 32.0


def test_leaky_target_names_the_leaking_line(tmp_path):
    target = TrackedTarget(tmp_path, ["runner.targets.leaky", "--leak-bytes", str(LEAK_BYTES)]).start()
    try:
        samples = target.churn(1200)
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
    assert top["location"].endswith("runner/targets/leaky.py:25"), sites[:3]
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
        samples = target.churn(1200)
    finally:
        target.stop()
    reduced = ensure_reduced(tmp_path, flamegraph=False)
    assert reduced is not None and reduced["status"] == "complete"
    assert reduced["sites"], "the capture should hold allocation sites (the server's own start-up at least)"
    sites = leak_sites(reduced, samples, budget=BUDGET)
    assert all(not s["over_budget"] for s in sites), sites
    assert all(s["bytes_per_connection"] <= BUDGET for s in sites), sites


def test_sigkill_leaves_a_readable_capture_with_a_note(tmp_path):
    target = TrackedTarget(tmp_path, ["runner.targets.leaky", "--leak-bytes", str(LEAK_BYTES)]).start()
    try:
        samples = target.churn(300, idle=0.5)
    finally:
        code = target.stop(signal.SIGKILL)
    assert code == -signal.SIGKILL
    log = read_checkpoints(target.files.checkpoints)
    assert "end" not in log["events"]
    reduced = ensure_reduced(tmp_path, flamegraph=False)  # must not raise, whatever the file holds
    assert reduced is not None
    assert reduced["status"] in ("incomplete", "unreadable")
    assert any("incomplete" in note or "could not be read" in note for note in reduced["notes"])
    if reduced["status"] == "incomplete":
        assert reduced["heap"], "an unfinalised capture still has its memory snapshots"
        assert isinstance(leak_sites(reduced, samples, budget=BUDGET), list)
